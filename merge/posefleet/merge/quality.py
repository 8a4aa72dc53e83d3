"""How right a scene's 3D people are, per person, with or without a reference (``posefleet bench-scene``).

The people of a recording are either given (a reference 3D skeleton per person and frame, e.g. Pose2Sim's
reconstruction) or found in the outputs themselves: 3D people of every method evaluated, linked over frames
by where they stand (a person is whoever several methods put at one place for a good part of the clip), so a
person that one method never reconstructs still counts against it. Per person and method:

- ``eligible``: frames where at least two cameras see at least ``min_keypoints`` of the person's keypoints
  (a 2D pose whose keypoints lie near the person's projected skeleton);
- ``reconstructed``: eligible frames with a 3D person of the method at the person;
- ``ids``: distinct ids the method gave the person; ``duplicates``: frames where it shows the person twice;
- ``bone_cv``: coefficient of variation over time of each of the 8 limb bones, averaged;
- ``reprojection_px``: median reprojection error of its joints in the views used;
- ``joints``: how many of its 17 joints are published, on average (bone checks leave joints out);
- ``mpjpe_mm`` against the reference, where there is one.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from posefleet.merge.calibration import Camera
from posefleet.merge.skeleton import LIMB_BONES, bone_lengths

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


@dataclass
class Output3D:
    """One 3D person of one frame as a method produced it."""

    id: int
    points: F64  # (J, 3), NaN where missing
    #: Median reprojection error (undistorted px) of its joints in the views used; NaN if unknown.
    reprojection_px: float = float("nan")


#: A method's output: per frame, its 3D people.
Frames3D = Sequence[Sequence[Output3D]]


@dataclass
class PersonQuality:
    person: str
    eligible: int
    reconstructed: int
    ids: list[int]
    duplicates: int
    bone_cv: float
    reprojection_px: float
    mpjpe_mm: float | None = None
    frames: int = 0
    #: Mean joints (of 17) published per frame the person is reconstructed in.
    joints: float = float("nan")

    @property
    def reconstructed_share(self) -> float:
        return self.reconstructed / self.eligible if self.eligible else float("nan")

    def to_dict(self) -> dict[str, object]:
        return {
            "person": self.person,
            "frames": self.frames,
            "eligible": self.eligible,
            "reconstructed": self.reconstructed,
            "reconstructed_share": round(self.reconstructed_share, 4) if self.eligible else None,
            "ids": self.ids,
            "duplicates": self.duplicates,
            "bone_cv": round(self.bone_cv, 4) if np.isfinite(self.bone_cv) else None,
            "reprojection_px": round(self.reprojection_px, 2) if np.isfinite(self.reprojection_px) else None,
            "mpjpe_mm": None if self.mpjpe_mm is None else round(self.mpjpe_mm, 1),
            "joints": round(self.joints, 1) if np.isfinite(self.joints) else None,
        }


@dataclass
class People:
    """The people of a recording: per person, per frame, a (J, 3) skeleton (NaN rows where unknown)."""

    names: list[str]
    skeletons: F64  # (persons, frames, J, 3)
    #: True for people given by a reference (MPJPE is then measured).
    reference: bool = False
    extra: dict[str, object] = field(default_factory=dict)


def root(points: F64) -> F64:
    """Where a skeleton stands: the mean of its hips where seen, else of every joint seen; (..., 3)."""
    hips = points[..., 11:13, :]
    with np.errstate(invalid="ignore"), _quiet():
        at_hips = np.nanmean(hips, axis=-2)
        anywhere = np.nanmean(points, axis=-2)
    missing = ~np.isfinite(at_hips)
    at_hips[missing] = anywhere[missing]
    return at_hips  # type: ignore[no-any-return]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """``np.nanmean`` of all-NaN slices warns; those are expected here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def people_from_outputs(
    outputs: Mapping[str, Frames3D],
    frames: int,
    *,
    radius_m: float = 0.6,
    min_share: float = 0.25,
    min_methods: int = 2,
) -> People:
    """People found in the outputs of several methods: 3D people linked over frames by where they stand.

    Each frame's outputs (all methods) join the person whose last position (on the floor plane) is within
    ``radius_m``, nearest first, else start a person. A person is kept when at least ``min_methods`` methods
    put someone there in at least ``min_share`` of the frames. Their skeleton per frame is the per-joint
    median of what the methods put there (frames where none did: the nearest frame's)."""
    from scipy.optimize import linear_sum_assignment

    last: list[F64] = []  # each person's last floor position
    members: list[dict[int, dict[str, list[F64]]]] = []  # person -> frame -> method -> skeletons
    for f in range(frames):
        found = [(method, o.points) for method, out in outputs.items() if f < len(out) for o in out[f]]
        if not found:
            continue
        where = np.stack([root(points)[:2] for _, points in found])
        assigned = np.full(len(found), -1)
        if last:
            dist = np.linalg.norm(where[:, None] - np.stack(last)[None], axis=2)
            dist = np.where(np.isfinite(dist), dist, 1e6)
            # Several outputs (methods) per person: repeat each person's column once per method.
            reps = max(1, len(outputs))
            rows, cols = linear_sum_assignment(np.repeat(dist, reps, axis=1))
            for r, c in zip(rows, cols, strict=True):
                if dist[r, c // reps] <= radius_m:
                    assigned[r] = c // reps
        born: list[int] = []  # people started in this frame: other methods' outputs there join them
        for k, (method, points) in enumerate(found):
            if not np.isfinite(where[k]).all():
                continue
            person = int(assigned[k])
            if person < 0:
                near = [b for b in born if np.linalg.norm(last[b] - where[k]) <= radius_m]
                if near:
                    person = min(near, key=lambda b: float(np.linalg.norm(last[b] - where[k])))
                else:
                    last.append(where[k])
                    members.append({})
                    person = len(last) - 1
                    born.append(person)
            members[person].setdefault(f, {}).setdefault(method, []).append(points)
        for person, by_frame in enumerate(members):
            if f in by_frame:
                with _quiet():
                    last[person] = np.nanmedian(
                        np.stack([root(p)[:2] for ps in by_frame[f].values() for p in ps]), axis=0
                    )
    kept = []
    for by_frame in members:
        counts: dict[str, int] = {}
        for methods in by_frame.values():
            for method in methods:
                counts[method] = counts.get(method, 0) + 1
        if sum(n >= min_share * frames for n in counts.values()) >= min(min_methods, len(outputs)):
            kept.append(by_frame)
    joints = next((o.points.shape[0] for out in outputs.values() for fr in out for o in fr), 17)
    skeletons = np.full((len(kept), frames, joints, 3), np.nan)
    for p, by_frame in enumerate(kept):
        for f, methods in by_frame.items():
            with _quiet():
                skeletons[p, f] = np.nanmedian(np.stack([x for xs in methods.values() for x in xs]), axis=0)
        seen = sorted(by_frame)
        for f in range(frames):  # hold the nearest known frame where no method saw the person
            if f not in by_frame and seen:
                nearest = min(seen, key=lambda s: abs(s - f))
                skeletons[p, f] = skeletons[p, nearest]
    names = []
    for p in range(len(kept)):
        with _quiet():
            x, y = np.nanmedian(root(skeletons[p])[:, :2], axis=0)
        names.append(f"person {p + 1} (at {x:.1f}, {y:.1f} m)")
    return People(names, skeletons)


def visible_cameras(
    skeletons: F64, views: Mapping[str, Sequence[F32]], cameras: Mapping[str, Camera], *, min_keypoints: int, tol: float
) -> npt.NDArray[np.int64]:
    """Per person of ``skeletons`` (P, J, 3), how many cameras show them: have a 2D pose with at least
    ``min_keypoints`` keypoints (score >= 0.1) within ``tol`` of the person's bounding-box diagonal from the
    projected skeleton.

    A pose shows one person: the one it has the most such keypoints of (the nearer on a tie). Where people
    overlap in an image (one behind the other), the front person's pose lies within the tolerance of the
    hidden person's joints too; counted for both, it would make the hidden person seen by a camera that
    does not show them."""
    persons, j = skeletons.shape[:2]
    seen = np.zeros(persons, np.int64)
    joints: npt.NDArray[np.bool_] = np.asarray(np.isfinite(skeletons).all(axis=2))  # (P, J)
    known = joints.sum(axis=1) >= min_keypoints
    if not known.any():
        return seen
    for name, poses in views.items():
        if not len(poses) or name not in cameras:
            continue
        arr = np.stack([np.asarray(p, np.float64) for p in poses])  # (N, J, 3)
        close = np.zeros((persons, len(arr)), np.int64)
        spread = np.full((persons, len(arr)), np.inf)
        for k in np.flatnonzero(known).tolist():
            xy = np.full((j, 2), np.nan)
            xy[joints[k]] = cameras[name].project(skeletons[k][joints[k]])
            span = np.nanmax(xy, axis=0) - np.nanmin(xy, axis=0)
            limit = tol * float(np.hypot(*span)) + 1.0
            with np.errstate(invalid="ignore"):
                dist = np.linalg.norm(arr[..., :2] - xy[None], axis=2)  # (N, J), NaN where the person has no joint
                near = (dist <= limit) & (arr[..., 2] >= 0.1)
            close[k] = near.sum(axis=1)
            spread[k] = np.where(near, dist, 0.0).sum(axis=1) / np.maximum(close[k], 1) / limit
        owner = np.lexsort((spread, -close), axis=0)[0]  # (N,) the person each pose shows
        shown = close[owner, np.arange(len(arr))] >= min_keypoints
        seen[np.unique(owner[shown])] += 1
    return seen


def _distance(a: F64, b: F64) -> float:
    """Mean distance of the joints two skeletons both have (inf with fewer than 3)."""
    both = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    if both.sum() < 3:
        return float("inf")
    return float(np.linalg.norm(a[both] - b[both], axis=1).mean())


def evaluate(
    people: People, output: Frames3D, eligible: npt.NDArray[np.bool_], *, match_m: float = 0.35
) -> list[PersonQuality]:
    """Per person, how ``output`` (one method's 3D people per frame) shows them; ``eligible``: the
    (persons, frames) where two cameras see the person (``eligibility``, the same for every method of one
    2D source)."""
    from scipy.optimize import linear_sum_assignment

    frames = people.skeletons.shape[1]
    quality = []
    matched: list[list[tuple[int, Output3D]]] = [[] for _ in people.names]  # per person: (frame, output)
    duplicates = [0] * len(people.names)
    for f in range(frames):
        refs = people.skeletons[:, f]
        outs = list(output[f]) if f < len(output) else []
        if not outs or not len(refs):
            continue
        dist = np.array([[_distance(o.points, r) for r in refs] for o in outs])
        near = dist <= match_m
        for p in range(len(people.names)):
            duplicates[p] += int(near[:, p].sum() >= 2)
        rows, cols = linear_sum_assignment(np.where(near, dist, 1e6))
        for r, c in zip(rows, cols, strict=True):
            if near[r, c]:
                matched[c].append((f, outs[r]))
    for p, name in enumerate(people.names):
        mine = matched[p]
        points = np.stack([o.points for _, o in mine]) if mine else np.full((0, 17, 3), np.nan)
        mpjpe = None
        if people.reference and mine:
            refs = np.stack([people.skeletons[p, f] for f, _ in mine])
            with _quiet():
                mpjpe = float(np.nanmean(np.linalg.norm(points - refs, axis=2))) * 1000
        errors = [o.reprojection_px for _, o in mine if np.isfinite(o.reprojection_px)]
        quality.append(
            PersonQuality(
                person=name,
                frames=frames,
                eligible=int(eligible[p].sum()),
                reconstructed=sum(1 for f, _ in mine if eligible[p, f]),
                ids=sorted({o.id for _, o in mine}),
                duplicates=duplicates[p],
                bone_cv=bone_variation(points),
                reprojection_px=float(np.median(errors)) if errors else float("nan"),
                mpjpe_mm=mpjpe,
                joints=float(np.isfinite(points).all(axis=2).sum(axis=1).mean()) if mine else float("nan"),
            )
        )
    return quality


def eligibility(
    people: People,
    views: Sequence[Mapping[str, Sequence[F32]]],
    cameras: Mapping[str, Camera],
    *,
    min_keypoints: int = 6,
    tol: float = 0.15,
) -> npt.NDArray[np.bool_]:
    """(persons, frames): whether at least two cameras show the person (``visible_cameras``)."""
    persons, frames = people.skeletons.shape[:2]
    out = np.zeros((persons, frames), bool)
    for f in range(frames):
        view = views[f] if f < len(views) else {}
        shown = visible_cameras(people.skeletons[:, f], view, cameras, min_keypoints=min_keypoints, tol=tol)
        out[:, f] = shown >= 2
    return out


def bone_variation(points: F64) -> float:
    """Coefficient of variation over time of each limb bone's length, averaged over the bones measured in at
    least 5 frames (NaN without any)."""
    if not len(points):
        return float("nan")
    lengths = bone_lengths(points)  # (T, B)
    cvs = []
    for b in range(len(LIMB_BONES)):
        values = lengths[:, b][np.isfinite(lengths[:, b])]
        if len(values) >= 5 and values.mean() > 0:
            cvs.append(float(values.std() / values.mean()))
    return float(np.mean(cvs)) if cvs else float("nan")
