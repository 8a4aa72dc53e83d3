"""The shape of a COCO-17 skeleton: its bones, their lengths, and each person's lengths learned online."""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

#: The 8 limb bones (COCO indices): upper arms, forearms, thighs, shins; left then right.
LIMB_BONES: tuple[tuple[int, int], ...] = ((5, 7), (7, 9), (6, 8), (8, 10), (11, 13), (13, 15), (12, 14), (14, 16))
#: Every bone whose length a person keeps: the limbs, plus shoulders, hips and the trunk's sides.
BONES: tuple[tuple[int, int], ...] = (*LIMB_BONES, (5, 6), (11, 12), (5, 11), (6, 12))
#: Each bone's twin on the other side (a person's left and right bones are learned as one length).
TWIN = (2, 3, 0, 1, 6, 7, 4, 5, 8, 9, 11, 10)
#: Lengths no person's bone has (metres; generous: children to tall adults), in ``BONES`` order.
PLAUSIBLE = np.array(
    [(0.12, 0.45), (0.10, 0.40)] * 2 + [(0.18, 0.62), (0.18, 0.62)] * 2 + [(0.12, 0.55), (0.06, 0.45)]
    + [(0.20, 0.80)] * 2
)  # fmt: skip
#: Limb bone lengths as a fraction of body height (Drillis and Contini's segment proportions, as in Winter's
#: Biomechanics): upper arm, forearm, thigh, shank; a bone not yet learned is expected at its share of the
#: height its learned bones imply, with twice the tolerance (people's proportions vary).
PROPORTION = np.array([0.186, 0.146, 0.186, 0.146, 0.245, 0.246, 0.245, 0.246] + [np.nan] * 4)
#: Before any limb bone of a person is learned, limbs are expected at their share of this height (metres), within
#: ``PRIOR_TOLERANCE`` of it (1.70 m +- 35%: 1.1 to 2.3 m tall), for the first ``PRIOR_LEARNS`` learns. One limb
#: learned gives the person's own height; a person none of whose limbs fits (a small child) learns none while
#: it holds, and after those learns only the plausible lengths apply.
PRIOR_HEIGHT = 1.70
PRIOR_TOLERANCE = 0.35
PRIOR_LEARNS = 60
#: COCO keypoint order with left and right exchanged (a 2D pose whose sides a model mixed up).
MIRROR = np.array([0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15])
_A = np.array([a for a, _ in BONES])
_TWIN = np.array(TWIN)
_B = np.array([b for _, b in BONES])
#: One bone of each twin pair (and the bones that are their own twin): a pair's samples are one set.
_FIRST = [b for b, twin in enumerate(TWIN) if b <= twin]
_SET_OF = [_FIRST.index(min(b, twin)) for b, twin in enumerate(TWIN)]  # bone -> its set
#: A bone that is its own twin (shoulder and hip widths) counts each sample twice towards ``min_samples``: a
#: skeleton gives it one where it gives a pair two, and both are trusted after as many skeletons.
_WEIGHT = [2 if TWIN[b] == b else 1 for b in _FIRST]
_SHARE = PROPORTION.tolist()
_ROWS = np.arange(len(BONES))
_LOW, _HIGH = PLAUSIBLE[:, 0].copy(), PLAUSIBLE[:, 1].copy()
_LOW_OF, _HIGH_OF = _LOW.tolist(), _HIGH.tolist()
_LIMBS = len(LIMB_BONES)
_INCIDENCE = np.zeros((len(BONES), 17), np.int64)  # bone -> its two COCO joints
_INCIDENCE[_ROWS, _A] = 1
_INCIDENCE[_ROWS, _B] = 1


def bone_lengths(points: F64, bones: tuple[tuple[int, int], ...] = LIMB_BONES) -> F64:
    """Lengths of ``bones`` of skeletons (..., J, 3) -> (..., B); NaN where an end is missing."""
    if bones is BONES:
        a, b = _A, _B
    else:
        a = np.array([i for i, _ in bones])
        b = np.array([j for _, j in bones])
    diff = points[..., a, :] - points[..., b, :]
    return np.sqrt((diff * diff).sum(-1))  # type: ignore[no-any-return]


class Bounds(NamedTuple):
    """What a person's bones (``BONES`` order) should measure, in metres: the expected length and how far off
    it may be (NaN: anything plausible), and how far a limb may be off its twin while its length is a guess
    (NaN: learned, or no guess; None: no limb's length is a guess)."""

    expected: F64
    slack: F64
    twin_slack: F64 | None


def bones_off(points: F64, expected: F64, slack: F64, twin_slack: F64 | None = None) -> npt.NDArray[np.bool_]:
    """(..., B) the bones of skeletons (..., J, 3) whose length is implausible or further than ``slack`` from
    ``expected`` (..., B); and, where ``twin_slack`` is given, a limb whose length is still a guess that differs
    from its twin (the same limb on the other side) by more than that, the one of the two further from the
    guess: a person's left and right limbs are as long, which a guess of their length cannot tell."""
    diff = points[..., _A, :] - points[..., _B, :]
    now = np.sqrt((diff * diff).sum(axis=-1))  # NaN compares False
    off: npt.NDArray[np.bool_] = (now < _LOW) | (now > _HIGH) | (np.abs(now - expected) > slack)
    if twin_slack is not None:
        far = np.abs(now - expected)
        off |= (np.abs(now - now[..., _TWIN]) > twin_slack) & (far > far[..., _TWIN])
    return off


