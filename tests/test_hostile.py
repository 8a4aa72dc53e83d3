"""Hostile and careless clients against real processes on loopback: cameras that never read, thousands of
camera ids that come and go, decompression-bomb JPEGs; the coordinator's and nodes' memory measured from
/proc, the other cameras' results counted."""

from __future__ import annotations

import asyncio
import os
import struct
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from nodes import NodeProcess, jpeg, write_report
from posefleet.clients.local_fleet import start_coordinator
from posefleet.clients.sdk import PosefleetClient, encode_frame
from posefleet.common.memory import rss_bytes
from posefleet.common.processes import PosefleetProcess
from posefleet.coordinator.credits import SLOW_START_CREDITS
from posefleet.node.engine.runtime import record_outputs
from posefleet.node.tools.media import frames, read_image
from posefleet.v1 import coordinator_pb2_grpc, node_pb2, node_pb2_grpc, pose_pb2

MB = 2**20


@pytest.fixture(scope="module")
def instant_nodes(
    models: dict[str, Path], assets: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[str]]:
    """Two simulated nodes that answer at once (a recorded output, decoded): the coordinator does most work."""
    work = tmp_path_factory.mktemp("instant")
    image = cv2.resize(read_image(assets / "video" / "pose.jpg"), (257, 257))
    record_outputs(models["posenet075"], image, work / "rec.npz", (257, 257))
    sim = ["--backend", "simulated-accelerator", "--sim-record", str(work / "rec.npz"), "--sim-latency-ms", "0"]
    sim += ["--sim-parallel", "32", "--infer-requests", "8", "--max-inflight", "32", "--no-advertise"]
    nodes = [NodeProcess(models["posenet075"], *sim, name=f"instant-{i}") for i in range(2)]
    try:
        yield [n.address for n in nodes]
    finally:
        for n in nodes:
            n.stop()


def coordinator_of(nodes: list[str], *extra: str) -> PosefleetProcess:
    static = [a for address in nodes for a in ("--node", address)]
    return start_coordinator(None, "--no-discovery", *static, *extra, tls=None)


def scrape(coord: PosefleetProcess) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{coord.fields['metrics_port']}/metrics", timeout=10) as reply:
        return bytes(reply.read())


async def _ready(address: str, nodes: int) -> None:
    async with PosefleetClient(address, tls=None) as client:
        await client.wait_for_nodes(nodes, timeout=30)


async def test_a_camera_that_never_reads_its_results_holds_coordinator_memory_flat(
    instant_nodes: list[str], assets: Path
) -> None:
    """It sends 640x480 JPEGs as fast as gRPC lets it and never reads a result. The coordinator keeps at most
    256 of its frames unanswered (then stops reading them: flow control holds the camera back), and results
    go to the camera's gRPC receive window, which is bounded: the coordinator's memory stays flat while
    hundreds of MB of frames pass."""
    payload = jpeg(read_image(assets / "video" / "pose.jpg"))
    coord = coordinator_of(instant_nodes)
    try:
        address = f"127.0.0.1:{coord.port}"
        await _ready(address, 2)
        sent = [0]

        async def flood() -> AsyncIterator[pose_pb2.Frame]:
            for i in range(1_000_000):  # bounded; flow control stops it far earlier
                sent[0] += 1
                yield encode_frame(payload, camera_id="deaf", sequence=i)

        async with grpc.aio.insecure_channel(address) as channel:
            call = coordinator_pb2_grpc.CoordinatorStub(channel).StreamCamera(flood())
            await call.wait_for_connection()
            samples = []
            for _ in range(12):
                await asyncio.sleep(1.0)
                samples.append((sent[0], rss_bytes(coord.proc.pid)))
            call.cancel()
        print(
            "never-reading camera: (frames sent, coordinator RSS MB) per second:",
            [(n, round(r / MB, 1)) for n, r in samples],
        )
        sent_3, sent_12 = samples[2][0], samples[-1][0]
        early = sum(r for _, r in samples[2:5]) / 3  # 3-5 s, frames and windows in flight make +-6 MB of noise
        late = sum(r for _, r in samples[-3:]) / 3  # 10-12 s
        assert (sent_12 - sent_3) * len(payload) > 100 * MB, "the load went on"
        # Frames kept would add the 100+ MB sent in between; the allocator's arenas grow in steps once (a CI
        # run: flat at 213-216 MB, then 221-230 MB from 7 s on), so a quarter of that is the bound.
        assert late - early < 25 * MB, f"memory flat: {early / MB:.1f} MB at 3-5 s, {late / MB:.1f} MB at 10-12 s"
    finally:
        coord.stop()


