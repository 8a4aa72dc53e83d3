"""End to end: real nodes and a real coordinator on loopback, zeroconf on 127.0.0.1, the sample video."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nodes import NodeProcess, jpeg, run_cli
from posefleet.clients.camera import CameraClient, CameraOptions
from posefleet.clients.sdk import PosefleetClient, encode_frame
from posefleet.common.processes import PosefleetProcess, start_posefleet
from posefleet.coordinator.server import CoordinatorServer
from posefleet.coordinator.settings import CoordinatorSettings
from posefleet.node.tools.media import frames, read_image
from posefleet.v1 import coordinator_pb2, pose_pb2

OK, DROPPED, FAILED = pose_pb2.RESULT_STATUS_OK, pose_pb2.RESULT_STATUS_DROPPED, pose_pb2.RESULT_STATUS_FAILED


@pytest.fixture(scope="module")
def video_jpegs(assets: Path) -> list[bytes]:
    return [jpeg(f) for f in frames(assets / "video" / "pose_1.mp4")]


@pytest.fixture(scope="module")
def small_jpegs(assets: Path) -> list[bytes]:
    """The clip resized to the nodes' 257x257 input, as ``posefleet camera --resize-to-model`` sends it."""
    import cv2

    return [
        jpeg(cv2.resize(f, (257, 257), interpolation=cv2.INTER_AREA)) for f in frames(assets / "video" / "pose_1.mp4")
    ]


def node(models: dict[str, Path], name: str, *extra: str, model: str = "posenet075") -> NodeProcess:
    size = ["--input-size", "257x257"] if model.startswith("posenet") else []
    return NodeProcess(models[model], *size, *extra, name=name)


async def coordinator(**kw: object) -> CoordinatorServer:
    base: dict[str, object] = dict(host="127.0.0.1", port=0, zeroconf_interfaces=["127.0.0.1"], insecure=True)
    base.update(kw)
    server = CoordinatorServer(CoordinatorSettings(**base))  # type: ignore[arg-type]
    await server.start()
    return server


async def camera_stream(
    client: PosefleetClient, camera: str, payloads: list[bytes], fps: float, results: list[pose_pb2.PoseResult]
) -> None:
    async def requests() -> AsyncIterator[pose_pb2.Frame]:
        start = time.perf_counter()
        for i, data in enumerate(payloads):
            await asyncio.sleep(max(0.0, start + i / fps - time.perf_counter()))
            yield encode_frame(data, camera_id=camera, sequence=i)

    async for result in client.stream_camera(requests()):
        results.append(result)


def assert_accounted(results: list[pose_pb2.PoseResult], count: int) -> None:
    """Exactly one result per frame, in sequence order."""
    assert [r.sequence for r in results] == list(range(count))
    assert all(r.status in (OK, DROPPED, FAILED) for r in results)
    assert all(r.error for r in results if r.status != OK)


