"""Decoding on real model outputs: multi-person photographs, tfjs equivalence, OpenPose grouping."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from posefleet.node.engine.decoders import posenet as pd
from posefleet.node.engine.decoders import posenet_numba as posenet_kernel
from posefleet.node.engine.runtime import EngineOptions, PoseEngine
from posefleet.node.engine.types import Pose
from posefleet.node.tools.media import read_image
from reference_posenet import decode_multiple_reference


def _outputs(engine: PoseEngine, image: np.ndarray) -> pd.PoseNetOutputs:
    tensor, _ = engine.model.preprocess(image)
    raw = engine.infer_raw(tensor)
    return pd.PoseNetOutputs(
        raw["heatmap"][0], raw["offsets"][0], raw["displacement_fwd"][0], raw["displacement_bwd"][0]
    )


def _distinct_people(poses: list[Pose], min_score: float, image: np.ndarray) -> list[Pose]:
    """Confident poses whose visible keypoints lie in the image, de-duplicated by centre."""
    h, w = image.shape[:2]
    people: list[Pose] = []
    for pose in poses:
        if pose.score < min_score:
            continue
        visible = pose.keypoints[pose.keypoints[:, 2] > 0.3]
        if len(visible) < 5:
            continue
        assert (visible[:, 0] > -0.05 * w).all() and (visible[:, 0] < 1.05 * w).all()
        assert (visible[:, 1] > -0.05 * h).all() and (visible[:, 1] < 1.05 * h).all()
        centre = visible[:, :2].mean(axis=0)
        if all(
            np.linalg.norm(centre - p.keypoints[p.keypoints[:, 2] > 0.3, :2].mean(axis=0)) > 0.05 * w for p in people
        ):
            people.append(pose)
    return people


@pytest.mark.parametrize("model", ["posenet050", "posenet075", "coral481", "hpe"])
@pytest.mark.parametrize(
    ("photo", "expected"),
    [("multi_skiing.jpg", 4), ("two_on_bench.jpg", 2), ("skate_park.jpg", 5), ("soccer.png", 2)],
)
def test_multi_person_photographs(models: dict[str, Path], assets: Path, model: str, photo: str, expected: int) -> None:
    image = read_image(assets / "images" / photo)
    engine = PoseEngine(models[model])
    result = engine.infer(image)
    assert result.image_size == image.shape[:2]
    min_score = 0.3 if engine.card.family == "posenet" else 20.0  # OpenPose scores are sums, not means
    people = _distinct_people(result.poses, min_score, image)
    assert len(people) >= expected, [round(p.score, 2) for p in result.poses]
    assert [p.score for p in result.poses] == sorted((p.score for p in result.poses), reverse=True)


@pytest.mark.parametrize("photo", ["multi_skiing.jpg", "two_on_bench.jpg", "skate_park.jpg", "soccer.png"])
@pytest.mark.parametrize("threshold", [0.5, 0.1])
@pytest.mark.parametrize("compiled", [True, False], ids=["numba", "numpy"])
def test_decoders_equal_plain_tfjs_port(
    models: dict[str, Path], assets: Path, photo: str, threshold: float, compiled: bool
) -> None:
    if compiled:
        assert posenet_kernel.compiled_available, "numba is a dependency on this platform"
    engine = PoseEngine(models["posenet075"])
    out = _outputs(engine, read_image(assets / "images" / photo))
    # Small NumPy chunks: several rounds of suppression across chunks.
    params = pd.PoseNetDecodeParams(
        score_threshold=threshold, max_poses=15, chunk=7, compiled=compiled, min_pose_score=0.0
    )  # the reference port keeps every pose
    fast = pd.decode_multiple(out, 16, params)
    slow = decode_multiple_reference(out, 16, params)
    assert len(fast) == len(slow) > 0
    for (kf, sf), (ks, ss) in zip(fast, slow, strict=True):
        assert sf == pytest.approx(ss, abs=1e-5)
        np.testing.assert_allclose(kf, ks, atol=1e-3)


def test_single_person_is_per_part_argmax(models: dict[str, Path], assets: Path) -> None:
    engine = PoseEngine(models["posenet075"])
    out = _outputs(engine, read_image(assets / "video" / "pose.jpg"))
    keypoints, score = pd.decode_single(out, 16)
    for part in range(17):
        y, x = np.unravel_index(out.heatmap[:, :, part].argmax(), out.heatmap.shape[:2])
        assert keypoints[part, 2] == out.heatmap[y, x, part]
        assert keypoints[part, 0] == pytest.approx(x * 16 + out.offsets[y, x, part + 17])
    assert score == pytest.approx(keypoints[:, 2].mean())


def test_decoder_parameters_apply(models: dict[str, Path], assets: Path) -> None:
    image = read_image(assets / "images" / "multi_skiing.jpg")
    few = PoseEngine(models["posenet075"], EngineOptions(decode={"max_poses": 2})).infer(image)
    assert len(few.poses) == 2
    strict = {"score_threshold": 0.99}
    loose = {"score_threshold": 0.1, "max_poses": 30}
    n_strict = len(PoseEngine(models["posenet075"], EngineOptions(decode=strict)).infer(image).poses)
    n_loose = len(PoseEngine(models["posenet075"], EngineOptions(decode=loose)).infer(image).poses)
    assert n_strict < n_loose
    single = PoseEngine(models["posenet075"], EngineOptions(decode={"multi_person": False})).infer(image)
    assert len(single.poses) == 1


def test_results_are_in_source_pixels(models: dict[str, Path], assets: Path) -> None:
    """The same photo at two scales gives the same poses scaled."""
    image = read_image(assets / "video" / "pose.jpg")
    big = cv2.resize(image, None, fx=2.0, fy=2.0)
    engine = PoseEngine(models["hpe"])
    a = engine.infer(image).poses[0].keypoints
    b = engine.infer(big).poses[0].keypoints
    found = (a[:, 2] > 0.3) & (b[:, 2] > 0.3)
    assert found.sum() >= 10
    err = np.linalg.norm(a[found, :2] * 2 - b[found, :2], axis=1)
    assert np.median(err) < 0.02 * big.shape[1]


def test_empty_frame_gives_no_confident_pose(models: dict[str, Path]) -> None:
    black = np.zeros((480, 640, 3), np.uint8)
    for name in ("posenet075", "hpe"):
        result = PoseEngine(models[name]).infer(black)
        assert all(p.score < 0.2 for p in result.poses) if name == "posenet075" else result.poses == []


def test_bad_image_is_rejected(models: dict[str, Path]) -> None:
    engine = PoseEngine(models["posenet075"])
    with pytest.raises(ValueError, match="BGR uint8"):
        engine.infer(np.zeros((10, 10), np.uint8))
