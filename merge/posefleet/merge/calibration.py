"""Calibrated cameras from a Pose2Sim/anipose calibration TOML, as it is.

One section per camera: ``size`` [width, height] in pixels, ``matrix`` K (3x3), ``distortions`` k1 k2 p1
p2, ``rotation`` (Rodrigues vector) and ``translation`` (metres) mapping world to camera: X_cam = R X + t,
so P = K [R | t]. Sections without a ``matrix`` (``[metadata]``) are not cameras.
"""

from __future__ import annotations

import json
import logging
import tomllib
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from posefleet.common.errors import PosefleetError

F64 = npt.NDArray[np.float64]
log = logging.getLogger("posefleet.merge")
#: A frame at most this many pixels smaller than calibrated per side is taken as cropped at the right/bottom
#: edge (encoders crop 1088 to 1080): K is kept.
CROP_TOLERANCE_PX = 16
#: Scale factors of width and height this close (relative) are a resize (a camera sending frames at the
#: model's input size, 1088x1920 -> 257x449, scales 0.236 and 0.234): K is rescaled per axis, exactly.
RESIZE_TOLERANCE = 0.03


#: Tables of a calibration TOML that are not cameras: Pose2Sim's metadata, named 3D points (``calibrate points``).
NOT_CAMERAS = ("metadata", "world_points")


class CalibrationError(PosefleetError):
    """A calibration file, or a camera's resolution, that cannot be used; the message names both."""


@dataclass(frozen=True)
class Camera:
    name: str
    size: tuple[int, int]  # (width, height) the calibration was made at
    K: F64
    dist: F64  # k1 k2 p1 p2
    R: F64
    t: F64
    #: The image size the camera streams at (``fit``); K above already matches it.
    image_size: tuple[int, int] | None = None

    # Derived once per camera (fusion asks for them every window; the camera never changes: ``fit`` and
    # ``replace`` make new ones). Read-only: callers must not write into them.
    @cached_property
    def P(self) -> F64:
        return self.K @ np.hstack([self.R, self.t[:, None]])

    @cached_property
    def center(self) -> F64:
        return -self.R.T @ self.t

    @cached_property
    def pixel_to_ray(self) -> F64:
        """(3, 3): an undistorted pixel (x, y, 1) to its ray's direction in the world frame (not unit)."""
        return self.R.T @ np.linalg.inv(self.K)

    def undistort(self, points: F64) -> F64:
        """Pixel points (N, 2) -> undistorted pixel points (N, 2) (same K)."""
        if len(points) == 0 or not self.dist.any():
            return points.astype(np.float64)
        out = cv2.undistortPoints(points.reshape(-1, 1, 2).astype(np.float64), self.K, self.dist, P=self.K)
        return out.reshape(-1, 2)  # type: ignore[no-any-return]

    def project(self, points: F64) -> F64:
        """World points (..., 3) -> distorted pixel points (..., 2)."""
        flat = points.reshape(-1, 3).astype(np.float64)
        rvec, _ = cv2.Rodrigues(self.R)
        px, _ = cv2.projectPoints(flat, rvec, self.t, self.K, self.dist)
        return px.reshape(*points.shape[:-1], 2)  # type: ignore[no-any-return]

    @property
    def scale(self) -> float:
        """Streamed pixels per calibrated pixel (1 until ``fit``)."""
        return 1.0 if self.image_size is None else self.image_size[0] / self.size[0]

    def fit(self, width: int, height: int) -> Camera:
        """This camera for frames of ``width`` x ``height``: a uniform scale (a resize: both factors within
        ``RESIZE_TOLERANCE``) rescales K; a frame a few pixels smaller keeps K (cropped at the right/bottom
        edge, noted in the log); anything else is refused, saying why."""
        cw, ch = self.size
        if (width, height) == (cw, ch):
            return replace(self, image_size=(width, height))
        sx, sy = width / cw, height / ch
        if 0 <= cw - width <= CROP_TOLERANCE_PX and 0 <= ch - height <= CROP_TOLERANCE_PX:
            log.info(
                "camera %s streams %dx%d, calibrated at %dx%d: taken as cropped at the right/bottom edge, K kept",
                self.name,
                width,
                height,
                cw,
                ch,
            )
            return replace(self, image_size=(width, height))
        if width > 0 and height > 0 and abs(sx - sy) <= RESIZE_TOLERANCE * max(sx, sy):
            K = self.K.copy()
            K[0] *= sx
            K[1] *= sy
            return replace(self, K=K, image_size=(width, height))
        raise CalibrationError(
            f"camera {self.name} streams {width}x{height} but was calibrated at {cw}x{ch}: neither a resize of the "
            f"same aspect ratio (within {RESIZE_TOLERANCE:.0%}) nor a crop of at most {CROP_TOLERANCE_PX} px at the "
            "right/bottom edge; calibrate it at this resolution"
        )


