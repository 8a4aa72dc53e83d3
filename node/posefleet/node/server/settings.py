"""Node configuration: defaults < config file (TOML/JSON) < POSEFLEET_NODE_* environment < CLI flags."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any, ClassVar, Literal

from posefleet.common.settings import FileSettings, IpAddress
from posefleet.node.devices import DEVICES, InferencePrecision, known_device
from posefleet.node.engine.adapters import AdapterError
from posefleet.node.engine.simulated import SimulatedAccelerator, recorded_input_size
from posefleet.v1.ids import node_id_problem
from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

MiB = 1 << 20


class NodeSettings(FileSettings):
    """Everything ``posefleet node`` can be told; validated once, at start."""

    model_config = SettingsConfigDict(env_prefix="POSEFLEET_NODE_", extra="forbid")
    what: ClassVar[str] = "node"

    model: Path = Field(description="converted model directory (posefleet convert)")
    device: str = "CPU"
    hint: Literal["LATENCY", "THROUGHPUT"] = "THROUGHPUT"
    input_size: tuple[int, int] | None = None
    inference_precision: InferencePrecision | None = Field(
        None,
        description="f32, bf16 or f16 (default: a CPU runs f32 unless the model card says bf16 keeps its accuracy)",
    )
    decode: dict[str, Any] = Field(default_factory=dict, description="decoding parameters of the model's family")
    host: str = Field("0.0.0.0", description="address the gRPC server binds")
    port: int = Field(50051, ge=0, le=65535, description="0 picks a free port")
    name: str | None = Field(None, description="node id (default: <hostname>-<port>)")
    max_inflight: int | None = Field(None, ge=1, description="default: 2 x infer_requests")
    #: Twice the device's optimum by default: while a request's thread decodes an image or poses, the
    #: device already runs another request (measured: about +10% throughput over the optimum alone).
    infer_requests: int = Field(
        0, ge=0, description="OpenVINO infer requests (one thread each); 0 = 2 x the device optimum"
    )
    zeroconf_interfaces: list[IpAddress] = Field(default_factory=list, description="IPs zeroconf binds (default: all)")
    advertise: bool = True
    advertise_addresses: list[IpAddress] = Field(default_factory=list, description="addresses put in the mDNS record")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="Prometheus endpoint; 0 = free port")
    metrics_host: str = "127.0.0.1"
    #: As the coordinator's: an uncompressed 1440p frame (11 MB) fits, and both sides agree.
    max_message_mb: float = Field(16.0, gt=0, le=256)
    #: Checked from the JPEG/PNG header before decoding: what real cameras send, and no more.
    max_image_side: int = Field(4096, ge=16)
    max_image_pixels: int = Field(4096 * 4096, ge=256)
    drain_seconds: float = Field(8.0, ge=0, le=60, description="SIGTERM: time allowed for in-flight frames")
    #: Off by default: 0.2-0.45 ms a pose of a 1088x1920 frame on this machine, which timing-bound cluster
    #: tests felt. A scene's nodes turn it on so that ``CalibrateScene`` pairs people by colour too.
    describe_poses: bool = Field(
        False, description="answer each pose's colours (Pose.appearance) for calibrating scenes from people"
    )
    #: NCS2 (MYRIAD): inference in a legacy-OpenVINO worker under this interpreter (Python 3.7-3.10 with
    #: `pip install 'openvino==2022.3.*'`, or the OS's own with the 2022.3 archive); the node keeps the rest.
    legacy_python: str | None = Field(None, description="interpreter of the OpenVINO 2022.3 worker (NCS2)")
    legacy_env: dict[str, str] = Field(
        default_factory=dict, description="extra environment of the worker (e.g. LD_LIBRARY_PATH of the archive)"
    )
    #: "openvino", or "simulated-accelerator" for the cluster scale benchmark only (node/engine/simulated.py).
    backend: Literal["openvino", "simulated-accelerator"] = "openvino"
    sim_latency_ms: float = Field(33.3, ge=0, description="simulated inference time per frame")
    sim_parallel: int = Field(1, ge=1, le=64, description="simulated devices working at once")
    sim_record: Path | None = Field(None, description="recorded model outputs (.npz) to decode")

    @model_validator(mode="after")
    def _simulated_needs_a_recording(self) -> NodeSettings:
        if self.backend != "simulated-accelerator":
            return self
        if self.sim_record is None:
            raise ValueError(
                "the simulated-accelerator backend needs --sim-record FILE.npz ('posefleet record-outputs')"
            )
        if self.input_size is None:  # the size the outputs were recorded at
            try:
                self.input_size = recorded_input_size(self.sim_record)
            except AdapterError as exc:
                raise ValueError(str(exc)) from None
        return self

    @property
    def simulated(self) -> SimulatedAccelerator | None:
        """The simulated accelerator this node runs instead of a device, if any."""
        if self.backend != "simulated-accelerator" or self.sim_record is None:
            return None
        return SimulatedAccelerator(self.sim_record, self.sim_latency_ms, self.sim_parallel)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not known_device(value):
            raise ValueError(f"unknown device {value!r}; choose one of {', '.join(DEVICES)}")
        return value.upper() if ":" not in value else value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and (problem := node_id_problem(value)) is not None:
            raise ValueError(problem)
        return value

    @field_validator("model")
    @classmethod
    def _model(cls, value: Path) -> Path:
        if not (value / "model.json").is_file():
            raise ValueError(f"{value} is not a converted model directory (no model.json)")
        return value

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * MiB)

    def node_id(self, port: int) -> str:
        """The name, else ``<host>-<port>`` (the host name's first label, cut to fit a DNS label)."""
        host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0]).strip("-") or "node"
        return self.name or f"{host[: 62 - len(str(port))]}-{port}"
