"""A live scene calibrated from the people it sees (the admin call ``CalibrateScene``).

The scene's next windows are recorded as they leave (fused or not: recording costs routing nothing but a
list append), then ``posefleet.merge.selfcal`` runs in a process of its own, so the event loop keeps routing
frames at full speed on a small machine. One calibration at a time per coordinator. With ``refine`` the
scene's own calibration is the start (``selfcal.refine_with_people``) and its world frame and scale stay.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from posefleet.coordinator.keypoint_arrays import appearances, keypoint_arrays
from posefleet.coordinator.live_scene import LiveScene
from posefleet.merge.calibration import CalibrationError, Camera, calibration_toml
from posefleet.merge.extrinsics import camera_difference
from posefleet.v1 import coordinator_pb2, pose_pb2

F32 = npt.NDArray[np.float32]
log = logging.getLogger("posefleet.coordinator")
DEFAULT_WINDOWS = 300
MAX_WINDOWS = 3000  # about 7 MB of 2D poses for four cameras of three people
DEFAULT_TIMEOUT_S = 120.0
MAX_TIMEOUT_S = 3600.0


class CalibrationRefused(Exception):
    """A request that cannot be served as asked; the message says why (INVALID_ARGUMENT or similar)."""


def request_problem(request: coordinator_pb2.CalibrateSceneRequest) -> str | None:
    """What is wrong with a request's numbers, if anything."""
    if request.windows > MAX_WINDOWS:
        return f"windows must be at most {MAX_WINDOWS}, got {request.windows}"
    if request.person_height_m and not 0.5 <= request.person_height_m <= 2.5:
        return f"person_height_m must be between 0.5 and 2.5 m, got {request.person_height_m:g}"
    if request.timeout_s < 0 or request.timeout_s > MAX_TIMEOUT_S or not np.isfinite(request.timeout_s):
        return f"timeout_s must be between 0 and {MAX_TIMEOUT_S:g} s, got {request.timeout_s:g}"
    if request.keep_centres and not request.refine:
        return "keep_centres holds the scene calibration's camera centres: it needs refine"
    return None


@dataclass
class Recorded:
    """A scene's recorded windows: per window, camera id -> 2D poses, and each pose's appearance (``Pose.appearance``;
    NaN where the node described none: the calibration then pairs people by geometry alone)."""

    poses: list[dict[str, list[F32]]] = field(default_factory=list)
    looks: list[dict[str, list[F32]]] = field(default_factory=list)

    def add(self, views: dict[str, pose_pb2.PoseResult]) -> None:
        ok = {c: r for c, r in views.items() if r.status == pose_pb2.RESULT_STATUS_OK}
        self.poses.append({c: keypoint_arrays(r) for c, r in ok.items()})
        self.looks.append({c: appearances(r) for c, r in ok.items()})


async def record(scene: LiveScene, windows: int, timeout_s: float) -> Recorded:
    """The 2D poses (per camera id) of the scene's next ``windows`` windows; fewer when ``timeout_s`` ends
    first."""
    recorded = Recorded()
    done = asyncio.get_running_loop().create_future()

    def add(views: dict[str, pose_pb2.PoseResult]) -> None:
        if len(recorded.poses) < windows:
            recorded.add(views)
        if len(recorded.poses) >= windows and not done.done():
            done.set_result(None)

    scene.recorders.add(add)
    try:
        await asyncio.wait_for(asyncio.shield(done), timeout_s)
    except TimeoutError:
        pass
    finally:
        scene.recorders.discard(add)
    return recorded


