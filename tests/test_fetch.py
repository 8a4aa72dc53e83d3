"""``models fetch`` through the same code path as on a user's machine, against file:// mirrors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from posefleet.node.convert.fetch import CATALOG, OMZ_BASE, TFJS_BASE, FetchError, download, fetch
from posefleet.node.engine.card import load_card


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSEFLEET_HOME", str(tmp_path / "home"))


def test_catalog_points_at_official_storage() -> None:
    assert CATALOG["posenet-mobilenet-v1-100"].base_url == TFJS_BASE
    assert TFJS_BASE == "https://storage.googleapis.com/tfjs-models/weights/posenet/"
    assert CATALOG["human-pose-estimation-0001"].base_url == OMZ_BASE
    assert set(CATALOG) >= {f"posenet-mobilenet-v1-{v}" for v in ("050", "075", "100", "101")}


def test_fetch_posenet_from_mirror(assets: Path, tmp_path: Path) -> None:
    mirror = (assets / "models/posenet/tfjs_v1").as_uri()
    card = fetch("posenet-mobilenet-v1-075", tmp_path / "m", mirror=mirror, progress=_silent)
    assert card.model_id == "posenet-mobilenet-v1-075-s16" and card.source.format == "tfjs"
    assert load_card(tmp_path / "m") == card
    downloaded = tmp_path / "home/downloads/posenet-mobilenet-v1-075"
    assert len(list(downloaded.iterdir())) == 71  # manifest + 70 variables


def test_fetch_openpose_from_mirror_with_cli(assets: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "posefleet.cli",
            "models",
            "fetch",
            "human-pose-estimation-0001",
            "--mirror",
            (assets / "models").as_uri(),
            "-o",
            str(tmp_path / "hpe"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "POSEFLEET_HOME": str(tmp_path / "home")},
    )
    assert proc.returncode == 0, proc.stderr
    card = load_card(tmp_path / "hpe")
    assert card.family == "openpose" and card.precision == "FP16-INT8"


def test_checksum_mismatch_is_refused(assets: Path, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror/human-pose-estimation-0001/FP16-INT8"
    shutil.copytree(assets / "models/human-pose-estimation-0001/FP16-INT8", mirror)
    data = bytearray((mirror / "human-pose-estimation-0001.bin").read_bytes())
    data[1000] ^= 0xFF
    (mirror / "human-pose-estimation-0001.bin").write_bytes(bytes(data))
    with pytest.raises(FetchError, match=r"sha256 .* does not match"):
        fetch(
            "human-pose-estimation-0001",
            tmp_path / "out",
            mirror=(tmp_path / "mirror").as_uri(),
            progress=_silent,
        )
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "home/downloads/human-pose-estimation-0001").exists()


def test_truncated_tfjs_file_is_refused(assets: Path, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror/mobilenet_v1_075"
    shutil.copytree(assets / "models/posenet/tfjs_v1/mobilenet_v1_075", mirror)
    path = mirror / "MobilenetV1_Conv2d_5_pointwise_weights"
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(FetchError, match=r"MobilenetV1_Conv2d_5_pointwise_weights: 147452 bytes, expected 147456"):
        fetch(
            "posenet-mobilenet-v1-075",
            tmp_path / "out",
            mirror=(tmp_path / "mirror").as_uri(),
            progress=_silent,
        )


def test_missing_mirror_file(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="download failed"):
        fetch(
            "posenet-mobilenet-v1-100",
            tmp_path / "out",
            mirror=(tmp_path / "empty").as_uri(),
            progress=_silent,
        )


def test_download_reports_progress(assets: Path, tmp_path: Path) -> None:
    seen: list[int] = []

    def progress(_label: str, total: int | None) -> Callable[[int], None]:
        seen.append(total or 0)
        return seen.append

    src = assets / "models/posenet/tfjs_v1/mobilenet_v1_075/manifest.json"
    download(src.as_uri(), tmp_path / "manifest.json", progress=progress)
    assert sum(n for n in seen[1:] if n > 0) == src.stat().st_size and seen[-1] == -1


def _silent(_label: str, _total: int | None) -> Callable[[int], None]:
    return lambda _n: None


def test_fetch_movenet_from_a_mirror_of_tf_hub(assets: Path, tmp_path: Path) -> None:
    """A file:// mirror with TF Hub's layout (<variant>/tflite/<precision>/4.tflite) of the asset."""
    mirror = tmp_path / "mirror"
    (mirror / "lightning/tflite/int8").mkdir(parents=True)
    (mirror / "lightning/tflite/int8/4.tflite").symlink_to(
        assets / "models/movenet/lite-model_movenet_singlepose_lightning_tflite_int8_4.tflite"
    )
    card = fetch("movenet-singlepose-lightning-int8", tmp_path / "m", mirror=mirror.as_uri(), progress=_silent)
    assert card.family == "movenet" and card.model_id == "movenet-singlepose-lightning-int8"
    assert CATALOG["movenet-singlepose-lightning-int8"].base_url.startswith("https://storage.googleapis.com/")
