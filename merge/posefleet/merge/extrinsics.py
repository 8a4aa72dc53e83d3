"""Extrinsics from known points: clicked pixels of points of known 3D position, or a board in one still.

Each camera alone: SQPnP (globally optimal for 3+ points, planar or not), then Levenberg-Marquardt
refinement of the reprojection error (``solvePnPRefineLM``). The world frame is the one the known points
are given in (a board's own frame for a board). ``anchor`` moves a whole calibration (people-made) into the
frame of known points seen by two or more cameras: the similarity (scale, rotation, origin) that best maps
their triangulated positions onto the given ones (Umeyama).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from posefleet.merge.boards import Board
from posefleet.merge.calibration import CalibrationError, Camera
from posefleet.merge.triangulation import dlt

F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]
#: Points a camera needs for its pose (SQPnP solves from 3; a fourth makes the solution unique).
MIN_POINTS = 4
#: The table of a calibration TOML (or a points file) that holds named 3D points, metres.
WORLD_TABLE = "world_points"


@dataclass
class PointsFit:
    camera: Camera
    rms_px: float
    errors_px: dict[str, float]  # per point


def _table(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
        data: dict[str, Any] = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except OSError as exc:
        raise CalibrationError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise CalibrationError(f"{path}: neither JSON nor TOML of named points: {exc}") from None
    return data


def _named(path: Path, table: Any, dims: int, what: str) -> dict[str, F64]:
    if not isinstance(table, dict):
        raise CalibrationError(f"{path}: {what} must be a table of name = [{', '.join('xyz'[:dims])}]")
    out = {}
    for name, value in table.items():
        arr = np.asarray(value, dtype=np.float64) if isinstance(value, list) else np.zeros(0)
        if arr.shape != (dims,) or not np.isfinite(arr).all():
            raise CalibrationError(f"{path}: {what} {name!r} must be {dims} finite numbers, got {value!r}")
        out[str(name)] = arr
    return out


def read_points(path: Path) -> tuple[dict[str, F64], dict[str, F64]]:
    """A points file: ``pixels`` (name -> [x, y]) and optionally ``world_points`` (name -> [X, Y, Z]); a
    file of only name -> [x, y] is all pixels. JSON (``.json``) or TOML."""
    data = _table(path)
    if "pixels" in data:
        return _named(path, data["pixels"], 2, "pixel"), _named(path, data.get(WORLD_TABLE, {}), 3, "world point")
    return _named(path, data, 2, "pixel"), {}


def read_world(path: Path) -> dict[str, F64]:
    """Named 3D points: the ``world_points`` table of a TOML/JSON file (a calibration TOML may hold one)."""
    data = _table(path)
    return _named(path, data.get(WORLD_TABLE, {}), 3, "world point")


def _solve(cam: Camera, obj: F64, img: F64) -> tuple[F64, F64, F64]:
    ok, rvec, tvec = cv2.solvePnP(obj, img, cam.K, cam.dist, flags=cv2.SOLVEPNP_SQPNP)
    if not ok:
        raise CalibrationError(f"camera {cam.name}: no pose fits its {len(obj)} points")
    rvec, tvec = cv2.solvePnPRefineLM(obj, img, cam.K, cam.dist, rvec, tvec)
    px, _ = cv2.projectPoints(obj, rvec, tvec, cam.K, cam.dist)
    R, _ = cv2.Rodrigues(rvec)
    return np.asarray(R, np.float64), tvec.ravel().astype(np.float64), np.linalg.norm(px.reshape(-1, 2) - img, axis=1)


def camera_from_points(cam: Camera, pixels: dict[str, F64], world: dict[str, F64], source: str = "") -> PointsFit:
    """The camera's pose from the named points it sees (pixels) whose world positions are known."""
    names = [n for n in pixels if n in world]
    if len(names) < MIN_POINTS:
        missing = sorted(set(pixels) - set(world))
        raise CalibrationError(
            f"camera {cam.name}{f' ({source})' if source else ''}: {len(names)} clicked points have a known 3D "
            f"position, need {MIN_POINTS}" + (f" (no world position for {', '.join(missing)})" if missing else "")
        )
    obj = np.stack([world[n] for n in names])
    img = np.stack([pixels[n] for n in names])
    R, t, err = _solve(cam, obj, img)
    return PointsFit(
        replace(cam, R=R, t=t), float(np.sqrt(np.mean(err**2))), dict(zip(names, err.tolist(), strict=True))
    )