def blame(
    points: F64, error_px: F64, expected: F64, slack: F64, twin_slack: F64 | None = None
) -> npt.NDArray[np.bool_]:
    """(P, J) the joints of skeletons (P, J, 3) to blame for their bones that are off (``bones_off``): a limb
    bone's outer end (the elbow, not the shoulder the trunk holds in place); a trunk bone's end with more bones
    off, else the one that reprojects worse (``error_px`` (P, J))."""
    off = bones_off(points, expected, slack, twin_slack)
    blamed = np.zeros(points.shape[:2], bool)
    if not off.any():
        return blamed
    limb = off[:, :_LIMBS]
    blamed[:, _B[:_LIMBS]] |= limb
    trunk = off[:, _LIMBS:]
    if trunk.any():
        count = off.astype(np.int64) @ _INCIDENCE  # (P, J) bones off at each joint
        errors = np.where(np.isnan(error_px), 0.0, error_px)
        a, z = _A[_LIMBS:], _B[_LIMBS:]
        first = (count[:, a] > count[:, z]) | ((count[:, a] == count[:, z]) & (errors[:, a] >= errors[:, z]))
        rows, bones = np.nonzero(trunk)
        blamed[rows, np.where(first[rows, bones], a[bones], z[bones])] = True
    return blamed


class BoneModel:
    """One person's bone lengths, learned online: the median of the last ``window`` plausible measurements of
    each bone and its twin on the other side, trusted once there are ``min_samples`` of them.

    ``violations`` names the joints whose bones break that shape by more than ``tolerance`` (a fraction of
    the learned length) or have a length no person has."""

    def __init__(self, window: int = 120, min_samples: int = 10, tolerance: float = 0.2) -> None:
        self.window = window
        self.min_samples = min_samples
        self.tolerance = tolerance
        self._samples = [deque[float](maxlen=window) for _ in BONES]  # each bone's last ``window`` samples
        # Each twin pair's samples kept sorted (a sample in at ``learn``, the one leaving its window out): the
        # median is read at every learn for a few microseconds, where sorting the windows cost ~30 (measured).
        self._sorted: list[list[float]] = [[] for _ in _FIRST]
        self._learned: list[float] | None = None  # each bone's median (NaN until trusted), after a learn
        self._bounds: Bounds | None = None
        self._learn_count = 0

    def _medians(self) -> list[float]:
        """Each bone's learned length (NaN until trusted), in plain floats: a dozen of them are read faster
        than numpy calls on them (this runs for every person of every window)."""
        if self._learned is None:
            sets = [
                (values[(len(values) - 1) // 2] + values[len(values) // 2]) / 2
                if len(values) * weight >= self.min_samples
                else math.nan
                for values, weight in zip(self._sorted, _WEIGHT, strict=True)
            ]
            self._learned = [sets[row] for row in _SET_OF]
        return self._learned

    def lengths(self) -> F64:
        """The learned length of each bone of ``BONES`` (NaN until trusted)."""
        return np.array(self._medians())

    def bounds(self) -> Bounds:
        """Each bone's expected length and how far off it may be. The length: learned, else its share of the
        height the learned limb bones imply (then twice the tolerance), else, for a limb in the first
        ``PRIOR_LEARNS`` learns, its share of ``PRIOR_HEIGHT`` (within ``PRIOR_TOLERANCE``), else NaN. A limb
        whose length is such a guess may differ from its twin by the tolerance. Computed once per ``learn``."""
        if self._bounds is not None:
            return self._bounds
        expected = list(self._medians())
        tolerance = [self.tolerance] * len(BONES)
        twin = [math.nan] * len(BONES)
        ratios = sorted(expected[b] / _SHARE[b] for b in range(_LIMBS) if not math.isnan(expected[b]))
        if ratios:
            height: float | None = (ratios[(len(ratios) - 1) // 2] + ratios[len(ratios) // 2]) / 2  # their median
            guess_tolerance = 2 * self.tolerance
        elif self._learn_count < PRIOR_LEARNS:
            height, guess_tolerance = PRIOR_HEIGHT, PRIOR_TOLERANCE
        else:
            height = None
        if height is not None:
            for b in range(_LIMBS):
                if math.isnan(expected[b]):  # not learned
                    expected[b] = _SHARE[b] * height
                    tolerance[b] = guess_tolerance
                    twin[b] = self.tolerance * expected[b]
        lengths = np.array(expected)
        guessing = any(not math.isnan(t) for t in twin)
        self._bounds = Bounds(lengths, np.array(tolerance) * lengths, np.array(twin) if guessing else None)
        return self._bounds

    def violations(self, points: F64, error_px: F64 | None = None) -> npt.NDArray[np.bool_]:
        """(J,) the joints to blame for the bones that are off (``blame``)."""
        errors = np.zeros(points.shape[0]) if error_px is None else error_px
        expected, slack, twin = self.bounds()
        twins = None if twin is None else twin[None]
        blamed: npt.NDArray[np.bool_] = blame(points[None], errors[None], expected[None], slack[None], twins)[0]
        return blamed

    def learn(self, points: F64) -> None:
        """Add this skeleton's plausible bones (those with both ends), unless far (twice the tolerance) from a
        length already learned: a person whose shape was learned wrong still converges, slowly."""
        now = bone_lengths(points, BONES).tolist()
        learned, far = self._medians(), 2 * self.tolerance
        for bone, length in enumerate(now):
            usual = learned[bone]
            if not _LOW_OF[bone] <= length <= _HIGH_OF[bone] or abs(length - usual) > far * usual:  # NaN: False
                continue
            ring, values = self._samples[bone], self._sorted[_SET_OF[bone]]
            if len(ring) == self.window:  # the oldest sample leaves the window (``append`` drops it)
                del values[bisect_left(values, ring[0])]
            ring.append(length)
            insort(values, length)
        self._learn_count += 1
        self._learned = self._bounds = None
