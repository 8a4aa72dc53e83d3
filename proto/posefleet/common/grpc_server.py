"""gRPC scaffolding shared by the node and the coordinator: one server shape, one status mapping."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from posefleet.common.errors import PosefleetError

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_CODES = {code.value[0]: code for code in grpc.StatusCode}


class BindError(PosefleetError):
    """The server's address is taken or not available."""


def status_code(value: int) -> grpc.StatusCode:
    """The ``grpc.StatusCode`` of a numeric code carried in a result (UNKNOWN when unknown)."""
    return _CODES.get(value, grpc.StatusCode.UNKNOWN)


def message_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """Channel/server options that allow messages up to ``max_message_bytes`` both ways."""
    return [("grpc.max_receive_message_length", max_message_bytes), ("grpc.max_send_message_length", max_message_bytes)]


class GrpcServer:
    """A grpc.aio server with health and reflection; ``health_names`` are set together."""

    def __init__(self, max_message_bytes: int, health_names: Sequence[str]) -> None:
        # so_reuseport off: a second server on an occupied port fails instead of splitting the clients.
        self.server = grpc.aio.server(options=[*message_options(max_message_bytes), ("grpc.so_reuseport", 0)])
        self.health = HealthServicer()
        self._health_names = ("", *health_names)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = 0

    def add(self, register: Callable[[Any, grpc.aio.Server], None], servicer: Any, service_name: str) -> None:
        """Register a servicer (``add_XServicer_to_server``) and enable reflection for it."""
        register(servicer, self.server)
        names = (service_name, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self.server)

    def bind(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0 = a free port); ``BindError`` when the address is taken."""
        try:
            self.port = self.server.add_insecure_port(f"{host}:{port}")
        except RuntimeError as exc:
            raise BindError(f"cannot listen on {host}:{port}: {exc}") from None
        if self.port == 0:
            raise BindError(f"cannot listen on {host}:{port} (address in use or not available)")
        return self.port

    async def set_health(self, status: int) -> None:
        for name in self._health_names:
            await self.health.set(name, status)

    async def start(self) -> None:
        await self.server.start()

    async def stop(self, grace: float) -> None:
        await self.set_health(NOT_SERVING)
        await self.server.stop(grace=grace)


async def run_until_signal(start: Callable[[], Awaitable[str]], stop: Callable[[], Awaitable[None]]) -> int:
    """Start a server, print its ready line, wait for SIGTERM/SIGINT, stop it; exit status 0.

    ``start`` returns the ready line (``posefleet-<kind> ready key=value ...``), one parseable line for
    supervisors, tests and ``posefleet.common.processes``.
    """
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        ready = await start()
    except BaseException:
        await stop()
        raise
    print(ready, flush=True)
    await stopping.wait()
    await stop()
    return 0
