"""A *simulated accelerator* node backend, for the cluster scale benchmark only (never a default).

It stands in for a stick like the NCS2 without needing one: each inference takes a fixed time
(``latency_ms``, e.g. 33 ms = 30 FPS) on one of ``parallel`` simulated devices, and its output is a
*recorded* real model output (``record_outputs``) that goes through the real PoseNet/OpenPose decoder.
With latency 0 and decoding off it answers at once, to measure the coordinator's routing capacity.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from posefleet.node.engine.card import ModelCard, load_card
from posefleet.node.engine.families import PoseModel, U8Image, create_model
from posefleet.node.engine.runtime import EngineOptions, PoseEngine
from posefleet.node.engine.types import PoseResult, Timings
from posefleet.node.server.pipeline import Admission


def record_outputs(model_dir: Path, image: U8Image, path: Path, input_size: tuple[int, int] | None = None) -> None:
    """Run the real model once on ``image`` and save its raw outputs for the simulated backend."""
    engine = PoseEngine(model_dir, EngineOptions(input_size=input_size))
    tensor, _ = engine.model.preprocess(image)
    outputs = engine.infer_raw(tensor)
    arrays: dict[str, Any] = {"__input_size__": np.array(engine.input_size), **outputs}
    np.savez(str(path), **arrays)


class SimulatedEngine(Admission):
    """Same interface as ``AsyncEngine``: admit/release, ``submit(load)``, wait_idle, close."""

    def __init__(
        self,
        model_dir: Path,
        record: Path,
        *,
        latency_ms: float,
        parallel: int,
        decode: bool,
        max_inflight: int,
        executor: ThreadPoolExecutor,
    ) -> None:
        self.card: ModelCard = load_card(model_dir)
        self.card.model_id = f"{self.card.model_id}+simulated"
        data = np.load(record)
        self.input_size: tuple[int, int] = tuple(int(v) for v in data["__input_size__"])  # type: ignore[assignment]
        self._outputs: dict[str, Any] = {k: data[k] for k in data.files if k != "__input_size__"}
        self.model: PoseModel = create_model(self.card, self.input_size)
        self.model.warm_up()
        self.latency_s = latency_ms / 1e3
        self.decode = decode
        self.requests = parallel
        self.max_inflight = max_inflight
        self.inflight = 0
        self._devices = asyncio.Semaphore(parallel)
        self._executor = executor
        self._loop = asyncio.get_running_loop()

    def submit(self, load: Callable[[], U8Image], stream: str | None = None) -> asyncio.Future[PoseResult]:
        return asyncio.ensure_future(self._infer(load))

    async def _infer(self, load: Callable[[], U8Image]) -> PoseResult:
        t0 = time.perf_counter()
        image = await self._loop.run_in_executor(self._executor, load)
        decode_image_ms = (time.perf_counter() - t0) * 1e3
        t_wait = time.perf_counter()
        async with self._devices:
            queue_ms = (time.perf_counter() - t_wait) * 1e3
            t0 = time.perf_counter()
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            inference_ms = (time.perf_counter() - t0) * 1e3
        _, meta = self.model.preprocess(image) if self.decode else (None, None)
        t1 = time.perf_counter()
        poses = []
        if self.decode and meta is not None:
            poses = await self._loop.run_in_executor(self._executor, self.model.decode, self._outputs, meta)
        timings = Timings(0.0, inference_ms, (time.perf_counter() - t1) * 1e3, queue_ms, decode_image_ms)
        return PoseResult(poses, (image.shape[0], image.shape[1]), timings)

    def close(self) -> None:
        return None
