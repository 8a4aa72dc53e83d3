"""A node link's credits: the frames it holds, what they cost, and how fast it answers.

A node earns its credits: after it (re)joins it gets ``SLOW_START_CREDITS`` frames at once and one more per
answer, up to its capacity, so a node that takes frames and never answers holds only a few.
"""

from __future__ import annotations

import itertools
import time

from posefleet.coordinator.jobs import Job

#: Frames a node that has not answered yet may hold at once; each answer adds one, up to its capacity.
SLOW_START_CREDITS = 2


class Credits:
    """The frames one node holds (by the tag each carries on its stream) and the credits they take."""

    def __init__(self) -> None:
        self.capacity = 1
        self.in_flight = 0
        self.in_flight_cost = 0  # credits taken by the frames in flight (``Job.cost``, at most the capacity each)
        self.answered = 0  # since the node last (re)joined: its slow start
        self.answer_s = 0.0  # moving average of the time its answers took
        self.last_used = 0.0
        self._pending: dict[int, tuple[Job, float]] = {}  # tag -> (job, monotonic time sent)
        self._tags = itertools.count()

    def restart(self, capacity: int) -> None:
        """The node (re)joined with ``capacity``: its slow start begins again."""
        self.capacity = max(1, capacity)
        self.answered = 0

    def fits(self, cost: int = 1) -> bool:
        """Whether a frame of ``cost`` credits fits now (a frame costing more than the node's credits goes
        alone, when nothing else is in flight)."""
        limit = min(self.capacity, SLOW_START_CREDITS + self.answered)
        return self.in_flight == 0 or self.in_flight_cost + min(cost, self.capacity) <= limit

    def take(self, job: Job, node: str) -> int:
        """``job`` goes to the node ``node``: its credits are taken; returns the tag its answer will carry."""
        tag = next(self._tags)
        self.last_used = time.monotonic()
        self._pending[tag] = (job, self.last_used)
        self.in_flight += 1
        self.in_flight_cost += min(job.cost, self.capacity)
        job.in_flight += 1
        job.attempts += 1
        job.tried.add(node)
        return tag

    def settle(self, tag: int) -> Job | None:
        """The answer tagged ``tag`` came back: its job, credits given back (None: no frame has that tag)."""
        entry = self._pending.pop(tag, None)
        if entry is None:
            return None
        job, sent = entry
        self.in_flight -= 1
        self.in_flight_cost = max(0, self.in_flight_cost - min(job.cost, self.capacity))
        job.in_flight -= 1
        self.answered += 1
        took = time.monotonic() - sent
        self.answer_s = took if self.answered == 1 else 0.9 * self.answer_s + 0.1 * took
        return job

    def drop_all(self) -> list[Job]:
        """The node is gone: every job it held, credits given back."""
        lost = [job for job, _ in self._pending.values()]
        for job in lost:
            job.in_flight -= 1
        self._pending.clear()
        self.in_flight = 0
        self.in_flight_cost = 0
        return lost

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

    def rank(self) -> tuple[float, float]:
        """Which node a frame goes to, lowest first: the least loaded, then the one unused the longest."""
        return self.load(), self.last_used
