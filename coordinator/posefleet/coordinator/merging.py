"""The coordinator's merge: track ids per camera, and live 3D fusion of each calibrated scene.

Results pass through ``Merger.track`` on their way to the camera (every pose gets ``track_id`` and
``bbox``) and through ``Merger.publish`` on their way to subscribers; each scene groups its cameras'
results by capture time into windows and fuses every window into 3D people (``posefleet.merge``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from google.protobuf.timestamp_pb2 import Timestamp
from posefleet.coordinator.fusion import Fused, Fusion, InlineFusion, ProcessFusion, poses_of
from posefleet.coordinator.settings import SceneSettings, TrackingSettings
from posefleet.coordinator.subscribers import Backlog
from posefleet.merge.association import AssociationParams
from posefleet.merge.calibration import CalibrationError, Camera, load_calibration
from posefleet.merge.filters import OneEuroParams
from posefleet.merge.scene import FusionParams
from posefleet.merge.tracking import PoseTracker, TrackerParams, bbox
from posefleet.v1 import coordinator_pb2, pose_pb2

log = logging.getLogger("posefleet.coordinator")
F32 = npt.NDArray[np.float32]
#: A scene camera silent this long is no longer waited for (its windows close without it).
SILENT_S = 2.0
#: Windows a scene keeps open at most (the oldest is fused when more arrive).
MAX_OPEN_WINDOWS = 32


def _ms(stamp: Timestamp) -> float:
    return stamp.seconds * 1e3 + stamp.nanos / 1e6


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

    def track(self, result: pose_pb2.PoseResult) -> None:
        """Give every pose of an OK result its track id and box (smoothed keypoints where smoothing is on)."""
        if not self.settings.enabled or result.status != pose_pb2.RESULT_STATUS_OK or not result.camera_id:
            return
        t0 = time.perf_counter()
        tracker = self._tracker(result.camera_id)
        arrays = poses_of(result)
        tracked = tracker.update(arrays, [p.score for p in result.poses], _ms(result.capture_time))
        for pose, (track_id, keypoints) in zip(result.poses, tracked, strict=False):
            pose.track_id = track_id
            x, y, w, h = bbox(keypoints, self.settings.keypoint_confidence)
            pose.bbox.x, pose.bbox.y, pose.bbox.width, pose.bbox.height = x, y, w, h
            if tracker.params.smoothing:
                for kp, (kx, ky, _) in zip(pose.keypoints, keypoints.tolist(), strict=True):
                    kp.x, kp.y = kx, ky
        result.timings.track_ms = (time.perf_counter() - t0) * 1e3

    def forget(self, camera: str) -> None:
        self._trackers.pop(camera, None)


@dataclass
class _Window:
    start: float  # capture time, ms
    end: float
    opened: float  # monotonic
    views: dict[str, pose_pb2.PoseResult] = field(default_factory=dict)


class LiveScene:
    """One calibrated scene: windows of its cameras' results, fused into 3D people as they complete."""

    def __init__(self, name: str, settings: SceneSettings, fusion: Fusion | None = None) -> None:
        self.name = name
        self.settings = settings
        #: Where windows are fused (inline until the coordinator gives the scene its worker process).
        self.fusion: Fusion = fusion or InlineFusion(self.fused)
        self._configured = False
        try:
            cameras = load_calibration(settings.calibration)
        except CalibrationError as exc:
            raise CalibrationError(f"scene {name}: {exc}") from None
        unknown = [c for c in settings.cameras if c not in cameras]
        if unknown:
            raise CalibrationError(
                f"{settings.calibration}: scene {name}: camera {unknown[0]} is not in the calibration "
                f"(it has {', '.join(cameras)})"
            )
        self.calibrated = {cam_id: cameras[calib] for calib, cam_id in settings.cameras.items()}
        self.fitted: dict[str, Camera] = {}
        self.problems: dict[str, str] = {}
        self.last_seen: dict[str, float] = {}
        self._last_capture: dict[str, float] = {}
        self._period: dict[str, float] = {}
        self._windows: list[_Window] = []  # open, in capture-time order, never overlapping
        self._started: float | None = None  # the scene's first result
        self._subscribers: set[Backlog[coordinator_pb2.SceneResult]] = set()
        self.windows_done = 0
        self.skipped = 0  # windows fusion was too far behind to take
        self.late = 0  # results whose window had already been fused
        self._closed_until = -math.inf  # capture time (ms) up to which windows have left
        self.last_persons = 0
        self.last_fused: bytes | None = None
        self.fuse_ms: collections.deque[float] = collections.deque(maxlen=1000)
        self.camera_errors: dict[str, collections.deque[float]] = {
            c: collections.deque(maxlen=500) for c in self.calibrated
        }
        #: Called with every window's results as it leaves, fused or skipped (a live calibration records them).
        self.recorders: set[Callable[[dict[str, pose_pb2.PoseResult]], None]] = set()

    # -- windows ---------------------------------------------------------------------------
    def window_ms(self) -> float:
        """The configured window, or one frame period of the slowest streaming camera (100 ms until known)."""
        if self.settings.window_ms:
            return self.settings.window_ms
        periods = [p for c, p in self._period.items() if c in self._streaming()]
        return float(min(1000.0, max(5.0, *periods))) if periods else 100.0

    def _streaming(self) -> set[str]:
        now = time.monotonic()
        return {c for c, t in self.last_seen.items() if now - t < SILENT_S and c not in self.problems}

    def _expected(self) -> set[str]:
        """Cameras a window waits for: the streaming ones, and at start-up the ones not seen yet."""
        expected = self._streaming()
        if self._started is None or time.monotonic() - self._started < SILENT_S:
            expected |= {c for c in self.calibrated if c not in self.last_seen and c not in self.problems}
        return expected

    def add(self, result: pose_pb2.PoseResult) -> None:
        camera = result.camera_id
        if camera not in self.calibrated or camera in self.problems:
            return
        if self._started is None:
            self._started = time.monotonic()
        size = (result.image_width, result.image_height)
        fitted = self.fitted.get(camera)
        if result.status == pose_pb2.RESULT_STATUS_OK and (fitted is None or fitted.image_size != size):
            self._configured = False  # the fuser is rebuilt with the cameras fitted now
            try:
                self.fitted[camera] = self.calibrated[camera].fit(*size)
            except CalibrationError as exc:
                self.fitted.pop(camera, None)
                self.problems[camera] = str(exc)
                log.error("scene %s: %s", self.name, exc)
                return
        self.last_seen[camera] = time.monotonic()
        capture = _ms(result.capture_time)
        if camera in self._last_capture and capture > self._last_capture[camera]:
            delta = capture - self._last_capture[camera]
            self._period[camera] = 0.8 * self._period.get(camera, delta) + 0.2 * delta
        self._last_capture[camera] = capture
        if capture < self._closed_until:
            self.late += 1  # its window left already (the camera was slower than max_wait_ms)
            return
        self._window_for(camera, capture).views[camera] = result
        self.flush()

    def _window_for(self, camera: str, capture: float) -> _Window:
        """The open window holding ``capture``, or a new one centred on it (clipped by its neighbours).

        A window holds one result per camera: a camera's next frame inside a window it already has a result
        in (before its frame period is known) splits the window between the two frames.
        """
        for window in self._windows:
            if window.start <= capture < window.end:
                if camera not in window.views:
                    return window
                mine = _ms(window.views[camera].capture_time)
                window.end = (mine + capture) / 2
                break
        half = self.window_ms() / 2
        before = [w.end for w in self._windows if w.end <= capture]
        after = [w.start for w in self._windows if w.start > capture]
        start = max([capture - half, self._closed_until, *before])
        end = min([capture + half, *after])
        window = _Window(start, end, time.monotonic())
        self._windows.append(window)
        self._windows.sort(key=lambda w: w.start)
        return window

    def flush(self, force: bool = False) -> None:
        """Fuse every window that is complete (all expected cameras in) or overdue, oldest first."""
        expected = self._expected()
        now = time.monotonic()
        while self._windows:
            window = self._windows[0]
            overdue = now - window.opened > self.settings.max_wait_ms / 1e3
            complete = expected <= set(window.views)
            if not (force or overdue or complete or len(self._windows) > MAX_OPEN_WINDOWS):
                break  # windows leave in capture-time order
            self._windows.pop(0)
            # Complete: nothing else belongs to it, so a next frame just after its captures opens the next
            # window (its period may not be known yet). Otherwise its whole span is closed.
            last = max(_ms(r.capture_time) for r in window.views.values())
            self._closed_until = min(window.end, last + 1e-3) if complete else window.end
            self._emit(window)

    def _emit(self, window: _Window) -> None:
        for record in list(self.recorders):
            record(window.views)
        if not self._configured and len(self.fitted) >= 2:
            self.fusion.configure(self.name, dict(self.fitted), self._fusion_params())
            self._configured = True
        if not self.fusion.ready():
            self.skipped += 1  # fusion is behind: this window is skipped before any work is spent on it
            return
        views = [window.views[c].SerializeToString() for c in sorted(window.views)]
        missing = sorted(set(self.calibrated) - set(window.views))
        self.fusion.submit(self.name, window.start, (window.start + window.end) / 2, views, missing)

    def fused(self, fused: Fused) -> None:
        """A window came back fused: count it and hand it to every subscriber."""
        self.windows_done += 1
        self.last_persons = fused.persons
        self.last_fused = fused.result  # serialized SceneResult: parsed only when someone looks (the dashboard)
        self.fuse_ms.append(fused.fuse_ms)
        for cam_id, err in fused.camera_errors.items():  # in calibrated pixels, whatever the camera sends
            self.camera_errors[cam_id].append(err / self.fitted[cam_id].scale if cam_id in self.fitted else err)
        if not self._subscribers:
            return
        out = coordinator_pb2.SceneResult.FromString(fused.result)  # parsed only for someone to read
        for backlog in self._subscribers:  # a slow subscriber loses its oldest windows, never slows the scene
            backlog.put(out)

    def _fusion_params(self) -> FusionParams:
        """The scene's settings; the reprojection threshold is in calibrated pixels, so it shrinks with
        cameras that stream smaller frames (model-sized frames: about a quarter)."""
        s = self.settings
        scale = min(cam.scale for cam in self.fitted.values())
        return FusionParams(
            association=AssociationParams(s.min_keypoint_score, 3, s.max_ray_distance_m),
            max_error_px=s.max_reprojection_error_px * scale,
            max_track_distance_m=s.max_track_distance_m,
            min_joints=s.min_joints,
            smoothing=s.smoothing,
        )

    # -- subscribers and status ------------------------------------------------------------
    async def subscribe(
        self, backlog: Backlog[coordinator_pb2.SceneResult]
    ) -> AsyncIterator[coordinator_pb2.SceneResult]:
        """Every fused window, each counting the windows this subscriber lost before it; ``backlog`` drops
        a subscriber that stays behind (``SubscriberTooSlow``)."""
        self._subscribers.add(backlog)
        try:
            while True:
                result, lost = await backlog.get()
                if lost:
                    result = coordinator_pb2.SceneResult.FromString(result.SerializeToString())
                    result.lost = lost
                yield result
        finally:
            self._subscribers.discard(backlog)

    def status(self) -> coordinator_pb2.SceneStatus:
        streaming = self._streaming()
        fuse = np.percentile(self.fuse_ms, 99) if self.fuse_ms else 0.0
        out = coordinator_pb2.SceneStatus(
            scene=self.name,
            windows=self.windows_done,
            persons=self.last_persons,
            windows_skipped=self.skipped,
            window_ms=self.window_ms(),
            fuse_p99_ms=float(fuse),
        )
        names = {cam_id: calib for calib, cam_id in self.settings.cameras.items()}
        for cam_id in self.calibrated:
            errors = self.camera_errors[cam_id]
            problem = self.problems.get(cam_id, "" if cam_id in self.last_seen else "has not streamed yet")
            median = float(np.median(errors)) if errors else 0.0
            out.cameras.add(
                camera_id=cam_id,
                calibration_name=names[cam_id],
                streaming=cam_id in streaming,
                problem=problem,
                median_reprojection_error_px=median,
            )
        return out


