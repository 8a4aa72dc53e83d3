"""Shared fixtures: the real assets and models converted from them once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from posefleet.node.models.convert import convert

# gRPC logs an INFO line whenever a test forks a subprocess while its threads run; keep the output readable.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


@pytest.fixture(scope="session")
def assets() -> Path:
    value = os.environ.get("POSEFLEET_ASSETS")
    if not value or not Path(value).is_dir():
        if os.environ.get("CI"):
            pytest.fail("POSEFLEET_ASSETS is not set or missing in CI; .ci/run sets it to ../shared/assets")
        pytest.skip("POSEFLEET_ASSETS not set (see DEVELOPERS.md)")
    return Path(value)


ASSET_MODELS = {
    "posenet050": "models/posenet/mobilenet_v1_050/model-mobilenet_v1_050.pb",
    "posenet075": "models/posenet/tfjs_v1/mobilenet_v1_075",
    "coral353": "models/posenet/coral_tflite/posenet_mobilenet_v1_075_353_481_quant.tflite",
    "coral481": "models/posenet/coral_tflite/posenet_mobilenet_v1_075_481_641_quant.tflite",
    "hpe": "models/human-pose-estimation-0001/FP16-INT8",
}


@pytest.fixture(scope="session")
def models(assets: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every asset model converted to FP16 IR (dynamic input where the source allows it)."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for name, rel in ASSET_MODELS.items():
        convert(assets / rel, root / name)
        out[name] = root / name
    return out


@pytest.fixture(scope="session")
def coco(assets: Path) -> tuple[Path, Path]:
    return assets / "coco" / "person_keypoints_val2017_4img.json", assets / "coco" / "images"
