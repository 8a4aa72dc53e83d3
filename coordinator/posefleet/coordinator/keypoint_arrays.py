"""A result's poses as the merge's arrays (``posefleet.merge`` works on arrays, never on the wire contract)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from posefleet.common.keypoints import NUM_KEYPOINTS
from posefleet.v1 import pose_pb2

F32 = npt.NDArray[np.float32]


def keypoint_arrays(result: pose_pb2.PoseResult) -> list[F32]:
    """The result's poses as (17, 3) arrays of x, y, score (COCO order); poses of another layout are left out."""
    return [
        np.array([(k.x, k.y, k.score) for k in pose.keypoints], np.float32)
        for pose in result.poses
        if len(pose.keypoints) == NUM_KEYPOINTS
    ]
