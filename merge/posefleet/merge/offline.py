"""Fusing recorded footage: per-frame 2D poses of several cameras -> 3D people, JSONL, TRC and a rendering."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from posefleet.common.drawing import draw_skeletons, id_colour
from posefleet.common.keypoints import COCO_KEYPOINTS
from posefleet.merge.calibration import Camera
from posefleet.merge.formats import write_trc
from posefleet.merge.scene import SceneFrame, SceneFuser

F32 = npt.NDArray[np.float32]
U8Image = npt.NDArray[np.uint8]


@dataclass
class FusedFrame:
    index: int
    views: dict[str, list[F32]]  # camera name -> its 2D poses (image pixels)
    scene: SceneFrame


def fuse_frames(fuser: SceneFuser, views: Mapping[str, Sequence[list[F32]]], fps: float) -> Iterator[FusedFrame]:
    """Frames matched by index across cameras (a camera with fewer frames has no poses after its end)."""
    count = max((len(v) for v in views.values()), default=0)
    for i in range(count):
        frame_views = {name: list(v[i]) if i < len(v) else [] for name, v in views.items()}
        yield FusedFrame(i, frame_views, fuser.fuse(frame_views, i * 1000.0 / fps))


def filter_people(frames: list[FusedFrame], rate: float, cutoff_hz: float = 6.0, order: int = 4) -> None:
    """Each 3D person's joints over the recording, Butterworth-filtered in place (``filters.butterworth``)."""
    from posefleet.merge.filters import butterworth

    ids = sorted({p.id for f in frames for p in f.scene.persons})
    for person_id in ids:
        found = [(k, p) for k, f in enumerate(frames) for p in f.scene.persons if p.id == person_id]
        track = np.full((len(frames), *found[0][1].points.shape), np.nan)
        for k, p in found:
            track[k] = p.points
        smooth = butterworth(track, rate, cutoff_hz, order)
        for k, p in found:
            p.points = smooth[k]


def _num(value: float) -> float | None:
    return round(float(value), 4) if math.isfinite(value) else None


def frame_json(frame: FusedFrame) -> dict[str, Any]:
    """``{"frame": i, "persons": [{"id": n, "keypoints": [{"name", "x", "y", "z", "score", "views"}]}]}``.

    Metres in the calibration's world frame; a joint that could not be triangulated has null x, y, z.
    """
    return {
        "frame": frame.index,
        "persons": [
            {
                "id": person.id,
                "keypoints": [
                    {
                        "name": name,
                        "x": _num(x),
                        "y": _num(y),
                        "z": _num(z),
                        "score": round(float(s), 4),
                        "views": int(v),
                    }
                    for name, (x, y, z), s, v in zip(
                        COCO_KEYPOINTS, person.points, person.score, person.views, strict=True
                    )
                ],
                "cameras": sorted(person.cameras),
            }
            for person in frame.scene.persons
        ],
    }


def write_trcs(path: Path, frames: list[FusedFrame], fps: float, min_fraction: float = 0.1) -> list[Path]:
    """One TRC per person seen in at least ``min_fraction`` of the frames: ``PATH`` for the person seen most
    (the main person), ``PATH`` with ``_P<id>`` before its suffix for every other one."""
    seen = Counter(p.id for f in frames for p in f.scene.persons)
    ids = [i for i, n in seen.most_common() if n >= min_fraction * max(1, len(frames))]
    written = []
    for rank, person_id in enumerate(ids):
        out = path if rank == 0 else path.with_name(f"{path.stem}_P{person_id}{path.suffix}")
        points: list[npt.NDArray[np.float64] | None] = []
        for f in frames:
            match = next((p for p in f.scene.persons if p.id == person_id), None)
            points.append(None if match is None else match.points)
        with out.open("w") as handle:
            write_trc(handle, points, fps, out.name)
        written.append(out)
    return written


class Renderer:
    """Side-by-side camera views: 2D detections thin and grey, every 3D person reprojected in its colour."""

    def __init__(self, out: Path, cameras: dict[str, Camera], fps: float, height: int = 540) -> None:
        self.cameras = cameras
        self.height = height
        self.out = out
        self.fps = fps
        self._writer: cv2.VideoWriter | None = None

    def add(self, frame: FusedFrame, images: dict[str, U8Image] | None = None) -> U8Image:
        tiles = []
        for name, cam in self.cameras.items():
            w, h = cam.image_size or cam.size
            image = images.get(name) if images else None
            canvas = image.copy() if image is not None else np.zeros((h, w, 3), np.uint8)
            detected = [(p, 1.0) for p in frame.views.get(name, [])]
            canvas = draw_skeletons(canvas, detected, colours=[(110, 110, 110)] * len(detected))
            persons = frame.scene.persons
            reprojected = []
            for person in persons:
                xy = cam.project(np.nan_to_num(person.points))
                valid = np.isfinite(person.points).all(axis=1).astype(np.float64)
                reprojected.append((np.column_stack([xy, valid]).astype(np.float32), 1.0))
            canvas = draw_skeletons(canvas, reprojected, min_score=0.5, colours=[id_colour(p.id) for p in persons])
            for person, (kp, _) in zip(persons, reprojected, strict=True):
                if kp[0, 2] > 0:
                    cv2.putText(
                        canvas,
                        f"#{person.id}",
                        (int(kp[0, 0]) + 8, int(kp[0, 1]) - 8),
                        cv2.FONT_HERSHEY_SIMPLEX,
                        1.6,
                        id_colour(person.id),
                        3,
                        cv2.LINE_AA,
                    )
            cv2.putText(canvas, name, (20, 60), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (255, 255, 255), 3, cv2.LINE_AA)
            scale = self.height / canvas.shape[0]
            tiles.append(
                cv2.resize(canvas, (round(canvas.shape[1] * scale), self.height), interpolation=cv2.INTER_AREA)
            )
        sheet = np.hstack(tiles)
        if self._writer is None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            size = (sheet.shape[1], sheet.shape[0])
            self._writer = cv2.VideoWriter(str(self.out), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, size)
        self._writer.write(sheet)
        return sheet

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
