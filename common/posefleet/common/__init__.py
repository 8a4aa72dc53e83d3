"""What every side of posefleet shares besides the wire contract (``posefleet.v1``).

Nodes, the coordinator, camera clients and offline tools all import this package, and it imports none
of them: the error base, keypoint names and skeleton drawing, paths, the software version, the
settings base (defaults < file < environment < flags), gRPC server scaffolding, and the helper that
starts a posefleet process and waits for its gRPC health. It needs only the lean base install
(NumPy, OpenCV, gRPC); the settings base needs pydantic-settings (node and coordinator extras).
"""

from posefleet.common.errors import PosefleetError

__all__ = ["PosefleetError"]
