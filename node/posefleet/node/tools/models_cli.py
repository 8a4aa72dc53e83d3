"""``posefleet models list|fetch``: the official models fetch knows, downloaded (or from a mirror) and converted."""

from __future__ import annotations

import argparse
from pathlib import Path

from posefleet.common.cli import parse_size


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
