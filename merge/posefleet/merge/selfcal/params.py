"""The people calibration's settings, the frames it takes, and the arrays it passes around."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Views = Sequence[Mapping[str, Sequence[F32]]]  # per frame: camera -> its 2D poses (J, 3) in pixels
Looks = Sequence[Mapping[str, Sequence[F32]]]  # parallel to Views: each pose's appearance (``appearance.describe``)
log = logging.getLogger("posefleet.merge.selfcal")


@dataclass(frozen=True)
class SelfCalParams:
    min_score: float = 0.3  # a joint below this confidence is not a correspondence
    min_joints: int = 6  # joints two views of one person must share to be paired
    ransac_px: float = 10.0  # inlier threshold of the essential matrix and PnP (pixels)
    match_px: float = 25.0  # the largest median Sampson distance of a pairing (pixels)
    min_pair_inliers: int = 60  # a camera pair agreeing on fewer joints gives no pose
    min_place_joints: int = 40  # triangulated joints a camera needs to be placed
    huber_px: float = 5.0
    outlier_px: float = 30.0  # observations further off after the first adjustment are dropped
    hypotheses: int = 300  # pairings of two people tried as the source of a pair's essential matrix
    adjustment_evaluations: int = 100  # residual evaluations of one bundle adjustment at most
    ransac_tries: tuple[float, ...] = (8.0, 12.0, 16.0)  # ``calibrate_from_people`` starts once with each
    rounds: int = 3  # placement and adjustment rounds, the people paired again under the cameras before each
    look_px: float = 8.0  # a pairing's cost per unit of appearance distance (pixels of Sampson distance)
    look_sigma: float = 1.0  # appearance distance at which a pairing's hypothesis votes count exp(-1/2)
    #: The first round of a refinement, and of a calibration's last pass, keeps joints as far off under the
    #: poses it starts from as a camera turned this much puts them (its focal length x tan, ``widened``): a
    #: camera knocked on its mount, or left a few degrees off by the rounds, is off by all its joints at once.
    wide_turn_deg: float = 5.0
    #: Frames a calibration uses at most, spread evenly over a longer recording (``spread``): its time and
    #: memory grow with the frames, and frames spread over a walk cover more of the room than as many in a row
    #: (bench/design-choices.md).
    max_frames: int = 300
    #: Three cameras' pairwise rotations chained around the loop turn by at most this when the pairs are right
    #: (``seed``): 3-9 degrees on the lab videos' right pairs, 15 or more where one is wrong.
    loop_deg: float = 10.0


def spread(count: int, budget: int) -> list[int]:
    """The indices of ``budget`` frames spread evenly over ``count`` (all of them when they fit)."""
    if count <= budget:
        return list(range(count))
    return [int(i) for i in np.linspace(0, count - 1, budget).round()]  # steps over 1 apart: all distinct


def within_budget(views: Views, looks: Looks | None, p: SelfCalParams) -> tuple[Views, Looks | None]:
    """``views`` and ``looks`` cut to ``p.max_frames`` frames spread over the recording."""
    if len(views) <= p.max_frames:
        return views, looks
    keep = spread(len(views), p.max_frames)
    log.info("%d frames: calibrating on %d of them, spread evenly", len(views), len(keep))
    return [views[i] for i in keep], None if looks is None else [looks[i] for i in keep]
