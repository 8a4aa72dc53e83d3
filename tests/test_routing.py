"""Routing, retries and per-camera ordering against in-process fake nodes: milliseconds, no models."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from posefleet.bench.loopback import LoopbackLink as FakeLink
from posefleet.bench.loopback import ok
from posefleet.coordinator.cameras import CameraSession, CameraStats
from posefleet.coordinator.credits import SLOW_START_CREDITS
from posefleet.coordinator.jobs import Job
from posefleet.coordinator.registry import Registry
from posefleet.coordinator.settings import CoordinatorSettings
from posefleet.v1 import pose_pb2

OK, DROPPED, FAILED = pose_pb2.RESULT_STATUS_OK, pose_pb2.RESULT_STATUS_DROPPED, pose_pb2.RESULT_STATUS_FAILED


@pytest.fixture
async def cluster() -> AsyncIterator[Any]:
    registries: list[Registry] = []

    async def make(nodes: dict[str, dict[str, Any]], **settings: Any) -> Registry:
        FakeLink.nodes = nodes
        registry = Registry(CoordinatorSettings(discover=False, **settings), link_factory=FakeLink)
        for key in nodes:
            registry.add(key, f"fake-{key}:1", "static")
        for _ in range(100):
            if all(link.available for link in registry.links.values()):
                break
            await asyncio.sleep(0.001)
        registries.append(registry)
        return registry

    yield make
    for registry in registries:
        await registry.stop()


def frame(seq: int, camera: str = "cam", family: str = "") -> pose_pb2.Frame:
    return pose_pb2.Frame(camera_id=camera, sequence=seq, model=pose_pb2.ModelSelector(family=family))


async def send(registry: Registry, frames: list[pose_pb2.Frame], timeout: float = 5.0) -> list[pose_pb2.PoseResult]:
    jobs = [Job.start(f, timeout) for f in frames]
    await asyncio.gather(*(registry.dispatch(job) for job in jobs))
    return list(await asyncio.gather(*(job.future for job in jobs)))


async def test_frames_balance_per_frame_over_nodes_with_credits(cluster: Any) -> None:
    registry = await cluster({"a": {"latency": 0.005}, "b": {"latency": 0.005}})
    results = await send(registry, [frame(i) for i in range(40)])
    assert [r.status for r in results] == [OK] * 40
    served = collections.Counter(r.node_id for r in results)
    assert served["a"] >= 10 and served["b"] >= 10, served
    # Every credit comes back; a straggler's copy (sent on when a loaded machine delays an answer past
    # ``straggler_after_s``) may still be on the other node for its own few milliseconds.
    for _ in range(200):
        if all(link.credits.in_flight == 0 for link in registry.links.values()):
            break
        await asyncio.sleep(0.01)
    assert all(link.credits.in_flight == 0 for link in registry.links.values())


async def test_results_carry_the_cameras_identity_not_the_link_tag(cluster: Any) -> None:
    registry = await cluster({"a": {}})
    f = frame(1000, camera="door")
    f.capture_time.FromMilliseconds(1_700_000_000_123)
    (result,) = await send(registry, [f])
    (sent,) = registry.links["a"].received
    assert sent.sequence != 1000 and not sent.HasField("capture_time"), "the link tags frames itself"
    assert (result.camera_id, result.sequence) == ("door", 1000)
    assert result.capture_time.ToMilliseconds() == 1_700_000_000_123


async def test_model_selector_and_no_matching_node(cluster: Any) -> None:
    registry = await cluster({"pn": {"family": "posenet"}, "op": {"family": "openpose"}}, no_node_wait_s=0.05)
    results = await send(registry, [frame(i, family="openpose") for i in range(6)])
    assert {r.node_id for r in results} == {"op"}
    (missing,) = await send(registry, [frame(0, family="yolo")])
    assert missing.status == FAILED and missing.error_code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert "no available node serves yolo" in missing.error


async def test_lost_node_frames_go_elsewhere_once(cluster: Any) -> None:
    held: dict[str, Any] = {"answer": lambda link, f: None, "capacity": 4}
    registry = await cluster({"stuck": held, "good": {"capacity": 4}})
    jobs = [Job.start(frame(i), 5.0) for i in range(8)]
    for job in jobs:
        await registry.dispatch(job)
    stuck = registry.links["stuck"]
    assert stuck.credits.in_flight > 0
    stuck.mark_down("test: node lost")
    results = await asyncio.gather(*(job.future for job in jobs))
    assert [r.status for r in results] == [OK] * 8 and {r.node_id for r in results} == {"good"}
    assert all(job.attempts <= 2 for job in jobs)


async def test_a_frame_lost_twice_fails_with_the_reason(cluster: Any) -> None:
    registry = await cluster({"x": {"answer": lambda link, f: None}, "y": {"answer": lambda link, f: None}})
    job = Job.start(frame(7), 5.0)
    await registry.dispatch(job)
    first = next(link for link in registry.links.values() if link.credits.in_flight)
    first.mark_down("first loss")
    await asyncio.sleep(0.01)
    second = next(link for link in registry.links.values() if link.credits.in_flight)
    assert second is not first
    second.mark_down("second loss")
    result = await asyncio.wait_for(job.future, 1.0)
    assert result.status == FAILED and "already retried once" in result.error and result.sequence == 7


async def test_retryable_node_refusal_is_retried_on_another_node(cluster: Any) -> None:
    def refuse(link: FakeLink, f: pose_pb2.Frame) -> pose_pb2.PoseResult:
        return pose_pb2.PoseResult(
            sequence=f.sequence,
            status=FAILED,
            error="at capacity",
            error_code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
        )

    registry = await cluster({"busy": {"answer": refuse}, "free": {"answer": ok}})
    results = await send(registry, [frame(i) for i in range(6)])
    assert [r.status for r in results] == [OK] * 6 and {r.node_id for r in results} == {"free"}


async def _camera(registry: Registry, frames: list[pose_pb2.Frame], **kw: Any) -> list[pose_pb2.PoseResult]:
    published: list[pose_pb2.PoseResult] = []
    session = CameraSession(
        registry,
        CameraStats("cam"),
        queue_size=kw.get("queue", 4),
        policy=kw.get("policy", "drop-oldest"),
        frame_timeout=kw.get("timeout", 5.0),
        publish=published.append,
    )

    async def source() -> AsyncIterator[pose_pb2.Frame]:
        for f in frames:
            yield f
            await asyncio.sleep(kw.get("interval", 0.0))

    results = [r async for r in session.results(source())]
    assert published == results
    return results


async def test_camera_results_leave_in_order_whatever_order_nodes_answer(cluster: Any) -> None:
    registry = await cluster({"slow": {"latency": 0.02, "capacity": 1}, "fast": {"latency": 0.0, "capacity": 1}})
    results = await _camera(registry, [frame(i) for i in range(30)], queue=30, policy="block")
    assert [r.sequence for r in results] == list(range(30))
    assert all(r.status == OK for r in results)
    assert {r.node_id for r in results} == {"slow", "fast"}


async def test_camera_faster_than_the_cluster_drops_oldest_waiting(cluster: Any) -> None:
    registry = await cluster({"one": {"latency": 0.02, "capacity": 1}})
    results = await _camera(registry, [frame(i) for i in range(40)], queue=2)
    assert [r.sequence for r in results] == list(range(40)), "exactly one result per frame, in order"
    statuses = collections.Counter(r.status for r in results)
    assert statuses[DROPPED] > 10 and statuses[OK] >= 2 and statuses[FAILED] == 0
    assert all("replaced by a newer frame" in r.error for r in results if r.status == DROPPED)


async def test_camera_frame_past_its_deadline_fails_and_the_camera_moves_on(cluster: Any) -> None:
    registry = await cluster({"hole": {"answer": lambda link, f: None if f.sequence == 0 else ok(link, f)}})
    results = await _camera(registry, [frame(i) for i in range(3)], timeout=0.1)
    assert [r.status for r in results] == [FAILED, OK, OK]
    assert results[0].error_code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]


async def test_a_node_that_never_answers_is_taken_out_and_its_frames_go_elsewhere(cluster: Any) -> None:
    """Healthy by its own word, but a black hole. Whatever capacity it claims it holds only the slow-start
    credits (it never answers, so it never earns more); its frames go on to the good node once they wait
    longer than straggler_after_s, and it is out when node_answer_timeout_s passes. Every frame OK."""
    for capacity in (8, 100_000):
        registry = await cluster(
            {"hole": {"answer": lambda link, f: None, "capacity": capacity}, "good": {"capacity": 8}},
            node_answer_timeout_s=0.6,
            straggler_after_s=0.1,
            health_interval_s=0.05,
            backoff_initial_s=5.0,
        )
        await registry.start()  # the health and straggler loops
        loop = asyncio.get_running_loop()
        started = loop.time()
        results = await send(registry, [frame(i) for i in range(30)])
        took = loop.time() - started
        hole = registry.links["hole"]
        assert [r.status for r in results] == [OK] * 30 and {r.node_id for r in results} == {"good"}
        assert len(hole.received) <= SLOW_START_CREDITS and registry.stragglers_resent == len(hole.received)
        assert took < 0.5, "stragglers went on after 0.1 s (x 2 at most), not after the node's timeout"
        for _ in range(200):
            if not hole.healthy:
                break
            await asyncio.sleep(0.01)
        assert not hole.healthy and "no answer to a frame for" in hole.last_error and hole.credits.in_flight == 0
        assert loop.time() - started < 0.6 + 0.2, "out once its first frame was overdue"
        await registry.stop()


async def test_answers_to_frames_never_sent_take_the_node_out(cluster: Any) -> None:
    def liar(link: FakeLink, f: pose_pb2.Frame) -> pose_pb2.PoseResult:
        return pose_pb2.PoseResult(status=OK, sequence=f.sequence + 1000)

    registry = await cluster({"liar": {"answer": liar}, "good": {}})
    results = await send(registry, [frame(i) for i in range(10)])
    assert [r.status for r in results] == [OK] * 10 and {r.node_id for r in results} == {"good"}
    assert "answered a frame it was never sent" in registry.links["liar"].last_error


async def test_a_failing_node_backs_off_longer_each_time() -> None:
    from posefleet.coordinator.links import NodeLink

    link = NodeLink(
        "x", "127.0.0.1:1", "static", on_lost=lambda *a: None, on_credit=lambda: None, max_message_bytes=1 << 20
    )
    for expected in (1, 2, 3):
        link.healthy, link.healthy_since = True, asyncio.get_running_loop().time()
        link.mark_down("stream failed")
        assert link.failures == expected, "rejoining does not forgive: each failure doubles the next wait"
    await link.close()


async def test_invalid_node_results_are_not_passed_on_and_take_the_node_out(cluster: Any) -> None:
    def garbage(link: FakeLink, f: pose_pb2.Frame) -> pose_pb2.PoseResult:
        result = pose_pb2.PoseResult(status=OK, sequence=f.sequence, image_width=100, image_height=100)
        pose = result.poses.add(score=1.0)
        for _ in range(17):
            pose.keypoints.add(x=1e6, y=5.0, score=1.0)
        return result

    registry = await cluster({"wild": {"answer": garbage}, "good": {}})
    results = await send(registry, [frame(i) for i in range(8)])
    assert [r.status for r in results] == [OK] * 8 and {r.node_id for r in results} == {"good"}
    assert (
        "invalid result: a keypoint at (1000000, 5), far outside the 100x100 image" in registry.links["wild"].last_error
    )


def test_a_pose_appearance_is_checked_like_its_keypoints() -> None:
    """A node's ``Pose.appearance`` is 4 values of 0-255 or NaN (unseen), or nothing; anything else is an
    invalid result, said so."""
    from posefleet.coordinator.validation import result_problem

    def answer(appearance: list[float]) -> pose_pb2.PoseResult:
        result = pose_pb2.PoseResult(status=OK, image_width=100, image_height=100)
        pose = result.poses.add(score=1.0, appearance=appearance)
        for _ in range(17):
            pose.keypoints.add(x=50.0, y=50.0, score=0.9)
        return result

    for fine in ([], [128.0, 120.5, 0.0, 255.0], [float("nan")] * 4, [130.0, 131.0, float("nan"), float("nan")]):
        assert result_problem(answer(fine)) is None, fine
    for bad in ([128.0] * 3, [128.0] * 5, [300.0, 128, 128, 128], [-1.0, 128, 128, 128], [float("inf")] * 4):
        assert "a pose appearance of" in (result_problem(answer(bad)) or ""), bad


async def test_camera_streams_are_checked_id_and_sequence() -> None:
    """A real coordinator (gRPC) with a loopback node: bad camera ids are refused, bad sequences answered FAILED."""
    import grpc
    from posefleet.coordinator.server import CoordinatorServer
    from posefleet.v1 import coordinator_pb2_grpc

    FakeLink.nodes = {"n0": {"capacity": 4}}
    server = CoordinatorServer(
        CoordinatorSettings(host="127.0.0.1", port=0, discover=False, insecure=True), link_factory=FakeLink
    )
    await server.start()
    server.registry.add("n0", "loopback-n0", "static")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = coordinator_pb2_grpc.CoordinatorStub(channel)

            async def stream(frames: list[pose_pb2.Frame]) -> list[pose_pb2.PoseResult]:
                async def gen() -> AsyncIterator[pose_pb2.Frame]:
                    for f in frames:
                        yield f

                return [r async for r in stub.StreamCamera(gen())]

            for bad in ("", "door\nforged line", "x" * 1_000_000):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stream([frame(0, camera=bad)])
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "camera_id" in (
                    info.value.details() or ""
                )
            await asyncio.sleep(0.2)
            results = await stream([frame(s, camera="door") for s in (0, 1, 1, 5, 3, 6)] + [frame(7, camera="other")])
            assert [r.sequence for r in results] == [0, 1, 1, 5, 3, 6, 7]
            assert [r.status for r in results] == [OK, OK, FAILED, OK, FAILED, OK, FAILED]
            assert "is not above the previous frame's (1)" in results[2].error
            assert "changed within the stream" in results[6].error
    finally:
        await server.stop()


async def test_a_frame_above_every_nodes_limit_fails_alone(cluster: Any) -> None:
    registry = await cluster({"a": {}})
    big = frame(1)
    big.image.data = bytes(17 * 2**20)  # an uncompressed 1440p frame and a half: above the 16 MiB links
    results = await send(registry, [frame(0), big, frame(2)])
    assert [r.status for r in results] == [OK, FAILED, OK]
    assert results[1].error_code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] and "MiB" in results[1].error
    assert registry.links["a"].healthy, "the node's stream never saw it"


async def test_duplicate_node_ids_are_detected(cluster: Any) -> None:
    class Twin(FakeLink):
        async def _info(self) -> pose_pb2.NodeInfo | None:
            info = await super()._info()
            assert info is not None
            info.node_id = "same"
            return info

    FakeLink.nodes = {"a": {}, "b": {}}
    registry = Registry(CoordinatorSettings(discover=False), link_factory=Twin)
    registry.add("a", "fake-a:1", "static")
    await asyncio.sleep(0.05)
    registry.add("b", "fake-b:1", "static")
    await asyncio.sleep(0.05)
    assert registry.links["a"].available and not registry.links["b"].available
    assert "duplicate node id same (already at fake-a:1)" in registry.links["b"].last_error
    await registry.stop()


async def test_idle_cameras_are_forgotten_and_a_cap_holds() -> None:
    import grpc
    from posefleet.coordinator.server import CoordinatorServer
    from posefleet.v1 import coordinator_pb2_grpc

    FakeLink.nodes = {"n0": {"capacity": 4}}
    settings = CoordinatorSettings(
        host="127.0.0.1",
        port=0,
        discover=False,
        max_cameras=2,
        camera_idle_s=0.2,
        camera_queue=8,
        drop_policy="block",
        insecure=True,
    )
    server = CoordinatorServer(settings, link_factory=FakeLink)
    await server.start()
    server.registry.add("n0", "loopback-n0", "static")
    await asyncio.sleep(0.1)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = coordinator_pb2_grpc.CoordinatorStub(channel)

            async def stream(camera: str, count: int) -> list[pose_pb2.PoseResult]:
                async def gen() -> AsyncIterator[pose_pb2.Frame]:
                    for i in range(count):
                        yield frame(i, camera=camera)

                return [r async for r in stub.StreamCamera(gen())]

            assert len(await stream("a", 3)) == 3 and len(await stream("b", 3)) == 3
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stream("c", 1)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            series = server.metrics.registry.get_sample_value
            assert series("posefleet_coordinator_frames_total", {"camera": "a", "result": "ok"}) == 3
            await asyncio.sleep(0.3)
            assert len(await stream("c", 2)) == 2, "idle cameras made room"
            assert set(server.service.cameras) == {"c"}
            assert series("posefleet_coordinator_frames_total", {"camera": "a", "result": "ok"}) is None
    finally:
        await server.stop()


async def test_a_flooding_camera_slows_only_itself(cluster: Any) -> None:
    """Credits go to the waiting cameras in turn: a camera sending as fast as it can (and dropping) does not
    starve a camera at a modest rate sharing the same node."""
    registry = await cluster({"one": {"latency": 0.01, "capacity": 2}})

    async def paced(frames: list[pose_pb2.Frame], interval: float) -> list[pose_pb2.PoseResult]:
        return await _camera(registry, frames, queue=2, interval=interval)

    flood, modest = await asyncio.gather(
        paced([frame(i, camera="flood") for i in range(1500)], 0.001),  # ~1000 frames/s for the whole test
        paced([frame(i, camera="modest") for i in range(60)], 0.025),
    )
    modest_ok = sum(r.status == OK for r in modest) / len(modest)
    flood_ok = sum(r.status == OK for r in flood) / len(flood)
    print(f"modest camera {modest_ok:.1%} OK, flooding camera {flood_ok:.1%} OK")
    assert modest_ok >= 0.95, modest_ok  # at most 3 of 60 on a loaded machine; all of them when quiet
    assert flood_ok < 0.8, "the flooding camera's own frames are the ones dropped"


async def test_an_expensive_camera_leaves_a_sparse_cheap_camera_its_share(cluster: Any) -> None:
    """Hardening, second pass, item 3: a camera of 4096x4096 frames (a whole node's credits each) sending as fast
    as it can beside a camera of cheap frames at 10 FPS, which holds nothing between its frames. The cheap
    camera's share stays reserved while it sent a frame within the last second, so the expensive camera holds at
    most half the cluster (one node: its CPU stays free for the cheap frames); without the reservation it took
    both nodes in every gap between cheap frames."""
    registry = await cluster({"a": {"latency": 0.04, "capacity": 4}, "b": {"latency": 0.04, "capacity": 4}})
    big = pose_pb2.Image(encoding=pose_pb2.IMAGE_ENCODING_RAW, width=4096, height=4096)
    held: list[int] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            held.append(registry.shares.held("huge"))
            await asyncio.sleep(0.005)

    async def cheap() -> list[pose_pb2.PoseResult]:
        try:
            return await _camera(registry, [frame(i, camera="cheap") for i in range(20)], interval=0.1)
        finally:
            done.set()

    huge = [pose_pb2.Frame(camera_id="huge", sequence=i, image=big) for i in range(400)]
    watcher = asyncio.ensure_future(watch())
    cheap_results, huge_results = await asyncio.gather(cheap(), _camera(registry, huge, interval=0.005))
    await watcher
    assert [r.status for r in cheap_results] == [OK] * 20
    assert sum(r.status == OK for r in huge_results) >= 20  # served, one node at a time
    steady = held[len(held) // 10 :]
    print(f"credits the expensive camera held: max {max(steady)} of 8, mean {sum(steady) / len(steady):.1f}")
    assert max(steady) <= 4, "at most half the cluster while the cheap camera is active"
