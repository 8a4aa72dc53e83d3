"""PoseNet multi-person decoding compiled with Numba: the algorithm of ``posenet``, as plain loops.

The NumPy decoder pays a microsecond or more per array operation, about 1 ms a frame at 257x257. This
kernel does the same work in tens of microseconds and releases the GIL, so a node's decoding threads no
longer hold up OpenVINO's completion callbacks. The arithmetic is float32 as in the NumPy decoder.
Numba is optional (``compiled_available``): where it has no wheel (32-bit Raspberry Pi OS), the NumPy
decoder is used. Compiled code is cached on disk (``NUMBA_CACHE_DIR`` chooses where);
``posenet.warm_up`` compiles it, or loads it from the cache, before a node serves.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from posefleet.node.engine.decoders.posenet_parts import F32, PASSES, PoseNetDecodeParams, PoseNetOutputs

# The traversal passes of ``posenet_parts.PASSES`` as arrays, for the compiled loop.
PASS_EDGE, PASS_SOURCE, PASS_TARGET = (np.array([p[i] for p in PASSES], dtype=np.int64) for i in range(3))
PASS_FORWARD = np.array([p[3] for p in PASSES])


def _decode_multiple(  # noqa: PLR0917 - Numba compiles positional parameters only
    heat: Any,
    offsets: Any,
    fwd: Any,
    bwd: Any,
    stride: int,
    score_threshold: float,
    local_max_radius: int,
    nms_radius: float,
    max_poses: int,
    refine: int,
    pass_edge: Any,
    pass_source: Any,
    pass_target: Any,
    pass_forward: Any,
) -> tuple[Any, Any, int]:
    """(keypoints (max_poses, K, 3) as x, y, score; pose scores; how many poses), in decoding order."""
    h, w, k = heat.shape
    n_edges = fwd.shape[2] // 2
    fs = np.float32(stride)
    inv = np.float32(1.0 / stride)
    half = np.float32(0.5)
    r = local_max_radius
    r2 = np.float32(nms_radius * nms_radius)

    # Candidate roots: local maxima above the threshold, in (y, x, part) order, then strongest first.
    cand_cell = np.empty(h * w * k, np.int64)
    cand_part = np.empty(h * w * k, np.int64)
    cand_score = np.empty(h * w * k, np.float32)
    count = 0
    for y in range(h):
        for x in range(w):
            for p in range(k):
                s = heat[y, x, p]
                if s < score_threshold:
                    continue
                is_max = True
                for yy in range(max(y - r, 0), min(y + r + 1, h)):
                    for xx in range(max(x - r, 0), min(x + r + 1, w)):
                        if heat[yy, xx, p] > s:
                            is_max = False
                if is_max:
                    cand_cell[count] = y * w + x
                    cand_part[count] = p
                    cand_score[count] = s
                    count += 1
    order = np.argsort(-cand_score[:count], kind="mergesort")

    keypoints = np.zeros((max_poses, k, 3), np.float32)  # x, y, score
    scores = np.zeros(max_poses, np.float64)
    pos_y = np.zeros(k, np.float32)
    pos_x = np.zeros(k, np.float32)
    cell_y = np.zeros(k, np.int64)
    cell_x = np.zeros(k, np.int64)
    part_score = np.zeros(k, np.float32)
    done = np.zeros(k, np.bool_)
    poses = 0
    for c in order:
        if poses >= max_poses:
            break
        y, x = divmod(cand_cell[c], w)
        p = cand_part[c]
        root_y = np.float32(y) * fs + offsets[y, x, p]
        root_x = np.float32(x) * fs + offsets[y, x, p + k]
        suppressed = False
        for q in range(poses):
            dy = keypoints[q, p, 1] - root_y
            dx = keypoints[q, p, 0] - root_x
            if dy * dy + dx * dx <= r2:
                suppressed = True
                break
        if suppressed:
            continue
        done[:] = False
        pos_y[p], pos_x[p] = root_y, root_x
        # The cell nearest the root point (its own cell, unless the offset points past a border).
        cell_y[p] = min(max(int(root_y * inv + half), 0), h - 1)
        cell_x[p] = min(max(int(root_x * inv + half), 0), w - 1)
        part_score[p] = heat[y, x, p]
        done[p] = True
        for i in range(pass_edge.shape[0]):
            source, target = pass_source[i], pass_target[i]
            if not done[source] or done[target]:
                continue
            edge = pass_edge[i]
            disp = fwd if pass_forward[i] else bwd
            sy, sx = cell_y[source], cell_x[source]
            py = pos_y[source] + disp[sy, sx, edge]
            px = pos_x[source] + disp[sy, sx, edge + n_edges]
            cy = min(max(int(py * inv + half), 0), h - 1)
            cx = min(max(int(px * inv + half), 0), w - 1)
            for _ in range(refine):
                py = np.float32(cy) * fs + offsets[cy, cx, target]
                px = np.float32(cx) * fs + offsets[cy, cx, target + k]
                cy = min(max(int(py * inv + half), 0), h - 1)
                cx = min(max(int(px * inv + half), 0), w - 1)
            pos_y[target], pos_x[target] = py, px
            cell_y[target], cell_x[target] = cy, cx
            part_score[target] = heat[cy, cx, target]
            done[target] = True
        # Soft NMS: parts overlapping the same part of an earlier pose do not count towards the score.
        total = 0.0
        for j in range(k):
            overlapped = False
            for q in range(poses):
                dy = keypoints[q, j, 1] - pos_y[j]
                dx = keypoints[q, j, 0] - pos_x[j]
                if dy * dy + dx * dx <= r2:
                    overlapped = True
                    break
            if not overlapped:
                total += part_score[j]
        for j in range(k):
            keypoints[poses, j, 0] = pos_x[j]
            keypoints[poses, j, 1] = pos_y[j]
            keypoints[poses, j, 2] = part_score[j]
        scores[poses] = total / k
        poses += 1
    return keypoints, scores, poses


def _compile() -> Any:
    """The compiled kernel, or None without Numba."""
    try:
        from numba import njit
    except ImportError:  # pragma: no cover - only where Numba has no wheel
        return None
    try:
        return njit(cache=True, nogil=True)(_decode_multiple)
    except RuntimeError:  # no writable cache directory (read-only sandbox): compile once per process instead
        return njit(nogil=True)(_decode_multiple)


_kernel = _compile()
compiled_available = _kernel is not None


def decode_multiple(out: PoseNetOutputs, stride: int, params: PoseNetDecodeParams) -> list[tuple[F32, float]]:
    """Poses in decoding order as ``(keypoints (K, 3) of x, y, score, pose score)``; needs Numba."""
    if _kernel is None:
        raise RuntimeError("the compiled PoseNet decoder needs numba")
    arrays = (out.heatmap, out.offsets, out.displacement_fwd, out.displacement_bwd)
    keypoints, scores, count = _kernel(
        *(np.ascontiguousarray(a, dtype=np.float32) for a in arrays),
        int(stride),
        float(params.score_threshold),
        int(params.local_max_radius),
        float(params.nms_radius),
        int(params.max_poses),
        int(params.offset_refine_steps),
        PASS_EDGE,
        PASS_SOURCE,
        PASS_TARGET,
        PASS_FORWARD,
    )
    return [(keypoints[i], float(scores[i])) for i in range(count)]
