"""``posefleet calibrate-scene``: a running coordinator calibrates one of its scenes from the people in it.

The coordinator records the scene's next windows while it goes on routing, places every camera from the
people they show (``posefleet calibrate people``'s algorithm) and answers with the calibration TOML, which
this writes. Needs an admin certificate on a closed fleet.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from posefleet.clients.sdk import PosefleetClient
from posefleet.common import tls
from posefleet.common.cli import positive_float, positive_int


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("calibrate-scene", help="calibrate a live scene's cameras from the people in it (admin)")
    p.add_argument("--coordinator", required=True, metavar="HOST:PORT")
    p.add_argument("--scene", required=True)
    p.add_argument("--windows", type=positive_int, default=300, help="windows of the scene to record")
    p.add_argument("--person-height", type=positive_float, default=1.75, help="the people's mean height, metres")
    p.add_argument("--timeout", type=positive_float, default=120.0, help="seconds to wait for the windows")
    p.add_argument(
        "--refine",
        action="store_true",
        help="adjust the scene's own calibration on the people instead (its world frame and scale kept)",
    )
    p.add_argument(
        "--keep-centres",
        action="store_true",
        help="with --refine: the cameras stay where the scene's calibration puts them and only turn (fixed "
        "mounts, knocked or turned since)",
    )
    p.add_argument("--out", required=True, type=Path, help="the calibration TOML to write")
    tls.add_arguments(p)
    p.set_defaults(func=cmd_calibrate_scene)


async def _calibrate(args: argparse.Namespace) -> int:
    async with PosefleetClient(args.coordinator, tls=tls.from_args(args, "posefleet calibrate-scene")) as client:
        reply = await client.calibrate_scene(
            args.scene,
            args.windows,
            args.person_height,
            args.timeout,
            refine=args.refine,
            keep_centres=args.keep_centres,
        )
    for cam in reply.cameras:
        if cam.placed:
            moved = ""
            if cam.HasField("given_reprojection_rms_px"):
                moved = (
                    f" (given: {cam.given_reprojection_rms_px:.1f} px); moved {cam.moved_m * 100:.1f} cm and "
                    f"{cam.turned_deg:.2f} deg"
                )
            print(
                f"{cam.camera_id} ({cam.calibration_name}): reprojection RMS {cam.reprojection_rms_px:.1f} px{moved} "
                f"over {cam.joints} joints in {cam.frames} windows"
            )
        else:
            print(f"{cam.camera_id} ({cam.calibration_name}): not placed: {cam.reason}")
    print(
        f"{reply.joints} 3D joints from {reply.windows} windows in {reply.seconds:.1f} s (people paired across "
        f"cameras by {reply.people_paired_by or 'geometry alone'}); limb lengths vary "
        f"{reply.limb_length_spread:.0%} (robust CV: a wrong geometry stretches them); {reply.world_frame}"
    )
    if reply.starts_verdict:
        print(reply.starts_verdict)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(reply.calibration_toml)
    print(f"wrote {args.out}")
    return 0 if all(c.placed for c in reply.cameras) else 1


def cmd_calibrate_scene(args: argparse.Namespace) -> int:
    import grpc

    try:
        return asyncio.run(_calibrate(args))
    except grpc.aio.AioRpcError as exc:
        print(f"posefleet calibrate-scene: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 2
