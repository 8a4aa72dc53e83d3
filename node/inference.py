"""The engine's OpenVINO async infer queue behind an asyncio API, with admission control."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from posefleet.node.engine import PoseEngine
from posefleet.node.models.types import PoseResult, Timings
from posefleet.node.models.wrappers import U8Image
from posefleet.node.ov_compat import AsyncInferQueue, InferRequest

_Outputs = tuple[dict[str, Any], float]  # output arrays by name, and when inference finished


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
    """``await infer(image)`` on an ``AsyncInferQueue``.

    At most ``max_inflight`` frames are admitted (decoding, waiting and inferring); beyond that
    ``admit`` fails at once instead of queueing without bound. Of the admitted frames, as many as
    there are infer requests run at a time, the others wait (``queue_ms``). Pre-processing and pose
    decoding run on worker threads; OpenVINO's completion callback only copies the outputs, so an
    infer request is free for the next frame as soon as its inference ends.
    """

    def __init__(self, engine: PoseEngine, max_inflight: int, requests: int, executor: ThreadPoolExecutor) -> None:
        self.engine = engine
        self.max_inflight = max_inflight
        self.inflight = 0
        self._executor = executor
        self._loop = asyncio.get_running_loop()
        self.requests = requests or engine.optimal_requests
        self._queue = AsyncInferQueue(engine.compiled, self.requests)
        self._queue.set_callback(self._done)
        self._outputs = list(engine.compiled.outputs)
        self._slots = asyncio.Semaphore(self.requests)

    def _done(self, request: InferRequest, future: asyncio.Future[_Outputs]) -> None:
        """OpenVINO's callback thread: copy the outputs and hand them to the event loop."""
        try:
            payload: _Outputs | BaseException = (
                {o.get_any_name(): request.get_tensor(o).data.copy() for o in self._outputs},
                time.perf_counter(),
            )
        except Exception as exc:  # handed to the caller, never lost in OpenVINO's thread
            payload = exc
        self._loop.call_soon_threadsafe(self._settle, future, payload)

    def _settle(self, future: asyncio.Future[_Outputs], payload: _Outputs | BaseException) -> None:
        self._slots.release()
        if future.cancelled():
            return
        if isinstance(payload, BaseException):
            future.set_exception(payload)
        else:
            future.set_result(payload)

    async def infer(self, image: U8Image) -> tuple[PoseResult, float]:
        """Poses of one admitted frame and the time it waited for an infer request (ms)."""
        t0 = time.perf_counter()
        tensor, meta = await self._loop.run_in_executor(self._executor, self.engine.model.preprocess, image)
        pre_ms = (time.perf_counter() - t0) * 1e3
        t_wait = time.perf_counter()
        await self._slots.acquire()
        queue_ms = (time.perf_counter() - t_wait) * 1e3
        future: asyncio.Future[_Outputs] = self._loop.create_future()
        started = time.perf_counter()
        try:
            self._queue.start_async({0: tensor}, future)
        except BaseException:
            self._slots.release()
            raise
        outputs, finished = await future
        t1 = time.perf_counter()
        poses = await self._loop.run_in_executor(self._executor, self.engine.model.decode, outputs, meta)
        timings = Timings(pre_ms, (finished - started) * 1e3, (time.perf_counter() - t1) * 1e3)
        return PoseResult(poses, meta.source_size, timings), queue_ms

    def close(self) -> None:
        self._queue.wait_all()
