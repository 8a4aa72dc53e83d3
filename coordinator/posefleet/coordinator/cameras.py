"""Per-camera real-time handling: a bounded queue, drop policy, in-order results and stats."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Callable

import grpc
import numpy as np
from posefleet.common.grpc_server import Malformed
from posefleet.coordinator.jobs import Job
from posefleet.coordinator.registry import Registry
from posefleet.v1 import coordinator_pb2, pose_pb2

_WINDOW_S = 5.0
#: Frames of one stream the coordinator holds (waiting, on nodes, or answered but not yet read); beyond it
#: the camera's frames are not read until it reads its results.
MAX_UNANSWERED = 256


class CameraStats:
    """Frigate-style per-camera counters, FPS over the last few seconds, latency percentiles."""

    def __init__(self, camera_id: str) -> None:
        self.camera_id = camera_id
        self.last_seen = time.monotonic()
        self.streams = 0  # open StreamCamera calls of this camera
        self.frames_in = self.ok = self.dropped = self.failed = 0
        self._arrivals: collections.deque[float] = collections.deque()
        self._done: collections.deque[float] = collections.deque()
        self._latency_ms: collections.deque[float] = collections.deque(maxlen=1000)

    @staticmethod
    def _prune(times: collections.deque[float], now: float) -> None:
        while times and now - times[0] > _WINDOW_S:
            times.popleft()

    @classmethod
    def _rate(cls, times: collections.deque[float], now: float) -> float:
        cls._prune(times, now)
        if len(times) < 2:
            return 0.0
        return (len(times) - 1) / max(1e-6, times[-1] - times[0])

    def arrived(self) -> None:
        self.frames_in += 1
        now = self.last_seen = time.monotonic()
        self._arrivals.append(now)
        self._prune(self._arrivals, now)  # bounded by the window, whether or not anyone asks for stats

    def answered(self, result: pose_pb2.PoseResult, latency_ms: float) -> None:
        if result.status == pose_pb2.RESULT_STATUS_OK:
            self.ok += 1
            now = time.monotonic()
            self._done.append(now)
            self._prune(self._done, now)
            self._latency_ms.append(latency_ms)
        elif result.status == pose_pb2.RESULT_STATUS_DROPPED:
            self.dropped += 1
        else:
            self.failed += 1

    def to_proto(self) -> coordinator_pb2.CameraStats:
        now = time.monotonic()
        p50, p99 = np.percentile(self._latency_ms, [50, 99]).tolist() if self._latency_ms else (0.0, 0.0)
        return coordinator_pb2.CameraStats(
            camera_id=self.camera_id,
            input_fps=self._rate(self._arrivals, now),
            processed_fps=self._rate(self._done, now),
            frames_in=self.frames_in,
            frames_ok=self.ok,
            frames_dropped=self.dropped,
            frames_failed=self.failed,
            latency_p50_ms=p50,
            latency_p99_ms=p99,
        )


def _checked(
    item: pose_pb2.Frame | Malformed, camera: str | None, last_sequence: int
) -> tuple[pose_pb2.Frame, str | None]:
    """The frame and why it cannot be sent (a message that did not parse, another camera, an old sequence)."""
    if isinstance(item, Malformed):
        return pose_pb2.Frame(camera_id=camera or "", sequence=max(last_sequence, 0)), str(item)
    if camera is not None and item.camera_id != camera:
        return item, f"camera_id {item.camera_id[:40]!r} changed within the stream of {camera!r}"
    if item.sequence <= last_sequence:
        return item, f"sequence {item.sequence} is not above the previous frame's ({last_sequence})"
    return item, None


class CameraSession:
    """One StreamCamera call: frames in, exactly one result per frame out, in arrival order."""

    def __init__(
        self,
        registry: Registry,
        stats: CameraStats,
        *,
        queue_size: int,
        policy: str,
        frame_timeout: float,
        publish: Callable[[pose_pb2.PoseResult], None],
        watch: Callable[[pose_pb2.Frame], None] | None = None,
    ) -> None:
        self.registry = registry
        self.stats = stats
        self.queue_size = queue_size
        self.policy = policy
        self.frame_timeout = frame_timeout
        self.publish = publish
        self.watch = watch  # sees each frame sent on (the dashboard's thumbnails)
        self._waiting: collections.deque[Job] = collections.deque()  # not yet on a node
        self._order: collections.deque[Job] = collections.deque()  # not yet answered to the camera
        self._has_waiting = asyncio.Event()
        self._has_room = asyncio.Event()
        self._has_room.set()
        self._arrived = asyncio.Event()
        self._reading_done = False
        self._order_room = asyncio.Event()
        self._order_room.set()

    async def _read(self, frames: AsyncIterator[pose_pb2.Frame]) -> None:
        camera: str | None = None
        last_sequence = -1
        try:
            async for item in frames:
                frame, problem = _checked(item, camera, last_sequence)
                camera = frame.camera_id if camera is None else camera
                if problem is not None:  # answered at once, in order, never sent to a node
                    job = Job.start(frame, self.frame_timeout)
                    job.fail(grpc.StatusCode.INVALID_ARGUMENT, problem)
                    self._order.append(job)
                    self._arrived.set()
                    continue
                last_sequence = frame.sequence
                if len(self._order) >= MAX_UNANSWERED:
                    # The camera is not reading its results: stop reading its frames (gRPC flow control
                    # holds the camera back) instead of buffering frames and results without end.
                    self._order_room.clear()
                    await self._order_room.wait()
                if self.policy == "block":
                    await self._has_room.wait()
                elif len(self._waiting) >= self.queue_size:
                    self._waiting.popleft().drop("camera faster than the cluster: replaced by a newer frame")
                job = Job.start(frame, self.frame_timeout)
                self.stats.arrived()
                if self.watch is not None:
                    self.watch(frame)
                self._waiting.append(job)
                self._order.append(job)
                if len(self._waiting) >= self.queue_size:
                    self._has_room.clear()
                self._has_waiting.set()
                self._arrived.set()
        finally:
            self._reading_done = True
            self._arrived.set()
            self._has_waiting.set()

    async def _dispatch(self) -> None:
        """Send the oldest waiting frame once a node has a free credit for it (``Registry.dispatch``)."""
        while True:
            await self._has_waiting.wait()
            if not self._waiting:
                if self._reading_done:
                    return
                self._has_waiting.clear()
                continue
            head = self._waiting[0]
            await self.registry.dispatch(head)  # sent, failed, or dropped meanwhile: either way it leaves
            if self._waiting and self._waiting[0] is head:
                self._waiting.popleft()
            self._room()

    def _room(self) -> None:
        if len(self._waiting) < self.queue_size:
            self._has_room.set()

    async def results(self, frames: AsyncIterator[pose_pb2.Frame]) -> AsyncIterator[pose_pb2.PoseResult]:
        reader = asyncio.create_task(self._read(frames))
        dispatcher = asyncio.create_task(self._dispatch())
        try:
            while True:
                if not self._order:
                    if self._reading_done:
                        break
                    self._arrived.clear()
                    await self._arrived.wait()
                    continue
                job = self._order[0]
                result = await job.result()
                self._order.popleft()
                if len(self._order) < MAX_UNANSWERED:
                    self._order_room.set()
                self.stats.answered(result, result.timings.route_ms)
                self.publish(result)
                yield result
        finally:
            reader.cancel()
            dispatcher.cancel()
            for job in self._order:
                if not job.future.done():
                    job.future.cancel()
