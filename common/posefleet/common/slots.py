"""Bounded shares of a server: at most so many long calls per identity and in all (streams, viewers)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from posefleet.common.errors import PosefleetError


class SlotsFull(PosefleetError):
    """No slot is left for this holder (its own share, or everyone's); answered RESOURCE_EXHAUSTED or 503."""


class Slots:
    """At most ``per_holder`` slots held at once by one identity and ``total`` by everyone. The table holds
    only holders with a slot, so it is bounded by ``total``. Holders of an ``unlimited`` role (admins) count
    toward the total only."""

    def __init__(self, what: str, per_holder: int, total: int) -> None:
        self.what, self.per_holder, self.total = what, per_holder, total
        self.held: dict[str, int] = {}
        self.count = 0

    def take(self, holder: str, *, unlimited: bool = False) -> None:
        """One slot for ``holder``, or ``SlotsFull`` saying whose share is used up."""
        if self.count >= self.total:
            raise SlotsFull(f"at most {self.total} {self.what} at once on this server; try again later")
        if not unlimited and self.held.get(holder, 0) >= self.per_holder:
            raise SlotsFull(f"{holder} holds {self.per_holder} {self.what} already, its limit; close one first")
        self.held[holder] = self.held.get(holder, 0) + 1
        self.count += 1

    def give(self, holder: str) -> None:
        left = self.held.get(holder, 0) - 1
        if left < 0:
            return
        self.count -= 1
        if left:
            self.held[holder] = left
        else:
            del self.held[holder]

    @contextmanager
    def hold(self, holder: str, *, unlimited: bool = False) -> Iterator[None]:
        self.take(holder, unlimited=unlimited)
        try:
            yield
        finally:
            self.give(holder)
