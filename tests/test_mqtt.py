"""Results to MQTT against a real broker: Mosquitto from the distribution, started on 127.0.0.1 by the test."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from posefleet.coordinator.loopback import LoopbackLink, ok
from posefleet.coordinator.server import CoordinatorServer
from posefleet.coordinator.settings import CoordinatorSettings
from posefleet.v1 import coordinator_pb2_grpc, pose_pb2

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Broker:
    """``mosquitto`` on 127.0.0.1:``port`` (anonymous, loopback only); stop and start it again at will."""

    def __init__(self, work: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.config = work / "mosquitto.conf"
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is not installed: `make system-deps` installs it")
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


def one_person(link: LoopbackLink, frame: pose_pb2.Frame) -> pose_pb2.PoseResult:
    result = ok(link, frame)
    result.image_width, result.image_height = 640, 480
    pose = result.poses.add(score=0.9)
    for k in range(17):
        pose.keypoints.add(x=300.0 + k, y=100.0 + 10 * k, score=0.8)
    return result


async def publishing_coordinator(broker: Broker, **settings: Any) -> CoordinatorServer:
    """An in-process coordinator (--insecure, loopback node n0 of ``LoopbackLink.nodes``) publishing to ``broker``."""
    config = CoordinatorSettings(
        host="127.0.0.1", port=0, discover=False, insecure=True, mqtt=f"mqtt://127.0.0.1:{broker.port}", **settings
    )
    server = CoordinatorServer(config, link_factory=LoopbackLink)
    await server.start()
    server.registry.add("n0", "loopback-n0", "static")
    return server


class Listener:
    """An MQTT client reading ``posefleet/#`` and ``homeassistant/#`` into a list; it reconnects when the
    broker comes back."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[tuple[str, bytes, bool]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port) as client:
                    await client.subscribe("posefleet/#", qos=1)
                    await client.subscribe("homeassistant/#", qos=1)
                    async for message in client.messages:
                        self.messages.append((str(message.topic), bytes(message.payload), message.retain))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)

    def poses(self) -> list[dict[str, object]]:
        return [json.loads(p) for t, p, _ in self.messages if t == "posefleet/cam1/poses"]

    def topic(self, topic: str) -> list[bytes]:
        return [p for t, p, _ in self.messages if t == topic]


async def test_results_go_to_mqtt_and_a_lost_broker_never_slows_the_cameras(broker: Broker) -> None:
    LoopbackLink.nodes = {"n0": {"capacity": 8, "answer": one_person}}
    server = await publishing_coordinator(broker, mqtt_queue=20, mqtt_stats_interval_s=0.5, mqtt_discovery=True)
    listener = Listener(broker.port)
    import grpc

    try:
        await asyncio.sleep(1.0)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = coordinator_pb2_grpc.CoordinatorStub(channel)

            async def stream(first: int, count: int) -> tuple[list[pose_pb2.PoseResult], float]:
                async def gen() -> AsyncIterator[pose_pb2.Frame]:
                    for i in range(first, first + count):
                        yield pose_pb2.Frame(camera_id="cam1", sequence=i)
                        await asyncio.sleep(0.01)

                start = time.monotonic()
                results = [r async for r in stub.StreamCamera(gen())]
                return results, time.monotonic() - start

            results, _ = await stream(0, 50)
            await asyncio.sleep(1.0)
            got = listener.poses()
            assert [m["sequence"] for m in got] == list(range(50)), "one message per frame result"
            first = got[0]
            assert first["camera"] == "cam1" and first["status"] == "ok" and first["people"] == 1
            assert first["capture_time_ms"] == results[0].capture_time.ToMilliseconds()
            assert first["poses"][0]["track_id"] == results[0].poses[0].track_id > 0  # type: ignore[index]
            assert listener.topic("posefleet/status")[-1] == b"online"
            assert listener.topic("posefleet/stats"), "stats every 0.5 s"
            assert b'"value_template": "{{ value_json.people }}"' in listener.topic(
                "homeassistant/sensor/posefleet_cam1/people/config"
            )[0]  # fmt: skip

            broker.stop()  # the broker goes away: cameras go on, messages wait (20 at most), the rest dropped
            await asyncio.sleep(0.5)
            down, down_s = await stream(50, 60)
            assert [r.status for r in down] == [pose_pb2.RESULT_STATUS_OK] * 60 and down_s < 3.0
            assert server.mqtt is not None and server.mqtt.dropped >= 30
            dropped = server.metrics.registry.get_sample_value("posefleet_coordinator_mqtt_dropped_total")
            assert dropped == server.mqtt.dropped

            broker.start()  # back: the publisher reconnects by itself
            for _ in range(100):
                if server.mqtt.connected:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
            await stream(110, 20)
            await asyncio.sleep(1.5)
            after = [m["sequence"] for m in listener.poses() if int(m["sequence"]) >= 110]  # type: ignore[call-overload]
            assert after == list(range(110, 130)), "publishing resumed"
        print(
            f"MQTT: {len(listener.poses())} pose messages received, {server.mqtt.dropped} dropped while the broker "
            f"was down, camera {down_s:.2f} s for 60 frames meanwhile"
        )
    finally:
        listener.task.cancel()
        await server.stop()


async def test_a_scene_s_3d_people_go_to_mqtt(broker: Broker, assets: Path) -> None:
    """Each fused window of a calibrated scene on ``posefleet/<scene>/persons``; a clean stop says offline."""
    import grpc
    from posefleet.coordinator import bench_merge
    from posefleet.coordinator.settings import SceneSettings

    synthetic = bench_merge.SyntheticScene()
    LoopbackLink.nodes = {"n0": {"capacity": 8, "answer": bench_merge._answer(synthetic)}}
    calibration = assets / "multiview" / "pose2sim" / "calibration" / "Calib_qualisys.toml"
    scenes = {"lab": SceneSettings(calibration=calibration, cameras=bench_merge.CAMS)}
    server = await publishing_coordinator(broker, camera_queue=16, scenes=scenes)
    listener = Listener(broker.port)
    try:
        await asyncio.sleep(1.0)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            await bench_merge._streams(coordinator_pb2_grpc.CoordinatorStub(channel), 1.0, [0])
        await asyncio.sleep(1.0)
    finally:
        await server.stop()
        await asyncio.sleep(0.5)
        listener.task.cancel()
    windows = [json.loads(p) for p in listener.topic("posefleet/lab/persons")]
    assert len(windows) >= 5 and all(w["scene"] == "lab" for w in windows)
    assert sum(len(w["persons"]) == 3 for w in windows) >= 0.8 * len(windows)
    assert listener.topic("posefleet/status")[-1] == b"offline", "a clean stop says offline"
