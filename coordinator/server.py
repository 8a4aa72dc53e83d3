"""``posefleet coordinator``: discovery, per-frame balancing and merging behind one gRPC front door."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from posefleet.coordinator.config import CoordinatorSettings
from posefleet.coordinator.registry import Registry
from posefleet.coordinator.service import CoordinatorMetrics, CoordinatorService
from posefleet.v1 import coordinator_pb2, coordinator_pb2_grpc
from posefleet.v1.discovery import COORDINATOR_HEALTH_SERVICE
from prometheus_client import start_http_server

log = logging.getLogger("posefleet.coordinator")


class CoordinatorServer:
    def __init__(self, settings: CoordinatorSettings) -> None:
        self.settings = settings
        self.registry = Registry(settings)
        self.metrics = CoordinatorMetrics()
        self.service = CoordinatorService(settings, self.registry, self.metrics)
        self.health = HealthServicer()
        self.port = 0
        self.metrics_port: int | None = None
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        s = self.settings
        limit = int(s.max_message_mb * (1 << 20))
        self._server = grpc.aio.server(
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
        )
        coordinator_pb2_grpc.add_CoordinatorServicer_to_server(self.service, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        names = (coordinator_pb2.DESCRIPTOR.services_by_name["Coordinator"].full_name, "grpc.health.v1.Health",
                 reflection.SERVICE_NAME)  # fmt: skip
        reflection.enable_server_reflection(names, self._server)
        self.port = self._server.add_insecure_port(f"{s.host}:{s.port}")
        if self.port == 0:
            raise OSError(f"cannot bind {s.host}:{s.port}")
        await self.registry.start()
        await self._server.start()
        for name in ("", COORDINATOR_HEALTH_SERVICE):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if s.metrics_port is not None:
            server, _ = start_http_server(s.metrics_port, addr=s.metrics_host, registry=self.metrics.registry)
            self.metrics_port = int(server.server_port)
        log.info("coordinator listening on %s:%d", s.host, self.port)

    async def stop(self) -> None:
        for name in ("", COORDINATOR_HEALTH_SERVICE):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        if self._server is not None:
            await self._server.stop(grace=2.0)
        await self.registry.stop()


async def serve(settings: CoordinatorSettings) -> int:
    server = CoordinatorServer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    print(f"posefleet-coordinator ready port={server.port} metrics_port={server.metrics_port}", flush=True)
    await stop.wait()
    await server.stop()
    return 0
