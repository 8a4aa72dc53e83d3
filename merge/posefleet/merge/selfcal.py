"""Extrinsics from the people in the room: every camera's pose from synchronised 2D keypoints, no board.

Pose2Sim lists "keypoints" as an extrinsic method and raises NotImplementedError; this is posefleet's own
structure-from-motion on people, the classic incremental pipeline with joints as the features:

1. **Pairs.** For each camera pair, every frame offers every person of one view against every person of the
   other: their joints seen confidently in both are candidate correspondences (undistorted, normalised by
   each camera's K). Essential matrices are hypothesised from single pairings of two people (a RANSAC over
   the pooled joints draws samples mixing people, and on noisy keypoints one such mix can win) and scored
   by the joints of each person's best partner that agree with them; under the winner each frame's people
   are paired by optimal assignment on their median Sampson distance (pixels), and the matrix is estimated
   again from the pairs alone (MAGSAC++), then decomposed into a relative pose. Where the frames were seen
   (``looks``: ``posefleet.merge.appearance``), the people's colours weigh in: a hypothesis counts a pairing's
   joints times exp(-d^2/2) of the two people's appearance distance d (standardised per camera), and the
   assignment adds ``look_px`` pixels per unit of d. People who stand in place never contradict a pairing of
   different people across cameras, which fits the 2D as well as the right one; their clothes do.
2. **People across cameras.** Per frame, the pairwise pairings are joined (union-find) into one group per
   person; a group holding two people of one camera keeps the one with more pairings.
3. **Incremental placement.** The pair whose relative rotation closes the most loops with two other pairs
   (``_seed``: a wrong pair's loops do not close), then the one with the most inliers, starts (baseline 1);
   its joints are triangulated (weighted DLT); each next camera, the one sharing the most triangulated
   joints first, is placed by PnP with RANSAC on them; every placed camera triangulates.
4. **Bundle adjustment**, in two steps. First the camera poses alone, every joint triangulated anew inside
   the residuals (6 unknowns per camera: it converges in tens of iterations, where the full adjustment
   started from the placement stopped at its 100 iterations far from its minimum: on the OpenPose
   recording, camera centres 7-13 cm off Qualisys instead of 3.5-8 cm). Then all camera poses and 3D
   joints: SciPy ``least_squares`` (trust region, a sparse Jacobian, a Huber loss in pixels, residuals
   weighted by the 2D confidence); observations left far
   off are dropped and it runs again; then the people are paired again under the adjusted cameras (every
   pair, from the poses, not from the first matrices) and the whole adjustment repeats (three rounds).
   The pipeline starts at three inlier thresholds; the run explaining the most joints is kept.
5. **World frame.** Z up from the floor plane fitted to the lowest ankles, the origin on the floor below
   the people, x along the first camera's view; metric scale from the people's height (the leg and trunk
   segments, anthropometric ratios) or, better, from known points (``extrinsics.anchor``).

Cameras a pair never agrees on, or too few joints place, are reported with the reason, never guessed.

``refine_with_people`` starts from a given calibration instead of steps 1-3 (the people paired under its
poses) and keeps its world frame and scale. Both take at most ``SelfCalParams.max_frames`` frames, spread
evenly over a longer recording (``spread``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import combinations

import cv2
import numpy as np
import numpy.typing as npt
from posefleet.merge.calibration import CalibrationError, Camera
from posefleet.merge.extrinsics import alignment, camera_difference, rig_differences, rig_size, transform, turn_deg
from posefleet.merge.skeleton import bone_lengths
from posefleet.merge.triangulation import dlt
from scipy.optimize import least_squares
from scipy.sparse import lil_matrix

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Views = Sequence[Mapping[str, Sequence[F32]]]  # per frame: camera -> its 2D poses (J, 3) in pixels
Looks = Sequence[Mapping[str, Sequence[F32]]]  # parallel to Views: each pose's appearance (``appearance.describe``)
log = logging.getLogger("posefleet.merge.selfcal")

# COCO-17 joints: ankles, knees, hips, shoulders (the height segments).
L_SHOULDER, R_SHOULDER, L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANKLE, R_ANKLE = 5, 6, 11, 12, 13, 14, 15, 16
#: Segment lengths as fractions of stature (Winter, Biomechanics and Motor Control of Human Movement, 4th ed.,
#: fig. 4.1): knee to ankle 0.246, hip to knee 0.245, hip joint to shoulder 0.288.
LEG_TRUNK_OF_STATURE = 0.246 + 0.245 + 0.288
#: Starts (``SelfCalParams.ransac_tries``) whose rigs differ by more than this fraction of the rig's size
#: disagree (``start_disagreement``): 3.5 cm on the shared rig. Measured there (bench/calibration.md: 18 runs,
#: each recording whole and in halves, with and without colours; and 21 runs on 2D poses of another
#: inference run), starts that agreed were within 0.005, and every run 27 cm or more off had starts 0.030 or
#: more apart; the limit lies between the two (a factor of 2 from the one, 3 from the other). Right runs
#: warned happen too (15-17 cm off, starts up to 1.2 apart: one start found another rig); and agreement is no
#: proof: with seven starts, starts of one wrong pairing agreed with each other (bench/design-choices.md).
STARTS_AGREE = 0.01


@dataclass(frozen=True)
class SelfCalParams:
    min_score: float = 0.3  # a joint below this confidence is not a correspondence
    min_joints: int = 6  # joints two views of one person must share to be paired
    ransac_px: float = 10.0  # inlier threshold of the essential matrix and PnP (pixels)
    match_px: float = 25.0  # the largest median Sampson distance of a pairing (pixels)
    min_pair_inliers: int = 60  # a camera pair agreeing on fewer joints gives no pose
    min_place_joints: int = 40  # triangulated joints a camera needs to be placed
    huber_px: float = 5.0
    outlier_px: float = 30.0  # observations further off after the first adjustment are dropped
    hypotheses: int = 300  # pairings of two people tried as the source of a pair's essential matrix
    adjustment_evaluations: int = 100  # residual evaluations of one bundle adjustment at most
    ransac_tries: tuple[float, ...] = (8.0, 12.0, 16.0)  # ``calibrate_from_people`` starts once with each
    rounds: int = 3  # placement and adjustment rounds, the people paired again under the cameras before each
    look_px: float = 8.0  # a pairing's cost per unit of appearance distance (pixels of Sampson distance)
    look_sigma: float = 1.0  # appearance distance at which a pairing's hypothesis votes count exp(-1/2)
    #: A refinement's first round keeps joints as far off under the given poses as a camera turned this much
    #: puts them (its focal length x tan): a camera knocked on its mount is off by all its joints at once.
    refine_turn_deg: float = 5.0
    #: Frames a calibration uses at most, spread evenly over a longer recording (``spread``): its time and
    #: memory grow with the frames, and frames spread over a walk cover more of the room than as many in a row
    #: (bench/design-choices.md).
    max_frames: int = 300
    #: Three cameras' pairwise rotations chained around the loop turn by at most this when the pairs are right
    #: (``_seed``): 3-9 degrees on the lab videos' right pairs, 15 or more where one is wrong.
    loop_deg: float = 10.0


@dataclass
class CameraReport:
    name: str
    placed: bool
    reason: str = ""
    observations: int = 0
    frames: int = 0
    error_px: float = float("nan")  # RMS reprojection error after the adjustment
    #: ``refine_with_people``: the RMS of the same joints triangulated under the given poses (ungated)
    start_px: float = float("nan")


@dataclass
class SelfCalResult:
    cameras: dict[str, Camera]  # every camera given; unplaced ones keep their input extrinsics
    report: list[CameraReport]
    points: int  # 3D joints in the adjustment
    frames: int  # frames that gave at least one joint
    scale_source: str
    bone_spread: float = float("nan")  # the people's limb lengths' robust CV (``_bone_spread``)
    people_paired_by: str = "geometry alone"  # or "colour and geometry", where ``looks`` described people
    #: How far the other starts' rigs lie from this one (``start_disagreement``); NaN: none to compare with.
    start_disagreement: float = float("nan")
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ambiguous(self) -> bool:
        """The starts disagree (``STARTS_AGREE``): the data do not pin the rig down, it may be metres off."""
        return bool(self.start_disagreement > STARTS_AGREE)

    @property
    def placed(self) -> list[str]:
        return [r.name for r in self.report if r.placed]


# -- geometry helpers ---------------------------------------------------------------------------------
def _normalised(cam: Camera, xy: F64) -> F64:
    """Pixel points (N, 2) -> undistorted normalised image points (N, 2)."""
    und = cam.undistort(xy)
    Kinv = np.linalg.inv(cam.K)
    return und @ Kinv[:2, :2].T + Kinv[:2, 2]  # type: ignore[no-any-return]


def _sampson(E: F64, a: F64, b: F64) -> F64:
    """Sampson distance (normalised units) of correspondences a (N, 2) -> b (N, 2) under x_b^T E x_a = 0."""
    ha = np.column_stack([a, np.ones(len(a))])
    hb = np.column_stack([b, np.ones(len(b))])
    Ea = ha @ E.T
    Etb = hb @ E
    num = np.einsum("ij,ij->i", hb, Ea) ** 2
    den = Ea[:, 0] ** 2 + Ea[:, 1] ** 2 + Etb[:, 0] ** 2 + Etb[:, 1] ** 2
    return np.sqrt(num / np.maximum(den, 1e-18))  # type: ignore[no-any-return]


def _rodrigues(rvecs: F64) -> F64:
    """Rotation vectors (N, 3) -> rotation matrices (N, 3, 3)."""
    theta = np.linalg.norm(rvecs, axis=1)[:, None, None]
    k = rvecs / np.maximum(theta[:, :, 0], 1e-12)
    K = np.zeros((len(rvecs), 3, 3))
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    K[:, 1, 0], K[:, 2, 0], K[:, 2, 1] = k[:, 2], -k[:, 1], k[:, 0]
    eye = np.eye(3)[None]
    return eye + np.sin(theta) * K + (1 - np.cos(theta)) * (K @ K)  # type: ignore[no-any-return]


def spread(count: int, budget: int) -> list[int]:
    """The indices of ``budget`` frames spread evenly over ``count`` (all of them when they fit)."""
    if count <= budget:
        return list(range(count))
    return [int(i) for i in np.linspace(0, count - 1, budget).round()]  # steps over 1 apart: all distinct


def _within_budget(views: Views, looks: Looks | None, p: SelfCalParams) -> tuple[Views, Looks | None]:
    """``views`` and ``looks`` cut to ``p.max_frames`` frames spread over the recording."""
    if len(views) <= p.max_frames:
        return views, looks
    keep = spread(len(views), p.max_frames)
    log.info("%d frames: calibrating on %d of them, spread evenly", len(views), len(keep))
    return [views[i] for i in keep], None if looks is None else [looks[i] for i in keep]


# -- 1. pairs -------------------------------------------------------------------------------------------
@dataclass
class _Obs:
    """One view's person in one frame: normalised and undistorted-pixel joints, confidences."""

    norm: F64  # (J, 2)
    pix: F64  # (J, 2) undistorted pixels
    conf: F64  # (J,)
    look: F64 | None = None  # appearance standardised over the camera's people (NaN where unseen)


