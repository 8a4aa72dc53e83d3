"""The README's first command: ``posefleet demo`` runs a local cluster and exits by itself."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2


def test_demo_runs_the_cluster_and_writes_outputs(assets: Path, tmp_path: Path) -> None:
    env = {**os.environ, "POSEFLEET_HOME": str(tmp_path / "home"), "POSEFLEET_ASSETS": str(assets)}
    proc = subprocess.run(
        [sys.executable, "-m", "posefleet.cli", "demo", "--out", str(tmp_path / "out"), "--cameras", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fetching posenet-mobilenet-v1-075 from file://" in proc.stdout  # through the mirror mechanism
    assert "fetching sample-video from file://" in proc.stdout
    for cam in ("demo-cam0", "demo-cam1"):
        lines = [json.loads(x) for x in (tmp_path / "out" / f"{cam}.jsonl").read_text().splitlines()]
        assert [x["sequence"] for x in lines] == list(range(120))
        assert sum(x["status"] == "ok" for x in lines) >= 100
        cap = cv2.VideoCapture(str(tmp_path / "out" / f"{cam}.mp4"))
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) >= 100 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 576
        cap.release()
        assert f"camera {cam}: in " in proc.stdout and "processed" in proc.stdout  # the coordinator's stats
    nodes = {m[1]: int(m[2]) for m in re.finditer(r"^  node (\S+) .* done (\d+),", proc.stdout, re.MULTILINE)}
    assert set(nodes) == {"demo-node-0", "demo-node-1"}, proc.stdout
    assert all(count > 0 for count in nodes.values()), nodes  # both nodes did work
