"""Prometheus metrics of a node (own registry, served on its own port)."""

from __future__ import annotations

from dataclasses import dataclass, field

from posefleet.common.metrics_http import serve_metrics
from posefleet.common.tls import TlsFiles
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
STAGES = ("queue", "decode_image", "preprocess", "inference", "postprocess", "total")


@dataclass
class NodeMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.frames = Counter("posefleet_node_frames", "Frames answered, by result", ["result"], registry=r)
        self.errors = Counter("posefleet_node_errors", "Frames refused, by gRPC status code", ["code"], registry=r)
        self.inflight = Gauge("posefleet_node_inflight", "Frames admitted and not yet answered", registry=r)
        self.capacity = Gauge("posefleet_node_capacity", "Most frames admitted at once", registry=r)
        self.streams = Gauge("posefleet_node_streams", "Open EstimateStream calls", registry=r)
        self.stage_seconds = Histogram(
            "posefleet_node_stage_seconds", "Time per pipeline stage", ["stage"], buckets=_STAGE_BUCKETS, registry=r
        )

        self._stages = [self.stage_seconds.labels(stage) for stage in STAGES]
        self._ok = self.frames.labels("ok")

    def observe_frame(self, *stage_ms: float) -> None:
        """One frame answered OK, with its stage times (ms) in ``STAGES`` order."""
        for histogram, value in zip(self._stages, stage_ms, strict=True):
            histogram.observe(value / 1e3)
        self._ok.inc()

    def serve(self, host: str, port: int, tls: TlsFiles | None) -> int:
        """Start the /metrics endpoint in a thread (``serve_metrics``); returns the bound port."""
        return serve_metrics(self.registry, host, port, tls)
