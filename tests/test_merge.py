"""The merge's algorithms in milliseconds: calibration, triangulation, association, tracking, filters, formats."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from posefleet.merge.calibration import CalibrationError, Camera, load_calibration
from posefleet.merge.filters import OneEuroFilter
from posefleet.merge.formats import TO_COCO, read_openpose_folder, read_trc, write_trc
from posefleet.merge.scene import FusionParams, SceneFuser
from posefleet.merge.tracking import PoseTracker, TrackerParams
from posefleet.merge.triangulation import triangulate

GOOD = """
[cam_a]
name = "cam_a"
size = [ 1000.0, 800.0]
matrix = [ [ 900.0, 0.0, 500.0], [ 0.0, 900.0, 400.0], [ 0.0, 0.0, 1.0]]
distortions = [ 0.0, 0.0, 0.0, 0.0]
rotation = [ 0.0, 0.0, 0.0]
translation = [ 0.0, 0.0, 4.0]
fisheye = false
"""


def ring(n: int = 4, radius: float = 4.0, size: tuple[int, int] = (1000, 800)) -> dict[str, Camera]:
    """``n`` cameras on a circle around the origin, looking at it (world Z up)."""
    import cv2

    cams = {}
    for i in range(n):
        angle = 2 * np.pi * i / n
        center = np.array([radius * np.cos(angle), radius * np.sin(angle), 1.5])
        forward = -center / np.linalg.norm(center)
        right = np.cross(forward, [0, 0, 1.0])
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        R = np.stack([right, down, forward])
        K = np.array([[900.0, 0, size[0] / 2], [0, 900.0, size[1] / 2], [0, 0, 1]])
        cams[f"c{i}"] = Camera(f"c{i}", size, K, np.zeros(4), R, -R @ center)
        assert cv2.Rodrigues(R)[0].shape == (3, 1)
    return cams


def person(offset: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """17 joints of a standing person (metres, Z up) near ``offset``."""
    base = np.array([[0, 0, 1.7], [0.03, 0.05, 1.73], [-0.03, 0.05, 1.73], [0.08, 0, 1.7], [-0.08, 0, 1.7],
                     [0.2, 0, 1.45], [-0.2, 0, 1.45], [0.3, 0, 1.15], [-0.3, 0, 1.15], [0.35, 0, 0.9],
                     [-0.35, 0, 0.9], [0.12, 0, 0.95], [-0.12, 0, 0.95], [0.13, 0, 0.5], [-0.13, 0, 0.5],
                     [0.14, 0, 0.08], [-0.14, 0, 0.08]])  # fmt: skip
    out: np.ndarray = base + np.array([*offset, 0.0]) + rng.normal(0, 0.01, base.shape)
    return out


def project(
    cams: dict[str, Camera], points: np.ndarray, noise: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    out = {}
    for name, cam in cams.items():
        xy = cam.project(points) + rng.normal(0, noise, (len(points), 2))
        out[name] = np.concatenate([xy, np.full((len(points), 1), 0.9)], axis=1).astype(np.float32)
    return out


# -- calibration ----------------------------------------------------------------------------------
def test_the_asset_calibration_reads_as_pose2sim_writes_it(assets: Path) -> None:
    cams = load_calibration(assets / "multiview/pose2sim/calibration/Calib_qualisys.toml")
    assert list(cams) == ["cam_01", "cam_02", "cam_03", "cam_04"]
    cam = cams["cam_01"]
    assert cam.size == (1088, 1920) and cam.K[0, 0] == pytest.approx(1681.2449) and cam.dist.shape == (4,)
    assert np.allclose(cam.R @ cam.R.T, np.eye(3), atol=1e-9)
    # X_cam = R X + t: the camera centre maps to the origin of the camera frame.
    assert np.allclose(cam.R @ cam.center + cam.t, 0, atol=1e-9)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("translation = [ 0.0, 0.0, 4.0]\n", ""), "camera cam_a: missing key 'translation'"),
        (lambda t: t.replace("[ 0.0, 900.0, 400.0]", "[ 0.0, 0.0, 0.0]"), "camera cam_a: matrix is not an invertible"),
        (
            lambda t: t.replace("rotation = [ 0.0, 0.0, 0.0]", "rotation = [ 0.0, 0.0]"),
            "camera cam_a: rotation has shape [2], expected [3]",
        ),
        (
            lambda t: t.replace("distortions = [ 0.0, 0.0, 0.0, 0.0]", 'distortions = "0"'),
            "distortions has shape [], expected [4]",
        ),
        (lambda t: t + "[broken", "not a calibration TOML"),
        (lambda t: t[: t.index("[cam_b]")], "at least 2 calibrated cameras"),
    ],
)
def test_bad_calibrations_name_the_file_and_the_camera(tmp_path: Path, edit: object, message: str) -> None:
    text = GOOD + GOOD.replace("cam_a", "cam_b")
    path = tmp_path / "calib.toml"
    path.write_text(edit(text) if callable(edit) else text)
    with pytest.raises(CalibrationError, match=re.escape(message)) as info:
        load_calibration(path)
    assert str(path) in str(info.value)


def test_streamed_resolution_rescales_keeps_or_refuses(caplog: pytest.LogCaptureFixture) -> None:
    cam = ring(2, size=(1088, 1920))["c0"]
    half = cam.fit(544, 960)
    assert half.K[0, 0] == pytest.approx(cam.K[0, 0] / 2) and half.K[1, 2] == pytest.approx(cam.K[1, 2] / 2)
    model = cam.fit(257, 449)  # the camera sends the model's input size: factors 0.236 and 0.234
    assert model.K[0, 0] == pytest.approx(cam.K[0, 0] * 257 / 1088)
    assert model.K[1, 1] == pytest.approx(cam.K[1, 1] * 449 / 1920)
    with caplog.at_level(logging.INFO, logger="posefleet.merge"):
        cropped = cam.fit(1080, 1920)
    assert np.array_equal(cropped.K, cam.K) and "cropped at the right/bottom edge" in caplog.text
    with pytest.raises(CalibrationError, match=r"camera c0 streams 1920x1088 but was calibrated at 1088x1920"):
        cam.fit(1920, 1088)


# -- triangulation --------------------------------------------------------------------------------
def test_triangulation_recovers_points_and_excludes_a_bad_view() -> None:
    rng = np.random.default_rng(1)
    cams = ring(4)
    truth = person((0.3, -0.2), rng)
    views = project(cams, truth, 0.0, rng)
    P = np.stack([c.P for c in cams.values()])
    xy = np.stack([views[n][:, :2] for n in cams], axis=1).astype(np.float64)
    score = np.full((17, 4), 0.9)
    exact = triangulate(P, xy, score)
    assert np.abs(exact.points - truth).max() < 1e-6 and (exact.used.sum(axis=1) == 4).all()
    xy[3, 2] += 80.0  # camera c2 puts the right ear 80 px off
    robust = triangulate(P, xy, score, max_error_px=15.0)
    assert not robust.used[3, 2] and robust.used[3].sum() == 3
    assert np.linalg.norm(robust.points[3] - truth[3]) < 1e-6
    xy[5, :2] = np.nan  # shoulder seen by two cameras that disagree: not triangulated
    score[5, 2:] = 0.0
    xy[5, 1] += 200.0
    disagreeing = triangulate(P, np.nan_to_num(xy), score, max_error_px=15.0)
    assert np.isnan(disagreeing.points[5]).all() and disagreeing.used[5].sum() == 0


def test_confidence_below_threshold_is_not_used() -> None:
    rng = np.random.default_rng(2)
    cams = ring(3)
    truth = person((0, 0), rng)
    views = project(cams, truth, 0.0, rng)
    P = np.stack([c.P for c in cams.values()])
    xy = np.stack([views[n][:, :2] for n in cams], axis=1).astype(np.float64)
    score = np.full((17, 3), 0.9)
    score[:, 0] = 0.1
    tri = triangulate(P, xy, score, min_score=0.3)
    assert not tri.used[:, 0].any() and np.abs(tri.points - truth).max() < 1e-6


# -- association and 3D tracking -----------------------------------------------------------------
def test_fusion_finds_each_person_keeps_ids_and_leaves_single_views_2d() -> None:
    rng = np.random.default_rng(3)
    cams = ring(4)
    fuser = SceneFuser(cams, FusionParams())
    ids_seen: dict[int, set[int]] = {0: set(), 1: set(), 2: set()}
    for t in range(20):
        people = [person((0.5 * np.cos(t / 10), -1.0), rng), person((-1.0, 0.8), rng), person((1.2, 1.0 + t / 40), rng)]
        views: dict[str, list[np.ndarray]] = {n: [] for n in cams}
        for k, truth in enumerate(people):
            projected = project(cams, truth, 1.0, rng)
            for n in cams:
                if k == 2 and n != "c0":
                    continue  # person 2 is seen by one camera only
                views[n].append(projected[n])
        for n in cams:  # cameras list people in any order
            order = rng.permutation(len(views[n]))
            views[n] = [views[n][i] for i in order]
        frame = fuser.fuse(views, t * 33.3)
        assert len(frame.persons) == 2 and frame.unassigned == [("c0", frame.unassigned[0][1])]
        for p in frame.persons:
            match = min(range(2), key=lambda k: float(np.nanmean(np.linalg.norm(p.points - people[k], axis=1))))
            assert np.nanmean(np.linalg.norm(p.points - people[match], axis=1)) < 0.02
            # Nearly every joint from all 4 views (this body's bones vary by 1.4 cm a frame: now and then a joint
            # breaks its learned length by more than the tolerance and is left out).
            assert (p.views == 4).sum() >= 15 and max(p.camera_error_px.values()) < 3
            ids_seen[match].add(p.id)
    assert len(ids_seen[0]) == 1 and len(ids_seen[1]) == 1 and ids_seen[0] != ids_seen[1], ids_seen


def test_a_camera_missing_from_a_window_leaves_the_rest_fusing() -> None:
    rng = np.random.default_rng(4)
    cams = ring(4)
    fuser = SceneFuser(cams, FusionParams())
    truth = person((0, 0), rng)
    full = project(cams, truth, 0.5, rng)
    first = fuser.fuse({n: [v] for n, v in full.items()}, 0)
    without = fuser.fuse({n: [v] for n, v in full.items() if n != "c3"}, 33)
    assert [p.id for p in first.persons] == [p.id for p in without.persons] and without.persons[0].views.max() == 3


def test_duplicate_detections_in_one_camera_count_once() -> None:
    rng = np.random.default_rng(5)
    cams = ring(3)
    views = project(cams, person((0, 0), rng), 0.5, rng)
    doubled = {n: [v, v + np.array([1.5, -1.0, -0.2], np.float32)] for n, v in views.items()}
    frame = SceneFuser(cams, FusionParams()).fuse(doubled, 0)
    assert len(frame.persons) == 1 and frame.unassigned == []


# -- per-camera tracking --------------------------------------------------------------------------
def pose2d(x: float, y: float, spread: float = 60.0) -> np.ndarray:
    rng = np.random.default_rng(int(x * 7 + y))
    pts = np.array([[x, y]]) + rng.uniform(-spread, spread, (17, 2))
    return np.concatenate([pts, np.full((17, 1), 0.9)], axis=1).astype(np.float32)


def test_tracks_keep_ids_while_people_move_and_end_after_max_age() -> None:
    tracker = PoseTracker()
    a0, b0 = pose2d(100, 100), pose2d(400, 120)
    ids = []
    for t in range(30):
        a = a0 + np.array([2.0 * t, 0, 0], np.float32)
        b = b0 + np.array([-2.0 * t, 1.0 * t, 0], np.float32)
        order = [b, a] if t % 2 else [a, b]
        tracked = tracker.update(order, [0.9, 0.8], t * 33.0)
        got = dict(zip(("b", "a") if t % 2 else ("a", "b"), (tid for tid, _ in tracked), strict=True))
        ids.append((got["a"], got["b"]))
    assert len(set(ids)) == 1 and ids[0][0] != ids[0][1]
    newcomer = tracker.update([pose2d(800, 500)], [0.9], 30 * 33.0)
    assert newcomer[0][0] not in ids[0]
    back = tracker.update([a0 + np.array([60.0, 0, 0], np.float32)], [0.9], 30 * 33.0 + 1500)  # after 1.5 s
    assert back[0][0] not in ids[0], "a track unseen for longer than max_age_ms ends"


def test_too_few_confident_keypoints_fall_back_to_box_iou() -> None:
    tracker = PoseTracker(TrackerParams(min_keypoints=4))
    pose = pose2d(300, 300)
    faint = pose.copy()
    faint[3:, 2] = 0.1  # only 3 confident keypoints: OKS is not defined, the boxes overlap
    first = tracker.update([pose], [0.9], 0)
    again = tracker.update([faint + np.array([3.0, 0, 0], np.float32)], [0.5], 33)
    assert first[0][0] == again[0][0]


def test_one_euro_smoothing_reduces_jitter_and_follows_motion() -> None:
    rng = np.random.default_rng(6)
    f = OneEuroFilter()
    t = np.arange(300) / 30.0
    truth = 100 + 20 * np.sin(t)
    noisy = truth + rng.normal(0, 3, len(t))
    smooth = np.array([f(v, ts)[()] for v, ts in zip(noisy, t, strict=True)])
    assert np.std(smooth[30:] - truth[30:]) < 0.7 * np.std(noisy[30:] - truth[30:])
    tracker = PoseTracker(TrackerParams(smoothing=True))
    jitter = np.zeros((30, 17, 3), np.float32)
    jitter[..., :2] = rng.normal(0, 2, (30, 17, 2))
    out = [tracker.update([pose2d(200, 200) + jitter[i]], [0.9], i * 33.0)[0][1] for i in range(30)]
    assert np.std([o[0, 0] for o in out[5:]]) < 0.7 * np.std(jitter[5:, 0, 0])


# -- formats --------------------------------------------------------------------------------------
def test_openpose_layouts_map_to_coco(tmp_path: Path) -> None:
    import json

    body25 = np.zeros((25, 3))
    body25[[9, 12], :] = [[100, 200, 1], [140, 200, 1]]
    body25[8] = [120, 200, 1]  # BODY_25's mid hip
    body25[2] = [90, 100, 1]  # right shoulder
    coco18 = np.zeros((18, 3))
    coco18[2] = [90, 100, 1]
    for layout, arr in (("body25", body25), ("coco18", coco18)):
        folder = tmp_path / layout
        folder.mkdir()
        (folder / "x_000000000000_keypoints.json").write_text(
            json.dumps({"people": [{"pose_keypoints_2d": arr.ravel().tolist()}]})
        )
        (pose,) = read_openpose_folder(folder)[0]
        assert pose[6].tolist() == [90, 100, 1], layout  # COCO right shoulder
    assert TO_COCO["body25b"] == tuple(range(17))


def test_trc_round_trip_is_y_up_on_disk(tmp_path: Path) -> None:
    points = np.arange(51, dtype=np.float64).reshape(17, 3) / 10
    missing = points.copy()
    missing[4] = np.nan
    buffer = io.StringIO()
    write_trc(buffer, [points, missing, None], 60.0)
    first = buffer.getvalue().splitlines()[6].split("\t")
    assert first[:5] == ["1", "0.000000", "0.100000", "0.200000", "0.000000"], "(Y, Z, X) of the nose"
    path = tmp_path / "roundtrip.trc"
    path.write_text(buffer.getvalue())
    names, back = read_trc(path)
    assert names[0] == "Nose" and names[-1] == "RAnkle" and np.allclose(back[0], points)
    assert np.isnan(back[1, 4]).all() and np.isnan(back[2]).all()


# -- live 3D on hard footage: weak evidence, mirrored and doubled detections, occlusions, bone lengths -------
def walk(t: int, rng: np.random.Generator, speed: float = 0.02) -> np.ndarray:
    """A person walking along x, one frame ``t`` at 30 fps (a fixed body: its bones keep their lengths)."""
    body = person((0.0, 0.0), np.random.default_rng(0))
    out: np.ndarray = body + np.array([-0.8 + speed * t, 0.3, 0.0]) + rng.normal(0, 0.002, body.shape)
    return out


def test_a_partial_pose_of_low_score_still_feeds_its_person() -> None:
    """Per-keypoint confidences, not the pose's score: a camera that sees 6 joints faintly (0.35) contributes."""
    rng = np.random.default_rng(11)
    cams = ring(4)
    fuser = SceneFuser(cams, FusionParams())
    for t in range(10):
        views = {n: [v] for n, v in project(cams, walk(t, rng), 0.5, rng).items()}
        faint = views["c2"][0]
        faint[:, 2] = 0.05
        faint[[5, 6, 11, 12, 13, 14], 2] = 0.35  # a partial pose: its mean score is 0.16
        frame = fuser.fuse(views, t * 33.3)
        assert len(frame.persons) == 1 and "c2" in frame.persons[0].cameras
        assert frame.persons[0].used[[5, 6, 11, 12, 13, 14], 2].all() and not frame.persons[0].used[0, 2]