def _array(path: Path, name: str, section: dict[str, Any], key: str, shape: tuple[int, ...]) -> F64:
    if key not in section:
        raise CalibrationError(f"{path}: camera {name}: missing key {key!r}")
    try:
        value = np.asarray(section[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise CalibrationError(f"{path}: camera {name}: {key} is not numeric") from None
    if value.shape != shape:
        raise CalibrationError(f"{path}: camera {name}: {key} has shape {list(value.shape)}, expected {list(shape)}")
    if not np.isfinite(value).all():
        raise CalibrationError(f"{path}: camera {name}: {key} is not finite")
    return value


def _camera(path: Path, name: str, section: dict[str, Any]) -> Camera:
    size = _array(path, name, section, "size", (2,))
    K = _array(path, name, section, "matrix", (3, 3))
    dist = _array(path, name, section, "distortions", (4,))
    rvec = _array(path, name, section, "rotation", (3,))
    t = _array(path, name, section, "translation", (3,))
    if (size <= 0).any():
        raise CalibrationError(f"{path}: camera {name}: size must be positive, got {size.tolist()}")
    if abs(np.linalg.det(K)) < 1e-9 or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise CalibrationError(f"{path}: camera {name}: matrix is not an invertible camera matrix")
    R, _ = cv2.Rodrigues(rvec)
    if section.get("fisheye", False):
        raise CalibrationError(f"{path}: camera {name}: fisheye calibrations are not supported")
    return Camera(name, (round(size[0]), round(size[1])), K, dist, np.asarray(R, np.float64), t)


def load_calibration(path: str | Path) -> dict[str, Camera]:
    """Cameras by section name (the calibration's camera names); errors name the file and the camera."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise CalibrationError(f"{path}: cannot read calibration: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"{path}: not a calibration TOML: {exc}") from None
    cameras = {
        name: _camera(path, name, section)
        for name, section in data.items()
        if isinstance(section, dict) and name not in NOT_CAMERAS
    }
    if len(cameras) < 2:
        raise CalibrationError(f"{path}: a scene needs at least 2 calibrated cameras, found {len(cameras)}")
    return cameras


def _toml_numbers(values: Any) -> str:
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if isinstance(values, list):
        return "[ " + ", ".join(_toml_numbers(v) for v in values) + "]"
    return repr(float(values))


def write_calibration(
    path: str | Path, cameras: dict[str, Camera], metadata: dict[str, str | float] | None = None
) -> None:
    """``calibration_toml`` written to ``path`` (its folder made)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(calibration_toml(cameras, metadata))


def calibration_toml(cameras: dict[str, Camera], metadata: dict[str, str | float] | None = None) -> str:
    """Cameras as a Pose2Sim/anipose calibration TOML (what ``load_calibration`` reads), ``[metadata]`` last."""
    lines = []
    for name, cam in cameras.items():
        rvec, _ = cv2.Rodrigues(cam.R)
        lines += [
            f"[{name}]",
            f'name = "{name}"',
            f"size = {_toml_numbers([float(cam.size[0]), float(cam.size[1])])}",
            f"matrix = {_toml_numbers(cam.K)}",
            f"distortions = {_toml_numbers(cam.dist)}",
            f"rotation = {_toml_numbers(rvec.ravel())}",
            f"translation = {_toml_numbers(cam.t)}",
            "fisheye = false",
            "",
        ]
    lines.append("[metadata]")
    for key, value in {"adjusted": False, "error": 0.0, **(metadata or {})}.items():
        text = (
            ("true" if value else "false")
            if isinstance(value, bool)
            else (repr(float(value)) if isinstance(value, float | int) else json.dumps(str(value)))
        )
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"
