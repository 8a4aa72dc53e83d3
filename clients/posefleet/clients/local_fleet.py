"""A fleet on this machine's loopback: nodes and a coordinator started as ``posefleet`` processes on
127.0.0.1 (any free port), zeroconf bound to 127.0.0.1 (the demos, the cluster benchmark, the tests)."""

from __future__ import annotations

from pathlib import Path

from posefleet.common.processes import PosefleetProcess, start_posefleet
from posefleet.common.tls import TlsFiles

_LOOPBACK = ["--host", "127.0.0.1", "--port", "0", "--zeroconf-interface", "127.0.0.1"]


def start_node(
    model: Path,
    name: str | None,
    log: Path | None,
    *extra: str,
    tls: TlsFiles | None,
    timeout: float = 90,
    command: list[str] | None = None,
) -> PosefleetProcess:
    """A node on 127.0.0.1 (any free port) with zeroconf bound to 127.0.0.1 (``tls``: a node certificate
    named ``name``; ``command``: as ``start_posefleet``'s)."""
    named = ["--name", name] if name else []
    args = ["node", "--model", str(model), *_LOOPBACK, *named, *extra]
    return start_posefleet(args, tls=tls, log=log, timeout=timeout, command=command)


def start_coordinator(log: Path | None, *extra: str, tls: TlsFiles | None, timeout: float = 90) -> PosefleetProcess:
    """A coordinator on 127.0.0.1 (any free port) with zeroconf bound to 127.0.0.1."""
    return start_posefleet(["coordinator", *_LOOPBACK, *extra], tls=tls, log=log, timeout=timeout)
