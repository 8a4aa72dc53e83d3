"""``posefleet bench``: the article's FPS table, measured with OpenVINO on this machine.

Per model and input size: raw inference FPS without post-processing (sync, LATENCY hint, like the
article), raw async throughput (THROUGHPUT hint, all optimal requests in flight), end-to-end FPS with
decoding (sync, and async through the node's own pipeline with a default node's infer requests and
admission: ``posefleet.bench.throughput``), and sync latency p50/p99. Loops are bounded by a frame count
and a time budget.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from posefleet.bench.throughput import pipeline_fps, raw_async_fps
from posefleet.node.devices import InferencePrecision
from posefleet.node.engine.families import U8Image
from posefleet.node.engine.runtime import EngineOptions, PoseEngine
from posefleet.node.engine.types import PoseResult
from posefleet.node.server.pipeline import pipeline_size


@dataclass
class BenchResult:
    model_id: str
    model_dir: str
    device: str
    input_size: str
    precision: str
    #: The convolution kernels' precisions the device ran (``f32``, ``bf16``, ``I8``...).
    kernels: str
    raw_sync_fps: float
    raw_latency_p50_ms: float
    raw_latency_p99_ms: float
    raw_async_fps: float
    async_requests: int
    decoded_sync_fps: float
    decoded_latency_p50_ms: float
    decoded_latency_p99_ms: float
    decoded_async_fps: float
    decode_p50_ms: float
    frames: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _timed_loop(step: Callable[[], None], frames: int, seconds: float, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        step()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < frames and time.perf_counter() < deadline:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def bench_model(
    model_dir: Path,
    image: U8Image,
    *,
    device: str = "CPU",
    input_size: tuple[int, int] | None = None,
    frames: int = 200,
    seconds: float = 8.0,
    inference_precision: InferencePrecision | None = None,
) -> BenchResult:
    """Measure one model at one input size; ``image`` is resized to the input size first.

    ``inference_precision``: as the node's (``None``: its default, accuracy first)."""
    options = EngineOptions(device=device, input_size=input_size, inference_precision=inference_precision)
    sync = PoseEngine(model_dir, replace(options, hint="LATENCY"))
    h, w = sync.input_size
    import cv2

    frame = cv2.resize(image, (w, h)) if image.shape[:2] != (h, w) else image
    tensor, _ = sync.model.preprocess(frame)

    def raw_step() -> None:
        sync.infer_raw(tensor, copy=False)

    raw = _timed_loop(raw_step, frames, seconds)
    decoded_results: list[PoseResult] = []
    decoded = _timed_loop(lambda: decoded_results.append(sync.infer(frame)), frames, seconds)
    decode_ms = [r.timings.decode_ms for r in decoded_results]
    thr = PoseEngine(model_dir, replace(options, hint="THROUGHPUT"))
    raw_async, jobs = raw_async_fps(thr.compiled, tensor, frames=frames * 2, seconds=seconds)
    requests, capacity = pipeline_size(thr)
    dec_async = asyncio.run(
        pipeline_fps(thr, lambda: frame, requests=requests, capacity=capacity, frames=2 * frames, seconds=seconds)
    )
    ms = 1e3
    return BenchResult(
        model_id=sync.card.model_id,
        model_dir=str(model_dir),
        device=device,
        input_size=f"{h}x{w}",
        precision=sync.card.precision,
        kernels=sync.kernels,
        raw_sync_fps=len(raw) / sum(raw),
        raw_latency_p50_ms=float(np.percentile(raw, 50) * ms),
        raw_latency_p99_ms=float(np.percentile(raw, 99) * ms),
        raw_async_fps=raw_async,
        async_requests=jobs,
        decoded_sync_fps=len(decoded) / sum(decoded),
        decoded_latency_p50_ms=float(np.percentile(decoded, 50) * ms),
        decoded_latency_p99_ms=float(np.percentile(decoded, 99) * ms),
        decoded_async_fps=dec_async,
        decode_p50_ms=float(np.percentile(decode_ms, 50)),
        frames=len(raw),
    )


