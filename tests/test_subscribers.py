"""Slow subscribers: told what they lost, dropped once too far behind; the cameras never wait for them."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import grpc
import pytest
from posefleet.bench.loopback import LoopbackLink, ok
from posefleet.coordinator.server import CoordinatorServer
from posefleet.coordinator.settings import CoordinatorSettings
from posefleet.coordinator.subscribers import Backlog, SubscriberTooSlow
from posefleet.v1 import coordinator_pb2, coordinator_pb2_grpc, pose_pb2


async def test_backlog_counts_losses_and_drops_a_subscriber_that_never_catches_up() -> None:
    backlog: Backlog[int] = Backlog(capacity=3, max_lag_s=0.2)
    for i in range(5):
        backlog.put(i)
    assert await backlog.get() == (2, 2), "the two oldest were lost, and the subscriber is told"
    assert await backlog.get() == (3, 0)
    assert await backlog.get() == (4, 0)  # caught up: the lag clock restarts
    backlog.put(5)
    await asyncio.sleep(0.25)
    assert await backlog.get() == (5, 0), "a lone old item is not a lag: the subscriber had caught up"
    backlog.put(6)
    backlog.put(7)
    await asyncio.sleep(0.25)
    backlog.put(8)  # not caught up for 0.25 s: dropped, memory freed
    assert backlog.dropped is not None and "lost 2 messages" in backlog.dropped
    with pytest.raises(SubscriberTooSlow, match=r"had not caught up for 0\.\d s \(limit 0\.2 s\)"):
        await backlog.get()


def crowd(link: LoopbackLink, frame: pose_pb2.Frame) -> pose_pb2.PoseResult:
    """Sixty people per frame: results big enough (about 15 KB) to fill a stream's flow-control window soon."""
    result = ok(link, frame)
    result.image_width, result.image_height = 640, 480
    for p in range(60):
        pose = result.poses.add(score=0.9)
        for k in range(17):
            pose.keypoints.add(x=10.0 * p + k, y=20.0 + 10 * k, score=0.8)
    return result


async def crowd_coordinator(backlog: int, max_lag_s: float) -> CoordinatorServer:
    """An --insecure coordinator with one in-process node answering a crowd, and these subscriber limits."""
    LoopbackLink.nodes = {"n0": {"capacity": 8, "answer": crowd}}
    settings = CoordinatorSettings(
        host="127.0.0.1",
        port=0,
        discover=False,
        subscriber_backlog=backlog,
        subscriber_max_lag_s=max_lag_s,
        insecure=True,
    )
    server = CoordinatorServer(settings, link_factory=LoopbackLink)
    await server.start()
    server.registry.add("n0", "loopback-n0", "static")
    await asyncio.sleep(0.1)
    return server