def _look_distance(a: _Obs, b: _Obs) -> float:
    """RMS difference of two people's standardised appearance over the values both have (at least 3 of the 4:
    the torso and part of the thighs); NaN otherwise, which counts as a distance of ``look_sigma``."""
    if a.look is None or b.look is None:
        return float("nan")
    both = np.isfinite(a.look) & np.isfinite(b.look)
    if both.sum() < 3:
        return float("nan")
    return float(np.sqrt(np.mean((a.look[both] - b.look[both]) ** 2)))


def _standardised(looks: Looks | None, name: str) -> list[list[F64 | None]] | None:
    """One camera's appearance descriptors, each dimension centred and scaled over all its people (a camera's
    colour cast and exposure cancel; what is left tells its people apart)."""
    if looks is None:
        return None
    per_frame = [[np.asarray(d, np.float64) for d in frame.get(name, [])] for frame in looks]
    every = [d for frame in per_frame for d in frame]
    if not every:
        return None
    stack = np.stack(every)
    if np.isfinite(stack).sum(axis=0).min() < 2:
        return None
    mid, spread = np.nanmedian(stack, axis=0), np.nanstd(stack, axis=0) + 1e-6
    return [[(d - mid) / spread for d in frame] for frame in per_frame]


def _observations(
    cameras: Mapping[str, Camera], views: Views, p: SelfCalParams, looks: Looks | None = None
) -> dict[str, list[list[_Obs]]]:
    out: dict[str, list[list[_Obs]]] = {name: [] for name in cameras}
    standard = {name: _standardised(looks, name) for name in cameras}
    for k, frame in enumerate(views):
        for name, cam in cameras.items():
            people = []
            seen = standard[name]
            for n, pose in enumerate(frame.get(name, [])):
                kp = np.asarray(pose, np.float64)
                conf = np.where(np.isfinite(kp[:, :2]).all(axis=1), kp[:, 2], 0.0)
                xy = np.nan_to_num(kp[:, :2])
                if (conf >= p.min_score).sum() < p.min_joints:
                    continue
                look = seen[k][n] if seen is not None and k < len(seen) and n < len(seen[k]) else None
                people.append(_Obs(_normalised(cam, xy), cam.undistort(xy), conf, look))
            out[name].append(people)
    return out


def _essential(R: F64, t: F64) -> F64:
    tx = np.array([[0.0, -t[2], t[1]], [t[2], 0.0, -t[0]], [-t[1], t[0], 0.0]])
    return tx @ R


