"""The generated contract code is importable as part of posefleet and not stale."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ROOT / "proto" / "posefleet" / "v1"


def test_generated_code_is_current(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate.py"), str(tmp_path)], check=True, capture_output=True
    )
    fresh = sorted((tmp_path / "posefleet" / "v1").iterdir())
    assert fresh, "protoc produced nothing"
    for path in fresh:
        committed = GENERATED / path.name
        assert committed.exists(), f"{committed.name} is missing: run `make proto`"
        assert committed.read_bytes() == path.read_bytes(), f"{committed.name} is stale: run `make proto`"


def test_contract_is_importable_under_posefleet() -> None:
    from posefleet.v1 import coordinator_pb2_grpc, node_pb2, node_pb2_grpc, pose_pb2

    assert node_pb2.DESCRIPTOR.package == "posefleet.v1"
    assert hasattr(node_pb2_grpc, "PoseNodeServicer") and hasattr(coordinator_pb2_grpc, "CoordinatorStub")
    frame = pose_pb2.Frame(camera_id="cam", sequence=7)
    assert pose_pb2.Frame.FromString(frame.SerializeToString()).sequence == 7
    assert [f.number for f in pose_pb2.PoseResult.DESCRIPTOR.fields] == list(range(1, 13))
