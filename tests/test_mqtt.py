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
from posefleet.bench.loopback import LoopbackLink, ok
from posefleet.common.tls import TlsFiles
from posefleet.coordinator.server import CoordinatorServer
from posefleet.coordinator.settings import CoordinatorSettings
from posefleet.v1 import coordinator_pb2, coordinator_pb2_grpc, pose_pb2

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Broker:
    """``mosquitto`` on 127.0.0.1:``port`` (anonymous unless ``security`` says otherwise, loopback only); stop and
    start it again at will."""

    def __init__(self, work: Path, security: str = "allow_anonymous true") -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.config = work / "mosquitto.conf"
        # user root: keys made by the test stay readable (mosquitto started as root otherwise becomes "mosquitto")
        self.config.write_text(f"user root\nlistener {self.port} 127.0.0.1\n{security}\npersistence false\n")
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
    """An MQTT client reading every topic into a list; it reconnects when the broker comes back."""

    def __init__(self, port: int, **client: Any) -> None:
        self.port = port
        self.client = client  # aiomqtt.Client options: credentials, TLS
        self.messages: list[tuple[str, bytes, bool]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, **self.client) as client:
                    await client.subscribe("#", qos=1)
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
    from posefleet.bench import merge as bench_merge
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


@pytest.fixture
def closed_broker(tmp_path: Path) -> Iterator[tuple[Broker, Path, dict[str, TlsFiles]]]:
    """Mosquitto with TLS (a ``broker`` certificate of a throwaway fleet CA), client certificates required and
    one password (``posefleet``/``s3cret``); with the fleet's certificates."""
    from posefleet.common.certs import issue, throwaway_fleet

    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is not installed: `make system-deps` installs it")
    pki = tmp_path / "pki"
    members = [("coordinator", "coord", []), ("camera", "cam1", ["cam1"]), ("subscriber", "watcher", [])]
    fleet = throwaway_fleet(pki, members)
    issue(pki, role="broker", name="mqtt", hosts=["127.0.0.1"], days=7)
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "posefleet", "s3cret"], check=True)
    security = (
        f"cafile {pki / 'ca.crt'}\ncertfile {pki / 'mqtt.crt'}\nkeyfile {pki / 'mqtt.key'}\n"
        f"require_certificate true\nallow_anonymous false\npassword_file {passwords}"
    )
    broker = Broker(tmp_path, security)
    broker.start()
    yield broker, pki, fleet
    broker.stop()


