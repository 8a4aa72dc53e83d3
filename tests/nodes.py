"""Helpers to run real nodes on loopback in tests."""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
from posefleet.clients.local_fleet import start_node
from posefleet.common.processes import PosefleetProcess
from posefleet.common.tls import TlsFiles
from posefleet.v1 import pose_pb2


def jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return bytes(buf.tobytes())


def frame(
    data: bytes, seq: int = 0, camera: str = "cam", encoding: int = pose_pb2.IMAGE_ENCODING_JPEG
) -> pose_pb2.Frame:
    image = pose_pb2.Image(encoding=pose_pb2.ImageEncoding.ValueType(encoding), data=data)
    return pose_pb2.Frame(camera_id=camera, sequence=seq, image=image)


def integer_kernels(kernels: str) -> bool:
    """Every convolution ran an integer kernel, however this CPU's plugin spells it (``I8`` on AVX-512 VNNI,
    ``I8/i8`` where AMX runs some of them, ``u8``...)."""
    return bool(kernels) and all(kind.lower() in {"i8", "u8"} for kind in kernels.split("/"))


_RUNNING: list[PosefleetProcess] = []


@atexit.register
def _reap() -> None:
    """No node outlives the test session, whatever a test did."""
    for running in _RUNNING:
        if running.proc.poll() is None:
            running.proc.kill()


class NodeProcess:
    """``posefleet node`` in a subprocess bound to 127.0.0.1, zeroconf on 127.0.0.1 (``start_posefleet``)."""

    def __init__(self, model: Path, *extra: str, name: str | None = None, tls: TlsFiles | None = None) -> None:
        """``tls``: its node certificate (named ``name``); None runs it --insecure."""
        self.running = start_node(model, name, None, *extra, tls=tls, timeout=60)
        _RUNNING.append(self.running)
        self.proc = self.running.proc
        self.port = self.running.port
        self.node_id = self.running.fields["node_id"]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, timeout: float = 15) -> int:
        return self.running.stop(timeout)

    def output(self) -> str:
        return self.running.output()


def run_cli(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``posefleet ARGS`` to its end, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "posefleet.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=os.environ.copy(),
    )


def write_report(path: str, title: str, about: list[str], figures: dict[str, object]) -> None:
    """A benchmark run as a test: its figures as a Markdown table in ``path`` and as JSON beside it."""
    lines = [f"# {title}", "", *about, "", "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in figures.items()]
    Path(path).write_text("\n".join(lines) + "\n")
    Path(path).with_suffix(".json").write_text(json.dumps(figures, indent=2) + "\n")
