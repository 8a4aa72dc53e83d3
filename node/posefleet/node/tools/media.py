"""Reading images and videos frame by frame."""

from __future__ import annotations

from collections.abc import Container, Iterator
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


def frame_count(path: Path) -> int:
    """The frames a video's container says it holds (0 where it does not say)."""
    cap = cv2.VideoCapture(str(path))
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    cap.release()
    return max(count, 0)


def frames(path: Path, only: Container[int] | None = None) -> Iterator[npt.NDArray[np.uint8]]:
    """BGR frames of an image (one frame) or a video; ``only``: the indices of the video's frames wanted (the
    others are passed over without their conversion to BGR)."""
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
        index = 0
        while True:
            wanted = only is None or index in only
            ok, frame = cap.read() if wanted else (cap.grab(), None)
            if not ok:
                break
            got_any = True
            index += 1
            if wanted:
                yield np.asarray(frame, dtype=np.uint8)
        if not got_any:
            raise MediaError(f"{path}: no decodable frames")
    finally:
        cap.release()
