"""A real node on loopback with the real model: results, health, zeroconf, shutdown, bad input, overload."""

from __future__ import annotations

import asyncio
import random
import signal
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nodes import NodeProcess, frame, integer_kernels, jpeg
from posefleet.node.engine.runtime import EngineOptions, PoseEngine
from posefleet.node.server.app import NodeServer
from posefleet.node.server.settings import NodeSettings
from posefleet.node.tools.media import frames, read_image
from posefleet.v1 import node_pb2, node_pb2_grpc, pose_pb2
from posefleet.v1.discovery import SERVICE_TYPE, NodeAdvert
from pydantic import ValidationError
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

SIZE = (257, 257)


def settings(model: Path, **kw: object) -> NodeSettings:
    base: dict[str, object] = dict(
        model=model, host="127.0.0.1", port=0, input_size=SIZE, zeroconf_interfaces=["127.0.0.1"], insecure=True
    )
    base.update(kw)
    return NodeSettings(**base)  # type: ignore[arg-type]


@pytest.fixture
async def node(models: dict[str, Path]) -> AsyncIterator[NodeServer]:
    server = NodeServer(settings(models["posenet075"], metrics_port=0, name="test-node", describe_poses=True))
    await server.start()
    yield server
    await server.drain()


def stub(server: NodeServer) -> tuple[grpc.aio.Channel, node_pb2_grpc.PoseNodeStub]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    return channel, node_pb2_grpc.PoseNodeStub(channel)


async def test_unary_and_stream_equal_the_engine(node: NodeServer, models: dict[str, Path], assets: Path) -> None:
    """The node answers what its engine finds, each pose scoring >= 0.25 described by its colours
    (``Pose.appearance``) as ``posefleet.merge.appearance`` describes it on the decoded frame."""
    from posefleet.merge.appearance import MIN_POSE_SCORE, describe

    images = [read_image(assets / "images" / n) for n in ("multi_skiing.jpg", "tennis.jpg", "two_on_bench.jpg")]
    payloads = [jpeg(im) for im in images]
    engine = PoseEngine(models["posenet075"], EngineOptions(input_size=SIZE))
    import cv2

    decoded = [np.asarray(cv2.imdecode(np.frombuffer(p, np.uint8), cv2.IMREAD_COLOR)) for p in payloads]
    expected = [engine.infer(image) for image in decoded]
    described = 0
    channel, node_stub = stub(node)
    async with channel:
        unary = [await node_stub.Estimate(frame(p, i)) for i, p in enumerate(payloads)]
        streamed = {
            r.sequence: r async for r in node_stub.EstimateStream(iter([frame(p, i) for i, p in enumerate(payloads)]))
        }
    for i, want in enumerate(expected):
        for got in (unary[i], streamed[i]):
            assert got.status == pose_pb2.RESULT_STATUS_OK and got.sequence == i and got.camera_id == "cam"
            assert (got.image_height, got.image_width) == images[i].shape[:2]
            assert got.node_id == "test-node" and got.model_id == "posenet-mobilenet-v1-075-s16"
            assert len(got.poses) == len(want.poses)
            for gp, wp in zip(got.poses, want.poses, strict=True):
                kp = np.array([[k.x, k.y, k.score] for k in gp.keypoints])
                np.testing.assert_allclose(kp, wp.keypoints, atol=1e-3)
                assert gp.score == pytest.approx(wp.score, abs=1e-5)
                assert [k.name for k in gp.keypoints][:2] == ["nose", "left_eye"]
                if wp.score >= MIN_POSE_SCORE:
                    np.testing.assert_allclose(gp.appearance, describe(decoded[i], wp.keypoints), atol=1.0)
                    described += int(np.isfinite(gp.appearance).any())
                else:  # a decoder's weak stray candidate: not described
                    assert len(gp.appearance) == 0
            assert got.timings.inference_ms > 0 and got.timings.total_ms >= got.timings.inference_ms
    assert described >= 4  # the people whose torso or thighs are seen: 2 answers each


async def test_raw_and_png_frames(node: NodeServer, assets: Path) -> None:
    import cv2

    image = read_image(assets / "video" / "pose.jpg")
    rgb = np.ascontiguousarray(image[:, :, ::-1])
    _, png = cv2.imencode(".png", image)
    channel, node_stub = stub(node)
    async with channel:
        raw = await node_stub.Estimate(
            pose_pb2.Frame(
                image=pose_pb2.Image(
                    encoding=pose_pb2.IMAGE_ENCODING_RAW,
                    data=rgb.tobytes(),
                    width=image.shape[1],
                    height=image.shape[0],
                    pixel_format=pose_pb2.PIXEL_FORMAT_RGB8,
                )
            )
        )
        from_png = await node_stub.Estimate(frame(png.tobytes(), encoding=pose_pb2.IMAGE_ENCODING_PNG))
    a = np.array([[k.x, k.y] for k in raw.poses[0].keypoints])
    b = np.array([[k.x, k.y] for k in from_png.poses[0].keypoints])
    np.testing.assert_allclose(a, b, atol=1e-3)