def camera_from_board(cam: Camera, image: U8, board: Board, source: str = "") -> PointsFit:
    """The camera's pose in the board's frame from one still showing the board."""
    det = board.detect(image)
    if det is None:
        raise CalibrationError(f"camera {cam.name}: no {board.kind} {board.cols}x{board.rows} found in {source}")
    obj = det.object_points.astype(np.float64)
    img = det.image_points.astype(np.float64)
    R, t, err = _solve(cam, obj, img)
    return PointsFit(
        replace(cam, R=R, t=t), float(np.sqrt(np.mean(err**2))), {f"c{i}": float(e) for i, e in enumerate(err)}
    )


def umeyama(src: F64, dst: F64, with_scale: bool = True) -> tuple[float, F64, F64]:
    """(s, R, t) minimising ||dst - (s R src + t)||² over points (N, 3)."""
    ms, md = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - ms, dst - md
    U, S, Vt = np.linalg.svd(b.T @ a / len(src))
    D = np.eye(3)
    if np.linalg.det(U @ Vt) < 0:
        D[2, 2] = -1
    R = U @ D @ Vt
    s = float(np.trace(np.diag(S) @ D) / ((a**2).sum() / len(src))) if with_scale else 1.0
    return s, R, md - s * R @ ms


def alignment(estimated: Mapping[str, Camera], reference: Mapping[str, Camera]) -> tuple[float, F64, F64]:
    """(s, R, t): the world change X' = s R X + t that best maps ``estimated``'s cameras onto ``reference``'s
    (the cameras both hold): the chordal mean rotation of their orientations, then the scale and shift of the
    centres (least squares)."""
    names = [n for n in estimated if n in reference]
    M = sum(estimated[n].R.T @ reference[n].R for n in names)
    U, _, Vt = np.linalg.svd(M)
    Q = U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt  # estimated world = Q reference world
    A = np.stack([Q.T @ estimated[n].center for n in names])
    B = np.stack([reference[n].center for n in names])
    ma, mb = A.mean(axis=0), B.mean(axis=0)
    s = float(((A - ma) * (B - mb)).sum() / max(float(((A - ma) ** 2).sum()), 1e-12))
    return s, Q.T, mb - s * ma


def rig_size(cameras: Mapping[str, Camera]) -> float:
    """A rig's size: its camera centres' mean distance from their mean (0 when they stand at one point)."""
    centres = np.stack([cam.center for cam in cameras.values()])
    return float(np.linalg.norm(centres - centres.mean(axis=0), axis=1).mean())


def rig_differences(
    estimated: Mapping[str, Camera], reference: Mapping[str, Camera]
) -> tuple[float, dict[str, tuple[float, float]]]:
    """(scale, camera -> (centre distance in the reference's units, orientation difference in degrees)) of the
    cameras both rigs hold, after the similarity that best maps ``estimated`` onto ``reference``
    (``alignment``)."""
    s, R, t = alignment(estimated, reference)
    moved = transform({n: c for n, c in estimated.items() if n in reference}, s, R, t)
    return s, {n: camera_difference(c, reference[n]) for n, c in moved.items()}


def turn_deg(R: F64) -> float:
    """How far a rotation matrix turns, in degrees."""
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0))))