async def test_three_thousand_camera_ids_come_and_go_and_memory_returns(
    instant_nodes: list[str], assets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waves of 3000 cameras each stream a few frames and leave; after the idle time their state (stats,
    tracks, Prometheus series) is gone and the coordinator's memory is back within 10% of its baseline, the
    coordinator after the first such wave (the first wave also grows allocator pools and caches once: its
    figure is printed beside)."""
    monkeypatch.setenv("POSEFLEET_COORDINATOR_CAMERA_IDLE_S", "2")
    monkeypatch.setenv("POSEFLEET_COORDINATOR_MAX_CAMERAS", "5000")
    payload = jpeg(cv2.resize(read_image(assets / "video" / "pose.jpg"), (64, 48)))
    coord = coordinator_of(instant_nodes, "--metrics-port", "0")
    try:
        address = f"127.0.0.1:{coord.port}"
        await _ready(address, 2)
        async with PosefleetClient(address, tls=None) as client:

            async def camera(name: str, count: int) -> list[pose_pb2.PoseResult]:
                async def gen() -> AsyncIterator[pose_pb2.Frame]:
                    for i in range(count):
                        yield encode_frame(payload, camera_id=name, sequence=i)

                return [r async for r in client.stream_camera(gen())]

            async def cameras(names: list[str], count: int, parallel: int) -> int:
                ok = 0
                for start in range(0, len(names), parallel):
                    batch = await asyncio.gather(*(camera(n, count) for n in names[start : start + parallel]))
                    ok += sum(r.status == pose_pb2.RESULT_STATUS_OK for results in batch for r in results)
                return ok

            cold = rss_bytes(coord.proc.pid)
            assert await cameras([f"first-{i:04d}-{'x' * 100}" for i in range(3000)], 3, 30) == 9000
            await asyncio.sleep(4.5)
            assert not (await client.stats()).cameras
            baseline, baseline_metrics = rss_bytes(coord.proc.pid), len(scrape(coord))
            t0 = time.monotonic()
            assert await cameras([f"cam-{i:04d}-{'x' * 100}" for i in range(3000)], 3, 30) == 9000
            busy, busy_metrics = rss_bytes(coord.proc.pid), len(scrape(coord))
            during = len((await client.stats()).cameras)
            came_and_went_s = time.monotonic() - t0
            await asyncio.sleep(4.5)  # idle time 2 s, swept every second
            after, after_metrics = rss_bytes(coord.proc.pid), len(scrape(coord))
            left = len((await client.stats()).cameras)
        print(
            f"3000 camera ids in {came_and_went_s:.1f} s: coordinator RSS {cold / MB:.1f} MB cold, "
            f"{baseline / MB:.1f} MB after a first wave (baseline), "
            f"{busy / MB:.1f} MB with {during} cameras known, {after / MB:.1f} MB after the idle time; "
            f"/metrics {baseline_metrics} -> {busy_metrics} -> {after_metrics} bytes"
        )
        assert during > 0 and left == 0
        assert busy_metrics > 10 * baseline_metrics and after_metrics < 1.1 * baseline_metrics, "series removed"
        assert after < 1.10 * baseline, f"{after / MB:.1f} MB against a baseline of {baseline / MB:.1f} MB"
    finally:
        coord.stop()


def bomb_jpeg(width: int, height: int) -> bytes:
    """A valid JPEG of 8x8 grey pixels (about 630 bytes) whose header claims ``width`` x ``height``: a decoder
    allocates and fills the claimed size."""
    data = bytearray(jpeg(np.full((8, 8, 3), 128, np.uint8)))
    i = 2
    while True:
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker == 0xC0:
            data[i + 5 : i + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        i += 2 + length


def png_labelled_jpeg(side: int) -> bytes:
    """A grey ``side`` x ``side`` PNG (tens of KB of compressed zeros) with a fake small JPEG SOF in a text chunk
    and a JPEG end marker after its end: sent as a JPEG, it passes a JPEG header check that trusts the label,
    and OpenCV, which decodes whatever the bytes are, fills ``side`` x ``side`` x 3 bytes."""
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = zlib.compressobj(9)
    raw = b"".join(rows.compress(b"\0" * (side + 1)) for _ in range(side)) + rows.flush()
    fake_sof = b"\xff\xc0\x00\x11\x08\x00\x10\x00\x10\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
        + chunk(b"tEXt", b"Comment\0" + fake_sof)
        + chunk(b"IDAT", raw)
        + chunk(b"IEND", b"")
        + b"\xff\xd9"
    )


def test_a_png_labelled_jpeg_and_oversized_images_are_refused_before_decoding() -> None:
    """The mislabelled PNG (8192 x 8192: 201 MB once decoded) is refused by its signature, on the node and for
    the dashboard's thumbnails alike; and the decoders' own cap refuses what a header understates."""
    import subprocess
    import sys

    from posefleet.common.images import EncodedImageError, decode_encoded
    from posefleet.coordinator.dashboard import _thumbnail
    from posefleet.node.server.images import ImageError, decode_image

    bomb = png_labelled_jpeg(8192)
    assert len(bomb) < 200_000
    t0 = time.perf_counter()
    with pytest.raises(ImageError, match="declared JPEG but the bytes are a PNG"):
        decode_image(pose_pb2.Image(encoding=pose_pb2.IMAGE_ENCODING_JPEG, data=bomb), 4096, 4096 * 4096)
    with pytest.raises(ImageError, match=r"image size 8192x8192 is beyond this node's limits"):
        decode_image(pose_pb2.Image(encoding=pose_pb2.IMAGE_ENCODING_PNG, data=bomb), 4096, 4096 * 4096)
    assert _thumbnail(("JPEG", bomb)) is None and _thumbnail(("PNG", bomb)) is None
    assert time.perf_counter() - t0 < 0.05, "refused from the first bytes"
    with pytest.raises(EncodedImageError, match="not a JPEG or PNG"):
        decode_encoded(b"GIF89a" + bytes(100), "JPEG", 4096, 4096 * 4096)
    # A header that understates the size (here: made to) still meets the decoder's own cap, in a fresh process
    # (OpenCV reads its cap once).
    script = (
        "import posefleet.common.images as im, struct, sys\n"
        "sys.path.insert(0, 'tests')\n"
        "from test_hostile import png_labelled_jpeg\n"
        "im.header_size = lambda data, kind: (16, 16)\n"
        "im.cap_decoder_pixels(4096 * 4096)\n"
        "try:\n"
        "    im.decode_encoded(png_labelled_jpeg(5000)[:-2], 'PNG', 4096, 4096 * 4096)\n"
        "except im.EncodedImageError as exc:\n"
        "    print('refused:', exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert "refused: PNG refused by the decoder's pixel cap" in done.stdout, done.stdout + done.stderr


async def paced(
    address: str, camera: str, payloads: list[bytes], fps: float, as_jpeg: bool = False
) -> list[pose_pb2.PoseResult]:
    """Stream ``payloads`` at ``fps`` as one camera (``as_jpeg``: declared JPEG whatever the bytes are)."""

    async def gen() -> AsyncIterator[pose_pb2.Frame]:
        start = time.perf_counter()
        for i, data in enumerate(payloads):
            await asyncio.sleep(max(0.0, start + i / fps - time.perf_counter()))
            frame = encode_frame(data, camera_id=camera, sequence=i)
            if as_jpeg:
                frame.image.encoding = pose_pb2.IMAGE_ENCODING_JPEG
            yield frame

    async with PosefleetClient(address, tls=None) as client:
        return [r async for r in client.stream_camera(gen())]


async def test_bomb_jpegs_from_one_camera_leave_another_camera_served(models: dict[str, Path], assets: Path) -> None:
    """One camera sends 15 bombs a second (629-byte JPEGs whose headers claim 8000x5000 or 4096x4096, which
    libjpeg would fill in 0.35 s / 0.14 s and 120 / 50 MB, and an 8192x8192 PNG labelled JPEG); another streams
    the sample clip at 15 FPS through the same two real PoseNet nodes. Every bomb is refused before decoding
    (node RSS stays within 50 MB); the clip camera keeps >= 99% OK."""
    small = [
        jpeg(cv2.resize(f, (257, 257), interpolation=cv2.INTER_AREA)) for f in frames(assets / "video" / "pose_1.mp4")
    ]
    clip = (small * 3)[:150]  # 10 s at 15 FPS
    bombs = [bomb_jpeg(8000, 5000), bomb_jpeg(4096, 4096), png_labelled_jpeg(8192)]
    nodes = [
        NodeProcess(models["posenet075"], "--input-size", "257x257", "--no-advertise", name=f"bomb-{i}")
        for i in range(2)
    ]
    coord = coordinator_of([n.address for n in nodes])
    try:
        address = f"127.0.0.1:{coord.port}"
        await _ready(address, 2)
        node_rss = [rss_bytes(n.proc.pid) for n in nodes]
        peaks = list(node_rss)

        async def watch() -> None:
            while True:
                for i, n in enumerate(nodes):
                    peaks[i] = max(peaks[i], rss_bytes(n.proc.pid))
                await asyncio.sleep(0.1)

        watcher = asyncio.create_task(watch())
        victim, attack = await asyncio.gather(
            paced(address, "clip", clip, 15.0), paced(address, "bombs", [bombs[i % 3] for i in range(150)], 15.0, True)
        )
        watcher.cancel()
        ok = [r for r in victim if r.status == pose_pb2.RESULT_STATUS_OK]
        latency = sorted(r.timings.route_ms for r in ok)
        print(
            f"bombs: clip camera {len(ok)}/{len(victim)} OK, p99 {latency[int(0.99 * len(latency))]:.0f} ms; "
            f"node RSS {[round(r / MB) for r in node_rss]} -> peak {[round(p / MB) for p in peaks]} MB"
        )
        assert len(victim) == 150 and len(ok) >= 0.99 * 150
        assert len(attack) == 150 and all(r.status == pose_pb2.RESULT_STATUS_FAILED for r in attack)
        assert all(r.error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0] for r in attack)
        assert any("image size 8000x5000 is beyond this node's limits" in r.error for r in attack)
        assert any("4096x4096 pixels in only 629 bytes" in r.error for r in attack)
        assert any("declared JPEG but the bytes are a PNG" in r.error for r in attack)
        assert max(p - r for p, r in zip(peaks, node_rss, strict=True)) < 50 * MB, "no bomb was decoded"
    finally:
        coord.stop()
        for n in nodes:
            n.stop()


def test_the_bomb_check_refuses_bombs_not_blank_frames() -> None:
    """Blank frames compress best of all real images (a progressive grey 4096x4096 blank: 66 KB); they pass,
    a 629-byte image claiming 4096x4096 does not, and the check reads only the header."""
    from posefleet.node.server.images import ImageError, decode_image

    def image(data: bytes) -> pose_pb2.Image:
        return pose_pb2.Image(encoding=pose_pb2.IMAGE_ENCODING_JPEG, data=data)

    progressive = [cv2.IMWRITE_JPEG_QUALITY, 5, cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
    for blank in (np.zeros((4096, 4096), np.uint8), np.zeros((480, 640, 3), np.uint8)):
        data = bytes(cv2.imencode(".jpg", blank, progressive)[1].tobytes())
        assert decode_image(image(data), 4096, 4096 * 4096).pixels.shape[:2] == blank.shape[:2]
    t0 = time.perf_counter()
    with pytest.raises(ImageError, match=r"JPEG claims 4096x4096 pixels in only 629 bytes .* 16384 bytes expected"):
        decode_image(image(bomb_jpeg(4096, 4096)), 4096, 4096 * 4096)
    assert time.perf_counter() - t0 < 0.01


class BlackHole(node_pb2_grpc.PoseNodeServicer):
    """A node that says SERVING, claims ``capacity``, takes frames and never answers one (a real gRPC server)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.received: list[float] = []

    async def GetInfo(self, request: node_pb2.GetInfoRequest, context: grpc.aio.ServicerContext) -> pose_pb2.NodeInfo:
        return pose_pb2.NodeInfo(node_id="hole", model_id="hole", model_family="posenet", capacity=self.capacity)

    async def Estimate(self, request: pose_pb2.Frame, context: grpc.aio.ServicerContext) -> pose_pb2.PoseResult:
        await asyncio.Event().wait()  # never
        raise AssertionError

    async def EstimateStream(
        self, request_iterator: AsyncIterator[pose_pb2.Frame], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pose_pb2.PoseResult]:
        async for _ in request_iterator:
            self.received.append(time.monotonic())
        if False:  # a generator that never yields
            yield pose_pb2.PoseResult()


@pytest.mark.parametrize("capacity", [8, 100_000])
async def test_a_black_hole_node_is_taken_out_and_the_cameras_stay_served(
    instant_nodes: list[str], assets: Path, capacity: int
) -> None:
    """Three cameras at 30 FPS for 10 s through a real coordinator, one real node and a black hole (SERVING,
    never answering, claiming ``capacity``): the hole gets at most the slow-start credits, the frames it holds
    go on to the good node as stragglers, it is out within 2 s of its first overdue frame, and the cameras
    keep >= 99% OK with p99 latency < 1 s."""
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from posefleet.v1.discovery import NODE_HEALTH_SERVICE

    hole = BlackHole(capacity)
    server = grpc.aio.server()
    node_pb2_grpc.add_PoseNodeServicer_to_server(hole, server)
    checker = health.aio.HealthServicer()
    await checker.set(NODE_HEALTH_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    hole_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    payload = jpeg(cv2.resize(read_image(assets / "video" / "pose.jpg"), (64, 48)))
    coord = coordinator_of([instant_nodes[0], f"127.0.0.1:{hole_port}"])
    try:
        address = f"127.0.0.1:{coord.port}"
        await _ready(address, 2)
        out_at: list[float] = []

        async def camera(name: str) -> list[float]:
            sent: dict[int, float] = {}
            latencies: list[float] = []

            async def gen() -> AsyncIterator[pose_pb2.Frame]:
                start = time.monotonic()
                for i in range(300):
                    await asyncio.sleep(max(0.0, start + i / 30 - time.monotonic()))
                    sent[i] = time.monotonic()
                    yield encode_frame(payload, camera_id=name, sequence=i)

            async with PosefleetClient(address, tls=None) as client:
                async for r in client.stream_camera(gen()):
                    if r.status == pose_pb2.RESULT_STATUS_OK:
                        latencies.append(time.monotonic() - sent[r.sequence])
            return latencies

        async def watch() -> None:
            async with PosefleetClient(address, tls=None) as client:
                while not out_at:
                    nodes = {n.info.node_id: n for n in await client.list_nodes()}
                    if "hole" in nodes and not nodes["hole"].healthy:
                        out_at.append(time.monotonic())
                    await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        served = await asyncio.gather(*(camera(f"cam{i}") for i in range(3)))
        await asyncio.wait_for(watcher, 5)
        latencies = sorted(s for cam in served for s in cam)
        p99 = latencies[int(0.99 * len(latencies))]
        out_after = out_at[0] - hole.received[0]
        joins = sum("node hole (" in line and "joined" in line for line in coord.output().splitlines())
        print(
            f"black hole (capacity {capacity}): held {len(hole.received)} frames in {joins} joins, "
            f"out {out_after:.2f} s after its first; cameras {len(latencies)}/900 OK, p99 {p99 * 1e3:.0f} ms"
        )
        assert 1 <= len(hole.received) <= SLOW_START_CREDITS * joins, "it never answers, so never earns credits"
        assert out_after < 2.0 + 2.0, "out within 2 s of its first overdue frame (overdue after 2 s)"
        assert len(latencies) >= 0.99 * 900 and p99 < 1.0
    finally:
        coord.stop()
        await server.stop(None)


async def test_a_camera_of_huge_frames_pays_for_them_itself(models: dict[str, Path], assets: Path) -> None:
    """Hardening, second pass, item 3: one camera sending real 4096x4096 JPEGs (the size limit) 15 times a
    second beside a camera streaming the sample clip at 15 FPS through two real PoseNet nodes. A node decodes
    such a JPEG at half scale (30 instead of 100 ms for a 257x257 model), and node work is shared by its cost
    (a frame takes credits by its pixels, ``jobs.frame_cost``; a camera's frame waits when it would take what
    the other cameras hold or last needed within a second), so the huge camera holds one node at a time. The
    clip camera keeps >= 99% OK and p99 < 100 ms (measured 28-72 ms; 152 ms before:
    ``make bench-fair-share`` writes bench/fair-share.md)."""
    small = [
        jpeg(cv2.resize(f, (257, 257), interpolation=cv2.INTER_AREA)) for f in frames(assets / "video" / "pose_1.mp4")
    ]
    clip = (small * 3)[:300]  # 20 s at 15 FPS
    yy, xx = np.mgrid[0:4096, 0:4096]
    huge = jpeg(np.dstack([(xx // 16) % 256, (yy // 16) % 256, ((xx + yy) // 32) % 256]).astype(np.uint8))
    nodes = [
        NodeProcess(models["posenet075"], "--input-size", "257x257", "--no-advertise", name=f"huge-{i}")
        for i in range(2)
    ]
    coord = coordinator_of([n.address for n in nodes])
    try:
        address = f"127.0.0.1:{coord.port}"
        await _ready(address, 2)

        victim, attack = await asyncio.gather(
            paced(address, "clip", clip, 15.0), paced(address, "huge", [huge] * 300, 15.0)
        )
        ok = [r for r in victim if r.status == pose_pb2.RESULT_STATUS_OK]
        latency = sorted(r.timings.route_ms for r in ok)
        p99 = latency[int(0.99 * len(latency))]
        served = sum(r.status == pose_pb2.RESULT_STATUS_OK for r in attack)
        print(
            f"huge frames ({len(huge) // 1024} KB): clip camera {len(ok)}/{len(victim)} OK, p99 {p99:.0f} ms; "
            f"the huge camera {served}/{len(attack)} OK"
        )
        assert len(victim) == 300 and len(ok) >= 0.99 * 300
        assert p99 < 100, p99
        assert len(attack) == 300 and served > 0  # it is served, at the pace the nodes allow
        if report := os.environ.get("POSEFLEET_FAIR_SHARE_REPORT"):
            figures = {
                "huge_jpeg_kb": len(huge) // 1024,
                "clip_ok": f"{len(ok)}/{len(victim)}",
                "clip_p50_ms": round(latency[len(latency) // 2], 1),
                "clip_p99_ms": round(p99, 1),
                "huge_ok": f"{served}/{len(attack)}",
            }
            about = [
                "`make bench-fair-share` (tests/test_hostile.py): two real PoseNet 0.75 nodes (257x257); a camera",
                "streams the sample clip at 15 FPS beside a camera sending 4096x4096 JPEGs (the size limit) at",
                "15 FPS. Latency is the coordinator's route time of the clip camera's frames.",
            ]
            title = "Sharing node work by cost: a camera at the size limit beside a normal one"
            write_report(report, title, about, figures)
    finally:
        coord.stop()
        for n in nodes:
            n.stop()


async def test_a_burst_of_large_frames_gives_its_memory_back(models: dict[str, Path]) -> None:
    """Hardening, second pass, item 4: 7 MB frames grew a node by 250 MB while they arrived, and freed memory
    stayed with the process for good (glibc keeps it in its arenas). Now buffers of 1 MiB and more are mapped
    and unmapped on their own (a fixed mmap threshold, bounded arenas) and the rest is trimmed every 10 s:
    measured here, 40 raw 1500x1600 frames (7 MB), 8 at a time, grow a node by about 95 MB at the peak
    (171 MB before) and leave it about 45 MB above where it started 12 s later, once: the next bursts reuse
    it (313 -> 409 -> 360, then 404 -> 366 and 411 -> 369 MB). The rest is the heap and three thread arenas
    of a few MB each that the frames' gRPC buffers and OpenCV's first large resize touched; neither a lower
    mmap threshold (128 KiB) nor one arena returned more."""
    node = NodeProcess(models["posenet075"], "--input-size", "257x257", "--no-advertise", name="memory")
    try:
        pixels = np.random.default_rng(0).integers(0, 255, (1600, 1500, 3), np.uint8)
        image = pose_pb2.Image(
            encoding=pose_pb2.IMAGE_ENCODING_RAW,
            data=pixels.tobytes(),
            width=1500,
            height=1600,
            pixel_format=pose_pb2.PIXEL_FORMAT_BGR8,
        )
        frame = pose_pb2.Frame(camera_id="big", image=image)
        base = peak = rss_bytes(node.proc.pid)
        settled: list[int] = []
        options = [("grpc.max_send_message_length", 64 * MB)]
        async with grpc.aio.insecure_channel(node.address, options=options) as channel:
            stub = node_pb2_grpc.PoseNodeStub(channel)
            for _ in range(2):
                for _ in range(5):
                    replies = await asyncio.gather(*(stub.Estimate(frame) for _ in range(8)))
                    assert all(r.status == pose_pb2.RESULT_STATUS_OK for r in replies)
                    peak = max(peak, rss_bytes(node.proc.pid))
                await asyncio.sleep(12.0)
                settled.append(rss_bytes(node.proc.pid))
    finally:
        node.stop()
    print(
        f"node RSS {base / MB:.0f} MB, peak {peak / MB:.0f} MB, 12 s after each burst {[s // MB for s in settled]} MB"
    )
    # 8 frames of 7.2 MB in flight, each held up to three times (gRPC's receive buffer, the parsed message, the
    # decoded array): 173 MB at most, 95-155 MB measured. Kept memory was 250 MB a burst before the fix; the
    # second burst's settled size moved by up to 23 MB between CI runs (434 -> 456 MB once).
    assert peak - base < 200 * MB
    assert settled[0] - base < 80 * MB
    assert settled[1] - settled[0] < 40 * MB, "a second burst reuses what the first left"


async def test_huge_results_from_a_node_leave_no_memory_behind() -> None:
    """Hardening, second pass, item 4 (the coordinator's side): a node answering 8.5 MB results (1000 poses with
    long names) left the coordinator larger for good (86 MB in the review; about 55 MB here with the allocator
    fixed and the heap trimmed). A node's answers are now read up to ``MAX_RESULT_BYTES`` (1 MiB; 100 poses take
    50 KB): gRPC refuses larger ones before they are parsed, the node is taken out, and the coordinator is back
    where it started (measured 170 -> 174 -> 170 MB)."""
    from test_tls import RogueNode

    names = ["x" * 500] * 17
    huge = pose_pb2.PoseResult(
        status=pose_pb2.RESULT_STATUS_OK,
        image_width=257,
        image_height=257,
        poses=[
            pose_pb2.Pose(score=0.5, keypoints=[pose_pb2.Keypoint(name=n, x=10, y=10, score=0.5) for n in names])
            for _ in range(1000)
        ],
    )

    class Flooding(RogueNode):
        async def GetInfo(
            self, request: node_pb2.GetInfoRequest, context: grpc.aio.ServicerContext
        ) -> pose_pb2.NodeInfo:
            return pose_pb2.NodeInfo(node_id="flood", model_id="m", model_family="posenet", capacity=8)

        async def EstimateStream(
            self, request_iterator: AsyncIterator[pose_pb2.Frame], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[pose_pb2.PoseResult]:
            async for frame in request_iterator:
                self.frames += 1
                huge.sequence = frame.sequence
                yield huge

    flood = Flooding("flood", None)
    flood.server = grpc.aio.server(options=[("grpc.max_send_message_length", 64 * MB)])
    port = await flood.start(advertise=False)
    coord = coordinator_of([f"127.0.0.1:{port}"])
    try:
        address = f"127.0.0.1:{coord.port}"
        await _ready(address, 1)
        base = rss_bytes(coord.proc.pid)
        payload = jpeg(np.zeros((64, 64, 3), np.uint8))

        async def gen() -> AsyncIterator[pose_pb2.Frame]:
            for i in range(40):
                yield encode_frame(payload, camera_id="cam", sequence=i)
                await asyncio.sleep(0.25)

        async with PosefleetClient(address, tls=None) as client:
            results = [r async for r in client.stream_camera(gen())]
        peak = rss_bytes(coord.proc.pid)
        await asyncio.sleep(12.0)
        after = rss_bytes(coord.proc.pid)
    finally:
        coord.stop()
        await flood.stop()
    print(
        f"{flood.frames} results of {huge.ByteSize() / MB:.1f} MB refused: coordinator RSS {base / MB:.0f} MB, "
        f"{peak / MB:.0f} MB after them, {after / MB:.0f} MB 12 s later"
    )
    assert flood.frames >= 5 and len(results) == 40
    assert all(r.status != pose_pb2.RESULT_STATUS_OK for r in results)
    assert after - base < 25 * MB
