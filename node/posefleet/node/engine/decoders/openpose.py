"""OpenPose decoding (heatmap peaks + part-affinity-field grouping) into COCO-17 poses.

Follows the grouping used by Open Model Zoo's OpenPose wrapper for human-pose-estimation-0001
(18 OpenPose parts incl. the neck, 19 limbs, 38 PAF channels). No maintained PyPI package ships this
decoder any more (openvino-model-api 0.4 dropped its OpenPose model), so it lives here.
Peak scoring and limb sampling are vectorised; only the grouping of accepted limbs loops.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass

F32 = npt.NDArray[np.float32]

#: OpenPose part pairs of each limb, and the PAF channel (x; y is the next one) of each limb.
LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2),
    (1, 5),
    (2, 3),
    (3, 4),
    (5, 6),
    (6, 7),
    (1, 8),
    (8, 9),
    (9, 10),
    (1, 11),
    (11, 12),
    (12, 13),
    (1, 0),
    (0, 14),
    (14, 16),
    (0, 15),
    (15, 17),
    (2, 16),
    (5, 17),
)
PAF_CHANNELS: tuple[int, ...] = (12, 20, 14, 16, 22, 24, 0, 2, 4, 6, 8, 10, 28, 30, 34, 32, 36, 18, 26)
#: OpenPose part -> COCO keypoint index (-1: the neck, which COCO does not have).
OPENPOSE_TO_COCO: tuple[int, ...] = (0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
NUM_PARTS = 18


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class OpenPoseDecodeParams:
    """Grouping knobs (``--decode NAME=VALUE`` on the CLI, ``decode`` in settings)."""

    max_peaks: int = 100
    peak_threshold: float = 0.1
    #: A PAF sample counts as aligned with a limb above this score.
    min_paf_score: float = 0.05
    #: Fraction of the samples along a limb that must be aligned.
    min_aligned_ratio: float = 0.8
    samples_per_limb: int = 10
    min_parts: int = 3
    #: Added to peak coordinates before scaling (centre of the heatmap cell).
    delta: float = 0.5


def find_peaks(heatmaps: F32, pooled: F32, params: OpenPoseDecodeParams) -> list[F32]:
    """Per part, peaks as rows (x, y, score, global id), with a quarter-cell refinement."""
    parts, h, w = heatmaps.shape[0], heatmaps.shape[1], heatmaps.shape[2]
    flat = np.where(heatmaps[:NUM_PARTS] == pooled[:NUM_PARTS], heatmaps[:NUM_PARTS], 0).reshape(NUM_PARTS, -1)
    k = min(params.max_peaks, flat.shape[1])
    top = np.argpartition(-flat, k - 1, axis=1)[:, :k]
    peaks: list[F32] = []
    next_id = 0
    for part in range(min(parts, NUM_PARTS)):
        idx = top[part][flat[part, top[part]] > params.peak_threshold]
        idx = idx[np.argsort(-flat[part, idx], kind="stable")]
        y, x = np.divmod(idx, w)
        heat = heatmaps[part]
        xf, yf = x.astype(np.float32), y.astype(np.float32)
        inner = (x > 0) & (x < w - 1) & (y > 0) & (y < h - 1)
        xi, yi = x[inner], y[inner]
        xf[inner] += np.sign(heat[yi, xi + 1] - heat[yi, xi - 1]) * 0.25
        yf[inner] += np.sign(heat[yi + 1, xi] - heat[yi - 1, xi]) * 0.25
        rows = np.empty((len(idx), 4), dtype=np.float32)
        rows[:, 0] = np.clip(xf + params.delta, 0, w - 1)
        rows[:, 1] = np.clip(yf + params.delta, 0, h - 1)
        rows[:, 2] = flat[part, idx]
        rows[:, 3] = np.arange(next_id, next_id + len(idx))
        next_id += len(idx)
        peaks.append(rows)
    return peaks


def _limb_candidates(a: F32, b: F32, paf: F32, params: OpenPoseDecodeParams) -> list[tuple[int, int, float]]:
    """Connections (peak id a, peak id b, affinity) for one limb, greedy one-to-one by affinity."""
    n, m = len(a), len(b)
    h, w = paf.shape[:2]
    vec = b[None, :, :2] - a[:, None, :2]  # (n, m, 2)
    steps = np.linspace(0.0, 1.0, params.samples_per_limb, dtype=np.float32)
    points = a[:, None, None, :2] + vec[:, :, None, :] * steps[None, None, :, None]  # (n, m, s, 2)
    px = np.clip(np.rint(points[..., 0]).astype(np.int64), 0, w - 1)
    py = np.clip(np.rint(points[..., 1]).astype(np.int64), 0, h - 1)
    field = paf[py, px]  # (n, m, s, 2)
    unit = vec / (np.linalg.norm(vec, axis=-1, keepdims=True) + 1e-6)
    alignment = (field * unit[:, :, None, :]).sum(-1)  # (n, m, s)
    aligned = alignment > params.min_paf_score
    count = aligned.sum(-1)
    affinity = (alignment * aligned).sum(-1) / (count + 1e-6)
    ok = (affinity > 0) & (count / params.samples_per_limb > params.min_aligned_ratio)
    ia, ib = np.nonzero(ok)
    if ia.size == 0:
        return []
    scores = affinity[ia, ib]
    order = np.argsort(-scores, kind="stable")
    used_a: set[int] = set()
    used_b: set[int] = set()
    out: list[tuple[int, int, float]] = []
    for t in order.tolist():
        i, j = int(ia[t]), int(ib[t])
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        out.append((int(a[i, 3]), int(b[j, 3]), float(scores[t])))
        if len(used_a) == n or len(used_b) == m:
            break
    return out


def decode(heatmaps: F32, pooled: F32, pafs: F32, params: OpenPoseDecodeParams) -> list[tuple[F32, float]]:
    """Poses in heatmap-cell coordinates: ``(keypoints (17, 3) x, y, score, pose score)``.

    ``heatmaps``/``pooled``: (19, H, W) heatmaps and their 3x3 max-pooled copy; ``pafs``: (38, H, W).
    """
    peaks = find_peaks(heatmaps, pooled, params)
    all_peaks = np.concatenate(peaks, axis=0) if peaks else np.empty((0, 4), np.float32)
    paf_hwc = np.ascontiguousarray(pafs.transpose(1, 2, 0))
    # Each entry: 18 peak ids (-1 = missing), total score, part count.
    entries: list[npt.NDArray[np.float64]] = []
    for (pa, pb), channel in zip(LIMBS, PAF_CHANNELS, strict=True):
        if len(peaks[pa]) == 0 or len(peaks[pb]) == 0:
            continue
        connections = _limb_candidates(peaks[pa], peaks[pb], paf_hwc[:, :, channel : channel + 2], params)
        for id_a, id_b, affinity in connections:
            owner_a = owner_b = -1
            for j, entry in enumerate(entries):
                if entry[pa] == id_a:
                    owner_a = j
                if entry[pb] == id_b:
                    owner_b = j
            if owner_a < 0 and owner_b < 0:
                entry = np.full(NUM_PARTS + 2, -1.0)
                entry[pa], entry[pb] = id_a, id_b
                entry[-2] = all_peaks[id_a, 2] + all_peaks[id_b, 2] + affinity
                entry[-1] = 2
                entries.append(entry)
            elif owner_a >= 0 and owner_b >= 0 and owner_a != owner_b:
                first, second = entries[owner_a], entries[owner_b]
                disjoint = np.all((first[:-2] < 0) | (second[:-2] < 0))
                if disjoint:  # merge two partial skeletons joined by this limb
                    merged = np.where(first[:-2] >= 0, first[:-2], second[:-2])
                    first[:-2] = merged
                    first[-2] += second[-2] + affinity
                    first[-1] += second[-1]
                    del entries[owner_b]
            elif owner_a >= 0 and owner_b >= 0:
                entries[owner_a][-2] += affinity
            else:
                owner, part, peak = (owner_a, pb, id_b) if owner_a >= 0 else (owner_b, pa, id_a)
                entry = entries[owner]
                if entry[part] < 0:
                    entry[-2] += all_peaks[peak, 2]
                    entry[-1] += 1
                entry[part] = peak
                entry[-2] += affinity
    poses: list[tuple[F32, float]] = []
    for entry in entries:
        if entry[-1] < params.min_parts:
            continue
        keypoints = np.zeros((17, 3), dtype=np.float32)
        for part, coco in enumerate(OPENPOSE_TO_COCO):
            if coco >= 0 and entry[part] >= 0:
                keypoints[coco] = all_peaks[int(entry[part]), :3]
        # As Open Model Zoo: total score times the number of parts except the neck.
        poses.append((keypoints, float(entry[-2] * max(0.0, entry[-1] - 1))))
    poses.sort(key=lambda p: -p[1])
    return poses
