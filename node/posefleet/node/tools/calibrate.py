"""``posefleet calibrate``: cameras calibrated by posefleet itself, written as the Pose2Sim/anipose TOML.

``intrinsics`` (a board per camera), ``points`` (known 3D points clicked in a still, or a board seen once:
each camera's pose) and ``people`` (every camera's pose from the people walking through the synchronised
videos, with posefleet's own models). Libraries: ``posefleet.merge.boards``, ``intrinsics``,
``extrinsics`` and ``selfcal``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from posefleet.common.cli import parse_size, positive_float, positive_int
from posefleet.common.errors import PosefleetError

CAMERA_HELP = "NAME=SOURCE, once per camera"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("calibrate", help="calibrate cameras: intrinsics from a board, extrinsics from points or people")
    csub = p.add_subparsers(dest="calibrate_command", required=True, metavar="STEP")

    c = csub.add_parser("intrinsics", help="K and k1 k2 p1 p2 per camera from images or a video of a board")
    c.add_argument("--camera", action="append", required=True, dest="cameras", metavar="NAME=IMAGES_DIR|VIDEO")
    c.add_argument(
        "--board", required=True, help="checkerboard:COLSxROWS:SQUARE_MM | charuco:COLSxROWS:SQUARE_MM:MARKER_MM[:DICT]"
    )
    c.add_argument(
        "--calibration", type=Path, help="a calibration TOML to update (its other cameras and extrinsics kept)"
    )
    c.add_argument("--out", required=True, type=Path)
    c.add_argument(
        "--max-views", type=positive_int, default=40, help="views calibrated per camera, chosen for coverage"
    )
    c.add_argument("--video-step", type=positive_int, default=5, help="search every n-th frame of a video")
    c.add_argument("--detections", type=Path, help="write every view with the board's corners drawn here")
    c.add_argument("--json", type=Path, help="the report as JSON")
    c.set_defaults(func=cmd_intrinsics)

    c = csub.add_parser("points", help="each camera's pose from known 3D points clicked in a still (or a board)")
    c.add_argument("--calibration", required=True, type=Path, help="the cameras' intrinsics (and world_points)")
    c.add_argument("--camera", action="append", required=True, dest="cameras", metavar="NAME=POINTS_FILE|IMAGE")
    c.add_argument("--world", type=Path, help="a TOML/JSON with a world_points table (name = [X, Y, Z], metres)")
    c.add_argument("--board", help="with NAME=IMAGE: the board seen in the still defines the world frame")
    c.add_argument("--out", required=True, type=Path)
    c.add_argument("--json", type=Path, help="the report as JSON")
    c.set_defaults(func=cmd_points)

    c = csub.add_parser("people", help="every camera's pose from the people in synchronised videos")
    c.add_argument("--calibration", required=True, type=Path, help="the cameras' intrinsics and names")
    c.add_argument(
        "--camera", action="append", required=True, dest="cameras", metavar="NAME=VIDEO",
        help="a video (or a 'posefleet pose --json' file or an OpenPose JSON folder, as 'fuse' reads them)",
    )  # fmt: skip
    c.add_argument("--model", type=Path, help="converted pose model for video inputs")
    c.add_argument("--device", default="CPU")
    c.add_argument(
        "--input-size", type=parse_size, help="network input HxW (default: the model's at the video's aspect)"
    )
    c.add_argument(
        "--person-height", type=positive_float, default=1.75, help="the people's mean height, metres (scale)"
    )
    c.add_argument(
        "--points", action="append", default=[], metavar="NAME=POINTS_FILE",
        help="known points clicked in a camera's still: scale, origin and heading from them (3+ points, 2+ cameras)",
    )  # fmt: skip
    c.add_argument(
        "--world", type=Path, help="world_points for --points (default: in the points files or the calibration)"
    )
    c.add_argument(
        "--board-still", action="append", default=[], metavar="NAME=IMAGE",
        help="a still of a ChArUco board (--board) seen at once by 2+ cameras: scale and world frame from it",
    )  # fmt: skip
    c.add_argument("--board", help="the board of --board-still (charuco:COLSxROWS:SQUARE_MM:MARKER_MM[:DICT])")
    c.add_argument("--min-score", type=positive_float, default=0.3, help="2D joints below this confidence are not used")
    c.add_argument(
        "--max-frames", type=positive_int,
        help="frames used at most, spread evenly over a longer recording; only they are run through the model "
        "(default: 300, SelfCalParams.max_frames)",
    )  # fmt: skip
    c.add_argument(
        "--no-appearance",
        action="store_true",
        help="pair people across cameras by geometry alone (default: their torso and thigh colours help)",
    )
    c.add_argument(
        "--refine",
        action="store_true",
        help="start from --calibration's extrinsics and adjust them on the people, keeping its world frame and "
        "scale (a rig calibrated before whose cameras may have moved a little); --person-height is then unused",
    )
    c.add_argument(
        "--keep-centres",
        action="store_true",
        help="with --refine: the cameras stay where --calibration puts them and only turn (fixed mounts, knocked "
        "or turned since)",
    )
    c.add_argument("--out", required=True, type=Path)
    c.add_argument("--json", type=Path, help="the report as JSON")
    c.set_defaults(func=cmd_people)


def _specs(specs: list[str], flag: str = "--camera") -> list[tuple[str, Path]]:
    out, seen = [], set()
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name or not value:
            raise PosefleetError(f"{flag} {spec!r}: expected NAME=PATH")
        if name in seen:
            raise PosefleetError(f"{flag} {name} is given twice")
        seen.add(name)
        out.append((name, Path(value)))
    return out


def _write_json(path: Path | None, data: Any) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n")


def cmd_intrinsics(args: argparse.Namespace) -> int:
    import numpy as np
    from posefleet.merge.boards import parse_board
    from posefleet.merge.calibration import Camera, load_calibration, write_calibration
    from posefleet.merge.intrinsics import IntrinsicsParams, calibrate_intrinsics, draw_detections

    board = parse_board(args.board)
    cameras: dict[str, Camera] = dict(load_calibration(args.calibration)) if args.calibration else {}
    params = IntrinsicsParams(max_views=args.max_views, video_step=args.video_step)
    report = []
    for name, source in _specs(args.cameras):
        t0 = time.perf_counter()
        found = calibrate_intrinsics(name, source, board, params)
        seconds = time.perf_counter() - t0
        old = cameras.get(name)
        R, t = (old.R, old.t) if old is not None else (np.eye(3), np.zeros(3))
        cameras[name] = Camera(name, found.size, found.K, found.dist, R, t)
        print(
            f"{name}: RMS {found.rms_px:.3f} px over {found.used} of {len(found.views)} views; "
            f"fx {found.K[0, 0]:.1f} fy {found.K[1, 1]:.1f} cx {found.K[0, 2]:.1f} cy {found.K[1, 2]:.1f} "
            f"k1 k2 p1 p2 {np.round(found.dist, 5).tolist()} ({seconds:.1f} s)"
        )
        for view in found.views:
            state = f"{view.error_px:.3f} px" if view.used else view.note
            print(f"  {view.source}: {state}")
        if args.detections:
            drawn = draw_detections(source, board, args.detections / name, args.video_step)
            print(f"  {drawn} views with the board drawn in {args.detections / name}")
        report.append({
            "camera": name, "rms_px": found.rms_px, "size": list(found.size), "matrix": found.K.tolist(),
            "distortions": found.dist.tolist(), "seconds": seconds,
            "views": [vars(v) for v in found.views],
        })  # fmt: skip
    extrinsics = (
        "kept from the input" if args.calibration else "not calibrated (identity): run calibrate points or people"
    )
    write_calibration(
        args.out, cameras, {"intrinsics": f"posefleet calibrate intrinsics, {args.board}", "extrinsics": extrinsics}
    )
    _write_json(args.json, report)
    print(f"wrote {args.out}")
    return 0


def _world(args: argparse.Namespace, extra: dict[str, Any]) -> dict[str, Any]:
    from posefleet.merge.extrinsics import read_world

    world = dict(read_world(args.calibration))
    if args.world:
        world.update(read_world(args.world))
    world.update(extra)
    return world


def cmd_points(args: argparse.Namespace) -> int:
    import cv2
    from posefleet.merge.boards import parse_board
    from posefleet.merge.calibration import load_calibration, write_calibration
    from posefleet.merge.extrinsics import camera_from_board, camera_from_points, read_points

    cameras = dict(load_calibration(args.calibration))
    board = parse_board(args.board) if args.board else None
    report = []
    for name, path in _specs(args.cameras):
        if name not in cameras:
            raise PosefleetError(f"--camera {name}: not a camera of {args.calibration} (it has {', '.join(cameras)})")
        if not path.is_file():
            raise PosefleetError(f"--camera {name}: {path}: no such file")
        if path.suffix.lower() in (".json", ".toml"):
            pixels, own = read_points(path)
            fit = camera_from_points(cameras[name], pixels, _world(args, own), str(path))
        elif board is not None:
            image = cv2.imread(str(path))
            if image is None:
                raise PosefleetError(f"--camera {name}: {path}: not a readable image")
            fit = camera_from_board(cameras[name], image, board, str(path))
        else:
            raise PosefleetError(f"--camera {name}: {path}: a points file (.json or .toml), or an image with --board")
        cameras[name] = fit.camera
        centre = fit.camera.center
        print(f"{name}: RMS {fit.rms_px:.2f} px over {len(fit.errors_px)} points; centre {centre.round(3).tolist()} m")
        report.append({"camera": name, "rms_px": fit.rms_px, "errors_px": fit.errors_px, "centre": centre.tolist()})
    write_calibration(args.out, cameras, {"extrinsics": "posefleet calibrate points"})
    _write_json(args.json, report)
    print(f"wrote {args.out}")
    return 0


def _anchor(args: argparse.Namespace, cameras: dict[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
    """The people-made cameras moved into the frame of ``--points`` or of a ``--board-still`` board."""
    import cv2
    from posefleet.merge.boards import parse_board
    from posefleet.merge.extrinsics import anchor, board_clicks, read_points

    clicks: dict[str, Any] = {}
    own: dict[str, Any] = {}
    if args.board_still:
        if not args.board:
            raise PosefleetError("--board-still needs --board (the ChArUco board it shows)")
        stills = {}
        for name, path in _specs(args.board_still, "--board-still"):
            image = cv2.imread(str(path))
            if image is None:
                raise PosefleetError(f"--board-still {name}: {path}: not a readable image")
            stills[name] = image
        clicks, own = board_clicks(stills, parse_board(args.board))
    for name, path in _specs(args.points, "--points"):
        pixels, extra = read_points(path)
        clicks.setdefault(name, {}).update(pixels)
        own.update(extra)
    return anchor(cameras, clicks, _world(args, own))


def _spread_over_videos(specs: list[str], budget: int) -> frozenset[int] | None:
    """The frames to run the model on where every input is a video longer than ``budget`` frames: the same
    ``budget`` frames of each, spread evenly (``selfcal.spread``); None to run it on every frame (other inputs,
    or short videos: the calibration then spreads the 2D poses itself)."""
    from posefleet.merge.selfcal import spread
    from posefleet.node.tools import media
    from posefleet.node.tools.fuse import is_video

    paths = [Path(spec.partition("=")[2]) for spec in specs]
    if not paths or not all(is_video(p) and not media.is_image(p) for p in paths):
        return None
    counts = {spec.partition("=")[0]: media.frame_count(p) for spec, p in zip(specs, paths, strict=True)}
    if min(counts.values()) <= budget:
        return None
    _same_length(counts)
    count = next(iter(counts.values()))
    print(_spread_note(count, budget))
    return frozenset(spread(count, budget))


def _same_length(counts: dict[str, int]) -> None:
    """Refuses inputs with different numbers of frames (camera -> frames) as unsynchronised."""
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{n} {c}" for n, c in counts.items())
        raise PosefleetError(f"the inputs are not synchronised: they have different numbers of frames ({listed})")


def _spread_note(count: int, budget: int) -> str:
    return f"{count} frames per camera: {budget} of them, spread evenly over the recording, are used (--max-frames)"


def cmd_people(args: argparse.Namespace) -> int:
    import numpy as np
    from posefleet.merge.calibration import load_calibration, write_calibration
    from posefleet.merge.extrinsics import camera_difference
    from posefleet.merge.selfcal import SelfCalParams, calibrate_from_people, refine_with_people, starts_verdict
    from posefleet.node.tools.fuse import read_inputs

    if args.keep_centres and not args.refine:
        raise PosefleetError("--keep-centres holds --calibration's camera centres: it needs --refine")
    if args.keep_centres and (args.points or args.board_still):
        raise PosefleetError(
            "--keep-centres holds --calibration's camera centres, and so its world frame: --points and "
            "--board-still would move them (leave them out, or refine without --keep-centres)"
        )
    given = load_calibration(args.calibration)
    t0 = time.perf_counter()
    views, looks, fitted, lengths = {}, {}, {}, {}
    budget = args.max_frames or SelfCalParams.max_frames
    only = _spread_over_videos(args.cameras, budget)
    inputs = read_inputs(
        args.cameras,
        list(given),
        args.model,
        args.calibration,
        device=args.device,
        input_size=args.input_size,
        looks=not args.no_appearance,
        only=only,
    )
    for got in inputs:
        views[got.name] = got.poses
        lengths[got.name] = len(got.poses)
        fitted[got.name] = given[got.name].fit(*(got.size or given[got.name].size))
        if got.looks is not None:
            looks[got.name] = got.looks
    seconds = {"2d poses": time.perf_counter() - t0}
    if len(views) < 2:
        raise PosefleetError("calibrate people needs at least 2 --camera inputs")
    _same_length(lengths)
    count = next(iter(lengths.values()))
    if count > budget:  # 2D poses read from files (videos were cut before the model ran)
        print(_spread_note(count, budget))
    frames = [{n: v[i] for n, v in views.items()} for i in range(count)]
    appearance = [{n: v[i] for n, v in looks.items()} for i in range(count)] if looks else None
    params = SelfCalParams(min_score=args.min_score, max_frames=budget)
    if args.refine:
        result = refine_with_people(fitted, frames, looks=appearance, params=params, keep_centres=args.keep_centres)
    else:
        height = args.person_height
        result = calibrate_from_people(fitted, frames, looks=appearance, person_height=height, params=params)
    seconds.update(result.seconds)
    unplaced = [r for r in result.report if not r.placed and r.name in views]
    if unplaced:
        raise PosefleetError(
            "; ".join(f"camera {r.name} could not be placed: {r.reason}" for r in unplaced)
            + " (film more people moving where these cameras and the others both see them)"
        )
    cameras = {n: replace(given[n], R=c.R, t=c.t) for n, c in result.cameras.items() if n in views}
    frame_source = result.scale_source
    residuals: dict[str, float] = {}
    if args.points or args.board_still:
        cameras, residuals = _anchor(args, cameras)
        what = "the board" if args.board_still else "the known points"
        frame_source = f"{what} ({len(residuals)}; largest residual {max(residuals.values()) * 100:.1f} cm)"
    for r in result.report:
        moved = ""
        if args.refine:
            centre, angle = camera_difference(cameras[r.name], given[r.name])
            moved = f" (given: {r.start_px:.1f} px); moved {centre * 100:.1f} cm and {angle:.2f} deg"
        print(
            f"{r.name}: reprojection RMS {r.error_px:.1f} px{moved} over {r.observations} joints in {r.frames} "
            f"frames; centre {cameras[r.name].center.round(3).tolist()} m"
        )
    print(
        f"{result.points} 3D joints from {result.frames} frames "
        f"(people paired across cameras by {result.people_paired_by}); "
        f"limb lengths vary {result.bone_spread:.0%} "
        f"(robust CV: a wrong geometry stretches them); world frame and scale: {frame_source}; "
        + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items())
    )
    if not args.refine:
        print(starts_verdict(result.start_disagreement))
    write_calibration(
        args.out,
        {**{n: c for n, c in given.items() if n not in cameras}, **cameras},
        {
            "extrinsics": "posefleet calibrate people"
            + (" --refine" if args.refine else "")
            + (" --keep-centres" if args.keep_centres else ""),
            "world_frame": frame_source,
        },
    )
    _write_json(args.json, {
        "cameras": [vars(r) for r in result.report], "points": result.points, "frames": result.frames,
        "bone_spread": result.bone_spread, "pairing": result.people_paired_by, "world_frame": frame_source,
        "start_disagreement": result.start_disagreement, "ambiguous": result.ambiguous,
        "known_point_residuals_m": residuals, "seconds": seconds,
        "centres": {n: np.round(c.center, 4).tolist() for n, c in cameras.items()},
    })  # fmt: skip
    print(f"wrote {args.out}")
    return 0
