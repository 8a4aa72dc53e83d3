"""The ``posefleet`` command: the one place that assembles every package's subcommands (a package of its own,
which nothing imports: the composition root).

Each subcommand lives with its package (``register(sub)`` in a module that imports only argparse and
``posefleet.common``), so the parser builds on a camera machine without OpenVINO; a user error of any
subcommand (``PosefleetError``) is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from posefleet.common.cli import run
from posefleet.common.version import software_version


def build_parser() -> argparse.ArgumentParser:
    from posefleet.bench import calibration as bench_calibration
    from posefleet.bench import cli as bench_cli
    from posefleet.bench import cluster as bench_cluster
    from posefleet.bench import merge as bench_merge
    from posefleet.bench import scene as bench_scene
    from posefleet.clients import calibrate_scene, camera, demo, status, subscribe
    from posefleet.common import pki
    from posefleet.coordinator import cli as coordinator_cli
    from posefleet.node.server import cli as node_cli
    from posefleet.node.tools import calibrate, convert_cli, estimate_cli, fuse, models_cli

    parser = argparse.ArgumentParser(
        prog="posefleet", description="Real-time human pose estimation on fleets of edge machines."
    )
    parser.add_argument("--version", action="version", version=f"posefleet {software_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (
        convert_cli,
        models_cli,
        estimate_cli,
        fuse,
        calibrate,
        bench_scene,
        bench_calibration,
        node_cli,
        coordinator_cli,
        bench_merge,
        camera,
        status,
        subscribe,
        calibrate_scene,
        demo,
        bench_cluster,
        bench_cli,
        pki,
    ):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    return run(args)


def console() -> None:
    """Console-script entry point."""
    sys.exit(main())