def _match(
    E: F64, oa: list[list[_Obs]], ob: list[list[_Obs]], focal: float, p: SelfCalParams
) -> tuple[list[list[tuple[int, int]]], F64, F64]:
    """Each frame's people of view a paired with view b under ``E`` (optimal assignment on the median Sampson
    distance in pixels, at most ``match_px``), and the paired joints (normalised) of every frame."""
    from scipy.optimize import linear_sum_assignment

    matches: list[list[tuple[int, int]]] = []
    keep_a, keep_b = [np.zeros((0, 2))], [np.zeros((0, 2))]
    for people_a, people_b in zip(oa, ob, strict=True):
        cost = np.full((len(people_a), len(people_b)), 1e6)
        for i, pa in enumerate(people_a):
            for j, pb in enumerate(people_b):
                both = (pa.conf >= p.min_score) & (pb.conf >= p.min_score)
                if both.sum() >= p.min_joints:
                    cost[i, j] = float(np.median(_sampson(E, pa.norm[both], pb.norm[both]))) * focal
        looks = np.array([[_look_distance(pa, pb) for pb in people_b] for pa in people_a]).reshape(cost.shape)
        frame_matches = []
        if cost.size:
            total = cost + p.look_px * np.nan_to_num(looks, nan=p.look_sigma)
            for i, j in zip(*linear_sum_assignment(total), strict=True):
                if cost[i, j] <= p.match_px:
                    frame_matches.append((int(i), int(j)))
                    pa, pb = people_a[i], people_b[j]
                    both = (pa.conf >= p.min_score) & (pb.conf >= p.min_score)
                    keep_a.append(pa.norm[both])
                    keep_b.append(pb.norm[both])
        matches.append(frame_matches)
    return matches, np.concatenate(keep_a), np.concatenate(keep_b)


@dataclass
class _Pair:
    a: str
    b: str
    R: F64
    t: F64
    inliers: int
    matches: list[list[tuple[int, int]]]  # per frame: (person in a, person in b)


def _best_hypothesis(
    src: list[F64],
    dst: list[F64],
    group: npt.NDArray[np.int_],
    owner: list[tuple[int, int]],
    weight: F64,
    *,
    A: F64,
    B: F64,
    thr: float,
    p: SelfCalParams,
) -> F64 | None:
    """The essential matrix most joints agree with, among hypotheses each drawn from one pairing of two
    people (a pooled RANSAC also draws samples mixing people, and on noisy keypoints one such mix can win).
    A hypothesis scores, for each person of view a in each frame, the joints of its best partner under it."""
    order = np.argsort([-len(x) for x in src])[: p.hypotheses]
    # Each group's (frame, person of view a): a hypothesis scores the best partner of each such person.
    _, inverse = np.unique(np.asarray(owner), axis=0, return_inverse=True)
    inverse = inverse.ravel()
    best, best_score = None, -1.0
    for g in order:
        if len(src[g]) < 6:
            continue
        try:
            E, _ = cv2.findEssentialMat(src[g], dst[g], np.eye(3), method=cv2.RANSAC, prob=0.99, threshold=2 * thr)
        except cv2.error:  # a degenerate sample (OpenCV's polynomial solver asserts)
            continue
        if E is None:
            continue
        for E1 in E.reshape(-1, 3, 3):
            inlier = (_sampson(E1, A, B) < 2 * thr).astype(np.float64)
            per_pair = np.bincount(group, weights=inlier, minlength=len(src)) * weight
            top = np.zeros(inverse.max() + 1)
            np.maximum.at(top, inverse, per_pair)
            score = float(top.sum())
            if score > best_score:
                best, best_score = E1, score
    return best


def _pair(
    a: str, b: str, obs: Mapping[str, list[list[_Obs]]], focal: float, p: SelfCalParams
) -> tuple[_Pair | None, str]:
    """Cameras a and b's relative pose from the people both see (module docstring, step 1)."""
    src: list[F64] = []
    dst: list[F64] = []
    group: list[npt.NDArray[np.int_]] = []
    owner: list[tuple[int, int]] = []
    looks: list[float] = []
    for k, (people_a, people_b) in enumerate(zip(obs[a], obs[b], strict=True)):
        for i, pa in enumerate(people_a):
            for pb in people_b:
                both = (pa.conf >= p.min_score) & (pb.conf >= p.min_score)
                if both.sum() >= p.min_joints:
                    looks.append(_look_distance(pa, pb))
                    src.append(pa.norm[both])
                    dst.append(pb.norm[both])
                    group.append(np.full(int(both.sum()), len(group)))
                    owner.append((k, i))
    if not src:
        return None, "no person seen by both"
    A, B = np.concatenate(src), np.concatenate(dst)
    if len(A) < p.min_pair_inliers:
        return None, f"only {len(A)} candidate joints seen by both"
    thr = p.ransac_px / focal
    d = np.nan_to_num(np.asarray(looks), nan=p.look_sigma) / p.look_sigma
    E = _best_hypothesis(src, dst, np.concatenate(group), owner, np.exp(-0.5 * d**2), A=A, B=B, thr=thr, p=p)
    if E is None:
        return None, "no essential matrix fits the joints both see"
    matches, A, B = _match(E, obs[a], obs[b], focal, p)
    if len(A) < p.min_pair_inliers:
        return None, f"only {len(A)} joints of people paired under one geometry (need {p.min_pair_inliers})"
    try:
        E, mask = cv2.findEssentialMat(A, B, np.eye(3), method=cv2.USAC_MAGSAC, prob=0.9999, threshold=thr)
    except cv2.error:
        E = None
    if E is None or E.shape != (3, 3):
        return None, "no essential matrix fits the paired people"
    inliers, R, t, _ = cv2.recoverPose(E, A, B, np.eye(3), mask=mask.copy())
    if inliers < p.min_pair_inliers:
        return None, f"only {inliers} joints agree with one relative pose (need {p.min_pair_inliers})"
    return _Pair(a, b, R, t.ravel(), int(inliers), matches), ""


def _pairs_from_poses(
    poses: Mapping[str, tuple[F64, F64]], obs: Mapping[str, list[list[_Obs]]], focal: float, p: SelfCalParams
) -> list[_Pair]:
    """Every placed pair's people paired again under the current camera poses."""
    names = list(poses)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            (Ra, ta), (Rb, tb) = poses[a], poses[b]
            R = Rb @ Ra.T
            t = tb - R @ ta
            matches, A, _ = _match(_essential(R, t / max(float(np.linalg.norm(t)), 1e-12)), obs[a], obs[b], focal, p)
            out.append(_Pair(a, b, R, t, len(A), matches))
    return out


def _seed(pairs: list[_Pair], names: list[str], p: SelfCalParams) -> _Pair:
    """The pair the placement starts from: the one whose relative rotation closes the most loops with two
    other pairs (three cameras) within ``p.loop_deg``, then the one with the most inliers. A wrong pair closes
    fewer: facing cameras' matrices can come out turned by up to 180 degrees with the most inliers of all
    (people walking in mirror-image lanes, or standing still)."""
    rot: dict[tuple[str, str], F64] = {}
    for q in pairs:
        rot[(q.a, q.b)], rot[(q.b, q.a)] = q.R, q.R.T
    closed: dict[frozenset[str], int] = {}
    for a, b, c in combinations(names, 3):
        if (
            all(k in rot for k in ((a, b), (b, c), (c, a)))
            and turn_deg(rot[(c, a)] @ rot[(b, c)] @ rot[(a, b)]) <= p.loop_deg
        ):
            for edge in (frozenset((a, b)), frozenset((b, c)), frozenset((a, c))):
                closed[edge] = closed.get(edge, 0) + 1
    return max(pairs, key=lambda q: (closed.get(frozenset((q.a, q.b)), 0), q.inliers))