def test_a_person_scored_low_all_over_by_two_cameras_is_still_reconstructed() -> None:
    """A heatmap model scores a far person 0.1-0.3 everywhere (hpe-0001 on the lab's background person): two
    cameras that agree on such a pose make a person, with one id; a pose below the weak level does not."""
    rng = np.random.default_rng(5)
    cams = ring(4)
    fuser = SceneFuser(cams, FusionParams())
    ids = set()
    for t in range(10):
        near, far = walk(t, rng), person((1.5, 1.5), rng)
        views = {n: [v] for n, v in project(cams, near, 0.5, rng).items()}
        faint = project(cams, far, 0.5, rng)
        for n in ("c0", "c1"):
            faint[n][:, 2] = rng.uniform(0.12, 0.28, 17)  # not one keypoint at association.min_score
            views[n].append(faint[n])
        ghost = faint["c2"]
        ghost[:, 2] = 0.06  # below the weak level: never used
        views["c2"].append(ghost)
        views["c3"].append(faint["c3"] * np.array([1, 1, 0.06], np.float32))
        frame = fuser.fuse(views, t * 33.3)
        assert len(frame.persons) == 2, [p.cameras for p in frame.persons]
        weak = min(frame.persons, key=lambda p: float(np.nanmean(np.linalg.norm(p.points - far, axis=1))))
        assert set(weak.cameras) == {"c0", "c1"} and np.nanmean(np.linalg.norm(weak.points - far, axis=1)) < 0.05
        ids.add(weak.id)
    assert len(ids) == 1