def camera_difference(a: Camera, b: Camera) -> tuple[float, float]:
    """(centre distance, orientation difference in degrees) of two cameras in one world."""
    return float(np.linalg.norm(a.center - b.center)), turn_deg(a.R @ b.R.T)


def transform(cameras: dict[str, Camera], s: float, R: F64, t: F64) -> dict[str, Camera]:
    """Cameras after the world change X' = s R X + t (X_cam = Rc X + tc in the old world)."""
    out = {}
    for name, cam in cameras.items():
        Rn = cam.R @ R.T
        out[name] = replace(cam, R=Rn, t=s * cam.t - Rn @ t)
    return out


def anchor(
    cameras: dict[str, Camera], clicks: dict[str, dict[str, F64]], world: dict[str, F64]
) -> tuple[dict[str, Camera], dict[str, float]]:
    """Cameras moved into the frame of known points (``clicks``: camera -> name -> pixel), each triangulated
    from the cameras that clicked it. Three or more points fix scale, rotation and origin; two keep the
    scale and the up axis (a people-made rig is metric and Z up already) and fix heading and origin; one
    fixes the origin only. Returns the cameras and each point's distance (m) from its given position after."""
    names = sorted({n for c in clicks.values() for n in c if n in world})
    located, given, used = [], [], []
    for name in names:
        views = [(cameras[c], px[name]) for c, px in clicks.items() if name in px and c in cameras]
        if len(views) < 2:
            continue
        P = np.stack([cam.P for cam, _ in views])
        xy = np.stack([cam.undistort(p[None])[0] for cam, p in views])[None]
        X = dlt(P, xy, np.ones((1, len(views))))[0]
        if np.isfinite(X).all():
            located.append(X)
            given.append(world[name])
            used.append(name)
    if not located:
        raise CalibrationError("known points: none is clicked in two or more cameras with a known 3D position")
    src, dst = np.stack(located), np.stack(given)
    if len(src) >= 3:
        s, R, t = umeyama(src, dst)
    elif len(src) == 2:  # heading about Z from the segment between the two, origin from their middle
        a, b = src[1] - src[0], dst[1] - dst[0]
        yaw = np.arctan2(b[1], b[0]) - np.arctan2(a[1], a[0])
        c, si = np.cos(yaw), np.sin(yaw)
        s, R = 1.0, np.array([[c, -si, 0.0], [si, c, 0.0], [0.0, 0.0, 1.0]])
        t = dst.mean(axis=0) - R @ src.mean(axis=0)
    else:
        s, R, t = 1.0, np.eye(3), dst[0] - src[0]
    residual = np.linalg.norm(s * src @ R.T + t - dst, axis=1)
    return transform(cameras, s, R, t), dict(zip(used, residual.tolist(), strict=True))


def board_clicks(stills: dict[str, U8], board: Board) -> tuple[dict[str, dict[str, F64]], dict[str, F64]]:
    """A board seen once by several cameras (one synchronised still each) as known points: per camera its
    detected corners by name, and every corner's position in the board's frame (``anchor`` takes both)."""
    if board.kind != "charuco" and len(stills) > 1:
        raise CalibrationError(
            "a board seen by several cameras must be a ChArUco board: a checkerboard's corners cannot be told "
            "apart under a half turn, so two cameras may number them differently"
        )
    clicks: dict[str, dict[str, F64]] = {}
    world: dict[str, F64] = {}
    for name, image in stills.items():
        det = board.detect(image)
        if det is None:
            raise CalibrationError(f"camera {name}: no {board.kind} {board.cols}x{board.rows} found in its still")
        keys = [f"corner{tuple(np.round(p * 1e4).astype(int).tolist())}" for p in det.object_points]
        clicks[name] = {k: px.astype(np.float64) for k, px in zip(keys, det.image_points, strict=True)}
        world.update({k: p.astype(np.float64) for k, p in zip(keys, det.object_points, strict=True)})
    return clicks, world
