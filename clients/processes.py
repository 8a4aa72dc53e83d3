"""Starting posefleet nodes and coordinators as child processes (demo and cluster benchmark)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path


def spawn(args: list[str], ready: str, log: Path, timeout: float = 90) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``posefleet ARGS``, wait for its ready line, return the process and its port."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "posefleet.clients.cli", *args], stdout=out,
                                stderr=subprocess.STDOUT, env=os.environ.copy())  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if match := re.search(ready + r".*?port=(\d+)", text):
            return proc, int(match.group(1))
        if proc.poll() is not None:
            raise RuntimeError(f"posefleet {args[0]} exited early:\n{text}")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"posefleet {args[0]} did not start in time (see {log})")


def spawn_node(model: Path, name: str, log: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    args = ["node", "--model", str(model), "--host", "127.0.0.1", "--port", "0", "--zeroconf-interface", "127.0.0.1",
            "--name", name, *extra]  # fmt: skip
    return spawn(args, "posefleet-node ready", log)


def spawn_coordinator(log: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    args = ["coordinator", "--host", "127.0.0.1", "--port", "0", "--zeroconf-interface", "127.0.0.1", *extra]
    return spawn(args, "posefleet-coordinator ready", log)


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
