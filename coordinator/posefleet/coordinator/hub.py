"""``Subscribe``: fan-out of merged results to many subscribers, grouped across cameras by capture time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from google.protobuf.timestamp_pb2 import Timestamp
from posefleet.coordinator.capture_windows import stamp_ms
from posefleet.coordinator.consumers import ResultConsumer
from posefleet.coordinator.subscribers import Backlog
from posefleet.v1 import coordinator_pb2, pose_pb2


class Hub(ResultConsumer):
    """Every answered frame to each ``Subscribe`` call's backlog."""

    def __init__(self) -> None:
        self._subscribers: set[Backlog[pose_pb2.PoseResult]] = set()
        self.active_cameras: dict[str, float] = {}  # camera -> last result time (monotonic)

    def answered(self, result: pose_pb2.PoseResult) -> None:
        self.active_cameras[result.camera_id] = time.monotonic()
        for backlog in self._subscribers:  # a slow subscriber loses its oldest results, never blocks cameras
            backlog.put(result)

    def forget(self, camera: str) -> None:
        self.active_cameras.pop(camera, None)

    async def subscribe(
        self, request: coordinator_pb2.SubscribeRequest, backlog: Backlog[pose_pb2.PoseResult]
    ) -> AsyncIterator[coordinator_pb2.MultiViewResult]:
        """Multi-view results: results whose capture times fall in one window, one per camera.

        Each message counts the results this subscriber lost (read too slowly) since the previous one;
        ``backlog`` drops a subscriber that stays behind (``SubscriberTooSlow``).
        """
        window_ms = request.window_ms or 100
        wanted = set(request.camera_ids)
        self._subscribers.add(backlog)
        buckets: dict[int, dict[str, pose_pb2.PoseResult]] = {}
        opened: dict[int, float] = {}
        lost = 0
        try:
            while True:
                try:
                    result, just_lost = await asyncio.wait_for(backlog.get(), timeout=window_ms / 1e3)
                    lost += just_lost
                except TimeoutError:
                    result = None
                if result is not None and (not wanted or result.camera_id in wanted):
                    key = int(stamp_ms(result.capture_time)) // window_ms
                    buckets.setdefault(key, {})[result.camera_id] = result
                    opened.setdefault(key, time.monotonic())
                expected = wanted or {c for c, t in self.active_cameras.items() if time.monotonic() - t < 5.0}
                now = time.monotonic()
                for key in sorted(buckets):
                    views = buckets[key]
                    complete = expected <= set(views)
                    if complete or now - opened[key] > 2 * window_ms / 1e3:
                        start = Timestamp()
                        start.FromMilliseconds(key * window_ms)
                        yield coordinator_pb2.MultiViewResult(
                            window_start=start, views=[views[c] for c in sorted(views)], lost=lost
                        )
                        lost = 0
                        del buckets[key], opened[key]
                    else:
                        break  # windows leave in time order
        finally:
            self._subscribers.discard(backlog)
