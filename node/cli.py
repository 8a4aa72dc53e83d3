"""CLI subcommands owned by the node package: convert, models, pose, eval, bench."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from posefleet.node.models.posenet_decoder import PoseNetDecodeParams

# Errors a user can cause: reported as one line and exit status 2, never as a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = ()


def _user_errors() -> tuple[type[BaseException], ...]:
    from posefleet.node.engine import EngineError
    from posefleet.node.loadgen import LoadgenError
    from posefleet.node.media import MediaError
    from posefleet.node.models.card import CardError
    from posefleet.node.models.convert import ConversionError
    from posefleet.node.models.fetch import FetchError

    return (
        ConversionError, CardError, EngineError, FetchError, LoadgenError, MediaError, FileNotFoundError, ValueError,
    )  # fmt: skip


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number above 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def parse_size(text: str) -> tuple[int, int]:
    """``HxW`` -> (height, width)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 353x481, got {text!r}") from None
    if h <= 0 or w <= 0 or h > 8192 or w > 8192:
        raise argparse.ArgumentTypeError(f"input size {text} is out of range (1..8192 per side)")
    return h, w


def _size_or_native(text: str) -> tuple[int, int] | str:
    return "native" if text == "native" else parse_size(text)


def _add_decode_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("decoding")
    g.add_argument("--single", action="store_true", help="PoseNet single-person decoding")
    g.add_argument("--max-poses", type=int, default=10, help="at most this many poses per frame (default 10)")
    g.add_argument("--threshold", type=float, default=0.5, help="PoseNet root part score threshold (default 0.5)")
    g.add_argument("--nms-radius", type=float, default=20.0, help="PoseNet NMS radius in input pixels (default 20)")


def _engine_flags(p: argparse.ArgumentParser, *, native: bool) -> None:
    p.add_argument("--model", required=True, type=Path, help="converted model directory (posefleet convert)")
    p.add_argument("--device", default="CPU", help="OpenVINO device: CPU, GPU, NPU, AUTO (MYRIAD on 2022.3)")
    help_size = "network input HxW" + (" or 'native' (nearest valid size to each image)" if native else "")
    p.add_argument("--input-size", type=_size_or_native if native else parse_size, default=None, help=help_size)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("convert", help="convert a PoseNet/OpenPose model to OpenVINO IR with a model card")
    p.add_argument("source", type=Path, help=".pb frozen graph, tfjs checkpoint dir, .tflite, or OpenVINO .xml/dir")
    p.add_argument("-o", "--outdir", required=True, type=Path)
    p.add_argument("--input-size", type=parse_size, help="fix the input to HxW (PoseNet: k*stride+1)")
    p.add_argument("--stride", type=int, choices=(8, 16, 32), help="PoseNet output stride (tfjs checkpoints)")
    p.add_argument("--precision", choices=("FP16", "FP32"), default="FP16")
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
    _add_decode_flags(p)
    p.set_defaults(func=cmd_pose)

    p = sub.add_parser("eval", help="COCO keypoint AP/AR with pycocotools")
    _engine_flags(p, native=True)
    p.add_argument("--coco-annotations", required=True, type=Path)
    p.add_argument("--images", required=True, type=Path)
    p.add_argument("--detections-out", type=Path)
    p.add_argument("--json", type=Path, help="write the summary stats as JSON")
    _add_decode_flags(p)
    p.set_defaults(func=cmd_eval, input_size="native", threshold=0.5, max_poses=20)

    p = sub.add_parser("bench", help="FPS and latency of one model, or --all asset models")
    p.add_argument("--model", type=Path)
    p.add_argument("--all", action="store_true", help="every model in $POSEFLEET_ASSETS at its benchmark sizes")
    p.add_argument("--device", default="CPU")
    p.add_argument("--input-size", type=parse_size)
    p.add_argument("--image", type=Path, help="frame to run (default: an asset photo, else noise)")
    p.add_argument("--frames", type=positive_int, help="most frames per measurement (default 200; --node: 100000)")
    p.add_argument("--seconds", type=positive_float, help="time budget per measurement (default 8; --node: 6)")
    p.add_argument("--rounds", type=positive_int, default=3, help="--node: alternating raw/node rounds (median)")
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    p.add_argument("--chart", type=Path, help="PNG bar chart")
    p.add_argument("--node", action="store_true", help="node throughput over EstimateStream vs raw async inference")
    p.add_argument(
        "--loadgen", type=Path,
        help="--node: the compiled load generator (`make loadgen`; default $POSEFLEET_LOADGEN, else the Python client)",
    )  # fmt: skip
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("node", help="serve pose inference over gRPC and advertise it with zeroconf")
    p.add_argument("--config", type=Path, help="TOML/JSON settings file (flags and POSEFLEET_NODE_* env override it)")
    p.add_argument("--model", type=Path, help="converted model directory")
    p.add_argument("--device", help="OpenVINO device (default CPU)")
    p.add_argument("--input-size", type=parse_size, help="network input HxW (dynamic PoseNet models)")
    p.add_argument("--host", help="bind address (default 0.0.0.0)")
    p.add_argument("--port", type=int, help="gRPC port (default 50051, 0 = any free port)")
    p.add_argument("--name", help="node id (default <hostname>-<port>)")
    p.add_argument("--max-inflight", type=int, help="frames in flight before RESOURCE_EXHAUSTED")
    p.add_argument("--zeroconf-interface", action="append", dest="zeroconf_interfaces", metavar="IP",
                   help="bind zeroconf to this address (repeatable; default all interfaces)")  # fmt: skip
    p.add_argument("--advertise-address", action="append", dest="advertise_addresses", metavar="IP")
    p.add_argument("--no-advertise", action="store_false", dest="advertise", default=None)
    p.add_argument("--metrics-port", type=int, help="Prometheus /metrics port (0 = any free port)")
    p.add_argument("--metrics-host", help="Prometheus bind address (default 127.0.0.1)")
    sim = p.add_argument_group("simulated accelerator (cluster scale benchmark only; never a default)")
    sim.add_argument("--backend", choices=("openvino", "simulated-accelerator"))
    sim.add_argument("--sim-latency-ms", type=float, help="fixed inference time per frame (33.3 = an NCS at 30 FPS)")
    sim.add_argument("--sim-parallel", type=int, help="simulated devices working at once")
    sim.add_argument("--sim-record", type=Path, help="recorded model outputs (.npz) decoded for every frame")
    sim.add_argument("--sim-no-decode", action="store_false", dest="sim_decode", default=None)
    p.set_defaults(func=cmd_node)


