"""A closed fleet: mutual TLS against the fleet CA on every hop, roles and camera ids from the certificates,
and zeroconf as a hint only. Real processes, real gRPC and zeroconf on 127.0.0.1."""

from __future__ import annotations

import asyncio
import datetime
import shutil
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from nodes import NodeProcess, jpeg, run_cli
from posefleet.bench.loopback import LoopbackLink
from posefleet.clients.local_fleet import start_coordinator
from posefleet.clients.sdk import PosefleetClient, encode_frame
from posefleet.common.certs import issue, throwaway_fleet
from posefleet.common.processes import PosefleetProcess
from posefleet.common.tls import TlsFiles, aio_channel, peer_certificate, role_name, sync_channel
from posefleet.coordinator.server import CoordinatorServer
from posefleet.coordinator.settings import CoordinatorSettings
from posefleet.node.server.advertise import Advertiser
from posefleet.node.tools.media import read_image
from posefleet.v1 import coordinator_pb2, node_pb2, node_pb2_grpc, pose_pb2
from posefleet.v1.discovery import NODE_HEALTH_SERVICE, SERVICE_TYPE, NodeAdvert, service_name
from zeroconf import IPVersion, const
from zeroconf._dns import DNSPointer
from zeroconf._protocol.outgoing import DNSOutgoing
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

OK = pose_pb2.RESULT_STATUS_OK


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TlsFiles]:
    """Another fleet's CA: certificates that look right and are not ours."""
    members = [("node", "rogue-self", []), ("camera", "cam-a", ["cam-a"])]
    return throwaway_fleet(tmp_path_factory.mktemp("other") / "pki", members)


@pytest.fixture(scope="module")
def small_jpeg(assets: Path) -> bytes:
    return jpeg(cv2.resize(read_image(assets / "video" / "pose.jpg"), (257, 257)))


@pytest.fixture(scope="module")
def cluster(models: dict[str, Path], fleet: dict[str, TlsFiles]) -> Iterator[tuple[PosefleetProcess, NodeProcess]]:
    """A coordinator browsing zeroconf on 127.0.0.1 and one real node found that way, both with certificates."""
    coord = start_coordinator(None, tls=fleet["coordinator"])
    node = NodeProcess(models["posenet075"], "--input-size", "257x257", name="node-a", tls=fleet["node-a"])
    try:
        yield coord, node
    finally:
        node.stop()
        coord.stop()


async def stream(address: str, tls: TlsFiles, camera: str, payload: bytes, *, frames: int, fps: float) -> list[int]:
    """Statuses of ``frames`` frames sent at ``fps``."""

    async def gen() -> AsyncIterator[pose_pb2.Frame]:
        start = time.monotonic()
        for i in range(frames):
            await asyncio.sleep(max(0.0, start + i / fps - time.monotonic()))
            yield encode_frame(payload, camera_id=camera, sequence=i)

    async with PosefleetClient(address, tls=tls) as client:
        return [r.status async for r in client.stream_camera(gen())]


def fake_advert(node_id: str) -> NodeAdvert:
    return NodeAdvert(node_id, "posenet-mobilenet-v1-075", "posenet", (257, 257), "CPU", 64, "0", "0")


class RogueNode(node_pb2_grpc.PoseNodeServicer):
    """A fake node advertised on 127.0.0.1: SERVING, answering every frame with a made-up pose."""

    def __init__(self, node_id: str, tls: TlsFiles | None, instance: str | None = None) -> None:
        """``instance``: the mDNS instance name, when it differs from the node id its TXT record and GetInfo
        state (an empty id, say)."""
        self.node_id, self.tls, self.instance = node_id, tls, instance
        self.frames = 0
        self.server = grpc.aio.server()
        self.advertiser: Advertiser | None = None
        self._zc: AsyncZeroconf | None = None

    async def start(self, advertise: bool = True) -> int:
        node_pb2_grpc.add_PoseNodeServicer_to_server(self, self.server)
        checker = health.aio.HealthServicer()
        for name in ("", NODE_HEALTH_SERVICE):
            await checker.set(name, health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(checker, self.server)
        if self.tls is None:
            port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            ca, cert, key = self.tls.read()
            creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=False)
            port = self.server.add_secure_port("127.0.0.1:0", creds)
        await self.server.start()
        if advertise and self.instance is not None:
            self._zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
            info = AsyncServiceInfo(
                SERVICE_TYPE,
                f"{self.instance}.{SERVICE_TYPE}",
                addresses=[socket.inet_aton("127.0.0.1")],
                port=port,
                properties=fake_advert(self.node_id).to_txt(),
                server=f"{self.instance}.local.",
            )
            await (await self._zc.async_register_service(info))
        elif advertise:
            self.advertiser = Advertiser(["127.0.0.1"], [], port)
            await self.advertiser.start(fake_advert(self.node_id))
        return int(port)

    async def stop(self) -> None:
        if self.advertiser is not None:
            await self.advertiser.close()
        if self._zc is not None:
            await self._zc.async_close()
        await self.server.stop(None)

    async def GetInfo(self, request: node_pb2.GetInfoRequest, context: grpc.aio.ServicerContext) -> pose_pb2.NodeInfo:
        return pose_pb2.NodeInfo(node_id=self.node_id, model_id="posenet-mobilenet-v1-075", capacity=64)

    async def Estimate(self, request: pose_pb2.Frame, context: grpc.aio.ServicerContext) -> pose_pb2.PoseResult:
        self.frames += 1
        return pose_pb2.PoseResult(status=OK, node_id=self.node_id)

    async def EstimateStream(
        self, request_iterator: AsyncIterator[pose_pb2.Frame], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pose_pb2.PoseResult]:
        async for frame in request_iterator:
            self.frames += 1
            yield pose_pb2.PoseResult(status=OK, sequence=frame.sequence, camera_id="forged", node_id=self.node_id)


