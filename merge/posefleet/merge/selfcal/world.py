"""Step 5: the world frame (the floor from the ankles, Z up) and the metric scale from the people's height."""

from __future__ import annotations

import numpy as np
from posefleet.merge.selfcal.groups import Track
from posefleet.merge.selfcal.params import F64
from posefleet.merge.skeleton import bone_lengths

# COCO-17 joints: ankles, knees, hips, shoulders (the height segments).
L_SHOULDER, R_SHOULDER, L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANKLE, R_ANKLE = 5, 6, 11, 12, 13, 14, 15, 16
#: Segment lengths as fractions of stature (Winter, Biomechanics and Motor Control of Human Movement, 4th ed.,
#: fig. 4.1): knee to ankle 0.246, hip to knee 0.245, hip joint to shoulder 0.288.
LEG_TRUNK_OF_STATURE = 0.246 + 0.245 + 0.288


def similarity(poses: dict[str, tuple[F64, F64]], s: float, R0: F64, c0: F64) -> dict[str, tuple[F64, F64]]:
    """Camera poses after the world change X_new = s R0 (X_old - c0)."""
    out = {}
    for n, (R, t) in poses.items():
        out[n] = (R @ R0.T, s * (t + R @ c0))
    return out


def world_frame(tracks: list[Track], poses: dict[str, tuple[F64, F64]], first: str) -> tuple[F64, F64, str]:
    """(R0, c0): Z up from the floor plane the lowest ankles lie on, origin on it below the people, x along
    the first camera's view projected on the floor."""
    ankles = [tr.X for tr in tracks if tr.X is not None and tr.joint in (L_ANKLE, R_ANKLE)]
    centres = np.stack([-R.T @ t for R, t in poses.values()])
    if len(ankles) < 20:
        return np.eye(3), np.zeros(3), "too few ankles for a floor: the first camera's frame is the world"
    A = np.asarray(ankles)
    c = np.median(A, axis=0)
    _, _, vt = np.linalg.svd(A - c)
    up = vt[2]
    if np.mean((centres - c) @ up) < 0:  # cameras hang above the floor
        up = -up
    heights = (A - c) @ up
    floor = np.quantile(heights, 0.1)  # the ankles' plane: standing feet, not lifted ones
    c = c + floor * up
    view = poses[first][0][2]  # the first camera's optical axis in the world
    x = view - (view @ up) * up
    if np.linalg.norm(x) < 1e-6:
        x = np.cross(up, [1.0, 0.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(up, x)
    return np.stack([x, y, up]), c, "floor from the ankles"


def skeletons_of(tracks: list[Track]) -> F64:
    """The triangulated joints as one (N, 17, 3) skeleton per person and frame (NaN: not triangulated)."""
    index: dict[tuple[int, int], int] = {}
    for tr in tracks:
        if tr.X is not None:
            index.setdefault((tr.frame, tr.person), len(index))
    out = np.full((len(index), 17, 3), np.nan)
    for tr in tracks:
        if tr.X is not None:
            out[index[(tr.frame, tr.person)], tr.joint] = tr.X
    return out


def height_scale(skeletons: F64, person_height: float) -> float | None:
    """Metres per model unit: the people's median leg + trunk segments against ``person_height``."""
    segments = {
        "shank": ((L_KNEE, L_ANKLE), (R_KNEE, R_ANKLE)),
        "thigh": ((L_HIP, L_KNEE), (R_HIP, R_KNEE)),
        "trunk": ((L_HIP, L_SHOULDER), (R_HIP, R_SHOULDER)),
    }
    chain = 0.0
    for pairs in segments.values():
        lengths = bone_lengths(skeletons, pairs).ravel()
        lengths = lengths[np.isfinite(lengths)]
        if len(lengths) < 10:
            return None
        chain += float(np.median(lengths))
    if not np.isfinite(chain) or chain <= 1e-9:
        return None
    return person_height * LEG_TRUNK_OF_STATURE / chain


def bone_spread(skeletons: F64) -> float:
    """How much the people's limb bones change length, a check of the result that needs no reference: each of
    the 8 limb bones' robust coefficient of variation (1.4826 MAD / median) over every person and frame,
    averaged (NaN if no bone is seen 10 times). Right cameras keep bones rigid (0.12-0.16 on the shared
    recordings with OpenPose, hpe-0001 and YOLOv8n-pose, 0.25 with PoseNet 0.75, where the runs 0.6-4 m
    off gave 0.30-1.46). It is reported, not used to choose between runs: on halves of the recordings, runs
    metres off scored as low as 0.05 (bench/design-choices.md)."""
    lengths = bone_lengths(skeletons)
    spreads = []
    for b in range(lengths.shape[1]):
        values = lengths[:, b][np.isfinite(lengths[:, b])]
        if len(values) >= 10:
            median = float(np.median(values))
            spreads.append(1.4826 * float(np.median(np.abs(values - median))) / max(median, 1e-12))
    return float(np.mean(spreads)) if spreads else float("nan")
