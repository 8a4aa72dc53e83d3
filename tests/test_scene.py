"""Live scenes in the coordinator: windows, missing and refused cameras, and the whole lab scene on a cluster."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from posefleet.common.keypoints import COCO_KEYPOINTS
from posefleet.coordinator.live_scene import LiveScene
from posefleet.coordinator.settings import CoordinatorSettings, SceneSettings
from posefleet.coordinator.subscribers import Backlog
from posefleet.merge.calibration import load_calibration
from posefleet.v1 import coordinator_pb2, pose_pb2

CAMS = {f"cam_0{i}": f"cam0{i}" for i in range(1, 5)}


@pytest.fixture(scope="module")
def calibration(assets: Path) -> Path:
    return assets / "multiview" / "pose2sim" / "calibration" / "Calib_qualisys.toml"


def standing(x: float, y: float) -> np.ndarray:
    """A person's 17 joints (metres, Z up) standing at (x, y) in the lab."""
    heights = [1.7, 1.73, 1.73, 1.7, 1.7, 1.45, 1.45, 1.15, 1.15, 0.9, 0.9, 0.95, 0.95, 0.5, 0.5, 0.08, 0.08]
    side = [0, 0.03, -0.03, 0.08, -0.08, 0.2, -0.2, 0.3, -0.3, 0.35, -0.35, 0.12, -0.12, 0.13, -0.13, 0.14, -0.14]
    return np.array([[x + s, y, h] for s, h in zip(side, heights, strict=True)])


def result(
    calibration: Path, camera: str, seq: int, t: float, people: list[np.ndarray], *, size: tuple[int, int] = (544, 960)
) -> pose_pb2.PoseResult:
    calib = {cam: c for c, cam in CAMS.items()}[camera]
    cam = load_calibration(calibration)[calib].fit(544, 960)  # the pixels; ``size`` is what the result claims
    out = pose_pb2.PoseResult(
        camera_id=camera, sequence=seq, status=pose_pb2.RESULT_STATUS_OK, image_width=size[0], image_height=size[1]
    )
    out.capture_time.FromNanoseconds(round(t * 1e9))
    for person in people:
        xy = cam.project(person)
        pose = out.poses.add(score=0.9)
        for name, (x, y) in zip(COCO_KEYPOINTS, xy.tolist(), strict=True):
            pose.keypoints.add(name=name, x=x, y=y, score=0.9)
    return out


def test_windows_fuse_complete_and_late_cameras_and_refuse_bad_resolutions(calibration: Path) -> None:
    scene = LiveScene("lab", SceneSettings(calibration=calibration, cameras=CAMS))
    scene._subscribers.add(backlog := Backlog[coordinator_pb2.SceneResult](1000, 60.0))  # a subscriber, no loop
    start = time.time()
    people = [standing(0.0, 0.5), standing(-0.8, -0.3)]
    for seq in range(10):
        t = start + seq / 30
        for cam in ("cam01", "cam02", "cam03"):
            scene.add(result(calibration, cam, seq, t, people))
        if seq < 5:  # cam04 goes away after 5 frames
            scene.add(result(calibration, "cam04", seq, t, people))
    scene.windows.last_seen["cam04"] -= 10  # ... and has been silent for longer than a camera may be
    scene.flush(force=True)
    got = list(backlog._items)
    assert len(got) == 10 and [len(w.views) for w in got] == [4] * 5 + [3] * 5
    assert all(len(w.persons) == 2 for w in got), [len(w.persons) for w in got]
    assert [list(w.missing_cameras) for w in got[5:]] == [["cam04"]] * 5
    ids = {tuple(sorted(p.id for p in w.persons)) for w in got}
    assert len(ids) == 1, "the same two ids in every window"
    person = got[0].persons[0]
    assert [j.name for j in person.joints] == list(COCO_KEYPOINTS) and min(j.views for j in person.joints) == 4
    assert {v.camera_id for v in person.views} == set(CAMS.values())
    # A late result of a window that has left is counted, not fused again.
    scene.add(result(calibration, "cam01", 3, start + 3 / 30, people))
    assert scene.windows.late == 1
    # A camera streaming at a resolution the calibration cannot serve is refused and reported, not fatal.
    scene.add(result(calibration, "cam04", 20, start + 1, people, size=(960, 544)))
    status = scene.status()
    cam04 = next(c for c in status.cameras if c.camera_id == "cam04")
    assert "streams 960x544 but was calibrated at 1088x1920" in cam04.problem
    assert all(c.median_reprojection_error_px < 1.0 for c in status.cameras if c.camera_id != "cam04")