async def test_rogue_nodes_get_no_frames_while_every_camera_is_served(
    cluster: tuple[PosefleetProcess, NodeProcess],
    fleet: dict[str, TlsFiles],
    other_ca: dict[str, TlsFiles],
    small_jpeg: bytes,
) -> None:
    """Five rogues advertise _posefleet._tcp on 127.0.0.1 next to a real node: no certificate, another CA's
    certificate, a fleet certificate of role camera, a fleet node certificate for another node id, and a fleet
    node certificate behind an empty node id (which every node certificate would prove: refused by the one
    node-id rule, in the advert and in GetInfo). 0 frames reach them."""
    coord, node = cluster
    address = f"127.0.0.1:{coord.port}"
    rogues = [
        RogueNode("rogue-plain", None),
        RogueNode("rogue-self", other_ca["rogue-self"]),
        RogueNode("cam-a", fleet["cam-a"]),
        RogueNode("node-c", fleet["node-b"]),
        RogueNode("", fleet["node-b"], instance="rogue-empty"),
    ]
    for rogue in rogues:
        await rogue.start()
    try:
        async with PosefleetClient(address, tls=fleet["admin"]) as admin:
            await admin.wait_for_nodes(1, timeout=60)
            statuses = await stream(address, fleet["cam-a"], "cam-a", small_jpeg, frames=150, fps=15.0)
            nodes = {n.info.node_id or n.address: n for n in await admin.list_nodes()}
            from posefleet.clients.status import format_stats

            shown = format_stats(address, await admin.stats())
        # The node itself takes calls from coordinators and admins only.
        async with aio_channel(node.address, fleet["cam-a"], role_name("node", "node-a")) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await node_pb2_grpc.PoseNodeStub(channel).GetInfo(node_pb2.GetInfoRequest(), timeout=10)
    finally:
        for rogue in rogues:
            await rogue.stop()
    print("rogues:", {r.node_id: r.frames for r in rogues}, "camera OK", statuses.count(OK), "of", len(statuses))
    assert [r.frames for r in rogues] == [0, 0, 0, 0, 0]
    assert statuses.count(OK) >= 0.99 * 150
    assert [n for n in nodes.values() if n.healthy] == [nodes["node-a"]], nodes.keys()
    # `posefleet status` names what each rogue claimed, unproved, and the advert it could not use at all.
    assert "node rogue-plain (claimed, not proved)" in shown and "node node-c (claimed, not proved)" in shown, shown
    assert "advert ? ignored: an advert posefleet cannot use: TXT record: node id ''" in shown, shown
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "camera 'cam-a' may not call this: it needs the role coordinator or admin" in (denied.value.details() or "")


