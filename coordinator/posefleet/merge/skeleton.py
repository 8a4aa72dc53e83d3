"""The shape of a COCO-17 skeleton: its bones, their lengths, and each person's lengths learned online."""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

#: The 8 limb bones (COCO indices): upper arms, forearms, thighs, shins; left then right.
LIMB_BONES: tuple[tuple[int, int], ...] = ((5, 7), (7, 9), (6, 8), (8, 10), (11, 13), (13, 15), (12, 14), (14, 16))
#: Every bone whose length a person keeps: the limbs, plus shoulders, hips and the trunk's sides.
BONES: tuple[tuple[int, int], ...] = (*LIMB_BONES, (5, 6), (11, 12), (5, 11), (6, 12))
_A = np.array([a for a, _ in BONES])
_B = np.array([b for _, b in BONES])
_LIMB_A = np.array([a for a, _ in LIMB_BONES])
_LIMB_B = np.array([b for _, b in LIMB_BONES])


def bone_lengths(points: F64, bones: tuple[tuple[int, int], ...] = LIMB_BONES) -> F64:
    """Lengths of ``bones`` of skeletons (..., J, 3) -> (..., B); NaN where an end is missing."""
    a = np.array([i for i, _ in bones])
    b = np.array([j for _, j in bones])
    return np.linalg.norm(points[..., a, :] - points[..., b, :], axis=-1)  # type: ignore[no-any-return]


class BoneModel:
    """One person's bone lengths, learned online: the median of the last ``window`` measurements of each bone.

    A bone is trusted once it has ``min_samples`` measurements; ``violations`` names the joints whose bones
    break that shape by more than ``tolerance`` (a fraction of the learned length)."""

    def __init__(self, window: int = 120, min_samples: int = 10, tolerance: float = 0.25) -> None:
        self.window = window
        self.min_samples = min_samples
        self.tolerance = tolerance
        self._samples: list[deque[float]] = [deque(maxlen=window) for _ in BONES]

    def lengths(self) -> F64:
        """The learned length of each bone of ``BONES`` (NaN until trusted)."""
        return np.array(
            [float(np.median(s)) if len(s) >= self.min_samples else np.nan for s in self._samples], np.float64
        )

    def violations(self, points: F64) -> npt.NDArray[np.bool_]:
        """(J,) joints at an end of a bone whose length is off by more than the tolerance; a joint is blamed
        only when every trusted bone it has is off, or its only trusted bone is (so a wrong elbow does not
        take the shoulder with it)."""
        learned = self.lengths()
        now = bone_lengths(points, BONES)
        with np.errstate(invalid="ignore"):
            off = np.abs(now - learned) > self.tolerance * learned  # NaN compares False
        checked = np.isfinite(learned) & np.isfinite(now)
        joints = points.shape[0]
        bad = np.zeros(joints, int)
        total = np.zeros(joints, int)
        np.add.at(bad, _A[off], 1)
        np.add.at(bad, _B[off], 1)
        np.add.at(total, _A[checked], 1)
        np.add.at(total, _B[checked], 1)
        return (total > 0) & (bad == total)  # type: ignore[no-any-return]

    def learn(self, points: F64) -> None:
        """Add this skeleton's bones (those with both ends) to the samples."""
        for samples, length in zip(self._samples, bone_lengths(points, BONES).tolist(), strict=True):
            if np.isfinite(length) and length > 0:
                samples.append(length)
