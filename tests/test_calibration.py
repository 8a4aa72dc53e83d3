"""``posefleet calibrate``: intrinsics from a board, extrinsics from known points and from people.

Synthetic boards and people (rendered through known cameras) check the algorithms to tight tolerances;
the shared rig's own checkerboard photos, platform points and recordings check them on real data against
its Qualisys calibration (``bench-calibration`` measures the figures)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from nodes import run_cli
from people import passing_views, people_views
from posefleet.bench.calibration import PLATFORM, clicks, export_distortion
from posefleet.merge.boards import parse_board
from posefleet.merge.calibration import CalibrationError, Camera, load_calibration, write_calibration
from posefleet.merge.extrinsics import anchor, camera_difference, camera_from_points, rig_differences, transform
from posefleet.merge.intrinsics import calibrate_intrinsics
from posefleet.merge.selfcal import (
    LEG_TRUNK_OF_STATURE,
    STARTS_AGREE,
    SelfCalParams,
    calibrate_from_people,
    refine_with_people,
    reprojection_under,
    spread,
    start_disagreement,
    starts_verdict,
)
from posefleet.node.tools.fuse import video_poses
from posefleet.node.tools.media import frame_count

LAB = "multiview/pose2sim"


def _qualisys(assets: Path) -> dict[str, Camera]:
    return load_calibration(assets / LAB / "calibration" / "Calib_qualisys.toml")


def _people_cli(
    args: list[str | Path], tmp_path: Path, reference: dict[str, Camera]
) -> tuple[dict[str, tuple[float, float]], str]:
    """``posefleet calibrate people`` run with ``args``: each camera's (centre m, orientation deg) error after
    the best similarity alignment to ``reference``, and what it printed."""
    done = run_cli(*args, "--out", tmp_path / "people.toml")
    assert done.returncode == 0, done.stderr
    _, errors = rig_differences(load_calibration(tmp_path / "people.toml"), reference)
    return errors, done.stdout


def _lab_clips(assets: Path, tmp_path: Path, frames: int, width: int | None = None) -> list[str]:
    """The lab's four videos rewritten losslessly (FFV1, the colours kept): their first ``frames``, cut to
    ``width`` pixels at the right edge where given; returned as ``--camera NAME=CLIP`` arguments."""
    args = []
    for name in _qualisys(assets):
        clip = tmp_path / f"{name}.avi"
        cap = cv2.VideoCapture(str(assets / LAB / "videos" / f"{name.replace('_', '')}.mp4"))
        writer = None
        for _ in range(frames):
            ok, frame = cap.read()
            assert ok
            frame = np.ascontiguousarray(frame[:, :width])
            if writer is None:
                size = (frame.shape[1], frame.shape[0])
                writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"FFV1"), 60.0, size)
            writer.write(frame)
        assert writer is not None
        writer.release()
        cap.release()
        args += ["--camera", f"{name}={clip}"]
    return args


# -- boards and intrinsics --------------------------------------------------------------------------------
def test_board_specs_are_parsed_or_refused_saying_the_format() -> None:
    board = parse_board("checkerboard:4x7:60")
    assert (board.cols, board.rows, board.square_m) == (4, 7, 0.06) and board.corners().shape == (28, 3)
    assert parse_board("charuco:5x7:40:30").corners().shape == (24, 3)
    for bad in (
        "checkerboard:4x7",
        "chess:4x7:60",
        "checkerboard:4by7:60",
        "charuco:5x7:40:50",
        "charuco:5x7:40:30:NOPE",
    ):
        with pytest.raises(CalibrationError, match="--board"):
            parse_board(bad)


def _render_views(
    board_image: np.ndarray, metres_per_px: float, K: np.ndarray, size: tuple[int, int], count: int
) -> list[np.ndarray]:
    """The flat board image seen by camera K from ``count`` random poses (about 0.6-1.0 m away, tilted)."""
    rng = np.random.default_rng(3)
    views: list[np.ndarray] = []
    h, w = board_image.shape[:2]
    centre = np.array([w, h]) * metres_per_px / 2
    while len(views) < count:
        rvec = rng.normal(0, 0.35, 3)
        R, _ = cv2.Rodrigues(rvec)
        t = np.array([rng.uniform(-0.15, 0.15), rng.uniform(-0.1, 0.1), rng.uniform(0.6, 1.0)]) - R @ np.r_[centre, 0]
        # board pixel -> metres (z = 0) -> image: H = K [r1 r2 t] S
        S = np.diag([metres_per_px, metres_per_px, 1.0])
        H = K @ np.column_stack([R[:, 0], R[:, 1], t]) @ S
        corners = cv2.perspectiveTransform(np.array([[[0, 0], [w, 0], [w, h], [0, h]]], np.float32), H)[0]
        if (corners < 0).any() or (corners[:, 0] > size[0]).any() or (corners[:, 1] > size[1]).any():
            continue
        views.append(cv2.warpPerspective(board_image, H, size, borderValue=(127, 127, 127)))
    return views


def test_intrinsics_from_rendered_checkerboard_and_charuco_views(tmp_path: Path) -> None:
    """Both board kinds, rendered through a known camera: K comes back within 1% and 4 px."""
    K = np.array([[900.0, 0, 650], [0, 900.0, 355], [0, 0, 1]])
    size = (1280, 720)
    square_px = 60
    checker = np.full(((7 + 3) * square_px, (4 + 3) * square_px), 255, np.uint8)
    for r in range(8):
        for c in range(5):
            if (r + c) % 2 == 0:
                y, x = (r + 1) * square_px, (c + 1) * square_px
                checker[y : y + square_px, x : x + square_px] = 0
    dictionary = cv2.aruco.getPredefinedDictionary(cv2.aruco.DICT_4X4_50)
    charuco = cv2.aruco.CharucoBoard((5, 7), 0.04, 0.03, dictionary).generateImage((5 * 100, 7 * 100))
    charuco = cv2.copyMakeBorder(charuco, 60, 60, 60, 60, cv2.BORDER_CONSTANT, value=255)
    cases = [
        ("checkerboard:4x7:60", checker, 0.06 / square_px),
        ("charuco:5x7:40:30", charuco, 0.04 / 100),
    ]
    for spec, image, metres_per_px in cases:
        folder = tmp_path / spec.split(":")[0]
        folder.mkdir()
        for i, view in enumerate(_render_views(image, metres_per_px, K, size, 16)):
            cv2.imwrite(str(folder / f"view{i:02d}.png"), view)
        found = calibrate_intrinsics("cam", folder, parse_board(spec))
        assert found.rms_px < 0.5, (spec, found.rms_px)
        assert abs(found.K[0, 0] / K[0, 0] - 1) < 0.01 and abs(found.K[1, 1] / K[1, 1] - 1) < 0.01, (spec, found.K)
        assert np.abs(found.K[:2, 2] - K[:2, 2]).max() < 4, (spec, found.K)


def test_calibrate_intrinsics_on_the_rigs_photos(assets: Path, tmp_path: Path) -> None:
    """The shared checkerboard photos of one camera (two of which the default flags miss): RMS <= 0.5 px,
    focal length within 2% of Qualisys and k1 k2 near its export's (the TOML's are those divided by 64), every
    photo reported, the detections drawn; a wrong board is refused naming the camera, the folder and how many
    views had it."""
    photos = assets / LAB / "calibration-images" / "intrinsics" / "cam03"
    out = tmp_path / "intrinsics.toml"
    done = run_cli(
        "calibrate", "intrinsics", "--camera", f"cam_03={photos}", "--board", "checkerboard:4x7:60",
        "--out", out, "--detections", tmp_path / "drawn", "--json", tmp_path / "report.json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    camera = load_calibration_one(out, "cam_03")
    reference = _qualisys(assets)["cam_03"]
    report = json.loads((tmp_path / "report.json").read_text())[0]
    assert report["rms_px"] <= 0.5
    assert abs(camera.K[0, 0] / reference.K[0, 0] - 1) < 0.02 and abs(camera.K[1, 1] / reference.K[1, 1] - 1) < 0.02
    k1, k2 = export_distortion(assets / LAB)["cam_03"]  # -0.047, 0.138
    assert abs(camera.dist[0] - k1) < 0.01 and abs(camera.dist[1] - k2) < 0.05, camera.dist
    assert len(report["views"]) == 7 and all(p.name in done.stdout for p in photos.iterdir())
    assert len(list((tmp_path / "drawn" / "cam_03").glob("*.jpg"))) >= 6
    wrong = run_cli(
        "calibrate", "intrinsics", "--camera", f"cam_03={photos}", "--board", "checkerboard:5x7:60", "--out", out
    )
    assert wrong.returncode == 2 and "camera cam_03" in wrong.stderr and "found in 0 of 7 views" in wrong.stderr


def load_calibration_one(path: Path, name: str) -> Camera:
    """One camera of a TOML that may hold only one (``load_calibration`` wants a scene of two)."""
    import tomllib

    section = tomllib.loads(path.read_text())[name]
    R, _ = cv2.Rodrigues(np.asarray(section["rotation"], np.float64))
    return Camera(
        name, tuple(int(v) for v in section["size"]), np.asarray(section["matrix"]),  # type: ignore[arg-type]
        np.asarray(section["distortions"]), R, np.asarray(section["translation"]),
    )  # fmt: skip


# -- known points ---------------------------------------------------------------------------------------
def test_calibrate_points_places_every_camera_from_clicked_platform_points(assets: Path, tmp_path: Path) -> None:
    """The 8 platform points clicked with 1 px noise in each camera: every centre within 5 cm of Qualisys;
    the written TOML reads back; a camera with too few known points is refused saying which."""
    reference = _qualisys(assets)
    calib = assets / LAB / "calibration" / "Calib_qualisys.toml"
    args: list[str | Path] = ["calibrate", "points", "--calibration", calib, "--out", tmp_path / "points.toml"]
    for name, clicked in clicks(reference, 1.0, seed=7).items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({
            "pixels": {k: v.tolist() for k, v in clicked.items()},
            "world_points": {k: v.tolist() for k, v in PLATFORM.items()},
        }))  # fmt: skip
        args += ["--camera", f"{name}={path}"]
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    placed = load_calibration(tmp_path / "points.toml")
    for name, cam in reference.items():
        assert np.linalg.norm(placed[name].center - cam.center) < 0.05, name
    few = tmp_path / "few.json"
    few.write_text(
        json.dumps(
            {"pixels": {"p1": [1, 2], "p2": [3, 4], "x": [5, 6]}, "world_points": {"p1": [0, 0, 0], "p2": [1, 0, 0]}}
        )
    )
    refused = run_cli(
        "calibrate", "points", "--calibration", calib, "--camera", f"cam_01={few}", "--out", tmp_path / "x.toml"
    )
    assert refused.returncode == 2 and "camera cam_01" in refused.stderr and "no world position for x" in refused.stderr


# -- people ---------------------------------------------------------------------------------------------
def test_people_place_every_camera_of_a_rendered_scene(assets: Path) -> None:
    """People rendered through the rig's Qualisys cameras (2 px noise, a distractor per camera, people in a
    different order in every view), 120 frames of which the calibration takes 60 spread over them: after
    the similarity alignment every centre is within 4 cm and every orientation within 1 degree; the height
    of the people gives the scale within 3%."""
    reference = _qualisys(assets)
    views = people_views(reference, 120, 2.0, seed=1)
    result = calibrate_from_people(reference, views, params=SelfCalParams(max_frames=60))
    assert result.frames == 60
    assert result.placed == list(reference)
    scale, errors = rig_differences({n: result.cameras[n] for n in result.placed}, reference)
    assert all(e[0] < 0.04 and e[1] < 1.0 for e in errors.values()), errors
    assert abs(scale - 1) < 0.03, scale
    assert abs(LEG_TRUNK_OF_STATURE - 0.779) < 1e-9


def test_people_walking_in_mirror_image_lanes_place_the_facing_cameras(assets: Path) -> None:
    """Two people crossing the rig in opposite directions in lanes either side of its centre: the scene looks
    the same turned half round, and the facing cameras cam_02 and cam_04 agree on a relative pose turned 180
    degrees with the most inliers of all pairs (placed from it, every camera ended metres off). The placement
    starts from the pair whose rotation closes the most loops with the others instead: every camera within
    2 cm and 0.5 degrees."""
    reference = _qualisys(assets)
    views, _ = passing_views(reference, 15.0, 1.2, lane=1.0, seed=3, people=2)
    result = calibrate_from_people(reference, views)
    assert result.placed == list(reference)
    _, errors = rig_differences({n: result.cameras[n] for n in result.placed}, reference)
    assert all(e[0] < 0.02 and e[1] < 0.5 for e in errors.values()), errors


def test_a_long_recording_is_cut_to_frames_spread_over_it() -> None:
    """``spread``: every frame of a recording within the budget; of a longer one, the budget's frames from the
    first to the last, evenly spaced (none twice)."""
    assert spread(5, 300) == [0, 1, 2, 3, 4]
    assert spread(300, 300) == list(range(300))
    for count, budget in ((301, 300), (1000, 300), (7, 3), (36000, 300)):
        kept = spread(count, budget)
        assert len(set(kept)) == len(kept) == budget and kept == sorted(kept)
        assert kept[0] == 0 and kept[-1] == count - 1
        gaps = np.diff(kept)
        assert gaps.max() - gaps.min() <= 1, (count, budget, gaps.min(), gaps.max())


def test_the_starts_check_measures_how_far_other_rigs_lie_and_warns_past_its_limit(assets: Path) -> None:
    """``start_disagreement``: another start's rig that is this one under a similarity (moved, turned,
    scaled) agrees; one with a camera 1 m off disagrees by 1 m over the rig's size; one that placed fewer
    than 3 of the cameras cannot be compared. The verdict warns past ``STARTS_AGREE``."""
    reference = _qualisys(assets)
    names = list(reference)

    chosen = dict(reference)
    turn = cv2.Rodrigues(np.array([0.1, -0.2, 0.3]))[0]
    same = transform(dict(reference), 0.5, turn, np.array([1.0, 2.0, 0.5]))
    assert start_disagreement(chosen, [same]) < 1e-9
    moved = dict(reference)
    first = names[0]
    moved[first] = replace(moved[first], t=moved[first].t - moved[first].R @ np.array([1.0, 0.0, 0.0]))
    centres = np.stack([c.center for c in reference.values()])
    size = np.linalg.norm(centres - centres.mean(axis=0), axis=1).mean()
    gap = start_disagreement(chosen, [same, moved])
    assert 0.5 / size < gap <= 1.0 / size, (gap, size)  # the similarity shares the 1 m among the cameras
    assert np.isnan(start_disagreement(chosen, [{n: reference[n] for n in names[:2]}]))
    assert np.isnan(start_disagreement(chosen, []))
    assert "starts agree" in starts_verdict(STARTS_AGREE / 2)
    assert starts_verdict(gap).startswith("WARNING: the starts disagree") and "metres off" in starts_verdict(gap)
    assert "could not be checked" in starts_verdict(float("nan"))


def test_refining_brings_a_moved_camera_back_and_keeps_the_given_frame(assets: Path) -> None:
    """A rig whose cam_03 moved (15 cm, 3 degrees) since it was calibrated: refined on the people it films
    (rendered through the true rig, 2 px noise) every camera is back within 2 cm and 0.3 degrees of the truth
    in the given world frame (no alignment), the moved camera's reprojection error falls, and frames where
    no two cameras share a person, or a calibration without extrinsics, are refused saying so. A camera
    knocked on its mount (turned 5 degrees about its centre, about each of its axes: its joints 20-100 px off,
    past the 30 px a joint may be off after the first round) comes back as well, and with the centres held
    (``keep_centres``) within 0.1 degrees, no camera moving."""
    truth = _qualisys(assets)
    views = people_views(truth, 40, 2.0, seed=6)
    turn = cv2.Rodrigues(np.radians([3.0, 0.0, 0.0]))[0]
    moved = dict(truth)
    moved["cam_03"] = replace(
        truth["cam_03"], R=turn @ truth["cam_03"].R, t=truth["cam_03"].t + np.array([0.15, 0.0, 0.0])
    )
    result = refine_with_people(moved, views)
    assert result.placed == list(truth)
    for name, cam in truth.items():
        centre, angle = camera_difference(result.cameras[name], cam)
        assert centre < 0.02 and angle < 0.3, (name, centre, angle)
    before = {r.name: r.start_px for r in result.report}
    after = {r.name: r.error_px for r in result.report}
    assert after["cam_03"] < 4 < before["cam_03"], (before, after)  # 2 px noise: its error falls to about it
    few = views[:20]
    for axis in np.eye(3):
        knock = cv2.Rodrigues(np.radians(5.0) * axis)[0]
        was = truth["cam_03"]
        knocked = {**truth, "cam_03": replace(was, R=knock @ was.R, t=knock @ was.t)}
        held = refine_with_people(knocked, few, keep_centres=True)
        assert held.placed == list(truth) and "centres held" in held.scale_source
        for name, cam in truth.items():
            centre, angle = camera_difference(held.cameras[name], cam)
            assert centre < 1e-9 and angle < 0.1, (axis, name, centre, angle)
        if axis[1]:  # about its vertical axis: the free refinement of a 3 degree knock ended 62 cm off before
            free = refine_with_people(knocked, few)
            for name, cam in truth.items():
                centre, angle = camera_difference(free.cameras[name], cam)
                assert centre < 0.02 and angle < 0.3, (axis, name, centre, angle)
    alone = [{"cam_01": frame["cam_01"]} for frame in views]  # nobody else sees anyone
    with pytest.raises(CalibrationError, match="no person is seen by two cameras"):
        refine_with_people(truth, alone)
    unplaced = {n: replace(c, R=np.eye(3), t=np.zeros(3)) for n, c in truth.items()}  # intrinsics alone
    with pytest.raises(CalibrationError, match="cam_01 and cam_02 stand at one point"):
        refine_with_people(unplaced, views)


def test_a_calibration_is_judged_on_people_it_was_not_made_from(assets: Path) -> None:
    """``reprojection_under``: under the rig that filmed them (2 px noise) nearly every paired joint is
    triangulated and each camera's median error is about the noise; with one camera turned 1 degree (about
    29 px) its median error is the largest, past 10 px (the joints it pulls off mislead the others too)."""
    truth = _qualisys(assets)
    views = people_views(truth, 20, 2.0, seed=3)
    right = reprojection_under(truth, views)
    assert right.triangulated > 0.9 * right.paired > 0, (right.triangulated, right.paired)
    assert all(1.0 < float(np.median(e)) < 4.0 for e in right.errors.values()), right.errors
    turn = cv2.Rodrigues(np.radians([0.0, 1.0, 0.0]))[0]
    was = truth["cam_02"]
    wrong = reprojection_under({**truth, "cam_02": replace(was, R=turn @ was.R, t=turn @ was.t)}, views)
    medians = {n: float(np.median(e)) for n, e in wrong.errors.items()}
    assert medians["cam_02"] == max(medians.values()) > 10, medians


def test_people_anchor_to_known_points_and_refuse_a_camera_they_never_share(assets: Path) -> None:
    """Known points move a people-made rig into their frame (metres, Z up); a camera whose people are never
    seen by another camera is reported, not guessed."""
    reference = _qualisys(assets)
    views = people_views(reference, 40, 1.0, seed=2)
    result = calibrate_from_people(reference, views)
    moved, residual = anchor({n: result.cameras[n] for n in result.placed}, clicks(reference, 0.5, seed=3), PLATFORM)
    assert max(residual.values()) < 0.02
    for name, cam in reference.items():
        assert np.linalg.norm(moved[name].center - cam.center) < 0.05, name
    rng = np.random.default_rng(0)
    for frame in views:  # cam_04 now films somebody else entirely
        frame["cam_04"] = [np.column_stack([rng.uniform(0, 1000, (17, 2)), np.full(17, 0.9)]).astype(np.float32)]
    alone = calibrate_from_people(reference, views)
    report = {r.name: r for r in alone.report}
    assert not report["cam_04"].placed and "joints" in report["cam_04"].reason
    assert all(report[n].placed for n in ("cam_01", "cam_02", "cam_03"))


@pytest.mark.parametrize(
    ("outlier_px", "says"),
    [(1e-6, "no joint is seen by two of the placed cameras"), (0.01, r"only \d+ joints agree")],
)
def test_people_whose_joints_all_disagree_with_the_placed_cameras_are_refused_saying_so(
    assets: Path, outlier_px: float, says: str
) -> None:
    """An outlier radius no triangulated joint can meet leaves the adjustment nothing (or a handful of joints)
    to work on: the run is refused with a ``CalibrationError`` (a live scene's calibration once failed here
    with an IndexError from indexing by an empty list), not answered with a rig fitted to a dozen joints."""
    reference = _qualisys(assets)
    views = people_views(reference, 40, 2.0, seed=4)
    with pytest.raises(CalibrationError, match=says):
        calibrate_from_people(reference, views, params=SelfCalParams(outlier_px=outlier_px))


def test_calibrate_people_cli_on_the_openpose_recording(assets: Path, tmp_path: Path) -> None:
    """``posefleet calibrate people`` on real 2D keypoints of the rig (the OpenPose recording), anchored to
    the platform points: every camera placed, centres within 25 cm of Qualisys (bench-calibration
    measures the figure), the people's limb lengths reported as rigid, the TOML fuses; inputs of different
    lengths are refused as unsynchronised."""
    reference = _qualisys(assets)
    calib = assets / LAB / "calibration" / "Calib_qualisys.toml"
    args: list[str | Path] = ["calibrate", "people", "--calibration", calib, "--out", tmp_path / "people.toml"]
    for name in reference:
        args += ["--camera", f"{name}={assets / LAB / 'openpose-2d' / (name.replace('_', '') + '_json')}"]
    for name, clicked in clicks(reference, 1.0, seed=5).items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"pixels": {k: v.tolist() for k, v in clicked.items()},
                                    "world_points": {k: v.tolist() for k, v in PLATFORM.items()}}))  # fmt: skip
        args += ["--points", f"{name}={path}"]
    done = run_cli(*args, "--json", tmp_path / "report.json")
    assert done.returncode == 0, done.stderr
    placed = load_calibration(tmp_path / "people.toml")
    for name, cam in reference.items():
        assert np.linalg.norm(placed[name].center - cam.center) < 0.25, (name, placed[name].center, cam.center)
    report = json.loads((tmp_path / "report.json").read_text())
    assert all(c["placed"] and c["error_px"] < 15 for c in report["cameras"]), report["cameras"]
    assert 0 < report["bone_spread"] < 0.2, report["bone_spread"]  # 0.14 measured: the people's bones stay rigid
    assert f"limb lengths vary {report['bone_spread']:.0%}" in done.stdout, done.stdout
    # Its three starts land on one rig (0.000 measured): the check reports it, no warning.
    assert report["start_disagreement"] <= STARTS_AGREE and not report["ambiguous"], report["start_disagreement"]
    assert "starts agree" in done.stdout and "WARNING" not in done.stdout, done.stdout
    short = tmp_path / "short"
    short.mkdir()
    for path in sorted((assets / LAB / "openpose-2d" / "cam04_json").iterdir())[:50]:
        (short / path.name).write_bytes(path.read_bytes())
    args = [a if not str(a).startswith("cam_04=") else f"cam_04={short}" for a in args]
    refused = run_cli(*args)
    assert refused.returncode == 2 and "not synchronised" in refused.stderr and "cam_04 50" in refused.stderr


@pytest.mark.parametrize("held", [False, True], ids=["free", "centres-held"])
def test_calibrate_people_cli_refines_the_qualisys_rig_on_the_openpose_recording(
    assets: Path, tmp_path: Path, held: bool
) -> None:
    """``posefleet calibrate people --refine`` started at the Qualisys calibration: the TOML keeps its world
    frame (every camera within 15 cm and 1.5 degrees of where it was: 3.4-8.1 cm and 0.4-1.0 measured, the
    adjustment's minimum for these 2D poses, where the calibration from scratch also lands), each camera's
    reprojection error is reported before and after and falls. ``--keep-centres`` (``held``): every camera
    stays where it was and turns less than 1.5 degrees (0.2-1.3 measured; here on 50 of the 100 frames,
    ``--max-frames``); without --refine, or with known points to move the frame onto, it is refused."""
    reference = _qualisys(assets)
    calib = assets / LAB / "calibration" / "Calib_qualisys.toml"
    args: list[str | Path] = ["calibrate", "people", "--calibration", calib]
    for name in reference:
        args += ["--camera", f"{name}={assets / LAB / 'openpose-2d' / (name.replace('_', '') + '_json')}"]
    if held:
        alone = run_cli(*args, "--keep-centres", "--out", tmp_path / "x.toml")
        assert alone.returncode == 2 and "--keep-centres" in alone.stderr and "needs --refine" in alone.stderr
        framed = run_cli(*args, "--refine", "--keep-centres", "--points", "cam_01=p.json", "--out", tmp_path / "x.toml")
        assert framed.returncode == 2 and "--points and --board-still would move them" in framed.stderr, framed.stderr
        args += ["--keep-centres", "--max-frames", "50"]  # and 2D poses from files spread too
    done = run_cli(*args, "--refine", "--out", tmp_path / "refined.toml", "--json", tmp_path / "report.json")
    assert done.returncode == 0, done.stderr
    assert ("100 frames per camera: 50 of them, spread evenly" in done.stdout) == held, done.stdout
    refined = load_calibration(tmp_path / "refined.toml")
    for name, cam in reference.items():
        centre, angle = camera_difference(refined[name], cam)
        assert centre < (1e-6 if held else 0.15) and angle < 1.5, (name, centre, angle)
        assert f"{name}: reprojection RMS" in done.stdout and "moved" in done.stdout, done.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert all(c["placed"] and c["error_px"] < c["start_px"] for c in report["cameras"]), report["cameras"]
    assert "world frame and scale: the given calibration's" in done.stdout, done.stdout
    assert "starts" not in done.stdout, done.stdout
    assert ("--keep-centres" in (tmp_path / "refined.toml").read_text()) == held


def test_a_pose_is_described_by_the_chroma_of_its_torso_and_thighs() -> None:
    """The descriptor reads the colours inside the torso and thighs (not the lightness, not the background),
    is NaN for a region it cannot see, and stays inside an image a pose leaves."""
    from posefleet.merge.appearance import describe

    image = np.full((200, 200, 3), (40, 200, 40), np.uint8)  # green background
    kp = np.zeros((17, 3), np.float32)
    kp[[5, 6, 11, 12, 13, 14], :2] = [[60, 40], [140, 40], [60, 120], [140, 120], [60, 180], [140, 180]]
    kp[[5, 6, 11, 12, 13, 14], 2] = 0.9
    image[40:120, 60:140] = (0, 0, 220)  # a red shirt
    image[120:180, 60:140] = (160, 60, 20)  # blue jeans
    d = describe(image, kp)
    lab = cv2.cvtColor(np.array([[[0, 0, 220], [160, 60, 20]]], np.uint8), cv2.COLOR_BGR2LAB)[0, :, 1:]
    assert np.allclose(d, lab.ravel(), atol=1), (d, lab)
    darker = describe((image * 0.6).astype(np.uint8), kp)
    assert (np.sign(darker - 128) == np.sign(d - 128)).all()  # less light: paler chroma, the same hues
    unseen = kp.copy()
    unseen[13, 2] = 0.1  # a knee not seen: no thighs
    assert np.isfinite(describe(image, unseen)[:2]).all() and np.isnan(describe(image, unseen)[2:]).all()
    off = kp.copy()
    off[:, 0] += 150  # half the pose off the image's right edge
    assert describe(image, off).shape == (4,)


def test_calibrate_people_cli_pairs_people_by_colour_on_the_lab_videos(
    assets: Path, models: dict[str, Path], tmp_path: Path
) -> None:
    """``posefleet calibrate people`` on the first 50 frames of the lab's four videos through YOLOv8n-pose:
    three people who stand in place, where geometry alone pairs different people across cameras and lands
    metres off (bench-calibration: 4.2 m); their torso and thigh colours (the default) place every camera
    within 30 cm and 5 degrees of Qualisys after the similarity alignment (16.6 cm, 3.6 deg measured)."""
    reference = _qualisys(assets)
    calib = assets / LAB / "calibration" / "Calib_qualisys.toml"
    clips = _lab_clips(assets, tmp_path, 50)
    args: list[str | Path] = ["calibrate", "people", "--calibration", calib, "--model", models["yolo"], *clips]
    errors, stdout = _people_cli(args, tmp_path, reference)
    assert all(e[0] < 0.30 and e[1] < 5.0 for e in errors.values()), errors
    assert "people paired across cameras by colour and geometry" in stdout, stdout


def test_calibrate_people_runs_the_model_only_on_the_frames_it_uses(
    assets: Path, models: dict[str, Path], tmp_path: Path
) -> None:
    """Videos longer than ``--max-frames``: the model runs on the frames spread over them alone (their poses
    the same as on the whole video), and videos of different lengths are refused before any inference (no
    --model given: nothing asks for it)."""
    video = assets / LAB / "videos" / "cam01.mp4"
    assert frame_count(video) == 100
    wanted = spread(100, 7)
    whole = video_poses("cam_01", models["posenet050"], video)
    some = video_poses("cam_01", models["posenet050"], video, only=frozenset(wanted))
    assert len(whole.poses) == 100 and len(some.poses) == 7 and some.size == whole.size
    for got, i in zip(some.poses, wanted, strict=True):
        assert len(got) == len(whole.poses[i]) and all(
            np.allclose(a, b) for a, b in zip(got, whole.poses[i], strict=True)
        )
    clips = {}
    cap = cv2.VideoCapture(str(video))
    for name, count in (("cam_01", 6), ("cam_02", 5)):
        clips[name] = tmp_path / f"{name}.avi"
        writer = cv2.VideoWriter(str(clips[name]), cv2.VideoWriter.fourcc(*"FFV1"), 60.0, (1088, 1920))
        for _ in range(count):
            writer.write(cap.read()[1])
        writer.release()
    cap.release()
    calib = assets / LAB / "calibration" / "Calib_qualisys.toml"
    args = [f"--camera={name}={clip}" for name, clip in clips.items()]
    refused = run_cli(
        "calibrate", "people", "--calibration", calib, *args, "--max-frames", "2", "--out", tmp_path / "x"
    )
    assert refused.returncode == 2, refused.stderr
    assert "not synchronised" in refused.stderr and "cam_01 6, cam_02 5" in refused.stderr, refused.stderr
    helped = run_cli("calibrate", "people", "--help")
    assert f"(default: {SelfCalParams.max_frames}, SelfCalParams.max_frames)" in " ".join(helped.stdout.split())


def test_write_calibration_round_trips(tmp_path: Path) -> None:
    R, _ = cv2.Rodrigues(np.array([0.1, -0.2, 0.3]))
    cams = {
        n: Camera(
            n,
            (640, 480),
            np.array([[500.0, 0, 320], [0, 501, 240], [0, 0, 1]]),
            np.array([0.01, -0.02, 0.0, 0.001]),
            R,
            np.array([0.1, 0.2, 3.0]),
        )
        for n in ("a", "b")
    }
    write_calibration(tmp_path / "c.toml", cams, {"extrinsics": 'a "quoted" note'})
    back = load_calibration(tmp_path / "c.toml")
    for n, cam in cams.items():
        assert np.allclose(back[n].K, cam.K) and np.allclose(back[n].R, cam.R) and np.allclose(back[n].t, cam.t)
        assert np.allclose(back[n].dist, cam.dist) and back[n].size == cam.size


def test_camera_from_points_needs_four_known_points() -> None:
    cam = Camera(
        "c", (640, 480), np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]]), np.zeros(4), np.eye(3), np.zeros(3)
    )
    with pytest.raises(CalibrationError, match="camera c: 3 clicked points"):
        camera_from_points(
            cam, {"a": np.zeros(2), "b": np.ones(2), "c": np.ones(2) * 2}, {k: np.zeros(3) for k in "abc"}
        )


def test_calibrate_people_from_the_rigs_videos_with_a_real_model(
    assets: Path, models: dict[str, Path], tmp_path: Path
) -> None:
    """The documented command: the four synchronised videos through YOLOv8n-pose, nothing else. Every camera
    is placed and, after the best similarity alignment, lies within 20 cm and 5 degrees of Qualisys (a guard:
    ``bench-calibration`` measures 2.4-16.1 cm and 0.9-3.9 degrees, short of the issue's 5 cm and 1 degree)."""
    reference = _qualisys(assets)
    calib = assets / LAB / "calibration" / "Calib_qualisys.toml"
    args: list[str | Path] = ["calibrate", "people", "--calibration", calib, "--model", models["yolo"]]
    for name in reference:
        args += ["--camera", f"{name}={assets / LAB / 'videos' / (name.replace('_', '') + '.mp4')}"]
    errors, stdout = _people_cli(args, tmp_path, reference)
    assert all(e[0] < 0.20 and e[1] < 5.0 for e in errors.values()), errors
    assert "world frame and scale: the people's leg and trunk segments" in stdout, stdout


def test_calibrate_people_on_the_rigs_videos_decoded_as_its_other_recordings_are(
    assets: Path, models: dict[str, Path], tmp_path: Path
) -> None:
    """Other recordings of the rig decode 8 px narrower, 1080x1920 (the encoder cropped the right edge:
    SOURCES.md). The four videos cut so, losslessly, through YOLOv8n-pose: the 2D moves a little, and the
    rounds of the start explaining the most joints left cam_03 53 cm off (its right joints beyond the 30 px
    gate). The last pass, the people paired again under a wide first gate, brings it back: every camera within
    20 cm and 5 degrees of Qualisys, as for the videos as they are."""
    reference = _qualisys(assets)
    calib = assets / LAB / "calibration" / "Calib_qualisys.toml"
    clips = _lab_clips(assets, tmp_path, 100, width=1080)
    args: list[str | Path] = ["calibrate", "people", "--calibration", calib, "--model", models["yolo"], *clips]
    errors, _ = _people_cli(args, tmp_path, reference)
    assert all(e[0] < 0.20 and e[1] < 5.0 for e in errors.values()), errors


def test_a_charuco_board_seen_once_or_a_few_known_points_fix_the_world_frame() -> None:
    """``anchor``: a ChArUco board rendered into two cameras' stills moves a rig known only up to a similarity
    onto the board's frame (millimetres); two known points keep scale and up and fix heading and origin, one
    point the origin; a checkerboard seen by two cameras is refused (its corners are ambiguous)."""
    from posefleet.merge.extrinsics import board_clicks, transform

    K = np.array([[900.0, 0, 640], [0, 900.0, 360], [0, 0, 1]])
    truth = {}
    for name, centre in {"a": np.array([0.5, 0.0, -1.0]), "b": np.array([-0.3, 0.3, -1.1])}.items():
        z = np.array([0.1, 0.14, 0.0]) - centre  # looking at the board's middle from its front
        z /= np.linalg.norm(z)
        x = np.cross([0.0, 1.0, 0.0], z)
        x /= np.linalg.norm(x)
        R = np.stack([x, np.cross(z, x), z])
        truth[name] = Camera(name, (1280, 720), K, np.zeros(4), R, -R @ centre)
    dictionary = cv2.aruco.getPredefinedDictionary(cv2.aruco.DICT_4X4_50)
    board = parse_board("charuco:5x7:40:30")
    image = cv2.aruco.CharucoBoard((5, 7), 0.04, 0.03, dictionary).generateImage((500, 700))
    S = np.diag([0.04 / 100, 0.04 / 100, 1.0])  # board image pixels -> metres
    stills = {
        n: cv2.warpPerspective(
            image, c.K @ np.column_stack([c.R[:, 0], c.R[:, 1], c.t]) @ S, (1280, 720), borderValue=200
        )
        for n, c in truth.items()
    }
    R0, _ = cv2.Rodrigues(np.array([0.3, 0.2, -1.0]))
    drifted = transform(truth, 0.7, R0, np.array([1.0, 2.0, 0.5]))  # what a people-made rig might be
    clicks, world = board_clicks(stills, board)
    moved, residual = anchor(drifted, clicks, world)
    assert max(residual.values()) < 0.003
    for name, cam in truth.items():
        assert np.linalg.norm(moved[name].center - cam.center) < 0.005, name
    # Two points: heading and origin (scale and up kept); one point: the origin.
    Rz, _ = cv2.Rodrigues(np.array([0.0, 0.0, 0.8]))
    turned = transform(truth, 1.0, Rz, np.array([0.3, -0.2, 0.0]))
    shared = sorted(set(clicks["a"]) & set(clicks["b"]))
    pair = {n: {k: clicks[n][k] for k in shared[:2]} for n in clicks}
    back, _ = anchor(turned, pair, world)
    assert all(np.linalg.norm(back[n].center - truth[n].center) < 0.01 for n in truth)
    shifted = transform(truth, 1.0, np.eye(3), np.array([0.3, -0.2, 0.1]))
    one = {n: {k: clicks[n][k] for k in shared[:1]} for n in clicks}
    back, _ = anchor(shifted, one, world)
    assert all(np.linalg.norm(back[n].center - truth[n].center) < 0.01 for n in truth)
    with pytest.raises(CalibrationError, match="ChArUco"):
        board_clicks(stills, parse_board("checkerboard:4x6:40"))
