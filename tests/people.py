"""Synthetic people walking through a calibrated rig, as every camera's 2D poses (calibration tests)."""

from __future__ import annotations

import numpy as np
from posefleet.merge.calibration import Camera

#: A standing person, COCO-17, metres, z up, facing +x; segments in the Winter ratios of a 1.75 m person.
_H = 1.75
_SKELETON = np.array([
    [0.08, 0.0, 0.93], [0.07, 0.03, 0.95], [0.07, -0.03, 0.95], [0.0, 0.07, 0.94], [0.0, -0.07, 0.94],
    [0.0, 0.19, 0.818], [0.0, -0.19, 0.818], [0.02, 0.22, 0.63], [0.02, -0.22, 0.63], [0.04, 0.22, 0.485],
    [0.04, -0.22, 0.485], [0.0, 0.09, 0.530], [0.0, -0.09, 0.530], [0.0, 0.09, 0.285], [0.0, -0.09, 0.285],
    [0.0, 0.09, 0.039], [0.0, -0.09, 0.039],
]) * np.array([_H, _H, _H])  # fmt: skip


def people_views(
    cameras: dict[str, Camera],
    frames: int,
    noise_px: float,
    seed: int,
    looks: list[dict[str, list[np.ndarray]]] | None = None,
) -> list[dict[str, list[np.ndarray]]]:
    """Three people walking and turning through the rig, projected into every camera with noise (joints
    outside the image are missing), plus one person each camera sees alone. ``looks``, when given, receives
    each pose's appearance (a colour of its own per person, noise of 3 levels, as ``merge.appearance``)."""
    rng = np.random.default_rng(seed)
    colours = rng.uniform(100, 160, (4, 4))
    starts = [np.array([-1.0, 0.0]), np.array([0.5, 0.8]), np.array([-0.3, -1.0])]
    views: list[dict[str, list[np.ndarray]]] = []
    for k in range(frames):
        people = []
        for i, start in enumerate(starts):
            heading = 0.04 * k + 2.0 * i
            c, s = np.cos(heading), np.sin(heading)
            Rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
            body = _SKELETON.copy()
            body[[9, 10], 2] += 0.25 * np.sin(0.2 * k + i)  # waving arms
            pos = start + 0.4 * np.array([np.cos(0.05 * k + i), np.sin(0.05 * k + i)])
            people.append(body @ Rz.T + np.r_[pos, 0.0])
        frame = {}
        for name, cam in cameras.items():
            seen = []
            lone = _SKELETON + np.r_[rng.uniform(-3, 3, 2), 0.0]
            for person in [*people, lone]:
                px = cam.project(person) + rng.normal(0, noise_px, (17, 2))
                inside = (px[:, 0] >= 0) & (px[:, 0] < cam.size[0]) & (px[:, 1] >= 0) & (px[:, 1] < cam.size[1])
                inside &= (person @ cam.R.T + cam.t)[:, 2] > 0  # in front of the camera
                px = np.clip(px, 0, np.array(cam.size) - 1)  # a missing joint sits at the edge, score 0
                seen.append(np.column_stack([px, np.where(inside, 0.9, 0.0)]).astype(np.float32))
            order = rng.permutation(len(seen))
            frame[name] = [seen[j] for j in order]
            if looks is not None:
                described = looks[-1] if len(looks) > k else {}
                described[name] = [(colours[j] + rng.normal(0, 3, 4)).astype(np.float32) for j in order]
                if len(looks) <= k:
                    looks.append(described)
        views.append(frame)
    return views


def passing_views(
    cameras: dict[str, Camera], fps: float, speed: float, *, lane: float, seed: int, people: int = 3
) -> tuple[list[dict[str, list[np.ndarray]]], np.ndarray]:
    """``people`` walking straight across the rig at ``speed`` (m/s), in lanes ``lane`` metres apart, each
    lane the other way (neighbours pass each other), arms and legs swinging, seen at ``fps`` with 2 px noise
    and one keypoint in ten missed; a keypoint inside the box of someone nearer the camera is hidden (a pose
    left with fewer than 3 is not detected). Every window's 2D poses (shuffled per camera) and the true
    skeletons (frames, people, 17, 3)."""
    rng = np.random.default_rng(seed)
    frames = int(5.5 / speed * fps)  # 5.5 m across
    views: list[dict[str, list[np.ndarray]]] = []
    truth = np.zeros((frames, people, 17, 3))
    for k in range(frames):
        t = k / fps
        for i in range(people):
            way = 1.0 if i % 2 == 0 else -1.0  # facing +x, or turned half round to face -x
            body = _SKELETON.copy()
            swing = 0.25 * np.sin(2 * np.pi * t + i)
            body[[9, 10], 0] += [swing, -swing]
            body[[15, 16], 0] += [-swing, swing]
            at = np.array([-2.75 * way + way * speed * t, (i - (people - 1) / 2) * lane, 0.0])
            truth[k, i] = body * np.array([way, way, 1.0]) + at
        frame = {}
        for name, cam in cameras.items():
            depth = (truth[k] @ cam.R.T + cam.t)[..., 2]  # (people, 17)
            boxes = [cam.project(body) for body in truth[k]]
            poses = []
            for i, box in enumerate(boxes):
                px = box + rng.normal(0, 2.0, (17, 2))
                inside = (px[:, 0] >= 0) & (px[:, 0] < cam.size[0]) & (px[:, 1] >= 0) & (px[:, 1] < cam.size[1])
                inside &= depth[i] > 0
                for j, other in enumerate(boxes):  # hidden behind someone nearer
                    if j != i and depth[j].mean() < depth[i].mean():
                        inside &= ~((px >= other.min(axis=0) - 10) & (px <= other.max(axis=0) + 10)).all(axis=1)
                score = np.where(inside & (rng.random(17) > 0.1), rng.uniform(0.4, 0.95, 17), 0.0)
                if (score > 0).sum() >= 3:
                    poses.append(np.column_stack([np.clip(px, 0, np.array(cam.size) - 1), score]).astype(np.float32))
            frame[name] = [poses[j] for j in rng.permutation(len(poses))]
        views.append(frame)
    return views, truth