# -- 2. people across cameras ---------------------------------------------------------------------------
def _find(parent: dict[tuple[str, int], tuple[str, int]], x: tuple[str, int]) -> tuple[str, int]:
    """Union-find's root of ``x`` (path halving)."""
    while parent.setdefault(x, x) != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


def _groups(names: list[str], pairs: list[_Pair], frames: int) -> list[list[dict[str, int]]]:
    """Per frame: one dict camera -> person index per person seen by two or more cameras."""
    out = []
    for k in range(frames):
        parent: dict[tuple[str, int], tuple[str, int]] = {}
        find = partial(_find, parent)
        degree: dict[tuple[str, int], int] = {}
        for pair in pairs:
            for i, j in pair.matches[k]:
                u, v = (pair.a, i), (pair.b, j)
                degree[u] = degree.get(u, 0) + 1
                degree[v] = degree.get(v, 0) + 1
                parent[find(u)] = find(v)
        members: dict[tuple[str, int], list[tuple[str, int]]] = {}
        for node in parent:
            members.setdefault(find(node), []).append(node)
        frame_groups = []
        for group in members.values():
            chosen: dict[str, tuple[int, int]] = {}
            for cam, idx in group:
                if cam not in chosen or degree[(cam, idx)] > chosen[cam][1]:
                    chosen[cam] = (idx, degree[(cam, idx)])
            if len(chosen) >= 2:
                frame_groups.append({cam: idx for cam, (idx, _) in chosen.items()})
        out.append(frame_groups)
    return out


# -- 3. placement and 4. adjustment ---------------------------------------------------------------------
@dataclass
class _Track:
    """One joint of one person in one frame, seen by several cameras."""

    frame: int
    person: int  # the person's group in its frame
    joint: int
    obs: dict[str, tuple[F64, float]]  # camera -> (undistorted pixel xy, confidence)
    X: F64 | None = None


def _P(cam: Camera, R: F64, t: F64) -> F64:
    return cam.K @ np.hstack([R, t[:, None]])


def _track_views(tracks: list[_Track], names: list[str]) -> tuple[F64, F64]:
    """The tracks' observations as (N, C, 2) undistorted pixels and (N, C) confidences (0: not seen)."""
    xy = np.zeros((len(tracks), len(names), 2))
    w = np.zeros((len(tracks), len(names)))
    for i, tr in enumerate(tracks):
        for c, n in enumerate(names):
            if n in tr.obs:
                xy[i, c], w[i, c] = tr.obs[n]
    return xy, w


def _adjustable(tracks: list[_Track], poses: Mapping[str, tuple[F64, F64]]) -> list[_Track]:
    """The triangulated tracks that at least two placed cameras see."""
    return [tr for tr in tracks if tr.X is not None and sum(n in poses for n in tr.obs) >= 2]


def _pose_vectors(poses: Mapping[str, tuple[F64, F64]], names: list[str], centres: F64 | None = None) -> F64:
    """(C, 6) each camera's rotation vector and translation; (C, 3) the rotation vectors alone where the
    cameras' ``centres`` (C, 3) are held."""
    rvecs = np.stack([cv2.Rodrigues(poses[n][0])[0].ravel() for n in names])
    return rvecs if centres is not None else np.concatenate([rvecs, np.stack([poses[n][1] for n in names])], axis=1)


def _unpacked(vectors: F64, centres: F64 | None) -> tuple[F64, F64]:
    """``_pose_vectors`` to (C, 3, 3) rotations and (C, 3) translations (``t = -R c`` where centres are held)."""
    R = _rodrigues(vectors[:, :3])
    return R, vectors[:, 3:] if centres is None else -np.einsum("cij,cj->ci", R, centres)


def _poses_of(vectors: F64, names: list[str], centres: F64 | None = None) -> dict[str, tuple[F64, F64]]:
    """``_pose_vectors`` back to (R, t) per camera."""
    out = {}
    for i, n in enumerate(names):
        R = np.asarray(cv2.Rodrigues(vectors[i, :3])[0], np.float64)
        out[n] = (R, vectors[i, 3:].copy() if centres is None else -R @ centres[i])
    return out


def _triangulate(
    tracks: list[_Track], cams: Mapping[str, Camera], poses: Mapping[str, tuple[F64, F64]], max_px: float
) -> None:
    names = list(poses)
    if len(names) < 2 or not tracks:
        return
    P = np.stack([_P(cams[n], *poses[n]) for n in names])
    if not np.isfinite(P).all():  # a pose the adjustment lost: nothing is triangulated from it
        for tr in tracks:
            tr.X = None
        return
    xy, w = _track_views(tracks, names)
    X = dlt(P, xy, w)
    homo = np.concatenate([X, np.ones((len(X), 1))], axis=1)
    proj = np.einsum("cij,kj->kci", P, homo)
    depth = proj[..., 2]
    err = np.linalg.norm(proj[..., :2] / np.where(np.abs(depth) < 1e-9, 1e-9, depth)[..., None] - xy, axis=2)
    used = w > 0
    good = np.isfinite(X).all(axis=1) & ((depth > 0) | ~used).all(axis=1)
    good &= (np.where(used, err, 0).max(axis=1) <= max_px) & (used.sum(axis=1) >= 2)
    for i, tr in enumerate(tracks):
        tr.X = X[i] if good[i] else None


def _place(name: str, cam: Camera, tracks: list[_Track], p: SelfCalParams) -> tuple[tuple[F64, F64] | None, str, int]:
    obj, img = [], []
    for tr in tracks:
        if tr.X is not None and name in tr.obs:
            obj.append(tr.X)
            img.append(tr.obs[name][0])
    if len(obj) < p.min_place_joints:
        return (
            None,
            f"only {len(obj)} joints it sees are triangulated by the placed cameras (need {p.min_place_joints})",
            len(obj),
        )
    ok, rvec, tvec, inl = cv2.solvePnPRansac(
        np.asarray(obj), np.asarray(img), cam.K, None, reprojectionError=p.ransac_px * 2,
        iterationsCount=2000, confidence=0.9999, flags=cv2.SOLVEPNP_EPNP,
    )  # fmt: skip
    if not ok or inl is None or len(inl) < p.min_place_joints:
        return None, "no camera pose agrees with the joints it sees", len(obj)
    idx = inl.ravel()
    rvec, tvec = cv2.solvePnPRefineLM(np.asarray(obj)[idx], np.asarray(img)[idx], cam.K, None, rvec, tvec)
    R, _ = cv2.Rodrigues(rvec)
    return (np.asarray(R, np.float64), tvec.ravel().astype(np.float64)), "", len(idx)


