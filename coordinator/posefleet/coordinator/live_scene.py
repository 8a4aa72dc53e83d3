"""One calibrated scene, live: its cameras' results in capture-time windows, each window fused into 3D people
(in the coordinator's fusion worker) and handed to the scene's subscribers."""

from __future__ import annotations

import collections
import logging
from collections.abc import AsyncIterator, Callable

import numpy as np
from posefleet.coordinator.capture_windows import CaptureWindows, Window
from posefleet.coordinator.fusion import FusedWindow, Fusion, InlineFusion
from posefleet.coordinator.keypoint_arrays import F32, PackedPoses, keypoint_arrays
from posefleet.coordinator.settings import SceneSettings
from posefleet.coordinator.subscribers import Backlog
from posefleet.coordinator.wire_bytes import embedded
from posefleet.merge.association import AssociationParams
from posefleet.merge.calibration import CalibrationError, Camera, load_calibration
from posefleet.merge.scene import FusionParams
from posefleet.v1 import coordinator_pb2, pose_pb2

log = logging.getLogger("posefleet.coordinator")


#: ``SceneResult.views``' field number: a window's results are appended to it already serialized.
_VIEWS = coordinator_pb2.SceneResult.DESCRIPTOR.fields_by_name["views"].number


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
        self.windows = CaptureWindows(self.calibrated, settings.window_ms, settings.max_wait_ms)
        self._subscribers: set[Backlog[coordinator_pb2.SceneResult]] = set()
        self.windows_done = 0
        self.skipped = 0  # windows fusion was too far behind to take
        self.last_persons = 0
        self.last_fused: bytes | None = None
        self.fuse_ms: collections.deque[float] = collections.deque(maxlen=1000)
        self.camera_errors: dict[str, collections.deque[float]] = {
            c: collections.deque(maxlen=500) for c in self.calibrated
        }
        #: Called with every window's results as it leaves, fused or skipped (a live calibration records them).
        self.recorders: set[Callable[[dict[str, pose_pb2.PoseResult]], None]] = set()

    def fuse_in(self, fusion: Fusion) -> None:
        """Fuse the windows from now on in ``fusion`` (the coordinator's worker process), configured anew."""
        self.fusion = fusion
        self._configured = False

    # -- windows ---------------------------------------------------------------------------
    def add(self, result: pose_pb2.PoseResult, poses: list[F32] | None = None) -> None:
        """One camera's answered frame (``poses``: its poses as arrays, when tracking made them)."""
        camera = result.camera_id
        if camera not in self.calibrated or camera in self.problems:
            return
        size = (result.image_width, result.image_height)
        fitted = self.fitted.get(camera)
        if result.status == pose_pb2.RESULT_STATUS_OK and (fitted is None or fitted.image_size != size):
            self._configured = False  # the fuser is rebuilt with the cameras fitted now
            try:
                self.fitted[camera] = self.calibrated[camera].fit(*size)
            except CalibrationError as exc:
                self.fitted.pop(camera, None)
                self.problems[camera] = str(exc)
                self.windows.excluded.add(camera)
                log.error("scene %s: %s", self.name, exc)
                return
        for window in self.windows.add(result, poses):
            self._emit(window)

    def flush(self, force: bool = False) -> None:
        """Hand on every window that leaves now (``CaptureWindows.flush``)."""
        for window in self.windows.flush(force):
            self._emit(window)

    def _emit(self, window: Window) -> None:
        for record in list(self.recorders):
            record(window.views)
        if not self._configured and len(self.fitted) >= 2:
            self.fusion.configure(self.name, dict(self.fitted), self._fusion_params())
            self._configured = True
        if not self.fusion.ready():
            self.skipped += 1  # fusion is behind: this window is skipped before any work is spent on it
            return
        out = coordinator_pb2.SceneResult(
            scene=self.name, missing_cameras=sorted(set(self.calibrated) - set(window.views))
        )
        out.window_start.FromMilliseconds(round(window.start))
        serialized = out.SerializeToString() + b"".join(
            embedded(_VIEWS, window.views[c].SerializeToString()) for c in sorted(window.views)
        )
        poses = {
            c: window.poses[c] if c in window.poses else keypoint_arrays(r)
            for c, r in window.views.items()
            if r.status == pose_pb2.RESULT_STATUS_OK
        }
        if not self.fusion.submit(serialized, (window.start + window.end) / 2, PackedPoses.pack(poses)):
            self.skipped += 1

    def fused(self, fused: FusedWindow) -> None:
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
        streaming = self.windows.streaming()
        fuse = np.percentile(self.fuse_ms, 99) if self.fuse_ms else 0.0
        out = coordinator_pb2.SceneStatus(
            scene=self.name,
            windows=self.windows_done,
            persons=self.last_persons,
            windows_skipped=self.skipped,
            window_ms=self.windows.window_ms(),
            fuse_p99_ms=float(fuse),
        )
        names = {cam_id: calib for calib, cam_id in self.settings.cameras.items()}
        for cam_id in self.calibrated:
            errors = self.camera_errors[cam_id]
            problem = self.problems.get(cam_id, "" if cam_id in self.windows.last_seen else "has not streamed yet")
            median = float(np.median(errors)) if errors else 0.0
            out.cameras.add(
                camera_id=cam_id,
                calibration_name=names[cam_id],
                streaming=cam_id in streaming,
                problem=problem,
                median_reprojection_error_px=median,
            )
        return out