async def test_spoofed_goodbyes_leave_a_healthy_node_serving(
    cluster: tuple[PosefleetProcess, NodeProcess], fleet: dict[str, TlsFiles], small_jpeg: bytes
) -> None:
    """mDNS goodbyes for node-a (TTL 0 records, as anyone on the link can send): one, then two a second for
    20 s. Each only triggers a health check over TLS, which node-a passes: the camera keeps >= 99% OK."""
    coord, _node = cluster
    address = f"127.0.0.1:{coord.port}"
    spoofer = AsyncZeroconf(interfaces=["127.0.0.1"])
    sent = 0

    def goodbye() -> None:
        nonlocal sent
        out = DNSOutgoing(const._FLAGS_QR_RESPONSE | const._FLAGS_AA)
        record = DNSPointer(SERVICE_TYPE, const._TYPE_PTR, const._CLASS_IN, 0, service_name("node-a"))
        out.add_answer_at_time(record, 0)
        spoofer.zeroconf.async_send(out)
        sent += 1

    async def flood() -> None:
        await asyncio.sleep(1.0)
        goodbye()
        await asyncio.sleep(2.0)
        for _ in range(40):  # 2 per second for 20 s
            goodbye()
            await asyncio.sleep(0.5)

    try:
        async with PosefleetClient(address, tls=fleet["admin"]) as admin:
            await admin.wait_for_nodes(1, timeout=60)
            statuses, _ = await asyncio.gather(
                stream(address, fleet["cam-a"], "cam-a", small_jpeg, frames=360, fps=15.0), flood()
            )
            healthy = [n.info.node_id for n in await admin.list_nodes() if n.healthy]
    finally:
        await spoofer.async_close()
    print(f"{sent} spoofed goodbyes: camera {statuses.count(OK)} of {len(statuses)} OK")
    assert sent == 41 and healthy == ["node-a"]
    assert statuses.count(OK) >= 0.99 * len(statuses)
    assert "zeroconf goodbye, but it still answers its health check: staying" in coord.output()


def reannounce(spoofer: AsyncZeroconf, node_id: str, port: int) -> None:
    """The unique SRV, TXT and A records a real re-announcement of ``node_id`` at 127.0.0.1:``port`` sends
    (cache-flush bit set), from ``spoofer``."""
    info = AsyncServiceInfo(
        SERVICE_TYPE,
        service_name(node_id),
        addresses=[socket.inet_aton("127.0.0.1")],
        port=port,
        properties=fake_advert(node_id).to_txt(),
        server="rogue.local.",
    )
    out = DNSOutgoing(const._FLAGS_QR_RESPONSE | const._FLAGS_AA)
    for record in (info.dns_pointer(), info.dns_service(), info.dns_text(), *info.dns_addresses()):
        out.add_answer_at_time(record, 0)
    spoofer.zeroconf.async_send(out)


async def test_a_spoofed_announcement_of_a_live_node_at_another_address_changes_nothing(
    cluster: tuple[PosefleetProcess, NodeProcess], fleet: dict[str, TlsFiles], small_jpeg: bytes
) -> None:
    """Records claiming node-a now lives at a rogue's port (the unique SRV, TXT and A records a real
    re-announcement sends, cache-flush bit set): the coordinator keeps node-a where it answers its health
    check, and the rogue gets no frame."""
    coord, node = cluster
    address = f"127.0.0.1:{coord.port}"
    rogue = RogueNode("node-a", None)
    port = await rogue.start(advertise=False)
    spoofer = AsyncZeroconf(interfaces=["127.0.0.1"])

    async def announce() -> None:
        for _ in range(3):
            await asyncio.sleep(1.0)
            reannounce(spoofer, "node-a", port)

    try:
        async with PosefleetClient(address, tls=fleet["admin"]) as admin:
            await admin.wait_for_nodes(1, timeout=60)
            camera = stream(address, fleet["cam-a"], "cam-a", small_jpeg, frames=90, fps=15.0)
            statuses, _ = await asyncio.gather(camera, announce())
            nodes = {n.info.node_id: n.address for n in await admin.list_nodes() if n.healthy}
            from posefleet.clients.status import format_stats

            shown = format_stats(address, await admin.stats())
    finally:
        await spoofer.async_close()
        await rogue.stop()
    assert rogue.frames == 0 and nodes == {"node-a": node.address}
    assert statuses.count(OK) >= 0.99 * len(statuses)
    assert f"ignoring an announcement of node node-a._posefleet._tcp.local. at 127.0.0.1:{port}" in coord.output()
    # `posefleet status` shows it: a second node with a known id (or a spoof) is no longer silent.
    assert f"advert node-a at 127.0.0.1:{port} ignored: node node-a still answers at {node.address}" in shown, shown


