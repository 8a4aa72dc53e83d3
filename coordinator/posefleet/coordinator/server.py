"""``posefleet coordinator``: discovery, per-frame balancing and merging behind one gRPC front door."""

from __future__ import annotations

import asyncio
import logging

from posefleet.common import memory
from posefleet.common.certs import Guard, own_peer
from posefleet.common.grpc_server import SERVING, GrpcServer, run_until_signal
from posefleet.common.metrics_http import serve_metrics
from posefleet.coordinator.dashboard import Dashboard, Frames
from posefleet.coordinator.links import NodeLink
from posefleet.coordinator.metrics import CoordinatorMetrics
from posefleet.coordinator.mqtt import MqttPublisher
from posefleet.coordinator.registry import LinkFactory, Registry
from posefleet.coordinator.service import CoordinatorService
from posefleet.coordinator.settings import CoordinatorSettings
from posefleet.v1 import coordinator_pb2
from posefleet.v1.discovery import COORDINATOR_HEALTH_SERVICE

log = logging.getLogger("posefleet.coordinator")


class CoordinatorServer:
    def __init__(self, settings: CoordinatorSettings, link_factory: LinkFactory = NodeLink) -> None:
        self.settings = settings
        self.tls = settings.tls_files(settings.name)
        if self.tls is not None:
            own_peer(self.tls, "coordinator")
        self.registry = Registry(settings, link_factory, self.tls)
        self.metrics = CoordinatorMetrics(lambda: list(self.registry.links.values()))
        self.service = CoordinatorService(settings, self.registry, self.metrics, guard=Guard(self.tls))
        self.port = 0
        self.metrics_port: int | None = None
        self.http_port: int | None = None
        self._grpc: GrpcServer | None = None
        self._evictor: asyncio.Task[None] | None = None
        self._trimmer: asyncio.Task[None] | None = None
        self.dashboard: Dashboard | None = None
        self.mqtt: MqttPublisher | None = None
        if settings.mqtt is not None:
            self.mqtt = MqttPublisher(settings, self.tls)
            self.mqtt.on_drop.append(self.metrics.mqtt_dropped.inc)
            self.service.results.add(self.mqtt)

    async def start(self) -> None:
        s = self.settings
        memory.tune_allocator()  # large results and frames come and go: their memory must go back too
        # Health answers whoever calls the coordinator (cameras, subscribers, admins) and its own certificate.
        health_roles = ("camera", "subscriber", "admin", "coordinator")
        self._grpc = server = GrpcServer(
            s.max_message_bytes, [COORDINATOR_HEALTH_SERVICE], self.service.guard, health_roles
        )
        server.add(self.service, coordinator_pb2.DESCRIPTOR.services_by_name["Coordinator"])
        self.port = server.bind(s.host, s.port, self.tls)
        await self.registry.start()
        await self.service.merger.start()
        self._evictor = asyncio.create_task(self._evict(), name="camera-eviction")
        self._trimmer = asyncio.create_task(memory.return_memory(), name="return-memory")
        await server.start()
        await server.set_health(SERVING)
        if s.metrics_port is not None:
            self.metrics_port = serve_metrics(self.metrics.registry, s.metrics_host, s.metrics_port, self.tls)
        if s.http_port is not None:
            frames = Frames()
            self.service.results.add(frames)
            self.dashboard = Dashboard(self.service.view, frames, self.tls, max_token_days=s.max_token_days)
            self.http_port = await self.dashboard.start(s.http_host, s.http_port)
        if self.mqtt is not None:
            self.mqtt.start(self.service.view, self.service.merger.scenes)
        log.info("coordinator listening on %s:%d", s.host, self.port)

    async def _evict(self) -> None:
        while True:
            await asyncio.sleep(min(10.0, self.settings.camera_idle_s / 2))
            if self.service.evict_idle():
                memory.trim(collect=True)  # what the forgotten cameras freed

    async def stop(self) -> None:
        for task in (self._evictor, self._trimmer):
            if task is not None:
                task.cancel()
        if self.dashboard is not None:
            await self.dashboard.stop()
        if self.mqtt is not None:
            await self.mqtt.stop()
        if self._grpc is not None:
            await self._grpc.stop(grace=2.0)
        await self.service.merger.stop()
        await self.registry.stop()


async def serve(settings: CoordinatorSettings) -> int:
    server = CoordinatorServer(settings)

    async def start() -> str:
        await server.start()
        return (
            f"posefleet-coordinator ready port={server.port} metrics_port={server.metrics_port} "
            f"http_port={server.http_port}"
        )

    return await run_until_signal(start, server.stop)
