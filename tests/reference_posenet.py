"""A plain-loop port of tfjs-models ``decodeMultiplePoses``, used only to check the vectorised decoder."""

from __future__ import annotations

import heapq
import math

import numpy as np
from posefleet.node.engine.decoders.posenet_parts import (
    POSENET_CHILDREN,
    POSENET_PARENTS,
    PoseNetDecodeParams,
    PoseNetOutputs,
)


def decode_multiple_reference(
    out: PoseNetOutputs, stride: int, params: PoseNetDecodeParams
) -> list[tuple[np.ndarray, float]]:
    heat, offsets, fwd, bwd = out.heatmap, out.offsets, out.displacement_fwd, out.displacement_bwd
    height, width, parts = heat.shape
    queue: list[tuple[float, int, int, int]] = []
    r = params.local_max_radius
    for y in range(height):
        for x in range(width):
            for k in range(parts):
                score = float(heat[y, x, k])
                if score < params.score_threshold:
                    continue
                is_max = True
                for yy in range(max(y - r, 0), min(y + r + 1, height)):
                    for xx in range(max(x - r, 0), min(x + r + 1, width)):
                        if heat[yy, xx, k] > score:
                            is_max = False
                if is_max:
                    heapq.heappush(queue, (-score, y * width + x, k, len(queue)))

    def near(py: float, px: float) -> tuple[int, int]:
        iy = min(max(math.floor(py / stride + 0.5), 0), height - 1)
        ix = min(max(math.floor(px / stride + 0.5), 0), width - 1)
        return iy, ix

    def image_coords(y: int, x: int, k: int) -> tuple[float, float]:
        return y * stride + float(offsets[y, x, k]), x * stride + float(offsets[y, x, k + parts])

    def traverse(
        edge: int, src: tuple[float, float], target: int, disp: np.ndarray
    ) -> tuple[tuple[float, float], float]:
        n_edges = disp.shape[2] // 2
        iy, ix = near(*src)
        point = (src[0] + float(disp[iy, ix, edge]), src[1] + float(disp[iy, ix, n_edges + edge]))
        for _ in range(params.offset_refine_steps):
            iy, ix = near(*point)
            point = image_coords(iy, ix, target)
        iy, ix = near(*point)
        return point, float(heat[iy, ix, target])

    sq = params.nms_radius**2
    poses: list[tuple[list[tuple[float, float]], list[float], float]] = []

    def within(point: tuple[float, float], k: int) -> bool:
        return any((p[0][k][0] - point[0]) ** 2 + (p[0][k][1] - point[1]) ** 2 <= sq for p in poses)

    while len(poses) < params.max_poses and queue:
        neg, cell, k, _ = heapq.heappop(queue)
        y, x = divmod(cell, width)
        root = image_coords(y, x, k)
        if within(root, k):
            continue
        pos: list[tuple[float, float] | None] = [None] * parts
        scores = [0.0] * parts
        pos[k], scores[k] = root, -neg
        for edge in reversed(range(len(POSENET_PARENTS))):
            s, t = POSENET_CHILDREN[edge], POSENET_PARENTS[edge]
            if pos[s] is not None and pos[t] is None:
                pos[t], scores[t] = traverse(edge, pos[s], t, bwd)  # type: ignore[arg-type]
        for edge in range(len(POSENET_PARENTS)):
            s, t = POSENET_PARENTS[edge], POSENET_CHILDREN[edge]
            if pos[s] is not None and pos[t] is None:
                pos[t], scores[t] = traverse(edge, pos[s], t, fwd)  # type: ignore[arg-type]
        full = [p for p in pos if p is not None]
        total = sum(sc for j, (pt, sc) in enumerate(zip(full, scores, strict=True)) if not within(pt, j))
        poses.append((full, scores, total / parts))
    result = []
    for full, scores, score in poses:
        kp = np.array([[p[1], p[0], s] for p, s in zip(full, scores, strict=True)], dtype=np.float32)
        result.append((kp, score))
    result.sort(key=lambda p: -p[1])
    return result