async def test_a_node_that_stalls_while_announced_elsewhere_is_back_within_two_seconds(
    cluster: tuple[PosefleetProcess, NodeProcess], fleet: dict[str, TlsFiles], small_jpeg: bytes
) -> None:
    """Hardening, second pass, item 1: node-a stops for 4 s (SIGSTOP: a GC pause, a busy Pi) while an
    attacker re-announces it at a rogue's address. The coordinator tries the rogue (which cannot prove
    node-a's certificate: 0 frames) and keeps probing node-a's own address, where it is back within 2 s of
    recovering (before: the link moved to the rogue and node-a stayed unused)."""
    import signal

    coord, node = cluster
    address = f"127.0.0.1:{coord.port}"
    rogue = RogueNode("node-a", None)
    port = await rogue.start(advertise=False)
    spoofer = AsyncZeroconf(interfaces=["127.0.0.1"])

    def announce() -> None:
        reannounce(spoofer, "node-a", port)

    try:
        async with PosefleetClient(address, tls=fleet["admin"]) as admin:
            await admin.wait_for_nodes(1, timeout=60)
            node.proc.send_signal(signal.SIGSTOP)
            try:
                await asyncio.sleep(1.5)  # its health check fails: out
                for _ in range(3):
                    announce()
                    await asyncio.sleep(0.8)
            finally:
                node.proc.send_signal(signal.SIGCONT)
            resumed = time.monotonic()
            back = None
            while time.monotonic() - resumed < 10:
                nodes = {n.info.node_id: n.address for n in await admin.list_nodes() if n.healthy}
                if nodes.get("node-a") == node.address:
                    back = time.monotonic() - resumed
                    break
                await asyncio.sleep(0.1)
            statuses = await stream(address, fleet["cam-a"], "cam-a", small_jpeg, frames=20, fps=10.0)
    finally:
        await spoofer.async_close()
        await rogue.stop()
    print(f"node-a serving again {back} s after it resumed; the rogue got {rogue.frames} frames")
    assert back is not None and back <= 2.0, back
    assert rogue.frames == 0 and statuses.count(OK) == len(statuses)


async def test_a_refused_client_is_told_which_certificate_and_why(
    tls_coordinator: str, fleet: dict[str, TlsFiles], other_ca: dict[str, TlsFiles], tmp_path: Path
) -> None:
    """Hardening, second pass, item 7: a refused client got only "Socket closed". The SDK's explanation (used
    by `posefleet camera` and `posefleet status`) names the certificate, which side refused it and why; and
    `pki issue` takes names up to the 63 characters a DNS label allows (a 50-character one crashed)."""
    from posefleet.common.certs import issue, peer_of_pem
    from posefleet.common.tls import explain_refusal

    coordinator = role_name("coordinator")
    assert "accepts this certificate" in await explain_refusal(tls_coordinator, fleet["cam-a"], coordinator)
    refused = await explain_refusal(tls_coordinator, other_ca["cam-a"], coordinator)
    assert f"refused the certificate {other_ca['cam-a'].cert}" in refused or "does not prove" in refused, refused
    wrong_name = await explain_refusal(tls_coordinator, fleet["cam-a"], role_name("node", "node-a"))
    assert "does not prove it is node-a.node.posefleet" in wrong_name, wrong_name
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{free.getsockname()[1]}"
    assert "nothing answers at" in await explain_refusal(closed, fleet["cam-a"], coordinator)
    status = run_cli(
        "status", "--coordinator", tls_coordinator, "--ca", other_ca["cam-a"].ca, "--cert", other_ca["cam-a"].cert,
        "--key", other_ca["cam-a"].key,
    )  # fmt: skip
    assert status.returncode == 1 and "coordinator unreachable: UNAVAILABLE" in status.stderr, status.stderr
    assert "does not prove" in status.stderr or "refused the certificate" in status.stderr, status.stderr

    pki = tmp_path / "pki"
    throwaway_fleet(pki, [])
    long_name = "k" * 63
    crt, _ = issue(pki, role="subscriber", name=long_name)
    peer = peer_of_pem(crt.read_bytes())
    assert peer is not None and peer.name == long_name and peer.role == "subscriber"


# -- cameras, subscribers, admins against a coordinator with certificates (in-process, loopback nodes) --------
@pytest.fixture
async def tls_coordinator(fleet: dict[str, TlsFiles]) -> AsyncIterator[str]:
    LoopbackLink.nodes = {"n0": {"capacity": 8}}
    files = fleet["coordinator"]
    settings = CoordinatorSettings(
        host="127.0.0.1", port=0, discover=False, ca=files.ca, cert=files.cert, key=files.key
    )
    server = CoordinatorServer(settings, link_factory=LoopbackLink)
    await server.start()
    server.registry.add("n0", "loopback-n0", "static")
    await asyncio.sleep(0.1)
    yield f"127.0.0.1:{server.port}"
    await server.stop()


async def _one_frame(address: str, tls: TlsFiles | None, camera: str) -> list[pose_pb2.PoseResult]:
    async def gen() -> AsyncIterator[pose_pb2.Frame]:
        yield pose_pb2.Frame(camera_id=camera, sequence=0)

    async with PosefleetClient(address, tls=tls) as client:
        return [r async for r in client.stream_camera(gen())]


