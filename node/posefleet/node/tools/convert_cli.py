"""``posefleet convert``: a source model to OpenVINO IR with its card (``--validate``: INT8 and bf16 held to
the float model's COCO AP)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from posefleet.common.cli import parse_size, positive_int
from posefleet.common.errors import PosefleetError


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
