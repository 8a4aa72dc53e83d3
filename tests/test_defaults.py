"""The documented defaults start: a node and a coordinator with no interface option find each other by mDNS.

They run inside a network namespace this test creates (loopback and a veth pair with both ends inside), so the mDNS they
send on "all interfaces" never leaves it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def namespace() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root with iproute2 (make system-deps)")
        pytest.skip("needs root and iproute2 for a network namespace")
    name = f"pf-defaults-{os.getpid()}"
    _ip("netns", "add", name)
    try:
        # A veth pair with both ends inside plays the machine's LAN: whatever is sent on it stays here.
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "link", "add", "lan0", "type", "veth", "peer", "name", "lan1")
        _ip("-n", name, "addr", "add", "198.18.7.1/24", "dev", "lan0")
        _ip("-n", name, "link", "set", "lan0", "up")
        _ip("-n", name, "link", "set", "lan1", "up")
        _ip("-n", name, "route", "add", "224.0.0.0/4", "dev", "lan0")
        yield name
    finally:
        for pid in subprocess.run(
            ["ip", "netns", "pids", name], capture_output=True, text=True, check=False
        ).stdout.split():
            subprocess.run(["kill", "-9", pid], check=False)
        subprocess.run(["ip", "netns", "delete", name], check=False)


def test_node_and_coordinator_with_default_interfaces_discover_each_other(
    namespace: str, models: dict[str, Path], assets: Path
) -> None:
    """No --zeroconf-interface, --host or --port: the node advertises its LAN address on every interface, the
    coordinator browses every interface, finds it and routes frames to it (python-zeroconf 0.154 rejected the
    ``None`` interface choice these defaults used to pass)."""
    script = [
        sys.executable,
        str(HERE / "netns_defaults.py"),
        str(models["posenet050"]),
        str(assets / "video/pose.jpg"),
    ]
    done = subprocess.run(
        ["ip", "netns", "exec", namespace, *script],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=os.environ.copy(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert [(address, source) for _, address, source in report["nodes"]] == [("198.18.7.1:50051", "zeroconf")]
    assert report["statuses"] == [1] * 5 and all(n >= 1 for n in report["poses"])
    assert "Traceback" not in report["node_log"]
