"""``posefleet bench``: a model's FPS and latency in-process (``--all``: every asset model at its benchmark
sizes), through a node (``--node``), through the legacy-OpenVINO worker (``--legacy-python``), and what INT8
can gain on this CPU (``--int8-ceiling``). Registered by the ``posefleet`` CLI; imports only argparse and
``posefleet.common`` until it runs."""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path
from typing import Any

from posefleet.common.cli import parse_size, positive_float, positive_int, report
from posefleet.common.errors import PosefleetError
from posefleet.node.server.cli import add_precision_flag


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="FPS and latency of one model, or --all asset models")
    p.add_argument("--model", type=Path)
    p.add_argument("--all", action="store_true", help="every model in $POSEFLEET_ASSETS at its benchmark sizes")
    p.add_argument("--device", default="CPU")
    p.add_argument("--input-size", type=parse_size)
    add_precision_flag(p)
    p.add_argument("--image", type=Path, help="frame to run (default: an asset photo, else noise)")
    p.add_argument("--frames", type=positive_int, help="most frames per measurement (default 200; --node: 100000)")
    p.add_argument("--seconds", type=positive_float, help="time budget per measurement (default 8; --node: 6)")
    p.add_argument("--rounds", type=positive_int, default=3, help="--node: alternating raw/node rounds (median)")
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    p.add_argument("--chart", type=Path, help="PNG bar chart")
    p.add_argument("--node", action="store_true", help="node throughput over EstimateStream vs raw async inference")
    p.add_argument(
        "--legacy-python",
        help="what the legacy-OpenVINO worker (NCS2 path) under this interpreter costs per frame against in-process",
    )
    p.add_argument(
        "--int8-ceiling",
        action="store_true",
        help="what INT8 gains here: synthetic 1x1 and depthwise convolutions in f32, the default precision and INT8 "
        "(with --all also PoseNet FP16 against its NNCF INT8 twin)",
    )
    p.add_argument(
        "--loadgen",
        type=Path,
        help="--node: the compiled load generator (`make loadgen`; default $POSEFLEET_LOADGEN, else the Python client)",
    )
    p.set_defaults(func=cmd_bench)


def _bench_image(args: argparse.Namespace) -> Any:
    import numpy as np
    from posefleet.common.paths import assets_dir
    from posefleet.node.tools import media

    if args.image:
        return media.read_image(args.image)
    assets = assets_dir(required=False)
    if assets and (assets / "video" / "pose.jpg").exists():
        return media.read_image(assets / "video" / "pose.jpg")
    return np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)


def cmd_bench(args: argparse.Namespace) -> int:
    from posefleet.bench.models import BenchResult, bench_model, chart, markdown_table
    from posefleet.common.paths import assets_dir
    from posefleet.node.convert import Precision, convert
    from posefleet.node.engine.ov_compat import Core
    from posefleet.node.engine.runtime import device_precision
    from posefleet.node.tools.asset_models import ASSET_MODELS

    image = _bench_image(args)
    if args.legacy_python:
        return _bench_legacy(args, image)
    if args.node:
        return _bench_node(args, image)
    if args.int8_ceiling:
        return _bench_int8_ceiling(args, image)
    results: list[BenchResult] = []
    frames, seconds = args.frames or 200, args.seconds or 8.0
    if args.all:
        assets = assets_dir()
        assert assets is not None
        # The default (accuracy first: f32 on CPUs) and, where the device has a faster one (bf16), that too.
        fast = device_precision(Core(), args.device) if args.device.upper().startswith("CPU") else ""
        inferences: list[Any] = [None] if fast in ("", "f32") else [None, fast]
        if args.inference_precision:
            inferences = [args.inference_precision]
        with tempfile.TemporaryDirectory(prefix="posefleet-bench-") as tmp:
            calibration = [assets / "images", assets / "video" / "pose_1.mp4"]
            for label, asset in ASSET_MODELS.items():
                variants: list[tuple[Path, Precision]] = [(Path(tmp) / label, "FP16")]
                if asset.int8:  # and its NNCF INT8 twin, calibrated on the assets' photos and clip
                    variants.append((Path(tmp) / f"{label}-int8", "INT8"))
                for model_dir, precision in variants:
                    convert(assets / asset.path, model_dir, precision=precision, calibration=calibration)
                    for size, inference in itertools.product(asset.bench_sizes, inferences):
                        results.append(
                            bench_model(
                                model_dir,
                                image,
                                device=args.device,
                                input_size=size,
                                frames=frames,
                                seconds=seconds,
                                inference_precision=inference,
                            )
                        )
                        print(markdown_table(results[-1:]).splitlines()[-1], flush=True)
    elif args.model:
        results.append(
            bench_model(
                args.model,
                image,
                device=args.device,
                input_size=args.input_size,
                frames=frames,
                seconds=seconds,
                inference_precision=args.inference_precision,
            )
        )
    else:
        raise PosefleetError("bench needs --model DIR or --all")
    report(args, markdown_table(results), [r.to_dict() for r in results])
    if args.chart:
        chart(results, args.chart)
    return 0


