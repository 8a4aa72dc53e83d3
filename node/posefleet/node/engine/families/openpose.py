"""OpenPose-style bottom-up models (human-pose-estimation-0001): heatmaps + part affinity fields."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from posefleet.node.engine import ov_compat as ov
from posefleet.node.engine.decoders import openpose as decoder
from posefleet.node.engine.families.base import FrameMeta, PoseModel
from posefleet.node.engine.ov_compat import opset as ops
from posefleet.node.engine.types import Pose


class OpenPoseModel(PoseModel):
    """OpenPose-style bottom-up model (human-pose-estimation-0001): heatmaps + part affinity fields."""

    family = "openpose"
    Params = decoder.OpenPoseDecodeParams
    params: decoder.OpenPoseDecodeParams
    HEATMAPS, POOLED, PAFS = "heatmaps_up", "heatmaps_pooled", "pafs_up"
    #: Heatmap/PAF upsampling inside the graph (see ``extend``).
    upsample = 2

    def extend(self, model: ov.Model) -> ov.Model:
        """Upsample heatmaps and PAFs (x2: why, bench/design-choices.md) and add the 3x3 max-pool used for peak
        NMS, inside the graph."""
        producers = {r.input_value(0).get_any_name(): r.input_value(0) for r in model.get_results()}
        heat = producers[self.card.outputs["heatmaps"]]
        pafs = producers[self.card.outputs["pafs"]]
        scales = np.array([self.upsample, self.upsample], dtype=np.float32)
        axes = np.array([2, 3], dtype=np.int64)

        def up(x: ov.Output, mode: str) -> ov.Node:
            h, w = (d.get_length() * self.upsample for d in list(x.get_partial_shape())[2:])
            return ops.interpolate(
                x,
                np.array([h, w], dtype=np.int64),
                scales,
                mode,
                "sizes",
                axes=axes,
                coordinate_transformation_mode="half_pixel",
            )

        heat_up = up(heat, "cubic")
        pooled = ops.max_pool(heat_up, [1, 1], [1, 1], [1, 1], [1, 1], [3, 3]).output(0)
        pafs_up = up(pafs, "linear")
        results = []
        for name, port in (
            (self.HEATMAPS, heat_up.output(0)),
            (self.POOLED, pooled),
            (self.PAFS, pafs_up.output(0)),
        ):
            port.get_tensor().set_names({name})
            results.append(ops.result(port, name=name))
        return ov.Model(results, list(model.get_parameters()), model.get_friendly_name())

    def decode(self, outputs: Mapping[str, npt.NDArray[Any]], meta: FrameMeta) -> list[Pose]:
        raw = decoder.decode(outputs[self.HEATMAPS][0], outputs[self.POOLED][0], outputs[self.PAFS][0], self.params)
        # Upsampled cell (x + delta) -> input pixel, with half-pixel centres.
        cell = self.card.output_stride / self.upsample
        for keypoints, _ in raw:
            found = keypoints[:, 2] > 0
            keypoints[found, :2] = keypoints[found, :2] * cell - 0.5
        return self.to_source(raw, meta)