async def test_three_cameras_two_nodes_node_killed_and_joined(
    models: dict[str, Path], video_jpegs: list[bytes]
) -> None:
    n1, n2 = node(models, "e2e-a"), node(models, "e2e-b")
    n3: NodeProcess | None = None
    # A node starting up takes the CPU for ~2 s on this 2-core machine, and in CI it once stalled the surviving
    # node for 3.2 s (marked down: no answer to a frame), when a 2 s queue replaced 26 frames of a camera's 160:
    # cameras get 4 s of queue (80 frames at 20 FPS).
    server = await coordinator(camera_queue=80)
    try:
        async with PosefleetClient(f"127.0.0.1:{server.port}", tls=None) as client:
            await client.wait_for_nodes(2, timeout=20)
            results: dict[str, list[pose_pb2.PoseResult]] = {f"cam{i}": [] for i in range(3)}
            # 160 frames, 8 s at 20 FPS per camera: a third of what the two nodes can do on this 2-core machine,
            # so that drops come from the node loss and the start-up of the new node, not from a busy machine.
            payloads = (video_jpegs * 2)[:160]
            streams = [
                asyncio.create_task(camera_stream(client, cam, payloads, 20, out)) for cam, out in results.items()
            ]

            await asyncio.sleep(2.5)
            n1.proc.send_signal(signal.SIGKILL)  # mid-stream, no goodbye
            killed_at = time.monotonic()
            await asyncio.sleep(2.0)
            dead = next(n for n in await client.list_nodes() if n.info.node_id == "e2e-a")
            done_after_2s = dead.frames_done
            assert not dead.healthy, "the killed node must be out within 2 s"

            n3 = node(models, "e2e-c")
            announced = time.monotonic()
            while True:
                joined = [n for n in await client.list_nodes() if n.info.node_id == "e2e-c" and n.frames_done > 0]
                if joined or time.monotonic() - announced > 3.0:
                    break
                await asyncio.sleep(0.05)
            assert joined, "a new node must get frames within 3 s of its announcement"

            await asyncio.gather(*streams)
            final = {n.info.node_id: n for n in await client.list_nodes()}
            stats = {c.camera_id: c for c in (await client.stats()).cameras}
        assert final["e2e-a"].frames_done == done_after_2s, "no frames went to the dead node"
        assert time.monotonic() - killed_at > 2
        for cam, out in results.items():
            assert_accounted(out, len(payloads))
            ok = sum(r.status == OK for r in out)
            reasons = sorted({r.error for r in out if r.status != OK})
            assert ok >= 0.85 * len(payloads), (cam, ok, reasons)
            assert all(r.poses for r in out if r.status == OK)
            assert {r.node_id for r in out if r.status == OK} >= {"e2e-b", "e2e-c"}
            assert stats[cam].frames_in == len(payloads) and stats[cam].frames_ok == ok
            assert stats[cam].latency_p50_ms > 0
        failed = [r for out in results.values() for r in out if r.status == FAILED]
        assert all("retried once" in r.error or "no available node" in r.error for r in failed), failed[:3]
    finally:
        await server.stop()
        for n in (n1, n2, n3):
            if n is not None:
                n.stop()


async def test_overload_drops_oldest_and_stays_bounded(models: dict[str, Path], video_jpegs: list[bytes]) -> None:
    slow = node(models, "slow", "--max-inflight", "2", model="hpe")
    server = await coordinator(camera_queue=3)
    try:
        async with PosefleetClient(f"127.0.0.1:{server.port}", tls=None) as client:
            await client.wait_for_nodes(1, timeout=20)
            out: list[pose_pb2.PoseResult] = []
            await camera_stream(client, "fast", video_jpegs, 200, out)  # far faster than ~25 FPS
            stats = (await client.stats()).cameras[0]
        assert_accounted(out, len(video_jpegs))
        dropped = [r for r in out if r.status == DROPPED]
        ok = [r for r in out if r.status == OK]
        assert len(dropped) > len(video_jpegs) / 3 and "replaced by a newer frame" in dropped[0].error
        assert len(ok) >= 10 and stats.frames_dropped == len(dropped)
        # Latency stays bounded by queue + in-flight, not by the backlog: ~ (3 + 2) x 40 ms.
        assert max(r.timings.route_ms for r in ok) < 2000
        link = next(iter(server.registry.links.values()))
        assert link.credits.in_flight <= link.credits.capacity
    finally:
        await server.stop()
        slow.stop()


