"""The engine's OpenVINO async infer queue behind an asyncio API, with admission control."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from posefleet.node.engine import AsyncPipeline, PoseEngine
from posefleet.node.models.types import PoseResult
from posefleet.node.models.wrappers import U8Image


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
    there are infer requests run at a time, the others wait (``queue_ms``). Pre-processing runs on a
    worker thread; pose decoding runs in OpenVINO's completion callback, off the event loop.
    """

    def __init__(self, engine: PoseEngine, max_inflight: int, requests: int, executor: ThreadPoolExecutor) -> None:
        self.engine = engine
        self.max_inflight = max_inflight
        self.inflight = 0
        self._executor = executor
        self._loop = asyncio.get_running_loop()
        self._pipeline = AsyncPipeline(engine, self._on_result, jobs=requests)
        self.requests = self._pipeline.jobs
        self._slots = asyncio.Semaphore(self.requests)

    def _on_result(self, result: PoseResult | BaseException, future: asyncio.Future[PoseResult]) -> None:
        # OpenVINO's callback thread: hand over to the loop, and free the request slot there.
        self._loop.call_soon_threadsafe(self._settle, future, result)

    def _settle(self, future: asyncio.Future[PoseResult], result: PoseResult | BaseException) -> None:
        self._slots.release()
        if future.cancelled():
            return
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)

    async def infer(self, image: U8Image) -> tuple[PoseResult, float]:
        """Poses of one admitted frame and the time it waited for an infer request (ms)."""
        t0 = time.perf_counter()
        tensor, meta = await self._loop.run_in_executor(self._executor, self.engine.model.preprocess, image)
        pre_ms = (time.perf_counter() - t0) * 1e3
        t_wait = time.perf_counter()
        await self._slots.acquire()
        queue_ms = (time.perf_counter() - t_wait) * 1e3
        future: asyncio.Future[PoseResult] = self._loop.create_future()
        try:
            self._pipeline.submit_tensor(tensor, meta, future, preprocess_ms=pre_ms)
        except BaseException:
            self._slots.release()
            raise
        return await future, queue_ms

    def close(self) -> None:
        self._pipeline.wait_all()