def _adjust(
    tracks: list[_Track],
    cams: Mapping[str, Camera],
    poses: dict[str, tuple[F64, F64]],
    p: SelfCalParams,
    centres: F64 | None = None,
) -> tuple[dict[str, tuple[F64, F64]], list[_Track]]:
    """Bundle adjustment of the placed cameras and the triangulated joints (``tracks`` with X); where the
    cameras' ``centres`` (in ``poses``' order) are given, only their orientations move."""
    names = list(poses)
    live = _adjustable(tracks, poses)
    if not live:
        raise CalibrationError(
            f"no joint is seen by two of the placed cameras ({', '.join(names)}) within {p.outlier_px:g} px of"
            " their poses: nothing to adjust them on"
        )
    cam_idx, pt_idx, obs_xy, obs_w = [], [], [], []
    for i, tr in enumerate(live):
        for n, (xy, conf) in tr.obs.items():
            if n in poses:
                cam_idx.append(names.index(n))
                pt_idx.append(i)
                obs_xy.append(xy)
                obs_w.append(np.sqrt(conf))
    ci, pi = np.asarray(cam_idx), np.asarray(pt_idx)
    xy, w = np.asarray(obs_xy), np.asarray(obs_w)
    Ks = np.stack([cams[n].K for n in names])
    nc, npt_ = len(names), len(live)
    k = 3 if centres is not None else 6  # unknowns per camera
    x0 = np.concatenate([_pose_vectors(poses, names, centres).ravel(), np.asarray([tr.X for tr in live]).ravel()])

    def residuals(x: F64) -> F64:
        R, t = _unpacked(x[: nc * k].reshape(nc, k), centres)
        X = x[nc * k :].reshape(npt_, 3)
        Xc = np.einsum("nij,nj->ni", R[ci], X[pi]) + t[ci]
        z = np.where(np.abs(Xc[:, 2]) < 1e-6, 1e-6, Xc[:, 2])
        K = Ks[ci]
        u = K[:, 0, 0] * Xc[:, 0] / z + K[:, 0, 1] * Xc[:, 1] / z + K[:, 0, 2]
        v = K[:, 1, 1] * Xc[:, 1] / z + K[:, 1, 2]
        return (np.column_stack([u, v]) - xy).ravel() * np.repeat(w, 2)  # type: ignore[no-any-return]

    sparsity = lil_matrix((len(ci) * 2, nc * k + npt_ * 3), dtype=np.int8)
    rows = np.arange(len(ci))
    for s in range(k):
        sparsity[2 * rows, ci * k + s] = 1
        sparsity[2 * rows + 1, ci * k + s] = 1
    for s in range(3):
        sparsity[2 * rows, nc * k + pi * 3 + s] = 1
        sparsity[2 * rows + 1, nc * k + pi * 3 + s] = 1
    fit = least_squares(
        residuals, x0, jac_sparsity=sparsity, x_scale="jac", loss="huber", f_scale=p.huber_px,
        method="trf", ftol=1e-10, xtol=1e-12, max_nfev=p.adjustment_evaluations, tr_solver="lsmr",
    )  # fmt: skip
    log.debug(
        "adjustment: cost %.1f -> %.1f in %d evaluations (%s)",
        0.5 * (residuals(x0) ** 2).sum(),
        fit.cost,
        fit.nfev,
        fit.message,
    )
    out = _poses_of(fit.x[: nc * k].reshape(nc, k), names, centres)
    X = fit.x[nc * k :].reshape(npt_, 3)
    for i, tr in enumerate(live):
        tr.X = X[i]
    return out, live


def _adjust_cameras(
    tracks: list[_Track],
    cams: Mapping[str, Camera],
    poses: dict[str, tuple[F64, F64]],
    p: SelfCalParams,
    centres: F64 | None = None,
) -> dict[str, tuple[F64, F64]]:
    """The cameras' poses alone, every joint triangulated anew (weighted DLT) inside the residuals: 6 unknowns
    per camera instead of thousands of joints. The full adjustment (``_adjust``) started far from its minimum
    needs hundreds of iterations on the shared recordings (its sparse solver is inexact); from here it
    needs few. The first camera is held: the world frame is then fixed but for the scale. Where the cameras'
    ``centres`` are given (in ``poses``' order), they fix the frame: every camera's orientation moves, alone."""
    names = list(poses)
    live = _adjustable(tracks, poses)
    if len(names) < 2 or not live:
        return poses
    xy, w = _track_views(live, names)
    used = w > 0
    Ks = np.stack([cams[n].K for n in names])
    every = _pose_vectors(poses, names, centres)
    k, held = every.shape[1], 0 if centres is not None else 1

    def residuals(x: F64) -> F64:
        R, t = _unpacked(np.concatenate([every[:held], x.reshape(-1, k)]), centres)
        P = np.einsum("cij,cjk->cik", Ks, np.concatenate([R, t[:, :, None]], axis=2))
        X = dlt(P, xy, w)
        homo = np.concatenate([np.where(np.isfinite(X), X, 0.0), np.ones((len(X), 1))], axis=1)
        q = np.einsum("cij,nj->nci", P, homo)
        z = np.where(np.abs(q[..., 2:]) < 1e-6, 1e-6, q[..., 2:])
        r = (q[..., :2] / z - xy) * np.sqrt(w)[..., None]
        return np.where(used[..., None], r, 0.0).ravel()

    fit = least_squares(
        residuals, every[held:].ravel(), loss="huber", f_scale=p.huber_px, method="trf", x_scale="jac",
        max_nfev=p.adjustment_evaluations,
    )  # fmt: skip
    return _poses_of(np.concatenate([every[:held], fit.x.reshape(-1, k)]), names, centres)


def _errors(tracks: list[_Track], cams: Mapping[str, Camera], poses: Mapping[str, tuple[F64, F64]]) -> dict[str, F64]:
    """Reprojection errors (pixels) of each placed camera's observations of triangulated joints."""
    errs: dict[str, list[float]] = {n: [] for n in poses}
    for tr in tracks:
        if tr.X is None:
            continue
        for n, (xy, _) in tr.obs.items():
            if n in poses:
                R, t = poses[n]
                q = cams[n].K @ (R @ tr.X + t)
                errs[n].append(float(np.linalg.norm(q[:2] / q[2] - xy)))
    return {n: np.asarray(e) for n, e in errs.items()}


# -- 5. world frame -------------------------------------------------------------------------------------
def _similarity(poses: dict[str, tuple[F64, F64]], s: float, R0: F64, c0: F64) -> dict[str, tuple[F64, F64]]:
    """Camera poses after the world change X_new = s R0 (X_old - c0)."""
    out = {}
    for n, (R, t) in poses.items():
        out[n] = (R @ R0.T, s * (t + R @ c0))
    return out