def _calibrate(
    cameras: dict[str, Camera], recorded: Recorded, height: float, refine: bool, keep_centres: bool
) -> dict[str, Any]:
    """In the worker process: the calibration (from scratch, or the given extrinsics refined, their centres
    held with ``keep_centres``) and its report (plain data, picklable)."""
    from posefleet.merge.selfcal import calibrate_from_people, refine_with_people, starts_verdict

    if refine:
        result = refine_with_people(cameras, recorded.poses, looks=recorded.looks, keep_centres=keep_centres)
    else:
        result = calibrate_from_people(cameras, recorded.poses, looks=recorded.looks, person_height=height)
    return {
        "poses": {n: (result.cameras[n].R, result.cameras[n].t) for n in result.placed},
        "report": [vars(r) for r in result.report],
        "joints": result.points,
        "frames": result.frames,
        "world_frame": result.scale_source,
        "bone_spread": result.bone_spread,
        "pairing": result.people_paired_by,
        "start_disagreement": result.start_disagreement,
        "starts_verdict": "" if refine else starts_verdict(result.start_disagreement),
    }


async def calibrate_scene(
    scene: LiveScene, request: coordinator_pb2.CalibrateSceneRequest
) -> coordinator_pb2.CalibrateSceneResponse:
    """Record, calibrate (or, with ``refine``, adjust the scene's own extrinsics) in a worker process, answer
    with the TOML; ``CalibrationRefused`` when too few windows came or the people place fewer than two cameras."""
    t0 = time.perf_counter()
    windows = request.windows or DEFAULT_WINDOWS
    recorded = await record(scene, windows, request.timeout_s or DEFAULT_TIMEOUT_S)
    fitted = dict(scene.fitted)
    if len(recorded.poses) < min(windows, 30) or len(fitted) < 2:
        raise CalibrationRefused(
            f"scene {scene.name}: {len(recorded.poses)} of {windows} windows came in time from {len(fitted)} streaming "
            "cameras; stream at least two of its cameras (or ask for fewer windows, or wait longer)"
        )
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        height = request.person_height_m or 1.75
        job = pool.submit(_calibrate, fitted, recorded, height, request.refine, request.keep_centres)
        try:
            found = await asyncio.wrap_future(job)
        except CalibrationError as exc:
            raise CalibrationRefused(f"scene {scene.name}: {exc}") from None
        except Exception as exc:  # the worker's own failure ends this call, never the coordinator
            log.exception("scene %s: the calibration failed", scene.name)
            raise CalibrationRefused(f"scene {scene.name}: the calibration failed: {exc!r}") from None
    names = {cam_id: calib for calib, cam_id in scene.settings.cameras.items()}
    cameras = {names[c]: cam for c, cam in scene.calibrated.items()}
    for cam_id, (R, t) in found["poses"].items():
        cameras[names[cam_id]] = replace(scene.calibrated[cam_id], R=R, t=t)
    how = "from the people"
    if request.refine:
        how = "turned on the people (centres held)" if request.keep_centres else "refined on the people"
    toml = calibration_toml(
        cameras,
        {"extrinsics": f"posefleet CalibrateScene of scene {scene.name}, {how}", "world_frame": found["world_frame"]},
    )
    out = coordinator_pb2.CalibrateSceneResponse(
        calibration_toml=toml,
        joints=found["joints"],
        windows=found["frames"],
        world_frame=found["world_frame"],
        limb_length_spread=found["bone_spread"],
        people_paired_by=found["pairing"],
        seconds=time.perf_counter() - t0,
        starts_verdict=found["starts_verdict"],
    )
    if not math.isnan(found["start_disagreement"]):  # NaN: no other start to compare with
        out.start_disagreement = found["start_disagreement"]
    reported = {r["name"]: r for r in found["report"]}
    for cam_id in scene.calibrated:
        r = reported.get(cam_id, {"placed": False, "reason": "it did not stream during the recording"})
        camera = out.cameras.add(
            camera_id=cam_id,
            calibration_name=names[cam_id],
            placed=bool(r["placed"]),
            reason=str(r.get("reason", "")),
            reprojection_rms_px=float(r.get("error_px", float("nan"))),
            joints=int(r.get("observations", 0)),
            frames=int(r.get("frames", 0)),
        )
        if request.refine and r["placed"]:
            camera.given_reprojection_rms_px = float(r.get("start_px", float("nan")))
            camera.moved_m, camera.turned_deg = camera_difference(cameras[names[cam_id]], scene.calibrated[cam_id])
    return out
