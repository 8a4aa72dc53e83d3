"""Slow subscribers: each one's bounded backlog, and the relay that writes it to its stream.

A subscriber loses its oldest messages rather than slow the cluster, is told how many it lost, and is
ended with RESOURCE_EXHAUSTED once it has been behind for longer than it is allowed. Behind means its
backlog here has not emptied: what the subscriber's gRPC window holds comes first (64 KB with the SDK's
channel options; megabytes where BDP probing is left on, which hides a slow reader's lag in its buffers).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

import grpc
from google.protobuf.message import Message
from posefleet.common.errors import PosefleetError

T = TypeVar("T")


class SubscriberTooSlow(PosefleetError):
    """The subscriber read too slowly and was dropped (answered RESOURCE_EXHAUSTED)."""


class Backlog(Generic[T]):
    """Items waiting for one subscriber, oldest first, at most ``capacity`` of them.

    ``put`` never blocks: when full, the oldest item goes and ``lost`` counts it. ``get`` hands out an
    item with how many were lost just before it. A subscriber whose backlog has not emptied for
    ``max_lag_s`` is dropped: its items are freed, ``dropped`` says why, and ``get`` raises
    ``SubscriberTooSlow``.
    """

    def __init__(self, capacity: int, max_lag_s: float) -> None:
        self._items: collections.deque[T] = collections.deque()
        self._behind_since = 0.0  # when the backlog last went from empty to not empty
        self._capacity = capacity
        self._max_lag_s = max_lag_s
        self._ready = asyncio.Event()
        self.lost = 0  # since the last item handed out
        self.lost_total = 0
        self.dropped: str | None = None
        self.dropped_event = asyncio.Event()

    def put(self, item: T) -> None:
        if self.dropped is not None:
            return
        now = time.monotonic()
        if not self._items:
            self._behind_since = now
        elif len(self._items) >= self._capacity:
            self._items.popleft()
            self.lost += 1
            self.lost_total += 1
        self._items.append(item)
        lag = now - self._behind_since
        if lag > self._max_lag_s:
            self._items.clear()
            self.dropped = (
                f"subscriber too slow: it had not caught up for {lag:.1f} s (limit {self._max_lag_s:g} s) "
                f"and lost {self.lost_total} messages"
            )
            self.dropped_event.set()
        self._ready.set()

    async def get(self) -> tuple[T, int]:
        """The oldest waiting item and the number lost just before it."""
        while not self._items:
            if self.dropped is not None:
                raise SubscriberTooSlow(self.dropped)
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        lost, self.lost = self.lost, 0
        return item, lost


async def relay(messages: AsyncIterator[Message], backlog: Backlog[T], context: grpc.aio.ServicerContext) -> None:
    """Write ``messages`` (read from ``backlog``) to a server stream until the subscriber leaves; once the
    backlog drops it, end the call with RESOURCE_EXHAUSTED, also while a write waits on flow control."""
    dropped = asyncio.ensure_future(backlog.dropped_event.wait())
    try:
        async for message in messages:
            write = asyncio.ensure_future(context.write(message))
            await asyncio.wait({write, dropped}, return_when=asyncio.FIRST_COMPLETED)
            if not write.done():
                write.cancel()
                break
            write.result()
    except SubscriberTooSlow:
        pass
    finally:
        dropped.cancel()
    if backlog.dropped is not None:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, backlog.dropped)
