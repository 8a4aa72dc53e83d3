"""Ultralytics YOLOv8/YOLO11 pose models: one pass, boxes and 17 keypoints per anchor, then NMS.

Frames are letterboxed as Ultralytics does (the image scaled to fit, centred, padded with grey 114); the
export's keypoint scores are already sigmoid-ed; a pose's score is its person score; NMS runs on corner boxes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import cv2
import numpy as np
import numpy.typing as npt
from posefleet.node.engine.families.base import FrameMeta, PoseModel, U8Image, check_image
from posefleet.node.engine.types import Pose
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass

PAD_VALUE = 114


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class YoloPoseParams:
    """Decoding knobs (Ultralytics' names and defaults)."""

    #: Person score a detection needs.
    conf: float = 0.25
    #: Boxes overlapping a better one more than this (IoU) are the same person.
    iou: float = 0.7
    max_poses: int = 30


class YoloPoseModel(PoseModel):
    family = "yolo-pose"
    Params = YoloPoseParams
    eval_params: ClassVar[Mapping[str, Any]] = {"conf": 0.001, "max_poses": 100}  # COCO evaluation: faint poses too
    params: YoloPoseParams

    def preprocess(self, image: U8Image, stream: str | None = None) -> tuple[U8Image, FrameMeta]:
        """Ultralytics' letterbox: scale to fit, centre, pad with grey 114."""
        check_image(image)
        src_h, src_w = image.shape[:2]
        h, w = self.input_size
        scale = min(h / src_h, w / src_w)
        new_w, new_h = round(src_w * scale), round(src_h * scale)
        pad_x, pad_y = (w - new_w) / 2, (h - new_h) / 2
        left, top = round(pad_x - 0.1), round(pad_y - 0.1)
        canvas = np.full((h, w, 3), PAD_VALUE, np.uint8)
        resized = (
            image
            if (new_w, new_h) == (src_w, src_h)
            else cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        )
        canvas[top : top + new_h, left : left + new_w] = resized
        return canvas[None], FrameMeta((src_h, src_w), new_w / src_w, new_h / src_h, float(left), float(top))

    def decode(self, outputs: Mapping[str, npt.NDArray[Any]], meta: FrameMeta) -> list[Pose]:
        out = next(iter(outputs.values()))[0].T  # (anchors, 56): cx, cy, w, h, score, 17 x (x, y, score)
        keep = out[:, 4] >= self.params.conf
        found = out[keep]
        if not len(found):
            return []
        boxes = np.stack([found[:, 0] - found[:, 2] / 2, found[:, 1] - found[:, 3] / 2, found[:, 2], found[:, 3]], 1)
        chosen = cv2.dnn.NMSBoxes(boxes.tolist(), found[:, 4].tolist(), self.params.conf, self.params.iou)
        order = sorted(np.asarray(chosen).reshape(-1).tolist(), key=lambda i: -float(found[i, 4]))
        raw = [
            (found[i, 5:].reshape(17, 3).astype(np.float32), float(found[i, 4])) for i in order[: self.params.max_poses]
        ]
        return self.to_source(raw, meta)
