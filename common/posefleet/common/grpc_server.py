"""gRPC scaffolding shared by the node and the coordinator: one server shape, one status mapping."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer
from posefleet.common.certs import Guard, require
from posefleet.common.errors import PosefleetError
from posefleet.common.tls import TlsFiles

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_CODES = {code.value[0]: code for code in grpc.StatusCode}


@dataclass(frozen=True)
class Malformed:
    """A request that did not parse; the handler answers it INVALID_ARGUMENT with ``reason``."""

    type_name: str
    reason: str

    def __str__(self) -> str:
        return f"malformed {self.type_name} message: {self.reason}"


def tolerant(message: Any) -> Callable[[bytes], Any]:
    """A request deserializer that returns ``Malformed`` instead of raising."""

    def parse(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except DecodeError as exc:
            return Malformed(message.DESCRIPTOR.name, str(exc) or "does not parse")

    return parse


_HANDLERS: dict[tuple[bool, bool], Callable[..., Any]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


class BindError(PosefleetError):
    """The server's address is taken or not available."""


def status_code(value: int) -> grpc.StatusCode:
    """The ``grpc.StatusCode`` of a numeric code carried in a result (UNKNOWN when unknown)."""
    return _CODES.get(value, grpc.StatusCode.UNKNOWN)


def message_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """Channel/server options that allow messages up to ``max_message_bytes`` both ways."""
    return [("grpc.max_receive_message_length", max_message_bytes), ("grpc.max_send_message_length", max_message_bytes)]


#: Who may list a server's services and their message types: an admin (reflection serves tools, not peers).
REFLECTION_ROLES = ("admin",)


class _GuardedHealth(HealthServicer):  # type: ignore[misc]
    """gRPC health, answered only to the roles that need it."""

    def __init__(self, guard: Guard, roles: tuple[str, ...]) -> None:
        super().__init__()
        self.guard, self.roles = guard, roles

    async def Check(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await require(context, self.roles, self.guard)
        return await super().Check(request, context)

    async def Watch(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        await require(context, self.roles, self.guard)
        await super().Watch(request, context)


class _GuardedReflection(ReflectionServicer):  # type: ignore[misc]
    """Server reflection for ``REFLECTION_ROLES`` only."""

    def __init__(self, names: Sequence[str], guard: Guard) -> None:
        super().__init__(names)
        self.guard = guard

    async def ServerReflectionInfo(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        await require(context, REFLECTION_ROLES, self.guard)
        async for reply in super().ServerReflectionInfo(request_iterator, context):
            yield reply


class GrpcServer:
    """A grpc.aio server with health and reflection; ``health_names`` are set together. With mutual TLS
    (``guard``) health answers ``health_roles`` and reflection admins, like every other RPC: no service of
    the server answers any fleet certificate just because the CA signed it."""

    def __init__(
        self, max_message_bytes: int, health_names: Sequence[str], guard: Guard, health_roles: tuple[str, ...]
    ) -> None:
        # so_reuseport off: a second server on an occupied port fails instead of splitting the clients.
        self.server = grpc.aio.server(options=[*message_options(max_message_bytes), ("grpc.so_reuseport", 0)])
        self.guard = guard
        self.health = _GuardedHealth(guard, health_roles)
        self._health_names = ("", *health_names)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._reflected: list[str] = [
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ]
        self.port = 0

    def add(self, servicer: Any, service: ServiceDescriptor) -> None:
        """Serve ``servicer``'s methods of ``service`` and enable reflection for it.

        Requests are parsed tolerantly: a message that is not valid protobuf (bytes that do not parse,
        invalid UTF-8 in a string) reaches the handler as ``Malformed``, which answers INVALID_ARGUMENT
        (or a FAILED result on a stream) instead of gRPC's INTERNAL and a logged traceback.
        """
        handlers = {}
        for method in service.methods:
            request = GetMessageClass(method.input_type)
            response = GetMessageClass(method.output_type)
            make = _HANDLERS[(method.client_streaming, method.server_streaming)]
            handlers[method.name] = make(
                getattr(servicer, method.name),
                request_deserializer=tolerant(request),
                response_serializer=response.SerializeToString,
            )
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
        self._reflected.insert(0, service.full_name)

    def bind(self, host: str, port: int, tls: TlsFiles | None) -> int:
        """Listen on ``host:port`` (0 = a free port) with mutual TLS (``tls``; None: --insecure, no TLS);
        ``BindError`` when the address is taken."""
        try:
            if tls is None:
                self.port = self.server.add_insecure_port(f"{host}:{port}")
            else:
                self.port = self.server.add_secure_port(f"{host}:{port}", tls.server_credentials())
        except RuntimeError as exc:
            raise BindError(f"cannot listen on {host}:{port}: {exc}") from None
        if self.port == 0:
            raise BindError(f"cannot listen on {host}:{port} (address in use or not available)")
        return self.port

    async def set_health(self, status: int) -> None:
        for name in self._health_names:
            await self.health.set(name, status)

    async def start(self) -> None:
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            _GuardedReflection(self._reflected, self.guard), self.server
        )
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
