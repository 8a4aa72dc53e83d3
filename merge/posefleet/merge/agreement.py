"""Whether two answers for the same image agree: the poses two nodes found, matched by OKS (COCO sigmas).

Two honest nodes running one model on one image give the same poses up to numeric noise (OKS near 1); a node
that answers plausible but wrong poses does not. ``agreement`` is what the coordinator's audit compares.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from posefleet.merge.tracking import COCO_SIGMAS, bbox

F32 = npt.NDArray[np.float32]


def people(poses: list[F32], min_keypoints: int = 4, min_score: float = 0.3) -> list[F32]:
    """The poses with at least ``min_keypoints`` keypoints scoring ``min_score`` (a decoder's weak fragments
    differ between runs more than people do)."""
    return [p for p in poses if int((p[:, 2] >= min_score).sum()) >= min_keypoints]


def oks(a: F32, b: F32, min_score: float = 0.3) -> float:
    """OKS of two poses over the keypoints both see, with ``a``'s box as the scale."""
    both = (a[:, 2] >= min_score) & (b[:, 2] >= min_score)
    if not both.any():
        return 0.0
    _, _, w, h = bbox(a, min_score)
    d2 = ((a[:, :2] - b[:, :2]) ** 2).sum(-1)
    per_joint = np.exp(-d2 / (2 * (w * h + 1e-6) * (2 * COCO_SIGMAS) ** 2))
    return float(per_joint[both].mean())


def agreement(first: list[F32], second: list[F32]) -> float:
    """1 when both answers hold the same people in the same places, 0 when none match: each person of either
    answer is matched to its best counterpart (greedily, best OKS first); unmatched people count 0. Two
    answers without people agree."""
    a, b = people(first), people(second)
    if not a and not b:
        return 1.0
    if not a or not b:
        return 0.0
    scores = np.array([[oks(p, q) for q in b] for p in a])
    matched, used_a, used_b = [], set(), set()
    for flat in np.argsort(-scores, axis=None):
        i, j = divmod(int(flat), len(b))
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        matched.append(float(scores[i, j]))
    return float(sum(matched) / max(len(a), len(b)))