def test_a_pose_with_left_and_right_exchanged_is_recognised() -> None:
    """Models confuse the sides of a person seen from behind: that camera's pose is mirrored, not thrown away."""
    from posefleet.merge.skeleton import MIRROR

    rng = np.random.default_rng(12)
    cams = ring(4)
    fuser = SceneFuser(cams, FusionParams())
    for t in range(20):
        truth = walk(t, rng)
        views = {n: [v] for n, v in project(cams, truth, 0.5, rng).items()}
        if t >= 5:
            views["c1"] = [views["c1"][0][MIRROR]]
        frame = fuser.fuse(views, t * 33.3)
        (p,) = frame.persons
        assert p.id == 1 and np.nanmax(np.linalg.norm(p.points - truth, axis=1)) < 0.03
        if t >= 5:
            assert p.used[:, 1].sum() >= 15, "the mirrored camera still contributes"


def test_a_second_detection_of_a_tracked_person_is_not_a_second_person() -> None:
    """YOLO in unusual poses finds one person twice: the extra detections (partial, shifted) in two cameras
    agree with each other, yet make no second 3D person and no duplicate frame."""
    rng = np.random.default_rng(13)
    cams = ring(4)
    fuser = SceneFuser(cams, FusionParams())
    for t in range(20):
        views = {n: [v] for n, v in project(cams, walk(t, rng), 0.5, rng).items()}
        if t >= 3:
            for n in ("c2", "c3"):
                extra = views[n][0] + np.array([12.0, -8.0, -0.3], np.float32)
                extra[:5, 2] = 0.0  # no head: a partial second box
                views[n].append(extra)
        frame = fuser.fuse(views, t * 33.3)
        assert [p.id for p in frame.persons] == [1]


