"""The One-Euro filter (Casiez et al. 2012), vectorised: one filter state per array element.

Defaults follow MediaPipe/tfjs-models' landmark smoothing (min cut-off 1 Hz, beta 0, derivative
cut-off 1 Hz); they are per-track and per-camera choices, not global constants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class OneEuroParams:
    #: Cut-off frequency (Hz) at zero speed: lower smooths more.
    min_cutoff: float = 1.0
    #: How fast the cut-off grows with speed: higher lags less on fast motion.
    beta: float = 0.0
    #: Cut-off frequency (Hz) of the speed estimate.
    derivative_cutoff: float = 1.0


def _alpha(cutoff: F64 | float, dt: float) -> F64 | float:
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Smooths arrays of one shape over time; timestamps in seconds."""

    def __init__(self, params: OneEuroParams | None = None) -> None:
        self.params = params or OneEuroParams()
        self._x: F64 | None = None
        self._dx: F64 | None = None
        self._t: float | None = None

    def __call__(self, value: npt.ArrayLike, t: float) -> F64:
        """The filtered ``value``; NaN elements stay NaN and keep their state, and an element seen for the
        first time (or after a NaN) starts from its value."""
        x = np.asarray(value, dtype=np.float64)
        if self._x is None or self._t is None or self._dx is None or self._x.shape != x.shape or t <= self._t:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x
        dt = t - self._t
        p = self.params
        seen = np.isfinite(x)
        start = seen & ~np.isfinite(self._x)
        prev = np.where(start, x, self._x)
        dx = np.where(seen, (x - prev) / dt, 0.0)
        a_d = _alpha(p.derivative_cutoff, dt)
        self._dx = np.where(start, 0.0, self._dx + a_d * (dx - self._dx))
        cutoff = p.min_cutoff + p.beta * np.abs(self._dx)
        a = _alpha(cutoff, dt)
        self._x = np.where(seen, prev + a * (x - prev), self._x)
        self._t = t
        return np.where(seen, self._x, np.nan)


def butterworth(points: F64, rate: float, cutoff_hz: float = 6.0, order: int = 4) -> F64:
    """Zero-phase low-pass Butterworth filtering of one person's joints over a recording, as Pose2Sim filters
    its 3D output (defaults: 4th order, 6 Hz). ``points``: (T, J, 3), NaN where a joint is missing; each run of
    consecutive frames a joint is seen in is filtered on its own (runs too short for the filter's padding are
    left as they are), and missing frames stay missing."""
    from scipy.signal import butter, filtfilt

    if not 0 < cutoff_hz < rate / 2:
        raise ValueError(f"the cut-off ({cutoff_hz} Hz) must lie between 0 and half the frame rate ({rate / 2} Hz)")
    b, a = butter(order, cutoff_hz / (rate / 2))
    pad = 3 * max(len(a), len(b))
    out = points.copy()
    seen: npt.NDArray[np.bool_] = np.asarray(np.isfinite(points).all(axis=2))  # (T, J)
    for j in range(points.shape[1]):
        edges = np.flatnonzero(np.diff(np.concatenate([[0], seen[:, j].astype(np.int8), [0]])))
        for start, stop in zip(edges[::2], edges[1::2], strict=True):
            if stop - start > pad:
                out[start:stop, j] = filtfilt(b, a, points[start:stop, j], axis=0)
    return out