def _world_frame(tracks: list[_Track], poses: dict[str, tuple[F64, F64]], first: str) -> tuple[F64, F64, str]:
    """(R0, c0): Z up from the floor plane the lowest ankles lie on, origin on it below the people, x along
    the first camera's view projected on the floor."""
    ankles = [tr.X for tr in tracks if tr.X is not None and tr.joint in (L_ANKLE, R_ANKLE)]
    centres = np.stack([-R.T @ t for R, t in poses.values()])
    if len(ankles) < 20:
        return np.eye(3), np.zeros(3), "too few ankles for a floor: the first camera's frame is the world"
    A = np.asarray(ankles)
    c = np.median(A, axis=0)
    _, _, vt = np.linalg.svd(A - c)
    up = vt[2]
    if np.mean((centres - c) @ up) < 0:  # cameras hang above the floor
        up = -up
    heights = (A - c) @ up
    floor = np.quantile(heights, 0.1)  # the ankles' plane: standing feet, not lifted ones
    c = c + floor * up
    view = poses[first][0][2]  # the first camera's optical axis in the world
    x = view - (view @ up) * up
    if np.linalg.norm(x) < 1e-6:
        x = np.cross(up, [1.0, 0.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(up, x)
    return np.stack([x, y, up]), c, "floor from the ankles"


def _skeletons(tracks: list[_Track]) -> F64:
    """The triangulated joints as one (N, 17, 3) skeleton per person and frame (NaN: not triangulated)."""
    index: dict[tuple[int, int], int] = {}
    for tr in tracks:
        if tr.X is not None:
            index.setdefault((tr.frame, tr.person), len(index))
    out = np.full((len(index), 17, 3), np.nan)
    for tr in tracks:
        if tr.X is not None:
            out[index[(tr.frame, tr.person)], tr.joint] = tr.X
    return out


def _height_scale(skeletons: F64, person_height: float) -> float | None:
    """Metres per model unit: the people's median leg + trunk segments against ``person_height``."""
    segments = {
        "shank": ((L_KNEE, L_ANKLE), (R_KNEE, R_ANKLE)),
        "thigh": ((L_HIP, L_KNEE), (R_HIP, R_KNEE)),
        "trunk": ((L_HIP, L_SHOULDER), (R_HIP, R_SHOULDER)),
    }
    chain = 0.0
    for pairs in segments.values():
        lengths = bone_lengths(skeletons, pairs).ravel()
        lengths = lengths[np.isfinite(lengths)]
        if len(lengths) < 10:
            return None
        chain += float(np.median(lengths))
    if not np.isfinite(chain) or chain <= 1e-9:
        return None
    return person_height * LEG_TRUNK_OF_STATURE / chain


def _bone_spread(skeletons: F64) -> float:
    """How much the people's limb bones change length, a check of the result that needs no reference: each of
    the 8 limb bones' robust coefficient of variation (1.4826 MAD / median) over every person and frame,
    averaged (NaN if no bone is seen 10 times). Right cameras keep bones rigid (0.12-0.16 on the shared
    recordings with OpenPose, hpe-0001 and YOLOv8n-pose, 0.25 with PoseNet 0.75, where the runs 0.6-4 m
    off gave 0.30-1.46). It is reported, not used to choose between runs: on halves of the recordings, runs
    metres off scored as low as 0.05 (bench/design-choices.md)."""
    lengths = bone_lengths(skeletons)
    spreads = []
    for b in range(lengths.shape[1]):
        values = lengths[:, b][np.isfinite(lengths[:, b])]
        if len(values) >= 10:
            median = float(np.median(values))
            spreads.append(1.4826 * float(np.median(np.abs(values - median))) / max(median, 1e-12))
    return float(np.mean(spreads)) if spreads else float("nan")


# -- the whole -----------------------------------------------------------------------------------------
def _tracks(groups: list[list[dict[str, int]]], obs: Mapping[str, list[list[_Obs]]], p: SelfCalParams) -> list[_Track]:
    tracks = []
    for k, frame_groups in enumerate(groups):
        for person, group in enumerate(frame_groups):
            people = {cam: obs[cam][k][idx] for cam, idx in group.items()}
            for j in range(next(iter(people.values())).conf.shape[0]):
                seen = {c: (o.pix[j], float(o.conf[j])) for c, o in people.items() if o.conf[j] >= p.min_score}
                if len(seen) >= 2:
                    tracks.append(_Track(k, person, j, seen))
    return tracks


def _drop_far(
    tracks: list[_Track], cams: Mapping[str, Camera], poses: Mapping[str, tuple[F64, F64]], px: float
) -> None:
    for tr in tracks:
        if tr.X is None:
            continue
        for n in [n for n in tr.obs if n in poses]:
            R, t = poses[n]
            q = cams[n].K @ (R @ tr.X + t)
            if q[2] <= 0 or np.linalg.norm(q[:2] / q[2] - tr.obs[n][0]) > px:
                del tr.obs[n]


def calibrate_from_people(
    cameras: Mapping[str, Camera],
    views: Views,
    *,
    looks: Looks | None = None,
    person_height: float | None = 1.75,
    params: SelfCalParams | None = None,
) -> SelfCalResult:
    """Every camera's extrinsics from the people in ``views`` (``_calibrate_once``), started once per inlier
    threshold of ``params.ransac_tries``: the run that explains the most joints wins. A wrong start pairs
    fewer people; neither the reprojection error nor the count of 2D joints within a tight radius of the
    run's cameras picked better on the shared recordings (measured against their Qualisys calibration)."""
    p = params or SelfCalParams()
    views, looks = _within_budget(views, looks, p)
    results: list[SelfCalResult] = []
    failures = []
    t0 = time.perf_counter()
    for px in p.ransac_tries:
        try:
            result = _calibrate_once(cameras, views, looks, person_height, replace(p, ransac_px=px))
        except CalibrationError as exc:
            failures.append(str(exc))
            continue
        log.info(
            "people calibration at %.0f px: %d joints, %s cameras, bone spread %.3f",
            px, result.points, len(result.placed), result.bone_spread,
        )  # fmt: skip
        results.append(result)
    if not results:
        raise CalibrationError(failures[0])
    best = max(results, key=lambda r: (len(r.placed), r.points))
    best.start_disagreement = start_disagreement(best, [r for r in results if r is not best])
    best.seconds["total"] = time.perf_counter() - t0
    return best


def starts_verdict(disagreement: float) -> str:
    """One line for the user on how far the starts agree (``start_disagreement``)."""
    if math.isnan(disagreement):
        return "starts: no other start placed 3 of these cameras, so the result could not be checked against one"
    if disagreement <= STARTS_AGREE:
        return f"starts agree: their rigs lie within {disagreement:.1%} of the rig's size of each other"
    return (
        f"WARNING: the starts disagree by {disagreement:.0%} of the rig's size: these frames do not pin the cameras "
        "down (people standing still can be paired wrongly across cameras and still fit), so this calibration may "
        "be metres off. Film people walking through the room, or anchor it with known points or a board"
    )


def start_disagreement(chosen: SelfCalResult, others: Sequence[SelfCalResult]) -> float:
    """The largest distance of a camera centre of another start's rig from ``chosen``'s, after the best
    similarity between them, as a fraction of ``chosen``'s size (its centres' mean distance from their mean),
    over the starts that placed at least 3 of its cameras; NaN when none did.

    A reference-free check of the result: right starts converge to one rig, while a wrong pairing of people
    across cameras (people standing still never contradict one) lands each start somewhere else."""
    mine = {n: chosen.cameras[n] for n in chosen.placed}
    size = rig_size(mine)
    worst = float("nan")
    if size <= 0:  # every camera at one point: no size to measure against
        return worst
    for other in others:
        theirs = {n: other.cameras[n] for n in other.placed if n in mine}
        if len(theirs) < 3:
            continue
        _, differences = rig_differences(theirs, {n: mine[n] for n in theirs})
        gap = max(centre for centre, _ in differences.values()) / size
        worst = gap if math.isnan(worst) else max(worst, gap)
    return worst


def _calibrate_once(
    cameras: Mapping[str, Camera], views: Views, looks: Looks | None, person_height: float | None, p: SelfCalParams
) -> SelfCalResult:
    """Every camera's extrinsics from the people its frames show (``views``: per frame, camera -> 2D poses in
    the camera's own pixels, COCO-17 with confidences). ``cameras`` supply the intrinsics (already ``fit`` to
    those pixels). After the first placement the people are paired again under the adjusted poses and the
    adjustment runs again (``p.rounds`` in all): more joints, fewer wrong pairings each time. Raises
    ``CalibrationError`` when not even two cameras can be placed, saying why."""
    names = list(cameras)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    obs = _observations(cameras, views, p, looks)
    described = any(o.look is not None for frames in obs.values() for people in frames for o in people)
    focal = float(np.mean([c.K[0, 0] for c in cameras.values()]))
    pairs, why = [], {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            pair, reason = _pair(a, b, obs, focal, p)
            if pair is None:
                why[(a, b)] = reason
                log.info("cameras %s and %s: %s", a, b, reason)
            else:
                pairs.append(pair)
    seconds["pairs"] = time.perf_counter() - t0
    if not pairs:
        detail = "; ".join(f"{a}-{b}: {r}" for (a, b), r in why.items())
        raise CalibrationError(f"no two cameras share enough people to be placed ({detail})")
    t0 = time.perf_counter()
    tracks = _tracks(_groups(names, pairs, len(views)), obs, p)
    best = _seed(pairs, names, p)
    poses: dict[str, tuple[F64, F64]] = {best.a: (np.eye(3), np.zeros(3)), best.b: (best.R, best.t)}
    _triangulate(tracks, cameras, poses, p.outlier_px)
    reports = {n: CameraReport(n, False) for n in names}
    pending = [n for n in names if n not in poses]
    while pending:
        tried = [(n, *_place(n, cameras[n], tracks, p)) for n in pending]
        placed = [(n, pose, count) for n, pose, _, count in tried if pose is not None]
        if not placed:
            for n, _, reason, _ in tried:
                reports[n].reason = reason
            break
        n, pose, _ = max(placed, key=lambda item: item[2])
        poses[n] = pose
        pending.remove(n)
        _triangulate(tracks, cameras, poses, p.outlier_px)
    seconds["placement"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    poses, live = _adjust_rounds(tracks, cameras, poses, _Seen(obs, focal, len(views)), p)
    seconds["adjustment"] = time.perf_counter() - t0
    R0, c0, _ = _world_frame(live, poses, names[0] if names[0] in poses else best.a)
    scale, source = 1.0, "no scale: the first pair's baseline is 1"
    skeletons = _skeletons(live)
    if person_height is not None:
        found = _height_scale(skeletons, person_height)
        if found is not None:
            scale, source = found, f"the people's leg and trunk segments for a height of {person_height:.2f} m"
    poses = _similarity(poses, scale, R0, c0)
    for tr in live:
        tr.X = scale * R0 @ (tr.X - c0)  # type: ignore[operator]
    _report(reports, live, cameras, poses)
    out = dict(cameras)
    for n, (R, t) in poses.items():
        out[n] = replace(cameras[n], R=R, t=t)
    return SelfCalResult(
        out, [reports[n] for n in names], len(live), len({tr.frame for tr in live}), source, _bone_spread(skeletons),
        "colour and geometry" if described else "geometry alone", seconds=seconds,
    )  # fmt: skip


@dataclass(frozen=True)
class _Seen:
    """Every camera's people per frame (``_observations``), the cameras' mean focal length, the frame count."""

    obs: Mapping[str, list[list[_Obs]]]
    focal: float
    frames: int


def _adjust_rounds(
    tracks: list[_Track],
    cameras: Mapping[str, Camera],
    poses: dict[str, tuple[F64, F64]],
    seen: _Seen,
    p: SelfCalParams,
    *,
    centres: F64 | None = None,
    first: SelfCalParams | None = None,
) -> tuple[dict[str, tuple[F64, F64]], list[_Track]]:
    """``p.rounds`` of adjustment (cameras alone, then cameras and joints, far observations dropped, again),
    the people paired again under the adjusted poses before each next round; the first round with ``first``'s
    settings where given. The cameras' ``centres`` (in ``poses``' order), where given, are held. Returns the
    poses and the joints they explain; raises ``CalibrationError`` when too few joints agree with them."""
    live: list[_Track] = []
    for round_ in range(p.rounds):
        q = first if first is not None and round_ == 0 else p
        poses = _adjust_cameras(tracks, cameras, poses, q, centres)
        _triangulate(tracks, cameras, poses, q.outlier_px)
        poses, live = _adjust(tracks, cameras, poses, q, centres)
        _drop_far(live, cameras, poses, q.outlier_px)
        _triangulate(live, cameras, poses, q.outlier_px)
        poses, live = _adjust(live, cameras, poses, q, centres)
        # Pair the people again under the adjusted poses: the next round starts from every joint they share.
        paired = _paired(poses, seen, cameras, p)
        if not _adjustable(paired, poses):  # nobody paired again: this round's result stands
            break
        tracks = paired
    if len(live) < p.min_place_joints:
        raise CalibrationError(
            f"only {len(live)} joints agree with the cameras' poses after the adjustment (need {p.min_place_joints})"
        )
    return poses, live


def _paired(
    poses: Mapping[str, tuple[F64, F64]], seen: _Seen, cameras: Mapping[str, Camera], p: SelfCalParams
) -> list[_Track]:
    """Each frame's people paired across the cameras under ``poses``, their joints triangulated."""
    pairs = _pairs_from_poses(poses, seen.obs, seen.focal, p)
    tracks = _tracks(_groups(list(poses), pairs, seen.frames), seen.obs, p)
    _triangulate(tracks, cameras, poses, p.outlier_px)
    return tracks


def _report(
    reports: dict[str, CameraReport],
    live: list[_Track],
    cameras: Mapping[str, Camera],
    poses: Mapping[str, tuple[F64, F64]],
) -> None:
    """Each placed camera's report: its observations, frames and RMS reprojection error under ``poses``."""
    errs = _errors(live, cameras, poses)
    for n in poses:
        e = errs[n]
        frames_seen = {tr.frame for tr in live if n in tr.obs}
        report = reports.setdefault(n, CameraReport(n, True))
        report.placed, report.reason, report.observations, report.frames = True, "", len(e), len(frames_seen)
        report.error_px = float(np.sqrt(np.mean(e**2))) if len(e) else float("nan")


def _given_frame(adjusted: Mapping[str, Camera], given: Mapping[str, Camera]) -> tuple[float, F64, F64]:
    """The similarity that maps an adjusted rig onto the given one, fitted on the cameras that did not move:
    a camera that moved (the reason to refine) would otherwise drag the whole frame by a share of its move
    and turn. After a fit on all, a camera left further off than twice the median centre distance (and 1% of
    the rig's size) or twice the median turn (and 0.1 degrees) is left out, twice; two cameras always remain."""
    names = list(adjusted)
    size = rig_size({n: given[n] for n in names})
    fit = alignment(adjusted, given)
    for _ in range(2):
        moved = transform(dict(adjusted), *fit)
        off = {n: camera_difference(moved[n], given[n]) for n in names}
        far = max(2 * float(np.median([c for c, _ in off.values()])), 0.01 * size)
        turned = max(2 * float(np.median([a for _, a in off.values()])), 0.1)
        kept = [n for n in names if off[n][0] <= far and off[n][1] <= turned]
        if len(kept) < 2 or len(kept) == len(names):
            break
        fit = alignment({n: adjusted[n] for n in kept}, given)
    return fit


def _under_given(
    cameras: Mapping[str, Camera], views: Views, looks: Looks | None, p: SelfCalParams
) -> tuple[_Seen, SelfCalParams, list[_Track]]:
    """Each frame's people paired across the cameras under their given poses and triangulated, joints kept as
    far off as a camera turned ``p.refine_turn_deg`` puts them (a knocked camera is off by all its joints at
    once); those settings (``wide``) are returned for a refinement's first round."""
    obs = _observations(cameras, views, p, looks)
    focal = float(np.mean([c.K[0, 0] for c in cameras.values()]))
    seen = _Seen(obs, focal, len(views))
    wide = replace(p, outlier_px=max(p.outlier_px, focal * float(np.tan(np.radians(p.refine_turn_deg)))))
    return seen, wide, _paired({n: (c.R, c.t) for n, c in cameras.items()}, seen, cameras, wide)


@dataclass
class Explained:
    """How well a calibration explains 2D poses it was not made from (``reprojection_under``)."""

    errors: dict[str, F64]  # per camera: the reprojection errors (pixels) of its joints triangulated
    paired: int  # joints of people paired across cameras under the calibration
    triangulated: int  # of those, triangulated with every view within the gate


def reprojection_under(
    cameras: Mapping[str, Camera], views: Views, *, looks: Looks | None = None, params: SelfCalParams | None = None
) -> Explained:
    """A calibration judged on the people in ``views`` (reference-free, e.g. on a recording it was not made
    from): the people paired across cameras under its poses and triangulated, as a refinement's first round
    starts (a joint kept while every view is within ``refine_turn_deg``'s gate: a wrong rig's far joints count
    against it instead of dropping out; their median error is the robust figure)."""
    p = params or SelfCalParams()
    _, _, tracks = _under_given(cameras, views, looks, p)
    poses = {n: (c.R, c.t) for n, c in cameras.items()}
    return Explained(_errors(tracks, cameras, poses), len(tracks), sum(tr.X is not None for tr in tracks))


def refine_with_people(
    cameras: Mapping[str, Camera],
    views: Views,
    *,
    looks: Looks | None = None,
    params: SelfCalParams | None = None,
    keep_centres: bool = False,
) -> SelfCalResult:
    """The cameras' given extrinsics adjusted on the people in ``views``: each frame's people paired across
    cameras under the given poses, then the rounds of adjustment of a calibration from scratch
    (``_adjust_rounds``); the adjusted rig is mapped back onto the given one by the best similarity on the
    cameras that did not move (``_given_frame``), so the world frame and scale stay the given ones. For a
    rig calibrated before (a board, known points, another system) whose cameras may have moved a little
    since; started at a reference, it also shows where the adjustment's minimum lies for these 2D poses.
    ``keep_centres``: every camera stays where the calibration puts it and only turns (cameras on fixed
    mounts, knocked or turned since); the given centres then fix the frame. Each camera's report gives its
    RMS reprojection error before (``start_px``) and after."""
    p = params or SelfCalParams()
    names = list(cameras)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if np.linalg.norm(cameras[a].center - cameras[b].center) < 1e-6:
                raise CalibrationError(
                    f"cameras {a} and {b} stand at one point: the calibration has no extrinsics to refine "
                    "(calibrate from scratch without --refine)"
                )
    t0 = time.perf_counter()
    views, looks = _within_budget(views, looks, p)
    given = {n: (c.R.copy(), c.t.copy()) for n, c in cameras.items()}
    seen, wide, tracks = _under_given(cameras, views, looks, p)
    described = any(o.look is not None for frames in seen.obs.values() for people in frames for o in people)
    if not _adjustable(tracks, given):
        raise CalibrationError(
            "no person is seen by two cameras where their given poses put them: the calibration does not fit "
            "these videos (calibrate from scratch without --refine)"
        )
    reports = {n: CameraReport(n, True) for n in names}
    seconds = {"pairs": time.perf_counter() - t0}
    t0 = time.perf_counter()
    centres = np.stack([cameras[n].center for n in names]) if keep_centres else None
    poses, live = _adjust_rounds(tracks, cameras, dict(given), seen, p, centres=centres, first=wide)
    seconds["adjustment"] = time.perf_counter() - t0
    adjusted = {n: replace(cameras[n], R=R, t=t) for n, (R, t) in poses.items()}
    scale, R0, shift = (1.0, np.eye(3), np.zeros(3)) if keep_centres else _given_frame(adjusted, cameras)
    out = {**cameras, **transform(adjusted, scale, R0, shift)}
    for tr in live:
        tr.X = scale * R0 @ tr.X + shift  # type: ignore[operator]
    _report(reports, live, out, {n: (out[n].R, out[n].t) for n in poses})
    # Before: the same joints (those the adjusted rig explains) triangulated under the given poses, ungated.
    before = [replace(tr, X=None) for tr in live]
    _triangulate(before, cameras, given, np.inf)
    start: dict[str, CameraReport] = {}
    _report(start, before, cameras, given)
    for n, r in start.items():
        reports[n].start_px = r.error_px
    for r in reports.values():
        if not r.observations:
            r.placed, r.reason = False, "none of its joints agrees with the other cameras after the adjustment"
    return SelfCalResult(
        out, [reports[n] for n in names], len(live), len({tr.frame for tr in live}),
        "the given calibration's (its camera centres held)" if keep_centres
        else "the given calibration's (the adjusted rig mapped onto it)", _bone_spread(_skeletons(live)),
        "colour and geometry" if described else "geometry alone", seconds=seconds,
    )  # fmt: skip
