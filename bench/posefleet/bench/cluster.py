"""``posefleet bench-cluster``: what the coordinator costs and how the cluster scales (all on 127.0.0.1).

- latency: sequential unary Estimate straight to a real node vs through the coordinator (interleaved).
- capacity: simulated nodes that answer at once; camera streams as fast as credits allow.
- scaling: k = 1, 2, 4, 8 simulated-accelerator nodes (33.3 ms per frame like an NCS at 30 FPS, one
  device each, real decoding of a recorded PoseNet output) against one such node called directly.
- soak (``--only soak``, not part of the default run): ``--soak-frames`` (default 1,000,000) through the
  coordinator to instant simulated nodes, cameras reconnecting every ``--soak-stream-frames``; the
  coordinator's RSS over the run (growth from the first to the last 10% of frames) and every frame's one
  result accounted for.
The simulated backend exists for this benchmark only (see posefleet.node.engine.simulated).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cv2
import grpc
import numpy as np
from posefleet.clients.local_fleet import start_coordinator, start_node
from posefleet.clients.sdk import PosefleetClient, encode_frame
from posefleet.common.cli import positive_int, report
from posefleet.common.memory import rss_bytes
from posefleet.common.processes import PosefleetProcess, run_posefleet, stop_all
from posefleet.common.tls import TlsFiles, aio_channel, role_name
from posefleet.v1 import node_pb2, node_pb2_grpc, pose_pb2


async def _until_nodes(address: str, count: int, tls: TlsFiles | None = None) -> None:
    async with PosefleetClient(address, tls=tls) as client:
        await client.wait_for_nodes(count, timeout=60)


async def latency(
    node_address: str, coordinator_address: str, payload: bytes, count: int, tls: TlsFiles | None = None
) -> dict[str, float]:
    frame = encode_frame(payload)
    direct: list[float] = []
    routed: list[float] = []
    async with (
        aio_channel(node_address, tls, role_name("node")) as channel,
        PosefleetClient(coordinator_address, tls=tls) as client,
    ):
        node = node_pb2_grpc.PoseNodeStub(channel)
        for _ in range(20):
            await node.Estimate(frame)
            await client.estimate(frame)
        for _ in range(count):
            t0 = time.perf_counter()
            await node.Estimate(frame)
            t1 = time.perf_counter()
            await client.estimate(frame)
            t2 = time.perf_counter()
            direct.append((t1 - t0) * 1e3)
            routed.append((t2 - t1) * 1e3)
    d50, d99 = np.percentile(direct, [50, 99])
    r50, r99 = np.percentile(routed, [50, 99])
    return {
        "direct_p50_ms": d50,
        "direct_p99_ms": d99,
        "coordinator_p50_ms": r50,
        "coordinator_p99_ms": r99,
        "added_p50_ms": r50 - d50,
        "added_p99_ms": r99 - d99,
        "calls": count,
    }


async def _camera(
    client: PosefleetClient, name: str, payload: bytes, *, window: int, until: float, counts: list[int]
) -> None:
    credits = asyncio.Semaphore(window)

    async def frames() -> AsyncIterator[pose_pb2.Frame]:
        seq = 0
        while time.perf_counter() < until:
            await credits.acquire()
            yield encode_frame(payload, camera_id=name, sequence=seq)
            seq += 1

    async for result in client.stream_camera(frames()):
        credits.release()
        if result.status == pose_pb2.RESULT_STATUS_OK:
            counts[0] += 1


async def throughput(
    address: str, payload: bytes, cameras: int, window: int, seconds: float, *, tls: TlsFiles | None = None
) -> float:
    """OK results per second through the coordinator, ``cameras`` streams with ``window`` frames each in flight."""
    async with PosefleetClient(address, tls=tls) as client:
        warm = [0]
        warm_until = time.perf_counter() + 1.0
        await asyncio.gather(
            *(
                _camera(client, f"warm{i}", payload, window=window, until=warm_until, counts=warm)
                for i in range(cameras)
            )
        )
        counts = [0]
        start = time.perf_counter()
        until = start + seconds
        await asyncio.gather(
            *(_camera(client, f"cam{i}", payload, window=window, until=until, counts=counts) for i in range(cameras))
        )
        return counts[0] / (time.perf_counter() - start)


async def _viewer(url: str, stop: asyncio.Event) -> int:
    """What a dashboard browser does: read the event stream, fetch each camera's thumbnail when its shown frame
    changes. Returns the thumbnails fetched."""
    import json

    import aiohttp

    fetched, shown = 0, dict[str, int]()
    async with aiohttp.ClientSession() as session, session.get(url + "api/events") as events:
        while not stop.is_set():
            line = (await events.content.readline()).decode()
            if not line.startswith("data: "):
                continue
            state = json.loads(line[6:])
            for cam in state.get("cameras", []) if isinstance(state, dict) else []:  # not the skeleton event
                if cam["sequence"] is not None and shown.get(cam["id"]) != cam["sequence"]:
                    shown[cam["id"]] = cam["sequence"]
                    thumb = f"{url}api/cameras/{cam['id']}/thumbnail.jpg?seq={cam['sequence']}"
                    async with session.get(thumb) as reply:
                        await reply.read()
                    fetched += 1
    return fetched


def _view_for(url: str, seconds: float, counts: Any) -> None:
    async def run() -> int:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        return await _viewer(url, stop)

    counts.put(asyncio.run(run()))


async def dashboard_cost(
    address: str, url: str, payload: bytes, *, cameras: int, seconds: float, rounds: int
) -> dict[str, Any]:
    """Routing capacity without and with one dashboard viewer, in alternating rounds."""
    import multiprocessing

    without, with_viewer, thumbs = [], [], 0
    spawn = multiprocessing.get_context("spawn")
    for _ in range(rounds):
        without.append(await throughput(address, payload, cameras=cameras, window=32, seconds=seconds))
        # The viewer is a process of its own, as a browser would be: its JSON parsing is not the load
        # generator's; it shares the machine's two cores with everything else all the same.
        counts = spawn.Queue()
        viewer = spawn.Process(target=_view_for, args=(url, seconds + 1.5, counts))
        viewer.start()
        await asyncio.sleep(1.0)
        with_viewer.append(await throughput(address, payload, cameras=cameras, window=32, seconds=seconds))
        thumbs += int(counts.get(timeout=30))
        viewer.join(10)
    a, b = statistics.median(without), statistics.median(with_viewer)
    return {
        "without_viewer_fps": a,
        "with_viewer_fps": b,
        "cost": 1 - b / a,
        "rounds_without": without,
        "rounds_with": with_viewer,
        "thumbnails_fetched": thumbs,
        "cameras": cameras,
    }


async def direct_throughput(node_address: str, payload: bytes, window: int, seconds: float) -> float:
    async with grpc.aio.insecure_channel(node_address) as channel:
        stub = node_pb2_grpc.PoseNodeStub(channel)
        await stub.GetInfo(node_pb2.GetInfoRequest())
        credits = asyncio.Semaphore(window)
        until = time.perf_counter() + seconds
        done = 0

        async def frames() -> AsyncIterator[pose_pb2.Frame]:
            seq = 0
            while time.perf_counter() < until:
                await credits.acquire()
                yield encode_frame(payload, sequence=seq)
                seq += 1

        start = time.perf_counter()
        async for result in stub.EstimateStream(frames()):
            credits.release()
            done += result.status == pose_pb2.RESULT_STATUS_OK
        return done / (time.perf_counter() - start)


async def soak(
    address: str, pid: int, payload: bytes, *, frames: int, cameras: int, window: int, stream_frames: int
) -> dict[str, Any]:
    """``frames`` frames from ``cameras`` cameras (each stream reopened every ``stream_frames`` frames), the
    coordinator's RSS sampled by frames done; growth compares the mean RSS of the first and last 10%."""
    statuses: collections.Counter[str] = collections.Counter()
    sent = [0]
    samples: list[tuple[int, int]] = []  # (results so far, coordinator RSS)
    per_camera = frames // cameras
    start = time.perf_counter()

    async def camera(client: PosefleetClient, name: str) -> None:
        seq = 0
        while seq < per_camera:
            credits = asyncio.Semaphore(window)
            end = min(per_camera, seq + stream_frames)

            async def gen(first: int, last: int, credits: asyncio.Semaphore) -> AsyncIterator[pose_pb2.Frame]:
                for s in range(first, last):
                    await credits.acquire()
                    sent[0] += 1
                    yield encode_frame(payload, camera_id=name, sequence=s)

            async for result in client.stream_camera(gen(seq, end, credits)):
                credits.release()
                statuses[pose_pb2.ResultStatus.Name(result.status)] += 1
            seq = end

    async def sampler() -> None:
        while True:
            samples.append((sum(statuses.values()), rss_bytes(pid)))
            await asyncio.sleep(0.5)

    async with PosefleetClient(address, tls=None) as client:
        watch = asyncio.create_task(sampler())
        try:
            await asyncio.gather(*(camera(client, f"soak{i}") for i in range(cameras)))
        finally:
            watch.cancel()
        elapsed = time.perf_counter() - start
        stats = await client.stats()
    done = sum(statuses.values())
    samples.append((done, rss_bytes(pid)))
    first = [r for n, r in samples if n <= 0.1 * done]
    last = [r for n, r in samples if n >= 0.9 * done]
    first_mb, last_mb = statistics.mean(first) / 2**20, statistics.mean(last) / 2**20
    counted = {s.camera_id: s for s in stats.cameras}
    coordinator_in = sum(s.frames_in for s in counted.values())
    coordinator_out = sum(s.frames_ok + s.frames_dropped + s.frames_failed for s in counted.values())
    return {
        "frames_sent": sent[0],
        "results": done,
        "unaccounted": sent[0] - done,
        "statuses": dict(statuses),
        "coordinator_frames_in": coordinator_in,
        "coordinator_frames_out": coordinator_out,
        "seconds": elapsed,
        "frames_per_second": done / elapsed,
        "rss_first_10pct_mb": first_mb,
        "rss_last_10pct_mb": last_mb,
        "rss_peak_mb": max(r for _, r in samples) / 2**20,
        "rss_growth": last_mb / first_mb - 1,
        "cameras": cameras,
        "stream_frames": stream_frames,
    }


