"""Which 2D poses of a scene's cameras show the same person, from geometry alone.

Two poses in two cameras are the same person when the rays through their corresponding joints pass
close to each other in 3D: the cost of a pair is the median, over joints both see confidently, of the
closest distance between the two rays (metres). Pairs are merged cheapest first into groups of at most
one pose per camera, as long as every pair across the two groups stays under ``max_ray_distance_m``.
A pose that joins no group is seen by one camera only and stays 2D.
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
    return np.linalg.norm(p1 - p2, axis=-1)  # type: ignore[no-any-return]


def pair_costs(
    refs: list[PoseRef], centers: F64, dirs: F64, seen: npt.NDArray[np.bool_], params: AssociationParams
) -> dict[tuple[PoseRef, PoseRef], float]:
    """Cost of every cross-camera pair of the poses ``refs`` (only pairs under the distance limit are kept).

    ``centers``: (N, 3) camera centre of each pose; ``dirs``: (N, J, 3) unit rays of its joints; ``seen``:
    (N, J) its confident joints. One broadcast over all pairs; the median is the lower median.
    """
    n = len(refs)
    if n < 2:
        return {}
    dist = ray_distances(centers[:, None, None], dirs[:, None], centers[None, :, None], dirs[None, :])  # (N, N, J)
    both = seen[:, None] & seen[None, :]
    count = both.sum(-1)
    ordered = np.sort(np.where(both, dist, np.inf), axis=-1)
    median = np.take_along_axis(ordered, np.maximum(count - 1, 0)[..., None] // 2, axis=-1)[..., 0]
    cams = np.array([c for c, _ in refs])
    ok = (count >= params.min_joints) & (median <= params.max_ray_distance_m) & (cams[:, None] < cams[None, :])
    return {(refs[a], refs[b]): float(median[a, b]) for a, b in zip(*np.nonzero(ok), strict=True)}


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