class Merger:
    """Tracking for every camera and the live scenes of the coordinator's settings."""

    def __init__(self, tracking: TrackingSettings, scenes: dict[str, SceneSettings]) -> None:
        self.tracks = CameraTracks(tracking)
        self.scenes = {name: LiveScene(name, s) for name, s in scenes.items()}
        self._by_camera: dict[str, list[LiveScene]] = {}
        for scene in self.scenes.values():
            for cam_id in scene.calibrated:
                self._by_camera.setdefault(cam_id, []).append(scene)
        self._task: asyncio.Task[None] | None = None
        self._worker: ProcessFusion | None = None

    def start(self) -> None:
        """Fuse in a worker process from now on (needs the running loop)."""
        if self.scenes:
            self._worker = ProcessFusion(lambda fused: self.scenes[fused.scene].fused(fused))
            for scene in self.scenes.values():
                scene.fusion = self._worker
                scene._configured = False
            self._task = asyncio.create_task(self._close_overdue(), name="scene-windows")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._worker is not None:
            self._worker.close()

    async def _close_overdue(self) -> None:
        """Windows of a camera that went away still close (the scene fuses from the rest)."""
        while True:
            await asyncio.sleep(0.05)
            for scene in self.scenes.values():
                scene.flush()

    def publish(self, result: pose_pb2.PoseResult) -> None:
        for scene in self._by_camera.get(result.camera_id, ()):
            scene.add(result)
