"""Step 1: each camera pair's relative pose from the people both see, and the pair the placement starts from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations

import cv2
import numpy as np
import numpy.typing as npt
from posefleet.merge.calibration import Camera
from posefleet.merge.extrinsics import turn_deg
from posefleet.merge.selfcal.params import F64, Looks, SelfCalParams, Views


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


def _essential(R: F64, t: F64) -> F64:
    tx = np.array([[0.0, -t[2], t[1]], [t[2], 0.0, -t[0]], [-t[1], t[0], 0.0]])
    return tx @ R


@dataclass
class Obs:
    """One view's person in one frame: normalised and undistorted-pixel joints, confidences."""

    norm: F64  # (J, 2)
    pix: F64  # (J, 2) undistorted pixels
    conf: F64  # (J,)
    look: F64 | None = None  # appearance standardised over the camera's people (NaN where unseen)


def _look_distance(a: Obs, b: Obs) -> float:
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


def observations(
    cameras: Mapping[str, Camera], views: Views, p: SelfCalParams, looks: Looks | None = None
) -> dict[str, list[list[Obs]]]:
    out: dict[str, list[list[Obs]]] = {name: [] for name in cameras}
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
                people.append(Obs(_normalised(cam, xy), cam.undistort(xy), conf, look))
            out[name].append(people)
    return out


def _match(
    E: F64, oa: list[list[Obs]], ob: list[list[Obs]], focal: float, p: SelfCalParams
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
class Pair:
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


def pair_cameras(
    a: str, b: str, obs: Mapping[str, list[list[Obs]]], focal: float, p: SelfCalParams
) -> tuple[Pair | None, str]:
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
    return Pair(a, b, R, t.ravel(), int(inliers), matches), ""


def pairs_from_poses(
    poses: Mapping[str, tuple[F64, F64]], obs: Mapping[str, list[list[Obs]]], focal: float, p: SelfCalParams
) -> list[Pair]:
    """Every placed pair's people paired again under the current camera poses."""
    names = list(poses)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            (Ra, ta), (Rb, tb) = poses[a], poses[b]
            R = Rb @ Ra.T
            t = tb - R @ ta
            matches, A, _ = _match(_essential(R, t / max(float(np.linalg.norm(t)), 1e-12)), obs[a], obs[b], focal, p)
            out.append(Pair(a, b, R, t, len(A), matches))
    return out


def seed(pairs: list[Pair], names: list[str], p: SelfCalParams) -> Pair:
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
