"""``posefleet fuse``: recorded footage of calibrated cameras -> 3D people (JSONL, TRC, a rendering).

Each ``--camera NAME=INPUT`` names a section of the calibration file and one of: a video (the model runs
on it frame by frame; needs ``--model``), a ``posefleet pose --json`` file, or a folder of OpenPose JSON
files (BODY_25B, BODY_25 or COCO-18, mapped to COCO-17). Frames are matched by index across cameras.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from posefleet.common.cli import parse_size, positive_float, positive_int
from posefleet.common.errors import PosefleetError

F32 = npt.NDArray[np.float32]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("fuse", help="fuse recorded footage of calibrated cameras into 3D people")
    p.add_argument("--calibration", required=True, type=Path, help="Pose2Sim/anipose calibration TOML")
    p.add_argument(
        "--camera",
        action="append",
        required=True,
        dest="cameras",
        metavar="NAME=INPUT",
        help="a calibration camera and its video, 'posefleet pose --json' file or OpenPose JSON folder",
    )
    p.add_argument("--model", type=Path, help="converted model for video inputs")
    p.add_argument("--device", default="CPU")
    p.add_argument(
        "--input-size",
        type=parse_size,
        help="network input HxW for video inputs (default: the model's size at the videos' aspect ratio)",
    )
    p.add_argument(
        "--openpose-layout",
        choices=("body25b", "body25", "coco18"),
        help="OpenPose keypoint layout (default: detected)",
    )
    p.add_argument("--jsonl", required=True, type=Path, help="one JSON object per frame")
    p.add_argument("--trc", type=Path, help="TRC of the main person (others beside it, _P<id>)")
    p.add_argument("--render", type=Path, help="side-by-side camera views with the 3D people reprojected (mp4)")
    p.add_argument("--fps", type=positive_float, help="frame rate (default: the videos', else 30)")
    p.add_argument("--max-reprojection-error-px", type=positive_float, default=25.0)
    p.add_argument("--max-ray-distance-m", type=positive_float, default=0.15)
    p.add_argument(
        "--filter",
        choices=("none", "butterworth"),
        default="none",
        help="butterworth: zero-phase low-pass of each person's joints over the recording, as Pose2Sim filters",
    )
    p.add_argument("--cutoff-hz", type=positive_float, default=6.0, help="--filter butterworth cut-off (Hz)")
    p.add_argument("--order", type=positive_int, default=4, help="--filter butterworth order")
    p.set_defaults(func=cmd_fuse)


def _pose_json(path: Path) -> list[list[F32]]:
    try:
        report = json.loads(path.read_text())
        frames = report["inputs"][0]["frames"]
        return [
            [np.array([(k["x"], k["y"], k["score"]) for k in pose["keypoints"]], np.float32) for pose in f["poses"]]
            for f in frames
        ]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise PosefleetError(f"{path}: not a 'posefleet pose --json' file: {exc}") from None


@dataclass
class CameraInput:
    """One ``--camera NAME=INPUT``: its poses per frame, and where the input has them its frames
    (``keep_frames``), each pose's appearance (``looks``, ``posefleet.merge.appearance``), image size and rate."""

    name: str
    poses: list[list[F32]]
    frames: list[Any] = field(default_factory=list)
    looks: list[list[F32]] | None = None
    size: tuple[int, int] | None = None
    fps: float | None = None


def video_poses(
    name: str,
    model: Path | None,
    path: Path,
    device: str = "CPU",
    input_size: tuple[int, int] | None = None,
    *,
    keep_frames: bool = False,
    looks: bool = False,
    only: Container[int] | None = None,
) -> CameraInput:
    """The model's poses on every frame of a video (``only``: on the frames of these indices), with the frames
    and the poses' appearance on request."""
    from posefleet.merge.appearance import describe_all
    from posefleet.node.engine import EngineOptions, PoseEngine, load_card
    from posefleet.node.tools import media

    if model is None:
        raise PosefleetError(f"{path}: a video input needs --model (a converted model directory)")
    out = CameraInput(name, [], looks=[] if looks else None)
    engine: PoseEngine | None = None
    for frame in media.frames(path, only):
        out.size = (frame.shape[1], frame.shape[0])
        if engine is None:  # the model's own size at the video's aspect ratio, unless one is given
            card = load_card(model)
            fitted = input_size or card.input.size_for((frame.shape[0], frame.shape[1]))
            engine = PoseEngine(model, EngineOptions(device=device, input_size=fitted))
        poses = [p.keypoints for p in engine.infer(frame).poses]
        out.poses.append(poses)
        if keep_frames:
            out.frames.append(frame)
        if out.looks is not None:
            out.looks.append(describe_all(frame, poses))
    out.fps = media.video_fps(path)
    return out


