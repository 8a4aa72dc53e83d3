"""Per-camera tracking: every pose of an answered frame gets its track id and box."""

from __future__ import annotations

import dataclasses
import time

from posefleet.coordinator.capture_windows import stamp_ms
from posefleet.coordinator.keypoint_arrays import F32, keypoint_arrays
from posefleet.coordinator.settings import TrackingSettings
from posefleet.merge.filters import OneEuroParams
from posefleet.merge.tracking import PoseTracker, TrackerParams, bbox
from posefleet.v1 import pose_pb2


class CameraTracks:
    """One ``PoseTracker`` per camera (created on its first result, removed with ``forget``)."""

    def __init__(self, settings: TrackingSettings) -> None:
        self.settings = settings
        s = settings
        one_euro = OneEuroParams(s.one_euro_min_cutoff, s.one_euro_beta, s.one_euro_derivative_cutoff)
        self._params = TrackerParams(
            min_similarity=s.min_similarity,
            min_pose_score=s.min_pose_score,
            keypoint_confidence=s.keypoint_confidence,
            min_keypoints=s.min_keypoints,
            max_tracks=s.max_tracks,
            max_age_ms=s.max_age_ms,
            one_euro=one_euro,
        )
        self._trackers: dict[str, PoseTracker] = {}

    def _tracker(self, camera: str) -> PoseTracker:
        tracker = self._trackers.get(camera)
        if tracker is None:
            smooth = "*" in self.settings.smooth_cameras or camera in self.settings.smooth_cameras
            tracker = PoseTracker(dataclasses.replace(self._params, smoothing=smooth))
            self._trackers[camera] = tracker
        return tracker

    def track(self, result: pose_pb2.PoseResult) -> list[F32] | None:
        """Give every pose of an OK result its track id and box (smoothed keypoints where smoothing is on);
        returns the poses as arrays, as the result now holds them (None: not tracked)."""
        if not self.settings.enabled or result.status != pose_pb2.RESULT_STATUS_OK or not result.camera_id:
            return None
        t0 = time.perf_counter()
        tracker = self._tracker(result.camera_id)
        arrays = keypoint_arrays(result)
        tracked = tracker.update(arrays, [p.score for p in result.poses], stamp_ms(result.capture_time))
        for pose, (track_id, keypoints) in zip(result.poses, tracked, strict=False):
            pose.track_id = track_id
            x, y, w, h = bbox(keypoints, self.settings.keypoint_confidence)
            pose.bbox.x, pose.bbox.y, pose.bbox.width, pose.bbox.height = x, y, w, h
            if tracker.params.smoothing:
                for kp, (kx, ky, _) in zip(pose.keypoints, keypoints.tolist(), strict=True):
                    kp.x, kp.y = kx, ky
        result.timings.track_ms = (time.perf_counter() - t0) * 1e3
        return [keypoints for _, keypoints in tracked]

    def forget(self, camera: str) -> None:
        self._trackers.pop(camera, None)