async def test_cameras_without_a_valid_certificate_or_for_another_camera_are_refused(
    tls_coordinator: str, fleet: dict[str, TlsFiles], other_ca: dict[str, TlsFiles], tmp_path: Path
) -> None:
    address = tls_coordinator
    assert [r.status for r in await _one_frame(address, fleet["cam-a"], "cam-a")] == [OK]
    # An expired fleet certificate: valid from 3 days ago for 1 day.
    pki = fleet["cam-a"].ca.parent
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=3)
    issue(pki, role="camera", name="cam-old", cameras=["cam-a"], days=1, not_before=past)
    expired = TlsFiles.from_pki(pki, "cam-old")
    # No certificate, an expired one, another CA's: the TLS handshake refuses them before any call.
    for tls in (None, expired, other_ca["cam-a"]):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _one_frame(address, tls, "cam-a")
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, (tls, refused.value)
    # A fleet camera streaming a camera id its certificate does not list, or asking for the fleet's nodes.
    with pytest.raises(grpc.aio.AioRpcError) as other_camera:
        await _one_frame(address, fleet["cam-a"], "cam-b")
    assert other_camera.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "camera 'cam-a' may use only the cameras its certificate lists (cam-a), not cam-b" in str(
        other_camera.value.details()
    )
    async with PosefleetClient(address, tls=fleet["cam-a"]) as camera:
        with pytest.raises(grpc.aio.AioRpcError) as stats:
            await camera.stats()
        with pytest.raises(grpc.aio.AioRpcError) as estimate:
            await camera.estimate(pose_pb2.Frame(camera_id="cam-b"))
        models = await camera.list_nodes()  # a camera learns the models' input sizes, nothing else
    assert stats.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "needs the role subscriber or admin" in str(stats.value.details())
    assert [(n.healthy, n.address, n.info.node_id, n.info.model_family) for n in models] == [(True, "", "", "posenet")]
    assert estimate.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_subscriber_limited_to_camera_a_never_receives_camera_b(
    tls_coordinator: str, fleet: dict[str, TlsFiles]
) -> None:
    address = tls_coordinator
    async with PosefleetClient(address, tls=fleet["sub-a"]) as sub:
        got: list[coordinator_pb2.MultiViewResult] = []

        async def read() -> None:
            async for message in sub.subscribe(window_ms=20):
                got.append(message)

        reader = asyncio.create_task(read())
        await asyncio.sleep(0.2)
        for _ in range(20):
            for camera in ("cam-a", "cam-b"):
                assert [r.status for r in await _one_frame(address, fleet[camera], camera)] == [OK]
        await asyncio.sleep(0.3)
        reader.cancel()
        stats = await sub.stats()
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            async for _ in sub.subscribe(["cam-b"]):
                pass
    seen = {v.camera_id for m in got for v in m.views}
    assert seen == {"cam-a"} and sum(len(m.views) for m in got) == 20
    assert [c.camera_id for c in stats.cameras] == ["cam-a"], "its stats show only its cameras"
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "subscriber 'sub-a' may use only the cameras its certificate lists (cam-a), not cam-b" in str(
        denied.value.details()
    )


def test_servers_need_their_certificate_unless_insecure(models: dict[str, Path], fleet: dict[str, TlsFiles]) -> None:
    """Secure by default: no certificate options is an error naming the choices; a node certificate must
    be for the node's own id."""
    coordinator = run_cli("coordinator", "--host", "127.0.0.1", "--port", "0", "--no-discovery", timeout=60)
    assert coordinator.returncode == 2, coordinator.stderr
    assert "posefleet coordinator needs its fleet certificate: --pki DIR --name NAME, or --ca, --cert and --key" in (
        coordinator.stderr
    )
    files = fleet["node-a"]
    wrong = run_cli(
        "node", "--model", models["posenet075"], "--host", "127.0.0.1", "--port", "0", "--no-advertise",
        "--name", "node-z", "--ca", files.ca, "--cert", files.cert, "--key", files.key, timeout=120,
    )  # fmt: skip
    assert wrong.returncode == 2 and "not a node certificate for node id 'node-z'" in wrong.stderr, wrong.stderr
    insecure = run_cli("status", "--node", "127.0.0.1:1", "--insecure", timeout=60)
    assert "WARNING: --insecure" in insecure.stderr


def _presented_certificate(port: int, client: TlsFiles) -> bytes:
    """The DER certificate a TLS server on 127.0.0.1 presents to a fleet client."""
    context = ssl.create_default_context(cafile=str(client.ca))
    context.check_hostname = False
    context.load_cert_chain(str(client.cert), str(client.key))
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


