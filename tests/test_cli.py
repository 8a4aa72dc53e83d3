"""CLI round trips through the real ``posefleet`` entry point."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import pytest
from nodes import run_cli
from posefleet.cli import main
from posefleet.node.tools.media import read_image


def test_convert_then_pose_json_and_render(assets: Path, tmp_path: Path) -> None:
    proc = run_cli(
        "convert",
        assets / "models/posenet/tfjs_v1/mobilenet_v1_075",
        "-o",
        tmp_path / "m",
        "--input-size",
        "353x481",
    )
    assert proc.returncode == 0, proc.stderr
    assert "posenet-mobilenet-v1-075-s16" in proc.stdout
    photo, video = assets / "images/two_on_bench.jpg", assets / "video/pose_1.mp4"
    proc = run_cli(
        "pose",
        "--model",
        tmp_path / "m",
        photo,
        video,
        "--json",
        tmp_path / "poses.json",
        "--render",
        tmp_path / "r",
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "poses.json").read_text())
    assert [i["path"] for i in report["inputs"]] == [str(photo), str(video)]
    assert len(report["inputs"][0]["frames"]) == 1 and len(report["inputs"][1]["frames"]) == 120
    frame = report["inputs"][1]["frames"][5]
    assert frame["index"] == 5
    pose = frame["poses"][0]
    assert set(pose) == {"score", "keypoints", "track_id", "bbox"} and len(pose["keypoints"]) == 17
    assert {f["poses"][0]["track_id"] for f in report["inputs"][1]["frames"] if f["poses"]} == {1}, "one person"
    assert "track_id" not in report["inputs"][0]["frames"][0]["poses"][0], "photos are not tracked"
    assert set(pose["keypoints"][0]) == {"name", "x", "y", "score"} and pose["keypoints"][0]["name"] == "nose"
    drawn = read_image(tmp_path / "r/two_on_bench.jpg")
    original = read_image(photo)
    assert drawn.shape == original.shape and (drawn != original).any()
    cap = cv2.VideoCapture(str(tmp_path / "r/pose_1.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 120
    cap.release()


def test_eval_cli(models: dict[str, Path], coco: tuple[Path, Path], tmp_path: Path) -> None:
    ann, images = coco
    proc = run_cli(
        "eval",
        "--model",
        models["hpe"],
        "--coco-annotations",
        ann,
        "--images",
        images,
        "--detections-out",
        tmp_path / "det.json",
        "--json",
        tmp_path / "stats.json",
    )
    assert proc.returncode == 0, proc.stderr
    assert "Average Precision" in proc.stdout
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["AP"] >= 0.53
    detections = json.loads((tmp_path / "det.json").read_text())
    assert {d["image_id"] for d in detections} == {785, 40083, 196141, 197388}
    assert all(len(d["keypoints"]) == 51 and d["category_id"] == 1 for d in detections)


def test_bench_cli_writes_table_json_and_chart(models: dict[str, Path], tmp_path: Path) -> None:
    code = main(
        [
            "bench",
            "--model",
            str(models["posenet050"]),
            "--input-size",
            "257x257",
            "--frames",
            "15",
            "--seconds",
            "2",
            "--json",
            str(tmp_path / "b.json"),
            "--markdown",
            str(tmp_path / "b.md"),
            "--chart",
            str(tmp_path / "b.png"),
        ]
    )
    assert code == 0
    (row,) = json.loads((tmp_path / "b.json").read_text())
    assert row["input_size"] == "257x257" and row["raw_sync_fps"] > 0 and row["decoded_async_fps"] > 0
    assert row["raw_latency_p99_ms"] >= row["raw_latency_p50_ms"] > 0
    assert "| posenet-mobilenet-v1-050-s16 | 257x257 |" in (tmp_path / "b.md").read_text()
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_node_cli_measures_both_sides(models: dict[str, Path], tmp_path: Path) -> None:
    """A short real run of ``bench --node``: raw async rounds and a node subprocess over EstimateStream."""
    code = main(
        [
            "bench",
            "--node",
            "--model",
            str(models["posenet050"]),
            "--input-size",
            "257x257",
            "--seconds",
            "0.5",
            "--rounds",
            "2",
            "--json",
            str(tmp_path / "n.json"),
        ]
    )
    assert code == 0
    (row,) = json.loads((tmp_path / "n.json").read_text())
    assert row["input_size"] == "257x257" and len(row["rounds"]) == 2
    assert row["node_requests"] >= 1 and row["node_capacity"] == 2 * row["node_requests"]
    for measured in row["rounds"]:
        # The baseline is the better of the device's optimal request count and the node's own.
        assert measured["raw_async_fps"] == max(v for k, v in measured.items() if k.startswith("raw_fps_"))
        assert measured["ratio"] == pytest.approx(measured["node_stream_fps"] / measured["raw_async_fps"])
        assert measured["pipeline_ratio"] == pytest.approx(measured["pipeline_fps"] / measured["raw_async_fps"])
    assert row["frames"] > 0 and row["node_stream_fps"] > 0 and row["raw_async_fps"] > 0
    # `make test` builds the C++ load generator and names it in $POSEFLEET_LOADGEN; the Python client runs too.
    assert row["load_generator"] == ("native" if os.environ.get("POSEFLEET_LOADGEN") else "python")
    assert row["node_stream_fps_python"] > 0 and row["pipeline_fps"] > 0
    assert row["node_latency_p50_ms"] > 0 and row["bare_latency_p50_ms"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["convert", "/nonexistent/model.pb", "-o", "OUT"], "no such file or directory"),
        (["pose", "--model", "/nonexistent", "x.jpg"], "does not exist"),
        (["models", "fetch", "posenet-mobilenet-v1-042"], "unknown model"),
        (["bench", "--model", "/nonexistent", "--frames", "0"], "--frames: must be at least 1, got 0"),
        (["bench", "--node", "--model", "/nonexistent", "--loadgen", "/nonexistent/lg"], "no load generator binary"),
        (["bench", "--model", "/nonexistent", "--seconds", "-1"], "--seconds: must be above 0, got -1"),
        (["status", "--node", "127.0.0.1:1", "--timeout", "0"], "--timeout must be positive"),
    ],
)
def test_user_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    proc = run_cli(*[a.replace("OUT", str(tmp_path / "o")) for a in args])
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_pose_on_unreadable_input(models: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    proc = run_cli("pose", "--model", models["posenet075"], bad)
    assert proc.returncode == 2 and "broken.jpg: cannot read image" in proc.stderr


def test_bad_size_flag_is_rejected() -> None:
    proc = run_cli("convert", "x.pb", "-o", "y", "--input-size", "big")
    assert proc.returncode == 2 and "expected HEIGHTxWIDTH" in proc.stderr


def test_a_camera_that_cannot_reach_its_coordinator_gives_up_and_says_so(assets: Path) -> None:
    proc = run_cli(
        "camera",
        "--coordinator",
        "127.0.0.1:1",
        "--source",
        assets / "video" / "pose_1.mp4",
        "--camera-id",
        "lonely",
        "--max-reconnects",
        "2",
        "--insecure",
        timeout=60,
    )
    assert proc.returncode == 1 and "gave up reconnecting" in proc.stdout, proc.stdout + proc.stderr
    assert "reconnects 2" in proc.stdout