def _instant_cluster(
    model_dir: Path,
    work: Path,
    name: str,
    instant: tuple[str, ...],
    *extra: str,
    fleet: dict[str, TlsFiles] | None = None,
) -> tuple[list[PosefleetProcess], PosefleetProcess]:
    """Two instant simulated nodes and a coordinator that blocks cameras rather than drop; with ``fleet`` over
    mutual TLS, else --insecure (as the benchmark's figures were measured)."""

    def tls(holder: str) -> TlsFiles | None:
        return fleet[holder] if fleet is not None else None

    nodes = [
        start_node(model_dir, f"{name}-{i}", work / f"{name}-{i}.log", *instant, tls=tls(f"{name}-{i}"))
        for i in range(2)
    ]
    static = [a for n in nodes for a in ("--node", f"127.0.0.1:{n.port}")]
    queue = ("--camera-queue", "64", "--drop-policy", "block")
    coord = start_coordinator(
        work / f"{name}-coord.log", "--no-discovery", *queue, *static, *extra, tls=tls("coordinator")
    )
    return nodes, coord


def run(
    model_dir: Path,
    image: Any,
    work: Path,
    seconds: float,
    parts: set[str],
    *,
    soak_args: dict[str, int] | None = None,
    tls: bool = False,
) -> dict[str, Any]:
    """The chosen parts; ``tls``: latency and capacity over mutual TLS with a throwaway fleet CA."""
    fleet: dict[str, TlsFiles] | None = None
    if tls:
        from posefleet.common.certs import throwaway_fleet

        holders: list[tuple[str, str, list[str]]] = [("coordinator", "coordinator", []), ("admin", "bench-admin", [])]
        holders += [("node", name, []) for name in ("lat-node", "cap-0", "cap-1")]
        fleet = throwaway_fleet(work / "pki", holders)
    admin = fleet["bench-admin"] if fleet is not None else None
    size = (257, 257)
    frame = cv2.resize(image, (size[1], size[0]))
    payload = bytes(cv2.imencode(".jpg", frame)[1].tobytes())
    tiny = bytes(cv2.imencode(".jpg", cv2.resize(image, (32, 32)))[1].tobytes())
    record = work / "recorded.npz"
    cv2.imwrite(str(work / "frame.png"), frame)
    run_posefleet(
        [
            "record-outputs",
            "--model",
            str(model_dir),
            "--image",
            str(work / "frame.png"),
            "--input-size",
            f"{size[0]}x{size[1]}",
            "-o",
            str(record),
        ]
    )
    report: dict[str, Any] = {}
    procs: list[PosefleetProcess] = []
    try:
        if "latency" in parts:
            node_tls = fleet["lat-node"] if fleet is not None else None
            node = start_node(
                model_dir, "lat-node", work / "lat-node.log", "--input-size", "257x257", "--no-advertise", tls=node_tls
            )
            node_port = node.port
            coord = start_coordinator(
                work / "lat-coord.log",
                "--no-discovery",
                "--node",
                f"127.0.0.1:{node_port}",
                tls=fleet["coordinator"] if fleet is not None else None,
            )
            port = coord.port
            procs += [node, coord]
            asyncio.run(_until_nodes(f"127.0.0.1:{port}", 1, admin))
            measured = latency(f"127.0.0.1:{node_port}", f"127.0.0.1:{port}", payload, 500, admin)
            report["latency"] = {**asyncio.run(measured), "tls": tls}
            stop_all(procs)
            procs.clear()
        instant = (
            "--backend",
            "simulated-accelerator",
            "--sim-record",
            str(record),
            "--sim-latency-ms",
            "0",
            "--sim-parallel",
            "64",
            "--infer-requests",
            "8",
            "--max-inflight",
            "64",
            "--no-advertise",
        )
        if "capacity" in parts:
            nodes, coord = _instant_cluster(model_dir, work, "cap", instant, fleet=fleet)
            port = coord.port
            procs += [*nodes, coord]
            asyncio.run(_until_nodes(f"127.0.0.1:{port}", 2, admin))
            fps = asyncio.run(throughput(f"127.0.0.1:{port}", tiny, cameras=4, window=32, seconds=seconds, tls=admin))
            report["capacity"] = {"frames_per_second": fps, "nodes": 2, "cameras": 4, "tls": tls}
            stop_all(procs)
            procs.clear()
        if "dashboard" in parts:
            nodes, coord = _instant_cluster(model_dir, work, "dash", instant, "--http-port", "0")
            procs += [*nodes, coord]
            address = f"127.0.0.1:{coord.port}"
            asyncio.run(_until_nodes(address, 2))
            url = f"http://127.0.0.1:{coord.fields['http_port']}/"
            cost = dashboard_cost(address, url, payload, cameras=4, seconds=seconds, rounds=5)
            report["dashboard"] = asyncio.run(cost)
            stop_all(procs)
            procs.clear()
        if "soak" in parts:
            assert soak_args is not None
            nodes, coord = _instant_cluster(model_dir, work, "soak", instant)
            procs += [*nodes, coord]
            asyncio.run(_until_nodes(f"127.0.0.1:{coord.port}", 2))
            report["soak"] = asyncio.run(soak(f"127.0.0.1:{coord.port}", coord.proc.pid, tiny, **soak_args))
            stop_all(procs)
            procs.clear()
        if "scaling" in parts:
            sim = (
                "--backend",
                "simulated-accelerator",
                "--sim-record",
                str(record),
                "--sim-latency-ms",
                "33.3",
                "--sim-parallel",
                "1",
                "--max-inflight",
                "2",
            )
            single = start_node(model_dir, "sim-solo", work / "sim-solo.log", *sim, "--no-advertise", tls=None)
            one = asyncio.run(direct_throughput(f"127.0.0.1:{single.port}", payload, 2, seconds))
            stop_all([single])
            rows = []
            for k in (1, 2, 4, 8):
                coord = start_coordinator(
                    work / f"scale-coord-{k}.log", "--camera-queue", "16", "--drop-policy", "block", tls=None
                )
                port = coord.port
                procs.append(coord)
                procs += [
                    start_node(model_dir, f"sim-{k}-{i}", work / f"sim-{k}-{i}.log", *sim, tls=None) for i in range(k)
                ]
                asyncio.run(_until_nodes(f"127.0.0.1:{port}", k))
                fps = asyncio.run(
                    throughput(f"127.0.0.1:{port}", payload, cameras=max(2, k), window=4, seconds=seconds)
                )
                rows.append({"nodes": k, "frames_per_second": fps, "ideal": k * one, "efficiency": fps / (k * one)})
                stop_all(procs)
                procs.clear()
            report["scaling"] = {"one_node_direct_fps": one, "rows": rows}
    finally:
        stop_all(procs)
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = []
    if "latency" in report:
        r = report["latency"]
        lines += [
            *(["Over mutual TLS (client -> coordinator -> node):", ""] if r.get("tls") else []),
            "| path | p50 ms | p99 ms |",
            "|---|---:|---:|",
            f"| node directly | {r['direct_p50_ms']:.2f} | {r['direct_p99_ms']:.2f} |",
            f"| through the coordinator | {r['coordinator_p50_ms']:.2f} | {r['coordinator_p99_ms']:.2f} |",
            f"| **added by the coordinator** | **{r['added_p50_ms']:.2f}** | **{r['added_p99_ms']:.2f}** |",
            "",
        ]
    if "capacity" in report:
        c = report["capacity"]
        lines += [
            f"Routing capacity (instant nodes, {c['nodes']} nodes, {c['cameras']} camera streams"
            f"{', mutual TLS' if c.get('tls') else ''}): "
            f"**{c['frames_per_second']:.0f} frames/s**",
            "",
        ]
    if "scaling" in report:
        s = report["scaling"]
        lines += [
            f"One simulated 30-FPS accelerator node called directly: {s['one_node_direct_fps']:.1f} FPS",
            "",
            "| nodes | frames/s through the coordinator | k x one node | efficiency |",
            "|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['nodes']} | {r['frames_per_second']:.1f} | {r['ideal']:.1f} | {r['efficiency']:.0%} |"
            for r in s["rows"]
        ]
    if "dashboard" in report:
        d = report["dashboard"]
        lines += [
            *([""] if lines else []),
            f"Dashboard cost: routing capacity with {d['cameras']} cameras of 257x257 JPEGs "
            f"{d['without_viewer_fps']:.0f} frames/s without a viewer, {d['with_viewer_fps']:.0f} with one "
            f"(event stream + {d['thumbnails_fetched']} thumbnails): **{d['cost']:+.1%}** "
            f"(medians of {len(d['rounds_with'])} alternating rounds)",
        ]
    if "soak" in report:
        k = report["soak"]
        lines += [
            *([""] if lines else []),
            f"Soak: {k['results']:,} frames from {k['cameras']} cameras (streams reopened every "
            f"{k['stream_frames']:,} frames) in {k['seconds']:.0f} s ({k['frames_per_second']:.0f} frames/s); "
            f"unaccounted {k['unaccounted']}; statuses {k['statuses']}; coordinator RSS "
            f"{k['rss_first_10pct_mb']:.1f} MB (first 10%) -> {k['rss_last_10pct_mb']:.1f} MB (last 10%), "
            f"growth **{k['rss_growth']:+.1%}**, peak {k['rss_peak_mb']:.1f} MB",
        ]
    return "\n".join(lines) + "\n"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench-cluster", help="coordinator latency, routing capacity and scaling on loopback")
    p.add_argument("--model", type=Path, help="converted PoseNet model (default: fetch posenet-mobilenet-v1-075)")
    p.add_argument(
        "--only",
        action="append",
        choices=("latency", "capacity", "scaling", "dashboard", "soak"),
        help="default: all but dashboard and soak",
    )
    p.add_argument(
        "--tls",
        action="store_true",
        help="latency and capacity over mutual TLS (a throwaway fleet CA; default --insecure)",
    )
    p.add_argument("--soak-frames", type=positive_int, default=1_000_000)
    p.add_argument("--soak-cameras", type=positive_int, default=4)
    p.add_argument("--soak-stream-frames", type=positive_int, default=50_000, help="frames per camera stream")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    p.set_defaults(func=cmd_bench_cluster)


def cmd_bench_cluster(args: argparse.Namespace) -> int:
    from posefleet.clients.demo_fleet import demo_model
    from posefleet.common.paths import assets_dir

    model_dir = args.model or demo_model()
    assets = assets_dir(required=False)
    image = cv2.imread(str(assets / "video/pose.jpg")) if assets else None
    if image is None:
        image = np.full((480, 640, 3), 127, np.uint8)
    with tempfile.TemporaryDirectory(prefix="posefleet-cluster-bench-") as tmp:
        soak_args = {
            "frames": args.soak_frames,
            "cameras": args.soak_cameras,
            "window": 32,
            "stream_frames": args.soak_stream_frames,
        }
        parts = set(args.only or ("latency", "capacity", "scaling"))
        result = run(model_dir, image, Path(tmp), args.seconds, parts, soak_args=soak_args, tls=args.tls)
    report(args, markdown(result), result)
    return 0
