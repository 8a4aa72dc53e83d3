"""Coordinator configuration: defaults < config file < POSEFLEET_COORDINATOR_* environment < CLI flags."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from posefleet.common.settings import FileSettings, IpAddress
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict


class TrackingSettings(BaseModel):
    """Per-camera tracking of people (every pose gets a ``track_id``); defaults from tfjs-models' tracker."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    min_similarity: float = Field(0.2, ge=0, le=1, description="OKS (or box IoU) a pose needs to continue a track")
    min_pose_score: float = Field(0.25, ge=0, le=1, description="weaker poses are not tracked (track id 0)")
    keypoint_confidence: float = Field(0.3, ge=0, le=1, description="keypoints below this do not count in OKS")
    min_keypoints: int = Field(4, ge=1, le=17, description="fewer common confident keypoints: box IoU instead")
    max_tracks: int = Field(18, ge=1, le=1000)
    max_age_ms: float = Field(1000.0, gt=0, description="a track unseen this long ends")
    #: Cameras whose tracks are One-Euro smoothed ("*": all). Smoothing trades lag for steadiness.
    smooth_cameras: list[str] = Field(default_factory=list)
    one_euro_min_cutoff: float = Field(1.0, gt=0, description="Hz at rest (lower: smoother)")
    one_euro_beta: float = Field(0.0, ge=0, description="cut-off growth with speed (higher: less lag)")
    one_euro_derivative_cutoff: float = Field(1.0, gt=0)


#: Cameras one scene fuses at most.
MAX_SCENE_CAMERAS = 63


