"""``posefleet coordinator``."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from posefleet.common import tls


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("coordinator", help="discover nodes, balance camera frames across them, merge results")
    p.add_argument("--config", type=Path, help="TOML/JSON settings (flags and POSEFLEET_COORDINATOR_* env override)")
    p.add_argument("--host", help="bind address (default 0.0.0.0)")
    p.add_argument("--port", type=int, help="gRPC port (default 50050, 0 = any free port)")
    p.add_argument("--zeroconf-interface", action="append", dest="zeroconf_interfaces", metavar="IP")
    p.add_argument("--node", action="append", dest="nodes", metavar="HOST:PORT", help="static node (repeatable)")
    p.add_argument("--no-discovery", action="store_false", dest="discover", default=None)
    p.add_argument("--camera-queue", type=int, help="frames a camera may have waiting (default 4)")
    p.add_argument("--drop-policy", choices=("drop-oldest", "block"))
    p.add_argument("--metrics-port", type=int)
    p.add_argument("--metrics-host")
    p.add_argument("--http-port", type=int, help="serve the web dashboard on this port (0 = any free port)")
    p.add_argument("--http-host", help="dashboard bind address (default 127.0.0.1)")
    p.add_argument(
        "--mqtt",
        metavar="URL",
        help="publish results to an MQTT broker: mqtts://[USER@]HOST[:PORT] (password: "
        "--mqtt-password-file or $POSEFLEET_COORDINATOR_MQTT_PASSWORD)",
    )
    p.add_argument("--mqtt-password-file", type=Path, metavar="FILE", help="the MQTT password (a file of mode 0600)")
    p.add_argument("--mqtt-insecure", action="store_true", default=None, help="allow mqtt:// to another host")
    p.add_argument("--mqtt-ca", type=Path, metavar="FILE", help="mqtts: the broker's CA (default: the fleet CA)")
    p.add_argument("--mqtt-prefix", help="MQTT topic prefix (default posefleet)")
    p.add_argument("--mqtt-discovery", action="store_true", default=None, help="Home Assistant MQTT discovery")
    tls.add_arguments(p)
    p.set_defaults(func=cmd_coordinator)


def cmd_coordinator(args: argparse.Namespace) -> int:
    from posefleet.coordinator.server import serve
    from posefleet.coordinator.settings import CoordinatorSettings

    return asyncio.run(serve(CoordinatorSettings.from_args(args)))
