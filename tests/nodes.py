"""Helpers to run real nodes on loopback in tests."""

from __future__ import annotations

import atexit
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
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


_RUNNING: list[subprocess.Popen[str]] = []


@atexit.register
def _reap() -> None:
    """No node outlives the test session, whatever a test did."""
    for proc in _RUNNING:
        if proc.poll() is None:
            proc.kill()


class NodeProcess:
    """``posefleet node`` in a subprocess bound to 127.0.0.1, zeroconf on 127.0.0.1."""

    def __init__(self, model: Path, *extra: str, name: str | None = None) -> None:
        args = [sys.executable, "-m", "posefleet.clients.cli", "node", "--model", str(model), "--host", "127.0.0.1",
                "--port", "0", "--zeroconf-interface", "127.0.0.1", *extra]  # fmt: skip
        if name:
            args += ["--name", name]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy()
        )
        self.lines: list[str] = []
        self.port = 0
        self.node_id = ""
        deadline = time.monotonic() + 60
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            match = re.search(r"posefleet-node ready node_id=(\S+) port=(\d+)", line)
            if match:
                self.node_id, self.port = match.group(1), int(match.group(2))
                return
        self.proc.kill()
        raise RuntimeError("node did not start:\n" + "".join(self.lines))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9

    def output(self) -> str:
        assert self.proc.stdout is not None
        return "".join(self.lines) + self.proc.stdout.read()
