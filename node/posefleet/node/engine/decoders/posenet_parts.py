"""What both PoseNet decoders share: the part tree and its traversal, the outputs and the knobs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from posefleet.common.keypoints import KEYPOINT_INDEX
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as params_dataclass

F32 = npt.NDArray[np.float32]

#: PoseNet's tree of parts (tfjs-models posenet ``poseChain``), parent -> child.
POSENET_CHAIN: tuple[tuple[str, str], ...] = (
    ("nose", "left_eye"),
    ("left_eye", "left_ear"),
    ("nose", "right_eye"),
    ("right_eye", "right_ear"),
    ("nose", "left_shoulder"),
    ("left_shoulder", "left_elbow"),
    ("left_elbow", "left_wrist"),
    ("left_shoulder", "left_hip"),
    ("left_hip", "left_knee"),
    ("left_knee", "left_ankle"),
    ("nose", "right_shoulder"),
    ("right_shoulder", "right_elbow"),
    ("right_elbow", "right_wrist"),
    ("right_shoulder", "right_hip"),
    ("right_hip", "right_knee"),
    ("right_knee", "right_ankle"),
)
POSENET_PARENTS: tuple[int, ...] = tuple(KEYPOINT_INDEX[p] for p, _ in POSENET_CHAIN)
POSENET_CHILDREN: tuple[int, ...] = tuple(KEYPOINT_INDEX[c] for _, c in POSENET_CHAIN)
NUM_EDGES = len(POSENET_CHAIN)

#: Traversal passes ``(edge, source part, target part, forward)``: backward edges (child -> parent) last
#: to first, then forward edges (parent -> child), as tfjs-models grows a pose from its root.
PASSES: tuple[tuple[int, int, int, bool], ...] = (
    *((e, POSENET_CHILDREN[e], POSENET_PARENTS[e], False) for e in reversed(range(NUM_EDGES))),
    *((e, POSENET_PARENTS[e], POSENET_CHILDREN[e], True) for e in range(NUM_EDGES)),
)


@params_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class PoseNetDecodeParams:
    """Decoder knobs, named as in tfjs-models (``--decode NAME=VALUE`` on the CLI, ``decode`` in settings)."""

    #: Multi-person decoding; false takes each part's best location (one pose).
    multi_person: bool = True
    max_poses: int = 10
    #: Minimum heatmap score of a root part.
    score_threshold: float = 0.5
    #: Non-maximum suppression radius in model-input pixels.
    nms_radius: float = 20.0
    local_max_radius: int = 1
    offset_refine_steps: int = 2
    #: Poses scoring below this are dropped: 0.1, the minimum pose confidence of tfjs-models' PoseNet demos
    #: (weaker ones are the decoder's stray fragments of a person: 3 to 7 of them on a one-person frame). The
    #: multi-pose demo's 0.15 cost live 3D the partial poses of a hard pose (bench-scene: the participant in
    #: 91 of 96 frames instead of 97 of 100). ``posefleet eval`` keeps every pose.
    min_pose_score: float = 0.1
    #: How many candidate roots the NumPy decoder decodes at once.
    chunk: int = 128
    #: Use the Numba-compiled decoder when Numba is installed.
    compiled: bool = True


@dataclass(frozen=True)
class PoseNetOutputs:
    """One frame's network outputs, each (H, W, C)."""

    heatmap: F32  # 17 channels of probabilities
    offsets: F32  # 17 y then 17 x
    displacement_fwd: F32  # 16 y then 16 x
    displacement_bwd: F32
