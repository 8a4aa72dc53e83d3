"""Model families behind one small interface: ``configure`` the OpenVINO graph once, then per frame
``preprocess`` -> (OpenVINO inference) -> ``decode``.

Resizing happens in ``preprocess`` (OpenCV, area/linear, a no-op when frames already have the model's
size); colour order, element type, normalisation and layout are folded into the compiled model with
OpenVINO's PrePostProcessor, where they run inside the inference request.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np
import numpy.typing as npt
from posefleet.node import ov_compat as ov
from posefleet.node.models import openpose_decoder, posenet_decoder
from posefleet.node.models.card import ModelCard
from posefleet.node.models.types import Pose
from posefleet.node.ov_compat import ColorFormat, PrePostProcessor
from posefleet.node.ov_compat import opset as ops

U8Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class FrameMeta:
    """How the source image maps to the network input: ``x_src = (x_in - pad_x) / scale_x``."""

    source_size: tuple[int, int]  # (height, width)
    scale_x: float
    scale_y: float
    pad_x: float = 0.0
    pad_y: float = 0.0


class PoseModel(ABC):
    """One model family: graph set-up, frame preparation and output decoding."""

    family: ClassVar[str]

    def __init__(self, card: ModelCard, input_size: tuple[int, int]) -> None:
        self.card = card
        self.input_size = input_size

    def configure(self, model: ov.Model) -> ov.Model:
        """Fix the input size and fold colour/type/normalisation/layout into the graph."""
        spec = self.card.input
        h, w = self.input_size
        shape = [1, h, w, 3] if spec.layout == "NHWC" else [1, 3, h, w]
        model.reshape({spec.name: shape})
        ppp = PrePostProcessor(model)
        inp = ppp.input(spec.name)
        inp.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(ColorFormat.BGR)
        inp.model().set_layout(ov.Layout(spec.layout))
        pre = inp.preprocess()
        if spec.element_type == "f32":
            pre.convert_element_type(ov.Type.f32)
        if spec.color == "RGB":
            pre.convert_color(ColorFormat.RGB)
        if spec.mean:
            pre.mean(spec.mean)
        if spec.scale != 1.0:
            pre.scale(spec.scale)
        return self.extend(ppp.build())

    def extend(self, model: ov.Model) -> ov.Model:
        """Family-specific graph additions after pre-processing (none by default)."""
        return model

    def preprocess(self, image: U8Image) -> tuple[U8Image, FrameMeta]:
        """BGR uint8 HxWx3 image -> NHWC uint8 tensor of the input size, and the mapping back."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a BGR uint8 HxWx3 image, got {image.dtype} {image.shape}")
        src_h, src_w = image.shape[:2]
        h, w = self.input_size
        if self.card.input.resize == "letterbox":
            scale = min(h / src_h, w / src_w)
            new_w, new_h = max(1, round(src_w * scale)), max(1, round(src_h * scale))
            canvas = np.zeros((h, w, 3), dtype=np.uint8)
            canvas[:new_h, :new_w] = _resize(image, new_w, new_h)
            return canvas[None], FrameMeta((src_h, src_w), new_w / src_w, new_h / src_h)
        return _resize(image, w, h)[None], FrameMeta((src_h, src_w), w / src_w, h / src_h)

    def warm_up(self) -> None:
        """Get decoding ready before the first frame (compile or load compiled code); none by default."""
        return None

    @abstractmethod
    def decode(self, outputs: Mapping[str, npt.NDArray[Any]], meta: FrameMeta) -> list[Pose]:
        """Network outputs of one frame -> poses in source-image pixels."""

    @staticmethod
    def to_source(raw: list[tuple[npt.NDArray[np.float32], float]], meta: FrameMeta) -> list[Pose]:
        poses = []
        for keypoints, score in raw:
            kp = keypoints.copy()
            kp[:, 0] = (kp[:, 0] - meta.pad_x) / meta.scale_x
            kp[:, 1] = (kp[:, 1] - meta.pad_y) / meta.scale_y
            poses.append(Pose(keypoints=kp, score=score))
        return poses


def _resize(image: U8Image, w: int, h: int) -> U8Image:
    if image.shape[1] == w and image.shape[0] == h:
        return image
    shrinking = w < image.shape[1] and h < image.shape[0]
    out: U8Image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return out


class PoseNetModel(PoseModel):
    """Google PoseNet (MobileNetV1): heatmaps, short offsets and mid-range displacements."""

    family = "posenet"

    def __init__(
        self,
        card: ModelCard,
        input_size: tuple[int, int],
        params: posenet_decoder.PoseNetDecodeParams | None = None,
    ) -> None:
        super().__init__(card, input_size)
        self.params = params or posenet_decoder.PoseNetDecodeParams()

    def warm_up(self) -> None:
        if self.params.compiled:
            posenet_decoder.warm_up()

    def decode(self, outputs: Mapping[str, npt.NDArray[Any]], meta: FrameMeta) -> list[Pose]:
        names = self.card.outputs
        out = posenet_decoder.PoseNetOutputs(
            heatmap=outputs[names["heatmap"]][0],
            offsets=outputs[names["offsets"]][0],
            displacement_fwd=outputs[names["displacement_fwd"]][0],
            displacement_bwd=outputs[names["displacement_bwd"]][0],
        )
        return self.to_source(posenet_decoder.decode(out, self.card.output_stride, self.params), meta)


class OpenPoseModel(PoseModel):
    """OpenPose-style bottom-up model (human-pose-estimation-0001): heatmaps + part affinity fields."""

    family = "openpose"
    HEATMAPS, POOLED, PAFS = "heatmaps_up", "heatmaps_pooled", "pafs_up"

    def __init__(
        self,
        card: ModelCard,
        input_size: tuple[int, int],
        params: openpose_decoder.OpenPoseDecodeParams | None = None,
        upsample: int = 2,
    ) -> None:
        super().__init__(card, input_size)
        self.params = params or openpose_decoder.OpenPoseDecodeParams()
        self.upsample = upsample

    def extend(self, model: ov.Model) -> ov.Model:
        """Upsample heatmaps and PAFs and add the 3x3 max-pool used for peak NMS, inside the graph.

        x2 measured best here: COCO AP 0.571 on the assets' four images (x4: 0.538) with 3.6 ms of
        decoding instead of 8.6 ms.
        """
        producers = {r.input_value(0).get_any_name(): r.input_value(0) for r in model.get_results()}
        heat = producers[self.card.outputs["heatmaps"]]
        pafs = producers[self.card.outputs["pafs"]]
        scales = np.array([self.upsample, self.upsample], dtype=np.float32)
        axes = np.array([2, 3], dtype=np.int64)

        def up(x: ov.Output, mode: str) -> ov.Node:
            h, w = (d.get_length() * self.upsample for d in list(x.get_partial_shape())[2:])
            return ops.interpolate(
                x, np.array([h, w], dtype=np.int64), scales, mode, "sizes", axes=axes,
                coordinate_transformation_mode="half_pixel",
            )  # fmt: skip

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
        raw = openpose_decoder.decode(
            outputs[self.HEATMAPS][0], outputs[self.POOLED][0], outputs[self.PAFS][0], self.params
        )
        # Upsampled cell (x + delta) -> input pixel, with half-pixel centres.
        cell = self.card.output_stride / self.upsample
        for keypoints, _ in raw:
            found = keypoints[:, 2] > 0
            keypoints[found, :2] = keypoints[found, :2] * cell - 0.5
        return self.to_source(raw, meta)


FAMILIES: dict[str, type[PoseModel]] = {"posenet": PoseNetModel, "openpose": OpenPoseModel}