async def test_a_rotated_server_certificate_is_served_without_a_restart(
    fleet: dict[str, TlsFiles], tmp_path: Path
) -> None:
    """The coordinator reads its certificate files again when they change: a new certificate is presented to
    the next connection (gRPC and the dashboard alike), while a stream opened before keeps going."""
    pki = fleet["coordinator"].ca.parent
    own = tmp_path / "own"
    own.mkdir()
    files = TlsFiles(own / "ca.crt", own / "c.crt", own / "c.key")
    for src, dest in ((fleet["coordinator"].ca, files.ca), (fleet["coordinator"].cert, files.cert)):
        shutil.copy(src, dest)
    shutil.copy(fleet["coordinator"].key, files.key)
    LoopbackLink.nodes = {"n0": {"capacity": 8}}
    settings = CoordinatorSettings(
        host="127.0.0.1", port=0, discover=False, ca=files.ca, cert=files.cert, key=files.key, http_port=0
    )
    server = CoordinatorServer(settings, link_factory=LoopbackLink)
    await server.start()
    server.registry.add("n0", "loopback-n0", "static")
    try:
        before = _presented_certificate(server.port, fleet["admin"])
        dashboard = f"127.0.0.1:{server.http_port}"
        assert await peer_certificate(dashboard, fleet["admin"], "coordinator.posefleet") == before  # the same
        async with PosefleetClient(f"127.0.0.1:{server.port}", tls=fleet["cam-a"]) as cam:
            sent = asyncio.Queue[pose_pb2.Frame | None]()

            async def frames() -> AsyncIterator[pose_pb2.Frame]:
                while (frame := await sent.get()) is not None:
                    yield frame

            call = cam.stream_camera(frames())
            await sent.put(pose_pb2.Frame(camera_id="cam-a", sequence=0))
            first = await anext(aiter(call))
            issue(pki, role="coordinator", name="coordinator-next", days=30)  # the rotation writes new files
            await asyncio.sleep(0.05)
            for name in ("crt", "key"):
                shutil.copy(pki / f"coordinator-next.{name}", own / f"c.{name}")
            after = _presented_certificate(server.port, fleet["admin"])
            await sent.put(pose_pb2.Frame(camera_id="cam-a", sequence=1))
            second = await anext(aiter(call))
            await sent.put(None)
        assert [first.status, second.status] == [OK, OK], "the open stream went on"
        assert before != after and after == ssl.PEM_cert_to_DER_cert((pki / "coordinator-next.crt").read_text())
        for _ in range(60):  # the dashboard looks at its files every 2 s
            if await peer_certificate(dashboard, fleet["admin"], "coordinator.posefleet") == after:
                break
            await asyncio.sleep(0.1)
        assert await peer_certificate(dashboard, fleet["admin"], "coordinator.posefleet") == after, "rotated"
        assert [r.status for r in await _one_frame(f"127.0.0.1:{server.port}", fleet["cam-a"], "cam-a")] == [OK]
    finally:
        await server.stop()


def test_pki_refuses_fleet_names_and_wildcards_as_hosts_and_servers_refuse_two_identities(tmp_path: Path) -> None:
    """``--host ops.admin.posefleet`` made a camera an admin, ``--host '*.node.posefleet'`` a wildcard node:
    both refused at issue; a certificate whose names claim two roles or two holders (whoever issued it) has no
    fleet identity, so servers refuse it."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from posefleet.common.certs import PkiError, init_ca, peer_of_pem

    pki = tmp_path / "pki"
    init_ca(pki)
    for host, message in [
        ("ops.admin.posefleet", "only --role/--name set them"),
        ("posefleet", "only --role/--name set them"),
        ("*.node.posefleet", "wildcard"),
        ("*.example.org", "wildcard"),
        ("bad_name!", "not a DNS name"),
    ]:
        with pytest.raises(PkiError, match=message):
            issue(pki, role="camera", name="door", cameras=["door"], hosts=[host])
        done = run_cli("pki", "issue", "--dir", pki, "--role", "camera", "--name", "door", "--host", host)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    crt, _ = issue(pki, role="node", name="pi-1", hosts=["pi-1.lan", "192.0.2.7"])
    assert peer_of_pem(crt.read_bytes()) is not None
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())

    def forged(*names: str) -> bytes:
        now = dt.datetime.now(dt.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    assert peer_of_pem(forged("door.camera.posefleet", "camera.posefleet")) is not None
    for names in [
        ("door.camera.posefleet", "camera.posefleet", "ops.admin.posefleet"),  # two roles
        ("a.node.posefleet", "b.node.posefleet", "node.posefleet"),  # two holders
        ("door.camera.posefleet", "admin.posefleet"),  # a holder of one role, the bare name of another
        ("*.node.posefleet", "node.posefleet"),  # a wildcard
    ]:
        assert peer_of_pem(forged(*names)) is None, names


def test_pki_keys_are_private_from_the_start_and_never_written_through_a_symlink(tmp_path: Path) -> None:
    """A leftover world-readable temporary file or a symlink at the key's path used to receive ca.key."""
    import os
    import stat

    from posefleet.common.certs import PkiError, init_ca

    pki = tmp_path / "pki"
    pki.mkdir()
    leftover = pki / ".ca.key.tmp"
    leftover.write_text("")
    leftover.chmod(0o644)
    init_ca(pki)
    assert stat.S_IMODE(os.stat(pki / "ca.key").st_mode) == 0o600
    assert leftover.read_text() == "", "the old temporary name is not reused"
    other = tmp_path / "other"
    other.mkdir()
    (other / "ca.key").symlink_to(tmp_path / "stolen.key")
    with pytest.raises(PkiError, match="symlink"):
        init_ca(other)
    assert not (tmp_path / "stolen.key").exists()
    issue(pki, role="camera", name="door", cameras=["door"])
    assert stat.S_IMODE(os.stat(pki / "door.key").st_mode) == 0o600


