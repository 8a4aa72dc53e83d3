"""A result's poses as the merge's arrays (``posefleet.merge`` works on arrays, never on the wire contract)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from posefleet.common.keypoints import NUM_KEYPOINTS
from posefleet.merge.appearance import DIMENSIONS
from posefleet.v1 import pose_pb2

F32 = npt.NDArray[np.float32]


def keypoint_arrays(result: pose_pb2.PoseResult) -> list[F32]:
    """The result's poses as (17, 3) arrays of x, y, score (COCO order); poses of another layout are left out."""
    return [
        np.array([(k.x, k.y, k.score) for k in pose.keypoints], np.float32)
        for pose in result.poses
        if len(pose.keypoints) == NUM_KEYPOINTS
    ]


def appearances(result: pose_pb2.PoseResult) -> list[F32]:
    """The appearance of each pose ``keypoint_arrays`` keeps (all NaN where the node gave none)."""
    unseen = np.full(DIMENSIONS, np.nan, np.float32)
    return [
        np.array(pose.appearance, np.float32) if len(pose.appearance) == DIMENSIONS else unseen
        for pose in result.poses
        if len(pose.keypoints) == NUM_KEYPOINTS
    ]


@dataclass(frozen=True)
class PackedPoses:
    """A window's poses per camera in one buffer: what crosses to the fusion worker (pickling a dozen small
    arrays one by one costs the event loop about 40 us a window; one buffer, a few)."""

    cameras: tuple[str, ...]
    counts: tuple[int, ...]
    data: bytes  # float32, (sum(counts), 17, 3)

    @staticmethod
    def pack(poses: dict[str, list[F32]]) -> PackedPoses:
        cameras = tuple(poses)
        counts = tuple(len(poses[c]) for c in cameras)
        every = [pose for c in cameras for pose in poses[c]]
        data = np.stack(every).astype(np.float32, copy=False).tobytes() if every else b""
        return PackedPoses(cameras, counts, data)

    def unpack(self) -> dict[str, list[F32]]:
        flat = np.frombuffer(self.data, np.float32).reshape(-1, NUM_KEYPOINTS, 3)
        out: dict[str, list[F32]] = {}
        start = 0
        for camera, count in zip(self.cameras, self.counts, strict=True):
            out[camera] = list(flat[start : start + count])
            start += count
        return out
