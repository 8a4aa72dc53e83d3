"""Draw skeletons over images with OpenCV: one drawing for engine results and proto results alike."""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np
import numpy.typing as npt
from posefleet.common.keypoints import SKELETON

_LEFT, _RIGHT, _CENTRE = (255, 160, 0), (0, 140, 255), (80, 220, 80)

#: One pose: a (17, 3) array of (x, y, score) in image pixels, and the pose score.
DrawablePose = tuple[npt.NDArray[np.float32], float]


def _colour(a: int, b: int) -> tuple[int, int, int]:
    if a % 2 == 1 and b % 2 == 1 and a > 0 and b > 0:
        return _LEFT
    if a % 2 == 0 and b % 2 == 0 and a > 0 and b > 0:
        return _RIGHT
    return _CENTRE


def id_colour(identity: int) -> tuple[int, int, int]:
    """A distinct BGR colour per track or person id (golden-angle hues)."""
    hue = int((identity * 137.508) % 180)
    bgr = cv2.cvtColor(np.array([[[hue, 220, 255]]], np.uint8), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


def draw_skeletons(
    image: npt.NDArray[np.uint8],
    poses: Iterable[DrawablePose],
    min_score: float = 0.2,
    min_pose_score: float = 0.1,
    colours: Iterable[tuple[int, int, int] | None] | None = None,
) -> npt.NDArray[np.uint8]:
    """A copy of ``image`` with each pose's skeleton and keypoints drawn (left blue, right orange, or one
    colour per pose from ``colours``, e.g. ``id_colour(track_id)``)."""
    out = image.copy()
    thickness = max(2, round(max(image.shape[:2]) / 320))
    chosen = iter(colours) if colours is not None else None
    for kp, score in poses:
        colour = next(chosen, None) if chosen is not None else None
        if score < min_pose_score:
            continue
        for a, b in SKELETON:
            if kp[a, 2] >= min_score and kp[b, 2] >= min_score:
                pa = (round(float(kp[a, 0])), round(float(kp[a, 1])))
                pb = (round(float(kp[b, 0])), round(float(kp[b, 1])))
                cv2.line(out, pa, pb, colour or _colour(a, b), thickness, cv2.LINE_AA)
        for x, y, s in kp:
            if s >= min_score:
                cv2.circle(out, (round(float(x)), round(float(y))), thickness + 1, (255, 255, 255), -1, cv2.LINE_AA)
    return out