class SceneSettings(BaseModel):
    """A calibrated scene: cameras fused into 3D people."""

    model_config = ConfigDict(extra="forbid")

    #: Pose2Sim/anipose calibration TOML (relative paths: from the settings file's folder or the working dir).
    calibration: Path
    #: Calibration camera name -> posefleet camera id.
    cameras: dict[str, str]
    #: Results whose capture times fall in one window are fused; 0: one frame period of the slowest camera.
    window_ms: float = Field(0.0, ge=0, le=10_000)
    #: A window waits this long for its slowest camera, then is fused from the cameras it has.
    max_wait_ms: float = Field(500.0, gt=0, le=10_000)
    #: 3D people with fewer triangulated joints are not reported (stray 2D detections that happen to agree).
    min_joints: int = Field(6, ge=1, le=17)
    max_reprojection_error_px: float = Field(25.0, gt=0, description="views beyond this are excluded")
    max_ray_distance_m: float = Field(0.15, gt=0, description="2D poses whose rays pass farther apart differ")
    min_keypoint_score: float = Field(0.3, ge=0, le=1)
    max_track_distance_m: float = Field(0.5, gt=0, description="3D persons move at most this between windows")
    smoothing: bool = Field(False, description="One-Euro filter the 3D joints")

    @field_validator("cameras")
    @classmethod
    def _cameras(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) < 2:
            raise ValueError("a scene needs at least 2 cameras")
        if len(value) > MAX_SCENE_CAMERAS:
            raise ValueError(f"a scene has at most {MAX_SCENE_CAMERAS} cameras (each joint's are one 64-bit mask)")
        if len(set(value.values())) != len(value):
            raise ValueError("two calibration cameras map to the same camera id")
        return value


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class CoordinatorSettings(FileSettings):
    """Everything ``posefleet coordinator`` can be told; validated once, at start."""

    model_config = SettingsConfigDict(env_prefix="POSEFLEET_COORDINATOR_", extra="forbid")
    what: ClassVar[str] = "coordinator"

    name: str = Field("coordinator", description="its certificate's name in the fleet PKI directory (--pki)")
    host: str = Field("0.0.0.0", description="address the gRPC server binds")
    port: int = Field(50050, ge=0, le=65535)
    zeroconf_interfaces: list[IpAddress] = Field(default_factory=list, description="IPs zeroconf binds (default: all)")
    discover: bool = Field(True, description="browse _posefleet._tcp with zeroconf")
    nodes: list[str] = Field(default_factory=list, description="static nodes, HOST:PORT")
    #: mDNS is unauthenticated: discovered nodes are bounded per advertised host and per minute (adverts.py).
    max_links_per_host: int = Field(8, ge=1, le=256, description="discovered nodes one IP address may advertise")
    max_new_links_per_minute: int = Field(30, ge=1, le=10_000, description="new discovered nodes in any minute")
    camera_queue: int = Field(4, ge=1, le=1000, description="frames a camera may have waiting for a node")
    drop_policy: Literal["drop-oldest", "block"] = "drop-oldest"
    frame_timeout_s: float = Field(10.0, gt=0, description="a frame not answered by then is FAILED")
    no_node_wait_s: float = Field(3.0, ge=0, description="how long a frame waits for a matching node to exist")
    health_interval_s: float = Field(0.5, gt=0)
    node_answer_timeout_s: float = Field(
        2.0, gt=0, description="a node that leaves a frame unanswered this long is taken out (frames re-sent)"
    )
    straggler_after_s: float = Field(
        0.3,
        gt=0,
        description="a frame unanswered this long (or 4x its node's average answer time, if longer) is also "
        "sent to another node with a free credit; the first answer wins",
    )
    backoff_initial_s: float = Field(0.25, gt=0)
    backoff_max_s: float = Field(5.0, gt=0)
    subscribe_window_ms: int = Field(100, ge=10, le=60_000)
    subscriber_backlog: int = Field(
        1000, ge=1, le=100_000, description="results a subscriber may have waiting; beyond: the oldest are lost"
    )
    subscriber_max_lag_s: float = Field(
        5.0, gt=0, description="a subscriber this far behind is ended with RESOURCE_EXHAUSTED"
    )
    max_cameras: int = Field(1000, ge=1, description="cameras with state at once; more: RESOURCE_EXHAUSTED")
    #: Auditing nodes (coordinator/audit.py): this share of answered frames is answered again by another node.
    audit_share: float = Field(0.03, ge=0, le=0.5, description="share of answered frames sent to a second node")
    audit_min_agreement: float = Field(0.5, gt=0, le=1, description="two answers below this agreement disagree")
    audit_strikes: int = Field(3, ge=1, le=10, description="strikes in a node's last 10 audits that quarantine it")
    #: Open calls per certificate (admins: the totals only) and in all; more: RESOURCE_EXHAUSTED. A camera
    #: needs one stream (two while it reconnects); each stream holds gRPC buffers of up to a few frames.
    max_streams_per_peer: int = Field(4, ge=1, le=1000, description="camera streams one certificate may hold")
    max_streams: int = Field(1000, ge=1, description="camera streams in all")
    max_subscriptions_per_peer: int = Field(8, ge=1, le=1000, description="Subscribe/SubscribeScene calls per peer")
    max_subscriptions: int = Field(64, ge=1, description="Subscribe/SubscribeScene calls in all")
    camera_idle_s: float = Field(
        300.0, gt=0, description="a camera's state (stats, tracks, metrics) goes this long after its last frame"
    )
    metrics_port: int | None = Field(None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    http_port: int | None = Field(None, ge=0, le=65535, description="the web dashboard (HTTPS with the fleet TLS)")
    http_host: str = Field("127.0.0.1", description="address the dashboard binds")
    max_token_days: float = Field(90.0, gt=0, le=365, description="dashboard tokens made to live longer are refused")
    mqtt: str | None = Field(
        None, description="publish results to this broker: mqtts://[USER@]HOST[:PORT] or mqtt://..."
    )
    #: The broker password: never in the URL (flags show in `ps`); from this file (0600) or the environment.
    mqtt_password_file: Path | None = Field(None, description="a file holding the MQTT password (mode 0600)")
    mqtt_password: SecretStr | None = Field(
        None, description="the MQTT password: set it with $POSEFLEET_COORDINATOR_MQTT_PASSWORD, never a flag"
    )
    #: A password or poses over plain mqtt:// to another host are refused unless this allows it (then warned).
    mqtt_insecure: bool = Field(False, description="allow mqtt:// (clear text) to a broker on another host")
    mqtt_ca: Path | None = Field(
        None, description="mqtts://: the broker's CA certificate (default: the fleet CA with TLS, else the system's)"
    )
    mqtt_prefix: str = Field("posefleet", pattern=r"^[A-Za-z0-9_/-]{1,64}$", description="topic prefix")
    mqtt_queue: int = Field(1000, ge=1, le=100_000, description="messages waiting for the broker; beyond: dropped")
    mqtt_stats_interval_s: float = Field(10.0, gt=0, description="how often posefleet/stats is published")
    mqtt_discovery: bool = Field(False, description="publish Home Assistant MQTT discovery for each camera")
    max_message_mb: float = Field(16.0, gt=0, le=256)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    scenes: dict[str, SceneSettings] = Field(default_factory=dict, description="calibrated scenes by name")

    @field_validator("nodes")
    @classmethod
    def _nodes(cls, values: list[str]) -> list[str]:
        for value in values:
            host, _, port = value.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"static node {value!r} is not HOST:PORT")
        return values

    @model_validator(mode="after")
    def _mqtt_secrets(self) -> CoordinatorSettings:
        if self.mqtt is None:
            return self
        url = urlsplit(self.mqtt)
        if url.password is not None:
            raise ValueError(
                "mqtt: a password in the broker URL shows in `ps` and in config files: put it in mqtt_password_file "
                "(mode 0600) or $POSEFLEET_COORDINATOR_MQTT_PASSWORD"
            )
        if self.mqtt_password_file is not None:
            path = self.mqtt_password_file
            try:
                mode, text = path.stat().st_mode, path.read_text()
            except OSError as exc:
                raise ValueError(f"mqtt_password_file {path}: {exc.strerror}") from None
            if mode & 0o077:
                raise ValueError(f"mqtt_password_file {path}: readable by others (mode {mode & 0o777:o}); chmod 600 it")
            self.mqtt_password = SecretStr(text.strip())
        remote = url.hostname not in (None, "localhost") and not _is_loopback(url.hostname)
        if url.scheme == "mqtt" and remote and not self.mqtt_insecure:
            raise ValueError(
                f"mqtt: {self.mqtt} sends poses{' and the password' if self.mqtt_password else ''} in clear text to "
                "another host: use mqtts:// (the fleet CA can sign the broker's certificate), or set mqtt_insecure "
                "to allow it"
            )
        return self

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * (1 << 20))