def test_ids_survive_a_one_second_occlusion_and_two_camera_windows_not_a_long_absence() -> None:
    rng = np.random.default_rng(14)
    cams = ring(4)
    fuser = SceneFuser(cams, FusionParams())
    ids: list[int] = []
    for t in range(100):
        views = {n: [v] for n, v in project(cams, walk(t, rng, speed=0.01), 0.5, rng).items()}
        if 20 <= t < 50:  # hidden for a second
            views = {}
        elif 50 <= t < 70:  # then seen by two cameras only
            views = {n: views[n] for n in ("c0", "c1")}
        frame = fuser.fuse(views, t * 33.3)
        ids.extend(p.id for p in frame.persons)
        assert len(frame.persons) == (0 if 20 <= t < 50 else 1)
    assert set(ids) == {1}
    later = fuser.fuse({n: [v] for n, v in project(cams, walk(100, rng), 0.5, rng).items()}, 99 * 33.3 + 3000)
    assert [p.id for p in later.persons] == [2], "back after 3 s: a new id"


@pytest.mark.parametrize(("fps", "speed"), [(30, 1.5), (10, 2.0)])
def test_people_walking_past_each_other_keep_one_id_each(fps: int, speed: float) -> None:
    """Three people crossing the rig at walking pace and faster, neighbours passing each other 0.7 m apart and
    hiding each other from some cameras, at 30 and at 10 windows a second: each is reconstructed in every
    window two cameras see them (within 0.3 m), under one id, once; nobody else is."""
    from people import passing_views
    from posefleet.merge.quality import visible_cameras

    cams = ring(4, radius=5.0)
    for seed in range(2):
        views, truth = passing_views(cams, fps, speed, lane=0.7, seed=seed)
        fuser = SceneFuser(cams, FusionParams())
        ids: list[set[int]] = [set() for _ in range(truth.shape[1])]
        for k, frame in enumerate(views):
            persons = fuser.fuse(frame, k * 1000 / fps).persons
            shown = visible_cameras(truth[k], frame, cams, min_keypoints=6, tol=0.15)
            matched = 0
            for i, body in enumerate(truth[k]):
                near = [p.id for p in persons if np.nanmean(np.linalg.norm(p.points - body, axis=1)) < 0.3]
                assert len(near) == (1 if shown[i] >= 2 else len(near[:1])), (seed, k, i, near)
                ids[i].update(near)
                matched += len(near)
            assert matched == len(persons), (seed, k, [p.id for p in persons])
        assert all(len(found) == 1 for found in ids), (seed, ids)


