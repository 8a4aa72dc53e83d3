"""A camera's intrinsics (K, k1 k2 p1 p2) from images or a video of a calibration board.

Views are chosen for coverage (a video offers hundreds: the ones whose corners reach image cells no chosen
view reached yet come first), calibrated in two steps (principal point fixed at the centre and no tangential
terms first, then everything from there: started from OpenCV's own guess, six good photos of the shared rig
diverge to a focal length twice too long), and views whose own RMS error stands out are dropped and named.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from posefleet.common.images import IMAGE_SUFFIXES
from posefleet.merge.boards import Board, Detection
from posefleet.merge.calibration import CalibrationError

F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]
log = logging.getLogger("posefleet.merge.intrinsics")


@dataclass(frozen=True)
class IntrinsicsParams:
    max_views: int = 40  # views calibrated at most (chosen for coverage)
    video_step: int = 5  # every n-th video frame is searched for the board
    grid: int = 8  # coverage cells per image side
    outlier_factor: float = 3.0  # a view whose RMS exceeds this many times the median (and 1 px) is dropped
    min_views: int = 3


@dataclass
class ViewReport:
    source: str
    found: bool
    used: bool = False
    error_px: float = float("nan")
    note: str = ""


@dataclass
class Intrinsics:
    name: str
    size: tuple[int, int]  # width, height
    K: F64
    dist: F64  # k1 k2 p1 p2
    rms_px: float
    views: list[ViewReport] = field(default_factory=list)

    @property
    def used(self) -> int:
        return sum(v.used for v in self.views)


def board_images(source: Path, step: int) -> Iterator[tuple[str, U8]]:
    """(label, image) of a folder of images (sorted) or every ``step``-th frame of a video."""
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise CalibrationError(f"{source}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        for path in files:
            image = cv2.imread(str(path))
            if image is None:
                raise CalibrationError(f"{path}: not a readable image")
            yield path.name, image
        return
    if not source.is_file():
        raise CalibrationError(f"{source}: no such folder or video")
    capture = cv2.VideoCapture(str(source))
    if not capture.isOpened():
        raise CalibrationError(f"{source}: not a readable video")
    index = 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if index % step == 0:
                yield f"{source.name}#{index}", frame
            index += 1
    finally:
        capture.release()
    if index == 0:
        raise CalibrationError(f"{source}: the video has no frames")


def _cover(found: list[tuple[str, Detection]], size: tuple[int, int], p: IntrinsicsParams) -> list[int]:
    """Indices of at most ``max_views`` detections, greedily the one reaching the most cells still empty."""
    w, h = size
    cells = []
    for _, det in found:
        cx = np.clip((det.image_points[:, 0] / w * p.grid).astype(int), 0, p.grid - 1)
        cy = np.clip((det.image_points[:, 1] / h * p.grid).astype(int), 0, p.grid - 1)
        cells.append(set((cy * p.grid + cx).tolist()))
    counts = np.zeros(p.grid * p.grid)
    chosen: list[int] = []
    left = set(range(len(found)))
    while left and len(chosen) < p.max_views:
        best = max(left, key=lambda i: sum(1.0 / (1.0 + counts[c]) for c in cells[i]))
        chosen.append(best)
        left.remove(best)
        for c in cells[best]:
            counts[c] += 1
    return sorted(chosen)


def _calibrate(dets: list[Detection], size: tuple[int, int]) -> tuple[float, F64, F64, F64]:
    """The lowest-RMS of three starts: OpenCV's own guess, and focal lengths of 0.8 and 1.6 image widths
    with the principal point first held at the centre (one start alone diverges on some sets of views)."""
    obj = [d.object_points for d in dets]
    img = [d.image_points.reshape(-1, 1, 2) for d in dets]
    w, h = size
    best: tuple[float, F64, F64, F64] | None = None
    for focal in (None, 0.8 * max(w, h), 1.6 * max(w, h)):
        K, dist, flags = None, None, cv2.CALIB_FIX_K3
        if focal is not None:
            K = np.array([[focal, 0.0, (w - 1) / 2], [0.0, focal, (h - 1) / 2], [0.0, 0.0, 1.0]])
            held = cv2.CALIB_FIX_PRINCIPAL_POINT | cv2.CALIB_ZERO_TANGENT_DIST | cv2.CALIB_USE_INTRINSIC_GUESS
            _, K, dist, _, _ = cv2.calibrateCamera(obj, img, size, K, None, flags=cv2.CALIB_FIX_K3 | held)
            flags |= cv2.CALIB_USE_INTRINSIC_GUESS
        try:
            rms, K, dist, _, _, _, _, per_view = cv2.calibrateCameraExtended(obj, img, size, K, dist, flags=flags)
        except cv2.error:
            continue
        if np.isfinite(rms) and (best is None or rms < best[0]):
            best = (float(rms), np.asarray(K, np.float64), np.asarray(dist, np.float64).ravel()[:4], per_view.ravel())
    if best is None:
        raise CalibrationError("the board's views give no calibration (all starts failed)")
    return best


def calibrate_intrinsics(name: str, source: Path, board: Board, params: IntrinsicsParams | None = None) -> Intrinsics:
    """One camera's intrinsics from the board's views in ``source``; errors name the camera and the source."""
    p = params or IntrinsicsParams()
    views: list[ViewReport] = []
    found: list[tuple[str, Detection]] = []
    size: tuple[int, int] | None = None
    for label, image in board_images(source, p.video_step):
        here = (image.shape[1], image.shape[0])
        if size is None:
            size = here
        elif here != size:
            raise CalibrationError(f"camera {name}: {label} is {here[0]}x{here[1]}, the others {size[0]}x{size[1]}")
        det = board.detect(image)
        views.append(ViewReport(label, det is not None, note="" if det else "no board found"))
        if det is not None:
            found.append((label, det))
    if size is None or len(found) < p.min_views:
        raise CalibrationError(
            f"camera {name}: the board ({board.kind} {board.cols}x{board.rows}) was found in {len(found)} of "
            f"{len(views)} views of {source} (need {p.min_views}); check --board (checkerboards count inner corners)"
        )
    by_label = {v.source: v for v in views}
    chosen = [found[i] for i in _cover(found, size, p)]
    for label, _ in found:
        if all(label != c for c, _ in chosen):
            by_label[label].note = "not needed for coverage"
    while True:
        rms, K, dist, per_view = _calibrate([d for _, d in chosen], size)
        limit = max(p.outlier_factor * float(np.median(per_view)), 1.0)
        worst = int(np.argmax(per_view))
        if per_view[worst] <= limit or len(chosen) <= p.min_views:
            break
        label = chosen[worst][0]
        by_label[label].note = f"dropped: {per_view[worst]:.2f} px against a median of {np.median(per_view):.2f} px"
        by_label[label].error_px = float(per_view[worst])
        log.info("camera %s: %s %s", name, label, by_label[label].note)
        chosen.pop(worst)
    for (label, _), err in zip(chosen, per_view, strict=True):
        by_label[label].used, by_label[label].error_px = True, float(err)
    return Intrinsics(name, size, K, dist, rms, views)


def draw_detections(source: Path, board: Board, out: Path, step: int = 5) -> int:
    """Every view where the board is found, with its corners drawn, as JPEGs in ``out``; returns how many."""
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    for label, image in board_images(source, step):
        det = board.detect(image)
        if det is None:
            continue
        for x, y in det.image_points:
            cv2.circle(image, (round(float(x)), round(float(y))), 6, (0, 255, 0), 2, cv2.LINE_AA)
        first = det.image_points[0]
        cv2.circle(image, (round(float(first[0])), round(float(first[1]))), 12, (0, 0, 255), 3, cv2.LINE_AA)
        cv2.imwrite(str(out / f"{Path(label.replace('#', '_')).stem}.jpg"), image)
        count += 1
    return count
