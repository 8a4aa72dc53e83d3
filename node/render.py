"""Draw poses over images with OpenCV."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
from posefleet.node.models.keypoints import SKELETON
from posefleet.node.models.types import Pose

_LEFT, _RIGHT, _CENTRE = (255, 160, 0), (0, 140, 255), (80, 220, 80)


def _colour(a: int, b: int) -> tuple[int, int, int]:
    if a % 2 == 1 and b % 2 == 1 and a > 0 and b > 0:
        return _LEFT
    if a % 2 == 0 and b % 2 == 0 and a > 0 and b > 0:
        return _RIGHT
    return _CENTRE


def draw_poses(
    image: npt.NDArray[np.uint8], poses: list[Pose], min_score: float = 0.2, min_pose_score: float = 0.1
) -> npt.NDArray[np.uint8]:
    """A copy of ``image`` with each pose's skeleton and keypoints drawn (left blue, right orange)."""
    out = image.copy()
    thickness = max(2, round(max(image.shape[:2]) / 320))
    for pose in poses:
        if pose.score < min_pose_score:
            continue
        kp = pose.keypoints
        for a, b in SKELETON:
            if kp[a, 2] >= min_score and kp[b, 2] >= min_score:
                pa = (round(float(kp[a, 0])), round(float(kp[a, 1])))
                pb = (round(float(kp[b, 0])), round(float(kp[b, 1])))
                cv2.line(out, pa, pb, _colour(a, b), thickness, cv2.LINE_AA)
        for x, y, s in kp:
            if s >= min_score:
                cv2.circle(out, (round(float(x)), round(float(y))), thickness + 1, (255, 255, 255), -1, cv2.LINE_AA)
    return out
