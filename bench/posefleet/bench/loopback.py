"""In-process stand-ins for nodes: ``NodeLink``s whose stream is a coroutine, not gRPC.

For the coordinator's unit tests and ``posefleet bench-merge`` only, never a default: everything else of
the link (credits, pending frames, retries, node loss) is the real code.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

from posefleet.coordinator.links import NodeLink
from posefleet.coordinator.trust import NodeTrust
from posefleet.v1 import pose_pb2

#: How a fake node answers one frame: a result, or ``None`` to hold it forever.
Answer = Callable[["LoopbackLink", pose_pb2.Frame], pose_pb2.PoseResult | None]


def ok(link: LoopbackLink, frame: pose_pb2.Frame) -> pose_pb2.PoseResult:
    return pose_pb2.PoseResult(status=pose_pb2.RESULT_STATUS_OK, sequence=frame.sequence, node_id=link.key)


class _NoCertificate(NodeTrust):
    async def certificate_problem(self, address: str, node_id: str) -> str | None:
        return None  # an in-process node has no certificate (nothing to read, nothing to revoke)


class LoopbackLink(NodeLink):
    """A node that answers after ``latency`` seconds with ``answer``; its settings are class-level per test."""

    nodes: ClassVar[dict[str, dict[str, Any]]] = {}  # key -> {"family", "capacity", "latency", "answer"}

    def __init__(self, key: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(key, *args, **kwargs)
        spec = self.nodes.get(key, {})
        self.family = str(spec.get("family", "posenet"))
        self.fake_capacity = int(spec.get("capacity", 2))
        self.latency = float(spec.get("latency", 0.0))
        self.answer: Answer = spec.get("answer", ok)
        self.received: list[pose_pb2.Frame] = []
        self.fake_healthy = True
        self.trust = _NoCertificate(self.trust.tls, self.trust.claimed_id)

    async def _info(self) -> pose_pb2.NodeInfo | None:
        return pose_pb2.NodeInfo(
            node_id=self.key, model_id=f"{self.family}-model", model_family=self.family, capacity=self.fake_capacity
        )

    async def check(self, timeout: float = 1.0) -> bool:
        if not self.fake_healthy:
            self.mark_down("loopback node unhealthy")
        return self.fake_healthy

    def _results(self) -> AsyncIterator[pose_pb2.PoseResult]:
        return self._serve()

    async def _serve(self) -> AsyncIterator[pose_pb2.PoseResult]:
        out: asyncio.Queue[pose_pb2.PoseResult] = asyncio.Queue()

        async def answer(frame: pose_pb2.Frame) -> None:
            await asyncio.sleep(self.latency)
            result = self.answer(self, frame)
            if result is not None:
                out.put_nowait(result)

        answering: set[asyncio.Future[None]] = set()

        async def read() -> None:
            async for frame in self._requests():
                self.received.append(frame)
                task = asyncio.ensure_future(answer(frame))
                answering.add(task)
                task.add_done_callback(answering.discard)

        reader = asyncio.ensure_future(read())
        try:
            while True:
                yield await out.get()
        finally:
            reader.cancel()