async def test_a_huge_jpeg_is_decoded_reduced_and_answered_in_its_own_pixels(
    node: NodeServer, models: dict[str, Path], assets: Path
) -> None:
    """Hardening, second pass, item 3: a JPEG over 8 times the model input's side is decoded at a reduced scale
    (libjpeg's DCT scaling, 30 instead of 100 ms for 4096x4096 at 257x257) and its poses are scaled back:
    the node answers in the frame's own pixels, as the engine does on the fully decoded frame."""
    import cv2
    from posefleet.common.images import decode_encoded

    big = cv2.resize(read_image(assets / "video" / "pose.jpg"), (4000, 2668), interpolation=cv2.INTER_CUBIC)
    payload = jpeg(big)
    reduced = decode_encoded(payload, "JPEG", 4096, 4096 * 4096, 4 * max(SIZE))
    assert reduced.pixels.shape[:2] == (1334, 2000) and reduced.size == (4000, 2668)
    engine = PoseEngine(models["posenet075"], EngineOptions(input_size=SIZE))
    want = engine.infer(np.asarray(cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR))).poses[0]
    channel, node_stub = stub(node)
    async with channel:
        got = await node_stub.Estimate(frame(payload))
    assert (got.image_width, got.image_height) == (4000, 2668)
    kp = np.array([[k.x, k.y, k.score] for k in got.poses[0].keypoints])
    seen = (kp[:, 2] > 0.5) & (want.keypoints[:, 2] > 0.5)
    assert seen.sum() >= 10
    error = np.linalg.norm(kp[seen, :2] - want.keypoints[seen, :2], axis=1)
    print(f"reduced decoding: keypoints {np.median(error):.1f} px (median) from the full decoding's, 4000 px wide")
    assert np.median(error) < 0.01 * 4000


async def test_get_info_and_reflection(node: NodeServer) -> None:
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    channel, node_stub = stub(node)
    async with channel:
        info = await node_stub.GetInfo(node_pb2.GetInfoRequest())
    assert info.model_family == "posenet" and (info.input_height, info.input_width) == SIZE
    assert info.capacity >= 1 and info.proto_version == "posefleet.v1" and len(info.keypoint_names) == 17
    assert info.precision == "FP16, runs f32"  # the kernels the compiled model reports: accuracy first, any CPU

    def list_services() -> set[str]:  # the reflection client is synchronous: keep it off the server's loop
        with grpc.insecure_channel(f"127.0.0.1:{node.port}") as sync_channel:
            return set(ProtoReflectionDescriptorDatabase(sync_channel).get_services())

    services = await asyncio.get_running_loop().run_in_executor(None, list_services)
    assert {"posefleet.v1.PoseNode", "grpc.health.v1.Health"} <= services


async def test_the_inference_precision_is_the_node_s_to_choose(models: dict[str, Path]) -> None:
    server = NodeServer(settings(models["posenet075"], inference_precision="f32", advertise=False))
    await server.start()
    try:
        channel, node_stub = stub(server)
        async with channel:
            info = await node_stub.GetInfo(node_pb2.GetInfoRequest())
        assert info.precision == "FP16, runs f32"
    finally:
        await server.drain()
    with pytest.raises(ValidationError, match="inference_precision"):
        settings(models["posenet075"], inference_precision="f8")


async def test_health_transitions(models: dict[str, Path]) -> None:
    server = NodeServer(settings(models["hpe"], input_size=None, advertise=False))
    start = asyncio.create_task(server.start())
    seen: list[int] = []
    while not start.done():
        await asyncio.sleep(0.01)
        if server.port:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                try:
                    reply = await health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(service="posefleet.v1.PoseNode"), timeout=1
                    )
                    seen.append(reply.status)
                except grpc.aio.AioRpcError:
                    pass
    await start
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        serving = await health.Check(health_pb2.HealthCheckRequest(service="posefleet.v1.PoseNode"))
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        watched = [(await watch.read()).status]
        drain = asyncio.create_task(server.drain())
        try:
            while (reply := await watch.read()) is not grpc.aio.EOF:
                watched.append(reply.status)
        except grpc.aio.AioRpcError:
            pass  # the server went away after draining
        await drain
    assert health_pb2.HealthCheckResponse.NOT_SERVING in seen, "NOT_SERVING while the model loads"
    assert serving.status == health_pb2.HealthCheckResponse.SERVING
    assert watched[:2] == [health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING]


