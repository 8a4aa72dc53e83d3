"""The ``posefleet.v1.Coordinator`` servicer."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from posefleet.common.certs import ANYONE, Guard, Peer, require
from posefleet.common.grpc_server import Malformed, status_code
from posefleet.common.slots import Slots, SlotsFull
from posefleet.coordinator.cameras import CameraSession, CameraStats
from posefleet.coordinator.consumers import FanOut
from posefleet.coordinator.hub import Hub
from posefleet.coordinator.jobs import Job
from posefleet.coordinator.links import NodeLink
from posefleet.coordinator.live_scene import LiveScene
from posefleet.coordinator.merging import Merger
from posefleet.coordinator.metrics import CoordinatorMetrics
from posefleet.coordinator.registry import Registry
from posefleet.coordinator.scene_calibration import CalibrationRefused, calibrate_scene, request_problem
from posefleet.coordinator.settings import CoordinatorSettings
from posefleet.coordinator.subscribers import Backlog, relay
from posefleet.coordinator.validation import MIN_WINDOW_MS, camera_id_problem
from posefleet.coordinator.view import FleetView
from posefleet.v1 import coordinator_pb2, coordinator_pb2_grpc, pose_pb2


def _may(peer: Peer, cameras: set[str] | frozenset[str]) -> bool:
    """Whether ``peer`` may stream or read all of ``cameras`` (an admin: any camera)."""
    return peer.role == "admin" or cameras <= peer.cameras


def _holder(peer: Peer, context: grpc.aio.ServicerContext) -> str:
    """Whose share a call uses: the certificate's identity (on an --insecure server, each connection)."""
    return f"{peer} ({context.peer()})" if peer is ANYONE else str(peer)


def _refusal(peer: Peer, cameras: set[str] | frozenset[str]) -> str:
    listed = ", ".join(sorted(peer.cameras)) or "none"
    refused = ", ".join(sorted(cameras - peer.cameras))
    return f"{peer} may use only the cameras its certificate lists ({listed}), not {refused}"


