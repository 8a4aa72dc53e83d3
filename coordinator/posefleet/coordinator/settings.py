"""Coordinator configuration: defaults < config file < POSEFLEET_COORDINATOR_* environment < CLI flags."""

from __future__ import annotations

import ipaddress
from typing import ClassVar, Literal

from posefleet.common.settings import FileSettings
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict


class CoordinatorSettings(FileSettings):
    """Everything ``posefleet coordinator`` can be told; validated once, at start."""

    model_config = SettingsConfigDict(env_prefix="POSEFLEET_COORDINATOR_", extra="forbid")
    what: ClassVar[str] = "coordinator"

    host: str = Field("0.0.0.0", description="address the gRPC server binds")
    port: int = Field(50050, ge=0, le=65535)
    zeroconf_interfaces: list[str] = Field(default_factory=list, description="IPs zeroconf binds (default: all)")
    discover: bool = Field(True, description="browse _posefleet._tcp with zeroconf")
    nodes: list[str] = Field(default_factory=list, description="static nodes, HOST:PORT")
    camera_queue: int = Field(4, ge=1, le=1000, description="frames a camera may have waiting for a node")
    drop_policy: Literal["drop-oldest", "block"] = "drop-oldest"
    frame_timeout_s: float = Field(10.0, gt=0, description="a frame not answered by then is FAILED")
    no_node_wait_s: float = Field(3.0, ge=0, description="how long a frame waits for a matching node to exist")
    health_interval_s: float = Field(0.5, gt=0)
    backoff_initial_s: float = Field(0.25, gt=0)
    backoff_max_s: float = Field(5.0, gt=0)
    subscribe_window_ms: int = Field(100, ge=1, le=60_000)
    metrics_port: int | None = Field(None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    max_message_mb: float = Field(16.0, gt=0, le=256)

    @field_validator("zeroconf_interfaces")
    @classmethod
    def _ips(cls, values: list[str]) -> list[str]:
        for value in values:
            ipaddress.ip_address(value)
        return values

    @field_validator("nodes")
    @classmethod
    def _nodes(cls, values: list[str]) -> list[str]:
        for value in values:
            host, _, port = value.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"static node {value!r} is not HOST:PORT")
        return values

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * (1 << 20))