def markdown_table(results: list[BenchResult]) -> str:
    head = (
        "| model | input | precision | runs | raw FPS (sync) | raw FPS (async, requests) | FPS with decoding (sync) "
        "| FPS with decoding (async) | latency p50 / p99 ms (sync, decoded) | decode p50 ms |\n"
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = [
        f"| {r.model_id} | {r.input_size} | {r.precision} | {r.kernels} | {r.raw_sync_fps:.1f} "
        f"| {r.raw_async_fps:.1f} ({r.async_requests}) "
        f"| {r.decoded_sync_fps:.1f} | {r.decoded_async_fps:.1f} | {r.decoded_latency_p50_ms:.1f} / "
        f"{r.decoded_latency_p99_ms:.1f} | {r.decode_p50_ms:.2f} |"
        for r in results
    ]
    return head + "\n".join(rows) + "\n"


def short_name(model_id: str) -> str:
    """``posenet-mobilenet-v1-075-s16`` -> ``PoseNet 075 s16`` (chart labels)."""
    name = model_id.replace("posenet-mobilenet-v1-", "PoseNet ").replace("-tflite-uint8", " TFLite")
    name = name.replace("movenet-singlepose-", "MoveNet ").replace("yolov8n-pose", "YOLOv8n-pose")
    return name.replace("human-pose-estimation-", "HPE ").replace("-", " ")


def chart(results: list[BenchResult], path: Path) -> None:
    """A grouped bar chart of the FPS columns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [
        f"{short_name(r.model_id)}{' INT8' if 'NNCF' in r.precision else ''}\n{r.input_size} {r.kernels}"
        for r in results
    ]
    series = {
        "raw sync": [r.raw_sync_fps for r in results],
        "raw async": [r.raw_async_fps for r in results],
        "decoded sync": [r.decoded_sync_fps for r in results],
        "decoded async": [r.decoded_async_fps for r in results],
    }
    x = np.arange(len(results))
    width = 0.2
    fig, ax = plt.subplots(figsize=(max(8, 1.8 * len(results)), 5))
    for i, (name, values) in enumerate(series.items()):
        ax.bar(x + (i - 1.5) * width, values, width, label=name)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("frames per second")
    device = results[0].device if results else ""
    ax.set_title(f"posefleet pose models on {device} (OpenVINO)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def legacy_hop(
    model_dir: Path,
    image: U8Image,
    legacy_python: str,
    *,
    device: str = "CPU",
    input_size: tuple[int, int] | None = None,
    frames: int = 300,
    seconds: float = 8.0,
    rounds: int = 3,
) -> dict[str, Any]:
    """What the legacy-OpenVINO worker's process hop costs per frame: sequential frames with decoding through
    this process's OpenVINO and through the worker (OpenVINO 2022.3 under ``legacy_python``), alternating in
    ``rounds``; medians of the per-round p50 latencies, and the difference."""
    import cv2

    options = EngineOptions(device=device, hint="LATENCY", input_size=input_size, inference_precision="f32")
    engines = {
        "in-process": PoseEngine(model_dir, options),
        "worker": PoseEngine(model_dir, replace(options, legacy_python=legacy_python, inference_precision=None)),
    }
    h, w = engines["in-process"].input_size
    frame = cv2.resize(image, (w, h)) if image.shape[:2] != (h, w) else image
    p50: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(rounds):
        for name, engine in engines.items():
            times = _timed_loop(lambda engine=engine: engine.infer(frame), frames, seconds / rounds)  # type: ignore[misc]
            p50[name].append(float(np.percentile(times, 50) * 1e3))
    for engine in engines.values():
        engine.close()
    median = {name: float(np.median(values)) for name, values in p50.items()}
    return {
        "model_id": engines["in-process"].card.model_id,
        "input_size": f"{h}x{w}",
        "worker": engines["worker"].kernels,
        "p50_ms": median,
        "rounds_p50_ms": p50,
        "hop_ms": median["worker"] - median["in-process"],
    }