class CoordinatorService(coordinator_pb2_grpc.CoordinatorServicer):
    """The coordinator's RPCs. With mutual TLS (``secure``) each checks the caller's fleet certificate: cameras
    stream (and Estimate) only the camera ids their certificate lists, subscribers read only theirs,
    ListNodes and GetStats need a subscriber or admin; admins may do everything."""

    def __init__(
        self, settings: CoordinatorSettings, registry: Registry, metrics: CoordinatorMetrics, *, guard: Guard
    ) -> None:
        self.guard = guard
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.hub = Hub()
        self.merger = Merger(settings.tracking, settings.scenes)
        self.cameras: dict[str, CameraStats] = {}
        self.streams = Slots("camera streams", settings.max_streams_per_peer, settings.max_streams)
        self.subscriptions = Slots("subscriptions", settings.max_subscriptions_per_peer, settings.max_subscriptions)
        self.view = FleetView(self.cameras, registry, self.merger)
        #: Who sees every answered frame, every frame sent on and every camera forgotten: the merge first (the
        #: others see tracked poses); the server adds the dashboard and MQTT.
        self.results = FanOut([self.merger, metrics, self.hub, self.view])
        self.calibrating: str | None = None  # the scene a CalibrateScene call is recording (one at a time)

    async def StreamCamera(
        self, request_iterator: AsyncIterator[pose_pb2.Frame], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pose_pb2.PoseResult]:
        # The first frame is read before the caller is judged: a refusal sent while the camera's first write is
        # still in flight reaches it as grpc-aio's "Internal error from Core" instead of the refusal's own status.
        first = await anext(aiter(request_iterator), None)
        peer = await require(context, ("camera", "admin"), self.guard)
        if first is None:
            return
        if isinstance(first, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(first))
        if (problem := camera_id_problem(first.camera_id)) is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        camera = first.camera_id
        if not _may(peer, {camera}):  # the stream's camera id never changes (checked per frame)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, _refusal(peer, {camera}))
        if camera not in self.cameras:
            self.evict_idle()
            if len(self.cameras) >= self.settings.max_cameras:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"this coordinator serves at most {self.settings.max_cameras} cameras at once",
                )
        holder = _holder(peer, context)
        try:
            self.streams.take(holder, unlimited=peer.role == "admin")
        except SlotsFull as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        stats = self.cameras.setdefault(camera, CameraStats(camera))
        stats.streams += 1

        async def frames() -> AsyncIterator[pose_pb2.Frame]:
            yield first
            async for frame in request_iterator:
                yield frame

        session = CameraSession(
            self.registry,
            stats,
            queue_size=self.settings.camera_queue,
            policy=self.settings.drop_policy,
            frame_timeout=self.settings.frame_timeout_s,
            publish=self.results.answered,
            watch=self.results.sent if self.results.watching else None,
        )
        try:
            async for result in session.results(frames()):
                yield result
        finally:
            stats.streams -= 1
            stats.last_seen = time.monotonic()
            self.streams.give(holder)

    def evict_idle(self) -> int:
        """Forget cameras silent for ``camera_idle_s`` (stats, tracks, hub entry, Prometheus series)."""
        now = time.monotonic()
        gone = [c for c, s in self.cameras.items() if not s.streams and now - s.last_seen > self.settings.camera_idle_s]
        for camera in gone:
            del self.cameras[camera]
            self.results.forget(camera)
        return len(gone)

    async def Estimate(self, request: pose_pb2.Frame, context: grpc.aio.ServicerContext) -> pose_pb2.PoseResult:
        peer = await require(context, ("camera", "admin"), self.guard)
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(request))
        if not _may(peer, {request.camera_id}):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, _refusal(peer, {request.camera_id}))
        job = Job.start(request, self.settings.frame_timeout_s)
        await self.registry.dispatch(job)
        result = await job.result()
        self.results.answered(result)
        if result.status == pose_pb2.RESULT_STATUS_FAILED:
            await context.abort(status_code(result.error_code), result.error)
        return result

    @contextlib.asynccontextmanager
    async def _subscription(self, peer: Peer, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        """One of the peer's subscription slots for the length of the call, or RESOURCE_EXHAUSTED."""
        holder = _holder(peer, context)
        try:
            self.subscriptions.take(holder, unlimited=peer.role == "admin")
        except SlotsFull as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        try:
            yield
        finally:
            self.subscriptions.give(holder)

    def _backlog(self) -> Backlog[Any]:
        return Backlog(self.settings.subscriber_backlog, self.settings.subscriber_max_lag_s)

    # Subscribe and SubscribeScene write with context.write (not yield) so that relay can end a call whose
    # write waits on flow control: hence the override of the generated stubs' iterator return type.
    async def Subscribe(  # type: ignore[override]
        self, request: coordinator_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> None:
        peer = await require(context, ("subscriber", "admin"), self.guard)
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(request))
        if peer.role != "admin":  # a subscriber reads its cameras: all of them unless it names some of them
            wanted = set(request.camera_ids) or set(peer.cameras)
            if not wanted or not _may(peer, wanted):
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, _refusal(peer, wanted or {"any camera"}))
            request.camera_ids[:] = sorted(wanted)
        if not request.window_ms:
            request.window_ms = self.settings.subscribe_window_ms
        request.window_ms = max(request.window_ms, MIN_WINDOW_MS)
        backlog = self._backlog()
        async with self._subscription(peer, context):
            await relay(self.hub.subscribe(request, backlog), backlog, context)

    async def _scene(self, name: str, context: grpc.aio.ServicerContext) -> LiveScene:
        """The named scene, or the call ends with NOT_FOUND naming the scenes there are."""
        scene = self.merger.scenes.get(name)
        if scene is None:
            known = ", ".join(sorted(self.merger.scenes)) or "none configured"
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no scene {name!r} (scenes: {known})")
            raise AssertionError  # abort raises
        return scene

    async def SubscribeScene(  # type: ignore[override]
        self, request: coordinator_pb2.SubscribeSceneRequest, context: grpc.aio.ServicerContext
    ) -> None:
        peer = await require(context, ("subscriber", "admin"), self.guard)
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(request))
        scene = await self._scene(request.scene, context)
        if not _may(peer, set(scene.calibrated)):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, _refusal(peer, set(scene.calibrated)))
        backlog = self._backlog()
        async with self._subscription(peer, context):
            await relay(scene.subscribe(backlog), backlog, context)

    def _node_status(self, link: NodeLink) -> coordinator_pb2.NodeStatus:
        return coordinator_pb2.NodeStatus(
            info=link.info,
            address=link.address,
            healthy=link.available,
            in_flight=link.credits.in_flight,
            frames_done=link.frames_done,
            frames_failed=link.frames_failed,
            source=link.source,
            last_error=link.last_error,
            claimed_id=link.trust.claimed_id or "",
        )

    def _ignored(self) -> list[coordinator_pb2.NodeStatus]:
        """Adverts the coordinator did not dial, and why (in GetStats: ``posefleet status`` shows them)."""
        return [
            coordinator_pb2.NodeStatus(
                address=address, source="zeroconf", last_error=why, claimed_id=claimed, ignored=True
            )
            for address, claimed, why in self.registry.ignored.values()
        ]

    async def ListNodes(
        self, request: coordinator_pb2.ListNodesRequest, context: grpc.aio.ServicerContext
    ) -> coordinator_pb2.ListNodesResponse:
        """Every node for subscribers and admins. A camera sees only the healthy nodes' models and input sizes
        (what it needs to resize its frames): no addresses, errors or counters."""
        peer = await require(context, ("camera", "subscriber", "admin"), self.guard)
        nodes = [self._node_status(link) for link in self.registry.links.values()]
        if peer.role == "camera":
            nodes = [
                coordinator_pb2.NodeStatus(
                    healthy=True,
                    info=pose_pb2.NodeInfo(
                        model_id=n.info.model_id,
                        model_family=n.info.model_family,
                        input_width=n.info.input_width,
                        input_height=n.info.input_height,
                    ),
                )
                for n in nodes
                if n.healthy
            ]
        return coordinator_pb2.ListNodesResponse(nodes=nodes)

    async def GetStats(
        self, request: coordinator_pb2.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> coordinator_pb2.Stats:
        """Everything for an admin; a subscriber sees the cameras and scenes it may read."""
        peer = await require(context, ("subscriber", "admin"), self.guard)
        return coordinator_pb2.Stats(
            cameras=[s.to_proto() for c, s in self.cameras.items() if _may(peer, {c})],
            nodes=[self._node_status(link) for link in self.registry.links.values()] + self._ignored(),
            scenes=[scene.status() for scene in self.merger.scenes.values() if _may(peer, set(scene.calibrated))],
        )

    async def CalibrateScene(
        self, request: coordinator_pb2.CalibrateSceneRequest, context: grpc.aio.ServicerContext
    ) -> coordinator_pb2.CalibrateSceneResponse:
        """Admin: the scene's cameras calibrated from the people its next windows show (``scene_calibration``)."""
        await require(context, ("admin",), self.guard)
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(request))
        scene = await self._scene(request.scene, context)
        if (problem := request_problem(request)) is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        if self.calibrating is not None:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"scene {self.calibrating} is being calibrated; one at a time"
            )
        self.calibrating = scene.name
        try:
            return await calibrate_scene(scene, request)
        except CalibrationRefused as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            raise AssertionError from None  # abort raises
        finally:
            self.calibrating = None
