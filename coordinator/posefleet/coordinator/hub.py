"""``Subscribe``: fan-out of merged results to many subscribers, grouped across cameras by capture time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from google.protobuf.timestamp_pb2 import Timestamp
from posefleet.v1 import coordinator_pb2, pose_pb2


class Hub:
    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[pose_pb2.PoseResult]] = set()
        self.active_cameras: dict[str, float] = {}  # camera -> last result time (monotonic)

    def publish(self, result: pose_pb2.PoseResult) -> None:
        self.active_cameras[result.camera_id] = time.monotonic()
        for queue in self._subscribers:
            if queue.full():  # a slow subscriber loses its oldest results, never blocks cameras
                queue.get_nowait()
            queue.put_nowait(result)

    async def subscribe(
        self, request: coordinator_pb2.SubscribeRequest
    ) -> AsyncIterator[coordinator_pb2.MultiViewResult]:
        """Multi-view results: results whose capture times fall in one window, one per camera."""
        window_ms = request.window_ms or 100
        wanted = set(request.camera_ids)
        queue: asyncio.Queue[pose_pb2.PoseResult] = asyncio.Queue(maxsize=1000)
        self._subscribers.add(queue)
        buckets: dict[int, dict[str, pose_pb2.PoseResult]] = {}
        opened: dict[int, float] = {}
        try:
            while True:
                try:
                    result = await asyncio.wait_for(queue.get(), timeout=window_ms / 1e3)
                except TimeoutError:
                    result = None
                if result is not None and (not wanted or result.camera_id in wanted):
                    stamp = result.capture_time.seconds * 1000 + result.capture_time.nanos // 1_000_000
                    key = stamp // window_ms
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
                            window_start=start, views=[views[c] for c in sorted(views)]
                        )
                        del buckets[key], opened[key]
                    else:
                        break  # windows leave in time order
        finally:
            self._subscribers.discard(queue)
