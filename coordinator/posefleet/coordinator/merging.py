"""The coordinator's merge: track ids per camera, and live 3D fusion of each calibrated scene.

Results pass through ``Merger.tracks`` on their way to the camera (every pose gets ``track_id`` and
``bbox``: ``camera_tracks``) and through ``Merger.publish`` on their way to subscribers; each scene
(``live_scene``) groups its cameras' results by capture time into windows (``capture_windows``) and fuses
every window into 3D people (``fusion``, ``posefleet.merge``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from posefleet.coordinator.camera_tracks import CameraTracks
from posefleet.coordinator.consumers import ResultConsumer
from posefleet.coordinator.fusion import ProcessFusion
from posefleet.coordinator.live_scene import LiveScene
from posefleet.coordinator.settings import SceneSettings, TrackingSettings
from posefleet.v1 import pose_pb2

log = logging.getLogger("posefleet.coordinator")


class Merger(ResultConsumer):
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

    async def start(self, timeout: float = 30.0) -> None:
        """Fuse in a worker process from now on, once it has started (at most ``timeout`` s: a worker still
        starting then fuses the windows that wait for it, and the scene skips those beyond ``MAX_PENDING``)."""
        if self.scenes:
            self._worker = ProcessFusion(lambda fused: self.scenes[fused.scene].fused(fused))
            if not await self._worker.started(timeout):
                log.warning("the fusion worker has not started after %.0f s; scenes skip windows until it has", timeout)
            for scene in self.scenes.values():
                scene.fuse_in(self._worker)
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

    def answered(self, result: pose_pb2.PoseResult) -> None:
        """Every answered frame: its poses tracked (before its camera gets it back), then to its scenes."""
        poses = self.tracks.track(result)
        for scene in self._by_camera.get(result.camera_id, ()):
            scene.add(result, poses)

    def forget(self, camera: str) -> None:
        self.tracks.forget(camera)
