"""CLI subcommands owned by the node package: convert, models, pose, eval, record-outputs."""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from posefleet.common.cli import parse_size, positive_int
from posefleet.common.errors import PosefleetError
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
    p = sub.add_parser("convert", help="convert a source model to OpenVINO IR with a model card")
    p.add_argument("source", type=Path, help=".pb frozen graph, tfjs checkpoint dir, .tflite, or OpenVINO .xml/dir")
    p.add_argument("-o", "--outdir", required=True, type=Path)
    p.add_argument("--input-size", type=parse_size, help="fix the input to HxW (PoseNet: k*stride+1)")
    p.add_argument("--stride", type=int, choices=(8, 16, 32), help="PoseNet output stride (tfjs checkpoints)")
    p.add_argument(
        "--precision",
        choices=("FP16", "FP32", "INT8"),
        default="FP16",
        help="INT8: post-training quantisation with NNCF on --calibration frames",
    )
    q = p.add_argument_group("INT8")
    q.add_argument(
        "--calibration",
        type=Path,
        nargs="+",
        metavar="PATH",
        help="images, videos or folders of them, like what the cameras will see",
    )
    q.add_argument(
        "--calibration-size",
        type=positive_int,
        default=300,
        help="frames to calibrate on (default 300, at least 10; videos are sampled evenly)",
    )
    v = p.add_argument_group("validation")
    v.add_argument(
        "--validate",
        type=Path,
        metavar="GT.json",
        help="COCO keypoints (needs --images): refuse an INT8 model whose AP falls more than --max-ap-drop below "
        "the float model's, and record whether the CPU's faster precision (bf16) keeps the AP of f32",
    )
    v.add_argument("--images", type=Path, help="the --validate images")
    v.add_argument("--max-ap-drop", type=float, default=0.02, help="INT8 against float (default 0.02)")
    v.add_argument(
        "--max-precision-drop",
        type=float,
        default=0.005,
        help="bf16 against f32: within it, CPU nodes run the model in bf16 by default (default 0.005)",
    )
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("models", help="list or fetch official models")
    msub = p.add_subparsers(dest="models_cmd", required=True)
    m = msub.add_parser("list", help="models that 'fetch' knows")
    m.set_defaults(func=cmd_models_list)
    m = msub.add_parser("fetch", help="download official weights (or a mirror), check and convert them")
    m.add_argument("name")
    m.add_argument("--mirror", help="base URL replacing the official one (http(s):// or file://)")
    m.add_argument("-o", "--outdir", type=Path, help="default: $POSEFLEET_HOME/models/NAME")
    m.add_argument("--precision", choices=("FP16", "FP32"), default="FP16")
    m.add_argument("--stride", type=int, choices=(8, 16, 32))
    m.add_argument("--input-size", type=parse_size)
    m.set_defaults(func=cmd_models_fetch)

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


def cmd_convert(args: argparse.Namespace) -> int:
    from posefleet.node.convert import convert

    if args.validate is not None:
        return _convert_validated(args)
    card = convert(
        args.source,
        args.outdir,
        input_size=args.input_size,
        stride=args.stride,
        precision=args.precision,
        calibration=args.calibration,
        calibration_size=args.calibration_size,
        log=print,
    )
    print(
        f"{card.model_id}: family {card.family}, input {card.input.size or 'dynamic'}, stride {card.output_stride}, "
        f"{card.precision}"
    )
    return 0


def _convert_validated(args: argparse.Namespace) -> int:
    """Conversion checked on COCO keypoints before anything is written: an INT8 model against its float twin
    (refused past --max-ap-drop), and the CPU's faster precision (bf16 where it has it) against f32, recorded in
    the card (a CPU node runs the model in it by default only when it keeps the AP within --max-precision-drop)."""
    import os
    import shutil

    from posefleet.node.convert import ConversionError, convert
    from posefleet.node.engine import EngineOptions, NativeResolutionEngine, load_card
    from posefleet.node.engine.card import PrecisionCheck
    from posefleet.node.engine.families import family
    from posefleet.node.engine.ov_compat import Core
    from posefleet.node.engine.runtime import device_precision
    from posefleet.node.tools.coco_eval import evaluate

    if args.images is None:
        raise PosefleetError("--validate needs --images DIR (the images its annotations describe)")

    def ap(model_dir: Path, precision: Any) -> float:
        decode = family(load_card(model_dir).family).eval_params
        engine = NativeResolutionEngine(model_dir, EngineOptions(decode=decode, inference_precision=precision))
        return float(evaluate(engine, args.validate, args.images).stats["AP"])

    common = {"input_size": args.input_size, "stride": args.stride, "log": print}
    args.outdir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{args.outdir.name}.validate-", dir=args.outdir.parent) as tmp:
        out = Path(tmp) / "model"
        card = convert(
            args.source,
            out,
            precision=args.precision,
            calibration=args.calibration,
            calibration_size=args.calibration_size,
            **common,
        )
        f32 = ap(out, "f32")
        if card.quantization is not None:  # quantised here: compare with the float model
            convert(args.source, Path(tmp) / "float", precision="FP16", **common)
            reference = ap(Path(tmp) / "float", "f32")
            drop = reference - f32
            print(f"COCO AP: float {reference:.3f}, INT8 {f32:.3f} (drop {drop:.3f}, allowed {args.max_ap_drop})")
            if drop > args.max_ap_drop:
                raise ConversionError(
                    f"INT8 refused: COCO AP {f32:.3f} against {reference:.3f} for the float model on "
                    f"{args.validate} (drop {drop:.3f} > --max-ap-drop {args.max_ap_drop}); {args.outdir} not written"
                )
            card.quantization.validation = {"ap_float": round(reference, 4), "ap_int8": round(f32, 4)}
        fast = device_precision(Core(), "CPU")
        if fast and fast != "f32":
            check = PrecisionCheck(
                precision=fast,
                metric=f"COCO AP on {args.validate.name}",
                f32=round(f32, 4),
                value=round(ap(out, fast), 4),
                tolerance=args.max_precision_drop,
            )
            card.precision_checks = [check]
            verdict = "keeps" if check.keeps_accuracy else "loses"
            print(f"COCO AP in f32 {check.f32:.3f}, in {fast} {check.value:.3f}: {fast} {verdict} the accuracy")
        card.write(out)
        if args.outdir.exists():
            shutil.rmtree(args.outdir)
        os.replace(out, args.outdir)
    print(f"{card.model_id}: {card.precision}, written to {args.outdir}")
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from posefleet.node.convert.fetch import CATALOG

    for entry in CATALOG.values():
        print(f"{entry.name:32} {entry.description}")
    return 0


def cmd_models_fetch(args: argparse.Namespace) -> int:
    from posefleet.node.convert.fetch import CATALOG, fetch, fetch_sample

    if args.name in CATALOG and CATALOG[args.name].kind == "sample":
        print(f"ready: {fetch_sample(args.name, mirror=args.mirror)}")
        return 0
    card = fetch(
        args.name,
        args.outdir,
        mirror=args.mirror,
        precision=args.precision,
        stride=args.stride,
        input_size=args.input_size,
        log=print,
    )
    print(f"ready: {card.model_id}")
    return 0


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
