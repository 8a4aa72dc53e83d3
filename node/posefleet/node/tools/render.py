"""Draw engine poses over images (the drawing itself is shared with camera clients)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from posefleet.common.drawing import draw_skeletons, id_colour
from posefleet.node.engine.types import Pose


def draw_poses(
    image: npt.NDArray[np.uint8],
    poses: list[Pose],
    min_score: float = 0.2,
    min_pose_score: float = 0.1,
    track_ids: list[int] | None = None,
) -> npt.NDArray[np.uint8]:
    """A copy of ``image`` with each pose's skeleton and keypoints drawn (left blue, right orange, or one
    colour per track id)."""
    colours = [id_colour(t) for t in track_ids] if track_ids else None
    return draw_skeletons(image, ((p.keypoints, p.score) for p in poses), min_score, min_pose_score, colours)
