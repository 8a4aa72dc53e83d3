"""Shared fixtures: the real assets and models converted from them once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from posefleet.common.tls import TlsFiles
from posefleet.node.convert import convert
from posefleet.node.tools.asset_models import ASSET_MODELS

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


@pytest.fixture(scope="session")
def models(assets: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every asset model converted to FP16 IR (dynamic input where the source allows it)."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for name, asset in ASSET_MODELS.items():
        convert(assets / asset.path, root / name)
        out[name] = root / name
    return out


@pytest.fixture(scope="session")
def coco(assets: Path) -> tuple[Path, Path]:
    return assets / "coco" / "person_keypoints_val2017_4img.json", assets / "coco" / "images"


#: Holders of the tests' fleet certificates: (role, name, camera ids).
FLEET = [
    ("coordinator", "coordinator", []),
    ("admin", "admin", []),
    ("subscriber", "sub-a", ["cam-a"]),
    ("camera", "cam-a", ["cam-a"]),
    ("camera", "cam-b", ["cam-b"]),
    ("camera", "lean", ["lean"]),
    *[("node", name, []) for name in ("node-a", "node-b", "lean-node", "tls-steady")],
]


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TlsFiles]:
    """A throwaway fleet CA and a certificate for each holder of ``FLEET``, by name (``TlsFiles``)."""
    from posefleet.common.certs import throwaway_fleet

    return throwaway_fleet(tmp_path_factory.mktemp("fleet") / "pki", FLEET)
