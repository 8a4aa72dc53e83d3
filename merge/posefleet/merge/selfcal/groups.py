"""Step 2: each frame's people joined across the cameras, and their joints as tracks over the views."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

from posefleet.merge.selfcal.pairs import Obs, Pair
from posefleet.merge.selfcal.params import F64, SelfCalParams


def _find(parent: dict[tuple[str, int], tuple[str, int]], x: tuple[str, int]) -> tuple[str, int]:
    """Union-find's root of ``x`` (path halving)."""
    while parent.setdefault(x, x) != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


def people_groups(names: list[str], pairs: list[Pair], frames: int) -> list[list[dict[str, int]]]:
    """Per frame: one dict camera -> person index per person seen by two or more cameras."""
    out = []
    for k in range(frames):
        parent: dict[tuple[str, int], tuple[str, int]] = {}
        find = partial(_find, parent)
        degree: dict[tuple[str, int], int] = {}
        for pair in pairs:
            for i, j in pair.matches[k]:
                u, v = (pair.a, i), (pair.b, j)
                degree[u] = degree.get(u, 0) + 1
                degree[v] = degree.get(v, 0) + 1
                parent[find(u)] = find(v)
        members: dict[tuple[str, int], list[tuple[str, int]]] = {}
        for node in parent:
            members.setdefault(find(node), []).append(node)
        frame_groups = []
        for group in members.values():
            chosen: dict[str, tuple[int, int]] = {}
            for cam, idx in group:
                if cam not in chosen or degree[(cam, idx)] > chosen[cam][1]:
                    chosen[cam] = (idx, degree[(cam, idx)])
            if len(chosen) >= 2:
                frame_groups.append({cam: idx for cam, (idx, _) in chosen.items()})
        out.append(frame_groups)
    return out


@dataclass
class Track:
    """One joint of one person in one frame, seen by several cameras."""

    frame: int
    person: int  # the person's group in its frame
    joint: int
    obs: dict[str, tuple[F64, float]]  # camera -> (undistorted pixel xy, confidence)
    X: F64 | None = None


def joint_tracks(
    groups: list[list[dict[str, int]]], obs: Mapping[str, list[list[Obs]]], p: SelfCalParams
) -> list[Track]:
    tracks = []
    for k, frame_groups in enumerate(groups):
        for person, group in enumerate(frame_groups):
            people = {cam: obs[cam][k][idx] for cam, idx in group.items()}
            for j in range(next(iter(people.values())).conf.shape[0]):
                seen = {c: (o.pix[j], float(o.conf[j])) for c, o in people.items() if o.conf[j] >= p.min_score}
                if len(seen) >= 2:
                    tracks.append(Track(k, person, j, seen))
    return tracks
