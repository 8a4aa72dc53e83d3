"""``posefleet bench-calibration``: posefleet's own calibration of the shared rig against its Qualisys one.

Intrinsics from the checkerboard photos; extrinsics from the 8 platform points (their pixels are the
Qualisys projections plus Gaussian click noise, as SOURCES.md says: the stills come without clicks); and
extrinsics from people, on the four multi-person videos through each model and on the OpenPose recording
(a different recording of the rig), each compared after the best similarity alignment (rotation from the
cameras' orientations, then scale and shift of their centres), and anchored to the platform points to fuse
the videos' 3D people with both calibrations (MPJPE between the two).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from posefleet.common.cli import positive_float, report
from posefleet.common.errors import PosefleetError

F64 = npt.NDArray[np.float64]
#: The platform points Pose2Sim's demo config names (SOURCES.md), metres, world Z-up.
PLATFORM = {
    f"p{i + 1}": np.array(v, np.float64)
    for i, v in enumerate(
        [(-2.0, 0.3, 0.0), (-2.0, 0.0, 0.0), (-2.0, 0.0, 0.05), (-2.0, -0.3, 0.0),
         (0.0, 0.3, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.05), (0.0, -0.3, 0.0)]
    )
}  # fmt: skip


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench-calibration", help="posefleet's own calibration of the shared rig against Qualisys")
    p.add_argument("--cache", type=Path, help="keep converted models and their 2D poses here between runs")
    p.add_argument("--click-noise-px", type=positive_float, default=1.0, help="click noise of the platform points")
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    p.set_defaults(func=cmd_bench_calibration)


def clicks(cameras: Mapping[str, Any], noise_px: float, seed: int) -> dict[str, dict[str, F64]]:
    """The platform points as a user would click them: projected by the reference, plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    points = np.stack(list(PLATFORM.values()))
    out = {}
    for name, cam in cameras.items():
        px = cam.project(points) + rng.normal(0.0, noise_px, (len(points), 2))
        out[name] = dict(zip(PLATFORM, px, strict=True))
    return out


def people_mpjpe(
    a: Sequence[Sequence[Any]], b: Sequence[Sequence[Any]], gate_m: float = 0.5
) -> tuple[float, int, dict[str, float]]:
    """Mean per-joint distance (mm) between the 3D people of two runs, people paired per frame (optimal
    assignment on their mean joint distance, pairs within ``gate_m``), how many pairs there were, and the mean
    per person of ``b`` (its track id, named by where the person stands on average: a far person's error is not
    the same as a near one's)."""
    from scipy.optimize import linear_sum_assignment

    errors: list[float] = []
    pairs = 0
    by_person: dict[int, list[float]] = {}
    where: dict[int, list[F64]] = {}
    for people_a, people_b in zip(a, b, strict=True):
        if not people_a or not people_b:
            continue
        cost = np.full((len(people_a), len(people_b)), 1e6)
        for i, pa in enumerate(people_a):
            for j, pb in enumerate(people_b):
                d = np.linalg.norm(pa.points - pb.points, axis=1)
                if np.isfinite(d).sum() >= 6:
                    cost[i, j] = float(np.nanmean(d))
        for i, j in zip(*linear_sum_assignment(cost), strict=True):
            if cost[i, j] <= gate_m:
                d = np.linalg.norm(people_a[i].points - people_b[j].points, axis=1)
                errors.extend(d[np.isfinite(d)].tolist())
                by_person.setdefault(people_b[j].id, []).extend(d[np.isfinite(d)].tolist())
                where.setdefault(people_b[j].id, []).append(np.nanmean(people_b[j].points[:, :2], axis=0))
                pairs += 1
    per_person = {}
    for pid, values in sorted(by_person.items()):
        x, y = np.mean(where[pid], axis=0)
        per_person[f"({x:.1f}, {y:.1f}) m"] = float(np.mean(values)) * 1000
    return (float(np.mean(errors)) * 1000 if errors else float("nan")), pairs, per_person


