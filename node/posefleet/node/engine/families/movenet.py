"""Google MoveNet SinglePose (Lightning, Thunder): one person, 17 keypoints, following them frame to frame.

For a stream (a camera, a video) each frame is cropped around where the previous frame's person was, with
the crop-region algorithm of tfjs-models' MoveNet: a square around the hips' midpoint, large enough for the
torso (x 1.9) and the body (x 1.2), kept inside the image; the whole image (as a square) when the torso is
lost or for a lone image. The crop of each stream lives here, keyed by stream, and expires.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, ClassVar

import cv2
import numpy as np
import numpy.typing as npt
from posefleet.common.keypoints import KEYPOINT_INDEX
from posefleet.node.engine.families.base import FrameMeta, PoseModel, U8Image, check_image
from posefleet.node.engine.types import Pose
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass

TORSO = [KEYPOINT_INDEX[n] for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip")]
HIPS = [KEYPOINT_INDEX["left_hip"], KEYPOINT_INDEX["right_hip"]]
SHOULDERS = [KEYPOINT_INDEX["left_shoulder"], KEYPOINT_INDEX["right_shoulder"]]
#: Streams whose crop is kept, and for how long after their last frame.
MAX_STREAMS = 256
STREAM_TTL_S = 10.0

Crop = tuple[float, float, float]  # (x0, y0, side) in source pixels


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class MoveNetParams:
    #: The pose is reported when the mean keypoint score reaches this.
    min_pose_score: float = 0.25
    #: Follow the person of a stream with the crop region (tfjs-models); off: always the whole image.
    crop_tracking: bool = True
    #: Keypoints below this do not count for the crop region.
    min_crop_keypoint_score: float = 0.2


def whole_image(height: int, width: int) -> Crop:
    """The square around the whole image (padded on its short side), as tfjs-models' initCropRegion."""
    side = float(max(height, width))
    return (width - side) / 2, (height - side) / 2, side


def next_crop(keypoints: npt.NDArray[np.float32], height: int, width: int, min_score: float) -> Crop:
    """tfjs-models' determineCropRegion on source-pixel keypoints."""
    seen = keypoints[:, 2] > min_score
    if not (seen[HIPS].any() and seen[SHOULDERS].any()):
        return whole_image(height, width)
    cx, cy = keypoints[HIPS, 0].mean(), keypoints[HIPS, 1].mean()
    torso = keypoints[TORSO]
    body = keypoints[seen]
    half = max(
        np.abs(torso[:, 0] - cx).max() * 1.9,
        np.abs(torso[:, 1] - cy).max() * 1.9,
        np.abs(body[:, 1] - cy).max() * 1.2,
        np.abs(body[:, 0] - cx).max() * 1.2,
    )
    half = min(half, max(cx, width - cx, cy, height - cy))
    if half > max(height, width) / 2:
        return whole_image(height, width)
    return float(cx - half), float(cy - half), float(2 * half)


class MoveNetModel(PoseModel):
    family = "movenet"
    Params = MoveNetParams
    params: MoveNetParams
    eval_params: ClassVar[Mapping[str, Any]] = {"min_pose_score": 0.0}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._crops: OrderedDict[str, tuple[Crop, float]] = OrderedDict()
        self._lock = threading.Lock()

    def _crop_for(self, stream: str | None, height: int, width: int) -> Crop:
        if stream is None or not self.params.crop_tracking:
            return whole_image(height, width)
        now = time.monotonic()
        with self._lock:
            while self._crops and now - next(iter(self._crops.values()))[1] > STREAM_TTL_S:
                self._crops.popitem(last=False)  # oldest first: streams that went quiet
            found = self._crops.get(stream)
        return found[0] if found else whole_image(height, width)

    def preprocess(self, image: U8Image, stream: str | None = None) -> tuple[U8Image, FrameMeta]:
        """The stream's crop region of ``image`` (zero outside the image) scaled to the input size."""
        check_image(image)
        src_h, src_w = image.shape[:2]
        h, w = self.input_size
        x0, y0, side = self._crop_for(stream, src_h, src_w)
        sx, sy = w / side, h / side
        affine = np.array([[sx, 0, -x0 * sx], [0, sy, -y0 * sy]], np.float64)
        crop = cv2.warpAffine(image, affine, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        return crop[None], FrameMeta((src_h, src_w), sx, sy, -x0 * sx, -y0 * sy, stream)

    def decode(self, outputs: Mapping[str, npt.NDArray[Any]], meta: FrameMeta) -> list[Pose]:
        out = next(iter(outputs.values())).reshape(17, 3)  # (y, x, score), 0..1 of the input
        h, w = self.input_size
        keypoints = np.stack([out[:, 1] * w, out[:, 0] * h, out[:, 2]], axis=1).astype(np.float32)
        (pose,) = self.to_source([(keypoints, float(out[:, 2].mean()))], meta)
        if meta.stream is not None and self.params.crop_tracking:
            crop = next_crop(pose.keypoints, *meta.source_size, self.params.min_crop_keypoint_score)
            with self._lock:
                self._crops[meta.stream] = (crop, time.monotonic())
                self._crops.move_to_end(meta.stream)
                while len(self._crops) > MAX_STREAMS:
                    self._crops.popitem(last=False)
        return [pose] if pose.score >= self.params.min_pose_score else []
