"""Per-camera tracking: a persistent ``track_id`` for every pose while its person stays in view.

The algorithm of tfjs-models' pose-detection keypoint tracker: the similarity of a pose and a track is
the object keypoint similarity (OKS, COCO sigmas, the track's box area as scale) over keypoints both see
with score >= ``keypoint_confidence`` (at least ``min_keypoints`` of them); poses take the free track of
highest similarity >= ``min_similarity``, strongest pose first (greedy); unmatched poses open new tracks;
tracks unseen for ``max_age_ms`` end, and at most ``max_tracks`` live. Where too few keypoints are
confident for OKS, the similarity falls back to the IoU of the two boxes. Optional One-Euro smoothing of
each track's keypoints. Poses scoring below ``min_pose_score`` are not tracked (track id 0), so a
decoder's faint duplicate of a person cannot take that person's track.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from posefleet.merge.filters import OneEuroFilter, OneEuroParams

F32 = npt.NDArray[np.float32]
#: COCO keypoint sigmas (pycocotools), nose first.
COCO_SIGMAS = np.array(
    [0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089,
     0.089],
    dtype=np.float64,
)  # fmt: skip


@dataclass(frozen=True)
class TrackerParams:
    """Tracking knobs; the defaults are tfjs-models' keypoint tracker's."""

    min_similarity: float = 0.2
    #: Weaker poses (a bottom-up decoder's stray candidates) are not tracked: track id 0.
    min_pose_score: float = 0.25
    keypoint_confidence: float = 0.3
    min_keypoints: int = 4
    max_tracks: int = 18
    max_age_ms: float = 1000.0
    #: Smooth each track's keypoints with a One-Euro filter (adds no frame of latency; see docs/merge.md).
    smoothing: bool = False
    one_euro: OneEuroParams = field(default_factory=OneEuroParams)


def bbox(keypoints: F32, min_score: float = 0.3) -> tuple[float, float, float, float]:
    """(x, y, width, height) around the keypoints scoring >= ``min_score`` (all found keypoints when fewer
    than 4 are that confident)."""
    seen = keypoints[keypoints[:, 2] >= min_score]
    if len(seen) < 4:
        seen = keypoints[keypoints[:, 2] > 0]
    if len(seen) == 0:
        return 0.0, 0.0, 0.0, 0.0
    x0, y0 = float(seen[:, 0].min()), float(seen[:, 1].min())
    return x0, y0, float(seen[:, 0].max()) - x0, float(seen[:, 1].max()) - y0


@dataclass
class Track:
    id: int
    keypoints: F32
    box: tuple[float, float, float, float]
    last_ms: float
    smoother: OneEuroFilter | None = None


class PoseTracker:
    """Assigns track ids to the poses of one camera, frame after frame (timestamps in ms, increasing)."""

    def __init__(self, params: TrackerParams | None = None) -> None:
        self.params = params or TrackerParams()
        self.tracks: list[Track] = []
        self._ids = itertools.count(1)

    def similarities(self, poses: F32, boxes: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """(P, T) similarity of every pose and live track: OKS, or box IoU where too few keypoints agree."""
        p = self.params
        if not self.tracks or not len(poses):
            return np.zeros((len(poses), len(self.tracks)))
        kps = np.stack([t.keypoints for t in self.tracks])  # (T, J, 3)
        tboxes = np.array([t.box for t in self.tracks], np.float64)  # (T, 4)
        both = (poses[:, None, :, 2] >= p.keypoint_confidence) & (kps[None, :, :, 2] >= p.keypoint_confidence)
        d2 = ((poses[:, None, :, :2] - kps[None, :, :, :2]) ** 2).sum(-1)  # (P, T, J)
        area = tboxes[:, 2] * tboxes[:, 3] + 1e-6  # (T,)
        oks_j = np.exp(-d2 / (2 * area[None, :, None] * (2 * COCO_SIGMAS) ** 2))
        count = both.sum(-1)
        oks = np.where(both, oks_j, 0).sum(-1) / np.maximum(count, 1)
        # Box IoU
        x0 = np.maximum(boxes[:, None, 0], tboxes[None, :, 0])
        y0 = np.maximum(boxes[:, None, 1], tboxes[None, :, 1])
        x1 = np.minimum(boxes[:, None, 0] + boxes[:, None, 2], tboxes[None, :, 0] + tboxes[None, :, 2])
        y1 = np.minimum(boxes[:, None, 1] + boxes[:, None, 3], tboxes[None, :, 1] + tboxes[None, :, 3])
        inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
        union = (boxes[:, 2] * boxes[:, 3])[:, None] + (tboxes[:, 2] * tboxes[:, 3])[None, :] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
        return np.where(count >= p.min_keypoints, oks, iou)

    def update(self, poses: list[F32], scores: list[float], t_ms: float) -> list[tuple[int, F32]]:
        """Track ids (0: not tracked) and keypoints (smoothed when on) for ``poses``, in their order."""
        p = self.params
        self.tracks = [t for t in self.tracks if t_ms - t.last_ms <= p.max_age_ms]
        out: list[tuple[int, F32]] = [(0, pose) for pose in poses]
        tracked = [i for i in range(len(poses)) if scores[i] >= p.min_pose_score]
        if not tracked:
            return out
        arr = np.stack([poses[i] for i in tracked])
        boxes = np.array([bbox(poses[i], p.keypoint_confidence) for i in tracked], np.float64)
        sim = self.similarities(arr, boxes)
        free = np.ones(len(self.tracks), bool)
        tracks = list(self.tracks)
        for k in sorted(range(len(tracked)), key=lambda k: -scores[tracked[k]]):
            i = tracked[k]
            row = np.where(free, sim[k], -1.0) if tracks else np.empty(0)
            best = int(row.argmax()) if len(row) and row.max() >= p.min_similarity else -1
            box = (float(boxes[k, 0]), float(boxes[k, 1]), float(boxes[k, 2]), float(boxes[k, 3]))
            if best < 0:
                track = Track(next(self._ids), poses[i], box, t_ms)
                if p.smoothing:
                    track.smoother = OneEuroFilter(p.one_euro)
                self.tracks.append(track)
            else:
                free[best] = False
                track = tracks[best]
            keypoints = poses[i]
            if track.smoother is not None:
                xy = track.smoother(keypoints[:, :2], t_ms / 1e3)
                keypoints = np.concatenate([xy, keypoints[:, 2:]], axis=1).astype(np.float32)
            track.keypoints, track.box, track.last_ms = poses[i], box, t_ms
            out[i] = (track.id, keypoints)
        if len(self.tracks) > p.max_tracks:  # keep the most recently seen
            self.tracks = sorted(self.tracks, key=lambda t: -t.last_ms)[: p.max_tracks]
        return out
