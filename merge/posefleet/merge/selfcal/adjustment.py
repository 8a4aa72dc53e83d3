"""Steps 3 and 4: cameras placed on triangulated joints, then bundle-adjusted in rounds."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace

import cv2
import numpy as np
from posefleet.merge.calibration import CalibrationError, Camera
from posefleet.merge.selfcal.groups import Track, joint_tracks, people_groups
from posefleet.merge.selfcal.pairs import Obs, pairs_from_poses
from posefleet.merge.selfcal.params import F64, SelfCalParams
from posefleet.merge.selfcal.result import CameraReport
from posefleet.merge.triangulation import dlt
from scipy.optimize import least_squares
from scipy.sparse import lil_matrix

log = logging.getLogger("posefleet.merge.selfcal")


def _rodrigues(rvecs: F64) -> F64:
    """Rotation vectors (N, 3) -> rotation matrices (N, 3, 3)."""
    theta = np.linalg.norm(rvecs, axis=1)[:, None, None]
    k = rvecs / np.maximum(theta[:, :, 0], 1e-12)
    K = np.zeros((len(rvecs), 3, 3))
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    K[:, 1, 0], K[:, 2, 0], K[:, 2, 1] = k[:, 2], -k[:, 1], k[:, 0]
    eye = np.eye(3)[None]
    return eye + np.sin(theta) * K + (1 - np.cos(theta)) * (K @ K)  # type: ignore[no-any-return]


def _P(cam: Camera, R: F64, t: F64) -> F64:
    return cam.K @ np.hstack([R, t[:, None]])


def _track_views(tracks: list[Track], names: list[str]) -> tuple[F64, F64]:
    """The tracks' observations as (N, C, 2) undistorted pixels and (N, C) confidences (0: not seen)."""
    xy = np.zeros((len(tracks), len(names), 2))
    w = np.zeros((len(tracks), len(names)))
    for i, tr in enumerate(tracks):
        for c, n in enumerate(names):
            if n in tr.obs:
                xy[i, c], w[i, c] = tr.obs[n]
    return xy, w


def adjustable(tracks: list[Track], poses: Mapping[str, tuple[F64, F64]]) -> list[Track]:
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


def triangulate(
    tracks: list[Track], cams: Mapping[str, Camera], poses: Mapping[str, tuple[F64, F64]], max_px: float
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


def place(name: str, cam: Camera, tracks: list[Track], p: SelfCalParams) -> tuple[tuple[F64, F64] | None, str, int]:
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
    tracks: list[Track],
    cams: Mapping[str, Camera],
    poses: dict[str, tuple[F64, F64]],
    p: SelfCalParams,
    centres: F64 | None = None,
) -> tuple[dict[str, tuple[F64, F64]], list[Track]]:
    """Bundle adjustment of the placed cameras and the triangulated joints (``tracks`` with X); where the
    cameras' ``centres`` (in ``poses``' order) are given, only their orientations move."""
    names = list(poses)
    live = adjustable(tracks, poses)
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
    tracks: list[Track],
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
    live = adjustable(tracks, poses)
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


def reprojection_errors(
    tracks: list[Track], cams: Mapping[str, Camera], poses: Mapping[str, tuple[F64, F64]]
) -> dict[str, F64]:
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


def _drop_far(tracks: list[Track], cams: Mapping[str, Camera], poses: Mapping[str, tuple[F64, F64]], px: float) -> None:
    for tr in tracks:
        if tr.X is None:
            continue
        for n in [n for n in tr.obs if n in poses]:
            R, t = poses[n]
            q = cams[n].K @ (R @ tr.X + t)
            if q[2] <= 0 or np.linalg.norm(q[:2] / q[2] - tr.obs[n][0]) > px:
                del tr.obs[n]


@dataclass(frozen=True)
class Seen:
    """Every camera's people per frame (``observations``), the cameras' mean focal length, the frame count."""

    obs: Mapping[str, list[list[Obs]]]
    focal: float
    frames: int


def adjust_rounds(
    tracks: list[Track],
    cameras: Mapping[str, Camera],
    poses: dict[str, tuple[F64, F64]],
    seen: Seen,
    p: SelfCalParams,
    *,
    centres: F64 | None = None,
    first: SelfCalParams | None = None,
) -> tuple[dict[str, tuple[F64, F64]], list[Track]]:
    """``p.rounds`` of adjustment (cameras alone, then cameras and joints, far observations dropped, again),
    the people paired again under the adjusted poses before each next round; the first round with ``first``'s
    settings where given. The cameras' ``centres`` (in ``poses``' order), where given, are held. Returns the
    poses and the joints they explain; raises ``CalibrationError`` when too few joints agree with them."""
    live: list[Track] = []
    for round_ in range(p.rounds):
        q = first if first is not None and round_ == 0 else p
        poses = _adjust_cameras(tracks, cameras, poses, q, centres)
        triangulate(tracks, cameras, poses, q.outlier_px)
        poses, live = _adjust(tracks, cameras, poses, q, centres)
        _drop_far(live, cameras, poses, q.outlier_px)
        triangulate(live, cameras, poses, q.outlier_px)
        poses, live = _adjust(live, cameras, poses, q, centres)
        # Pair the people again under the adjusted poses: the next round starts from every joint they share.
        paired = pair_again(poses, seen, cameras, p)
        if not adjustable(paired, poses):  # nobody paired again: this round's result stands
            break
        tracks = paired
    if len(live) < p.min_place_joints:
        raise CalibrationError(
            f"only {len(live)} joints agree with the cameras' poses after the adjustment (need {p.min_place_joints})"
        )
    return poses, live


def pair_again(
    poses: Mapping[str, tuple[F64, F64]], seen: Seen, cameras: Mapping[str, Camera], p: SelfCalParams
) -> list[Track]:
    """Each frame's people paired across the cameras under ``poses``, their joints triangulated."""
    pairs = pairs_from_poses(poses, seen.obs, seen.focal, p)
    tracks = joint_tracks(people_groups(list(poses), pairs, seen.frames), seen.obs, p)
    triangulate(tracks, cameras, poses, p.outlier_px)
    return tracks


def fill_reports(
    reports: dict[str, CameraReport],
    live: list[Track],
    cameras: Mapping[str, Camera],
    poses: Mapping[str, tuple[F64, F64]],
) -> None:
    """Each placed camera's report: its observations, frames and RMS reprojection error under ``poses``."""
    errs = reprojection_errors(live, cameras, poses)
    for n in poses:
        e = errs[n]
        frames_seen = {tr.frame for tr in live if n in tr.obs}
        report = reports.setdefault(n, CameraReport(n, True))
        report.placed, report.reason, report.observations, report.frames = True, "", len(e), len(frames_seen)
        report.error_px = float(np.sqrt(np.mean(e**2))) if len(e) else float("nan")


def widened(p: SelfCalParams, focal: float) -> SelfCalParams:
    """``p`` keeping joints as far off as a camera turned ``p.wide_turn_deg`` puts them (a first round's gate)."""
    return replace(p, outlier_px=max(p.outlier_px, focal * float(np.tan(np.radians(p.wide_turn_deg)))))
