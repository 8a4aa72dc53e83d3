"""The ``posefleet`` command: one entry point, subcommands registered by each package."""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import PackageNotFoundError, version


def _version() -> str:
    try:
        return version("posefleet")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    from posefleet.clients import bench_cluster, camera, demo, status
    from posefleet.coordinator import cli as coordinator_cli
    from posefleet.node import cli as node_cli

    parser = argparse.ArgumentParser(
        prog="posefleet", description="Real-time human pose estimation on fleets of edge machines."
    )
    parser.add_argument("--version", action="version", version=f"posefleet {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    node_cli.register(sub)
    coordinator_cli.register(sub)
    camera.register(sub)
    demo.register(sub)
    bench_cluster.register(sub)
    status.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    from posefleet.node import cli as node_cli

    return node_cli.run(args)


def console() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    console()