def test_a_walker_seen_by_halves_keeps_a_true_velocity_through_a_gap() -> None:
    """Walking at 1.5 m/s, 10 windows a second: seen whole, then by turns only above and only below the waist
    (each joint last seen two windows before), then unseen for 0.4 s. Each joint's displacement counts over its
    own time unseen, so the velocity stays 1.5 m/s (over the last window alone it read twice that) and
    predicts them where they are seen again, 0.75 m on: the same id."""
    rng = np.random.default_rng(22)
    cams = ring(4)
    fuser = SceneFuser(cams, FusionParams())
    body = person((-1.2, -1.2), np.random.default_rng(0))
    upper = np.arange(17) < 11
    ids: list[int] = []
    for t in range(22):
        at = body + np.array([0.15, 0.15, 0.0]) * t / np.sqrt(2) + rng.normal(0, 0.002, body.shape)
        views = {n: [v] for n, v in project(cams, at, 0.5, rng).items()}
        if 6 <= t < 14:  # only one half of the body, the other half each window
            for v in views.values():
                v[0][upper if t % 2 else ~upper, 2] = 0.0
        if 14 <= t < 18:
            views = {}
        ids.extend(p.id for p in fuser.fuse(views, t * 100.0).persons)
    assert set(ids) == {1}


def test_a_person_who_stops_while_unseen_keeps_their_id() -> None:
    """Walking at 1.5 m/s, hidden for 0.4 s, seen again where they stopped: 0.6 m from where their motion would
    have taken them (farther than ``max_track_distance_m``), at their last position: the same person."""
    rng = np.random.default_rng(21)
    cams = ring(4)
    fuser = SceneFuser(cams, FusionParams())
    body = person((-0.5, -0.5), np.random.default_rng(0))
    ids: list[int] = []
    for t in range(40):
        # 1.5 m/s at 30 fps until frame 15, then still; diagonally, across every camera's line of sight
        at = body + np.array([0.05, 0.05, 0.0]) * min(t, 15) / np.sqrt(2) + rng.normal(0, 0.002, body.shape)
        views = {} if 16 <= t < 28 else {n: [v] for n, v in project(cams, at, 0.5, rng).items()}
        ids.extend(p.id for p in fuser.fuse(views, t * 33.3).persons)
    assert set(ids) == {1}