def is_video(path: Path) -> bool:
    """An input ``read_inputs`` runs through the model (``video_poses``): a file, neither JSON nor a folder."""
    return path.exists() and not path.is_dir() and path.suffix != ".json"


def read_inputs(
    specs: list[str],
    names: list[str],
    model: Path | None,
    calibration: Path,
    *,
    device: str = "CPU",
    input_size: tuple[int, int] | None = None,
    layout: str | None = None,
    keep_frames: bool = False,
    looks: bool = False,
    only: Container[int] | None = None,
) -> Iterator[CameraInput]:
    """Each ``NAME=INPUT`` of ``specs`` read (videos through ``video_poses``; ``only``: their frames of these
    indices)."""
    from posefleet.merge.formats import read_openpose_folder

    seen = set()
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not value:
            raise PosefleetError(f"--camera {spec!r}: expected NAME=INPUT")
        if name not in names:
            raise PosefleetError(f"--camera {name}: not a camera of {calibration} (it has {', '.join(names)})")
        if name in seen:
            raise PosefleetError(f"--camera {name} is given twice")
        seen.add(name)
        path = Path(value)
        if path.is_dir():
            yield CameraInput(name, read_openpose_folder(path, layout))  # type: ignore[arg-type]
        elif path.suffix == ".json":
            yield CameraInput(name, _pose_json(path))
        elif is_video(path):
            yield video_poses(name, model, path, device, input_size, keep_frames=keep_frames, looks=looks, only=only)
        else:
            raise PosefleetError(f"--camera {name}: {path}: no such file or folder")


def cmd_fuse(args: argparse.Namespace) -> int:
    from posefleet.merge.association import AssociationParams
    from posefleet.merge.calibration import load_calibration
    from posefleet.merge.offline import Renderer, filter_people, frame_json, fuse_frames, write_trcs
    from posefleet.merge.scene import FusionParams, SceneFuser

    calibration = load_calibration(args.calibration)
    views: dict[str, list[list[F32]]] = {}
    images: dict[str, list[Any]] = {}
    fitted = {}
    rates = []
    inputs = read_inputs(
        args.cameras,
        list(calibration),
        args.model,
        args.calibration,
        device=args.device,
        input_size=args.input_size,
        layout=args.openpose_layout,
        keep_frames=args.render is not None,
    )
    for given in inputs:
        name = given.name
        views[name], images[name] = given.poses, given.frames
        fitted[name] = calibration[name].fit(*(given.size or calibration[name].size))
        if given.fps:
            rates.append(given.fps)
    if len(views) < 2:
        raise PosefleetError("fuse needs at least 2 --camera inputs")
    fps = args.fps or (rates[0] if rates else 30.0)
    params = FusionParams(
        association=AssociationParams(max_ray_distance_m=args.max_ray_distance_m),
        max_error_px=args.max_reprojection_error_px,
    )
    fuser = SceneFuser(fitted, params)
    renderer = Renderer(args.render, fitted, fps) if args.render else None
    frames = list(fuse_frames(fuser, views, fps))
    if args.filter == "butterworth":
        try:
            filter_people(frames, fps, args.cutoff_hz, args.order)
        except ValueError as exc:
            raise PosefleetError(f"--filter butterworth: {exc}") from None
    args.jsonl.parent.mkdir(parents=True, exist_ok=True)
    with args.jsonl.open("w") as out:
        for frame in frames:
            out.write(json.dumps(frame_json(frame)) + "\n")
            if renderer is not None:
                shown = {n: imgs[frame.index] for n, imgs in images.items() if frame.index < len(imgs)}
                renderer.add(frame, shown)
    if renderer is not None:
        renderer.close()
    ids = sorted({p.id for f in frames for p in f.scene.persons})
    print(f"{len(frames)} frames from {len(views)} cameras: {len(ids)} 3D person id(s) {ids}; wrote {args.jsonl}")
    if args.trc:
        for path in write_trcs(args.trc, frames, fps):
            print(f"wrote {path}")
    if args.render:
        print(f"wrote {args.render}")
    return 0
