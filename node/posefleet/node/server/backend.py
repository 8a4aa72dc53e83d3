"""What the node's servicer needs of an inference backend (the OpenVINO pipeline or the simulated one)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from posefleet.node.engine.families import U8Image
from posefleet.node.engine.types import PoseResult


class Backend(Protocol):
    """Admission control plus ``submit(load)`` -> a future of poses."""

    max_inflight: int
    inflight: int
    requests: int

    def admit(self) -> None:
        """Take one in-flight slot or raise ``AtCapacity``; pair with ``release``."""

    def release(self) -> None: ...

    def submit(self, load: Callable[[], U8Image], stream: str | None = None) -> asyncio.Future[PoseResult]:
        """Queue one admitted frame whose image ``load`` decodes; ``stream`` is its camera."""

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no frame is in flight; False if the timeout passed first."""

    def close(self) -> None: ...
