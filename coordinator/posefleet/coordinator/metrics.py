"""Prometheus metrics of the coordinator: counters updated per frame, node gauges read at scrape time."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

from posefleet.coordinator.consumers import ResultConsumer, status_name
from posefleet.coordinator.links import NodeLink
from posefleet.v1 import pose_pb2
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class _NodeCollector(Collector):
    """Node gauges computed from the registry's links whenever Prometheus scrapes (as Frigate does)."""

    def __init__(self, links: Callable[[], Iterable[NodeLink]]) -> None:
        self._links = links

    def collect(self) -> Iterator[Metric]:
        links = list(self._links())
        nodes = GaugeMetricFamily("posefleet_coordinator_nodes", "Nodes available")
        nodes.add_metric([], sum(link.available for link in links))
        inflight = GaugeMetricFamily("posefleet_coordinator_node_inflight", "Frames on a node", labels=["node"])
        for link in links:
            inflight.add_metric([link.info.node_id or link.key], link.credits.in_flight)
        yield nodes
        yield inflight


class CoordinatorMetrics(ResultConsumer):
    """Frames answered per camera and status, route latency, MQTT drops; node gauges at scrape time."""

    def __init__(self, links: Callable[[], Iterable[NodeLink]]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames = Counter("posefleet_coordinator_frames", "Frames answered", ["camera", "result"], registry=r)
        buckets = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
        self.latency = Histogram(
            "posefleet_coordinator_latency_seconds", "Frame in -> result out", ["camera"], buckets=buckets, registry=r
        )
        self.mqtt_dropped = Counter(
            "posefleet_coordinator_mqtt_dropped", "MQTT messages dropped: the broker was absent or slow", registry=r
        )
        r.register(_NodeCollector(links))

    def answered(self, result: pose_pb2.PoseResult) -> None:
        self.frames.labels(result.camera_id, status_name(result.status)).inc()
        if result.status == pose_pb2.RESULT_STATUS_OK:
            self.latency.labels(result.camera_id).observe(result.timings.route_ms / 1e3)

    def forget(self, camera: str) -> None:
        """Remove a camera's series (when the coordinator forgets the camera)."""
        for result in ("ok", "dropped", "failed"):
            with contextlib.suppress(KeyError):
                self.frames.remove(camera, result)
        with contextlib.suppress(KeyError):
            self.latency.remove(camera)