def _engine(args: argparse.Namespace) -> Any:
    from posefleet.node.engine import EngineOptions, NativeResolutionEngine, PoseEngine

    params = PoseNetDecodeParams(
        multi_person=not args.single,
        max_poses=args.max_poses,
        score_threshold=args.threshold,
        nms_radius=args.nms_radius,
    )
    if args.input_size == "native":
        return NativeResolutionEngine(args.model, EngineOptions(device=args.device, posenet=params))
    return PoseEngine(args.model, EngineOptions(device=args.device, input_size=args.input_size, posenet=params))


def cmd_convert(args: argparse.Namespace) -> int:
    from posefleet.node.models.convert import convert

    card = convert(args.source, args.outdir, input_size=args.input_size, stride=args.stride,
                   precision=args.precision, log=print)  # fmt: skip
    print(f"{card.model_id}: family {card.family}, input {card.input.size or 'dynamic'}, stride {card.output_stride}")
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from posefleet.node.models.fetch import CATALOG

    for entry in CATALOG.values():
        print(f"{entry.name:32} {entry.description}")
    return 0


def cmd_models_fetch(args: argparse.Namespace) -> int:
    from posefleet.node.models.fetch import CATALOG, fetch, fetch_sample

    if args.name in CATALOG and CATALOG[args.name].kind == "sample":
        print(f"ready: {fetch_sample(args.name, mirror=args.mirror)}")
        return 0
    card = fetch(args.name, args.outdir, mirror=args.mirror, precision=args.precision, stride=args.stride,
                 input_size=args.input_size, log=print)  # fmt: skip
    print(f"ready: {card.model_id}")
    return 0


def cmd_pose(args: argparse.Namespace) -> int:
    import cv2
    from posefleet.node import media
    from posefleet.node.render import draw_poses

    engine = _engine(args)
    report: dict[str, Any] = {"model": engine.card.model_id, "inputs": []}
    if args.render:
        args.render.mkdir(parents=True, exist_ok=True)
    for path in args.inputs:
        entry: dict[str, Any] = {"path": str(path), "frames": []}
        writer = None
        for index, frame in enumerate(media.frames(path)):
            result = engine.infer(frame)
            entry["frames"].append({"index": index, "poses": [p.to_dict() for p in result.poses]})
            if args.render:
                drawn = draw_poses(frame, result.poses)
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
    from posefleet.node.coco_eval import evaluate

    report = evaluate(_engine(args), args.coco_annotations, args.images)
    print(report.summary, end="")
    print(f"{args.model}: AP {report.stats['AP']:.3f}  AP50 {report.stats['AP50']:.3f}  AR {report.stats['AR']:.3f}"
          f"  ({report.images} images, {len(report.detections)} detections)")  # fmt: skip
    if args.detections_out:
        args.detections_out.write_text(json.dumps(report.detections) + "\n")
    if args.json:
        args.json.write_text(json.dumps({"model": str(args.model), **report.stats}, indent=2) + "\n")
    return 0


