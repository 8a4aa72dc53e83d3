"""One window of a calibrated scene: the cameras' 2D poses in, 3D people with persistent ids out."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from posefleet.merge.association import AssociationParams, group_poses, pair_costs
from posefleet.merge.calibration import Camera
from posefleet.merge.filters import OneEuroFilter, OneEuroParams
from posefleet.merge.triangulation import reproject, triangulate

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class FusionParams:
    association: AssociationParams = field(default_factory=AssociationParams)
    #: A view whose joint reprojects farther than this (undistorted pixels) is excluded while >= 2 remain.
    max_error_px: float = 15.0
    #: A 3D person matches the track whose mean joint distance is below this (metres).
    max_track_distance_m: float = 0.5
    #: A track unseen for this long ends.
    max_age_ms: float = 1000.0
    #: Two poses of one camera whose confident keypoints lie within this fraction of the pose's size (median)
    #: are one person detected twice (bottom-up decoders do that); the weaker is left out.
    duplicate_distance: float = 0.1
    #: 3D people with fewer triangulated joints are dropped (stray detections that happen to agree).
    min_joints: int = 6
    #: Smooth each 3D person's joints with a One-Euro filter.
    smoothing: bool = False
    one_euro: OneEuroParams = field(default_factory=OneEuroParams)


@dataclass
class Person3D:
    id: int
    points: F64  # (J, 3) metres, world frame; NaN where not triangulated
    score: F64  # (J,)
    error_px: F64  # (J,) mean reprojection error of the views used
    views: npt.NDArray[np.int64]  # (J,) how many views each joint came from
    cameras: dict[str, int]  # camera name -> index of its pose in that camera's list
    used: npt.NDArray[np.bool_]  # (J, C) views used per joint, C in the fuser's camera order
    #: Median reprojection error (undistorted pixels) of the joints each camera contributed.
    camera_error_px: dict[str, float] = field(default_factory=dict)

    @property
    def centroid(self) -> F64:
        return np.nanmean(self.points, axis=0)  # type: ignore[no-any-return]


@dataclass
class SceneFrame:
    persons: list[Person3D]
    #: Poses no other camera confirmed: (camera name, pose index); they stay 2D.
    unassigned: list[tuple[str, int]]


@dataclass
class _Track:
    id: int
    points: F64
    last_ms: float
    smoother: OneEuroFilter | None = None


def distinct_poses(poses: F64, cameras: npt.NDArray[np.int64], min_score: float, max_distance: float) -> list[int]:
    """Indices of the poses (N, J, 3) that are not a weaker duplicate of another pose of the same camera
    (strongest first kept), all cameras at once."""
    n = len(poses)
    seen = poses[..., 2] >= min_score
    high = np.where(seen[..., None], poses[..., :2], -np.inf).max(axis=1)
    low = np.where(seen[..., None], poses[..., :2], np.inf).min(axis=1)
    found = np.asarray(seen.any(axis=1))
    span = np.where(found[:, None], high - low, 0.0)
    size = np.sqrt((span * span).sum(axis=1)) + 1e-6  # (N,) the diagonal of each pose's confident keypoints
    both = seen[:, None] & seen[None, :] & (cameras[:, None] == cameras[None, :])[..., None]  # (N, N, J)
    diff = poses[:, None, :, :2] - poses[None, :, :, :2]
    dist = np.where(both, np.sqrt((diff * diff).sum(-1)), np.inf)
    count = both.sum(-1)
    median = np.take_along_axis(np.sort(dist, axis=-1), np.maximum(count - 1, 0)[..., None] // 2, axis=-1)[..., 0]
    same = (count >= 3) & (median < max_distance * size[:, None]) & ~np.eye(n, dtype=bool)
    kept: list[int] = []
    for i in np.argsort(-np.where(seen, poses[..., 2], 0).sum(axis=1), kind="stable").tolist():
        if seen[i].any() and not same[i, kept].any():
            kept.append(i)
    return sorted(kept)


class SceneFuser:
    """Fuses windows of one scene; ``cameras`` are already fitted to the streamed resolution."""

    def __init__(self, cameras: dict[str, Camera], params: FusionParams | None = None) -> None:
        self.cameras = cameras
        self.names = list(cameras)
        self.params = params or FusionParams()
        self.P = np.stack([cameras[n].P for n in self.names])  # (C, 3, 4)
        self._tracks: list[_Track] = []
        self._ids = itertools.count(1)

    def fuse(self, views: dict[str, list[F32]], t_ms: float) -> SceneFrame:
        """``views``: camera name -> its poses ((J, 3) x, y, score in image pixels) of this window."""
        p = self.params
        candidates: list[tuple[int, int]] = []
        und: list[F64] = []  # per pose: (J, 3) undistorted x, y and score
        for c, name in enumerate(self.names):
            poses = views.get(name, [])
            if not poses:
                continue
            arr = np.asarray(poses, np.float64)
            xy = self.cameras[name].undistort(arr[..., :2].reshape(-1, 2)).reshape(arr.shape[0], arr.shape[1], 2)
            und.extend(np.concatenate([xy, arr[..., 2:]], axis=2))
            candidates.extend((c, i) for i in range(arr.shape[0]))
        keep = (
            distinct_poses(
                np.stack(und), np.array([c for c, _ in candidates]), p.association.min_score, p.duplicate_distance
            )
            if und
            else []
        )
        refs = [candidates[k] for k in keep]
        und = [und[k] for k in keep]
        persons: list[Person3D] = []
        grouped: set[tuple[int, int]] = set()
        if refs:
            poses_arr = np.stack(und)  # (N, J, 3)
            cams = np.array([c for c, _ in refs])
            dirs = np.empty((len(refs), poses_arr.shape[1], 3))
            for c in set(cams.tolist()):
                rows = cams == c
                cam = self.cameras[self.names[c]]
                dirs[rows] = cam.rays(poses_arr[rows, :, :2].reshape(-1, 2)).reshape(int(rows.sum()), -1, 3)
            centers = np.stack([self.cameras[self.names[c]].center for c in cams])
            seen = poses_arr[..., 2] >= p.association.min_score
            groups = group_poses(pair_costs(refs, centers, dirs, seen, p.association), p.association)
            index = {ref: k for k, ref in enumerate(refs)}
            persons = self._triangulate(groups, poses_arr, index)
            kept = []
            for person, group in zip(persons, groups, strict=True):
                if int(np.isfinite(person.points).all(axis=1).sum()) >= p.min_joints:
                    grouped.update(group)
                    kept.append(person)
            persons = kept
        self._track(persons, t_ms)
        unassigned = [(self.names[c], i) for c, i in refs if (c, i) not in grouped]
        return SceneFrame(persons, unassigned)

    def _triangulate(
        self, groups: list[list[tuple[int, int]]], poses: F64, index: dict[tuple[int, int], int]
    ) -> list[Person3D]:
        """All groups in one batched triangulation."""
        if not groups:
            return []
        g, j, c = len(groups), poses.shape[1], len(self.names)
        xy = np.full((g, j, c, 2), np.nan)
        score = np.zeros((g, j, c))
        for k, group in enumerate(groups):
            for cam, i in group:
                xy[k, :, cam] = poses[index[(cam, i)], :, :2]
                score[k, :, cam] = poses[index[(cam, i)], :, 2]
        p = self.params
        tri = triangulate(
            self.P,
            xy.reshape(g * j, c, 2),
            score.reshape(g * j, c),
            min_score=p.association.min_score,
            max_error_px=p.max_error_px,
        )
        points = tri.points.reshape(g, j, 3)
        used = tri.used.reshape(g, j, c)
        errors = np.linalg.norm(reproject(self.P, tri.points) - np.nan_to_num(xy.reshape(g * j, c, 2)), axis=2)
        errors = errors.reshape(g, j, c)
        # Per camera: mean reprojection error of the joints it contributed (the status reports its median).
        with np.errstate(invalid="ignore"):
            cam_err = np.where(used, errors, 0.0).sum(axis=1) / used.sum(axis=1)  # (G, C)
        persons = []
        for k, group in enumerate(groups):
            camera_error = {self.names[cam]: float(cam_err[k, cam]) for cam, _ in group if used[k, :, cam].any()}
            persons.append(
                Person3D(
                    0,
                    points[k],
                    tri.score.reshape(g, j)[k],
                    tri.error_px.reshape(g, j)[k],
                    used[k].sum(axis=1),
                    {self.names[cam]: i for cam, i in group},
                    used[k],
                    camera_error,
                )
            )
        return persons

    def _track(self, persons: list[Person3D], t_ms: float) -> None:
        p = self.params
        self._tracks = [t for t in self._tracks if t_ms - t.last_ms <= p.max_age_ms]
        pairs = []
        if persons and self._tracks:
            now = np.stack([person.points for person in persons])[:, None]  # (P, 1, J, 3)
            before = np.stack([track.points for track in self._tracks])[None]  # (1, T, J, 3)
            both = np.isfinite(now).all(-1) & np.isfinite(before).all(-1)  # (P, T, J)
            dist = np.where(both, np.linalg.norm(np.nan_to_num(now - before), axis=-1), 0.0)
            mean = dist.sum(-1) / np.maximum(both.sum(-1), 1)
            ok = (both.sum(-1) >= 3) & (mean <= p.max_track_distance_m)
            pairs = [(float(mean[a, b]), int(a), int(b)) for a, b in zip(*np.nonzero(ok), strict=True)]
        taken_p: set[int] = set()
        taken_t: set[int] = set()
        for _, pi, ti in sorted(pairs):
            if pi in taken_p or ti in taken_t:
                continue
            taken_p.add(pi)
            taken_t.add(ti)
            self._follow(persons[pi], self._tracks[ti], t_ms)
        for pi, person in enumerate(persons):
            if pi not in taken_p:
                track = _Track(next(self._ids), person.points, t_ms, OneEuroFilter(p.one_euro) if p.smoothing else None)
                self._tracks.append(track)
                self._follow(person, track, t_ms)
        persons.sort(key=lambda person: person.id)

    @staticmethod
    def _follow(person: Person3D, track: _Track, t_ms: float) -> None:
        person.id = track.id
        if track.smoother is not None:
            filled = np.where(np.isfinite(person.points), person.points, track.points)
            smooth = track.smoother(filled, t_ms / 1e3)
            person.points = np.where(np.isfinite(person.points), smooth, np.nan)
        fresh = np.isfinite(person.points)
        track.points = np.where(fresh, person.points, track.points)
        track.last_ms = t_ms