async def test_block_policy_and_unary_estimate(models: dict[str, Path], video_jpegs: list[bytes], assets: Path) -> None:
    n = node(models, "blocker", "--max-inflight", "2")
    try:
        server = await coordinator(drop_policy="block", camera_queue=2, discover=False, nodes=[n.address])
        async with PosefleetClient(f"127.0.0.1:{server.port}", tls=None) as client:
            await client.wait_for_nodes(1, timeout=20)
            out: list[pose_pb2.PoseResult] = []
            await camera_stream(client, "blocked", video_jpegs[:60], 500, out)
            single = await client.estimate(read_image(assets / "video" / "pose.jpg"))
            with pytest.raises(Exception, match="no available node serves openpose"):
                await client.estimate(read_image(assets / "video" / "pose.jpg"), family="openpose", timeout=15)
            nodes = await client.list_nodes()
        assert_accounted(out, 60)
        assert all(r.status == OK for r in out), "block policy never drops"
        assert single.status == OK and single.poses and single.node_id == "blocker"
        assert any(x.source == "static" and x.healthy for x in nodes)
        await server.stop()
    finally:
        n.stop()


async def test_subscribe_merges_cameras_by_capture_time(models: dict[str, Path], video_jpegs: list[bytes]) -> None:
    n = node(models, "sub-node")
    server = await coordinator()
    try:
        async with PosefleetClient(f"127.0.0.1:{server.port}", tls=None) as client:
            await client.wait_for_nodes(1, timeout=20)
            merged: list[coordinator_pb2.MultiViewResult] = []
            second: list[coordinator_pb2.MultiViewResult] = []

            async def subscribe(into: list[coordinator_pb2.MultiViewResult], cams: list[str]) -> None:
                async for m in client.subscribe(cams, window_ms=200):
                    into.append(m)

            subs = [
                asyncio.create_task(subscribe(merged, ["left", "right"])),
                asyncio.create_task(subscribe(second, ["left"])),
            ]
            await asyncio.sleep(0.3)

            async def synced(camera: str) -> AsyncIterator[pose_pb2.Frame]:
                base = int(time.time() * 1000) // 1000 * 1000 + 1000
                for i, data in enumerate(video_jpegs[:20]):
                    f = encode_frame(data, camera_id=camera, sequence=i)
                    f.capture_time.FromMilliseconds(base + i * 400)  # one frame per 200 ms window, 2 windows apart
                    await asyncio.sleep(0.02)
                    yield f

            async def run(camera: str) -> list[pose_pb2.PoseResult]:
                return [r async for r in client.stream_camera(synced(camera))]

            left, right = await asyncio.gather(run("left"), run("right"))
            await asyncio.sleep(1.0)
            for s in subs:
                s.cancel()
        assert len(left) == len(right) == 20
        both = [m for m in merged if {v.camera_id for v in m.views} == {"left", "right"}]
        assert len(both) >= 15, [len(m.views) for m in merged]
        for m in both:
            stamps = {v.capture_time.ToMilliseconds() for v in m.views}
            assert (
                len(stamps) == 1
                and m.window_start.ToMilliseconds() <= min(stamps) < m.window_start.ToMilliseconds() + 200
            )
        assert len(second) >= 15 and all({v.camera_id for v in m.views} == {"left"} for m in second)
    finally:
        await server.stop()
        n.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_coordinator(port: int) -> PosefleetProcess:
    return start_posefleet(
        ["coordinator", "--host", "127.0.0.1", "--port", str(port), "--zeroconf-interface", "127.0.0.1"],
        tls=None,
        timeout=60,
    )


def door_camera(port: int, assets: Path, **extra: Any) -> CameraOptions:
    """Camera "door" streaming the sample clip at 20 FPS to an --insecure coordinator on 127.0.0.1:``port``."""
    clip = str(assets / "video" / "pose_1.mp4")
    return CameraOptions(f"127.0.0.1:{port}", clip, "door", tls=None, fps=20, stats_every_s=100, **extra)