def _bench_legacy(args: argparse.Namespace, image: Any) -> int:
    from posefleet.bench.models import legacy_hop

    if args.model is None:
        raise PosefleetError("bench --legacy-python needs --model DIR")
    r = legacy_hop(
        args.model,
        image,
        args.legacy_python,
        device=args.device,
        input_size=args.input_size,
        frames=args.frames or 300,
        seconds=args.seconds or 8.0,
        rounds=args.rounds,
    )
    text = (
        f"{r['model_id']} at {r['input_size']}, one frame at a time with decoding, p50 (median of {args.rounds} "
        f"alternating rounds): in-process {r['p50_ms']['in-process']:.2f} ms, through the worker "
        f"({r['worker']}) {r['p50_ms']['worker']:.2f} ms: the hop costs {r['hop_ms']:.2f} ms per frame\n"
    )
    report(args, text, r)
    return 0


def _bench_int8_ceiling(args: argparse.Namespace, image: Any) -> int:
    from posefleet.bench.precision import (
        CeilingRow,
        device_line,
        markdown_table,
        measure_models,
        measure_synthetic,
    )
    from posefleet.common.paths import assets_dir
    from posefleet.node.convert import convert
    from posefleet.node.tools.asset_models import ASSET_MODELS

    frames, seconds = args.frames or 100_000, args.seconds or 4.0
    rows: list[CeilingRow] = []
    for kind in ("pointwise", "depthwise"):
        rows.append(measure_synthetic(kind, frames=frames, seconds=seconds))
        print(markdown_table(rows[-1:]).splitlines()[-1], flush=True)
    if args.all:
        assets = assets_dir()
        assert assets is not None
        calibration = [assets / "images", assets / "video" / "pose_1.mp4"]
        with tempfile.TemporaryDirectory(prefix="posefleet-bench-") as tmp:
            for label, asset in ASSET_MODELS.items():
                if not asset.int8:
                    continue
                float_dir, int8_dir = Path(tmp) / label, Path(tmp) / f"{label}-int8"
                convert(assets / asset.path, float_dir, precision="FP16")
                convert(assets / asset.path, int8_dir, precision="INT8", calibration=calibration)
                for size in asset.bench_sizes:
                    rows.append(measure_models(float_dir, int8_dir, image, size, frames=frames, seconds=seconds))
                    print(markdown_table(rows[-1:]).splitlines()[-1], flush=True)
    report(args, markdown_table(rows) + "\n", {"device": device_line(), "rows": [r.to_dict() for r in rows]})
    return 0


def _bench_node(args: argparse.Namespace, image: Any) -> int:
    from posefleet.bench.loadgen import find_loadgen
    from posefleet.bench.node import NodeBenchResult, bench_node, markdown_table
    from posefleet.common.paths import assets_dir
    from posefleet.node.convert import convert
    from posefleet.node.tools.asset_models import ASSET_MODELS

    results: list[NodeBenchResult] = []
    frames, seconds = args.frames or 100_000, args.seconds or 6.0
    loadgen = find_loadgen(args.loadgen)

    def measure(model_dir: Path, size: tuple[int, int] | None) -> NodeBenchResult:
        return bench_node(model_dir, image, size, frames=frames, seconds=seconds, rounds=args.rounds, loadgen=loadgen)

    if args.all:
        assets = assets_dir()
        assert assets is not None
        with tempfile.TemporaryDirectory(prefix="posefleet-bench-") as tmp:
            for label, asset in ASSET_MODELS.items():
                if not asset.node_bench_sizes:
                    continue
                convert(assets / asset.path, Path(tmp) / label)
                for size in asset.node_bench_sizes:
                    results.append(measure(Path(tmp) / label, size))
                    print(markdown_table(results[-1:]).splitlines()[-1], flush=True)
    elif args.model:
        results.append(measure(args.model, args.input_size))
    else:
        raise PosefleetError("bench --node needs --model DIR or --all")
    report(args, markdown_table(results), [r.to_dict() for r in results])
    return 0