def export_distortion(lab: Path) -> dict[str, list[float]]:
    """Each camera's k1 k2 as the Qualisys export (``Calib.qca.txt``, the TOML's source) states them."""
    import xml.etree.ElementTree as ET

    out = {}
    for camera in ET.parse(lab / "calibration" / "Calib.qca.txt").getroot().iter("camera"):
        serial, intrinsic = camera.get("serial", ""), camera.find("intrinsic")
        if serial.startswith("cam") and intrinsic is not None:
            out[f"cam_{serial[3:]}"] = [float(intrinsic.get(f"radialDistortion{k}", "nan")) for k in (1, 2)]
    return out


def _intrinsics(lab: Path, reference: Mapping[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from posefleet.merge.boards import parse_board
    from posefleet.merge.calibration import Camera
    from posefleet.merge.intrinsics import calibrate_intrinsics

    board = parse_board("checkerboard:4x7:60")
    export = export_distortion(lab)
    rows, cameras = [], {}
    for name, ref in reference.items():
        t0 = time.perf_counter()
        found = calibrate_intrinsics(name, lab / "calibration-images" / "intrinsics" / name.replace("_", ""), board)
        seconds = time.perf_counter() - t0
        cameras[name] = Camera(name, found.size, found.K, found.dist, ref.R, ref.t)
        rows.append({
            "camera": name, "rms_px": found.rms_px, "views": f"{found.used}/{len(found.views)}",
            "focal_pct": float(100 * (found.K[0, 0] + found.K[1, 1]) / (ref.K[0, 0] + ref.K[1, 1]) - 100),
            "pp_px": float(np.linalg.norm(found.K[:2, 2] - ref.K[:2, 2])), "seconds": seconds,
            "k1_k2": found.dist[:2].tolist(), "toml_k1_k2": ref.dist[:2].tolist(), "export_k1_k2": export.get(name),
            "dropped": [v.source for v in found.views if not v.used and v.found and v.note.startswith("dropped")],
        })  # fmt: skip
    return rows, cameras


def _points(reference: Mapping[str, Any], own: Mapping[str, Any], noise: float) -> list[dict[str, Any]]:
    from posefleet.merge.extrinsics import camera_from_points

    rows = []
    for label, intrinsics in (("Qualisys intrinsics", reference), ("posefleet's intrinsics", own)):
        worst, mean, t0 = [], [], time.perf_counter()
        for seed in range(10):
            clicked = clicks(reference, noise, seed)
            errs = [
                float(
                    np.linalg.norm(camera_from_points(intrinsics[n], clicked[n], PLATFORM).camera.center - ref.center)
                )
                for n, ref in reference.items()
            ]
            worst.append(max(errs))
            mean.append(float(np.mean(errs)))
        rows.append({
            "intrinsics": label, "mean_cm": 100 * float(np.mean(mean)), "worst_cm": 100 * float(np.max(worst)),
            "ms_per_camera": (time.perf_counter() - t0) * 1000 / (10 * len(reference)),
        })  # fmt: skip
    return rows


def _people(
    recordings: list[Any], reference: Mapping[str, Any], noise: float
) -> tuple[list[dict[str, Any]], dict[tuple[str, str], dict[str, Any]]]:
    """Each recording's people calibration from scratch, measured against the reference; and the rigs."""
    from posefleet.bench.scene import fused
    from posefleet.merge.extrinsics import anchor, rig_differences
    from posefleet.merge.selfcal import calibrate_from_people

    rows, rigs = [], {}
    for recording in recordings:
        for source, views in recording.views.items():
            t0 = time.perf_counter()
            try:
                result = calibrate_from_people(recording.cameras, views, looks=recording.looks.get(source))
            except PosefleetError as exc:
                rows.append({"recording": recording.name, "source": source, "error": str(exc)})
                continue
            seconds = time.perf_counter() - t0
            placed = {n: result.cameras[n] for n in result.placed}
            rigs[(recording.name, source)] = placed
            scale, errors = rig_differences(placed, reference)
            anchored, residual = anchor(dict(placed), clicks(reference, noise, 0), PLATFORM)
            fitted = {
                n: replace(c, K=recording.cameras[n].K, image_size=recording.cameras[n].image_size)
                for n, c in anchored.items()
            }
            mine, _ = fused(fitted, views, recording.fps)
            theirs, _ = fused({n: recording.cameras[n] for n in fitted}, views, recording.fps)
            mpjpe, pairs, per_person = people_mpjpe(mine, theirs)
            rows.append({
                "recording": recording.name, "source": source, "placed": len(placed), "points": result.points,
                "frames": result.frames, "seconds": seconds, "stages": result.seconds,
                "centre_cm": {n: 100 * e[0] for n, e in errors.items()},
                "angle_deg": {n: e[1] for n, e in errors.items()},
                "height_scale_error_pct": 100 * (scale - 1),
                "reprojection_px": {r.name: r.error_px for r in result.report},
                "anchor_residual_cm": 100 * max(residual.values()), "mpjpe_mm": mpjpe, "people_pairs": pairs,
                "mpjpe_mm_per_person": per_person, "bone_spread": result.bone_spread,
                "start_disagreement": result.start_disagreement,
            })  # fmt: skip
    return rows, rigs


def _cross(recordings: list[Any], rigs: Mapping[tuple[str, str], Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every rig (Qualisys, and each one the people made) judged on every recording's 2D, reference-free: the
    people paired and triangulated under it (``selfcal.reprojection_under``), their reprojection errors."""
    from posefleet.merge.selfcal import reprojection_under

    rows = []
    judged = {("Qualisys", ""): None, **rigs}
    for recording in recordings:
        cams = recording.cameras
        for source, views in recording.views.items():
            for (rig_recording, rig_source), rig in judged.items():
                if rig is not None and set(rig) != set(cams):
                    continue
                given = cams if rig is None else {n: replace(c, R=rig[n].R, t=rig[n].t) for n, c in cams.items()}
                got = reprojection_under(given, views, looks=recording.looks.get(source))
                every = np.concatenate(list(got.errors.values()))
                rows.append({
                    "recording": recording.name, "source": source, "rig": rig_recording, "rig_source": rig_source,
                    "held_out": rig is not None and (rig_recording, rig_source) != (recording.name, source),
                    "paired": got.paired, "triangulated": got.triangulated,
                    "median_px": float(np.median(every)), "rms_px": float(np.sqrt(np.mean(every**2))),
                    "median_px_per_camera": {n: float(np.median(e)) for n, e in got.errors.items()},
                })  # fmt: skip
    return rows


def _from_reference(recordings: list[Any], reference: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The adjustment started at the reference (``calibrate people --refine``): where its minimum lies for each
    run's 2D, how well the reference explains that 2D before, and the people fused with the refined rig. Then
    the reference's centres held (``--keep-centres``): how far each camera turns, about which of its axes."""
    import cv2
    from posefleet.bench.scene import fused
    from posefleet.merge.extrinsics import rig_differences
    from posefleet.merge.selfcal import refine_with_people

    rows = []
    for recording in recordings:
        for source, views in recording.views.items():
            row: dict[str, Any] = {"recording": recording.name, "source": source}
            t0 = time.perf_counter()
            try:
                result = refine_with_people(recording.cameras, views, looks=recording.looks.get(source))
            except PosefleetError as exc:
                rows.append({**row, "error": str(exc)})
                continue
            seconds = time.perf_counter() - t0
            placed = {n: result.cameras[n] for n in result.placed}
            _, errors = rig_differences(placed, reference)
            mine, _ = fused(placed, views, recording.fps)
            theirs, _ = fused({n: recording.cameras[n] for n in placed}, views, recording.fps)
            mpjpe, pairs, per_person = people_mpjpe(mine, theirs)
            t0 = time.perf_counter()
            held = refine_with_people(recording.cameras, views, looks=recording.looks.get(source), keep_centres=True)
            held_seconds = time.perf_counter() - t0
            # Each camera's turn in its own frame (x right, y down, z ahead), degrees: R_held = R_given @ turn.
            turns = {
                n: np.degrees(cv2.Rodrigues(recording.cameras[n].R.T @ held.cameras[n].R)[0].ravel()).tolist()
                for n in held.placed
            }
            rows.append({
                **row, "seconds": seconds, "centre_cm": {n: 100 * e[0] for n, e in errors.items()},
                "angle_deg": {n: e[1] for n, e in errors.items()},
                "start_px": {r.name: r.start_px for r in result.report},
                "reprojection_px": {r.name: r.error_px for r in result.report}, "points": result.points,
                "mpjpe_mm": mpjpe, "people_pairs": pairs, "mpjpe_mm_per_person": per_person,
                "held": {"turn_deg": turns, "reprojection_px": {r.name: r.error_px for r in held.report},
                         "points": held.points, "seconds": held_seconds},
            })  # fmt: skip
    return rows


def _parts(frames: int) -> list[tuple[str, slice, bool]]:
    """Each half of a recording: the first and the second (people paired both ways), and every other frame
    (the default pairing alone), as ``--max-frames`` spreads a longer recording's frames."""
    middle = frames // 2
    return [
        ("first", slice(None, middle), True),
        ("second", slice(middle, None), True),
        ("even frames", slice(None, None, 2), False),
        ("odd frames", slice(1, None, 2), False),
    ]


def _halves(recordings: list[Any], reference: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The people calibration on each half of every recording (hold-out data for any rule chosen on the
    whole): the largest camera error after the similarity alignment, or why it failed."""
    from posefleet.merge.extrinsics import rig_differences
    from posefleet.merge.selfcal import calibrate_from_people

    rows = []
    for recording in recordings:
        for source, views in recording.views.items():
            looks = recording.looks.get(source)
            pairing = ["colour and geometry", "geometry alone"] if looks else ["geometry alone"]
            for half, part, both in _parts(len(views)):
                for how in pairing if both else pairing[:1]:
                    row: dict[str, Any] = {"recording": recording.name, "source": source, "half": half, "pairing": how}
                    given = looks[part] if looks and how != "geometry alone" else None
                    t0 = time.perf_counter()
                    try:
                        result = calibrate_from_people(recording.cameras, views[part], looks=given)
                    except PosefleetError as exc:
                        rows.append({**row, "error": str(exc)})
                        continue
                    _, errors = rig_differences({n: result.cameras[n] for n in result.placed}, reference)
                    rows.append({
                        **row, "frames": len(views[part]), "placed": len(result.placed), "points": result.points,
                        "worst_cm": max(100 * e[0] for e in errors.values()),
                        "worst_deg": max(e[1] for e in errors.values()), "bone_spread": result.bone_spread,
                        "start_disagreement": result.start_disagreement, "seconds": time.perf_counter() - t0,
                    })  # fmt: skip
    return rows


INTRINSICS_HEAD = (
    "| camera | RMS px | views used | focal vs Qualisys | principal point vs Qualisys | "
    "k1 / k2 (the Qualisys export's) | time |\n|---|---|---|---|---|---|---|"
)
INTRINSICS_NOTE = (
    "The distortion: the Qualisys TOML's k1 k2 are its export's (`Calib.qca.txt`) divided by 64 (-0.0007 / 0.002 "
    "against -0.046 / 0.14): Pose2Sim's conversion divides the export's intrinsics by its 1/64-pixel unit, and "
    "these coefficients are dimensionless. The photos give the export's values, not the TOML's. Its principal "
    "points are the export's."
)
PEOPLE_HEAD = (
    "| recording | 2D | centre error per camera (cm) | orientation error (deg) | height scale | "
    "reprojection RMS (px) | joints | limb-length spread | starts apart | MPJPE vs Qualisys | time |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)
HALVES_HEAD = (
    "| recording | 2D | half | people paired by | cameras placed | worst centre error | worst orientation error | "
    "joints | limb-length spread | starts apart | time |\n|---|---|---|---|---|---|---|---|---|---|---|"
)
PEOPLE_NOTE = (
    "Centres and orientations after the best similarity alignment; the scale error is that of the people's "
    "height (1.75 m assumed); MPJPE: the videos' 3D people fused with the people-made calibration (anchored to "
    "the platform points) against the same 2D fused with the Qualisys calibration, over all people paired and "
    "per person (where they stand; the platform points lie between x = -2 and 0 m)."
)


REFINED_HEAD = (
    "| recording | 2D | centre error per camera (cm) | orientation error (deg) | reprojection RMS under Qualisys "
    "-> adjusted (px) | from scratch: worst centre | MPJPE vs Qualisys | time |\n|---|---|---|---|---|---|---|---|"
)
REFINED_NOTE = (
    "`posefleet calibrate people --refine` started at the Qualisys calibration itself: the adjustment's minimum "
    "for each run's 2D poses, and how far it lies from Qualisys (after the best similarity, as above). Where "
    "the calibration from scratch lands as far off, the pipeline finds what its adjustment can, and the "
    "remaining difference is between those 2D poses and the Qualisys rig, not in the search. Reprojection RMS "
    "under Qualisys: the joints the adjusted rig explains, triangulated under the Qualisys poses. MPJPE: the people "
    "fused with the adjusted rig (in the Qualisys frame, nothing anchored) against the same 2D fused with "
    "Qualisys."
)
HELD_HEAD = (
    "| recording | 2D | turn per camera (deg) | cam_03's turn about its x (tilt) / y (pan) / z (roll) axes (deg) | "
    "reprojection RMS under Qualisys -> turned -> adjusted freely (px) | time |\n|---|---|---|---|---|---|"
)
HELD_NOTE = (
    "`posefleet calibrate people --refine --keep-centres` started at the Qualisys calibration: every camera stays "
    "at its Qualisys centre and only turns. Where the turned rig explains the 2D about as well as the freely "
    "adjusted one, those 2D do not tell the centres apart at the scale of the free rig's offsets; where different "
    "models' 2D of the same videos turn a camera about the same axes, the turn is the camera's, not a detector's."
)
CROSS_HEAD = (
    "| 2D judged | rig | joints triangulated / paired | median error (px) | RMS (px) | median per camera (px) |"
    "\n|---|---|---|---|---|---|"
)
CROSS_NOTE = (
    "Every rig judged on every recording's 2D without a reference (`selfcal.reprojection_under`): the people "
    "paired across cameras under the rig and triangulated (a joint kept while every view is within 147 px), "
    "the reprojection errors of all their joints. Rows in bold are held out: a rig judged on 2D it was not made "
    "from (another model's 2D of the same videos, or the other recording). The videos and the OpenPose recording "
    "are two recordings of the rig filed under the one calibration (`SOURCES.md`)."
)
HALVES_NOTE = (
    "Each run as `posefleet calibrate people` makes it (defaults), on the first or the second 50 frames alone, "
    "with the people paired across cameras by their colours and positions (the default for videos) and by "
    "positions alone (`--no-appearance`; the OpenPose recording has no frames to take colours from); and on every "
    "other frame (the even or the odd ones, 50 spread over the 1.7 s as `--max-frames` spreads a longer "
    "recording's frames; the default pairing alone). The runs "
    "metres off that were checked (PoseNet 0.75, YOLOv8n-pose) pair different people across cameras: people "
    "standing in place never contradict such a permutation, and it fits the 2D as well as the right pairing "
    "(bench/design-choices.md)."
)


def _per_person(row: dict[str, Any]) -> str:
    per = row.get("mpjpe_mm_per_person") or {}
    return "; " + ", ".join(f"{v:.0f} mm at {k}" for k, v in per.items()) if per else ""


def _pose_times(lab: Path, models: Path) -> dict[str, float]:
    """Seconds each model takes for the 2D poses of one video (100 frames), measured now (never cached)."""
    from posefleet.bench.scene import MODELS
    from posefleet.node.tools.fuse import video_poses

    out = {}
    for label in MODELS:
        t0 = time.perf_counter()
        video_poses("cam_01", models / label.replace(" ", "-"), lab / "videos" / "cam01.mp4", looks=True)
        out[label] = time.perf_counter() - t0
    return out


def _apart(row: dict[str, Any]) -> str:
    """The run's ``start_disagreement``, flagged where ``calibrate people`` warns."""
    from posefleet.merge.selfcal import STARTS_AGREE

    apart = row.get("start_disagreement", float("nan"))
    return "-" if math.isnan(apart) else f"{apart:.3f}" + (" (warned)" if apart > STARTS_AGREE else "")


def _starts_summary(rows: list[dict[str, Any]]) -> str:
    """How the starts check split the runs above, against their real error (the worst camera centre)."""
    from posefleet.merge.selfcal import STARTS_AGREE

    def worst(r: dict[str, Any]) -> float:
        return float(r["worst_cm"]) if "worst_cm" in r else max(r["centre_cm"].values())

    done = [r for r in rows if "error" not in r and not math.isnan(r.get("start_disagreement", math.nan))]
    agreed = sorted(worst(r) for r in done if r["start_disagreement"] <= STARTS_AGREE)
    warned = sorted(worst(r) for r in done if r["start_disagreement"] > STARTS_AGREE)

    def span(values: list[float]) -> str:
        return f"{values[0]:.0f}-{values[-1]:.0f} cm" if values else "none"

    return (
        f"Starts apart: how far the other starts' rigs lie from the result (`start_disagreement`: the largest camera "
        f"centre distance after the best similarity, over the rig's size); `calibrate people` warns above "
        f"{STARTS_AGREE}. Of the {len(done)} runs above, the {len(agreed)} whose starts agreed lay {span(agreed)} "
        f"from Qualisys (worst camera); the {len(warned)} warned {span(warned)}."
    )


def markdown(data: dict[str, Any]) -> str:
    out = ["# Calibration of the shared rig by posefleet, against its Qualisys calibration", ""]
    out += ["## Intrinsics from the checkerboard photos (4x7, 60 mm)", "", INTRINSICS_HEAD]
    for r in data["intrinsics"]:
        dropped = f" (dropped: {', '.join(r['dropped'])})" if r["dropped"] else ""
        export = r.get("export_k1_k2")
        given = f" ({export[0]:.3f} / {export[1]:.3f})" if export else ""
        k = f"{r['k1_k2'][0]:.3f} / {r['k1_k2'][1]:.3f}{given}" if "k1_k2" in r else "-"
        out.append(
            f"| {r['camera']} | {r['rms_px']:.3f} | {r['views']}{dropped} | {r['focal_pct']:+.2f}% | "
            f"{r['pp_px']:.1f} px | {k} | {r['seconds']:.1f} s |"
        )
    out += ["", INTRINSICS_NOTE]
    out += ["", f"## Extrinsics from the 8 platform points (click noise {data['click_noise_px']} px, 10 draws)", ""]
    out += ["| intrinsics | camera centre error, mean | worst | time per camera |", "|---|---|---|---|"]
    for r in data["points"]:
        out.append(
            f"| {r['intrinsics']} | {r['mean_cm']:.1f} cm | {r['worst_cm']:.1f} cm | {r['ms_per_camera']:.1f} ms |"
        )
    out += ["", "## Extrinsics from people (Qualisys intrinsics)", "", PEOPLE_NOTE, "", PEOPLE_HEAD]
    for r in data["people"]:
        if "error" in r:
            out.append(f"| {r['recording']} | {r['source']} | {r['error']} | | | | | | | | |")
            continue
        cm = " / ".join(f"{v:.1f}" for v in r["centre_cm"].values())
        deg = " / ".join(f"{v:.2f}" for v in r["angle_deg"].values())
        px = " / ".join(f"{v:.1f}" for v in r["reprojection_px"].values())
        out.append(
            f"| {r['recording']} | {r['source']} | {cm} | {deg} | {r['height_scale_error_pct']:+.0f}% | {px} | "
            f"{r['points']} | {r.get('bone_spread', float('nan')):.2f} | {_apart(r)} | "
            f"{r['mpjpe_mm']:.0f} mm ({r['people_pairs']} people){_per_person(r)} | {r['seconds']:.1f} s |"
        )
    scratch = {(r["recording"], r["source"]): r for r in data["people"] if "error" not in r}
    out += ["", "### The adjustment started at the Qualisys calibration", "", REFINED_NOTE, "", REFINED_HEAD]
    for r in data.get("from_reference", []):
        if "error" in r:
            out.append(f"| {r['recording']} | {r['source']} | {r['error']} |" + " |" * 5)
            continue
        cm = " / ".join(f"{v:.1f}" for v in r["centre_cm"].values())
        deg = " / ".join(f"{v:.2f}" for v in r["angle_deg"].values())
        after = r["reprojection_px"]
        px = " / ".join(f"{a:.1f} -> {after[n]:.1f}" for n, a in r["start_px"].items())
        own = scratch.get((r["recording"], r["source"]))
        worst = f"{max(own['centre_cm'].values()):.1f} cm" if own else "-"
        out.append(
            f"| {r['recording']} | {r['source']} | {cm} | {deg} | {px} | {worst} | "
            f"{r['mpjpe_mm']:.0f} mm ({r['people_pairs']} people){_per_person(r)} | {r['seconds']:.1f} s |"
        )
    out += ["", "### Qualisys' camera centres held, the cameras only turned", "", HELD_NOTE, "", HELD_HEAD]
    for r in data.get("from_reference", []):
        if "held" not in r:
            continue
        held = r["held"]
        turned = " / ".join(f"{float(np.linalg.norm(v)):.2f}" for v in held["turn_deg"].values())
        axes = " / ".join(f"{v:+.2f}" for v in held["turn_deg"].get("cam_03", []))
        px = " / ".join(
            f"{a:.1f} -> {held['reprojection_px'][n]:.1f} -> {r['reprojection_px'][n]:.1f}"
            for n, a in r["start_px"].items()
        )
        out.append(f"| {r['recording']} | {r['source']} | {turned} | {axes} | {px} | {held['seconds']:.1f} s |")
    out += ["", "### Each rig judged on the other recordings' 2D", "", CROSS_NOTE, "", CROSS_HEAD]
    for r in data.get("cross", []):
        rig = "Qualisys" if r["rig"] == "Qualisys" else f"people: {r['rig'].split(' (')[0]}, {r['rig_source']}"
        bold = "**" if r["held_out"] else ""
        per = " / ".join(f"{v:.1f}" for v in r["median_px_per_camera"].values())
        out.append(
            f"| {r['recording'].split(' (')[0]}, {r['source']} | {bold}{rig}{bold} | {r['triangulated']} / "
            f"{r['paired']} | {r['median_px']:.1f} | {r['rms_px']:.1f} | {per} |"
        )
    out += ["", "## The same on each half of the recordings (50 frames: hold-out data)", "", HALVES_NOTE, "",
            HALVES_HEAD]  # fmt: skip
    for r in data.get("halves", []):
        if "error" in r:
            out.append(f"| {r['recording']} | {r['source']} | {r['half']} | {r['pairing']} | {r['error']} |" + " |" * 6)
            continue
        out.append(
            f"| {r['recording']} | {r['source']} | {r['half']} | {r['pairing']} | {r['placed']} | "
            f"{r['worst_cm']:.1f} cm | "
            f"{r['worst_deg']:.2f} deg | {r['points']} | {r['bone_spread']:.2f} | {_apart(r)} | {r['seconds']:.1f} s |"
        )
    out += ["", _starts_summary([*data["people"], *data.get("halves", [])])]
    out += ["", "2D poses of one 100-frame video (the people step needs four): "
            + ", ".join(f"{k} {v:.1f} s" for k, v in data["pose_seconds_per_video"].items()) + "."]  # fmt: skip
    return "\n".join(out) + "\n"


def cmd_bench_calibration(args: argparse.Namespace) -> int:
    from posefleet.bench.scene import LAB, lab_recordings
    from posefleet.common.paths import assets_dir
    from posefleet.merge.calibration import load_calibration

    assets = assets_dir(required=False)
    if assets is None or not (assets / LAB).is_dir():
        raise PosefleetError(f"bench-calibration needs the shared assets' {LAB} (set POSEFLEET_ASSETS)")
    lab = assets / LAB
    reference = load_calibration(lab / "calibration" / "Calib_qualisys.toml")
    intrinsics, own = _intrinsics(lab, reference)
    points = _points(reference, own, args.click_noise_px)
    with tempfile.TemporaryDirectory() as work:
        recordings = lab_recordings(assets, args.cache, Path(work))
        people, rigs = _people(recordings, reference, args.click_noise_px)
        from_reference = _from_reference(recordings, reference)
        cross = _cross(recordings, rigs)
        halves = _halves(recordings, reference)
        pose_seconds = _pose_times(lab, (args.cache or Path(work)) / "models")
    data = {
        "click_noise_px": args.click_noise_px, "intrinsics": intrinsics, "points": points, "people": people,
        "from_reference": from_reference, "cross": cross, "halves": halves, "pose_seconds_per_video": pose_seconds,
    }  # fmt: skip
    report(args, markdown(data), json.loads(json.dumps(data, default=float)))
    return 0
