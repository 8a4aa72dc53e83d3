"""A coordinator's connection to one node: health, info, and a long-lived EstimateStream.

Frames are balanced per frame, not per connection: each node has one stream, and the router puts
each frame on the stream of the least-loaded node with a free credit (credits = the node's capacity).
A node earns its credits: after it (re)joins it gets ``SLOW_START_CREDITS`` frames at once and one more
per answer, up to its capacity, so a node that takes frames and never answers holds only a few.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable

import grpc
from cryptography import x509
from posefleet.common.certs import revocations_of
from posefleet.common.health import SERVING, health
from posefleet.common.tls import TlsError, TlsFiles, aio_channel, peer_certificate, role_name
from posefleet.coordinator.jobs import Job
from posefleet.coordinator.validation import MAX_RESULT_BYTES, result_problem
from posefleet.v1 import node_pb2, node_pb2_grpc, pose_pb2
from posefleet.v1.discovery import NODE_HEALTH_SERVICE
from posefleet.v1.ids import node_id_problem

log = logging.getLogger("posefleet.coordinator")
#: A node that served this long without failing starts its backoff afresh at its next failure.
RECOVERED_AFTER_S = 30.0
RETRYABLE = {grpc.StatusCode.UNAVAILABLE.value[0], grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]}


#: Frames a node that has not answered yet may hold at once; each answer adds one, up to its capacity.
SLOW_START_CREDITS = 2


LostJobs = Callable[["NodeLink", list[Job], str], None]


class NodeLink:
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
        self.capacity = 1
        self.in_flight = 0
        self.in_flight_cost = 0  # credits taken by the frames in flight (``Job.cost``, at most the capacity each)
        self.frames_done = 0
        self.frames_failed = 0
        self.answered = 0  # since it last (re)joined: its slow start
        self.answer_s = 0.0  # moving average of the time its answers took
        self.last_error = ""
        self.failures = 0
        self.retry_at = 0.0
        self.last_used = 0.0
        self._max_message_bytes = max_message_bytes
        self.max_frame_bytes = max_message_bytes
        self._on_lost = on_lost
        self._on_credit = on_credit
        self._pending: dict[int, tuple[Job, float]] = {}  # link tag -> (job, monotonic time sent)
        self.healthy_since = 0.0
        #: When a node that had served was taken out (it is probed often for a while after: a stall ends).
        self.out_since = -1e9
        #: Why the audit took it out for good ("" while it is trusted; see ``coordinator.audit``).
        self.quarantined = ""
        self._seq = itertools.count()
        self._send: asyncio.Queue[pose_pb2.Frame | None] = asyncio.Queue()
        self._stream_task: asyncio.Task[None] | None = None
        self._tls = tls
        self._revocations = revocations_of(tls.ca) if tls is not None else None
        #: The serial of the certificate the node presented when it (re)joined (checked against ``ca.crl``).
        self.cert_serial: int | None = None
        #: The node id this node must prove (its certificate's name): what its advert claims, or, for a static
        #: address, what it says in GetInfo (until then any fleet node certificate will do).
        self.claimed_id = node_id
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
        server = role_name("node", self.claimed_id)
        self._channel = aio_channel(self.address, self._tls, server, options)
        self._stub = node_pb2_grpc.PoseNodeStub(self._channel)

    async def _certificate_serial(self, tls: TlsFiles, node_id: str) -> int:
        """The serial of the certificate the node presents (a TLS handshake of its own: a gRPC channel does
        not show its peer's certificate)."""
        der = await peer_certificate(self.address, tls, role_name("node", node_id))
        return int(x509.load_der_x509_certificate(der).serial_number)

    def revoked(self) -> bool:
        """Whether the certificate this node presented is in the fleet's revocation list now."""
        return (
            self._revocations is not None
            and self.cert_serial is not None
            and self._revocations.revoked(self.cert_serial)
        )

    # -- state -----------------------------------------------------------------------------
    @property
    def available(self) -> bool:
        return self.healthy and not self.draining and self._stream_task is not None

    def has_credit(self, cost: int = 1) -> bool:
        """Whether a frame of ``cost`` credits fits now (a frame costing more than the node's credits goes
        alone, when nothing else is in flight)."""
        if not self.available:
            return False
        limit = min(self.capacity, SLOW_START_CREDITS + self.answered)
        return self.in_flight == 0 or self.in_flight_cost + min(cost, self.capacity) <= limit

    def oldest_pending_s(self, now: float) -> float:
        """How long the oldest frame on this node has waited for its answer (0 when none)."""
        return max((now - sent for _, sent in self._pending.values()), default=0.0)

    def stragglers(self, now: float, floor_s: float) -> list[Job]:
        """Frames waiting longer than this node usually takes (4x its average, at least ``floor_s``) that have
        not been sent anywhere else yet."""
        after = max(floor_s, 4 * self.answer_s)
        return [job for job, sent in self._pending.values() if now - sent > after and job.attempts < 2 and not job.done]

    def load(self) -> float:
        return self.in_flight_cost / self.capacity

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
        if self.claimed_id is None and self._tls is not None:
            self.claimed_id = info.node_id
            old = self._channel
            self._open()
            await old.close()
            if not await self.check(timeout=2.0):
                self.last_error = f"its certificate is not for node id {info.node_id!r}: {self.last_error}"
                self.claimed_id = None
                return False
        elif self.claimed_id is not None and info.node_id != self.claimed_id:
            self.mark_down(f"it says node id {info.node_id!r} where {self.claimed_id!r} was expected")
            return False
        if self._tls is not None:
            try:
                self.cert_serial = await self._certificate_serial(self._tls, info.node_id)
            except (TimeoutError, OSError, ssl.SSLError, TlsError, ValueError) as exc:
                self.mark_down(f"its certificate could not be read: {exc}")
                return False
            if self.revoked():
                self.mark_down(f"its certificate (serial {self.cert_serial:x}) is revoked")
                return False
        self.info = info
        self.capacity = max(1, self.info.capacity)
        # What the node accepts, within what this link's channel may send.
        self.max_frame_bytes = min(self.info.max_message_bytes or self._max_message_bytes, self._max_message_bytes)
        self.healthy = True
        self.answered = 0
        self.healthy_since = time.monotonic()
        self.draining = False
        self.last_error = ""
        self._send = asyncio.Queue()
        self._stream_task = asyncio.create_task(self._stream(), name=f"node-stream-{self.key}")
        log.info(
            "node %s (%s) joined: %s, capacity %d", self.info.node_id, self.address, self.info.model_id, self.capacity
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
        lost = [job for job, _ in self._pending.values()]
        for job in lost:
            job.in_flight -= 1
        self._pending.clear()
        self.in_flight = 0
        self.in_flight_cost = 0
        if lost:
            self._on_lost(self, lost, reason)

    async def close(self) -> None:
        self.healthy = False
        if self._stream_task is not None:
            self._stream_task.cancel()
            self._stream_task = None
        await self._channel.close()

    # -- frames ----------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        seq = next(self._seq)
        self.last_used = time.monotonic()
        self._pending[seq] = (job, self.last_used)
        self.in_flight += 1
        self.in_flight_cost += min(job.cost, self.capacity)
        job.in_flight += 1
        job.attempts += 1
        job.tried.add(self.key)
        # On the link, ``sequence`` tags the frame on this stream; the job keeps the camera's own identity.
        self._send.put_nowait(pose_pb2.Frame(camera_id=job.frame.camera_id, sequence=seq, image=job.frame.image))

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
                entry = self._pending.pop(result.sequence, None)
                if entry is None:  # an answer to a frame never sent (or answered twice): the node misbehaves
                    reason = f"answered a frame it was never sent (tag {result.sequence})"
                    break
                job, sent = entry
                self.in_flight -= 1
                self.in_flight_cost = max(0, self.in_flight_cost - min(job.cost, self.capacity))
                job.in_flight -= 1
                self.answered += 1
                took = time.monotonic() - sent
                self.answer_s = took if self.answered == 1 else 0.9 * self.answer_s + 0.1 * took
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
