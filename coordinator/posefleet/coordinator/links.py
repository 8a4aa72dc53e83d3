"""A coordinator's connection to one node: its health and info, joining and leaving, and a long-lived
EstimateStream.

Frames are balanced per frame, not per connection: each node has one stream, and the router puts each frame
on the stream of the least-loaded node with a free credit (``credits``: what the node holds and may take).
With TLS the node proves who it is (``trust``) before any frame goes to it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import grpc
from posefleet.common.health import SERVING, health
from posefleet.common.tls import TlsFiles, aio_channel
from posefleet.coordinator.credits import Credits
from posefleet.coordinator.jobs import Job
from posefleet.coordinator.trust import NodeTrust
from posefleet.coordinator.validation import MAX_RESULT_BYTES, result_problem
from posefleet.v1 import node_pb2, node_pb2_grpc, pose_pb2
from posefleet.v1.discovery import NODE_HEALTH_SERVICE
from posefleet.v1.ids import node_id_problem

log = logging.getLogger("posefleet.coordinator")
#: A node that served this long without failing starts its backoff afresh at its next failure.
RECOVERED_AFTER_S = 30.0
RETRYABLE = {grpc.StatusCode.UNAVAILABLE.value[0], grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]}


LostJobs = Callable[["NodeLink", list[Job], str], None]


class NodeLink:
    """One node: health checks and GetInfo, joining (``connect``) and leaving (``mark_down``), its stream."""

    def __init__(
        self,
        key: str,
        address: str,
        source: str,
        *,
        on_lost: LostJobs,
        on_credit: Callable[[], None],
        max_message_bytes: int,
        tls: TlsFiles | None = None,
        node_id: str | None = None,
    ) -> None:
        self.key = key
        self.address = address
        self.source = source
        self.info = pose_pb2.NodeInfo()
        self.healthy = False
        self.draining = False
        self.credits = Credits()
        self.frames_done = 0
        self.frames_failed = 0
        self.last_error = ""
        self.failures = 0
        self.retry_at = 0.0
        self._max_message_bytes = max_message_bytes
        self.max_frame_bytes = max_message_bytes
        self._on_lost = on_lost
        self._on_credit = on_credit
        self.healthy_since = 0.0
        #: When a node that had served was taken out (it is probed often for a while after: a stall ends).
        self.out_since = -1e9
        #: Why the audit took it out for good ("" while it is trusted; see ``coordinator.audit``).
        self.quarantined = ""
        self._send: asyncio.Queue[pose_pb2.Frame | None] = asyncio.Queue()
        self._stream_task: asyncio.Task[None] | None = None
        self.trust = NodeTrust(tls, node_id)
        self._open()

    def _open(self) -> None:
        options = [
            ("grpc.max_send_message_length", self._max_message_bytes),
            # A node's answers are small (at most MAX_POSES poses): refused by gRPC beyond this, before they are
            # parsed, instead of allocating up to the frame limit for a rogue node's megabytes.
            ("grpc.max_receive_message_length", MAX_RESULT_BYTES),
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.initial_reconnect_backoff_ms", 100),
        ]
        self._channel = aio_channel(self.address, self.trust.tls, self.trust.server_name, options)
        self._stub = node_pb2_grpc.PoseNodeStub(self._channel)

    # -- state -----------------------------------------------------------------------------
    @property
    def available(self) -> bool:
        return self.healthy and not self.draining and self._stream_task is not None

    def has_credit(self, cost: int = 1) -> bool:
        """Whether a frame of ``cost`` credits may go to this node now."""
        return self.available and self.credits.fits(cost)

    def serves(self, selector: pose_pb2.ModelSelector) -> bool:
        return (not selector.family or selector.family == self.info.model_family) and (
            not selector.model_id or selector.model_id == self.info.model_id
        )

    # -- lifecycle -------------------------------------------------------------------------
    async def check(self, timeout: float = 1.0) -> bool:
        """One health check; SERVING keeps the link, anything else takes it out at once."""
        try:
            status = await health(self._channel, NODE_HEALTH_SERVICE, timeout)
        except grpc.aio.AioRpcError as exc:
            self.mark_down(f"health check failed: {exc.code().name}")
            return False
        if status != SERVING:
            self.mark_down(f"node reports {status}")
            return False
        return True

    async def _info(self) -> pose_pb2.NodeInfo | None:
        """Health check and GetInfo; ``None`` (and marked down) on failure."""
        if not await self.check(timeout=2.0):
            return None
        try:
            info: pose_pb2.NodeInfo = await self._stub.GetInfo(node_pb2.GetInfoRequest(), timeout=2.0)
        except grpc.aio.AioRpcError as exc:
            self.mark_down(f"GetInfo failed: {exc.code().name}")
            return None
        return info

    async def connect(self) -> bool:
        """Health check, GetInfo, open the stream; False (and marked down) on failure.

        With TLS every check is a handshake in which the node proves its certificate (fleet CA, role node,
        named for ``claimed_id``); a node learnt from a static address proves the id it states in GetInfo
        before any frame is sent to it.
        """
        info = await self._info()
        if info is None:
            return False
        if (problem := node_id_problem(info.node_id)) is not None:
            self.mark_down(f"GetInfo: {problem}")  # e.g. an empty id, which every node certificate would prove
            return False
        trust = self.trust
        if trust.claimed_id is None and trust.tls is not None:
            trust.claimed_id = info.node_id
            old = self._channel
            self._open()
            await old.close()
            if not await self.check(timeout=2.0):
                self.last_error = f"its certificate is not for node id {info.node_id!r}: {self.last_error}"
                trust.claimed_id = None
                return False
        elif trust.claimed_id is not None and info.node_id != trust.claimed_id:
            self.mark_down(f"it says node id {info.node_id!r} where {trust.claimed_id!r} was expected")
            return False
        if (problem := await trust.certificate_problem(self.address, info.node_id)) is not None:
            self.mark_down(problem)
            return False
        self.info = info
        self.credits.restart(info.capacity)
        # What the node accepts, within what this link's channel may send.
        self.max_frame_bytes = min(self.info.max_message_bytes or self._max_message_bytes, self._max_message_bytes)
        self.healthy = True
        self.healthy_since = time.monotonic()
        self.draining = False
        self.last_error = ""
        self._send = asyncio.Queue()
        self._stream_task = asyncio.create_task(self._stream(), name=f"node-stream-{self.key}")
        log.info(
            "node %s (%s) joined: %s, capacity %d", info.node_id, self.address, info.model_id, self.credits.capacity
        )
        self._on_credit()
        return True

    def mark_down(self, reason: str) -> None:
        """Take the node out now; its in-flight frames go back to the router."""
        now = time.monotonic()
        if self.healthy:
            self.out_since = now
            log.warning("node %s (%s) out: %s", self.info.node_id or self.key, self.address, reason)
            if now - self.healthy_since > RECOVERED_AFTER_S:
                self.failures = 0  # it had served well for a while: this failure starts the backoff afresh
        self.healthy = False
        self.last_error = reason
        self.failures += 1  # the backoff before the next try doubles with each failure (a circuit breaker)
        self.retry_at = time.monotonic()  # the registry adds the backoff
        if self._stream_task is not None:
            self._stream_task.cancel()
            self._stream_task = None
        self._send.put_nowait(None)
        if lost := self.credits.drop_all():
            self._on_lost(self, lost, reason)

    async def close(self) -> None:
        self.healthy = False
        if self._stream_task is not None:
            self._stream_task.cancel()
            self._stream_task = None
        await self._channel.close()

    # -- frames ----------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        tag = self.credits.take(job, self.key)
        # On the link, ``sequence`` tags the frame on this stream; the job keeps the camera's own identity.
        self._send.put_nowait(pose_pb2.Frame(camera_id=job.frame.camera_id, sequence=tag, image=job.frame.image))

    async def _requests(self) -> AsyncIterator[pose_pb2.Frame]:
        while (frame := await self._send.get()) is not None:
            yield frame

    def _results(self) -> AsyncIterator[pose_pb2.PoseResult]:
        """The node's answers to the frames of ``_requests`` (one EstimateStream call)."""
        call: AsyncIterator[pose_pb2.PoseResult] = self._stub.EstimateStream(self._requests())
        return call

    async def _stream(self) -> None:
        results = self._results()
        try:
            async for result in results:
                job = self.credits.settle(result.sequence)
                if job is None:  # an answer to a frame never sent (or answered twice): the node misbehaves
                    reason = f"answered a frame it was never sent (tag {result.sequence})"
                    break
                if (problem := result_problem(result)) is not None:  # passed on to no one: the node misbehaves
                    self._on_lost(self, [job], f"node {self.info.node_id or self.key} sent an invalid result")
                    reason = f"invalid result: {problem}"
                    break
                if result.status == pose_pb2.RESULT_STATUS_FAILED and result.error_code in RETRYABLE:
                    self.frames_failed += 1
                    self._on_lost(self, [job], f"node {self.info.node_id}: {result.error}")
                else:
                    self.frames_done += 1
                    job.resolve(result)
                self._on_credit()
            else:
                reason = "node ended its stream (draining)"
        except asyncio.CancelledError:
            return
        except grpc.aio.AioRpcError as exc:
            reason = f"stream failed: {exc.code().name} {exc.details() or ''}".strip()
        self._stream_task = None  # mark_down must not cancel the task it runs in
        self.mark_down(reason)
        cancel = getattr(results, "cancel", None)
        if callable(cancel):  # a gRPC call left mid-stream (a misbehaving node) is cancelled, not abandoned
            cancel()
