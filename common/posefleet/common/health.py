"""Asking a posefleet server whether it serves (gRPC health): the one check the coordinator's links, `posefleet
status` and the helper that starts a process and waits for it all use."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = "SERVING"


async def health(channel: grpc.aio.Channel, service: str = "", timeout: float = 1.0) -> str:
    """The server's status for ``service`` ("SERVING", "NOT_SERVING", ...); ``grpc.aio.AioRpcError`` when it
    does not answer."""
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=timeout
    )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def health_sync(channel: grpc.Channel, service: str = "", timeout: float = 1.0) -> str:
    """``health`` on a blocking channel; ``grpc.RpcError`` when the server does not answer."""
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
