"""Which 2D poses of a scene's cameras show the same person, from geometry and from the people already known.

The rule is Pose2Sim's (``personAssociation.py``, after EasyMocap): two poses in two cameras are the same
person when the rays through their corresponding joints pass close to each other in 3D. The cost of a pair
is the confidence-weighted mean, over the joints both see, of the closest distance between the two rays
(metres), each joint's weight the geometric mean of its two scores as Pose2Sim weighs them, and each
distance capped at twice ``max_ray_distance_m`` so that one wrong joint cannot outweigh the rest; no pose
is dropped for its overall score, only joints below ``min_score``. Pairs are merged cheapest first into
groups of at most one pose per camera, as long as every pair across the two groups stays under
``max_ray_distance_m``: groups grow to every camera that agrees, so hypotheses seen by more cameras win.

People already tracked in 3D come first (``track_costs``): a pose whose rays pass near a track's predicted
joints is that person's, which keeps weak but consistent evidence (a partial pose of low score) and stops
two hypotheses of one person from forming (4D Association's temporal edges, Zhang et al. 2020, in their
simplest form). A pose feeds at most one person. A pose that joins no group stays 2D.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
#: A pose of one camera: (camera index, pose index).
PoseRef = tuple[int, int]


@dataclass(frozen=True)
class AssociationParams:
    min_score: float = 0.3
    min_joints: int = 3
    max_ray_distance_m: float = 0.15


def ray_distances(c1: F64, d1: F64, c2: F64, d2: F64) -> F64:
    """Closest distance between rays c1 + s d1 and c2 + t d2 (s, t >= 0), broadcasting over leading axes."""
    w0 = c1 - c2
    b = (d1 * d2).sum(-1)
    d = (d1 * w0).sum(-1)
    e = (d2 * w0).sum(-1)
    denom = 1.0 - b * b
    parallel = denom < 1e-9
    safe = np.where(parallel, 1.0, denom)
    s = np.clip(np.where(parallel, 0.0, (b * e - d) / safe), 0.0, None)
    t = np.clip(np.where(parallel, e, (e - b * d) / safe), 0.0, None)
    p1 = c1 + s[..., None] * d1
    p2 = c2 + t[..., None] * d2
    gap = p1 - p2
    return np.sqrt((gap * gap).sum(-1))  # type: ignore[no-any-return]


def pair_costs(
    refs: list[PoseRef], centers: F64, dirs: F64, scores: F64, params: AssociationParams
) -> dict[tuple[PoseRef, PoseRef], float]:
    """Cost of every cross-camera pair of the poses ``refs`` (only pairs under the distance limit are kept).

    ``centers``: (N, 3) camera centre of each pose; ``dirs``: (N, J, 3) unit rays of its joints; ``scores``:
    (N, J) its keypoint scores (joints below ``min_score`` are not used). One broadcast over all pairs.
    """
    n = len(refs)
    if n < 2:
        return {}
    dist = ray_distances(centers[:, None, None], dirs[:, None], centers[None, :, None], dirs[None, :])  # (N, N, J)
    seen = scores >= params.min_score
    both = seen[:, None] & seen[None, :]
    weight = np.where(both, np.sqrt(np.clip(scores[:, None] * scores[None, :], 0.0, None)), 0.0)
    mean = _capped_mean(np.where(np.isnan(dist), np.inf, dist), weight, params)
    count = both.sum(-1)
    cams = np.array([c for c, _ in refs])
    ok = (count >= params.min_joints) & (mean <= params.max_ray_distance_m) & (cams[:, None] < cams[None, :])
    return {(refs[a], refs[b]): float(mean[a, b]) for a, b in zip(*np.nonzero(ok), strict=True)}


def _capped_mean(dist: F64, weight: F64, params: AssociationParams) -> F64:
    """The ``weight``-weighted mean over the last axis of ``dist``, each distance capped at twice
    ``max_ray_distance_m`` (one wrong joint cannot outweigh the rest); NaN without any weight."""
    capped = np.minimum(dist, 2 * params.max_ray_distance_m)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weight * capped).sum(-1) / weight.sum(-1)  # type: ignore[no-any-return]


def point_ray_distances(points: F64, centers: F64, dirs: F64) -> F64:
    """Distance of 3D points (T, J, 3) to the rays of poses (N, J, 3) from their camera centres (N, 3) ->
    (T, N, J); NaN where a point is missing."""
    rel = points[:, None] - centers[None, :, None]  # (T, N, J, 3)
    along = np.maximum((rel * dirs[None]).sum(-1), 0.0)  # behind the camera: the distance to its centre
    # Pythagoras on the unit ray, clamped at 0 against rounding.
    return np.sqrt(np.maximum((rel * rel).sum(-1) - along * along, 0.0))  # type: ignore[no-any-return]


def track_costs(predicted: F64, centers: F64, dirs: F64, scores: F64, params: AssociationParams) -> F64:
    """(T, N) cost of pose n being tracked person t: the confidence-weighted mean distance (metres, each capped
    at twice ``max_ray_distance_m``) of the person's predicted joints (T, J, 3) to the pose's rays, over the
    joints both have; ``inf`` with fewer than ``min_joints`` of them."""
    dist = point_ray_distances(predicted, centers, dirs)
    usable = np.isfinite(dist) & (scores[None] >= params.min_score)
    weight = np.where(usable, scores[None], 0.0)
    mean = _capped_mean(np.where(usable, dist, 0.0), weight, params)
    return np.where(usable.sum(-1) >= params.min_joints, mean, np.inf)


def group_poses(costs: dict[tuple[PoseRef, PoseRef], float], params: AssociationParams) -> list[list[PoseRef]]:
    """Groups of poses (at most one per camera) that show one person, cheapest pairs first."""
    group_of: dict[PoseRef, int] = {}
    groups: dict[int, list[PoseRef]] = {}
    next_id = 0
    for (a, b), _ in sorted(costs.items(), key=lambda kv: kv[1]):
        ga, gb = group_of.get(a), group_of.get(b)
        if ga is not None and ga == gb:
            continue
        members_a = groups[ga] if ga is not None else [a]
        members_b = groups[gb] if gb is not None else [b]
        if {c for c, _ in members_a} & {c for c, _ in members_b}:
            continue  # one pose per camera
        if any(
            costs.get((x, y), costs.get((y, x), np.inf)) > params.max_ray_distance_m
            for x in members_a
            for y in members_b
        ):
            continue  # every pair across must agree
        merged = members_a + members_b
        if ga is not None:
            gid = ga
        elif gb is not None:
            gid = gb
        else:
            gid, next_id = next_id, next_id + 1
        for other in (ga, gb):
            if other is not None and other != gid:
                groups.pop(other, None)
        groups[gid] = merged
        for ref in merged:
            group_of[ref] = gid
    return [sorted(g) for g in groups.values()]
