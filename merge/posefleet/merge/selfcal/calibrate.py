"""The people calibration from scratch: steps 1 to 5, started at each inlier threshold, the best run kept."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace

import numpy as np
from posefleet.merge.calibration import CalibrationError, Camera
from posefleet.merge.selfcal.adjustment import (
    Seen,
    adjust_rounds,
    fill_reports,
    pair_again,
    place,
    triangulate,
    widened,
)
from posefleet.merge.selfcal.groups import joint_tracks, people_groups
from posefleet.merge.selfcal.pairs import observations, pair_cameras, seed
from posefleet.merge.selfcal.params import F64, Looks, SelfCalParams, Views, within_budget
from posefleet.merge.selfcal.result import CameraReport, SelfCalResult, start_disagreement
from posefleet.merge.selfcal.world import bone_spread, height_scale, similarity, skeletons_of, world_frame

log = logging.getLogger("posefleet.merge.selfcal")


def calibrate_from_people(
    cameras: Mapping[str, Camera],
    views: Views,
    *,
    looks: Looks | None = None,
    person_height: float | None = 1.75,
    params: SelfCalParams | None = None,
) -> SelfCalResult:
    """Every camera's extrinsics from the people in ``views`` (``_calibrate_once``), started once per inlier
    threshold of ``params.ransac_tries``: the run that explains the most joints wins. A wrong start pairs
    fewer people; neither the reprojection error nor the count of 2D joints within a tight radius of the
    run's cameras picked better on the shared recordings (measured against their Qualisys calibration). The
    starts are compared (``start_disagreement``) on the rigs their rounds reached before the last pass: that
    pass is a search around each, and searches that end in one place say nothing of where they began."""
    p = params or SelfCalParams()
    views, looks = within_budget(views, looks, p)
    results: list[tuple[SelfCalResult, dict[str, Camera]]] = []
    failures = []
    t0 = time.perf_counter()
    for px in p.ransac_tries:
        try:
            result, rounds_rig = _calibrate_once(cameras, views, looks, person_height, replace(p, ransac_px=px))
        except CalibrationError as exc:
            failures.append(str(exc))
            continue
        log.info(
            "people calibration at %.0f px: %d joints, %s cameras, bone spread %.3f",
            px, result.points, len(result.placed), result.bone_spread,
        )  # fmt: skip
        results.append((result, rounds_rig))
    if not results:
        raise CalibrationError(failures[0])
    best, rig = max(results, key=lambda run: (len(run[0].placed), run[0].points))
    best.start_disagreement = start_disagreement(rig, [other for r, other in results if r is not best])
    best.seconds["total"] = time.perf_counter() - t0
    return best


def _calibrate_once(
    cameras: Mapping[str, Camera], views: Views, looks: Looks | None, person_height: float | None, p: SelfCalParams
) -> tuple[SelfCalResult, dict[str, Camera]]:
    """Every camera's extrinsics from the people its frames show (``views``: per frame, camera -> 2D poses in
    the camera's own pixels, COCO-17 with confidences). ``cameras`` supply the intrinsics (already ``fit`` to
    those pixels). After the first placement the people are paired again under the adjusted poses and the
    adjustment runs again (``p.rounds`` in all): more joints, fewer wrong pairings each time. Raises
    ``CalibrationError`` when not even two cameras can be placed, saying why."""
    names = list(cameras)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    obs = observations(cameras, views, p, looks)
    described = any(o.look is not None for frames in obs.values() for people in frames for o in people)
    focal = float(np.mean([c.K[0, 0] for c in cameras.values()]))
    pairs, why = [], {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            pair, reason = pair_cameras(a, b, obs, focal, p)
            if pair is None:
                why[(a, b)] = reason
                log.info("cameras %s and %s: %s", a, b, reason)
            else:
                pairs.append(pair)
    seconds["pairs"] = time.perf_counter() - t0
    if not pairs:
        detail = "; ".join(f"{a}-{b}: {r}" for (a, b), r in why.items())
        raise CalibrationError(f"no two cameras share enough people to be placed ({detail})")
    t0 = time.perf_counter()
    tracks = joint_tracks(people_groups(names, pairs, len(views)), obs, p)
    best = seed(pairs, names, p)
    poses: dict[str, tuple[F64, F64]] = {best.a: (np.eye(3), np.zeros(3)), best.b: (best.R, best.t)}
    triangulate(tracks, cameras, poses, p.outlier_px)
    reports = {n: CameraReport(n, False) for n in names}
    pending = [n for n in names if n not in poses]
    while pending:
        tried = [(n, *place(n, cameras[n], tracks, p)) for n in pending]
        placed = [(n, pose, count) for n, pose, _, count in tried if pose is not None]
        if not placed:
            for n, _, reason, _ in tried:
                reports[n].reason = reason
            break
        n, pose, _ = max(placed, key=lambda item: item[2])
        poses[n] = pose
        pending.remove(n)
        triangulate(tracks, cameras, poses, p.outlier_px)
    seconds["placement"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    seen = Seen(obs, focal, len(views))
    poses, live = adjust_rounds(tracks, cameras, poses, seen, p)
    rounds_rig = {n: replace(cameras[n], R=R, t=t) for n, (R, t) in poses.items()}
    # The last pass: the people paired again under the adjusted poses with a wide first gate, as a refinement
    # starts. A camera the rounds left a few degrees off (its right joints beyond ``outlier_px``, some wrong
    # ones within) is off by all its joints at once, and comes back where they put it.
    wide = widened(p, focal)
    try:
        poses, live = adjust_rounds(pair_again(poses, seen, cameras, wide), cameras, poses, seen, p, first=wide)
    except CalibrationError as exc:  # the rounds' result stands
        log.info("the last pass found nothing to adjust on (%s)", exc)
    seconds["adjustment"] = time.perf_counter() - t0
    R0, c0, _ = world_frame(live, poses, names[0] if names[0] in poses else best.a)
    scale, source = 1.0, "no scale: the first pair's baseline is 1"
    skeletons = skeletons_of(live)
    if person_height is not None:
        found = height_scale(skeletons, person_height)
        if found is not None:
            scale, source = found, f"the people's leg and trunk segments for a height of {person_height:.2f} m"
    poses = similarity(poses, scale, R0, c0)
    for tr in live:
        tr.X = scale * R0 @ (tr.X - c0)  # type: ignore[operator]
    fill_reports(reports, live, cameras, poses)
    out = dict(cameras)
    for n, (R, t) in poses.items():
        out[n] = replace(cameras[n], R=R, t=t)
    return SelfCalResult(
        out, [reports[n] for n in names], len(live), len({tr.frame for tr in live}), source, bone_spread(skeletons),
        "colour and geometry" if described else "geometry alone", seconds=seconds,
    ), rounds_rig  # fmt: skip
