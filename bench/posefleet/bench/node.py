"""``posefleet bench --node``: node throughput over EstimateStream vs raw OpenVINO async throughput.

Same model and input size, same run, in alternating rounds (this machine's speed drifts by several
percent from minute to minute; alternating keeps both sides of each ratio in the same conditions).
Each round measures:

- raw async throughput: the compiled model (THROUGHPUT hint) fed one prepared tensor, no
  post-processing, with the device's optimal number of requests and with the node's number; the
  better of the two is the baseline, so the node is never compared with a weaker configuration
  than its own;
- the node's pipeline in this process, without gRPC: the same ``AsyncEngine`` (request threads that
  decode the JPEG, infer and decode the poses) fed the same JPEG with the node's credit window. It
  splits the node's cost in two: what the pipeline costs (mostly JPEG decoding) and what gRPC costs;
- a real node in a subprocess on 127.0.0.1, fed JPEG frames already at the model's input size over
  one EstimateStream with a credit window equal to its capacity. The load generator runs on the same
  cores: the compiled one (``posefleet.bench.loadgen``) when there is one, and the Python client too;
  the headline ratio uses the compiled one, and both node figures are reported.

The figures are medians over the rounds. Then the latency the node adds: sequential unary calls
against bare synchronous inference with decoding.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import grpc
import numpy as np
from posefleet.bench.loadgen import native_stream_throughput
from posefleet.bench.throughput import pipeline_fps, raw_async_fps
from posefleet.common.processes import PosefleetProcess, start_posefleet
from posefleet.node.engine.families.base import U8Image
from posefleet.node.engine.runtime import EngineOptions, PoseEngine
from posefleet.node.server.images import FrameImage
from posefleet.node.server.settings import NodeSettings
from posefleet.v1 import node_pb2, node_pb2_grpc, pose_pb2


@dataclass
class NodeBenchResult:
    model_id: str
    input_size: str
    raw_async_fps: float
    raw_requests: int
    node_stream_fps: float
    ratio: float
    node_requests: int
    node_capacity: int
    bare_latency_p50_ms: float
    bare_latency_p99_ms: float
    node_latency_p50_ms: float
    node_latency_p99_ms: float
    added_p50_ms: float
    added_p99_ms: float
    frames: int
    load_generator: str = "python"
    pipeline_fps: float = 0.0
    pipeline_ratio: float = 0.0
    node_stream_fps_python: float = 0.0
    rounds: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def start_node(model_dir: Path, size: tuple[int, int] | None, *extra: str) -> PosefleetProcess:
    """A node subprocess on 127.0.0.1 without zeroconf, serving (its ready line names its infer requests);
    --insecure, as the benchmark figures were measured."""
    args = ["node", "--model", str(model_dir), "--host", "127.0.0.1", "--port", "0", "--no-advertise", *extra]
    if size:
        args += ["--input-size", f"{size[0]}x{size[1]}"]
    return start_posefleet(args, tls=None, timeout=120)


async def _stream_throughput(address: str, payload: bytes, frames: int, seconds: float) -> tuple[float, int, int]:
    """(frames/s, capacity, frames answered OK) over one stream, at most ``capacity`` frames outstanding."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = node_pb2_grpc.PoseNodeStub(channel)
        capacity = (await stub.GetInfo(node_pb2.GetInfoRequest())).capacity
        credits = asyncio.Semaphore(capacity)
        image = pose_pb2.Image(encoding=pose_pb2.IMAGE_ENCODING_JPEG, data=payload)
        sent = 0
        deadline = time.perf_counter() + seconds

        async def requests() -> Any:
            nonlocal sent
            while sent < frames and time.perf_counter() < deadline:
                await credits.acquire()
                yield pose_pb2.Frame(camera_id="bench", sequence=sent, image=image)
                sent += 1

        ok = done = 0
        start = time.perf_counter()
        async for result in stub.EstimateStream(requests()):
            credits.release()
            done += 1
            ok += result.status == pose_pb2.RESULT_STATUS_OK
        elapsed = time.perf_counter() - start
        return done / elapsed, capacity, ok


async def _unary_latency(address: str, payload: bytes, count: int) -> list[float]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = node_pb2_grpc.PoseNodeStub(channel)
        image = pose_pb2.Image(encoding=pose_pb2.IMAGE_ENCODING_JPEG, data=payload)
        for _ in range(5):
            await stub.Estimate(pose_pb2.Frame(image=image))
        times = []
        for i in range(count):
            t0 = time.perf_counter()
            await stub.Estimate(pose_pb2.Frame(sequence=i, image=image))
            times.append((time.perf_counter() - t0) * 1e3)
        return times


