"""The zeroconf (mDNS/DNS-SD) side of the posefleet.v1 contract: service type and TXT record keys.

Nodes advertise ``<node id>._posefleet._tcp.local.``; TXT values are UTF-8 strings. Discovery only
says where a node is: liveness is asked with gRPC health checks, because mDNS records can outlive a
dead node for minutes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from posefleet.v1.ids import node_id_problem

SERVICE_TYPE = "_posefleet._tcp.local."
PROTO_VERSION = "posefleet.v1"
#: Health-check service name of a node (the empty name covers the whole server too).
NODE_HEALTH_SERVICE = "posefleet.v1.PoseNode"
COORDINATOR_HEALTH_SERVICE = "posefleet.v1.Coordinator"

TXT_KEYS = ("node_id", "model_id", "family", "input", "device", "capacity", "proto", "version", "openvino", "state")


@dataclass(frozen=True)
class NodeAdvert:
    """What a node says about itself in its TXT record."""

    node_id: str
    model_id: str
    family: str
    input_size: tuple[int, int]  # (height, width)
    device: str
    capacity: int
    version: str
    openvino: str
    state: str = "serving"  # "serving" or "draining"
    proto: str = PROTO_VERSION

    def to_txt(self) -> dict[str, str]:
        return {
            "node_id": self.node_id,
            "model_id": self.model_id,
            "family": self.family,
            "input": f"{self.input_size[0]}x{self.input_size[1]}",
            "device": self.device,
            "capacity": str(self.capacity),
            "proto": self.proto,
            "version": self.version,
            "openvino": self.openvino,
            "state": self.state,
        }

    @classmethod
    def from_txt(cls, txt: Mapping[bytes, bytes | None] | Mapping[str, str | None]) -> NodeAdvert:
        """Parse a TXT record; raises ``ValueError`` naming the missing or malformed key."""
        values: dict[str, str] = {}
        for key, value in txt.items():
            k = key.decode() if isinstance(key, bytes) else key
            values[k] = value.decode() if isinstance(value, bytes) else (value or "")
        missing = [k for k in TXT_KEYS if k not in values]
        if missing:
            raise ValueError(f"TXT record lacks {', '.join(missing)}")
        try:
            h, w = (int(v) for v in values["input"].split("x"))
            capacity = int(values["capacity"])
        except ValueError as exc:
            raise ValueError(f"malformed TXT record: {exc}") from exc
        if (problem := node_id_problem(values["node_id"])) is not None:
            raise ValueError(f"TXT record: {problem}")
        return cls(
            node_id=values["node_id"],
            model_id=values["model_id"],
            family=values["family"],
            input_size=(h, w),
            device=values["device"],
            capacity=capacity,
            version=values["version"],
            openvino=values["openvino"],
            state=values["state"],
            proto=values["proto"],
        )


def service_name(node_id: str) -> str:
    return f"{node_id}.{SERVICE_TYPE}"