async def test_camera_client_reconnects_after_coordinator_restart(
    models: dict[str, Path], assets: Path, tmp_path: Path
) -> None:
    n = node(models, "steady")
    port = _free_port()
    first = _start_coordinator(port)
    second: PosefleetProcess | None = None
    try:
        options = door_camera(
            port, assets, resize_to_model=True, jsonl=tmp_path / "door.jsonl", render=tmp_path / "door.mp4"
        )
        camera = asyncio.create_task(CameraClient(options).run())
        await asyncio.sleep(2.5)
        await asyncio.get_running_loop().run_in_executor(None, first.stop)
        await asyncio.sleep(0.5)
        second = _start_coordinator(port)
        report = await asyncio.wait_for(camera, timeout=60)
        lines = (tmp_path / "door.jsonl").read_text().splitlines()
        assert report.reconnects >= 1
        assert report.sent == report.answered == len(lines) == 120
        assert report.ok >= 80
        import json

        first_ok = next(json.loads(x) for x in lines if '"ok"' in x)
        nose = first_ok["poses"][0]["keypoints"][0]
        assert 200 < nose["x"] < 400 and 100 < nose["y"] < 300, "keypoints are back in source (576x576) pixels"
        assert (tmp_path / "door.mp4").stat().st_size > 10_000
    finally:
        for p in (first, second):
            if p is not None:
                p.stop()
        n.stop()


async def test_simulated_accelerator_backend(models: dict[str, Path], assets: Path, tmp_path: Path) -> None:
    """The benchmark-only backend, an inference adapter like the others: fixed latency per frame, the node's
    own pipeline (pre-processing, the real decoder) on a recorded output: the poses the real model gives."""
    import cv2
    from posefleet.node.engine.runtime import EngineOptions, PoseEngine, record_outputs

    image = cv2.resize(read_image(assets / "video" / "pose.jpg"), (257, 257))
    record_outputs(models["posenet075"], image, tmp_path / "rec.npz", (257, 257))
    sim = NodeProcess(
        models["posenet075"],
        "--backend",
        "simulated-accelerator",
        "--sim-record",
        str(tmp_path / "rec.npz"),
        "--sim-latency-ms",
        "50",
        "--no-advertise",
        name="sim",
    )
    try:
        import grpc
        from posefleet.v1 import node_pb2, node_pb2_grpc

        async with grpc.aio.insecure_channel(sim.address) as channel:
            stub = node_pb2_grpc.PoseNodeStub(channel)
            info = await stub.GetInfo(node_pb2.GetInfoRequest())
            t0 = time.perf_counter()
            results = await asyncio.gather(*(stub.Estimate(encode_frame(jpeg(image), sequence=i)) for i in range(2)))
            elapsed = time.perf_counter() - t0
        assert info.precision.endswith("runs simulated") and info.capacity == 4  # 2 requests per device, 2 each
        assert all(r.status == OK and r.poses and r.timings.inference_ms >= 49 for r in results)
        assert elapsed >= 0.1, "one simulated device: two frames take two latencies"
        assert results[0].poses[0].keypoints[0].name == "nose"
        real = PoseEngine(models["posenet075"], EngineOptions(input_size=(257, 257))).infer(image).poses[0]
        got = results[0].poses[0]
        assert (
            max(abs(k.x - x) + abs(k.y - y) for k, (x, y, _) in zip(got.keypoints, real.keypoints, strict=True)) < 0.5
        )
    finally:
        sim.stop()


