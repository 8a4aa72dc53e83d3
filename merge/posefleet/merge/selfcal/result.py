"""What a people calibration gives: the cameras, a report per camera, and how far its starts agree."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from posefleet.merge.calibration import Camera
from posefleet.merge.extrinsics import rig_differences, rig_size

#: Starts (``SelfCalParams.ransac_tries``) whose rigs differ by more than this fraction of the rig's size
#: disagree (``start_disagreement``): 3.5 cm on the shared rig. Measured there (bench/calibration.md: 18 runs,
#: each recording whole and in halves, with and without colours; and 21 runs on 2D poses of another
#: inference run), starts that agreed were within 0.005, and every run 27 cm or more off had starts 0.030 or
#: more apart; the limit lies between the two (a factor of 2 from the one, 3 from the other). Right runs
#: warned happen too (15-17 cm off, starts up to 1.2 apart: one start found another rig); and agreement is no
#: proof: with seven starts, starts of one wrong pairing agreed with each other (bench/design-choices.md).
STARTS_AGREE = 0.01


@dataclass
class CameraReport:
    name: str
    placed: bool
    reason: str = ""
    observations: int = 0
    frames: int = 0
    error_px: float = float("nan")  # RMS reprojection error after the adjustment
    #: ``refine_with_people``: the RMS of the same joints triangulated under the given poses (ungated)
    start_px: float = float("nan")


@dataclass
class SelfCalResult:
    cameras: dict[str, Camera]  # every camera given; unplaced ones keep their input extrinsics
    report: list[CameraReport]
    points: int  # 3D joints in the adjustment
    frames: int  # frames that gave at least one joint
    scale_source: str
    bone_spread: float = float("nan")  # the people's limb lengths' robust CV (``bone_spread``)
    people_paired_by: str = "geometry alone"  # or "colour and geometry", where ``looks`` described people
    #: How far the other starts' rigs lie from this one (``start_disagreement``); NaN: none to compare with.
    start_disagreement: float = float("nan")
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ambiguous(self) -> bool:
        """The starts disagree (``STARTS_AGREE``): the data do not pin the rig down, it may be metres off."""
        return bool(self.start_disagreement > STARTS_AGREE)

    @property
    def placed(self) -> list[str]:
        return [r.name for r in self.report if r.placed]


def starts_verdict(disagreement: float) -> str:
    """One line for the user on how far the starts agree (``start_disagreement``)."""
    if math.isnan(disagreement):
        return "starts: no other start placed 3 of these cameras, so the result could not be checked against one"
    if disagreement <= STARTS_AGREE:
        return f"starts agree: their rigs lie within {disagreement:.1%} of the rig's size of each other"
    return (
        f"WARNING: the starts disagree by {disagreement:.0%} of the rig's size: these frames do not pin the cameras "
        "down (people standing still can be paired wrongly across cameras and still fit), so this calibration may "
        "be metres off. Film people walking through the room, or anchor it with known points or a board"
    )


def start_disagreement(chosen: Mapping[str, Camera], others: Sequence[Mapping[str, Camera]]) -> float:
    """The largest distance of a camera centre of another start's rig (its placed cameras) from ``chosen``'s,
    after the best similarity between them, as a fraction of ``chosen``'s size (its centres' mean distance
    from their mean), over the starts that placed at least 3 of its cameras; NaN when none did.

    A reference-free check of the result: right starts converge to one rig, while a wrong pairing of people
    across cameras (people standing still never contradict one) lands each start somewhere else."""
    mine = dict(chosen)
    size = rig_size(mine)
    worst = float("nan")
    if size <= 0:  # every camera at one point: no size to measure against
        return worst
    for other in others:
        theirs = {n: c for n, c in other.items() if n in mine}
        if len(theirs) < 3:
            continue
        _, differences = rig_differences(theirs, {n: mine[n] for n in theirs})
        gap = max(centre for centre, _ in differences.values()) / size
        worst = gap if math.isnan(worst) else max(worst, gap)
    return worst
