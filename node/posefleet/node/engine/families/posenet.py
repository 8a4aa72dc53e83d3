"""Google PoseNet (MobileNetV1): heatmaps, short offsets and mid-range displacements."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy.typing as npt
from posefleet.node.engine.decoders import posenet as decoder
from posefleet.node.engine.families.base import FrameMeta, PoseModel
from posefleet.node.engine.types import Pose


class PoseNetModel(PoseModel):
    family = "posenet"
    Params = decoder.PoseNetDecodeParams
    #: COCO AP counts faint poses too: every pose is kept for ``posefleet eval``.
    eval_params: ClassVar[Mapping[str, Any]] = {"max_poses": 20, "min_pose_score": 0.0}
    params: decoder.PoseNetDecodeParams

    def warm_up(self) -> None:
        if self.params.compiled:
            decoder.warm_up()

    def decode(self, outputs: Mapping[str, npt.NDArray[Any]], meta: FrameMeta) -> list[Pose]:
        names = self.card.outputs
        out = decoder.PoseNetOutputs(
            heatmap=outputs[names["heatmap"]][0],
            offsets=outputs[names["offsets"]][0],
            displacement_fwd=outputs[names["displacement_fwd"]][0],
            displacement_bwd=outputs[names["displacement_bwd"]][0],
        )
        return self.to_source(decoder.decode(out, self.card.output_stride, self.params), meta)
