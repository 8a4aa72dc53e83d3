"""The base of every model family: ``configure`` the OpenVINO graph once, then per frame
``preprocess`` -> (OpenVINO inference) -> ``decode``.

A family is one module in ``posefleet.node.engine.families`` with one ``PoseModel`` subclass that names
its ``family`` (the card's ``family`` field) and its typed decoding parameters (``Params``); defining the
class registers it, in the style of OpenVINO model_api's ``create_model``.

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
from posefleet.node.engine import ov_compat as ov
from posefleet.node.engine.card import ModelCard
from posefleet.node.engine.ov_compat import ColorFormat, PrePostProcessor
from posefleet.node.engine.types import Pose

U8Image = npt.NDArray[np.uint8]


def check_image(image: U8Image) -> None:
    """``ValueError`` unless ``image`` is what every family pre-processes: BGR uint8, HxWx3."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a BGR uint8 HxWx3 image, got {image.dtype} {image.shape}")


@dataclass(frozen=True)
class FrameMeta:
    """How the source image maps to the network input: ``x_src = (x_in - pad_x) / scale_x``."""

    source_size: tuple[int, int]  # (height, width)
    scale_x: float
    scale_y: float
    pad_x: float = 0.0
    pad_y: float = 0.0
    #: The stream (camera, video) the frame belongs to, for families that follow a stream; None: a lone image.
    stream: str | None = None


class PoseModel(ABC):
    """One model family: graph set-up, frame preparation and output decoding."""

    #: The card's ``family`` value this class serves; defining it registers the class.
    family: ClassVar[str]
    #: Typed decoding parameters (a pydantic dataclass with defaults); ``params`` is one of these.
    Params: ClassVar[type[Any]]
    #: Parameters ``posefleet eval`` uses unless the user sets them (e.g. more poses per image).
    eval_params: ClassVar[Mapping[str, Any]] = {}
    registry: ClassVar[dict[str, type[PoseModel]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "family" in cls.__dict__:
            PoseModel.registry[cls.family] = cls

    def __init__(self, card: ModelCard, input_size: tuple[int, int], params: Any = None) -> None:
        self.card = card
        self.input_size = input_size
        self.params = params if params is not None else self.Params()

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

    def preprocess(self, image: U8Image, stream: str | None = None) -> tuple[U8Image, FrameMeta]:
        """BGR uint8 HxWx3 image -> NHWC uint8 tensor of the input size, and the mapping back.

        ``stream`` names the camera or video the frame belongs to; stateless families ignore it.
        """
        check_image(image)
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