async def test_a_revoked_node_certificate_gets_no_more_frames(models: dict[str, Path], tmp_path: Path) -> None:
    """Two real nodes serve a camera; `posefleet pki revoke NODE` and, with the list copied beside each
    coordinator's ca.crt (the same folder here), that node is out at the coordinator's next health tick: the
    camera goes on through the other node, and the revoked one gets 0 frames from then on (the coordinator
    checks the certificate a node presents when it joins, and the list whenever it changes)."""
    fleet = throwaway_fleet(
        tmp_path / "pki",
        [("coordinator", "coordinator", []), ("admin", "ops", []), ("camera", "cam-a", ["cam-a"]),
         ("node", "keep", []), ("node", "stolen", [])],
    )  # fmt: skip
    coord = start_coordinator(None, tls=fleet["coordinator"])
    nodes = {
        name: NodeProcess(models["posenet050"], "--input-size", "257x257", name=name, tls=fleet[name])
        for name in ("keep", "stolen")
    }
    address = f"127.0.0.1:{coord.port}"
    payload = jpeg(np.zeros((257, 257, 3), np.uint8))
    try:
        async with PosefleetClient(address, tls=fleet["ops"]) as admin:
            await admin.wait_for_nodes(2, timeout=60)
            await stream(address, fleet["cam-a"], "cam-a", payload, frames=20, fps=20.0)
            before = {n.info.node_id: n.frames_done for n in await admin.list_nodes()}
            assert before["stolen"] > 0, before
            done = run_cli("pki", "revoke", "--dir", tmp_path / "pki", "stolen")
            assert done.returncode == 0, done.stderr
            await asyncio.sleep(1.5)  # three health ticks
            listed = {n.info.node_id: n for n in await admin.list_nodes()}
            assert not listed["stolen"].healthy and "revoked" in listed["stolen"].last_error, listed["stolen"]
            statuses = await stream(address, fleet["cam-a"], "cam-a", payload, frames=40, fps=20.0)
            after = {n.info.node_id: n.frames_done for n in await admin.list_nodes()}
        assert statuses.count(OK) == 40
        assert after["stolen"] == listed["stolen"].frames_done, "no frame after the revocation"
        assert after["keep"] >= before["keep"] + 40
    finally:
        for node in nodes.values():
            node.stop()
        coord.stop()


