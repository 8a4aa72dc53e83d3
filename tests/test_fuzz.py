"""Malformed inputs by the thousand, as raw bytes on the wire: every one answered with a precise status,
no crash, no INTERNAL or UNKNOWN, and valid frames served correctly afterwards."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
from nodes import frame, jpeg
from posefleet.bench.loopback import LoopbackLink
from posefleet.coordinator.server import CoordinatorServer
from posefleet.coordinator.settings import CoordinatorSettings
from posefleet.node.server.app import NodeServer
from posefleet.node.server.settings import NodeSettings
from posefleet.node.tools.media import read_image
from posefleet.v1 import pose_pb2

RNG = np.random.default_rng(2026)
PRECISE = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE}


def malformed_inputs(valid: bytes, count: int) -> list[bytes]:
    """Random bytes, valid frames with bytes flipped or cut, absurd fields, invalid UTF-8, huge ids."""
    out: list[bytes] = []
    kinds = 6
    for i in range(count):
        kind = i % kinds
        if kind == 0:
            out.append(RNG.integers(0, 256, int(RNG.integers(1, 300)), dtype=np.uint8).tobytes())
        elif kind == 1:
            data = bytearray(valid)
            for at in RNG.integers(0, len(data), 8):
                data[at] = int(RNG.integers(0, 256))
            out.append(bytes(data))
        elif kind == 2:
            out.append(valid[: int(RNG.integers(1, len(valid)))])
        elif kind == 3:  # a RAW image claiming absurd dimensions
            image = pose_pb2.Image(
                encoding=pose_pb2.IMAGE_ENCODING_RAW,
                data=b"\x00" * 64,
                width=int(RNG.integers(1, 2**31)),
                height=int(RNG.integers(1, 2**31)),
                pixel_format=pose_pb2.PIXEL_FORMAT_BGR8,
            )
            out.append(pose_pb2.Frame(camera_id="fuzz", sequence=i, image=image).SerializeToString())
        elif kind == 4:  # field 1 (camera_id) holding invalid UTF-8
            out.append(b"\x0a\x04\xff\xfe\xfd\xfc" + valid)
        else:  # a camera id of 1 MB and an unknown encoding
            image = pose_pb2.Image(encoding=pose_pb2.ImageEncoding.ValueType(99), data=b"x")
            out.append(pose_pb2.Frame(camera_id="x" * (1 << 20), sequence=i, image=image).SerializeToString())
    return out


async def unary(channel: grpc.aio.Channel, method: str, inputs: list[bytes]) -> collections.Counter[str]:
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    codes: collections.Counter[str] = collections.Counter()
    for data in inputs:
        try:
            await call(data, timeout=10)
            codes["OK"] += 1
        except grpc.aio.AioRpcError as exc:
            codes[exc.code().name] += 1
    return codes


async def test_a_node_answers_thousands_of_malformed_frames_precisely(models: dict[str, Path], assets: Path) -> None:
    server = NodeServer(
        NodeSettings(
            model=models["posenet075"],
            host="127.0.0.1",
            port=0,
            input_size=(257, 257),
            advertise=False,
            max_message_mb=2,
            insecure=True,
        )
    )
    await server.start()
    valid = frame(jpeg(read_image(assets / "video" / "pose.jpg")), camera="fuzz").SerializeToString()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            codes = await unary(channel, "/posefleet.v1.PoseNode/Estimate", malformed_inputs(valid, 3000))
            stream = channel.stream_stream(
                "/posefleet.v1.PoseNode/EstimateStream",
                request_serializer=None,
                response_deserializer=pose_pb2.PoseResult.FromString,
            )

            async def requests() -> AsyncIterator[bytes]:
                for data in malformed_inputs(valid, 2000):
                    yield data
                    await asyncio.sleep(0)

            answers = [r async for r in stream(requests())]
            after = await channel.unary_unary(
                "/posefleet.v1.PoseNode/Estimate",
                request_serializer=None,
                response_deserializer=pose_pb2.PoseResult.FromString,
            )(valid)
    finally:
        await server.drain()
    print("node", dict(codes), collections.Counter(a.error_code for a in answers))
    assert sum(codes.values()) == 3000 and not {"INTERNAL", "UNKNOWN"} & set(codes), codes
    assert set(codes) <= {"OK", *(c.name for c in PRECISE)}, codes
    assert len(answers) == 2000 and all(
        a.status in (pose_pb2.RESULT_STATUS_OK, pose_pb2.RESULT_STATUS_FAILED) for a in answers
    )
    assert {a.error_code for a in answers if a.status == pose_pb2.RESULT_STATUS_FAILED} <= {c.value[0] for c in PRECISE}
    assert after.status == pose_pb2.RESULT_STATUS_OK and after.poses, "valid frames still served"


async def test_a_coordinator_answers_thousands_of_malformed_inputs_precisely() -> None:
    LoopbackLink.nodes = {"n0": {"capacity": 8}}
    server = CoordinatorServer(
        CoordinatorSettings(host="127.0.0.1", port=0, discover=False, max_message_mb=2, insecure=True),
        link_factory=LoopbackLink,
    )
    await server.start()
    server.registry.add("n0", "loopback-n0", "static")
    await asyncio.sleep(0.1)
    valid = frame(b"\xff\xd8 loopback nodes do not decode", camera="fuzz").SerializeToString()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            codes = await unary(channel, "/posefleet.v1.Coordinator/Estimate", malformed_inputs(valid, 3000))
            for method in ("ListNodes", "GetStats"):
                codes.update(await unary(channel, f"/posefleet.v1.Coordinator/{method}", malformed_inputs(valid, 500)))
            stream = channel.stream_stream(
                "/posefleet.v1.Coordinator/StreamCamera",
                request_serializer=None,
                response_deserializer=pose_pb2.PoseResult.FromString,
            )
            backwards = [pose_pb2.Frame(camera_id="fuzz", sequence=s).SerializeToString() for s in (5, 4, 3)]

            async def requests() -> AsyncIterator[bytes]:
                yield valid
                for data in [*malformed_inputs(valid, 1000), *backwards]:
                    yield data

            answers = [r async for r in stream(requests())]
            after = await channel.unary_unary(
                "/posefleet.v1.Coordinator/Estimate",
                request_serializer=None,
                response_deserializer=pose_pb2.PoseResult.FromString,
            )(valid)
    finally:
        await server.stop()
    print("coordinator", dict(codes), collections.Counter(a.error_code for a in answers))
    assert sum(codes.values()) == 4000 and not {"INTERNAL", "UNKNOWN"} & set(codes), codes
    assert len(answers) == 1004, "one answer per frame, malformed or not"
    assert all(a.status in (pose_pb2.RESULT_STATUS_OK, pose_pb2.RESULT_STATUS_FAILED) for a in answers)
    assert {a.error_code for a in answers if a.status == pose_pb2.RESULT_STATUS_FAILED} <= {c.value[0] for c in PRECISE}
    assert after.status == pose_pb2.RESULT_STATUS_OK