async def test_mqtts_with_the_fleet_ca_a_client_certificate_and_a_password(
    closed_broker: tuple[Broker, Path, dict[str, TlsFiles]],
) -> None:
    """A closed broker: TLS with a ``broker`` certificate of the fleet CA, client certificates required, and a
    password. The coordinator proves itself with its fleet certificate and the URL's credentials; a wrong
    password, a coordinator without a certificate or one that does not trust the broker's (the system's CAs) is
    refused, said in the log, and never slows a camera."""
    import logging
    import ssl

    import grpc
    from posefleet.common.tls import aio_channel, role_name

    broker, pki, fleet = closed_broker
    watcher = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    watcher.load_cert_chain(fleet["watcher"].cert, fleet["watcher"].key)
    listener = Listener(broker.port, username="posefleet", password="s3cret", tls_context=watcher)
    LoopbackLink.nodes = {"n0": {"capacity": 8, "answer": one_person}}
    url = f"mqtts://posefleet@127.0.0.1:{broker.port}"
    tls = {"ca": pki / "ca.crt", "cert": fleet["coord"].cert, "key": fleet["coord"].key}
    servers: list[CoordinatorServer] = []

    async def coordinator(**settings: Any) -> CoordinatorServer:
        config = CoordinatorSettings(host="127.0.0.1", port=0, discover=False, mqtt_queue=10, **settings)
        server = CoordinatorServer(config, link_factory=LoopbackLink)
        servers.append(server)
        await server.start()
        server.registry.add("n0", "loopback-n0", "static")
        return server

    async def stream(server: CoordinatorServer, count: int) -> list[pose_pb2.PoseResult]:
        async def gen() -> AsyncIterator[pose_pb2.Frame]:
            for i in range(count):
                yield pose_pb2.Frame(camera_id="cam1", sequence=i)
                await asyncio.sleep(0.01)

        camera = fleet["cam1"] if server.tls is not None else None
        async with aio_channel(f"127.0.0.1:{server.port}", camera, role_name("coordinator")) as channel:
            return [r async for r in coordinator_pb2_grpc.CoordinatorStub(channel).StreamCamera(gen())]

    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("posefleet.coordinator.mqtt").addHandler(handler)
    try:
        good = await coordinator(mqtt=url, mqtt_password="s3cret", **tls)
        await asyncio.sleep(1.0)
        assert good.mqtt is not None and good.mqtt.connected, good.mqtt and good.mqtt.last_error
        results = await stream(good, 30)
        await asyncio.sleep(1.0)
        assert [r.status for r in results] == [pose_pb2.RESULT_STATUS_OK] * 30
        assert [m["sequence"] for m in listener.poses()] == list(range(30)), "every result over mqtts"
        assert listener.topic("posefleet/status")[-1] == b"online"
        await good.stop()
        servers.remove(good)

        wrong = await coordinator(mqtt=url, mqtt_password="guess", mqtt_prefix="wrong", **tls)
        anonymous = await coordinator(
            mqtt=url, mqtt_password="s3cret", mqtt_prefix="anon", mqtt_ca=pki / "ca.crt", insecure=True
        )
        untrusting = await coordinator(mqtt=url, mqtt_password="s3cret", mqtt_prefix="untrusting", insecure=True)
        await asyncio.sleep(1.5)
        assert "certificate verify failed" in untrusting.mqtt.last_error.lower()  # type: ignore[union-attr]
        for refused in (wrong, anonymous, untrusting):
            assert refused.mqtt is not None and not refused.mqtt.connected
            assert [r.status for r in await stream(refused, 20)] == [pose_pb2.RESULT_STATUS_OK] * 20
            assert refused.mqtt.dropped >= 10 and refused.mqtt.published == 0  # 10 wait, the rest dropped
        assert "not authori" in wrong.mqtt.last_error.lower(), wrong.mqtt.last_error  # type: ignore[union-attr]
        for _ in range(100):  # aiomqtt waits 5 s for an answer the broker will not give
            if anonymous.mqtt.last_error:  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.1)
        assert "certificate required" in anonymous.mqtt.last_error, anonymous.mqtt.last_error  # type: ignore[union-attr]
        said = [r for r in records if r.startswith(f"MQTT: cannot connect to 127.0.0.1:{broker.port}")]
        assert len([r for r in said if "not authori" in r.lower()]) == 1, said  # once, not at each of the retries
        assert not [t for t, _, _ in listener.messages if t.startswith(("wrong/", "anon/", "untrusting/"))]

        async with aio_channel(
            f"127.0.0.1:{wrong.port}", TlsFiles.from_pki(pki, "mqtt"), role_name("coordinator")
        ) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as refused_call:
                await coordinator_pb2_grpc.CoordinatorStub(ch).GetStats(coordinator_pb2.GetStatsRequest())
        assert refused_call.value.code() == grpc.StatusCode.PERMISSION_DENIED  # a broker has no gRPC rights
    finally:
        logging.getLogger("posefleet.coordinator.mqtt").removeHandler(handler)
        listener.task.cancel()
        for server in servers:
            await server.stop()


