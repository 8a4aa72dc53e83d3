"""Recorded 2D poses in (OpenPose JSON folders) and 3D people out (TRC for OpenSim and Pose2Sim)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal, TextIO

import numpy as np
import numpy.typing as npt
from posefleet.common.errors import PosefleetError
from posefleet.common.keypoints import COCO_KEYPOINTS

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Layout = Literal["body25b", "body25", "coco18"]

#: Index of each COCO-17 keypoint in an OpenPose layout.
TO_COCO: dict[str, tuple[int, ...]] = {
    # BODY_25B starts with the 17 COCO keypoints in COCO order (then neck, head top, feet).
    "body25b": tuple(range(17)),
    # BODY_25: 0 nose, 1 neck, 2-4 right arm, 5-7 left arm, 8 mid hip, 9-11 right leg, 12-14 left leg, 15-18 eyes/ears.
    "body25": (0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11),
    # OpenPose COCO-18: as BODY_25 without the mid hip and feet.
    "coco18": (0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10),
}


class FormatError(PosefleetError):
    """A recorded pose file that cannot be read."""


def _layout_of(people: list[F32], path: Path) -> Layout:
    """BODY_25B or BODY_25 (both 25 keypoints): BODY_25's keypoint 8 is the hips' midpoint."""
    count = {len(p) for p in people}
    if count == {18}:
        return "coco18"
    if count != {25}:
        raise FormatError(f"{path}: OpenPose people have {sorted(count)} keypoints; expected 25 or 18")
    votes = []
    for p in people:
        if (p[[8, 9, 12], 2] > 0).all():
            mid = (p[9, :2] + p[12, :2]) / 2
            span = np.linalg.norm(p[9, :2] - p[12, :2]) + 1.0
            votes.append(np.linalg.norm(p[8, :2] - mid) < 0.25 * span)
    return "body25" if votes and np.mean(votes) > 0.5 else "body25b"


def read_openpose_json(path: Path) -> list[F32]:
    """The people of one OpenPose JSON file as raw (K, 3) arrays."""
    try:
        data = json.loads(path.read_text())
        people = [np.asarray(p["pose_keypoints_2d"], np.float32).reshape(-1, 3) for p in data["people"]]
        people = [p for p in people if len(p)]  # OpenPose writes people with no keypoints at times
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"{path}: not an OpenPose JSON file: {exc}") from None
    return people


def read_openpose_folder(folder: Path, layout: Layout | None = None) -> list[list[F32]]:
    """Per frame (files sorted by their frame number), the COCO-17 poses of a folder of OpenPose JSON files.

    ``layout`` is detected when ``None``: 18 keypoints are COCO-18; of 25, BODY_25 is recognised by its
    mid-hip keypoint, else BODY_25B. Keypoints OpenPose did not find are (0, 0, 0).
    """
    files = sorted(folder.glob("*.json"), key=lambda f: [int(n) for n in re.findall(r"\d+", f.stem)] or [0])
    if not files:
        raise FormatError(f"{folder}: no OpenPose .json files")
    frames = [read_openpose_json(f) for f in files]
    if layout is None:
        sample = [p for people in frames[:20] for p in people]
        layout = _layout_of(sample, folder) if sample else "body25b"
    index = np.asarray(TO_COCO[layout])
    out = []
    for f, people in zip(files, frames, strict=True):
        poses = []
        for p in people:
            if len(p) <= index.max():
                raise FormatError(f"{f}: a person has {len(p)} keypoints, the {layout} layout needs {index.max() + 1}")
            kp = p[index].copy()
            kp[kp[:, 2] <= 0] = 0.0
            poses.append(kp)
        out.append(poses)
    return out


#: TRC marker names of the COCO-17 keypoints (Pose2Sim's spelling where it has them).
TRC_NAMES = (
    "Nose", "LEye", "REye", "LEar", "REar", "LShoulder", "RShoulder", "LElbow", "RElbow", "LWrist", "RWrist",
    "LHip", "RHip", "LKnee", "RKnee", "LAnkle", "RAnkle",
)  # fmt: skip


def write_trc(out: TextIO, frames: list[F64 | None], rate: float, name: str = "posefleet.trc") -> None:
    """A TRC of one person: ``frames`` of (17, 3) world points (Z-up, metres; None or NaN where missing).

    Written Y-up as Pose2Sim writes it: (trc X, Y, Z) = (world Y, world Z, world X); missing values are empty.
    """
    markers = len(TRC_NAMES)
    out.write(f"PathFileType\t4\t(X/Y/Z)\t{name}\n")
    out.write("DataRate\tCameraRate\tNumFrames\tNumMarkers\tUnits\tOrigDataRate\tOrigDataStartFrame\tOrigNumFrames\n")
    out.write(f"{rate:g}\t{rate:g}\t{len(frames)}\t{markers}\tm\t{rate:g}\t0\t{len(frames)}\n")
    out.write("Frame#\tTime\t" + "\t\t\t".join(TRC_NAMES) + "\t\t\n")
    out.write("\t\t" + "\t".join(f"X{i}\tY{i}\tZ{i}" for i in range(1, markers + 1)) + "\n\n")
    for i, points in enumerate(frames):
        cells = []
        for j in range(markers):
            p = None if points is None else points[j]
            if p is None or not np.isfinite(p).all():
                cells += ["", "", ""]
            else:
                cells += [f"{p[1]:.6f}", f"{p[2]:.6f}", f"{p[0]:.6f}"]
        out.write(f"{i + 1}\t{i / rate:.6f}\t" + "\t".join(cells) + "\n")


def read_trc(path: Path) -> tuple[list[str], F64]:
    """Marker names and (frames, markers, 3) world points (Z-up) of a TRC written Y-up (Pose2Sim, ``write_trc``)."""
    lines = path.read_text().splitlines()
    names = [n for n in lines[3].split("\t")[2:] if n]
    rows = []
    for line in lines[5:]:
        if not line.strip():
            continue
        cells = line.split("\t")[2:]
        values = [float(c) if c.strip() else np.nan for c in cells[: 3 * len(names)]]
        values += [np.nan] * (3 * len(names) - len(values))
        rows.append(values)
    yup = np.asarray(rows, np.float64).reshape(len(rows), len(names), 3)
    return names, yup[..., [2, 0, 1]]


def coco_name(trc_name: str) -> str | None:
    """The COCO keypoint name of a TRC marker name (``RShoulder`` -> ``right_shoulder``), if any."""
    side = {"L": "left_", "R": "right_"}.get(trc_name[:1], "") if trc_name[1:2].isupper() else ""
    rest = trc_name[1:] if side else trc_name
    name = side + re.sub(r"(?<!^)(?=[A-Z])", "_", rest).lower()
    return name if name in COCO_KEYPOINTS else None