def bench_node(
    model_dir: Path,
    image: U8Image,
    input_size: tuple[int, int] | None,
    *,
    frames: int = 100_000,
    seconds: float = 6.0,
    rounds: int = 3,
    loadgen: Path | None = None,
) -> NodeBenchResult:
    thr = PoseEngine(model_dir, EngineOptions(hint="THROUGHPUT", input_size=input_size))
    h, w = thr.input_size
    frame = cv2.resize(image, (w, h))
    _, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
    payload = buf.tobytes()
    tensor, _ = thr.model.preprocess(frame)
    limits = NodeSettings.model_fields  # the node's default image limits
    jpeg = pose_pb2.Image(encoding=pose_pb2.IMAGE_ENCODING_JPEG, data=payload)
    load = FrameImage(jpeg, limits["max_image_side"].default, limits["max_image_pixels"].default, thr.input_size)
    sync = PoseEngine(model_dir, EngineOptions(hint="LATENCY", input_size=input_size))
    bare = []
    for _ in range(min(frames, 200)):
        t0 = time.perf_counter()
        sync.infer(frame)
        bare.append((time.perf_counter() - t0) * 1e3)
    del sync
    node = start_node(model_dir, input_size)
    port, node_requests = node.port, int(node.fields["requests"])
    request_counts = sorted({thr.optimal_requests, node_requests})
    address = f"127.0.0.1:{port}"
    measured: list[dict[str, float]] = []
    answered_ok = capacity = 0
    try:
        asyncio.run(_stream_throughput(address, payload, frames, min(seconds, 1.0)))  # warm-up
        for _ in range(rounds):
            raw = {
                n: raw_async_fps(thr.compiled, tensor, frames=frames, seconds=seconds, requests=n)[0]
                for n in request_counts
            }
            best = max(raw, key=lambda n: raw[n])
            python_fps, capacity, ok = asyncio.run(_stream_throughput(address, payload, frames, seconds))
            in_process = asyncio.run(
                pipeline_fps(thr, load, requests=node_requests, capacity=capacity, frames=frames, seconds=seconds)
            )
            answered_ok += ok
            node_fps = python_fps
            if loadgen is not None:
                node_fps, capacity, ok = native_stream_throughput(loadgen, address, payload, frames, seconds)
                answered_ok += ok
            by_requests = {f"raw_fps_{n}_requests": fps for n, fps in raw.items()}
            measured.append(
                {
                    "raw_async_fps": raw[best],
                    "raw_requests": best,
                    "node_stream_fps": node_fps,
                    "ratio": node_fps / raw[best],
                    "node_stream_fps_python": python_fps,
                    "ratio_python": python_fps / raw[best],
                    "pipeline_fps": in_process,
                    "pipeline_ratio": in_process / raw[best],
                    **by_requests,
                }
            )
        node_lat = asyncio.run(_unary_latency(address, payload, min(frames, 200)))
    finally:
        node.stop()
    b50, b99 = np.percentile(bare, [50, 99])
    n50, n99 = np.percentile(node_lat, [50, 99])
    raw_requests = statistics.mode(int(m["raw_requests"]) for m in measured)
    return NodeBenchResult(
        model_id=thr.card.model_id,
        input_size=f"{h}x{w}",
        raw_async_fps=statistics.median(m["raw_async_fps"] for m in measured),
        raw_requests=raw_requests,
        node_stream_fps=statistics.median(m["node_stream_fps"] for m in measured),
        ratio=statistics.median(m["ratio"] for m in measured),
        node_requests=node_requests,
        node_capacity=capacity,
        bare_latency_p50_ms=float(b50),
        bare_latency_p99_ms=float(b99),
        node_latency_p50_ms=float(n50),
        node_latency_p99_ms=float(n99),
        added_p50_ms=float(n50 - b50),
        added_p99_ms=float(n99 - b99),
        frames=answered_ok,
        load_generator="native" if loadgen is not None else "python",
        node_stream_fps_python=statistics.median(m["node_stream_fps_python"] for m in measured),
        pipeline_fps=statistics.median(m["pipeline_fps"] for m in measured),
        pipeline_ratio=statistics.median(m["pipeline_ratio"] for m in measured),
        rounds=measured,
    )


def markdown_table(results: list[NodeBenchResult]) -> str:
    """The headline columns use the compiled load generator when there was one ("C++"), then the Python
    client's, then the node's pipeline alone (what is left once gRPC is taken away)."""
    head = (
        "| model | input | raw async FPS (requests) | node stream FPS (load generator) | node / raw (range) "
        "| with the Python client: node FPS, node / raw | node pipeline without gRPC: FPS, / raw "
        "| node requests / capacity | latency p50 / p99 ms: bare | via node | added |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = [
        f"| {r.model_id} | {r.input_size} | {r.raw_async_fps:.1f} ({r.raw_requests}) "
        f"| {r.node_stream_fps:.1f} ({'C++' if r.load_generator == 'native' else 'Python'}) "
        f"| {r.ratio:.0%} ({min(m['ratio'] for m in r.rounds):.0%}-{max(m['ratio'] for m in r.rounds):.0%}) "
        f"| {r.node_stream_fps_python:.1f}, {statistics.median(m['ratio_python'] for m in r.rounds):.0%} "
        f"| {r.pipeline_fps:.1f}, {r.pipeline_ratio:.0%} "
        f"| {r.node_requests} / {r.node_capacity} | {r.bare_latency_p50_ms:.1f} / {r.bare_latency_p99_ms:.1f} "
        f"| {r.node_latency_p50_ms:.1f} / {r.node_latency_p99_ms:.1f} | {r.added_p50_ms:.1f} / {r.added_p99_ms:.1f} |"
        for r in results
    ]
    return head + "\n".join(rows) + "\n"
