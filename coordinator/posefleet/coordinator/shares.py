"""Fair shares of node work between cameras, by what frames cost (``jobs.frame_cost``): the node credits each
camera's unanswered frames hold, and what each camera seen lately keeps reserved between its frames."""

from __future__ import annotations

import collections
import time

#: A camera that asked for a node this recently keeps its last frame's cost reserved.
SHARE_WINDOW_S = 1.0


class FairShares:
    """Who holds which node credits, and whether a camera's next frame would take what others need."""

    def __init__(self) -> None:
        #: Node credits each camera's unanswered frames hold.
        self._held: collections.Counter[str] = collections.Counter()
        #: When each camera last asked for a node and what that frame cost (oldest first, kept for
        #: ``SHARE_WINDOW_S``): reserved for it between its frames.
        self._seen: collections.OrderedDict[str, tuple[float, int]] = collections.OrderedDict()

    def held(self, camera: str) -> int:
        return self._held.get(camera, 0)

    def saw(self, camera: str, cost: int) -> None:
        """``camera`` wants node work of ``cost`` now; cameras silent for ``SHARE_WINDOW_S`` are forgotten."""
        now = time.monotonic()
        if camera:
            self._seen[camera] = (now, cost)
            self._seen.move_to_end(camera)
        while self._seen and next(iter(self._seen.values()))[0] < now - SHARE_WINDOW_S:
            self._seen.popitem(last=False)

    def hold(self, camera: str, credits: int) -> None:
        self._held[camera] += credits

    def release(self, camera: str, credits: int) -> None:
        self._held[camera] -= credits
        if self._held[camera] <= 0:
            del self._held[camera]

    def over(self, camera: str, cost: int, largest: int, total: int) -> bool:
        """Whether ``camera``'s next frame (``cost`` credits, at most ``largest``: one node's capacity) would
        take credits the other cameras need out of the ``total`` the available nodes have.

        Node work is shared by what it costs, and a camera of expensive frames waits (dropping its own oldest
        frames) rather than take them. Each other camera that asked for a node within ``SHARE_WINDOW_S`` keeps
        what it holds, or at least its last frame's cost, reserved: a cheap camera at 15 FPS holds nothing most
        of the time, and without the reservation an expensive one took every node (and the cores decoding for
        it) in those gaps, the cheap camera's frames then waiting for CPU. A camera holding nothing may always
        send one frame, and a frame of one credit is never held back: among cameras of ordinary frames, first
        come first served already shares by frame count (holding them back cost a live scene its windows)."""
        held = self._held.get(camera, 0)
        if not camera or not held or cost <= 1:
            return False
        others = (set(self._held) | set(self._seen)) - {camera}
        if not others:
            return False
        reserved = sum(max(self._held.get(c, 0), min(self._seen.get(c, (0.0, 0))[1], largest)) for c in others)
        return held + min(cost, largest) > total - reserved