def test_a_joint_that_breaks_its_learned_bones_is_not_published() -> None:
    """A wrist that all views put 25 cm off (a 2D model's consistent mistake) breaks the forearm's learned length:
    with no view to leave out that fixes it, the wrist is left out; the rest of the person is published."""
    rng = np.random.default_rng(15)
    cams = ring(4)
    fuser = SceneFuser(cams, FusionParams())
    for t in range(30):
        truth = walk(t, rng)
        if t == 29:
            truth[9] += np.array([0.0, 0.0, -0.25])  # the left wrist, 25 cm lower
        frame = fuser.fuse({n: [v] for n, v in project(cams, truth, 0.5, rng).items()}, t * 33.3)
    (p,) = frame.persons
    assert np.isnan(p.points[9]).all() and p.views[9] == 0
    assert np.isfinite(p.points[[5, 7, 11, 13, 15]]).all(), "the elbow and the rest stay"


def test_the_bone_model_blames_the_outer_joint_and_learns_both_sides_as_one() -> None:
    from posefleet.merge.skeleton import BONES, BoneModel

    model = BoneModel(min_samples=10, tolerance=0.12)
    body = person((0, 0), np.random.default_rng(0))
    for _ in range(5):  # 5 skeletons: 10 samples of each bone with its twin
        model.learn(body)
    lengths = model.lengths()
    upper_left, upper_right = BONES.index((5, 7)), BONES.index((6, 8))
    assert lengths[upper_left] == pytest.approx(lengths[upper_right], abs=0.01)
    bent = body.copy()
    bent[7] += np.array([0.0, 0.25, 0.0])  # the left elbow off: upper arm and forearm both change
    blamed = model.violations(bent)
    assert blamed[7] and not blamed[5], "the elbow, not the shoulder the trunk holds"
    giant = body.copy()
    giant[15] = giant[13] + np.array([0.0, 0.0, -1.5])  # a 1.5 m shin: no person has one
    assert BoneModel().violations(giant)[15], "implausible lengths are refused before anything is learned"


def test_the_bone_model_keeps_the_median_of_its_last_window_and_trusts_widths_after_as_many_skeletons() -> None:
    """Lengths are the median of the last ``window`` samples (the oldest leave as new ones come), the same
    as a median computed from scratch; a width (its own twin) is trusted after as many skeletons as a limb."""
    from posefleet.merge.skeleton import BONES, BoneModel, bone_lengths

    rng = np.random.default_rng(3)
    body = person((0, 0), rng)
    model = BoneModel(window=7, min_samples=10, tolerance=0.2)
    shoulders, upper_left, upper_right = BONES.index((5, 6)), BONES.index((5, 7)), BONES.index((6, 8))
    seen = []
    for i in range(25):
        if i == 4:
            trusted = np.isfinite(model.lengths())
            assert not trusted[shoulders] and not trusted[upper_left], "4 skeletons: 8 limb samples, 4 widths"
        if i == 5:
            trusted = np.isfinite(model.lengths())
            assert trusted[shoulders] and trusted[upper_left], "5 skeletons: both trusted"
        skeleton = body + rng.normal(0.0, 0.01, body.shape)
        seen.append(bone_lengths(skeleton, BONES))
        model.learn(skeleton)
    last = np.array(seen[-7:])
    lengths = model.lengths()
    assert lengths[shoulders] == pytest.approx(np.median(last[:, shoulders]), abs=1e-12)
    both_sides = np.concatenate([last[:, upper_left], last[:, upper_right]])
    assert lengths[upper_left] == lengths[upper_right] == pytest.approx(np.median(both_sides), abs=1e-12)


def test_limbs_are_held_to_a_human_height_until_learned_and_a_child_still_gets_hers() -> None:
    """Before any limb is learned, a limb far from its share of 1.70 m (35% either way) is blamed, though no
    plausible-length limit refuses it (a PoseNet participant's first frames gave a 0.44 m upper arm). A 1 m
    child, one of whose thighs fits, gets her height from it once it is learned (10 samples); a toddler none
    of whose limbs fit is held to it only for the first ``PRIOR_LEARNS`` learns. Both then keep every limb."""
    from posefleet.merge.skeleton import LIMB_BONES, PRIOR_LEARNS, BoneModel, bone_lengths

    body = person((0, 0), np.random.default_rng(0))
    long_arm = body.copy()
    long_arm[7] = long_arm[5] + (long_arm[7] - long_arm[5]) * 0.44 / np.linalg.norm(long_arm[7] - long_arm[5])
    model = BoneModel()
    assert model.violations(long_arm)[7] and not model.violations(body).any()
    for scale, held in ((0.6, 10), (0.5, PRIOR_LEARNS)):  # a 1 m child: one thigh fits; a toddler: none
        child = body.copy()
        child[5:] = child[5:].mean(axis=0) + (child[5:] - child[5:].mean(axis=0)) * scale  # every limb scaled
        child_model = BoneModel()
        learns = 0
        while child_model.violations(child).any():
            assert learns < PRIOR_LEARNS + 20, scale
            kept = child.copy()
            kept[child_model.violations(child)] = np.nan  # what the fuser publishes, and so learns from
            child_model.learn(kept)
            learns += 1
        assert learns == held, (scale, learns)  # the fitting thigh learned gives her height; else the prior ends
        for _ in range(10):
            assert not child_model.violations(child).any()
            child_model.learn(child)
        assert np.allclose(child_model.lengths()[: len(LIMB_BONES)], bone_lengths(child), rtol=0.05), scale


