"""``posefleet node``: a grpc.aio pose-inference server with health, reflection, zeroconf and metrics."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, version

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from posefleet.node.advertise import Advertiser
from posefleet.node.config import NodeSettings
from posefleet.node.engine import EngineOptions, PoseEngine
from posefleet.node.inference import AsyncEngine
from posefleet.node.metrics import NodeMetrics
from posefleet.node.ov_compat import openvino_version
from posefleet.node.service import PoseNodeService
from posefleet.node.simulated import SimulatedEngine
from posefleet.v1 import node_pb2, node_pb2_grpc, pose_pb2
from posefleet.v1.discovery import NODE_HEALTH_SERVICE, PROTO_VERSION, NodeAdvert

log = logging.getLogger("posefleet.node")


def software_version() -> str:
    try:
        return version("posefleet")
    except PackageNotFoundError:  # pragma: no cover
        return "0+unknown"


class NodeServer:
    """Lifecycle: ``start`` (serve NOT_SERVING, load the model, SERVING, advertise) and ``drain``."""

    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        self.metrics = NodeMetrics()
        self.port = 0
        self.metrics_port: int | None = None
        self.node_id = ""
        self._executor = ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="posefleet-decode")
        self._server: grpc.aio.Server | None = None
        self._health = HealthServicer()
        self._service: PoseNodeService | None = None
        self._engine: AsyncEngine | SimulatedEngine | None = None
        self._advertiser: Advertiser | None = None
        self._advert: NodeAdvert | None = None

    async def _set_health(self, status: int) -> None:
        for name in ("", NODE_HEALTH_SERVICE):
            await self._health.set(name, status)

    async def start(self) -> None:
        s = self.settings
        limit = s.max_message_bytes
        self._server = grpc.aio.server(
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
        )
        self.port = self._server.add_insecure_port(f"{s.host}:{s.port}")
        if self.port == 0:
            raise OSError(f"cannot bind {s.host}:{s.port}")
        self.node_id = s.node_id(self.port)
        self._service = PoseNodeService(self.node_id, self.metrics, s.max_image_side, s.max_image_pixels)
        node_pb2_grpc.add_PoseNodeServicer_to_server(self._service, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        names = (
            node_pb2.DESCRIPTOR.services_by_name["PoseNode"].full_name,
            "grpc.health.v1.Health",
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, self._server)
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._server.start()
        log.info("node %s listening on %s:%d, loading %s", self.node_id, s.host, self.port, s.model)

        if s.backend == "simulated-accelerator":
            if s.sim_record is None:
                raise ValueError("the simulated-accelerator backend needs --sim-record FILE.npz")
            capacity = s.max_inflight or 2 * s.sim_parallel
            self._engine = SimulatedEngine(
                s.model, s.sim_record, latency_ms=s.sim_latency_ms, parallel=s.sim_parallel, decode=s.sim_decode,
                max_inflight=capacity, executor=self._executor,
            )  # fmt: skip
            card, (h, w), requests = self._engine.card, self._engine.input_size, s.sim_parallel
        else:
            options = EngineOptions(device=s.device, hint=s.hint, input_size=s.input_size, requests=s.infer_requests)
            engine = await asyncio.get_running_loop().run_in_executor(None, PoseEngine, s.model, options)
            requests = s.infer_requests or 2 * engine.optimal_requests
            capacity = s.max_inflight or 2 * requests
            self._engine = AsyncEngine(engine, capacity, requests)
            card = engine.card
            h, w = engine.input_size
        info = pose_pb2.NodeInfo(
            node_id=self.node_id, model_id=card.model_id, model_family=card.family, input_width=w, input_height=h,
            device=s.device, capacity=capacity, precision=card.precision, keypoint_names=card.keypoints,
            software_version=software_version(), openvino_version=openvino_version(), proto_version=PROTO_VERSION,
        )  # fmt: skip
        self._service.ready(self._engine, info)
        self.metrics.capacity.set(capacity)
        if s.metrics_port is not None:
            self.metrics_port = self.metrics.serve(s.metrics_host, s.metrics_port)
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self._advert = NodeAdvert(
            node_id=self.node_id, model_id=card.model_id, family=card.family, input_size=(h, w), device=s.device,
            capacity=capacity, version=info.software_version, openvino=info.openvino_version,
        )  # fmt: skip
        if s.advertise:
            self._advertiser = Advertiser(s.zeroconf_interfaces, s.advertise_addresses, self.port)
            await self._advertiser.start(self._advert)
        log.info("node %s serving %s on %s (capacity %d, %d infer requests)", self.node_id, card.model_id, s.device,
                 capacity, requests)  # fmt: skip

    async def drain(self) -> None:
        """Graceful stop: refuse new frames, finish in-flight ones, say goodbye, stop the server."""
        s = self.settings
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self._service is not None:
            self._service.draining.set()
        if self._advertiser is not None and self._advert is not None:
            await self._advertiser.update(dataclasses.replace(self._advert, state="draining"))
        if self._engine is not None and not await self._engine.wait_idle(s.drain_seconds):
            log.warning("drain: %d frames still in flight after %.1f s", self._engine.inflight, s.drain_seconds)
        if self._advertiser is not None:
            await self._advertiser.close()
        if self._server is not None:
            await self._server.stop(grace=0.5)
        if self._engine is not None:
            self._engine.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        log.info("node %s stopped", self.node_id)


async def serve(settings: NodeSettings, ready_line: bool = True) -> int:
    """Run a node until SIGTERM/SIGINT, then drain; returns the exit status."""
    node = NodeServer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await node.start()
    except BaseException:
        await node.drain()
        raise
    if ready_line:  # one parseable line for supervisors and tests
        print(
            f"posefleet-node ready node_id={node.node_id} port={node.port} metrics_port={node.metrics_port}", flush=True
        )
    await stop.wait()
    await node.drain()
    return 0
