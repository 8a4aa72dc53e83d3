"""Nodes known to the coordinator (named statically, or found by ``discovery``), kept alive by gRPC health,
and the one dispatch path of a frame.

mDNS only says where a node is; a node is used while its health checks pass and its stream works,
taken out at once when either fails, and retried with exponential backoff. Node work is shared between
cameras by what it costs (``shares``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import grpc
from posefleet.common.tls import TlsFiles
from posefleet.coordinator.adverts import AdvertGate
from posefleet.coordinator.audit import Auditor
from posefleet.coordinator.discovery import Membership, NodeBrowser
from posefleet.coordinator.jobs import Job
from posefleet.coordinator.links import NodeLink
from posefleet.coordinator.settings import CoordinatorSettings
from posefleet.coordinator.shares import FairShares
from posefleet.v1 import pose_pb2

log = logging.getLogger("posefleet.coordinator")
#: How often the registry looks for frames a node holds far longer than it usually takes.
STRAGGLER_TICK_S = 0.05
#: A node that served and was taken out is probed this often for this long (it is back within a probe).
RECOVERY_PROBE_S = 0.5
RECOVERY_WATCH_S = 60.0
#: Ignored adverts kept for ``posefleet status`` (the most recent).
IGNORED_KEPT = 32


class NoNode(Exception):
    """No node can take the frame (none serves its model, or none came up in time)."""


LinkFactory = Callable[..., NodeLink]


class Registry:
    """The coordinator's nodes and the one dispatch path of a frame (``dispatch``).

    ``link_factory`` builds a ``NodeLink`` per node (tests pass in-process fakes).
    """

    def __init__(
        self, settings: CoordinatorSettings, link_factory: LinkFactory = NodeLink, tls: TlsFiles | None = None
    ) -> None:
        self.settings = settings
        self.tls = tls
        self._link_factory = link_factory
        self.links: dict[str, NodeLink] = {}
        self._changed = asyncio.Condition()
        self._waiters = 0
        self._tasks: set[asyncio.Task[object]] = set()
        self.browser: NodeBrowser | None = None
        self._health_task: asyncio.Task[None] | None = None
        self._straggler_task: asyncio.Task[None] | None = None
        self.stragglers_resent = 0
        self.shares = FairShares()
        self.auditor = Auditor(
            self._pick_for,
            self._node_of,
            self.spawn,
            share=settings.audit_share,
            min_agreement=settings.audit_min_agreement,
            strikes=settings.audit_strikes,
        )
        #: Adverts not dialled, by mDNS name: (address, claimed node id, why); the last ``IGNORED_KEPT`` (status).
        self.ignored: collections.OrderedDict[str, tuple[str, str, str]] = collections.OrderedDict()

    @property
    def gate(self) -> AdvertGate | None:
        """The limits on discovered adverts (none without discovery)."""
        return self.browser.gate if self.browser is not None else None

    # -- membership ------------------------------------------------------------------------
    async def start(self) -> None:
        for address in self.settings.nodes:
            self.add(address, address, "static")
        if self.settings.discover:
            members = Membership(self.links, self.add, self.remove, self.ignore, self.spawn)
            self.browser = NodeBrowser(self.settings, members)
            await self.browser.start()
        self._health_task = asyncio.create_task(self._health_loop(), name="node-health")
        self._straggler_task = asyncio.create_task(self._straggler_loop(), name="node-stragglers")

    async def stop(self) -> None:
        for loop in (self._health_task, self._straggler_task):
            if loop is not None:
                loop.cancel()
        if self.browser is not None:
            await self.browser.stop()
        for task in list(self._tasks):
            task.cancel()
        for link in list(self.links.values()):
            await link.close()

    def add(self, key: str, address: str, source: str, node_id: str | None = None) -> None:
        """A node at ``address``; ``node_id`` is the id its advert claims (it must prove it over TLS)."""
        link = self.links.get(key)
        if link is not None and link.quarantined:
            return  # the audit took it out for good
        if link is not None and link.address == address:
            if not link.healthy:
                link.retry_at = 0.0  # an announcement is a good moment to try again
                self.spawn(self._connect(link))
            return
        if link is not None:  # announced at another address: only if the known one no longer answers
            self.spawn(self._moved(link, address, node_id))
            return
        self._create(key, address, source, node_id)

    def _create(self, key: str, address: str, source: str, node_id: str | None) -> None:
        limit = self.settings.max_message_bytes
        link = self._link_factory(
            key,
            address,
            source,
            on_lost=self._lost,
            on_credit=self._notify,
            max_message_bytes=limit,
            tls=self.tls,
            node_id=node_id,
        )
        self.links[key] = link
        if source == "zeroconf" and self.gate is not None:
            self.gate.created(time.monotonic())
        self.spawn(self._connect(link))

    async def _moved(self, link: NodeLink, address: str, node_id: str | None) -> None:
        """A known node announced at another address: kept where it is while it answers its health check
        there (a spoofed announcement changes nothing). Otherwise the new address is tried as well, as a link
        of its own that must prove the same identity before it gets a frame, while the known address keeps
        being retried: a node that only stalled (a GC pause, a busy Pi) while someone announced it elsewhere
        is back as soon as it answers again, never orphaned by the announcement."""
        if link.healthy and await link.check():
            log.warning(
                "ignoring an announcement of node %s at %s: it still answers at %s", link.key, address, link.address
            )
            why = f"node {link.info.node_id} still answers at {link.address}: a second node with its id, or a spoof"
            self.ignore(f"{link.key}@{address}", address, why, node_id or "")
            return
        candidate = f"{link.key}@{address}"
        if candidate not in self.links and self.links.get(link.key) is link:
            log.warning("node %s announced at %s: trying it there too, still at %s", link.key, address, link.address)
            self._create(candidate, address, link.source, node_id)

    def remove(self, key: str, reason: str) -> None:
        link = self.links.pop(key, None)
        if link is not None:
            link.mark_down(reason)
            self.spawn(link.close())
            self._notify()

    def spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task: asyncio.Task[object] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, link: NodeLink) -> None:
        if link.quarantined:
            return
        connected = await link.connect()
        if link.source == "zeroconf" and self.gate is not None:
            if connected:
                self.gate.succeeded(link.address)
            elif link.failures == 1:  # its first dial: an address that does not answer or prove itself backs off
                self.gate.failed(link.address, time.monotonic())
        if connected and "@" in link.key:  # a node proved itself at the address it was announced at anew
            base = self.links.get(link.key.partition("@")[0])
            if base is not None and not base.healthy:
                self.remove(base.key, f"it serves at {link.address} now")
        if connected:
            twin = next(
                (
                    other
                    for other in self.links.values()
                    if other is not link and other.healthy and other.info.node_id == link.info.node_id
                ),
                None,
            )
            if twin is not None:  # two nodes claim one id: the first keeps it, the second is refused
                log.error(
                    "node id %s at %s is already served by %s: refusing the second",
                    link.info.node_id,
                    link.address,
                    twin.address,
                )
                link.mark_down(f"duplicate node id {link.info.node_id} (already at {twin.address})")
                return
            await self._wake()

    def ignore(self, name: str, address: str, why: str, claimed: str = "") -> None:
        """Log an ignored advert once per name and reason (a flood of them stays a few lines) and keep the
        last few for ``posefleet status``."""
        if self.ignored.get(name, ("", "", ""))[2] != why:
            log.warning("ignoring the advert of %s at %s: %s", name, address, why)
        self.ignored[name] = (address, claimed, why)
        self.ignored.move_to_end(name)
        while len(self.ignored) > IGNORED_KEPT:
            self.ignored.popitem(last=False)

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health_interval_s)
            now = time.monotonic()
            for link in list(self.links.values()):
                overdue = link.credits.oldest_pending_s(now) if link.healthy else 0.0
                if link.healthy and link.trust.revoked():  # the revocation list changed: out before its next frame
                    link.mark_down(f"its certificate (serial {link.trust.cert_serial:x}) is revoked")
                elif overdue > self.settings.node_answer_timeout_s:
                    # Healthy by its own word, but not answering: out, its frames to other nodes.
                    link.mark_down(f"no answer to a frame for {overdue:.1f} s")
                elif link.healthy:
                    self.spawn(link.check())
                elif not link.quarantined:
                    backoff = min(
                        self.settings.backoff_max_s, self.settings.backoff_initial_s * 2 ** max(0, link.failures - 1)
                    )
                    if link.source == "zeroconf" and not link.info.node_id and self.gate is not None:
                        backoff = self.gate.backoff_s(link.failures)  # an advert that never answered: up to minutes
                    elif now - link.out_since < RECOVERY_WATCH_S:  # it served until lately: a stall may end soon
                        backoff = min(backoff, RECOVERY_PROBE_S)
                    if now >= link.retry_at + backoff:
                        link.retry_at = now
                        self.spawn(self._connect(link))

    async def _straggler_loop(self) -> None:
        """A frame a node holds much longer than it usually takes also goes to another node with a free
        credit (the first answer wins): a node that stalls costs its cameras a fraction of a second, not
        ``node_answer_timeout_s``, and it is taken out when that passes."""
        while True:
            await asyncio.sleep(STRAGGLER_TICK_S)
            now = time.monotonic()
            for link in list(self.links.values()):
                if not link.healthy:
                    continue
                for job in link.credits.stragglers(now, self.settings.straggler_after_s):
                    other = self._pick_for(job, job.tried)
                    if other is None or other.key in job.tried:
                        break
                    other.submit(job)
                    self.stragglers_resent += 1

    # -- routing ---------------------------------------------------------------------------
    def _notify(self) -> None:
        if self._waiters:  # nobody waits for a credit most of the time: no task per frame then
            self.spawn(self._wake())

    async def _wake(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _pick(
        self, selector: pose_pb2.ModelSelector, exclude: set[str], size: int = 0, cost: int = 1
    ) -> NodeLink | None:
        best: NodeLink | None = None
        for link in self.links.values():
            if (
                link.key in exclude
                or not link.has_credit(cost)
                or not link.serves(selector)
                or size > link.max_frame_bytes
            ):
                continue
            if best is None or link.credits.rank() < best.credits.rank():
                best = link
        return best

    def serving(self, selector: pose_pb2.ModelSelector) -> list[NodeLink]:
        return [link for link in self.links.values() if link.available and link.serves(selector)]

    def _over_share(self, camera: str, cost: int) -> bool:
        """Whether ``camera``'s next frame would take node credits the other cameras need (``FairShares``)."""
        largest = max((link.credits.capacity for link in self.links.values()), default=1)
        total = sum(link.credits.capacity for link in self.links.values() if link.available)
        return self.shares.over(camera, cost, largest, total)

    async def acquire(
        self,
        selector: pose_pb2.ModelSelector,
        deadline: float,
        *,
        exclude: set[str] | None = None,
        size: int = 0,
        cost: int = 1,
        camera: str = "",
    ) -> NodeLink:
        """Wait for the least-loaded matching node with a free credit (until ``deadline``, monotonic), within
        ``camera``'s fair share."""
        exclude = exclude or set()
        no_node_since: float | None = None
        self.shares.saw(camera, cost)
        async with self._changed:
            while True:
                link = None
                if not self._over_share(camera, cost):
                    link = self._pick(selector, exclude, size, cost) or (
                        self._pick(selector, set(), size, cost) if exclude else None
                    )
                if link is not None:
                    return link
                now = time.monotonic()
                if not self.serving(selector):
                    no_node_since = no_node_since or now
                    if now - no_node_since >= self.settings.no_node_wait_s:
                        raise NoNode(_no_node_message(selector, self.links))
                else:
                    no_node_since = None
                if now >= deadline:
                    raise NoNode("no node had a free slot before the frame's deadline")
                self._waiters += 1
                try:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), timeout=min(0.25, max(0.0, deadline - now)))
                finally:
                    self._waiters -= 1

    def _pick_for(self, job: Job, exclude: set[str]) -> NodeLink | None:
        """A node with a free credit for ``job`` now, none of ``exclude`` (a straggler's or an audit's copy)."""
        return self._pick(job.frame.model, exclude, job.frame.ByteSize(), job.cost)

    def _node_of(self, node_id: str) -> NodeLink | None:
        return next((link for link in self.links.values() if link.info.node_id == node_id), None)

    def _hold(self, job: Job, link: NodeLink) -> None:
        """Count ``job`` in its camera's share until it is answered (once, whatever its retries)."""
        if job.share:
            return
        camera = job.frame.camera_id
        job.share = min(job.cost, link.credits.capacity)
        self.shares.hold(camera, job.share)

        def release(future: asyncio.Future[pose_pb2.PoseResult]) -> None:
            self.shares.release(camera, job.share)
            self._notify()
            if not future.cancelled():
                self.auditor.answered(job, future.result())

        job.future.add_done_callback(release)

    def _lost(self, link: NodeLink, jobs: list[Job], reason: str) -> None:
        """Frames a node could not answer: each goes to another node once, or comes back FAILED."""
        for job in jobs:
            if job.done or job.in_flight:  # answered, or its straggler copy is still on another node
                continue
            if job.attempts >= 2:
                job.fail(grpc.StatusCode.UNAVAILABLE, f"{reason} (already retried once)")
            else:
                self.spawn(self.dispatch(job, reason))
        self._notify()

    async def dispatch(self, job: Job, retry_reason: str = "") -> None:
        """Put ``job`` on the least-loaded matching node with a free credit, or resolve it FAILED.

        The one path of every frame to a node (camera streams, unary Estimate, retries). A job answered
        meanwhile (a camera dropped it for a newer frame) is not sent.
        """
        size = job.frame.ByteSize()
        limits = [link.max_frame_bytes for link in self.serving(job.frame.model)]
        if limits and size > max(limits):  # this frame alone fails; the node streams never see it
            job.fail(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"frame of {size / 2**20:.1f} MiB is above what any node accepts ({max(limits) / 2**20:.1f} MiB)",
            )
            return
        try:
            link = await self.acquire(
                job.frame.model, job.deadline, exclude=job.tried, size=size, cost=job.cost, camera=job.frame.camera_id
            )
        except NoNode as exc:
            job.fail(grpc.StatusCode.UNAVAILABLE, f"{retry_reason}; {exc}" if retry_reason else str(exc))
            return
        if not job.done:
            self._hold(job, link)
            link.submit(job)


def _no_node_message(selector: pose_pb2.ModelSelector, links: dict[str, NodeLink]) -> str:
    wanted = selector.model_id or selector.family or "any model"
    if not links:
        return f"no node is known (none discovered or configured) for {wanted}"
    return f"no available node serves {wanted} ({len(links)} known)"