def test_until_limbs_are_learned_the_twin_further_from_the_guess_is_blamed() -> None:
    """A person's left and right limbs are as long. While their length is a guess, of two twins more than the
    tolerance apart the one further from the guess is blamed, though both lie within the prior's 35% (PoseNet's
    far person's first windows: upper arms of 0.24 and 0.36-0.40 m). Learned limbs are held to their learned
    length alone: twins each within the tolerance of it stand, however far apart."""
    from posefleet.merge.skeleton import BoneModel

    body = person((0, 0), np.random.default_rng(0))

    def upper_arms(left: float, right: float) -> np.ndarray:
        out = body.copy()
        for shoulder, elbow, length in ((5, 7, left), (6, 8, right)):
            arm = body[elbow] - body[shoulder]
            out[elbow:11:2] = body[elbow:11:2] - body[elbow] + body[shoulder] + arm * length / np.linalg.norm(arm)
        return out

    usual = float(np.linalg.norm(body[7] - body[5]))  # 0.32 m: 1.70 m's share
    guessing = BoneModel(tolerance=0.12)
    assert not guessing.violations(upper_arms(usual, usual)).any()
    assert np.flatnonzero(guessing.violations(upper_arms(usual, 0.40))).tolist() == [8]  # the right elbow
    assert np.flatnonzero(guessing.violations(upper_arms(0.25, usual))).tolist() == [7]
    learned = BoneModel(tolerance=0.12)
    for _ in range(10):
        learned.learn(body)
    assert learned.bounds().twin_slack is None
    assert not learned.violations(upper_arms(usual - 0.026, usual + 0.034)).any()
    assert learned.violations(upper_arms(usual, 0.40))[8]


def test_dlt_is_the_least_squares_point_of_its_unit_rows_and_refuses_single_views() -> None:
    """The DLT gives the least-squares point of its unit rows (fourth coordinate 1) on views 20 px off, as
    near the truth as the SVD's null vector (the homogeneous DLT, Pose2Sim's); a joint with fewer than two
    weighted views, or one ray given twice, is NaN and does not disturb the others."""
    from posefleet.merge.triangulation import dlt

    rng = np.random.default_rng(3)
    cams = ring(4)
    P = np.stack([c.P for c in cams.values()])
    truth = person((0.2, 0.4), rng)
    xy = np.stack([project(cams, truth, 20.0, rng)[n][:, :2] for n in cams], axis=1).astype(np.float64)
    w = rng.uniform(0.3, 1.0, size=(17, 4))
    w[0, 1:] = 0.0  # one view only
    w[1] = 0.0  # none
    xy[2, 3] = np.nan  # a missing view with no weight
    w[2, 3] = 0.0
    got = dlt(P, xy, w)
    assert np.isnan(got[:2]).all() and np.isfinite(got[2:]).all()
    ours, svd = [], []
    for j in range(2, 17):
        used = w[j] > 0
        rows = []
        for c in np.flatnonzero(used):
            for axis in (0, 1):
                row = xy[j, c, axis] * P[c, 2] - P[c, axis]
                rows.append(row / np.linalg.norm(row) * w[j, c])
        A = np.array(rows)
        assert np.abs(got[j] - np.linalg.lstsq(A[:, :3], -A[:, 3], rcond=None)[0]).max() < 1e-9  # metres
        X = np.linalg.svd(A)[2][-1]
        ours.append(np.linalg.norm(got[j] - truth[j, :3]))
        svd.append(np.linalg.norm(X[:3] / X[3] - truth[j, :3]))
    assert np.mean(ours) < 1.05 * np.mean(svd), (np.mean(ours), np.mean(svd))
    twice = dlt(P[[0, 0]], xy[3:4, [0, 0]], np.ones((1, 2)))  # one ray twice: no point, not a guess
    assert np.isnan(twice).all()


def test_bones_of_several_people_are_blamed_at_once_as_one_at_a_time() -> None:
    """``blame`` over a batch of people names the joints ``violations`` names for each one alone: limb bones
    blame their outer joint, trunk bones the end with more bones off, then the one reprojecting worse."""
    from posefleet.merge.skeleton import BoneModel, blame

    rng = np.random.default_rng(4)
    models, bodies, errors = [], [], []
    for k in range(3):
        model = BoneModel(min_samples=10, tolerance=0.12)
        body = person((k, 0), rng)
        for _ in range(5):
            model.learn(body)
        body = body.copy()
        body[[9, 12, 6][k]] += np.array([0.0, 0.0, 0.2])  # a wrist, a hip, a shoulder out of place
        models.append(model)
        bodies.append(body)
        errors.append(rng.uniform(0, 10, 17))
    bounds = [m.bounds() for m in models]
    together = blame(
        np.stack(bodies), np.stack(errors), np.stack([b[0] for b in bounds]), np.stack([b[1] for b in bounds])
    )
    for k, model in enumerate(models):
        assert (together[k] == model.violations(bodies[k], errors[k])).all()
        assert together[k, [9, 12, 6][k]], "the displaced joint is blamed"


