"""The engine's infer requests behind an asyncio API, with admission control."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from posefleet.merge.appearance import MIN_POSE_SCORE, describe
from posefleet.node.engine.adapters import Request
from posefleet.node.engine.families import U8Image
from posefleet.node.engine.runtime import PoseEngine
from posefleet.node.engine.types import PoseResult


class AtCapacity(Exception):
    """All ``max_inflight`` slots are taken; the caller answers RESOURCE_EXHAUSTED."""


class Admission:
    """At most ``max_inflight`` frames admitted at once; ``admit`` fails at once beyond that."""

    max_inflight: int
    inflight: int

    def admit(self) -> None:
        """Take one in-flight slot or raise AtCapacity; pair with ``release``."""
        if self.inflight >= self.max_inflight:
            raise AtCapacity(f"node at capacity: {self.max_inflight} frames in flight")
        self.inflight += 1

    def release(self) -> None:
        self.inflight -= 1

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no frame is in flight (draining); False if the timeout passed first."""
        deadline = time.monotonic() + timeout
        while self.inflight > 0:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True


class AsyncEngine(Admission):
    """``submit(load)`` -> future of poses, on a pool of infer requests with one thread each.

    At most ``max_inflight`` frames are admitted; beyond that ``admit`` fails at once instead of
    queueing without bound. Admitted frames wait in a FIFO for the next free infer request. Each
    request has its own thread, which takes a frame, decodes its image (``load``), pre-processes it,
    runs inference and decodes the poses; OpenCV, OpenVINO and the compiled PoseNet decoder release
    the GIL meanwhile, so the requests overlap. The event loop only receives frames and replies:
    finished frames are handed back in batches, one loop wake-up for whatever finished meanwhile
    (against the earlier design: bench/design-choices.md).
    """

    def __init__(self, engine: PoseEngine, max_inflight: int, requests: int, *, describe: bool = False) -> None:
        """``requests`` infer requests and threads (the node's default is chosen in ``NodeServer``)."""
        self.engine = engine
        self.describe = describe  # each pose's appearance (``NodeSettings.describe_poses``)
        self.max_inflight = max_inflight
        self.inflight = 0
        self.requests = requests
        self._loop = asyncio.get_running_loop()
        self._frames: queue.SimpleQueue[_Frame | None] = queue.SimpleQueue()
        self._finished: collections.deque[tuple[asyncio.Future[PoseResult], PoseResult | BaseException]] = (
            collections.deque()
        )
        self._wake_pending = False
        self._wake_lock = threading.Lock()
        self._threads = [
            threading.Thread(
                target=self._serve,
                args=(engine.new_request(),),
                name=f"posefleet-infer-{i}",
                daemon=True,
            )
            for i in range(requests)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, load: Callable[[], U8Image], stream: str | None = None) -> asyncio.Future[PoseResult]:
        """Queue one admitted frame whose image ``load`` decodes (on a request's thread)."""
        future: asyncio.Future[PoseResult] = self._loop.create_future()
        self._frames.put(_Frame(load, future, time.perf_counter(), stream))
        return future

    def _serve(self, request: Request) -> None:
        """One infer request's thread: frames in FIFO order until ``close``."""
        while (frame := self._frames.get()) is not None:
            try:
                payload: PoseResult | BaseException = self._run(request, frame)
            except BaseException as exc:  # handed to the caller, never lost in a worker thread
                payload = exc
            self._post(frame.future, payload)

    def _run(self, request: Request, frame: _Frame) -> PoseResult:
        t0 = time.perf_counter()
        image = frame.load()
        t1 = time.perf_counter()
        result = self.engine.run(request, image, frame.stream)
        if self.describe:
            result.looks = [  # the pixels are here; a decoder's weak stray candidates are not people: not described
                describe(image, pose.keypoints) if pose.score >= MIN_POSE_SCORE else None for pose in result.poses
            ]
        result.timings.queue_ms = (t0 - frame.submitted) * 1e3
        result.timings.decode_image_ms = (t1 - t0) * 1e3
        return result

    def _post(self, future: asyncio.Future[PoseResult], payload: PoseResult | BaseException) -> None:
        """Any thread: hand a finished frame to the event loop, waking it only if no wake-up is pending."""
        self._finished.append((future, payload))
        with self._wake_lock:
            if self._wake_pending:
                return
            self._wake_pending = True
        with contextlib.suppress(RuntimeError):  # the loop closed while the node shut down
            self._loop.call_soon_threadsafe(self._settle_finished)

    def _settle_finished(self) -> None:
        """Event loop: complete every finished frame's future (frames finishing meanwhile wake it again)."""
        with self._wake_lock:
            self._wake_pending = False
        while self._finished:
            future, payload = self._finished.popleft()
            if future.cancelled():
                continue
            if isinstance(payload, BaseException):
                future.set_exception(payload)
            else:
                future.set_result(payload)

    def close(self, timeout: float = 1.0) -> None:
        """Stop the request threads once the queued frames are done (called after draining; threads are
        daemons, so a frame still stuck after ``timeout`` does not hold up the exit)."""
        for _ in self._threads:
            self._frames.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def pipeline_size(engine: PoseEngine, requests: int | None = None, max_inflight: int | None = None) -> tuple[int, int]:
    """(infer requests, frames admitted) of a node's pipeline; None or 0 takes the default: twice the device's optimal
    number of requests (one pre- or post-processing while the other infers), and twice that admitted."""
    requests = requests or 2 * engine.optimal_requests
    return requests, max_inflight or 2 * requests


@dataclass
class _Frame:
    """One admitted frame waiting for an infer request."""

    load: Callable[[], U8Image]
    future: asyncio.Future[PoseResult]
    submitted: float
    stream: str | None = None
