"""The pose engine: a converted model on any OpenVINO device, frame in, poses out.

It knows model cards, model families (``families/``, one module each) and their decoders, and nothing
of the wire contract (``posefleet.v1``) or of the node server built on it.
"""

from posefleet.node.engine.card import CardError, ModelCard, load_card
from posefleet.node.engine.families import FamilyError, PoseModel, create_model, families
from posefleet.node.engine.runtime import EngineError, EngineOptions, NativeResolutionEngine, PoseEngine
from posefleet.node.engine.types import Pose, PoseResult, Timings

__all__ = [
    "CardError",
    "EngineError",
    "EngineOptions",
    "FamilyError",
    "ModelCard",
    "NativeResolutionEngine",
    "Pose",
    "PoseEngine",
    "PoseModel",
    "PoseResult",
    "Timings",
    "create_model",
    "families",
    "load_card",
]