def test_a_scene_camera_that_never_streams_is_reported(calibration: Path) -> None:
    scene = LiveScene("lab", SceneSettings(calibration=calibration, cameras=CAMS))
    scene.add(result(calibration, "cam01", 0, time.time(), [standing(0, 0)]))
    assert {c.camera_id: c.problem for c in scene.status().cameras}["cam03"] == "has not streamed yet"


def test_bad_scene_settings_stop_the_coordinator_with_one_line(calibration: Path, tmp_path: Path) -> None:
    cases = [
        ({"calibration": str(tmp_path / "none.toml"), "cameras": CAMS}, f"scene lab: {tmp_path}/none.toml: cannot"),
        (
            {"calibration": str(calibration), "cameras": {"cam_09": "x", "cam_01": "y"}},
            "scene lab: camera cam_09 is not in the calibration",
        ),
        ({"calibration": str(calibration), "cameras": {"cam_01": "a"}}, "a scene needs at least 2 cameras"),
        (
            {"calibration": str(calibration), "cameras": {f"c{i}": f"c{i}" for i in range(64)}},
            "a scene has at most 63 cameras",
        ),
    ]
    for scene, message in cases:
        config = tmp_path / "c.json"
        config.write_text(
            json.dumps({"host": "127.0.0.1", "port": 0, "discover": False, "insecure": True, "scenes": {"lab": scene}})
        )
        proc = subprocess.run(
            [sys.executable, "-m", "posefleet.cli", "coordinator", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert CoordinatorSettings(scenes={"lab": SceneSettings(calibration=calibration, cameras=CAMS)})


def test_scene_demo_fuses_four_live_cameras_on_a_cluster(assets: Path, tmp_path: Path) -> None:
    """``posefleet demo --scene``: 4 cameras x 100 frames through a coordinator and 2 nodes, fused live."""
    env = {**os.environ, "POSEFLEET_HOME": str(tmp_path / "home"), "POSEFLEET_ASSETS": str(assets)}
    out = tmp_path / "scene"
    proc = subprocess.run(
        [sys.executable, "-m", "posefleet.cli", "demo", "--scene", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for cam in CAMS.values():
        lines = [json.loads(x) for x in (out / f"{cam}.jsonl").read_text().splitlines()]
        assert [x["sequence"] for x in lines] == list(range(100)), "every frame accounted for"
        assert sum(x["status"] == "ok" for x in lines) >= 95
        assert all("track_id" in p for x in lines for p in x["poses"] if p["score"] >= 0.25), "tracked"
    windows = [json.loads(x) for x in (out / "scene.jsonl").read_text().splitlines()]
    assert 95 <= len(windows) <= 101, proc.stdout  # its summary says how many fusion skipped, the subscriber lost
    assert sum(len(w["views"]) == 4 for w in windows) >= 90
    with_people = [w for w in windows if len(w["persons"]) >= 2]
    assert len(with_people) >= 90
    # The two people in front are followed with stable ids: one id each in nearly every window.
    counts: dict[int, int] = {}
    for w in windows:
        for p in w["persons"]:
            counts[p["id"]] = counts.get(p["id"], 0) + 1
    top = sorted(counts.values(), reverse=True)
    assert top[0] >= 90 and top[1] >= 85, counts
    medians = [
        float(line.split("median reprojection error ")[1].split()[0])
        for line in proc.stdout.splitlines()
        if "median reprojection error" in line
    ]
    assert len(medians) == 4 and max(medians) < 25.0, proc.stdout  # calibrated pixels, under the demo's threshold
    assert (out / "scene.mp4").stat().st_size > 100_000 and (out / "scene.png").exists()
    print(proc.stdout)


async def synthetic_lab(calibration: Path, answer: Any = None) -> Any:
    """A started coordinator (insecure, 127.0.0.1) with the lab scene and one in-process loopback node that
    answers with ``answer`` (default: the three synthetic people of ``bench_merge.SyntheticScene``)."""
    from posefleet.bench import merge as bench_merge
    from posefleet.bench.loopback import LoopbackLink
    from posefleet.coordinator.server import CoordinatorServer

    answer = answer or bench_merge._answer(bench_merge.SyntheticScene())
    LoopbackLink.nodes = {"n0": {"capacity": 8, "answer": answer}}
    scenes = {"lab": SceneSettings(calibration=calibration, cameras=bench_merge.CAMS)}
    server = CoordinatorServer(
        # camera_queue holds all 16 frames a bench camera keeps in flight: no frame is DROPPED (an empty view)
        CoordinatorSettings(host="127.0.0.1", port=0, discover=False, camera_queue=16, scenes=scenes, insecure=True),
        link_factory=LoopbackLink,
    )
    await server.start()
    server.registry.add("n0", "loopback-n0", "static")
    return server


async def test_subscribe_cli_writes_scene_windows_from_a_running_coordinator(
    calibration: Path, tmp_path: Path, assets: Path
) -> None:
    """A real coordinator (in-process loopback nodes answering with three people) and ``posefleet subscribe``."""
    import asyncio

    import grpc
    from posefleet.bench import merge as bench_merge
    from posefleet.v1 import coordinator_pb2_grpc

    server = await synthetic_lab(calibration)
    out = tmp_path / "lab.jsonl"
    env = {**os.environ, "POSEFLEET_ASSETS": str(assets)}
    cli = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "posefleet.cli",
        "subscribe",
        "--coordinator",
        f"127.0.0.1:{server.port}",
        "--scene",
        "lab",
        "--count",
        "5",
        "--seconds",
        "60",
        "--jsonl",
        str(out),
        "--insecure",
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await asyncio.sleep(2.0)  # the subscriber is connected
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            await bench_merge._streams(coordinator_pb2_grpc.CoordinatorStub(channel), 1.0, [0])
        _, err = await asyncio.wait_for(cli.communicate(), 60)
        unknown = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "posefleet.cli",
            "subscribe",
            "--coordinator",
            f"127.0.0.1:{server.port}",
            "--scene",
            "attic",
            "--count",
            "1",
            "--insecure",
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        _, unknown_err = await asyncio.wait_for(unknown.communicate(), 60)
        view = server.service.view()  # what the dashboard shows of the scene
    finally:
        await server.stop()
    (lab,) = view["scenes"]
    assert lab["name"] == "lab" and len(lab["persons"]) == 3 and sorted(lab["reprojections"]) == sorted(lab["cameras"])
    latest = {c["id"]: c for c in view["cameras"]}
    for camera, seen in lab["reprojections"].items():  # the 3D people land on each camera's own 2D people
        poses = [np.array([(k["x"], k["y"]) for k in p["keypoints"]]) for p in latest[camera]["poses"]]
        for person in seen["persons"]:
            joints = [i for i, k in enumerate(person["keypoints"]) if k["score"] > 0]
            points = np.array([(person["keypoints"][i]["x"], person["keypoints"][i]["y"]) for i in joints])
            assert len(joints) >= 12
            error = min(float(np.median(np.linalg.norm(points - pose[joints], axis=1))) for pose in poses)
            assert error < 25, (camera, error)
    assert cli.returncode == 0, err.decode()
    windows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(windows) == 5 and all(w["scene"] == "lab" for w in windows)
    assert all(len(w["persons"]) == 3 and len(w["views"]) == 4 for w in windows), [
        (len(w["persons"]), w["missing_cameras"]) for w in windows
    ]
    joint = windows[-1]["persons"][0]["keypoints"][5]
    assert joint["name"] == "left_shoulder" and joint["views"] >= 2 and 1.3 < joint["z"] < 1.6
    assert unknown.returncode != 0 and "no scene 'attic'" in unknown_err.decode()


def walking_answer(calibration: Path, frames: int = 60) -> Any:
    """A loopback node's answers: three people walking through the lab (``people.people_views``, 1 px noise),
    each pose described by its person's colours as a node describes them."""
    from people import people_views

    cameras = load_calibration(calibration)
    looks: list[dict[str, list[np.ndarray]]] = []
    views = people_views(cameras, frames, 1.0, seed=4, looks=looks)
    made: dict[str, list[bytes]] = {}
    for calib, cam_id in CAMS.items():
        width, height = cameras[calib].size
        made[cam_id] = []
        for frame, described in zip(views, looks, strict=True):
            out = pose_pb2.PoseResult(
                camera_id=cam_id, status=pose_pb2.RESULT_STATUS_OK, image_width=width, image_height=height
            )
            for kp, look in zip(frame[calib], described[calib], strict=True):
                pose = out.poses.add(score=0.9, appearance=look.tolist())
                for name, (x, y, score) in zip(COCO_KEYPOINTS, kp.tolist(), strict=True):
                    pose.keypoints.add(name=name, x=x, y=y, score=score)
            made[cam_id].append(out.SerializeToString())

    turn = dict.fromkeys(made, -1)

    def answer(link: Any, frame: pose_pb2.Frame) -> pose_pb2.PoseResult:
        # A node sees no capture time: each camera's n-th frame (its frames are answered in order) shows moment
        # n, and ``_streams`` stamps every camera's n-th frame alike, so a window holds one moment.
        turn[frame.camera_id] += 1
        result = pose_pb2.PoseResult.FromString(made[frame.camera_id][turn[frame.camera_id] % frames])
        result.sequence = frame.sequence
        return result

    return answer


async def test_a_live_scene_is_calibrated_from_its_people_while_routing_goes_on(
    calibration: Path, tmp_path: Path, assets: Path
) -> None:
    """``CalibrateScene`` (``posefleet calibrate-scene``): a running coordinator records its scene's windows
    while cameras stream, places every camera from the people in them (synthetic people walking, 1 px noise:
    within 5 cm and 1 degree of the rig's own after the similarity alignment) and answers with a calibration
    TOML of the rig's cameras and intrinsics; frames
    go on being answered meanwhile. An unknown scene, too many windows and a scene nobody streams are refused
    with their own status and a message."""
    import asyncio

    import grpc
    from posefleet.bench import merge as bench_merge
    from posefleet.clients.sdk import PosefleetClient
    from posefleet.merge.extrinsics import rig_differences
    from posefleet.v1 import coordinator_pb2_grpc

    server = await synthetic_lab(calibration, walking_answer(calibration))
    address = f"127.0.0.1:{server.port}"
    try:
        async with PosefleetClient(address, tls=None) as client:
            with pytest.raises(grpc.aio.AioRpcError) as idle:
                await client.calibrate_scene("lab", windows=50, timeout_s=1.0)
            assert (
                idle.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "0 of 50 windows" in idle.value.details()
            )
            for scene, windows, code in (
                ("attic", 10, grpc.StatusCode.NOT_FOUND),
                ("lab", 10**6, grpc.StatusCode.INVALID_ARGUMENT),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await client.calibrate_scene(scene, windows=windows)
                assert refused.value.code() == code, refused.value.details()
            with pytest.raises(grpc.aio.AioRpcError) as centres_alone:  # nothing given to hold the centres of
                await client.calibrate_scene("lab", windows=10, keep_centres=True)
            assert centres_alone.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "needs refine" in centres_alone.value.details()
            counts = [0]
            progress: list[int] = []
            async with grpc.aio.insecure_channel(address) as channel:
                stop = asyncio.Event()
                streaming = asyncio.create_task(
                    bench_merge._streams(coordinator_pb2_grpc.CoordinatorStub(channel), 600.0, counts, stop)
                )
                await asyncio.sleep(1.0)
                out = tmp_path / "live.toml"
                cli = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "posefleet.cli", "calibrate-scene", "--coordinator", address,
                    "--scene", "lab", "--windows", "200", "--out", str(out), "--insecure",
                    env={**os.environ, "POSEFLEET_ASSETS": str(assets)}, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )  # fmt: skip
                done = asyncio.create_task(cli.communicate())
                while not done.done():  # frames answered, sampled every second while the coordinator calibrates
                    progress.append(counts[0])
                    await asyncio.wait([done], timeout=1.0)
                stdout, stderr = done.result()
                stop.set()
                await asyncio.wait_for(streaming, 30)
    finally:
        await server.stop()
    assert cli.returncode == 0, stderr.decode()
    assert stdout.decode().count("reprojection RMS") == 4, stdout.decode()
    assert re.search(r"limb lengths vary \d+%", stdout.decode()), stdout.decode()  # reported, not 'nan%'
    assert "paired across cameras by colour and geometry" in stdout.decode(), stdout.decode()
    assert "starts agree" in stdout.decode(), stdout.decode()  # people walking pin the rig down
    gains = [b - a for a, b in zip(progress, progress[2:], strict=False)]
    assert len(gains) >= 5 and min(gains) > 0, f"routing stalled while the scene was calibrated: {progress}"
    placed = load_calibration(out)
    reference = load_calibration(calibration)
    assert sorted(placed) == sorted(reference)
    for name, cam in placed.items():  # the rig's own intrinsics, new extrinsics
        assert np.allclose(cam.K, reference[name].K) and np.isfinite(cam.R).all() and np.isfinite(cam.t).all()
    _, errors = rig_differences(placed, reference)
    assert all(e[0] < 0.05 and e[1] < 1.0 for e in errors.values()), errors


@pytest.mark.parametrize("held", [False, True], ids=["moved", "turned-centres-held"])
async def test_a_live_scene_whose_camera_moved_is_refined_on_its_people(
    calibration: Path, tmp_path: Path, assets: Path, held: bool
) -> None:
    """``posefleet calibrate-scene --refine``: the scene's calibration has cam_03 where it stood before it was
    bumped (3 degrees, and 15 cm along its x axis, from where it films); the people streaming through the rig
    bring it back within 2 cm and 0.3 degrees, every camera in the scene's own world frame (no alignment), and
    each camera reports its error under the scene's calibration and how far it moved. ``--keep-centres``
    (``held``): cam_03 was knocked on its mount (turned 3 degrees about its own centre); every camera turns
    back within 0.3 degrees and none moves."""
    import asyncio
    from dataclasses import replace

    import cv2
    import grpc
    from posefleet.bench import merge as bench_merge
    from posefleet.merge.calibration import write_calibration
    from posefleet.merge.extrinsics import camera_difference
    from posefleet.v1 import coordinator_pb2_grpc

    truth = load_calibration(calibration)
    turn = cv2.Rodrigues(np.radians([0.0, 3.0, 0.0]))[0]
    was = truth["cam_03"]
    # held: turned about its own centre (t turns with R); else turned and moved 15 cm along its x axis
    t = turn @ was.t if held else was.t + np.array([0.15, 0.0, 0.0])
    bumped = {**truth, "cam_03": replace(was, R=turn @ was.R, t=t)}
    write_calibration(tmp_path / "before.toml", bumped)
    server = await synthetic_lab(tmp_path / "before.toml", walking_answer(calibration))
    address = f"127.0.0.1:{server.port}"
    out = tmp_path / "refined.toml"
    try:
        counts = [0]
        async with grpc.aio.insecure_channel(address) as channel:
            stop = asyncio.Event()
            streaming = asyncio.create_task(
                bench_merge._streams(coordinator_pb2_grpc.CoordinatorStub(channel), 300.0, counts, stop)
            )
            await asyncio.sleep(1.0)
            cli = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "posefleet.cli", "calibrate-scene", "--coordinator", address,
                "--scene", "lab", "--windows", "100", "--refine", *(["--keep-centres"] if held else []),
                "--out", str(out), "--insecure",
                env={**os.environ, "POSEFLEET_ASSETS": str(assets)}, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            stdout, stderr = await cli.communicate()
            stop.set()
            await asyncio.wait_for(streaming, 30)
    finally:
        await server.stop()
    assert cli.returncode == 0, stderr.decode()
    text = stdout.decode()
    assert text.count("moved") == 4 and "starts" not in text, text
    moved = re.search(r"cam03 \(cam_03\): reprojection RMS ([\d.]+) px \(given: ([\d.]+) px\); moved ([\d.]+) cm", text)
    bump_cm = 100 * camera_difference(bumped["cam_03"], truth["cam_03"])[0]  # its centre moved by the turn too
    assert moved and float(moved[1]) < float(moved[2]) / 4, text  # 3 and 22 px measured
    assert abs(float(moved[3]) - bump_cm) < 2, (bump_cm, text)
    refined = load_calibration(out)
    for name, cam in truth.items():
        centre, angle = camera_difference(refined[name], cam)
        assert centre < (1e-6 if held else 0.02) and angle < 0.3, (name, centre, angle)


async def test_a_dead_fusion_worker_stops_fusion_never_routing(calibration: Path) -> None:
    """The fusion worker killed mid-stream (an out-of-memory kill, say): a window handed to it before its socket
    has said so is dropped, not raised (a send to the dead pipe used to raise BrokenPipeError into the frame
    path); every frame sent afterwards is still answered OK and the scene skips its windows."""
    import asyncio

    import grpc
    from posefleet.bench import merge as bench_merge
    from posefleet.coordinator.keypoint_arrays import PackedPoses
    from posefleet.v1 import coordinator_pb2_grpc

    server = await synthetic_lab(calibration)
    try:
        scene = server.service.merger.scenes["lab"]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = coordinator_pb2_grpc.CoordinatorStub(channel)
            before = [0]
            await bench_merge._streams(stub, 1.0, before)
            assert before[0] > 0 and scene.windows_done > 0
            worker = server.service.merger._worker
            worker._process.kill()
            worker._process.join(5)
            worker.submit(b"", 0.0, PackedPoses.pack({}))  # before the event loop has read the socket's end
            await asyncio.sleep(0.2)  # replies already in the socket are read, then its end
            assert not worker.ready()
            done, skipped = scene.windows_done, scene.skipped
            after = [0]
            await bench_merge._streams(stub, 1.0, after)  # raises if a stream ends in an error
        assert after[0] > 50, after
        assert scene.skipped > skipped and scene.windows_done == done
    finally:
        await server.stop()


async def test_the_fusion_worker_answers_every_window_once_in_order_in_batches_under_load(calibration: Path) -> None:
    """Windows submitted faster than the worker fuses them: each comes back fused exactly once, in order and
    with its people; those submitted while a batch is in the worker's hands travel together as the next batch
    (fewer wake-ups), and the windows in hand never exceed ``MAX_PENDING``. A window too large for the socket
    is refused (the scene counts it skipped), never sent."""
    import asyncio

    from posefleet.bench import merge as bench_merge
    from posefleet.coordinator import fusion
    from posefleet.coordinator.keypoint_arrays import PackedPoses, keypoint_arrays

    fused: list[fusion.FusedWindow] = []
    worker = fusion.ProcessFusion(fused.append)
    sent = 0
    batches = 0
    real_send = worker._send_batch

    def counted() -> None:
        nonlocal batches
        batches += 1
        real_send()

    worker._send_batch = counted  # type: ignore[method-assign]
    try:
        assert await worker.started(60.0)
        scene = LiveScene("lab", SceneSettings(calibration=calibration, cameras=bench_merge.CAMS), worker)
        synthetic = bench_merge.SyntheticScene()
        for seq in range(60):
            for _ in range(5000):  # a scene would skip this window: wait for the worker instead
                if worker.ready():
                    break
                await asyncio.sleep(0.001)
            for cam in bench_merge.CAMS.values():
                r = synthetic.result(cam, seq)
                r.capture_time.FromMilliseconds(1_000_000 + seq * 33)
                scene.add(r, keypoint_arrays(r))
            assert worker.pending <= fusion.MAX_PENDING
            sent += 1  # all four cameras are in: the window has left
        for _ in range(500):
            if worker.pending == 0:
                break
            await asyncio.sleep(0.01)
        too_large = b"\0" * fusion.MAX_WINDOW_BYTES  # a window the socket may not take: refused, counted skipped
        assert not worker.submit(too_large, 0.0, PackedPoses.pack({})) and worker.pending == 0
    finally:
        worker.close()
    windows = [coordinator_pb2.SceneResult.FromString(f.result) for f in fused]
    assert len(windows) == sent and scene.skipped == 0
    begins = [w.window_start.ToMilliseconds() for w in windows]
    assert begins == sorted(set(begins)), "each window once, in order"
    assert all(len(w.views) == 4 and len(w.persons) == 3 for w in windows)
    assert batches < len(windows), (batches, len(windows))


def test_a_3d_person_is_written_as_the_generated_classes_write_it() -> None:
    """``fusion._person`` writes a Person3D's joints directly (``wire_bytes``): parsed, it is the message the
    generated classes build, for joints not triangulated (NaN, 0 views), several camera sets, a large id."""
    from posefleet.coordinator import fusion
    from posefleet.merge.scene import Person3D

    rng = np.random.default_rng(1)
    names = ["cam_01", "cam_02", "cam_03", "cam_04"]
    used = rng.random((17, 4)) < 0.6
    used[3] = False
    points = rng.normal(size=(17, 3))
    points[3] = np.nan
    error = rng.random(17) * 9
    error[3] = np.nan
    person = Person3D(
        id=300,
        points=points,
        score=rng.random(17),
        views=used.sum(axis=1),
        error_px=error,
        used=used,
        cameras={"cam_02": 1, "cam_04": 0},
        camera_error_px={},
    )
    view = pose_pb2.PoseResult(camera_id="cam_02")
    view.poses.add()
    view.poses.add(track_id=7)
    views = {"cam_02": view, "cam_04": pose_pb2.PoseResult(camera_id="cam_04")}

    expected = coordinator_pb2.Person3D(id=300)
    for j, name in enumerate(COCO_KEYPOINTS):
        x, y, z = points[j]
        expected.joints.add(
            name=name,
            x=x,
            y=y,
            z=z,
            score=person.score[j],
            views=int(used[j].sum()),
            reprojection_error_px=0.0 if np.isnan(error[j]) else error[j],
            cameras=[n for c, n in enumerate(names) if used[j, c]],
        )
    expected.views.add(camera_id="cam_02", pose_index=1, track_id=7)
    expected.views.add(camera_id="cam_04", pose_index=0, track_id=0)
    got = coordinator_pb2.Person3D.FromString(fusion._person(person, views, names))
    assert got.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)
    assert np.isnan(got.joints[3].x) and got.joints[3].views == 0 and not got.joints[3].cameras


def test_bench_merge_cli_measures_fusion_and_routing(tmp_path: Path) -> None:
    """A short real run of ``posefleet bench-merge``: fusion timed over its passes (3 people found in every
    window) and alternating routing rounds with and without the scene, every window fused or skipped."""
    out = tmp_path / "merge.json"
    args = ["bench-merge", "--seconds", "0.5", "--rounds", "1", "--windows", "60", "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "posefleet.cli", *args], capture_output=True, text=True, timeout=180, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    fusion, capacity = report["fusion"], report["capacity"]
    assert fusion["persons_mean"] == 3.0 and fusion["windows"] == 60
    assert 0 < fusion["p50_ms"] <= fusion["p99_ms"] and fusion["p99_of_window_medians_ms"] > 0
    assert capacity["tracking_only_fps"] > 0 and capacity["with_fusion_fps"] > 0
    assert sum(report["windows"]["fused"]) > 0
