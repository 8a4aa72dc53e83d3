"""The two throughput loops every benchmark uses: raw OpenVINO inference, and the node's own pipeline.

- ``raw_async_fps``: the compiled model fed one prepared tensor on an ``AsyncInferQueue``, no pre- or
  post-processing: the device's ceiling, the baseline the node is compared with.
- ``pipeline_fps``: the node's ``AsyncEngine`` (its request threads: load the image, pre-process, infer,
  decode the poses), fed with a credit window; the one inference loop posefleet runs, so what a benchmark
  reports is what a node does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy.typing as npt
from posefleet.node.engine.families import U8Image
from posefleet.node.engine.ov_compat import AsyncInferQueue, CompiledModel
from posefleet.node.engine.runtime import PoseEngine
from posefleet.node.server.pipeline import AsyncEngine


def raw_async_fps(
    compiled: CompiledModel, tensor: npt.NDArray[Any], *, frames: int, seconds: float, requests: int = 0
) -> tuple[float, int]:
    """Inferences per second with ``requests`` (default: the device's optimal number) in flight, no decoding;
    returns (fps, requests)."""
    jobs = requests or int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    queue = AsyncInferQueue(compiled, jobs)
    for _ in range(jobs):  # warm-up
        queue.start_async({0: tensor}, share_inputs=True)
    queue.wait_all()
    sent = 0
    start = time.perf_counter()
    deadline = start + seconds
    while sent < frames and time.perf_counter() < deadline:
        queue.start_async({0: tensor}, share_inputs=True)
        sent += 1
    queue.wait_all()
    return sent / (time.perf_counter() - start), jobs


async def pipeline_fps(
    engine: PoseEngine,
    load: Callable[[], U8Image],
    *,
    requests: int,
    capacity: int,
    frames: int,
    seconds: float,
) -> float:
    """Frames/s of the node's pipeline in this process (no gRPC), at most ``capacity`` frames outstanding;
    ``load`` gives each frame's image (a JPEG decoding, or an image already decoded)."""
    pipeline = AsyncEngine(engine, capacity, requests)
    credits = asyncio.Semaphore(capacity)
    failures: list[BaseException] = []

    def finished(future: asyncio.Future[Any]) -> None:
        if (error := future.exception()) is not None:
            failures.append(error)
        credits.release()

    async def run(count: int, budget: float) -> tuple[int, float]:
        sent = 0
        start = time.perf_counter()
        deadline = start + budget
        while sent < count and time.perf_counter() < deadline:
            await credits.acquire()  # the credit window, not admission, bounds what is outstanding
            pipeline.submit(load).add_done_callback(finished)
            sent += 1
        for _ in range(capacity):
            await credits.acquire()
        for _ in range(capacity):
            credits.release()
        return sent, time.perf_counter() - start

    try:
        await run(capacity, seconds)  # warm-up: every request thread's first frame
        done, elapsed = await run(frames, seconds)
    finally:
        pipeline.close()
    if failures:
        raise failures[0]
    return done / elapsed
