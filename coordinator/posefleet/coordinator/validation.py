"""What the coordinator accepts from cameras and from nodes: every network input is checked here."""

from __future__ import annotations

import math

from posefleet.common.keypoints import NUM_KEYPOINTS
from posefleet.merge.appearance import DIMENSIONS
from posefleet.v1 import pose_pb2
from posefleet.v1.ids import camera_id_problem

__all__ = ["KEYPOINT_MARGIN", "MAX_POSES", "MAX_RESULT_BYTES", "MIN_WINDOW_MS", "camera_id_problem", "result_problem"]

#: A node's result may hold at most this many poses.
MAX_POSES = 100
#: The largest node answer read: 100 poses of 17 named keypoints take about 50 KB.
MAX_RESULT_BYTES = 1 << 20
#: Keypoints may lie this far (a fraction of the image size) outside the image, no farther.
KEYPOINT_MARGIN = 0.5
#: ``Subscribe`` windows shorter than this are raised to it (1 ms windows cost subscribers 11x the CPU).
MIN_WINDOW_MS = 10


def result_problem(result: pose_pb2.PoseResult) -> str | None:
    """Why a node's OK result cannot be passed on (too many poses, keypoints not finite or far off the image)."""
    if result.status != pose_pb2.RESULT_STATUS_OK:
        return None
    if len(result.poses) > MAX_POSES:
        return f"{len(result.poses)} poses in one result (at most {MAX_POSES})"
    w, h = max(1, result.image_width), max(1, result.image_height)
    for pose in result.poses:
        if len(pose.keypoints) != NUM_KEYPOINTS:
            return f"a pose with {len(pose.keypoints)} keypoints (expected {NUM_KEYPOINTS})"
        if pose.appearance and (
            len(pose.appearance) != DIMENSIONS or not all(math.isnan(v) or 0 <= v <= 255 for v in pose.appearance)
        ):
            return f"a pose appearance of {len(pose.appearance)} values (expected {DIMENSIONS}, each 0-255 or NaN)"
        for k in pose.keypoints:
            if not (math.isfinite(k.x) and math.isfinite(k.y) and math.isfinite(k.score)):
                return "a keypoint that is not a finite number"
            if not (-KEYPOINT_MARGIN * w <= k.x <= (1 + KEYPOINT_MARGIN) * w) or not (
                -KEYPOINT_MARGIN * h <= k.y <= (1 + KEYPOINT_MARGIN) * h
            ):
                return f"a keypoint at ({k.x:.0f}, {k.y:.0f}), far outside the {w}x{h} image"
    return None
