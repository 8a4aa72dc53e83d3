"""Auditing nodes: a stolen node certificate that answers plausibly (poses, just wrong ones) passes every
check a single answer allows. A small share of answered frames (``audit_share``) is sent again to another
node serving the same model, with spare credits only; when the two answers disagree (``agreement`` below
``audit_min_agreement``; two honest nodes agree to numeric noise), a third node referees, and the node that
disagrees with the referee gets a strike. A node with ``audit_strikes`` strikes among its last
``AUDIT_WINDOW`` judged audits is quarantined: out, never dialled again until the coordinator restarts, and
reported (its ``last_error``, the log, ``posefleet status``). No anchor does this.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
from collections.abc import Callable, Coroutine
from typing import Any

import grpc
from posefleet.coordinator.jobs import Job
from posefleet.coordinator.keypoint_arrays import keypoint_arrays
from posefleet.coordinator.links import NodeLink
from posefleet.merge.agreement import agreement
from posefleet.v1 import pose_pb2

log = logging.getLogger("posefleet.coordinator.audit")
AUDIT_WINDOW = 10
AUDIT_TIMEOUT_S = 5.0


class Auditor:
    def __init__(
        self,
        pick: Callable[[Job, set[str]], NodeLink | None],
        node: Callable[[str], NodeLink | None],
        spawn: Callable[[Coroutine[Any, Any, object]], None],
        *,
        share: float,
        min_agreement: float,
        strikes: int,
    ) -> None:
        """``pick``: a node with a spare credit for a job, but none of those named; ``node``: the node of an id."""
        self._pick, self._node, self._spawn = pick, node, spawn
        self.share, self.min_agreement, self.strikes = share, min_agreement, strikes
        self._random = random.Random()
        self._judged: dict[str, collections.deque[bool]] = {}  # per node: struck or not, last AUDIT_WINDOW

    def answered(self, job: Job, result: pose_pb2.PoseResult) -> None:
        """A frame answered: audit it with probability ``share`` (drawn first: most answers cost nothing more)."""
        if self.share <= 0 or self._random.random() >= self.share or result.status != pose_pb2.RESULT_STATUS_OK:
            return
        link = self._node(result.node_id)
        if link is not None and not link.quarantined:
            self._spawn(self._audit(job, link, result))

    async def _second(self, frame: pose_pb2.Frame, exclude: set[str]) -> tuple[NodeLink, pose_pb2.PoseResult] | None:
        """The same frame answered by another node with a spare credit now (None: none, or it failed)."""
        copy = pose_pb2.Frame()
        copy.CopyFrom(frame)
        job = Job.start(copy, AUDIT_TIMEOUT_S)
        other = self._pick(job, exclude)
        if other is None:
            return None
        other.submit(job)
        try:
            result = await asyncio.wait_for(asyncio.shield(job.future), AUDIT_TIMEOUT_S)
        except TimeoutError:
            job.fail(grpc.StatusCode.DEADLINE_EXCEEDED, "audit: no answer in time")
            return None
        return (other, result) if result.status == pose_pb2.RESULT_STATUS_OK else None

    async def _audit(self, job: Job, link: NodeLink, result: pose_pb2.PoseResult) -> None:
        frame = job.frame
        second = await self._second(frame, {link.key})
        if second is None:
            return
        auditor, check = second
        agree = agreement(keypoint_arrays(result), keypoint_arrays(check))
        log.debug("audit: %s and %s agree %.2f", link.info.node_id, auditor.info.node_id, agree)
        if agree >= self.min_agreement:
            self._judge(link, struck=False)
            self._judge(auditor, struck=False)
            return
        third = await self._second(frame, {link.key, auditor.key})
        if third is None:
            log.warning(
                "audit: nodes %s and %s disagree on a frame, and no third node can referee",
                link.info.node_id,
                auditor.info.node_id,
            )
            return
        _, verdict = third
        for node, answer in ((link, result), (auditor, check)):
            self._judge(node, struck=agreement(keypoint_arrays(answer), keypoint_arrays(verdict)) < self.min_agreement)

    def _judge(self, link: NodeLink, *, struck: bool) -> None:
        judged = self._judged.setdefault(link.key, collections.deque(maxlen=AUDIT_WINDOW))
        judged.append(struck)
        if struck and sum(judged) >= self.strikes and not link.quarantined:
            reason = (
                f"quarantined: its answers disagreed with other nodes' in {sum(judged)} of its last {len(judged)} "
                f"audits (a stolen or broken node?); it is not used again until the coordinator restarts"
            )
            log.error("node %s (%s) %s", link.info.node_id or link.key, link.address, reason)
            link.quarantined = reason
            link.mark_down(reason)