async def test_a_one_person_clip_through_posenet_counts_one_person(
    broker: Broker, models: dict[str, Path], assets: Path
) -> None:
    """A real PoseNet node with its serving defaults: the decoder's faint fragments of the one person are not
    people. MQTT's ``people`` (tracked poses) says 1 in >= 95% of the clip's messages."""
    from nodes import NodeProcess, jpeg
    from posefleet.clients.sdk import PosefleetClient
    from posefleet.node.tools.media import frames

    node = NodeProcess(models["posenet075"])
    config = CoordinatorSettings(
        host="127.0.0.1",
        port=0,
        discover=False,
        insecure=True,
        nodes=[node.address],
        mqtt=f"mqtt://127.0.0.1:{broker.port}",
        camera_queue=16,
    )
    server = CoordinatorServer(config)
    await server.start()
    listener = Listener(broker.port)
    try:
        await asyncio.sleep(1.0)
        clip = [jpeg(image) for image in frames(assets / "video" / "pose_1.mp4")]
        async with PosefleetClient(f"127.0.0.1:{server.port}", tls=None) as client:
            await client.wait_for_nodes(1)

            async def gen() -> AsyncIterator[pose_pb2.Frame]:
                for seq, data in enumerate(clip):
                    frame = pose_pb2.Frame(camera_id="cam1", sequence=seq)
                    frame.image.encoding = pose_pb2.IMAGE_ENCODING_JPEG
                    frame.image.data = data
                    frame.capture_time.FromMilliseconds(int(time.time() * 1000))
                    yield frame
                    await asyncio.sleep(1 / 30)

            results = [r async for r in client.stream_camera(gen())]
        await asyncio.sleep(1.0)
        assert sum(r.status == pose_pb2.RESULT_STATUS_OK for r in results) == len(clip) == 120
        people = [m["people"] for m in listener.poses()]
        assert len(people) == 120
        share = sum(n == 1 for n in people) / len(people)
        poses = sum(len(r.poses) for r in results) / len(results)
        print(f"people = 1 in {share:.0%} of {len(people)} messages; {poses:.2f} poses per frame served")
        assert share >= 0.95, people
    finally:
        listener.task.cancel()
        await server.stop()
        node.stop()


def test_mqtt_secrets_stay_out_of_urls_flags_and_clear_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review finding 7: the MQTT password was read off the wire (mqtt:// beside mutual TLS, silently), seen in
    `ps` (it was in the --mqtt URL) and written into a world-readable settings file. Now a password never
    rides in the URL, comes from a 0600 file or the environment, and clear text to another host is refused
    unless allowed (then warned)."""
    from pydantic import ValidationError

    base: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "discover": False, "insecure": True}
    with pytest.raises(ValidationError, match="a password in the broker URL shows in `ps`"):
        CoordinatorSettings(**base, mqtt="mqtts://posefleet:s3cret@broker.example")
    with pytest.raises(ValidationError, match="in clear text to another host"):
        CoordinatorSettings(**base, mqtt="mqtt://192.0.2.7")
    CoordinatorSettings(**base, mqtt="mqtt://192.0.2.7", mqtt_insecure=True)  # allowed: the publisher warns
    CoordinatorSettings(**base, mqtt="mqtt://127.0.0.1:1883")  # a broker on this machine: nothing crosses a wire
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    with pytest.raises(ValidationError, match="readable by others"):
        CoordinatorSettings(**base, mqtt="mqtts://posefleet@broker.example", mqtt_password_file=secret)
    secret.chmod(0o600)
    settings = CoordinatorSettings(**base, mqtt="mqtts://posefleet@broker.example", mqtt_password_file=secret)
    assert settings.mqtt_password is not None and settings.mqtt_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    monkeypatch.setenv("POSEFLEET_COORDINATOR_MQTT_PASSWORD", "from-env")
    from_env = CoordinatorSettings(**base, mqtt="mqtts://posefleet@broker.example")
    assert from_env.mqtt_password is not None and from_env.mqtt_password.get_secret_value() == "from-env"
    # The command line has no flag that takes a password, and says where it goes when given one in the URL.
    from nodes import run_cli

    refused = run_cli("coordinator", "--insecure", "--mqtt", "mqtt://u:pw@127.0.0.1")
    assert refused.returncode != 0 and "mqtt_password_file" in refused.stderr
