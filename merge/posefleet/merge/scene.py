"""One window of a calibrated scene: the cameras' 2D poses in, 3D people with persistent ids out."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from posefleet.merge.association import AssociationParams, PoseRef, group_poses, pair_costs, track_costs
from posefleet.merge.calibration import Camera
from posefleet.merge.filters import OneEuroFilter, OneEuroParams
from posefleet.merge.skeleton import BONES, MIRROR, BoneModel, blame
from posefleet.merge.triangulation import dlt, reproject, triangulate
from scipy.optimize import linear_sum_assignment

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
#: People move at most this fast (m/s) in a track's prediction.
MAX_SPEED = 3.0
#: A track's joint unseen for this long no longer guides which 2D poses are the person's.
STALE_MS = 400.0
#: A pose is mirrored only when that fits its person this much better (metres of mean ray distance).
MIRROR_MARGIN_M = 0.03
#: A person none of whose limb lengths is a guess: no twin check (``skeleton.Bounds``).
_NO_TWIN = np.full(len(BONES), np.nan)
#: The trunk's joints (COCO shoulders and hips): where a body is.
TRUNK = np.isin(np.arange(17), (5, 6, 11, 12))


@dataclass(frozen=True)
class FusionParams:
    association: AssociationParams = field(default_factory=AssociationParams)
    #: A view whose joint reprojects farther than this (undistorted pixels) is excluded while >= 2 remain.
    max_error_px: float = 25.0
    #: A new 3D person continues an unmatched track whose prediction is within this mean joint distance (m).
    max_track_distance_m: float = 0.5
    #: A 2D pose belongs to a tracked person when the rays of its joints pass this close (confidence-weighted
    #: mean, metres) to the person's predicted joints.
    track_gate_m: float = 0.2
    #: A track unseen for this long ends (a person occluded for less keeps their id).
    max_age_ms: float = 1500.0
    #: Two poses of one camera whose confident keypoints lie within this fraction of the pose's size (median)
    #: are one person detected twice (bottom-up decoders do that); the weaker is left out.
    duplicate_distance: float = 0.1
    #: A 2D pose with fewer than ``association.min_joints`` keypoints at ``association.min_score`` but
    #: ``weak_joints`` at ``weak_score`` is used with its scores scaled up (``SceneFuser._lift_weak``): a
    #: heatmap model scores a far person 0.1-0.3 all over. 0.1 is where OpenPose's decoder (and
    #: human-pose-estimation-0001's) finds a keypoint at all; geometry, not the score, then decides.
    weak_score: float = 0.1
    weak_joints: int = 6
    #: New 3D people with fewer triangulated joints are dropped (stray detections that happen to agree)...
    min_joints: int = 6
    #: ... and a tracked person is published with this many (a partial view of someone already known).
    min_tracked_joints: int = 3
    #: Two 3D people whose shared joints lie this close (median, metres) are one person seen twice...
    same_person_m: float = 0.1
    #: ... and so are two whose trunks (shoulders and hips they both have) are closer than two bodies can be.
    min_body_distance_m: float = 0.25
    #: A joint whose bones are all off their learned length by more than this fraction is re-triangulated
    #: without its worst view, or left out.
    bone_tolerance: float = 0.12
    #: Bone lengths are learned from this many windows of each track (median), trusted after ``bone_min_samples``.
    bone_window: int = 120
    bone_min_samples: int = 10
    #: Smooth each 3D person's joints with a One-Euro filter (off: no lag). Its 3D defaults (1 Hz, beta 2 per
    #: m/s) lag 33-67 ms at 60 fps on the OpenPose recording and take 8% of the frame-to-frame jitter
    #: (``bench-scene``); beta 0 (MediaPipe's 2D default) lags 130-150 ms.
    smoothing: bool = False
    one_euro: OneEuroParams = field(default_factory=lambda: OneEuroParams(min_cutoff=1.0, beta=2.0))


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
class _Window:
    """The candidate 2D poses of one window: references, rows, cameras, rays and the poses (undistorted)."""

    refs: list[PoseRef]
    index: dict[PoseRef, int]
    cams: npt.NDArray[np.int64]
    centers: F64  # (N, 3) camera centre of each pose
    dirs: F64  # (N, J, 3) unit rays of its joints
    poses: F64  # (N, J, 3) undistorted x, y and score


@dataclass
class _Track:
    id: int
    points: F64  # (J, 3) last known position of each joint (NaN: never seen)
    seen_ms: F64  # (J,) when each joint was last seen
    last_ms: float
    bones: BoneModel
    velocity: F64 = field(default_factory=lambda: np.zeros(3))  # of the body, m/s
    smoother: OneEuroFilter | None = None


def predict(tracks: list[_Track], t_ms: float, *, moving: bool = True) -> F64:
    """(T, J, 3) where the tracks' joints are expected at ``t_ms``: constant velocity of the body, for at most
    0.5 s (``moving``; else where they were last seen); joints unseen for ``STALE_MS`` are left out while at
    least 4 recent ones remain."""
    points = np.array([t.points for t in tracks])
    recent = (t_ms - np.array([t.seen_ms for t in tracks])) <= STALE_MS  # (T, J)
    recent |= (recent.sum(axis=1) < 4)[:, None]
    predicted: F64 = np.where(recent[..., None], points, np.nan)
    if moving:
        dt = np.clip(t_ms - np.array([t.last_ms for t in tracks]), 0.0, 500.0)[:, None, None] / 1e3
        predicted += np.array([t.velocity for t in tracks])[:, None] * dt
    return predicted


def assign_per_camera(cost: F64, cams: npt.NDArray[np.int64]) -> list[tuple[int, int]]:
    """(row, column) pairs of the optimal assignment of the rows of ``cost`` (T, N) to the columns of each
    camera separately (``cams``: (N,) each column's camera), cameras in ascending order.

    Where every row's cheapest column of a camera is a different one (people apart: most windows) that is the
    camera's answer already: it reaches the sum of the row minima, which no assignment undercuts. Those
    cameras are answered at once; ``linear_sum_assignment`` solves the others."""
    rows = len(cost)
    cameras = np.unique(cams)
    own = cams[None, :] == cameras[:, None]  # (C, N)
    cheapest = np.where(own[:, None, :], cost[None], np.inf).argmin(axis=2)  # (C, T)
    ordered = np.sort(cheapest, axis=1)
    direct = ((own.sum(axis=1) >= rows) & (ordered[:, 1:] != ordered[:, :-1]).all(axis=1)).tolist()
    pairs: list[tuple[int, int]] = []
    for k, columns in enumerate(cheapest.tolist()):
        if direct[k]:
            pairs.extend(enumerate(columns))
            continue
        mine = np.flatnonzero(own[k])
        t, n = linear_sum_assignment(cost[:, mine])
        pairs.extend(zip(t.tolist(), mine[n].tolist(), strict=True))
    return pairs


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
    # Only poses of one camera whose boxes come closer than the distance limit can be one person twice (no
    # keypoint of one lies nearer the other than their boxes do): the keypoints of those pairs only.
    gap = np.maximum(low[None] - high[:, None], low[:, None] - high[None]).max(axis=-1)  # (N, N)
    near = (cameras[:, None] == cameras[None, :]) & (gap < max_distance * size[:, None]) & ~np.eye(n, dtype=bool)
    a, b = np.nonzero(near)
    if not len(a):
        return np.flatnonzero(found).tolist()
    same = np.zeros((n, n), bool)
    both = seen[a] & seen[b]  # (K, J)
    diff = poses[a, :, :2] - poses[b, :, :2]
    dist = np.where(both, np.sqrt((diff * diff).sum(-1)), np.inf)
    count = both.sum(-1)
    median = np.take_along_axis(np.sort(dist, axis=-1), np.maximum(count - 1, 0)[:, None] // 2, axis=-1)[:, 0]
    same[a, b] = (count >= 3) & (median < max_distance * size[a])
    if not same.any():
        return np.flatnonzero(found).tolist()
    kept: list[int] = []
    has = found.tolist()
    twins: dict[int, list[int]] = {}  # the poses each one is a duplicate of
    for i, k in np.argwhere(same).tolist():
        twins.setdefault(i, []).append(k)
    for i in np.argsort(-np.where(seen, poses[..., 2], 0).sum(axis=1), kind="stable").tolist():
        if has[i] and not any(k in kept for k in twins.get(i, ())):
            kept.append(i)
    return sorted(kept)


class SceneFuser:
    """Fuses windows of one scene; ``cameras`` are already fitted to the streamed resolution.

    Per window: the tracked people claim the 2D poses that fit their predicted joints (one pose per person
    and camera, optimal assignment per camera); the other poses are grouped across cameras by ray geometry;
    every group is triangulated (views that reproject badly excluded); joints that break their person's
    learned bone lengths are triangulated again without their worst view, or left out; 3D people that
    coincide are merged; new people continue a recently lost track nearby, or start one.
    """

    def __init__(self, cameras: dict[str, Camera], params: FusionParams | None = None) -> None:
        self.cameras = cameras
        self.names = list(cameras)
        self.params = params or FusionParams()
        self.P = np.stack([cameras[n].P for n in self.names])  # (C, 3, 4)
        self._to_ray = np.stack([cameras[n].pixel_to_ray for n in self.names])  # (C, 3, 3)
        self._centers = np.stack([cameras[n].center for n in self.names])  # (C, 3)
        self._tracks: list[_Track] = []
        self._ids = itertools.count(1)

    def fuse(self, views: dict[str, list[F32]], t_ms: float) -> SceneFrame:
        """``views``: camera name -> its poses ((J, 3) x, y, score in image pixels) of this window."""
        p = self.params
        self._tracks = [t for t in self._tracks if t_ms - t.last_ms <= p.max_age_ms]
        refs, poses = self._candidates(views)
        if not refs:
            return SceneFrame([], [])
        w = self._window(refs, poses)
        # Track index -> pose rows; a track that claims a single view this window gives it back, so that the
        # view may still pair with others (the new group then continues the track by 3D distance).
        claims, cost = self._claim(w, t_ms)
        claimed = {t: rows for t, rows in claims.items() if len(rows) >= 2}
        free = sorted(set(range(len(refs))) - {k for rows in claimed.values() for k in rows})
        free = self._unexplained(w, free, claimed, cost)
        free_refs = [refs[k] for k in free]
        costs = pair_costs(free_refs, w.centers[free], w.dirs[free], w.poses[free, :, 2], p.association)
        fresh = group_poses(costs, p.association)
        groups: list[list[PoseRef]] = []
        owners: list[int | None] = []  # the track each group continues (None: new)
        for t, rows in claimed.items():
            groups.append(sorted(refs[k] for k in rows))
            owners.append(t)
        for group in fresh:
            groups.append(group)
            owners.append(None)
        persons = self._triangulate(w, groups)
        persons, groups, owners = self._keep_shape(w, persons, groups, owners)
        persons, groups, owners = self._merge_coincident(w, persons, groups, owners)
        self._track(persons, owners, t_ms)
        grouped = {ref for person, group in zip(persons, groups, strict=True) for ref in group}
        unassigned = [(self.names[c], i) for c, i in refs if (c, i) not in grouped]
        persons.sort(key=lambda person: person.id)
        return SceneFrame(persons, unassigned)

    # -- the steps -------------------------------------------------------------------------
    def _candidates(self, views: dict[str, list[F32]]) -> tuple[list[PoseRef], F64]:
        """Every camera's poses with at least ``min_joints`` usable keypoints, undistorted, one per person."""
        p = self.params.association
        refs = [(c, i) for c, name in enumerate(self.names) for i in range(len(views.get(name, ())))]
        if not refs:
            return [], np.empty((0, 0, 3))
        arr = self._lift_weak(np.array([views[self.names[c]][i] for c, i in refs], np.float64))  # (N, J, 3)
        usable = np.flatnonzero((arr[..., 2] >= p.min_score).sum(axis=1) >= p.min_joints)
        if not len(usable):
            return [], np.empty((0, 0, 3))
        arr = arr[usable]
        cams = np.array([refs[k][0] for k in usable.tolist()])
        cuts = [0, *(np.flatnonzero(np.diff(cams)) + 1).tolist(), len(cams)]  # refs come camera by camera
        for start, stop in itertools.pairwise(cuts):  # undistorted, one call per camera
            block = arr[start:stop, :, :2]
            block[:] = self.cameras[self.names[cams[start]]].undistort(block.reshape(-1, 2)).reshape(block.shape)
        keep = distinct_poses(arr, cams, p.min_score, self.params.duplicate_distance)
        return [refs[usable[k]] for k in keep], arr[keep]

    def _lift_weak(self, arr: F64) -> F64:
        """Poses too weak to be used as they came (fewer than ``min_joints`` keypoints at ``min_score``) that
        have ``weak_joints`` keypoints at ``weak_score``: their scores scaled so that ``weak_score`` counts
        as ``min_score`` (a model scores a far or blurred person low all over: the pose's own scale).

        The rule of the issue's anchors: Pose2Sim's association keeps a person's 2D pose for its geometry (the
        reprojection of the triangulated candidates), not its score; a weak pose here still has to pair with
        another camera's by ray distance over its joints and triangulate within ``max_error_px``, and a new
        person needs ``min_joints`` joints. Poses strong enough as they came are not changed."""
        p = self.params
        if p.weak_score >= p.association.min_score or not len(arr):
            return arr
        strong = (arr[..., 2] >= p.association.min_score).sum(axis=1) >= p.association.min_joints
        weak = ~strong & ((arr[..., 2] >= p.weak_score).sum(axis=1) >= p.weak_joints)
        if weak.any():
            arr = arr.copy()
            arr[weak, :, 2] = np.minimum(1.0, arr[weak, :, 2] * (p.association.min_score / p.weak_score))
        return arr

    def _window(self, refs: list[PoseRef], poses: F64) -> _Window:
        """The poses' joints as unit rays from their cameras' centres (every camera's at once)."""
        cams = np.array([c for c, _ in refs])
        M = self._to_ray[cams]  # (N, 3, 3)
        dirs = np.matmul(poses[..., :2], M[:, :, :2].transpose(0, 2, 1)) + M[:, None, :, 2]  # (N, J, 3)
        dirs /= np.sqrt((dirs * dirs).sum(axis=2, keepdims=True))
        return _Window(refs, {ref: k for k, ref in enumerate(refs)}, cams, self._centers[cams], dirs, poses)

    def _claim(self, w: _Window, t_ms: float) -> tuple[dict[int, list[int]], F64]:
        """Track index -> the pose rows (at most one per camera) whose rays fit the track's predicted joints,
        and the (T, N) costs of every pose as it came (``track_costs``).

        A pose that fits its person better with left and right exchanged (models confuse the sides of a
        person seen from behind) is mirrored in place, rays included."""
        if not self._tracks:
            return {}, np.empty((0, len(w.refs)))
        p = self.params
        predicted = predict(self._tracks, t_ms)  # (T, J, 3)
        scores = w.poses[..., 2]
        n = len(w.refs)
        both = track_costs(  # (T, 2N): every pose as it came, then mirrored, in one broadcast
            predicted,
            np.concatenate([w.centers, w.centers]),
            np.concatenate([w.dirs, w.dirs[:, MIRROR]]),
            np.concatenate([scores, scores[:, MIRROR]]),
            p.association,
        )
        cost, mirrored = both[:, :n], both[:, n:]
        flip = mirrored < cost - MIRROR_MARGIN_M
        best = np.where(flip, mirrored, cost)
        claimed: dict[int, list[int]] = {}
        for t, row in assign_per_camera(np.where(np.isfinite(best), best, 1e6), w.cams):
            if best[t, row] <= p.track_gate_m:
                claimed.setdefault(t, []).append(row)
                if flip[t, row]:
                    w.poses[row] = w.poses[row, MIRROR]
                    w.dirs[row] = w.dirs[row, MIRROR]
        return claimed, cost

    def _unexplained(self, w: _Window, free: list[int], claimed: dict[int, list[int]], cost: F64) -> list[int]:
        """The free poses that are not another detection of a person claimed in their camera (a model that
        finds one person twice, as YOLO does in unusual poses): those would make a second hypothesis.
        ``cost``: the claims' (T, N) costs (free poses were not mirrored: theirs are as they came)."""
        if not free or not claimed:
            return free
        tracks = sorted(claimed)
        cost = cost[np.ix_(tracks, free)]
        own = np.array([[w.cams[k] in {w.cams[r] for r in claimed[t]} for k in free] for t in tracks])
        duplicate: npt.NDArray[np.bool_] = np.asarray((own & (cost <= self.params.track_gate_m)).any(axis=0))
        return [k for k, dup in zip(free, duplicate.tolist(), strict=True) if not dup]

    def _keep_shape(
        self, w: _Window, persons: list[Person3D], groups: list[list[PoseRef]], owners: list[int | None]
    ) -> tuple[list[Person3D], list[list[PoseRef]], list[int | None]]:
        """Tracked people's joints that break their learned bone lengths: triangulated again without their
        worst view, else left out; people with too few joints left are dropped."""
        p = self.params
        tracked = [(k, owner) for k, owner in enumerate(owners) if owner is not None]
        self._fix_bones(w, [persons[k] for k, _ in tracked], [groups[k] for k, _ in tracked], [o for _, o in tracked])
        kept: tuple[list[Person3D], list[list[PoseRef]], list[int | None]] = ([], [], [])
        points = np.array([person.points for person in persons]) if persons else np.empty((0, 0, 3))
        joints = np.isfinite(points).all(axis=2).sum(axis=1).tolist()
        for person, group, owner, count in zip(persons, groups, owners, joints, strict=True):
            needed = p.min_joints if owner is None else p.min_tracked_joints
            if count >= needed:
                kept[0].append(person)
                kept[1].append(group)
                kept[2].append(owner)
        return kept

    def _fix_bones(self, w: _Window, persons: list[Person3D], groups: list[list[PoseRef]], owners: list[int]) -> None:
        """Joints their tracks' bone models blame: without their worst view (3 views or more), else left out.
        A blamed joint is fixed on its own views only, so every person's are fixed in one triangulation; the
        people are worked on as stacked arrays and written back once."""
        if not persons:
            return
        bounds = [self._tracks[owner].bones.bounds() for owner in owners]
        expected, slack = np.array([b.expected for b in bounds]), np.array([b.slack for b in bounds])
        twin = None  # people still learning their limbs are held to limbs as long as their twins
        if any(b.twin_slack is not None for b in bounds):
            twin = np.array([_NO_TWIN if b.twin_slack is None else b.twin_slack for b in bounds])
        points = np.array([person.points for person in persons])  # (P, J, 3)
        errors = np.array([person.error_px for person in persons])  # (P, J)
        used_all = np.array([person.used for person in persons])  # (P, J, C)
        dropped = np.zeros(errors.shape, bool)
        views: dict[int, tuple[F64, F64]] = {}
        changed = False
        for attempt in range(3):
            rows, joints = np.nonzero(blame(points, errors, expected, slack, twin))
            if not len(rows):
                break
            changed = True
            used = used_all[rows, joints]  # (K, C)
            few = used.sum(axis=1) <= 2
            if attempt == 2:  # still blamed after two tries: left out
                few[:] = True
            dropped[rows[few], joints[few]] = True
            points[rows[few], joints[few]] = np.nan
            errors[rows[few], joints[few]] = np.nan
            used_all[rows[few], joints[few]] = False
            rows, joints, used = rows[~few], joints[~few], used[~few]
            if not len(rows):
                break  # every bone that was off lost its blamed end: none is off now
            needed = sorted(set(rows.tolist()) - set(views))
            if needed:
                xy, score = self._views(w, [groups[r] for r in needed])
                for r, r_xy, r_score in zip(needed, np.where(np.isfinite(xy), xy, 0.0), score, strict=True):
                    views[r] = r_xy, r_score
            blamed = list(zip(rows.tolist(), joints.tolist(), strict=True))
            xy = np.array([views[r][0][j] for r, j in blamed])  # (K, C, 2)
            score = np.array([views[r][1][j] for r, j in blamed])
            diff = reproject(self.P, points[rows, joints]) - xy
            err = np.where(used, (diff * diff).sum(axis=2), -np.inf)
            used[np.arange(len(rows)), err.argmax(axis=1)] = False
            points[rows, joints] = dlt(self.P, xy, np.where(used, score, 0.0))
            used_all[rows, joints] = used
        if not changed:
            return
        for k, person in enumerate(persons):
            person.points[:] = points[k]
            person.used[:] = used_all[k]
            person.views[:] = used_all[k].sum(axis=1)
            person.score[dropped[k]] = 0.0
            person.error_px[dropped[k]] = np.nan

    def _merge_coincident(
        self, w: _Window, persons: list[Person3D], groups: list[list[PoseRef]], owners: list[int | None]
    ) -> tuple[list[Person3D], list[list[PoseRef]], list[int | None]]:
        """Two people whose shared joints (at least half of the fewer's) lie within ``same_person_m`` are one:
        the tracked (else the one with more views) keeps the other's cameras it lacks, triangulated again."""
        merged = True
        while merged and len(persons) > 1:
            merged = False
            same = self._same_people(np.array([person.points for person in persons]))
            for a, b in itertools.combinations(range(len(persons)), 2):
                if not same[a, b]:
                    continue
                keep, drop = (
                    (a, b) if self._rank(persons[a], owners[a]) >= self._rank(persons[b], owners[b]) else (b, a)
                )
                cams = {c for c, _ in groups[keep]}
                group = sorted(groups[keep] + [r for r in groups[drop] if r[0] not in cams])
                (person,) = self._triangulate(w, [group])
                owner = owners[keep]
                if owner is not None:
                    self._fix_bones(w, [person], [group], [owner])
                persons[keep], groups[keep] = person, group
                for seq in (persons, groups, owners):
                    del seq[drop]
                merged = True
                break
        return persons, groups, owners

    def _same_people(self, points: F64) -> npt.NDArray[np.bool_]:
        """(P, P) which of the skeletons (P, J, 3) are one person: most shared joints coincide (their median
        distance within ``same_person_m``, over at least half of the fewer's joints and 3), or their trunks
        (shoulders and hips both have; limbs and head say little about where a body is) are closer than two
        bodies can be (``min_body_distance_m``). All pairs at once."""
        p = self.params
        seen: npt.NDArray[np.bool_] = np.asarray(np.isfinite(points).all(axis=2))  # (P, J)
        # Every joint (and trunk centre) of a skeleton lies in its bounding box: two whose boxes are farther
        # apart than both limits cannot be one (most windows: people apart), and the rest is not computed.
        box = np.where(seen[..., None], np.concatenate([points, -points], axis=2), np.inf).min(axis=1)  # (P, 6)
        gap = np.maximum(box[None, :, :3] + box[:, None, 3:], box[:, None, :3] + box[None, :, 3:]).max(axis=2)
        if not (gap <= max(p.same_person_m, p.min_body_distance_m))[~np.eye(len(points), dtype=bool)].any():
            return np.zeros((len(points), len(points)), bool)
        clean = np.where(seen[..., None], points, 0.0)
        both = seen[:, None] & seen[None]  # (P, P, J)
        diff = clean[:, None] - clean[None]
        dist = np.where(both, np.sqrt((diff * diff).sum(-1)), np.inf)
        count = both.sum(-1)
        median_at = np.maximum(count - 1, 0)[..., None] // 2
        ordered = np.sort(dist, axis=-1)
        median = (np.take_along_axis(ordered, median_at, -1) + np.take_along_axis(ordered, count[..., None] // 2, -1))[
            ..., 0
        ] / 2
        fewer = np.minimum(seen.sum(1)[:, None], seen.sum(1)[None])
        coincide = (count >= np.maximum(3, fewer // 2)) & (median <= p.same_person_m)
        trunk = both & TRUNK  # (P, P, J)
        n = np.maximum(trunk.sum(-1), 1)[..., None]
        mine = (trunk[..., None] * clean[:, None]).sum(2) / n  # (P, P, 3) a's trunk over the joints both have
        theirs = (trunk[..., None] * clean[None]).sum(2) / n
        close = (trunk.sum(-1) >= 2) & (np.sqrt(((mine - theirs) ** 2).sum(-1)) <= p.min_body_distance_m)
        same: npt.NDArray[np.bool_] = (coincide | close) & ~np.eye(len(points), dtype=bool)
        return same

    @staticmethod
    def _rank(person: Person3D, owner: int | None) -> tuple[bool, int]:
        return owner is not None, int(person.views.sum())

    def _views(self, w: _Window, groups: list[list[PoseRef]]) -> tuple[F64, F64]:
        """The groups' 2D joints per camera: (G, J, C, 2) undistorted pixels (NaN: no pose) and (G, J, C)
        scores, all groups at once."""
        j, c = w.poses.shape[1], len(self.names)
        member = np.array([k for k, group in enumerate(groups) for _ in group])
        rows = np.array([w.index[ref] for group in groups for ref in group])
        xy = np.full((len(groups), c, j, 2), np.nan)
        score = np.zeros((len(groups), c, j))
        if len(rows):
            xy[member, w.cams[rows]] = w.poses[rows, :, :2]
            score[member, w.cams[rows]] = w.poses[rows, :, 2]
        return xy.transpose(0, 2, 1, 3), score.transpose(0, 2, 1)

    def _triangulate(self, w: _Window, groups: list[list[PoseRef]]) -> list[Person3D]:
        """All groups in one batched triangulation."""
        if not groups:
            return []
        g, j, c = len(groups), w.poses.shape[1], len(self.names)
        xy, score = self._views(w, groups)
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
        errors = tri.view_error_px.reshape(g, j, c)
        joint_score, joint_error, views = tri.score.reshape(g, j), tri.error_px.reshape(g, j), used.sum(axis=2)
        # Per camera: mean reprojection error of the joints it contributed (the status reports its median).
        with np.errstate(invalid="ignore"):
            cam_err = (np.where(used, errors, 0.0).sum(axis=1) / used.sum(axis=1)).tolist()  # (G, C)
        contributed: list[list[bool]] = np.asarray(used.any(axis=1)).tolist()
        persons = []
        for k, group in enumerate(groups):
            camera_error = {self.names[cam]: cam_err[k][cam] for cam, _ in group if contributed[k][cam]}
            persons.append(
                Person3D(
                    0,
                    points[k],
                    joint_score[k],
                    joint_error[k],
                    views[k],
                    {self.names[cam]: i for cam, i in group},
                    used[k],
                    camera_error,
                )
            )
        return persons

    def _track(self, persons: list[Person3D], owners: list[int | None], t_ms: float) -> None:
        """Ids: a person from a claimed track keeps it; a new person continues the nearest unmatched track
        (optimal assignment on the mean joint distance to its prediction, or to where it was last seen: a
        person may stop while unseen, and a velocity measured on a few joints of a half-seen person may be
        off) or starts one."""
        p = self.params
        taken = {o for o in owners if o is not None}
        new = [k for k, o in enumerate(owners) if o is None]
        lost = [t for t in range(len(self._tracks)) if t not in taken]
        if new and lost:
            now = np.array([persons[k].points for k in new])[:, None]  # (P, 1, J, 3)
            tracks = [self._tracks[t] for t in lost]
            before = np.array([predict(tracks, t_ms, moving=moving) for moving in (True, False)])[:, None]
            both = np.isfinite(now).all(-1) & np.isfinite(before).all(-1)  # (2, P, T, J)
            dist = np.where(both, np.linalg.norm(np.nan_to_num(now - before), axis=-1), 0.0)
            mean = np.where(both.sum(-1) >= 3, dist.sum(-1) / np.maximum(both.sum(-1), 1), np.inf).min(axis=0)
            rows, cols = linear_sum_assignment(np.where(np.isfinite(mean), mean, 1e6))
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
                if mean[r, c] <= p.max_track_distance_m:
                    owners[new[r]] = lost[c]
        for k, person in enumerate(persons):
            owner = owners[k]
            if owner is None:
                track_id = next(self._ids)
                track = _Track(
                    track_id,
                    np.full_like(person.points, np.nan),
                    np.full(len(person.points), -np.inf),
                    t_ms,
                    BoneModel(p.bone_window, p.bone_min_samples, p.bone_tolerance),
                    smoother=OneEuroFilter(p.one_euro) if p.smoothing else None,
                )
                self._tracks.append(track)
            else:
                track = self._tracks[owner]
            self._follow(person, track, t_ms)

    @staticmethod
    def _follow(person: Person3D, track: _Track, t_ms: float) -> None:
        person.id = track.id
        fresh: npt.NDArray[np.bool_] = np.asarray(np.isfinite(person.points).all(axis=1))
        track.bones.learn(np.where(fresh[:, None] & (person.views[:, None] >= 2), person.points, np.nan))
        # Velocity: the median, over the joints seen now and in the last 0.5 s, of each one's displacement over
        # its own time unseen (a joint last seen two windows ago moved for two; a mean over different joint
        # subsets would jump), at most MAX_SPEED. Too few such joints (a walker seen by halves): the velocity
        # measured before stands; nothing seen for 0.5 s: it is forgotten.
        elapsed = (t_ms - track.seen_ms) / 1e3  # (J,) inf where never seen
        shared = fresh & (elapsed > 0) & (elapsed < 0.5)
        if shared.sum() >= 3:
            rates = np.sort((person.points[shared] - track.points[shared]) / elapsed[shared, None], axis=0)
            velocity = (rates[(len(rates) - 1) // 2] + rates[len(rates) // 2]) / 2  # the median
            speed = math.sqrt(float((velocity * velocity).sum()))
            velocity = velocity * min(1.0, MAX_SPEED / speed) if speed > 0 else velocity
            track.velocity = 0.5 * track.velocity + 0.5 * velocity
        elif not 0 < t_ms - track.last_ms < 500.0:
            track.velocity = np.zeros(3)
        if track.smoother is not None:
            person.points = track.smoother(person.points, t_ms / 1e3)
        track.points = np.where(fresh[:, None], person.points, track.points)
        track.seen_ms = np.where(fresh, t_ms, track.seen_ms)
        track.last_ms = t_ms
