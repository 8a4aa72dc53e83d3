"""``posefleet demo``: the README's first command, a whole cluster on this machine.

It fetches the model and the sample clip through the models fetch/mirror mechanism (the assets
folder as a ``file://`` mirror when $POSEFLEET_ASSETS is set, the official URLs otherwise), starts
two nodes and a coordinator as separate processes on 127.0.0.1 with zeroconf bound to 127.0.0.1,
waits until the coordinator has discovered both nodes, streams the clip as one or more cameras
(resized to the model input on the camera side), writes an annotated video and a JSONL of results
per camera, prints per-camera FPS and per-node load, stops everything and exits.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from posefleet.clients.demo_fleet import ADMIN, DEMO_INPUT, demo_fleet, demo_model, sample_video
from posefleet.clients.local_fleet import start_coordinator, start_node
from posefleet.common.processes import PosefleetProcess, stop_all
from posefleet.common.tls import TlsFiles


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run a local cluster (coordinator + 2 nodes) on the sample clip and exit")
    p.add_argument("--source", help="video file or camera (default: the sample clip)")
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder (default ./demo-out)")
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--cameras", type=int, default=1, help="stream the source as this many cameras")
    p.add_argument("--device", default="CPU")
    p.add_argument(
        "--scene",
        action="store_true",
        help="the calibrated 4-camera lab scene of the assets, fused live into 3D people",
    )
    p.set_defaults(func=run_demo)


async def _wait_nodes(address: str, count: int, tls: TlsFiles) -> None:
    from posefleet.clients.sdk import PosefleetClient

    async with PosefleetClient(address, tls=tls) as client:
        await client.wait_for_nodes(count)


async def _stream(address: str, source: str, cameras: int, out: Path, fleet: dict[str, TlsFiles]) -> list[str]:
    from posefleet.clients.camera import CameraClient, CameraOptions
    from posefleet.clients.sdk import PosefleetClient
    from posefleet.clients.status import format_stats

    clients = [
        CameraClient(
            CameraOptions(
                coordinator=address,
                source=source,
                camera_id=f"demo-cam{i}",
                tls=fleet[f"demo-cam{i}"],
                resize_to_model=True,
                jsonl=out / f"demo-cam{i}.jsonl",
                render=out / f"demo-cam{i}.mp4",
                stats_every_s=2.0,
            )
        )
        for i in range(cameras)
    ]
    reports = await asyncio.gather(*(c.run() for c in clients))
    lines = [r.line(c.o.camera_id) for c, r in zip(clients, reports, strict=True)]
    async with PosefleetClient(address, tls=fleet[ADMIN]) as client:
        stats = await client.stats()
    lines.append(format_stats(address, stats))
    unanswered = sum(r.sent - r.answered for r in reports)
    if unanswered:
        raise RuntimeError(f"{unanswered} frames got no result")
    return lines


def run_demo(args: argparse.Namespace) -> int:
    model_dir = demo_model()
    if args.scene:
        from posefleet.clients.scene_demo import run_scene_demo

        return run_scene_demo(args.out, model_dir, args.nodes, args.device)
    source = args.source or sample_video()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    nodes = [f"demo-node-{i}" for i in range(args.nodes)]
    fleet = demo_fleet(out / "pki", nodes, [f"demo-cam{i}" for i in range(args.cameras)])
    procs: list[PosefleetProcess] = []
    try:
        coordinator = start_coordinator(out / "coordinator.log", tls=fleet["coordinator"])
        procs.append(coordinator)
        for node in nodes:
            extra = ("--input-size", DEMO_INPUT, "--device", args.device)
            procs.append(start_node(model_dir, node, out / f"{node}.log", *extra, tls=fleet[node]))
        address = f"127.0.0.1:{coordinator.port}"
        print(
            f"coordinator on {address}, {args.nodes} nodes starting (zeroconf on 127.0.0.1); "
            f"mutual TLS with a throwaway fleet CA in {out / 'pki'}"
        )
        asyncio.run(_wait_nodes(address, args.nodes, fleet[ADMIN]))
        lines = asyncio.run(_stream(address, source, args.cameras, out, fleet))
        print("\n".join(lines))
        print(f"wrote {', '.join(sorted(p.name for p in out.glob('demo-cam*')))} in {out}")
    finally:
        stop_all(procs)
    return 0
