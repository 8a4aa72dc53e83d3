"""The one helper that starts a ``posefleet`` process and waits until it serves (demo, benchmarks, tests)."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from posefleet.common.errors import PosefleetError
from posefleet.common.health import SERVING, health_sync
from posefleet.common.tls import TlsFiles, cli_args, role_name, sync_channel

_READY = re.compile(r"^posefleet-(\w+) ready(?P<fields>( \w+=\S*)*)\s*$", re.MULTILINE)


@dataclass
class PosefleetProcess:
    """A running ``posefleet`` subcommand; ``fields`` are the key=value pairs of its ready line."""

    proc: subprocess.Popen[bytes]
    log: Path
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return int(self.fields["port"])

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit status (-9 when killed)."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -9


def start_posefleet(
    args: list[str],
    *,
    tls: TlsFiles | None,
    log: Path | None = None,
    timeout: float = 90,
    host: str = "127.0.0.1",
    command: list[str] | None = None,
) -> PosefleetProcess:
    """Run ``posefleet ARGS`` with its certificate ``tls`` (None: ``--insecure``), wait for its ready line,
    then for gRPC health SERVING on ``host:port`` (asked over mutual TLS with the process's own certificate).

    ``command`` runs another installation's ``posefleet`` (e.g. one in an arm64 root under emulation); by
    default this interpreter's."""
    args = [*args, *cli_args(tls)]
    if log is None:
        fd, name = tempfile.mkstemp(prefix=f"posefleet-{args[0]}-", suffix=".log")
        os.close(fd)
        log = Path(name)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*(command or [sys.executable, "-m", "posefleet.cli"]), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
        )
    running = PosefleetProcess(proc, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if match := _READY.search(running.output()):
            running.fields = dict(pair.split("=", 1) for pair in match.group("fields").split())
            if _wait_serving(f"{host}:{running.port}", tls, role_name(args[0]), deadline):
                return running
            break
        if proc.poll() is not None:
            raise RuntimeError(f"posefleet {args[0]} exited early:\n{running.output()}")
        time.sleep(0.05)
    running.stop(timeout=2)
    raise RuntimeError(f"posefleet {args[0]} did not start serving in time (log: {log}):\n{running.output()[-3000:]}")


def _wait_serving(address: str, tls: TlsFiles | None, server: str, deadline: float) -> bool:
    with sync_channel(address, tls, server) as channel:
        while time.monotonic() < deadline:
            with contextlib.suppress(grpc.RpcError):
                if health_sync(channel) == SERVING:
                    return True
            time.sleep(0.05)
    return False


def stop_all(processes: list[PosefleetProcess]) -> None:
    """Stop processes in reverse start order (SIGTERM, then SIGKILL)."""
    for running in reversed(processes):
        if running.proc.poll() is None:
            running.proc.terminate()
    for running in processes:
        running.stop()


def run_posefleet(args: list[str], timeout: float = 1800) -> str:
    """Run a ``posefleet`` command to its end and return its stdout; its one-line error becomes a PosefleetError."""
    proc = subprocess.run(
        [sys.executable, "-m", "posefleet.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=os.environ.copy(),
    )
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise PosefleetError(lines[-1] if lines else f"posefleet {args[0]} exited with status {proc.returncode}")
    return proc.stdout