async def _browse(seconds: float, wanted: str) -> tuple[list[ServiceStateChange], AsyncServiceInfo | None]:
    zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    changes: list[ServiceStateChange] = []

    def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if name == wanted:
            changes.append(state_change)

    browser = AsyncServiceBrowser(zc.zeroconf, SERVICE_TYPE, handlers=[on_change])
    info = AsyncServiceInfo(SERVICE_TYPE, wanted)
    found = await info.async_request(zc.zeroconf, 3000)
    await asyncio.sleep(seconds)
    await browser.async_cancel()
    await zc.async_close()
    return changes, info if found else None


async def test_zeroconf_advert_on_loopback(node: NodeServer) -> None:
    changes, info = await _browse(0.5, "test-node._posefleet._tcp.local.")
    assert info is not None and ServiceStateChange.Added in changes
    assert info.parsed_addresses() == ["127.0.0.1"] and info.port == node.port
    advert = NodeAdvert.from_txt(info.properties)
    assert advert.node_id == "test-node" and advert.model_id == "posenet-mobilenet-v1-075-s16"
    assert advert.family == "posenet" and advert.input_size == SIZE and advert.device == "CPU"
    assert advert.capacity >= 1 and advert.proto == "posefleet.v1" and advert.state == "serving"
    assert advert.version and advert.openvino.startswith("20")


def test_sigterm_drains_in_flight_frames_and_says_goodbye(models: dict[str, Path], assets: Path) -> None:
    node = NodeProcess(models["hpe"], "--max-inflight", "64", name="sigterm-node")
    payload = jpeg(read_image(assets / "video" / "pose.jpg"))

    async def scenario() -> tuple[list[pose_pb2.PoseResult], list[ServiceStateChange], float, int]:
        browse = asyncio.create_task(_browse(6.0, "sigterm-node._posefleet._tcp.local."))
        await asyncio.sleep(1.0)
        async with grpc.aio.insecure_channel(node.address) as channel:
            calls = [node_pb2_grpc.PoseNodeStub(channel).Estimate(frame(payload, i)) for i in range(12)]
            await asyncio.sleep(0.05)  # the frames are in flight
            t0 = time.monotonic()
            node.proc.send_signal(signal.SIGTERM)
            results = list(await asyncio.gather(*calls))
        code = await asyncio.get_running_loop().run_in_executor(None, node.proc.wait, 15)
        elapsed = time.monotonic() - t0
        changes, _ = await browse
        return results, changes, elapsed, code

    results, changes, elapsed, code = asyncio.run(scenario())
    assert code == 0, node.output()
    assert elapsed < 10
    assert all(r.status == pose_pb2.RESULT_STATUS_OK and r.poses for r in results)
    # Added, then Updated (TXT state=draining), then Removed (the goodbye).
    assert ServiceStateChange.Added in changes and ServiceStateChange.Removed in changes, changes
    assert ServiceStateChange.Updated in changes


