"""``posefleet subscribe``: a scene's 3D people (or cameras' merged results) as JSON lines, one per window."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from posefleet.clients.sdk import PosefleetClient, scene_to_dict
from posefleet.common import tls
from posefleet.common.cli import positive_float, positive_int


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("subscribe", help="write a scene's fused 3D people (or cameras' merged results) as JSONL")
    p.add_argument("--coordinator", required=True, metavar="HOST:PORT")
    p.add_argument("--scene", help="a calibrated scene of the coordinator: one 3D window per line")
    p.add_argument(
        "--camera",
        action="append",
        default=[],
        dest="cameras",
        metavar="ID",
        help="without --scene: cameras whose results are merged by capture time (default all)",
    )
    p.add_argument("--window-ms", type=positive_int, default=0, help="without --scene: grouping window")
    p.add_argument("--jsonl", type=Path, help="output file (default: standard output)")
    p.add_argument("--count", type=positive_int, help="stop after this many windows")
    p.add_argument("--seconds", type=positive_float, help="stop after this long")
    tls.add_arguments(p)
    p.set_defaults(func=cmd_subscribe)


async def _subscribe(args: argparse.Namespace, out: Any) -> int:
    written = 0
    deadline = time.monotonic() + args.seconds if args.seconds else None
    async with PosefleetClient(args.coordinator, tls=tls.from_args(args, "posefleet subscribe")) as client:
        stream = client.subscribe_scene(args.scene) if args.scene else client.subscribe(args.cameras, args.window_ms)

        async def consume() -> None:
            nonlocal written
            async for message in stream:
                line = scene_to_dict(message) if args.scene else MessageToDict(message)  # type: ignore[arg-type]
                out.write(json.dumps(line) + "\n")
                out.flush()
                written += 1
                if args.count and written >= args.count:
                    return

        timeout = max(0.0, deadline - time.monotonic()) if deadline else None
        with contextlib.suppress(TimeoutError):  # --seconds ran out
            await asyncio.wait_for(consume(), timeout)
    return written


def cmd_subscribe(args: argparse.Namespace) -> int:
    out = args.jsonl.open("w") if args.jsonl else sys.stdout
    try:
        written = asyncio.run(_subscribe(args, out))
    finally:
        if args.jsonl:
            out.close()
    print(f"posefleet subscribe: {written} windows", file=sys.stderr)
    return 0