def test_butterworth_filters_each_seen_run_and_keeps_gaps() -> None:
    """Zero-phase low-pass: a slow motion passes unchanged in phase, jitter is removed, gaps stay gaps."""
    from posefleet.merge.filters import butterworth

    rate, t = 60.0, np.arange(240) / 60.0
    rng = np.random.default_rng(16)
    truth = np.sin(2 * np.pi * 0.5 * t)  # 0.5 Hz
    points = np.repeat((truth + rng.normal(0, 0.02, t.shape))[:, None, None], 3, axis=2).repeat(2, axis=1)
    points[100:110, 0] = np.nan  # joint 0 unseen for 10 frames
    out = butterworth(points, rate)
    assert np.isnan(out[100:110, 0]).all() and np.isfinite(out[:, 1]).all()
    inner = np.r_[10:90, 120:230]  # away from the runs' ends
    rms = [float(np.sqrt(np.mean((x[inner, 0, 0] - truth[inner]) ** 2))) for x in (out, points)]
    assert rms[0] < 0.5 * rms[1], rms
    assert abs(np.argmax(np.correlate(out[:, 1, 0], truth, "full")) - (len(t) - 1)) <= 1, "no lag"
    with pytest.raises(ValueError, match="half the frame rate"):
        butterworth(points, 10.0, cutoff_hz=6.0)


def test_assignment_per_camera_is_optimal_with_and_without_the_shortcut() -> None:
    """Each camera's columns get the optimal assignment: where every row's cheapest column differs (the
    shortcut) and where rows compete for one column, or outnumber the camera's poses (the solver)."""
    from posefleet.merge.scene import assign_per_camera
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(5)
    for trial in range(200):
        rows = int(rng.integers(1, 5))
        cams = np.sort(rng.integers(0, 3, size=int(rng.integers(1, 9))))
        cost = rng.uniform(0, 1, (rows, len(cams)))
        if trial % 2:
            cost[:, 0] = 0.0  # every row's cheapest: one column
        pairs = assign_per_camera(cost, cams)
        for cam in np.unique(cams).tolist():
            mine = np.flatnonzero(cams == cam)
            got = [(t, n) for t, n in pairs if cams[n] == cam]
            assert len({t for t, _ in got}) == len(got) == min(rows, len(mine)), "one column per row, each once"
            assert len({n for _, n in got}) == len(got)
            t, n = linear_sum_assignment(cost[:, mine])
            assert np.isclose(sum(cost[t_, n_] for t_, n_ in got), cost[t, mine[n]].sum())


def test_coincident_skeletons_are_one_person_and_people_apart_are_not() -> None:
    """``_same_people``: one person triangulated twice (a few cm apart, or trunks together with limbs
    disagreeing) is one; bodies apart, even side by side, are not (the bounding-box shortcut included)."""
    rng = np.random.default_rng(6)
    fuser = SceneFuser(ring(4))
    a = person((0.0, 0.0), rng)
    twice = a + rng.normal(0, 0.02, a.shape)
    limbs_off = a.copy()
    limbs_off[[7, 8, 9, 10, 13, 14, 15, 16]] += 0.3  # limbs triangulated wrong, the trunk right
    beside = person((0.5, 0.0), rng)  # shoulder to shoulder, 10 cm apart
    far = person((3.0, 1.0), rng)
    same = fuser._same_people(np.stack([a, twice, limbs_off, beside, far]))
    assert same[0, 1] and same[1, 0] and same[0, 2]
    assert not same[0, 3] and not same[0, 4] and not same[3, 4]
    assert not fuser._same_people(np.stack([a, far])).any(), "people apart: nothing to merge"


def test_a_camera_shows_a_hidden_person_only_with_a_pose_of_their_own() -> None:
    """The benchmark's eligibility: a pose counts for the one person it fits best, so the pose of someone in
    front does not make the person hidden behind them seen by that camera."""
    from posefleet.merge.quality import visible_cameras

    cams = ring()
    rng = np.random.default_rng(5)
    front, behind = person((0.3, 0.0), rng), person((-0.1, 0.0), rng)  # in line for c0 at (4, 0)
    both = project(cams, np.concatenate([front, behind]), 1.0, rng)
    frame = {"c0": [both["c0"][:17]], "c1": [both["c1"][:17], both["c1"][17:]], "c2": [both["c2"][17:]]}
    skeletons = np.stack([front, behind])
    assert visible_cameras(skeletons, frame, cams, min_keypoints=6, tol=0.15).tolist() == [2, 2]
    del frame["c2"]
    assert visible_cameras(skeletons, frame, cams, min_keypoints=6, tol=0.15).tolist() == [2, 1]
