"""``posefleet pose``, ``eval`` and ``record-outputs``: the engine run on images and videos, COCO AP, raw outputs."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from posefleet.common.cli import parse_size
from posefleet.node.server.cli import add_decode_flag, add_precision_flag


def _size_or_native(text: str) -> tuple[int, int] | str:
    return "native" if text == "native" else parse_size(text)


def _engine_flags(p: argparse.ArgumentParser, *, native: bool) -> None:
    p.add_argument("--model", required=True, type=Path, help="converted model directory (posefleet convert)")
    p.add_argument("--device", default="CPU", help="OpenVINO device: CPU, GPU, NPU, AUTO (MYRIAD on 2022.3)")
    help_size = "network input HxW" + (" or 'native' (nearest valid size to each image)" if native else "")
    p.add_argument("--input-size", type=_size_or_native if native else parse_size, default=None, help=help_size)
    add_precision_flag(p)
    add_decode_flag(p)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("pose", help="estimate poses in images and videos")
    _engine_flags(p, native=True)
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT")
    p.add_argument("--json", type=Path, help="write all poses as JSON")
    p.add_argument("--render", type=Path, help="directory for annotated images/videos")
    p.set_defaults(func=cmd_pose)

    p = sub.add_parser("eval", help="COCO keypoint AP/AR with pycocotools")
    _engine_flags(p, native=True)
    p.add_argument("--coco-annotations", required=True, type=Path)
    p.add_argument("--images", required=True, type=Path)
    p.add_argument("--detections-out", type=Path)
    p.add_argument("--json", type=Path, help="write the summary stats as JSON")
    p.set_defaults(func=cmd_eval, input_size="native", for_eval=True)

    p = sub.add_parser("record-outputs", help="save a model's raw outputs on one image (simulated-accelerator nodes)")
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--image", required=True, type=Path)
    p.add_argument("--input-size", type=parse_size)
    p.add_argument("-o", "--out", required=True, type=Path, help="the .npz file to write")
    p.set_defaults(func=cmd_record_outputs)


def _engine(args: argparse.Namespace) -> Any:
    from posefleet.node.engine import EngineOptions, NativeResolutionEngine, PoseEngine, load_card
    from posefleet.node.engine.families import family

    decode = dict(args.decode or [])
    if getattr(args, "for_eval", False):
        decode = {**family(load_card(args.model).family).eval_params, **decode}
    options = EngineOptions(device=args.device, decode=decode, inference_precision=args.inference_precision)
    if args.input_size == "native":
        return NativeResolutionEngine(args.model, options)
    return PoseEngine(args.model, replace(options, input_size=args.input_size))


def cmd_pose(args: argparse.Namespace) -> int:
    import cv2
    from posefleet.merge.tracking import PoseTracker, bbox
    from posefleet.node.tools import media
    from posefleet.node.tools.render import draw_poses

    engine = _engine(args)
    report: dict[str, Any] = {"model": engine.card.model_id, "inputs": []}
    if args.render:
        args.render.mkdir(parents=True, exist_ok=True)
    for path in args.inputs:
        entry: dict[str, Any] = {"path": str(path), "frames": []}
        writer = None
        tracker = None if media.is_image(path) else PoseTracker()  # videos: a track id per person
        fps = 30.0 if tracker is None else media.video_fps(path)
        for index, frame in enumerate(media.frames(path)):
            result = engine.infer(frame, None if tracker is None else str(path))
            poses = [p.to_dict() for p in result.poses]
            track_ids: list[int] = []
            if tracker is not None:
                tracked = tracker.update([p.keypoints for p in result.poses], [p.score for p in result.poses],
                                         index * 1000.0 / fps)  # fmt: skip
                for pose, source, (track_id, _) in zip(poses, result.poses, tracked, strict=True):
                    pose["track_id"] = track_id
                    pose["bbox"] = [round(v, 2) for v in bbox(source.keypoints)]
                    track_ids.append(track_id)
            entry["frames"].append({"index": index, "poses": poses})
            if args.render:
                drawn = draw_poses(frame, result.poses, track_ids=track_ids or None)
                if media.is_image(path):
                    cv2.imwrite(str(args.render / path.name), drawn)
                else:
                    if writer is None:
                        out = args.render / f"{path.stem}.mp4"
                        fourcc = cv2.VideoWriter.fourcc(*"mp4v")
                        writer = cv2.VideoWriter(
                            str(out), fourcc, media.video_fps(path), (frame.shape[1], frame.shape[0])
                        )
                    writer.write(drawn)
        if writer is not None:
            writer.release()
        report["inputs"].append(entry)
        count = sum(len(f["poses"]) for f in entry["frames"])
        print(f"{path}: {len(entry['frames'])} frame(s), {count} pose(s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report) + "\n")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from posefleet.node.tools.coco_eval import evaluate

    report = evaluate(_engine(args), args.coco_annotations, args.images)
    print(report.summary, end="")
    print(
        f"{args.model}: AP {report.stats['AP']:.3f}  AP50 {report.stats['AP50']:.3f}  AR {report.stats['AR']:.3f}"
        f"  ({report.images} images, {len(report.detections)} detections)"
    )
    if args.detections_out:
        args.detections_out.write_text(json.dumps(report.detections) + "\n")
    if args.json:
        args.json.write_text(json.dumps({"model": str(args.model), **report.stats}, indent=2) + "\n")
    return 0


def cmd_record_outputs(args: argparse.Namespace) -> int:
    from posefleet.node.engine.runtime import record_outputs
    from posefleet.node.tools.media import read_image

    record_outputs(args.model, read_image(args.image), args.out, args.input_size)
    print(f"wrote {args.out}")
    return 0
