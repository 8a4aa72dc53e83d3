"""Result types shared by every model family."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from posefleet.common.keypoints import COCO_KEYPOINTS, NUM_KEYPOINTS

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Pose:
    """One person: ``keypoints`` is a (17, 3) array of (x, y, score) in source-image pixels, COCO order."""

    keypoints: FloatArray
    score: float

    def __post_init__(self) -> None:
        if self.keypoints.shape != (NUM_KEYPOINTS, 3):
            raise ValueError(f"pose keypoints must have shape (17, 3), got {self.keypoints.shape}")

    def to_dict(self) -> dict[str, object]:
        """JSON form: ``{"score": s, "keypoints": [{"name", "x", "y", "score"}, ...]}``."""
        return {
            "score": round(float(self.score), 5),
            "keypoints": [
                {"name": name, "x": round(float(x), 2), "y": round(float(y), 2), "score": round(float(s), 5)}
                for name, (x, y, s) in zip(COCO_KEYPOINTS, self.keypoints.tolist(), strict=True)
            ],
        }


@dataclass
class Timings:
    """Per-stage wall time of one frame, in milliseconds (a node also fills queue and image decoding)."""

    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    decode_ms: float = 0.0
    queue_ms: float = 0.0
    decode_image_ms: float = 0.0


@dataclass
class PoseResult:
    """Poses found in one frame, with per-stage timings."""

    poses: list[Pose]
    image_size: tuple[int, int]  # (height, width) of the source image
    timings: Timings = field(default_factory=Timings)
    #: Each pose's appearance (``posefleet.merge.appearance``), where the caller described it.
    looks: list[FloatArray | None] | None = None
