"""A scene's results grouped by capture time: one window per moment, at most one result per camera in it."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from google.protobuf.timestamp_pb2 import Timestamp
from posefleet.v1 import pose_pb2

#: A scene camera silent this long is no longer waited for (its windows close without it).
SILENT_S = 2.0
#: Windows a scene keeps open at most (the oldest leaves when more arrive).
MAX_OPEN_WINDOWS = 32


def stamp_ms(stamp: Timestamp) -> float:
    return stamp.seconds * 1e3 + stamp.nanos / 1e6


@dataclass
class Window:
    """One moment of a scene: its capture-time span (ms) and each camera's result in it."""

    start: float
    end: float
    opened: float  # monotonic
    views: dict[str, pose_pb2.PoseResult] = field(default_factory=dict)
    #: Each camera's poses as arrays, where whoever added the result had them (tracking has).
    poses: dict[str, list[npt.NDArray[np.float32]]] = field(default_factory=dict)


class CaptureWindows:
    """Open windows over a scene's cameras, in capture-time order and never overlapping.

    A window leaves (``add`` and ``flush`` return it) once every camera it waits for is in, once it has waited
    ``max_wait_ms``, or when more than ``MAX_OPEN_WINDOWS`` are open; windows leave in capture-time order, and
    a result whose window has left already is counted ``late`` and dropped.
    """

    def __init__(self, cameras: Iterable[str], window_ms: float, max_wait_ms: float) -> None:
        self.cameras = set(cameras)
        self.configured_ms = window_ms  # 0: one frame period of the slowest streaming camera
        self.max_wait_ms = max_wait_ms
        #: Cameras never waited for (the scene cannot use them: see ``LiveScene.problems``).
        self.excluded: set[str] = set()
        self.last_seen: dict[str, float] = {}  # camera -> monotonic time of its last result
        self.late = 0
        self._last_capture: dict[str, float] = {}
        self._period: dict[str, float] = {}
        self._open: list[Window] = []
        self._started: float | None = None  # the scene's first result
        self._closed_until = -math.inf  # capture time (ms) up to which windows have left

    def window_ms(self) -> float:
        """The configured window, or one frame period of the slowest streaming camera (100 ms until known)."""
        if self.configured_ms:
            return self.configured_ms
        periods = [p for c, p in self._period.items() if c in self.streaming()]
        return float(min(1000.0, max(5.0, *periods))) if periods else 100.0

    def streaming(self) -> set[str]:
        now = time.monotonic()
        return {c for c, t in self.last_seen.items() if now - t < SILENT_S and c not in self.excluded}

    def _expected(self) -> set[str]:
        """Cameras a window waits for: the streaming ones, and at start-up the ones not seen yet."""
        expected = self.streaming()
        if self._started is None or time.monotonic() - self._started < SILENT_S:
            expected |= {c for c in self.cameras if c not in self.last_seen and c not in self.excluded}
        return expected

    def add(self, result: pose_pb2.PoseResult, poses: list[npt.NDArray[np.float32]] | None = None) -> list[Window]:
        """Place one camera's result (and its ``poses`` as arrays, if known); returns the windows that left."""
        camera = result.camera_id
        now = time.monotonic()
        if self._started is None:
            self._started = now
        self.last_seen[camera] = now
        capture = stamp_ms(result.capture_time)
        if camera in self._last_capture and capture > self._last_capture[camera]:
            delta = capture - self._last_capture[camera]
            self._period[camera] = 0.8 * self._period.get(camera, delta) + 0.2 * delta
        self._last_capture[camera] = capture
        if capture < self._closed_until:
            self.late += 1  # its window left already (the camera was slower than max_wait_ms)
            return []
        window = self._window_for(camera, capture)
        window.views[camera] = result
        if poses is not None:
            window.poses[camera] = poses
        return self.flush()

    def _window_for(self, camera: str, capture: float) -> Window:
        """The open window holding ``capture``, or a new one centred on it (clipped by its neighbours).

        A window holds one result per camera: a camera's next frame inside a window it already has a result
        in (before its frame period is known) splits the window between the two frames.
        """
        for window in self._open:
            if window.start <= capture < window.end:
                if camera not in window.views:
                    return window
                mine = stamp_ms(window.views[camera].capture_time)
                window.end = (mine + capture) / 2
                break
        half = self.window_ms() / 2
        before = [w.end for w in self._open if w.end <= capture]
        after = [w.start for w in self._open if w.start > capture]
        start = max([capture - half, self._closed_until, *before])
        end = min([capture + half, *after])
        window = Window(start, end, time.monotonic())
        self._open.append(window)
        self._open.sort(key=lambda w: w.start)
        return window

    def flush(self, force: bool = False) -> list[Window]:
        """The windows that leave now (all, with ``force``), oldest first."""
        expected = self._expected()
        now = time.monotonic()
        leaving: list[Window] = []
        while self._open:
            window = self._open[0]
            overdue = now - window.opened > self.max_wait_ms / 1e3
            complete = expected <= set(window.views)
            if not (force or overdue or complete or len(self._open) > MAX_OPEN_WINDOWS):
                break  # windows leave in capture-time order
            self._open.pop(0)
            # Complete: nothing else belongs to it, so a next frame just after its captures opens the next
            # window (its period may not be known yet). Otherwise its whole span is closed.
            last = max(stamp_ms(r.capture_time) for r in window.views.values())
            self._closed_until = min(window.end, last + 1e-3) if complete else window.end
            leaving.append(window)
        return leaving
