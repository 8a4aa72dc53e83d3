"""Calibration boards: a checkerboard or a ChArUco board, parsed from one spec string and found in images.

``checkerboard:COLSxROWS:SQUARE_MM`` counts inner corners (Pose2Sim's and OpenCV's convention);
``charuco:COLSxROWS:SQUARE_MM:MARKER_MM[:DICT]`` counts squares (OpenCV's), DICT an ArUco dictionary name
(default ``DICT_4X4_50``). Board points are in metres, z = 0, in the board's own frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
from posefleet.merge.calibration import CalibrationError

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]
#: Detections below this many ChArUco corners are not used (a homography needs 4; calibration wants more).
MIN_CHARUCO_CORNERS = 6


@dataclass(frozen=True)
class Detection:
    image_points: F32  # (N, 2) pixels
    object_points: F32  # (N, 3) metres, board frame


@dataclass(frozen=True)
class Board:
    kind: str  # "checkerboard" or "charuco"
    cols: int
    rows: int
    square_m: float
    marker_m: float = 0.0
    dictionary: str = "DICT_4X4_50"

    def corners(self) -> F32:
        """Every corner of the board (N, 3), row by row: a checkerboard's from its first inner corner, COLS
        per row; a ChArUco board's by id, where OpenCV puts them (from the board's outer corner)."""
        if self.kind == "charuco":
            return np.asarray(self._charuco().getChessboardCorners(), np.float32).reshape(-1, 3)
        grid = np.zeros((self.cols * self.rows, 3), np.float32)
        grid[:, :2] = np.mgrid[0 : self.cols, 0 : self.rows].T.reshape(-1, 2) * self.square_m
        return grid

    def _charuco(self) -> cv2.aruco.CharucoBoard:
        dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard((self.cols, self.rows), self.square_m, self.marker_m, dictionary)

    def detect(self, image: U8) -> Detection | None:
        """The board's corners in an image (sub-pixel), or None when it is not found whole."""
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if self.kind == "charuco":
            return self._detect_charuco(gray)
        return self._detect_checkerboard(gray)

    def _detect_checkerboard(self, gray: U8) -> Detection | None:
        pattern = (self.cols, self.rows)
        # The sector-based detector finds boards the classic one misses (blur, glare, steep angles: two of
        # the shared rig's photos); the classic one with adaptive thresholds is the fallback.
        flags = cv2.CALIB_CB_EXHAUSTIVE | cv2.CALIB_CB_ACCURACY | cv2.CALIB_CB_NORMALIZE_IMAGE
        found, corners = cv2.findChessboardCornersSB(gray, pattern, flags=flags)
        if not found:
            classic = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_FILTER_QUADS
            found, corners = cv2.findChessboardCorners(gray, pattern, None, classic)
            if not found:
                return None
            criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 0.01)
            corners = cv2.cornerSubPix(gray, corners, (7, 7), (-1, -1), criteria)
        return Detection(_oriented(corners.reshape(self.rows, self.cols, 2)), self.corners())

    def _detect_charuco(self, gray: U8) -> Detection | None:
        corners, ids, _, _ = cv2.aruco.CharucoDetector(self._charuco()).detectBoard(gray)
        if ids is None or len(ids) < MIN_CHARUCO_CORNERS:
            return None
        every = self.corners()
        return Detection(corners.reshape(-1, 2).astype(np.float32), every[ids.ravel()])


def _oriented(grid: F32) -> F32:
    """Corners (rows, cols, 2) listed with one handedness in every image. A checkerboard's corner order can
    start at either end of a row: the mirrored order fits a homography as well but no camera pose, and one
    such image can throw the whole calibration off."""
    a = grid[0, -1] - grid[0, 0]
    b = grid[-1, 0] - grid[0, 0]
    if a[0] * b[1] - a[1] * b[0] < 0:
        grid = grid[:, ::-1]
    return np.ascontiguousarray(grid.reshape(-1, 2), dtype=np.float32)


def parse_board(spec: str) -> Board:
    """``checkerboard:4x7:60`` or ``charuco:5x7:40:30[:DICT_4X4_50]`` -> a Board (sizes in mm in the spec)."""
    parts = spec.split(":")
    kind = parts[0].lower()
    usage = "checkerboard:COLSxROWS:SQUARE_MM or charuco:COLSxROWS:SQUARE_MM:MARKER_MM[:DICT]"
    try:
        cols, rows = (int(v) for v in parts[1].lower().split("x"))
        square = float(parts[2]) / 1000
        if kind == "checkerboard" and len(parts) == 3:
            board = Board("checkerboard", cols, rows, square)
        elif kind == "charuco" and len(parts) in (4, 5):
            board = Board("charuco", cols, rows, square, float(parts[3]) / 1000, *(parts[4:] or ["DICT_4X4_50"]))
        else:
            raise ValueError
    except (ValueError, IndexError):
        raise CalibrationError(f"--board {spec!r}: expected {usage}") from None
    if min(cols, rows) < 2 or square <= 0 or (board.kind == "charuco" and not 0 < board.marker_m < square):
        raise CalibrationError(f"--board {spec!r}: at least 2x2 corners, a positive square, a marker smaller than it")
    if board.kind == "charuco" and not hasattr(cv2.aruco, board.dictionary):
        raise CalibrationError(f"--board {spec!r}: {board.dictionary} is not an OpenCV ArUco dictionary")
    return board
