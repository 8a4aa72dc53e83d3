"""``posefleet node``: serve pose inference over gRPC and advertise it with zeroconf."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from posefleet.common import tls
from posefleet.common.cli import parse_size
from posefleet.node.devices import INFERENCE_PRECISIONS


def decode_param(text: str) -> tuple[str, object]:
    """An argparse type: ``NAME=VALUE`` of a family's decoding parameter (VALUE read as JSON, else text)."""
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE such as max_poses=5, got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def _pair(text: str) -> tuple[str, str]:
    """An argparse type: ``NAME=VALUE`` of an environment variable."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def add_decode_flag(p: argparse.ArgumentParser) -> None:
    """``--decode NAME=VALUE``: the model family's own decoding parameters, validated by the family."""
    p.add_argument(
        "--decode",
        action="append",
        type=decode_param,
        default=None,
        metavar="NAME=VALUE",
        help="decoding parameter of the model's family (repeatable), e.g. max_poses=5 or "
        "multi_person=false for PoseNet",
    )


def add_precision_flag(p: argparse.ArgumentParser) -> None:
    """``--inference-precision``: the device's inference precision instead of its own choice."""
    p.add_argument(
        "--inference-precision",
        choices=INFERENCE_PRECISIONS,
        help="the device's inference precision; bf16 is a speed choice (default: accuracy first, a CPU runs f32 "
        "unless the model card records that its own bf16 keeps the model's accuracy: convert --validate)",
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("node", help="serve pose inference over gRPC and advertise it with zeroconf")
    p.add_argument("--config", type=Path, help="TOML/JSON settings file (flags and POSEFLEET_NODE_* env override it)")
    p.add_argument("--model", type=Path, help="converted model directory")
    p.add_argument("--device", help="OpenVINO device (default CPU)")
    p.add_argument("--input-size", type=parse_size, help="network input HxW (dynamic PoseNet models)")
    add_precision_flag(p)
    add_decode_flag(p)
    p.add_argument("--host", help="bind address (default 0.0.0.0)")
    p.add_argument("--port", type=int, help="gRPC port (default 50051, 0 = any free port)")
    p.add_argument("--name", help="node id (default <hostname>-<port>); with --pki, also its certificate's name")
    p.add_argument("--max-inflight", type=int, help="frames in flight before RESOURCE_EXHAUSTED")
    p.add_argument("--infer-requests", type=int, help="infer requests, one thread each (default: 2 x the device's)")
    p.add_argument(
        "--zeroconf-interface",
        action="append",
        dest="zeroconf_interfaces",
        metavar="IP",
        help="bind zeroconf to this address (repeatable; default all interfaces)",
    )
    p.add_argument("--advertise-address", action="append", dest="advertise_addresses", metavar="IP")
    p.add_argument("--no-advertise", action="store_false", dest="advertise", default=None)
    p.add_argument("--metrics-port", type=int, help="Prometheus /metrics port (0 = any free port)")
    p.add_argument("--metrics-host", help="Prometheus bind address (default 127.0.0.1)")
    legacy = p.add_argument_group("NCS2 (MYRIAD): inference in an OpenVINO 2022.3 worker")
    legacy.add_argument("--legacy-python", help="its interpreter (Python 3.7-3.10 with openvino 2022.3)")
    legacy.add_argument(
        "--legacy-env",
        action="append",
        type=_pair,
        metavar="NAME=VALUE",
        help="extra environment of the worker (repeatable), e.g. LD_LIBRARY_PATH=/opt/intel/openvino_2022/...",
    )
    tls.add_arguments(p, name=False)
    sim = p.add_argument_group("simulated accelerator (cluster scale benchmark only; never a default)")
    sim.add_argument("--backend", choices=("openvino", "simulated-accelerator"))
    sim.add_argument("--sim-latency-ms", type=float, help="fixed inference time per frame (33.3 = an NCS at 30 FPS)")
    sim.add_argument("--sim-parallel", type=int, help="simulated devices working at once")
    sim.add_argument("--sim-record", type=Path, help="recorded model outputs (.npz, 'posefleet record-outputs')")
    p.set_defaults(func=cmd_node)


def cmd_node(args: argparse.Namespace) -> int:
    import asyncio

    from posefleet.node.server.app import serve
    from posefleet.node.server.settings import NodeSettings

    if args.decode is not None:
        args.decode = dict(args.decode)
    if args.legacy_env is not None:
        args.legacy_env = dict(args.legacy_env)
    return asyncio.run(serve(NodeSettings.from_args(args)))
