"""Extrinsics from the people in the room: every camera's pose from synchronised 2D keypoints, no board.

Pose2Sim lists "keypoints" as an extrinsic method and raises NotImplementedError; this is posefleet's own
structure-from-motion on people, the classic incremental pipeline with joints as the features:

1. **Pairs** (``pairs``). For each camera pair, every frame offers every person of one view against every person
   of the other: their joints seen confidently in both are candidate correspondences (undistorted, normalised by
   each camera's K). Essential matrices are hypothesised from single pairings of two people (a RANSAC over the
   pooled joints draws samples mixing people, and on noisy keypoints one such mix can win) and scored by the
   joints of each person's best partner that agree with them; under the winner each frame's people are paired by
   optimal assignment on their median Sampson distance (pixels), and the matrix is estimated again from the pairs
   alone (MAGSAC++), then decomposed into a relative pose. Where the frames were seen (``looks``:
   ``posefleet.merge.appearance``), the people's colours weigh in: a hypothesis counts a pairing's joints times
   exp(-d^2/2) of the two people's appearance distance d (standardised per camera), and the assignment adds
   ``look_px`` pixels per unit of d. People who stand in place never contradict a pairing of different people
   across cameras, which fits the 2D as well as the right one; their clothes do.
2. **People across cameras** (``groups``). Per frame, the pairwise pairings are joined (union-find) into one
   group per person; a group holding two people of one camera keeps the one with more pairings.
3. **Incremental placement** (``adjustment``). The pair whose relative rotation closes the most loops with two
   other pairs (``seed``: a wrong pair's loops do not close), then the one with the most inliers, starts
   (baseline 1); its joints are triangulated (weighted DLT); each next camera, the one sharing the most
   triangulated joints first, is placed by PnP with RANSAC on them; every placed camera triangulates.
4. **Bundle adjustment** (``adjustment``), in two steps. First the camera poses alone, every joint triangulated
   anew inside the residuals (6 unknowns per camera: it converges in tens of iterations, where the full
   adjustment started from the placement stopped at its 100 iterations far from its minimum: on the OpenPose
   recording, camera centres 7-13 cm off Qualisys instead of 3.5-8 cm). Then all camera poses and 3D joints:
   SciPy ``least_squares`` (trust region, a sparse Jacobian, a Huber loss in pixels, residuals weighted by the 2D
   confidence); observations left far off are dropped and it runs again; then the people are paired again under
   the adjusted cameras (every pair, from the poses, not from the first matrices) and the whole adjustment
   repeats (three rounds). A last pass pairs the people again under those cameras with a wide first gate (as a
   refinement starts: a camera left a few degrees off has its right joints beyond the rounds' gate) and runs the
   rounds again. The pipeline starts at three inlier thresholds; the run explaining the most joints is kept,
   and the starts' rigs before their last pass are compared (``start_disagreement``).
5. **World frame** (``world``). Z up from the floor plane fitted to the lowest ankles, the origin on the floor
   below the people, x along the first camera's view; metric scale from the people's height (the leg and trunk
   segments, anthropometric ratios) or, better, from known points (``extrinsics.anchor``).

Cameras a pair never agrees on, or too few joints place, are reported with the reason, never guessed.

``refine_with_people`` starts from a given calibration instead of steps 1-3 (the people paired under its
poses) and keeps its world frame and scale. Both take at most ``SelfCalParams.max_frames`` frames, spread
evenly over a longer recording (``spread``).
"""

from __future__ import annotations

from posefleet.merge.selfcal.calibrate import calibrate_from_people
from posefleet.merge.selfcal.params import SelfCalParams, spread
from posefleet.merge.selfcal.refine import Explained, refine_with_people, reprojection_under
from posefleet.merge.selfcal.result import STARTS_AGREE, CameraReport, SelfCalResult, start_disagreement, starts_verdict
from posefleet.merge.selfcal.world import LEG_TRUNK_OF_STATURE

__all__ = [
    "LEG_TRUNK_OF_STATURE",
    "STARTS_AGREE",
    "CameraReport",
    "Explained",
    "SelfCalParams",
    "SelfCalResult",
    "calibrate_from_people",
    "refine_with_people",
    "reprojection_under",
    "spread",
    "start_disagreement",
    "starts_verdict",
]
