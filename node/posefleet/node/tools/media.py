"""Reading images and videos frame by frame."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from posefleet.common.errors import PosefleetError
from posefleet.common.images import IMAGE_SUFFIXES


class MediaError(PosefleetError):
    """An input cannot be opened or decoded."""


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def read_image(path: Path) -> npt.NDArray[np.uint8]:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise MediaError(f"{path}: cannot read image (missing, unreadable or not an image)")
    return np.asarray(image, dtype=np.uint8)


def video_fps(path: Path) -> float:
    cap = cv2.VideoCapture(str(path))
    fps = float(cap.get(cv2.CAP_PROP_FPS)) or 30.0
    cap.release()
    return fps


def frames(path: Path) -> Iterator[npt.NDArray[np.uint8]]:
    """BGR frames of an image (one frame) or a video."""
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if is_image(path):
        yield read_image(path)
        return
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise MediaError(f"{path}: cannot open video")
    try:
        got_any = False
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            got_any = True
            yield np.asarray(frame, dtype=np.uint8)
        if not got_any:
            raise MediaError(f"{path}: no decodable frames")
    finally:
        cap.release()