async def test_a_camera_is_back_within_a_second_of_its_coordinator_after_a_long_outage(
    models: dict[str, Path], assets: Path, tmp_path: Path
) -> None:
    """Hardening, second pass, item 5: after a 10 s coordinator outage the camera reconnected about 5 s after
    the coordinator was back (its backoff had reached 8 s). It keeps that budget, but probes the port every
    0.2 s while it waits: its stream is open at the coordinator within 1 s of the coordinator serving again
    (the first OK answer also waits for the new coordinator to find the node), and every frame sent is
    accounted for."""
    n = node(models, "steady")
    port = _free_port()
    first = _start_coordinator(port)
    second: PosefleetProcess | None = None
    try:
        options = door_camera(port, assets)
        client = CameraClient(options)
        camera = asyncio.create_task(client.run())
        await asyncio.sleep(2.0)
        await asyncio.get_running_loop().run_in_executor(None, first.stop)
        await asyncio.sleep(10.0)
        second = await asyncio.get_running_loop().run_in_executor(None, _start_coordinator, port)
        serving, before = time.monotonic(), client.report.ok
        back = first_ok = None
        async with PosefleetClient(f"127.0.0.1:{port}", tls=None) as admin:
            for _ in range(750):  # 15 s at most
                if back is None and any(c.camera_id == "door" for c in (await admin.stats()).cameras):
                    back = time.monotonic() - serving  # its stream is open at the new coordinator
                if first_ok is None and client.report.ok > before:
                    first_ok = time.monotonic() - serving  # includes finding the node again (zeroconf)
                if back is not None and first_ok is not None:
                    break
                await asyncio.sleep(0.02)
        report = await asyncio.wait_for(camera, timeout=60)
        print(f"stream back {back} s, first OK answer {first_ok} s after the coordinator served again")
        assert back is not None and back <= 1.0, back
        assert report.sent == report.answered == 120 and report.reconnects >= 1
    finally:
        for p in (first, second):
            if p is not None:
                p.stop()
        n.stop()


def _status(*args: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "posefleet.cli", "status", *args, "--insecure"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


async def test_status_waits_until_the_coordinator_routes_to_a_new_node(models: dict[str, Path]) -> None:
    """What the rolling upgrade waits on: a node that is started later, found by zeroconf on 127.0.0.1."""
    server = await coordinator()
    target = f"127.0.0.1:{server.port}"
    waiting = _status("--coordinator", target, "--wait-node", "late", "--timeout", "90")
    ghost = _status("--coordinator", target, "--wait-node", "ghost", "--timeout", "1")
    nobody = _status("--node", f"127.0.0.1:{_free_port()}", "--wait", "--timeout", "1")
    n, own = None, None
    try:
        ghost_out, ghost_err = await asyncio.to_thread(ghost.communicate, timeout=60)
        assert waiting.poll() is None, "it must wait while the node does not exist yet"
        n = await asyncio.to_thread(node, models, "late")
        out, err = await asyncio.to_thread(waiting.communicate, timeout=120)
        assert waiting.returncode == 0, out + err
        assert re.search(r"node late 127\.0\.0\.1:\d+ \[zeroconf\] routed: posenet-mobilenet-v1-075", out), out
        # Not known to the coordinator: exit 1 after the timeout, saying which node is missing.
        assert ghost.returncode == 1 and "not routed to: ghost within 1 s" in ghost_err, ghost_out + ghost_err
        # The node's own view: SERVING with its info; nobody listening: UNREACHABLE and exit 1.
        own = _status("--node", n.address, "--json")
        own_out, own_err = await asyncio.to_thread(own.communicate, timeout=60)
        report = json.loads(own_out)
        assert own.returncode == 0 and report["health"] == "SERVING", own_out + own_err
        assert report["info"]["nodeId"] == "late" and report["info"]["capacity"] > 0
        nobody_out, nobody_err = await asyncio.to_thread(nobody.communicate, timeout=60)
        assert nobody.returncode == 1 and "UNREACHABLE" in nobody_out, nobody_out + nobody_err
        assert "not SERVING within 1 s" in nobody_err
    finally:
        for proc in (waiting, ghost, nobody, own):
            if proc is not None and proc.poll() is None:
                proc.kill()
        if n is not None:
            n.stop()
        await server.stop()


def test_a_second_coordinator_on_an_occupied_port_refuses_to_start() -> None:
    first = start_posefleet(
        ["coordinator", "--host", "127.0.0.1", "--port", "0", "--no-discovery"], tls=None, timeout=60
    )
    try:
        args = ("--host", "127.0.0.1", "--port", str(first.port), "--no-discovery", "--insecure")
        proc = run_cli("coordinator", *args, timeout=60)
        assert proc.returncode == 2 and f"cannot listen on 127.0.0.1:{first.port}" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    finally:
        first.stop()