async def test_health_reflection_and_metrics_answer_only_the_roles_that_need_them(
    cluster: tuple[PosefleetProcess, NodeProcess],
    fleet: dict[str, TlsFiles],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Review finding 10: a camera certificate could read every server's health, reflection and metrics. A
    caller refused at the metrics' TLS handshake leaves no traceback on the server's stderr."""
    import urllib.error
    import urllib.request

    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    from posefleet.common.metrics_http import serve_metrics
    from prometheus_client import CollectorRegistry, Counter

    coord, node = cluster

    async def health(address: str, tls: TlsFiles, server: str) -> grpc.StatusCode | int:
        async with aio_channel(address, tls, role_name(server)) as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return int(reply.status)

    async def services(address: str, tls: TlsFiles, server: str) -> grpc.StatusCode | list[str]:
        """The blocking stub, in a thread: grpc.aio's writer of a stream's requests may still be sending when the
        server refuses the call, and then reports its own INTERNAL instead of the server's status (a client-side
        race, about one run in three here); the blocking client reports the server's."""

        def ask() -> grpc.StatusCode | list[str]:
            with sync_channel(address, tls, role_name(server)) as channel:
                stub = reflection_pb2_grpc.ServerReflectionStub(channel)
                try:
                    for reply in stub.ServerReflectionInfo(
                        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
                    ):
                        return [s.name for s in reply.list_services_response.service]
                except grpc.RpcError as exc:
                    return exc.code()
            return []

        return await asyncio.to_thread(ask)

    serving, denied = int(health_pb2.HealthCheckResponse.SERVING), grpc.StatusCode.PERMISSION_DENIED
    coordinator = f"127.0.0.1:{coord.port}"
    assert await health(coordinator, fleet["cam-a"], "coordinator") == serving  # a camera waits for its coordinator
    assert await health(coordinator, fleet["node-b"], "coordinator") == denied
    assert await health(node.address, fleet["coordinator"], "node") == serving  # the coordinator's health checks
    assert await health(node.address, fleet["cam-a"], "node") == denied  # cameras never talk to nodes
    assert await health(node.address, fleet["sub-a"], "node") == denied
    assert await services(coordinator, fleet["cam-a"], "coordinator") == denied
    assert await services(node.address, fleet["coordinator"], "node") == denied
    assert "posefleet.v1.Coordinator" in await services(coordinator, fleet["admin"], "coordinator")

    registry = CollectorRegistry()
    Counter("posefleet_test_frames", "frames", registry=registry).inc()
    port = serve_metrics(registry, "127.0.0.1", 0, fleet["coordinator"], plain_on_loopback=False)

    def read(who: TlsFiles | None) -> tuple[int, str]:
        context = ssl.create_default_context(cafile=str(fleet["admin"].ca))
        context.check_hostname = False
        if who is not None:
            context.load_cert_chain(str(who.cert), str(who.key))
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics", context=context, timeout=10) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    status, body = await asyncio.to_thread(read, fleet["admin"])
    assert status == 200 and "posefleet_test_frames_total 1.0" in body
    status, body = await asyncio.to_thread(read, fleet["cam-a"])
    assert status == 403 and "needs the role admin" in body
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        await asyncio.to_thread(read, None)  # no certificate: the handshake refuses it
    await asyncio.sleep(0.5)  # the refused request's thread ends
    assert "Exception occurred" not in capfd.readouterr().err  # a refused caller prints no traceback


async def test_one_certificate_holds_a_bounded_share_of_streams_and_subscriptions(
    tls_coordinator: str, fleet: dict[str, TlsFiles]
) -> None:
    """Review finding 6: one camera certificate opened unlimited streams (10 streams: +762 MB). Each identity
    holds at most max_streams_per_peer streams (4) and max_subscriptions_per_peer subscriptions (8); the next
    is answered RESOURCE_EXHAUSTED, a closed one frees its slot, and another identity is not affected."""
    from posefleet.v1 import coordinator_pb2_grpc

    release = asyncio.Event()

    async def frames(camera: str) -> AsyncIterator[pose_pb2.Frame]:
        yield pose_pb2.Frame(camera_id=camera, sequence=0)
        await release.wait()

    async with (
        aio_channel(tls_coordinator, fleet["cam-a"], role_name("coordinator")) as cam_a,
        aio_channel(tls_coordinator, fleet["cam-b"], role_name("coordinator")) as cam_b,
        aio_channel(tls_coordinator, fleet["sub-a"], role_name("coordinator")) as sub_a,
    ):
        stub = coordinator_pb2_grpc.CoordinatorStub(cam_a)
        calls = [stub.StreamCamera(frames("cam-a")) for _ in range(4)]
        assert [(await c.read()).status for c in calls] == [OK] * 4
        fifth = stub.StreamCamera(frames("cam-a"))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await fifth.read()
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "holds 4 camera streams already" in str(refused.value.details())
        other = coordinator_pb2_grpc.CoordinatorStub(cam_b).StreamCamera(frames("cam-b"))
        assert (await other.read()).status == OK  # another camera's share is its own
        calls[0].cancel()
        await asyncio.sleep(0.2)
        again = stub.StreamCamera(frames("cam-a"))
        assert (await again.read()).status == OK  # the closed stream's slot is free again

        subscriber = coordinator_pb2_grpc.CoordinatorStub(sub_a)
        subscriptions = [subscriber.Subscribe(coordinator_pb2.SubscribeRequest()) for _ in range(8)]
        await asyncio.sleep(0.5)
        ninth = subscriber.Subscribe(coordinator_pb2.SubscribeRequest())
        with pytest.raises(grpc.aio.AioRpcError) as too_many:
            await ninth.read()
        assert too_many.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for call in [*calls, other, again, *subscriptions]:
            call.cancel()
        release.set()