@pytest.mark.parametrize("max_lag_s", [1.0, 30.0])
async def test_a_stalled_subscriber_is_told_what_it_lost_and_dropped_when_too_far_behind(max_lag_s: float) -> None:
    """A camera at 100 FPS; one subscriber reads everything, the other stalls for 8 s after its first message.
    Allowed 30 s of lag, the stalled one loses the oldest results beyond its backlog and every message tells
    it how many (received + lost = sent); allowed 1 s, it is ended with RESOURCE_EXHAUSTED saying what it
    lost. The camera's results never wait for either subscriber."""
    server = await crowd_coordinator(backlog=20, max_lag_s=max_lag_s)
    frames = 600
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = coordinator_pb2_grpc.CoordinatorStub(channel)

            async def camera() -> list[pose_pb2.PoseResult]:
                async def gen() -> AsyncIterator[pose_pb2.Frame]:
                    for i in range(frames):  # 100 FPS for 6 s
                        f = pose_pb2.Frame(camera_id="cam", sequence=i)
                        f.capture_time.GetCurrentTime()
                        yield f
                        await asyncio.sleep(0.01)

                return [r async for r in stub.StreamCamera(gen())]

            async def subscriber(
                stall: float,
            ) -> tuple[list[coordinator_pb2.MultiViewResult], grpc.aio.AioRpcError | None]:
                got: list[coordinator_pb2.MultiViewResult] = []
                call = stub.Subscribe(coordinator_pb2.SubscribeRequest(camera_ids=["cam"], window_ms=10))
                try:
                    async for message in call:
                        got.append(message)
                        if stall and len(got) == 1:
                            await asyncio.sleep(stall)
                        if message.views[-1].sequence == frames - 1:
                            break
                except grpc.aio.AioRpcError as exc:
                    return got, exc
                finally:
                    call.cancel()
                return got, None

            stalled = asyncio.create_task(subscriber(8.0))
            fast = asyncio.create_task(subscriber(0.0))
            await asyncio.sleep(0.05)
            results = await camera()
            stalled_got, stalled_error = await asyncio.wait_for(stalled, 20)
            fast_got, fast_error = await asyncio.wait_for(fast, 20)
        assert [r.status for r in results] == [pose_pb2.RESULT_STATUS_OK] * frames
        route_ms = sorted(r.timings.route_ms for r in results)
        assert route_ms[int(0.99 * frames)] < 250, "the camera never waited for its subscribers"
        assert fast_error is None and sum(m.lost for m in fast_got) == 0
        assert [v.sequence for m in fast_got for v in m.views] == list(range(frames))
        received = [v.sequence for m in stalled_got for v in m.views]
        print(
            f"max lag {max_lag_s} s: stalled subscriber received {len(received)}, told of "
            f"{sum(m.lost for m in stalled_got)} lost; ended: {stalled_error.details() if stalled_error else None}"
        )
        assert received == sorted(received)
        if max_lag_s > 10:
            assert stalled_error is None
            lost = sum(m.lost for m in stalled_got)
            assert lost > 0 and len(received) + lost == frames, "every result it missed is counted"
        else:
            assert stalled_error is not None and stalled_error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            details = stalled_error.details() or ""
            match = re.search(r"had not caught up for [\d.]+ s \(limit 1 s\) and lost (\d+) messages", details)
            assert match and int(match.group(1)) > 0, details
            assert len(received) < frames
    finally:
        await server.stop()


async def test_a_subscriber_reading_slowly_is_told_within_its_lag_limit() -> None:
    """Hardening, second pass, item 2: a subscriber that reads (not stalls) slower than results come was 134 s
    behind after 148 s, never told: gRPC's BDP probing grew its receive window to megabytes, so the
    coordinator's backlog never filled. The SDK's channels keep a fixed 64 KB window: the same reader (20
    messages a second of 19 KB, 100 a second produced) is told what it lost at once, never sees a message
    older than its limit + 2 s, and is ended RESOURCE_EXHAUSTED within its limit + 2 s."""
    import time

    from posefleet.clients.sdk import PosefleetClient

    max_lag_s = 3.0
    server = await crowd_coordinator(backlog=50, max_lag_s=max_lag_s)
    stop = time.monotonic() + 15.0
    try:
        async with PosefleetClient(f"127.0.0.1:{server.port}", tls=None) as client:

            async def camera() -> None:
                async def gen() -> AsyncIterator[pose_pb2.Frame]:
                    i = 0
                    while time.monotonic() < stop:
                        frame = pose_pb2.Frame(camera_id="cam", sequence=i)
                        frame.capture_time.GetCurrentTime()
                        i += 1
                        yield frame
                        await asyncio.sleep(0.01)

                async for _ in client.stream_camera(gen()):
                    pass

            async def slow_reader() -> tuple[float | None, float, float | None, int]:
                start, told, oldest, ended, lost = time.monotonic(), None, 0.0, None, 0
                try:
                    async for message in client.subscribe(["cam"], window_ms=10):
                        lost += message.lost
                        if message.lost and told is None:
                            told = time.monotonic() - start
                        age = time.time() - message.views[0].capture_time.ToMicroseconds() / 1e6
                        oldest = max(oldest, age)
                        await asyncio.sleep(0.05)
                        if time.monotonic() > stop:
                            break
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                    ended = time.monotonic() - start
                return told, oldest, ended, lost

            _, (told, oldest, ended, lost) = await asyncio.gather(camera(), slow_reader())
    finally:
        await server.stop()
    print(f"slow reader: told of losses after {told} s, oldest message {oldest:.1f} s, ended after {ended} s")
    assert told is not None and told <= max_lag_s + 2 and lost > 0
    assert oldest <= max_lag_s + 2, oldest
    assert ended is not None and ended <= max_lag_s + 2, ended
