"""A camera machine installs posefleet without extras (no OpenVINO, Numba, pydantic, zeroconf, ...) and streams.

The test builds that lean virtualenv from this checkout with pip (the base dependencies only), then runs its
``posefleet camera`` and ``posefleet status`` against a real coordinator and node of the full install.
"""

from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path

import pytest
from nodes import NodeProcess
from posefleet.clients.local_fleet import start_coordinator
from posefleet.common.tls import TlsFiles, cli_args

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lean_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("lean")
    venv.create(home / "venv", with_pip=True)
    python = home / "venv" / "bin" / "python"
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return home / "venv" / "bin"


def test_camera_machine_streams_without_openvino(
    lean_venv: Path, models: dict[str, Path], assets: Path, tmp_path: Path, fleet: dict[str, TlsFiles]
) -> None:
    """Over mutual TLS: the lean install needs no ``cryptography`` to use its camera certificate."""
    absent = subprocess.run(
        [
            str(lean_venv / "python"),
            "-c",
            "import importlib.util as u; print([m for m in ('openvino', 'numba', 'pydantic', 'zeroconf', "
            "'prometheus_client', 'matplotlib', 'pycocotools', 'tflite', 'cryptography') if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert absent.stdout.strip() == "[]", absent.stdout
    node = NodeProcess(models["posenet075"], "--input-size", "257x257", name="lean-node", tls=fleet["lean-node"])
    coordinator = start_coordinator(
        None, "--no-discovery", "--node", node.address, tls=fleet["coordinator"], timeout=60
    )
    address = f"127.0.0.1:{coordinator.port}"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    try:
        wait = subprocess.run(
            [
                str(lean_venv / "posefleet"),
                "status",
                "--coordinator",
                address,
                "--wait-node",
                "lean-node",
                "--timeout",
                "30",
                *cli_args(fleet["admin"]),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert wait.returncode == 0, wait.stdout + wait.stderr
        out = tmp_path / "lean.jsonl"
        cam = subprocess.run(
            [
                str(lean_venv / "posefleet"),
                "camera",
                "--coordinator",
                address,
                "--source",
                str(assets / "video" / "pose_1.mp4"),
                "--camera-id",
                "lean",
                "--resize-to-model",
                "--fps",
                "30",
                "--jsonl",
                str(out),
                "--render",
                str(tmp_path / "lean.mp4"),
                *cli_args(fleet["lean"]),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert cam.returncode == 0, cam.stdout + cam.stderr
        lines = [json.loads(x) for x in out.read_text().splitlines()]
        assert [x["sequence"] for x in lines] == list(range(120))
        assert sum(x["status"] == "ok" for x in lines) >= 100
        assert all(len(p["keypoints"]) == 17 for x in lines for p in x["poses"])
        assert (tmp_path / "lean.mp4").stat().st_size > 10_000, "skeletons drawn with the shared drawing"
    finally:
        coordinator.stop()
        node.stop()
