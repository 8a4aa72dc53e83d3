"""PoseNet decoding (tfjs-models algorithm), vectorised with NumPy.

Multi-person: local maxima of the heatmaps above ``score_threshold`` are candidate roots, strongest
first; each root grows into a pose by following the backward then forward displacements along the
part tree, refining every hop with the short-range offsets. A root within ``nms_radius`` of the same
part of an accepted pose is skipped, and a pose's score is the mean score of its parts that do not
overlap earlier poses (soft NMS). Candidates are decoded in vectorised chunks, so the Python work
grows with the number of poses, not the number of candidates. Where Numba is installed the same
algorithm runs compiled (``posenet_numba``), about 30 times faster; this NumPy version is the fallback.

All coordinates here are in model-input pixels, ``(x, y)``.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
from posefleet.common.keypoints import NUM_KEYPOINTS
from posefleet.node.engine.decoders import posenet_numba
from posefleet.node.engine.decoders.posenet_parts import F32, NUM_EDGES, PASSES, PoseNetDecodeParams, PoseNetOutputs

__all__ = ["PoseNetDecodeParams", "PoseNetOutputs", "decode", "decode_multiple", "decode_single", "warm_up"]


def decode(out: PoseNetOutputs, stride: int, params: PoseNetDecodeParams) -> list[tuple[F32, float]]:
    """Poses as ``(keypoints (17, 3) of x, y, score, pose score)``, best first."""
    if params.multi_person:
        return decode_multiple(out, stride, params)
    return [decode_single(out, stride)]


def decode_single(out: PoseNetOutputs, stride: int) -> tuple[F32, float]:
    """Best location of every part independently (tfjs ``decodeSinglePose``)."""
    heat = out.heatmap
    _, w, k = heat.shape
    flat = heat.reshape(-1, k).argmax(axis=0)
    ys, xs = np.divmod(flat, w)
    parts = np.arange(k)
    keypoints = np.empty((k, 3), dtype=np.float32)
    keypoints[:, 0] = xs * stride + out.offsets[ys, xs, parts + k]
    keypoints[:, 1] = ys * stride + out.offsets[ys, xs, parts]
    keypoints[:, 2] = heat[ys, xs, parts]
    return keypoints, float(keypoints[:, 2].mean())


class _Grid:
    """Per-cell lookup tables, so each hop along the part tree is a handful of gathers.

    ``table[c, k]`` is the point that part ``k``'s offsets refine grid cell ``c`` to, and
    ``next_cell[c, k]`` the grid cell nearest that point; cells are flat indices ``y * W + x``.
    """

    def __init__(self, out: PoseNetOutputs, stride: int) -> None:
        h, w, k = out.heatmap.shape
        self.stride = stride
        self.width = w
        self.limit = np.array([h - 1, w - 1], dtype=np.int64)
        self.heat = out.heatmap.reshape(h * w, k)
        self.fwd = out.displacement_fwd.reshape(h * w, -1)
        self.bwd = out.displacement_bwd.reshape(h * w, -1)
        offsets = out.offsets.reshape(h * w, 2, k).transpose(0, 2, 1)  # (cells, part, yx)
        gy, gx = np.divmod(np.arange(h * w), w)
        base = np.stack((gy, gx), axis=1).astype(np.float32)[:, None, :] * stride
        self.table = (base + offsets).astype(np.float32)
        self.next_cell = self.near(self.table)

    def near(self, points_yx: F32) -> npt.NDArray[np.int64]:
        """Flat index of the grid cell nearest each (y, x) point (JavaScript ``Math.round``)."""
        # Truncation equals floor for the non-negative values that survive the clip.
        idx = (points_yx * (1.0 / self.stride) + 0.5).astype(np.int64)
        np.clip(idx, 0, self.limit, out=idx)
        return idx[..., 0] * self.width + idx[..., 1]  # type: ignore[no-any-return]


def _candidates(heat: F32, params: PoseNetDecodeParams) -> tuple[npt.NDArray[np.intp], ...]:
    size = 2 * params.local_max_radius + 1
    local_max = cv2.dilate(heat, np.ones((size, size), np.uint8))
    if local_max.ndim == 2:  # cv2 drops a trailing single channel
        local_max = local_max[..., None]
    ys, xs, parts = np.nonzero((heat >= params.score_threshold) & (heat >= local_max))
    order = np.argsort(-heat[ys, xs, parts], kind="stable")
    return ys[order], xs[order], parts[order]


def _decode_chunk(
    grid: _Grid, cells: npt.NDArray[np.int64], parts: npt.NDArray[np.intp], refine: int
) -> tuple[F32, F32]:
    """Grow every root into a full pose: positions (n, 17, 2) as (y, x) and scores (n, 17)."""
    n = len(cells)
    rows = np.arange(n)
    pos = np.zeros((n, NUM_KEYPOINTS, 2), dtype=np.float32)
    score = np.zeros((n, NUM_KEYPOINTS), dtype=np.float32)
    near = np.full((n, NUM_KEYPOINTS), -1, dtype=np.int64)  # -1: part not decoded yet
    pos[rows, parts] = grid.table[cells, parts]
    near[rows, parts] = grid.next_cell[cells, parts]
    score[rows, parts] = grid.heat[cells, parts]
    for edge, source, target, forward in PASSES:
        todo = np.flatnonzero((near[:, source] >= 0) & (near[:, target] < 0))
        if todo.size == 0:
            continue
        disp = grid.fwd if forward else grid.bwd
        point = pos[todo, source] + disp[near[todo, source]][:, (edge, edge + NUM_EDGES)]
        cell = grid.near(point)
        for _ in range(refine):
            point = grid.table[cell, target]
            cell = grid.next_cell[cell, target]
        pos[todo, target] = point
        near[todo, target] = cell
        score[todo, target] = grid.heat[cell, target]
    return pos, score


def decode_multiple(out: PoseNetOutputs, stride: int, params: PoseNetDecodeParams) -> list[tuple[F32, float]]:
    """tfjs ``decodeMultiplePoses``: up to ``max_poses`` poses, best first."""
    if params.compiled and posenet_numba.compiled_available:
        poses = posenet_numba.decode_multiple(out, stride, params)
    else:
        poses = decode_multiple_numpy(out, stride, params)
    kept = [p for p in poses if p[1] >= params.min_pose_score]
    kept.sort(key=lambda p: -p[1])
    return kept


def warm_up() -> None:
    """Compile the Numba decoder (or load it from its on-disk cache) before the first frame needs it."""
    if posenet_numba.compiled_available:
        heat = np.random.default_rng(0).random((9, 9, 17), dtype=np.float32)
        displacements = np.zeros((9, 9, 2 * NUM_EDGES), np.float32)
        out = PoseNetOutputs(heat, np.zeros((9, 9, 2 * NUM_KEYPOINTS), np.float32), displacements, displacements)
        posenet_numba.decode_multiple(out, 16, PoseNetDecodeParams(max_poses=5))


def decode_multiple_numpy(out: PoseNetOutputs, stride: int, params: PoseNetDecodeParams) -> list[tuple[F32, float]]:
    """The vectorised NumPy decoder; poses in decoding order."""
    ys, xs, parts = _candidates(out.heatmap, params)
    grid = _Grid(out, stride)
    cells = ys.astype(np.int64) * grid.width + xs
    squared_radius = params.nms_radius**2
    accepted_pos = np.empty((params.max_poses, NUM_KEYPOINTS, 2), dtype=np.float32)
    poses: list[tuple[F32, float]] = []
    for start in range(0, len(ys), params.chunk):
        if len(poses) >= params.max_poses:
            break
        sl = slice(start, start + params.chunk)
        pos, score = _decode_chunk(grid, cells[sl], parts[sl], params.offset_refine_steps)
        chunk_parts = parts[sl]
        roots = pos[np.arange(len(chunk_parts)), chunk_parts]
        alive = np.ones(len(chunk_parts), dtype=bool)
        # Earlier accepted poses suppress this chunk's roots near their corresponding part.
        for prev in accepted_pos[: len(poses)]:
            alive &= ((roots - prev[chunk_parts]) ** 2).sum(axis=1) > squared_radius
        for i in np.flatnonzero(alive):
            if not alive[i]:
                continue
            count = len(poses)
            if count:
                d2 = ((accepted_pos[:count] - pos[i]) ** 2).sum(axis=2)
                overlapped = (d2 <= squared_radius).any(axis=0)
                pose_score = float(score[i][~overlapped].sum() / NUM_KEYPOINTS)
            else:
                pose_score = float(score[i].sum() / NUM_KEYPOINTS)
            accepted_pos[count] = pos[i]
            keypoints = np.empty((NUM_KEYPOINTS, 3), dtype=np.float32)
            keypoints[:, 0] = pos[i, :, 1]
            keypoints[:, 1] = pos[i, :, 0]
            keypoints[:, 2] = score[i]
            poses.append((keypoints, pose_score))
            if len(poses) >= params.max_poses:
                break
            alive &= ((roots - pos[i][chunk_parts]) ** 2).sum(axis=1) > squared_radius
    return poses
