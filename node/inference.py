"""The engine's OpenVINO async infer queue behind an asyncio API, with admission control."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from posefleet.node.engine import PoseEngine
from posefleet.node.models.types import PoseResult, Timings
from posefleet.node.models.wrappers import FrameMeta, U8Image
from posefleet.node.ov_compat import AsyncInferQueue, InferRequest, Tensor


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


@dataclass
class _Job:
    """One frame between its worker thread and OpenVINO's completion callback."""

    future: asyncio.Future[PoseResult]
    meta: FrameMeta
    timings: Timings
    pixels: U8Image  # input memory the infer request reads (a Tensor does not keep it alive)
    started: float = 0.0


class AsyncEngine(Admission):
    """``submit(load)`` -> future of poses, on an ``AsyncInferQueue``, with one hop off the event loop per frame.

    At most ``max_inflight`` frames are admitted; beyond that ``admit`` fails at once instead of
    queueing without bound. An admitted frame goes to a worker thread, which decodes its image
    (``load``), pre-processes it, waits for a free infer request (``queue_ms``) and starts inference;
    OpenVINO's completion callback decodes the poses (the compiled PoseNet decoder releases the GIL)
    and hands the result back to the event loop. The event loop itself only receives and replies.
    """

    def __init__(self, engine: PoseEngine, max_inflight: int, requests: int, executor: ThreadPoolExecutor) -> None:
        """``requests`` infer requests (the node's default is chosen in ``NodeServer``)."""
        self.engine = engine
        self.max_inflight = max_inflight
        self.inflight = 0
        self._executor = executor
        self._loop = asyncio.get_running_loop()
        self.requests = requests
        self._queue = AsyncInferQueue(engine.compiled, self.requests)
        self._queue.set_callback(self._done)
        self._outputs = [(o.get_any_name(), o) for o in engine.compiled.outputs]
        self._free = threading.Semaphore(self.requests)  # requests not running; waited on for queue_ms
        self._starting = threading.Lock()  # AsyncInferQueue.start_async is not safe from two threads at once

    def submit(self, load: Callable[[], U8Image]) -> asyncio.Future[PoseResult]:
        """Start one admitted frame whose image ``load`` decodes (on a worker thread); the future has its poses."""
        future: asyncio.Future[PoseResult] = self._loop.create_future()
        self._executor.submit(self._start, load, future, time.perf_counter())
        return future

    def _start(self, load: Callable[[], U8Image], future: asyncio.Future[PoseResult], submitted: float) -> None:
        """Worker thread: decode and prepare the image, then start inference on a free request."""
        t0 = time.perf_counter()
        try:
            image = load()
            t1 = time.perf_counter()
            tensor, meta = self.engine.model.preprocess(image)
            t2 = time.perf_counter()
            timings = Timings(preprocess_ms=(t2 - t1) * 1e3, decode_image_ms=(t1 - t0) * 1e3)
            job = _Job(future, meta, timings, np.ascontiguousarray(tensor))
            self._free.acquire()
            job.started = time.perf_counter()
            timings.queue_ms = (t0 - submitted + job.started - t2) * 1e3
            try:
                with self._starting:  # no copy: the request reads the frame's own pixels
                    self._queue.start_async({0: Tensor(job.pixels, shared_memory=True)}, job)
            except BaseException:
                self._free.release()
                raise
        except BaseException as exc:  # handed to the caller, never lost in a worker thread
            self._post(future, exc)

    def _done(self, request: InferRequest, job: _Job) -> None:
        """OpenVINO's callback thread: decode the poses while the outputs are still in the request."""
        finished = time.perf_counter()
        try:
            outputs = {name: request.get_tensor(output).data for name, output in self._outputs}
            poses = self.engine.model.decode(outputs, job.meta)
            job.timings.inference_ms = (finished - job.started) * 1e3
            job.timings.decode_ms = (time.perf_counter() - finished) * 1e3
            payload: PoseResult | BaseException = PoseResult(poses, job.meta.source_size, job.timings)
        except Exception as exc:  # handed to the caller, never lost in OpenVINO's thread
            payload = exc
        finally:
            self._free.release()
        self._post(job.future, payload)

    def _post(self, future: asyncio.Future[PoseResult], payload: PoseResult | BaseException) -> None:
        """Any thread: settle a frame's future on the event loop (nobody waits once the loop is closed)."""
        with contextlib.suppress(RuntimeError):  # the loop closed while the node shut down
            self._loop.call_soon_threadsafe(_settle, future, payload)

    def close(self) -> None:
        self._queue.wait_all()


def _settle(future: asyncio.Future[PoseResult], payload: PoseResult | BaseException) -> None:
    """Event loop: complete a frame's future unless its caller has gone."""
    if future.cancelled():
        return
    if isinstance(payload, BaseException):
        future.set_exception(payload)
    else:
        future.set_result(payload)