#: Asset models benchmarked by ``bench --all``: (label, path below assets, bench input sizes).
ASSET_BENCH: tuple[tuple[str, str, tuple[tuple[int, int] | None, ...]], ...] = (
    ("posenet-050", "models/posenet/mobilenet_v1_050/model-mobilenet_v1_050.pb", ((257, 257), (353, 481))),
    ("posenet-075", "models/posenet/tfjs_v1/mobilenet_v1_075", ((257, 257), (353, 481))),
    (
        "posenet-075-tflite-353",
        "models/posenet/coral_tflite/posenet_mobilenet_v1_075_353_481_quant.tflite",
        (None,),
    ),
    (
        "posenet-075-tflite-481",
        "models/posenet/coral_tflite/posenet_mobilenet_v1_075_481_641_quant.tflite",
        (None,),
    ),
    ("hpe-0001", "models/human-pose-estimation-0001/FP16-INT8", (None,)),
)


def _bench_image(args: argparse.Namespace) -> Any:
    import numpy as np
    from posefleet.node import media
    from posefleet.node.assets import assets_dir

    if args.image:
        return media.read_image(args.image)
    assets = assets_dir(required=False)
    if assets and (assets / "video" / "pose.jpg").exists():
        return media.read_image(assets / "video" / "pose.jpg")
    return np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)


def cmd_bench(args: argparse.Namespace) -> int:
    from posefleet.node.assets import assets_dir
    from posefleet.node.bench import BenchResult, bench_model, chart, markdown_table
    from posefleet.node.models.convert import convert

    image = _bench_image(args)
    if args.node:
        return _bench_node(args, image)
    results: list[BenchResult] = []
    frames, seconds = args.frames or 200, args.seconds or 8.0
    if args.all:
        assets = assets_dir()
        assert assets is not None
        with tempfile.TemporaryDirectory(prefix="posefleet-bench-") as tmp:
            for label, rel, sizes in ASSET_BENCH:
                model_dir = Path(tmp) / label
                convert(assets / rel, model_dir)
                for size in sizes:
                    results.append(bench_model(model_dir, image, device=args.device, input_size=size,
                                               frames=frames, seconds=seconds))  # fmt: skip
                    print(markdown_table(results[-1:]).splitlines()[-1], flush=True)
    elif args.model:
        results.append(bench_model(args.model, image, device=args.device, input_size=args.input_size,
                                   frames=frames, seconds=seconds))  # fmt: skip
    else:
        raise ValueError("bench needs --model DIR or --all")
    _report(args, markdown_table(results), [r.to_dict() for r in results])
    if args.chart:
        chart(results, args.chart)
    return 0


def _report(args: argparse.Namespace, table: str, rows: list[dict[str, Any]]) -> None:
    """Print a benchmark table and write it (--markdown) and its rows (--json)."""
    print(table, end="")
    if args.markdown:
        args.markdown.write_text(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


#: Node benchmark matrix of ``bench --all --node`` (issue: PoseNet 0.50/0.75 at 257x257 and 353x481, hpe-0001).
NODE_BENCH = (
    ("posenet-050", ((257, 257), (353, 481))),
    ("posenet-075", ((257, 257), (353, 481))),
    ("hpe-0001", (None,)),
)


def _bench_node(args: argparse.Namespace, image: Any) -> int:
    from posefleet.node.assets import assets_dir
    from posefleet.node.bench_node import NodeBenchResult, bench_node, markdown_table
    from posefleet.node.loadgen import find_loadgen
    from posefleet.node.models.convert import convert

    results: list[NodeBenchResult] = []
    frames, seconds = args.frames or 100_000, args.seconds or 6.0
    loadgen = find_loadgen(args.loadgen)

    def measure(model_dir: Path, size: tuple[int, int] | None) -> NodeBenchResult:
        return bench_node(model_dir, image, size, frames=frames, seconds=seconds, rounds=args.rounds, loadgen=loadgen)

    if args.all:
        assets = assets_dir()
        assert assets is not None
        sources = {label: rel for label, rel, _ in ASSET_BENCH}
        with tempfile.TemporaryDirectory(prefix="posefleet-bench-") as tmp:
            for label, sizes in NODE_BENCH:
                convert(assets / sources[label], Path(tmp) / label)
                for size in sizes:
                    results.append(measure(Path(tmp) / label, size))
                    print(markdown_table(results[-1:]).splitlines()[-1], flush=True)
    elif args.model:
        results.append(measure(args.model, args.input_size))
    else:
        raise ValueError("bench --node needs --model DIR or --all")
    _report(args, markdown_table(results), [r.to_dict() for r in results])
    return 0


def cmd_node(args: argparse.Namespace) -> int:
    import asyncio

    from posefleet.node.config import NodeSettings
    from posefleet.node.server import serve
    from pydantic import ValidationError

    flags = {k: getattr(args, k) for k in NodeSettings.model_fields if hasattr(args, k)}
    try:
        settings = NodeSettings.from_sources(args.config, **flags)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"invalid node settings: {problems}") from None
    return asyncio.run(serve(settings))


def run(args: argparse.Namespace) -> int:
    """Run a parsed subcommand, turning user errors into one-line messages."""
    try:
        return int(args.func(args))
    except _user_errors() as exc:
        print(f"posefleet {args.command}: error: {exc}", file=sys.stderr)
        return 2