def _malformed(rng: random.Random, good: bytes, i: int) -> tuple[pose_pb2.Frame, str]:
    kind = i % 8
    if kind == 0:
        return frame(rng.randbytes(rng.randint(1, 4000)), i), "random bytes"
    if kind == 1:
        return frame(good[: rng.randint(10, len(good) - 10)], i), "truncated JPEG"
    if kind == 2:
        return frame(b"", i), "empty"
    if kind == 3:  # raw with the wrong byte count
        w, h = rng.randint(1, 300), rng.randint(1, 300)
        img = pose_pb2.Image(
            encoding=pose_pb2.IMAGE_ENCODING_RAW,
            data=b"\0" * (w * h * 3 - 1),
            width=w,
            height=h,
            pixel_format=pose_pb2.PIXEL_FORMAT_BGR8,
        )
        return pose_pb2.Frame(sequence=i, image=img), "raw size"
    if kind == 4:  # absurd dimensions in a JPEG header
        data = bytearray(good)
        sof = data.find(b"\xff\xc0")
        data[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big")
        return frame(bytes(data), i), "absurd JPEG dims"
    if kind == 5:
        img = pose_pb2.Image(
            encoding=pose_pb2.IMAGE_ENCODING_RAW,
            data=b"\0" * 12,
            width=100000,
            height=1,
            pixel_format=pose_pb2.PIXEL_FORMAT_GRAY8,
        )
        return pose_pb2.Frame(sequence=i, image=img), "absurd raw dims"
    if kind == 6:
        return frame(good, i, encoding=7), "unknown encoding"
    data = bytearray(good)  # corrupt body, intact markers
    for _ in range(50):
        data[rng.randint(600, len(data) - 3)] = rng.randint(0, 255)
    return frame(bytes(data[: len(data) // 2]) + b"\xff\xd9", i), "corrupt body"


async def test_a_thousand_malformed_frames(node: NodeServer, assets: Path) -> None:
    rng = random.Random(7)
    good_image = read_image(assets / "video" / "pose.jpg")
    good = jpeg(good_image)
    channel, node_stub = stub(node)
    async with channel:
        before = await node_stub.Estimate(frame(good, 0))
        bad = [_malformed(rng, good, i) for i in range(1, 1201)]
        answers: dict[int, pose_pb2.PoseResult] = {}
        for start in range(0, len(bad), 50):  # streamed in batches that fit the node's capacity
            batch = [f for f, _ in bad[start : start + 50]]

            async def requests(batch: list[pose_pb2.Frame] = batch) -> AsyncIterator[pose_pb2.Frame]:
                for f in batch:
                    yield f
                    await asyncio.sleep(0.001)

            async for result in node_stub.EstimateStream(requests()):
                answers[result.sequence] = result
        unary_codes = set()
        for f, _kind in [b for b in bad if b[1] != "corrupt body"][:80]:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await node_stub.Estimate(f)
            unary_codes.add(err.value.code())
        after = await node_stub.Estimate(frame(good, 9999))
    assert len(answers) == 1200
    failed = [r for r in answers.values() if r.status == pose_pb2.RESULT_STATUS_FAILED]
    codes = {r.error_code for r in failed}
    ok = [r for r in answers.values() if r.status == pose_pb2.RESULT_STATUS_OK]
    # Every malformed frame is refused (a corrupted JPEG body may still decode into noise: no crash either way).
    assert len(failed) >= 1050 and codes <= {
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
        grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
    }
    assert all(r.error for r in failed) and len(ok) + len(failed) == 1200
    assert unary_codes == {grpc.StatusCode.INVALID_ARGUMENT}
    for kind_text in (
        "empty image",
        "corrupt JPEG",
        "beyond this node's limits",
        "unsupported image encoding",
        "needs",
    ):
        assert any(kind_text in r.error for r in failed), kind_text
    assert after.status == pose_pb2.RESULT_STATUS_OK
    np.testing.assert_allclose(
        [[k.x, k.y] for k in after.poses[0].keypoints], [[k.x, k.y] for k in before.poses[0].keypoints], atol=1e-3
    )


async def test_oversized_message_names_the_limit(models: dict[str, Path]) -> None:
    server = NodeServer(settings(models["posenet075"], max_message_mb=1.0, advertise=False))
    await server.start()
    try:
        channel, node_stub = stub(server)
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await node_stub.Estimate(frame(b"\xff" * (2 << 20)))
            ok = await node_stub.GetInfo(node_pb2.GetInfoRequest())
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert str(1 << 20) in (err.value.details() or "")
        assert ok.node_id
    finally:
        await server.drain()


async def test_overload_gets_resource_exhausted_at_once(models: dict[str, Path], assets: Path) -> None:
    server = NodeServer(settings(models["hpe"], input_size=None, max_inflight=2, advertise=False))
    await server.start()
    payload = jpeg(read_image(assets / "video" / "pose.jpg"))
    try:
        channel, node_stub = stub(server)
        async with channel:
            t0 = time.monotonic()
            outcomes = await asyncio.gather(
                *(node_stub.Estimate(frame(payload, i)) for i in range(10)), return_exceptions=True
            )
            refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
            served = [o for o in outcomes if isinstance(o, pose_pb2.PoseResult)]
            streamed = [r async for r in node_stub.EstimateStream(iter([frame(payload, i) for i in range(10)]))]
        assert len(served) >= 2 and len(refused) >= 5
        assert {e.code() for e in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert "2 frames in flight" in (refused[0].details() or "")
        assert time.monotonic() - t0 < 30
        assert len(streamed) == 10 and {r.sequence for r in streamed} == set(range(10))
        assert any(r.error_code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] for r in streamed)
        assert sum(r.status == pose_pb2.RESULT_STATUS_OK for r in streamed) >= 2
    finally:
        await server.drain()


async def test_metrics_endpoint(node: NodeServer, assets: Path) -> None:
    channel, node_stub = stub(node)
    async with channel:
        await node_stub.Estimate(frame(jpeg(read_image(assets / "video" / "pose.jpg"))))
        with pytest.raises(grpc.aio.AioRpcError):
            await node_stub.Estimate(frame(b"junk"))
    url = f"http://127.0.0.1:{node.metrics_port}/metrics"
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    assert 'posefleet_node_frames_total{result="ok"} 1.0' in text
    assert 'posefleet_node_errors_total{code="INVALID_ARGUMENT"} 1.0' in text
    assert 'posefleet_node_stage_seconds_count{stage="inference"} 1.0' in text
    assert "posefleet_node_inflight 0.0" in text


def test_video_frames_through_a_stream(models: dict[str, Path], assets: Path) -> None:
    node = NodeProcess(models["posenet075"], "--input-size", "257x257", "--no-advertise")
    try:
        payloads = [jpeg(f) for f in frames(assets / "video" / "pose_1.mp4")][:60]
        with grpc.insecure_channel(node.address) as channel:
            node_stub = node_pb2_grpc.PoseNodeStub(channel)
            results: list[pose_pb2.PoseResult] = []

            def requests() -> object:
                for i, p in enumerate(payloads):
                    while i - len(results) >= 4:  # keep within the node's capacity
                        time.sleep(0.001)
                    yield frame(p, i, camera="video")

            for r in node_stub.EstimateStream(requests()):
                results.append(r)
        assert sorted(r.sequence for r in results) == list(range(60))
        assert all(r.status == pose_pb2.RESULT_STATUS_OK and r.poses for r in results)
    finally:
        assert node.stop() == 0


def test_invalid_settings_are_reported(tmp_path: Path, models: dict[str, Path]) -> None:
    import subprocess
    import sys

    cases = [
        (["--model", str(tmp_path)], "not a converted model directory"),
        (["--model", str(models["posenet075"]), "--device", "TPU"], "unknown device"),
        (["--model", str(models["posenet075"]), "--zeroconf-interface", "not-an-ip"], "zeroconf_interfaces"),
        (["--model", str(models["posenet075"]), "--port", "70000"], "port"),
    ]
    for args, text in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "posefleet.cli", "node", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 2 and text in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    config = tmp_path / "node.toml"
    config.write_text(f'model = "{models["posenet075"]}"\nport = 1234\ndevice = "cpu"\n')
    from posefleet.node.server.settings import NodeSettings

    loaded = NodeSettings.load(config, port=4321)
    assert loaded.port == 4321 and loaded.device == "CPU" and loaded.model == models["posenet075"]


async def test_a_new_family_serves_through_the_node(models: dict[str, Path], assets: Path) -> None:
    """YOLO-pose (one family module, one source-format module) through the node, with its own decode settings."""
    server = NodeServer(settings(models["yolo"], input_size=(640, 640), decode={"conf": 0.5}, advertise=False))
    await server.start()
    try:
        channel, node = stub(server)
        async with channel:
            info = await node.GetInfo(node_pb2.GetInfoRequest())
            result = await node.Estimate(frame(jpeg(read_image(assets / "images" / "two_on_bench.jpg"))))
        assert info.model_family == "yolo-pose" and (info.input_height, info.input_width) == (640, 640)
        exported, _, kernels = info.precision.partition(", runs ")
        assert exported == "INT8 (as exported)" and integer_kernels(kernels)
        assert result.status == pose_pb2.RESULT_STATUS_OK and len(result.poses) >= 2
        assert all(p.score >= 0.5 for p in result.poses) and len(result.poses[0].keypoints) == 17
    finally:
        await server.drain()


async def test_movenet_keeps_a_crop_per_camera_on_the_node(models: dict[str, Path], assets: Path) -> None:
    """A stateful family on the node: MoveNet follows each camera's person with a crop region of its own."""
    server = NodeServer(settings(models["movenet"], input_size=None, advertise=False))
    await server.start()
    try:
        channel, node = stub(server)
        data = jpeg(read_image(assets / "video" / "pose.jpg"))
        async with channel:

            async def frames() -> AsyncIterator[pose_pb2.Frame]:
                for seq in range(6):
                    yield frame(data, seq, camera="left" if seq % 2 else "right")

            results = [r async for r in node.EstimateStream(frames())]
        assert [r.status for r in results] == [pose_pb2.RESULT_STATUS_OK] * 6 and all(
            len(r.poses) == 1 for r in results
        )
        crops = server._engine.engine.model._crops  # type: ignore[union-attr]
        assert set(crops) == {"left", "right"}
    finally:
        await server.drain()
