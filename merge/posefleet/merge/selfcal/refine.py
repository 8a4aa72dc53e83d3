"""A given calibration adjusted on the people (``refine_with_people``), or judged on them (``reprojection_under``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
from posefleet.merge.calibration import CalibrationError, Camera
from posefleet.merge.extrinsics import alignment, camera_difference, rig_size, transform
from posefleet.merge.selfcal.adjustment import (
    Seen,
    adjust_rounds,
    adjustable,
    fill_reports,
    pair_again,
    reprojection_errors,
    triangulate,
    widened,
)
from posefleet.merge.selfcal.groups import Track
from posefleet.merge.selfcal.pairs import observations
from posefleet.merge.selfcal.params import F64, Looks, SelfCalParams, Views, within_budget
from posefleet.merge.selfcal.result import CameraReport, SelfCalResult
from posefleet.merge.selfcal.world import bone_spread, skeletons_of


def _given_frame(adjusted: Mapping[str, Camera], given: Mapping[str, Camera]) -> tuple[float, F64, F64]:
    """The similarity that maps an adjusted rig onto the given one, fitted on the cameras that did not move:
    a camera that moved (the reason to refine) would otherwise drag the whole frame by a share of its move
    and turn. After a fit on all, a camera left further off than twice the median centre distance (and 1% of
    the rig's size) or twice the median turn (and 0.1 degrees) is left out, twice; two cameras always remain."""
    names = list(adjusted)
    size = rig_size({n: given[n] for n in names})
    fit = alignment(adjusted, given)
    for _ in range(2):
        moved = transform(dict(adjusted), *fit)
        off = {n: camera_difference(moved[n], given[n]) for n in names}
        far = max(2 * float(np.median([c for c, _ in off.values()])), 0.01 * size)
        turned = max(2 * float(np.median([a for _, a in off.values()])), 0.1)
        kept = [n for n in names if off[n][0] <= far and off[n][1] <= turned]
        if len(kept) < 2 or len(kept) == len(names):
            break
        fit = alignment({n: adjusted[n] for n in kept}, given)
    return fit


def _under_given(
    cameras: Mapping[str, Camera], views: Views, looks: Looks | None, p: SelfCalParams
) -> tuple[Seen, SelfCalParams, list[Track]]:
    """Each frame's people paired across the cameras under their given poses and triangulated, joints kept as
    far off as a camera turned ``p.wide_turn_deg`` puts them (a knocked camera is off by all its joints at
    once); those settings (``wide``) are returned for a refinement's first round."""
    obs = observations(cameras, views, p, looks)
    focal = float(np.mean([c.K[0, 0] for c in cameras.values()]))
    seen = Seen(obs, focal, len(views))
    wide = widened(p, focal)
    return seen, wide, pair_again({n: (c.R, c.t) for n, c in cameras.items()}, seen, cameras, wide)


@dataclass
class Explained:
    """How well a calibration explains 2D poses it was not made from (``reprojection_under``)."""

    errors: dict[str, F64]  # per camera: the reprojection errors (pixels) of its joints triangulated
    paired: int  # joints of people paired across cameras under the calibration
    triangulated: int  # of those, triangulated with every view within the gate


def reprojection_under(
    cameras: Mapping[str, Camera], views: Views, *, looks: Looks | None = None, params: SelfCalParams | None = None
) -> Explained:
    """A calibration judged on the people in ``views`` (reference-free, e.g. on a recording it was not made
    from): the people paired across cameras under its poses and triangulated, as a refinement's first round
    starts (a joint kept while every view is within ``wide_turn_deg``'s gate: a wrong rig's far joints count
    against it instead of dropping out; their median error is the robust figure)."""
    p = params or SelfCalParams()
    _, _, tracks = _under_given(cameras, views, looks, p)
    poses = {n: (c.R, c.t) for n, c in cameras.items()}
    return Explained(reprojection_errors(tracks, cameras, poses), len(tracks), sum(tr.X is not None for tr in tracks))


def refine_with_people(
    cameras: Mapping[str, Camera],
    views: Views,
    *,
    looks: Looks | None = None,
    params: SelfCalParams | None = None,
    keep_centres: bool = False,
) -> SelfCalResult:
    """The cameras' given extrinsics adjusted on the people in ``views``: each frame's people paired across
    cameras under the given poses, then the rounds of adjustment of a calibration from scratch
    (``adjust_rounds``); the adjusted rig is mapped back onto the given one by the best similarity on the
    cameras that did not move (``_given_frame``), so the world frame and scale stay the given ones. For a
    rig calibrated before (a board, known points, another system) whose cameras may have moved a little
    since; started at a reference, it also shows where the adjustment's minimum lies for these 2D poses.
    ``keep_centres``: every camera stays where the calibration puts it and only turns (cameras on fixed
    mounts, knocked or turned since); the given centres then fix the frame. Each camera's report gives its
    RMS reprojection error before (``start_px``) and after."""
    p = params or SelfCalParams()
    names = list(cameras)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if np.linalg.norm(cameras[a].center - cameras[b].center) < 1e-6:
                raise CalibrationError(
                    f"cameras {a} and {b} stand at one point: the calibration has no extrinsics to refine "
                    "(calibrate from scratch without --refine)"
                )
    t0 = time.perf_counter()
    views, looks = within_budget(views, looks, p)
    given = {n: (c.R.copy(), c.t.copy()) for n, c in cameras.items()}
    seen, wide, tracks = _under_given(cameras, views, looks, p)
    described = any(o.look is not None for frames in seen.obs.values() for people in frames for o in people)
    if not adjustable(tracks, given):
        raise CalibrationError(
            "no person is seen by two cameras where their given poses put them: the calibration does not fit "
            "these videos (calibrate from scratch without --refine)"
        )
    reports = {n: CameraReport(n, True) for n in names}
    seconds = {"pairs": time.perf_counter() - t0}
    t0 = time.perf_counter()
    centres = np.stack([cameras[n].center for n in names]) if keep_centres else None
    poses, live = adjust_rounds(tracks, cameras, dict(given), seen, p, centres=centres, first=wide)
    seconds["adjustment"] = time.perf_counter() - t0
    adjusted = {n: replace(cameras[n], R=R, t=t) for n, (R, t) in poses.items()}
    scale, R0, shift = (1.0, np.eye(3), np.zeros(3)) if keep_centres else _given_frame(adjusted, cameras)
    out = {**cameras, **transform(adjusted, scale, R0, shift)}
    for tr in live:
        tr.X = scale * R0 @ tr.X + shift  # type: ignore[operator]
    fill_reports(reports, live, out, {n: (out[n].R, out[n].t) for n in poses})
    # Before: the same joints (those the adjusted rig explains) triangulated under the given poses, ungated.
    before = [replace(tr, X=None) for tr in live]
    triangulate(before, cameras, given, np.inf)
    start: dict[str, CameraReport] = {}
    fill_reports(start, before, cameras, given)
    for n, r in start.items():
        reports[n].start_px = r.error_px
    for r in reports.values():
        if not r.observations:
            r.placed, r.reason = False, "none of its joints agrees with the other cameras after the adjustment"
    return SelfCalResult(
        out, [reports[n] for n in names], len(live), len({tr.frame for tr in live}),
        "the given calibration's (its camera centres held)" if keep_centres
        else "the given calibration's (the adjusted rig mapped onto it)", bone_spread(skeletons_of(live)),
        "colour and geometry" if described else "geometry alone", seconds=seconds,
    )  # fmt: skip
