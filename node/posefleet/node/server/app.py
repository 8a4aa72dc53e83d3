"""``posefleet node``: a grpc.aio pose-inference server with health, reflection, zeroconf and metrics."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from posefleet.common import memory
from posefleet.common.certs import Guard, own_peer
from posefleet.common.grpc_server import NOT_SERVING, SERVING, GrpcServer, run_until_signal
from posefleet.common.images import cap_decoder_pixels
from posefleet.common.version import software_version
from posefleet.node.engine.ov_compat import openvino_version
from posefleet.node.engine.runtime import EngineOptions, PoseEngine
from posefleet.node.server.advertise import Advertiser
from posefleet.node.server.metrics import NodeMetrics
from posefleet.node.server.pipeline import AsyncEngine, pipeline_size
from posefleet.node.server.service import PoseNodeService
from posefleet.node.server.settings import NodeSettings
from posefleet.v1 import node_pb2, pose_pb2
from posefleet.v1.discovery import NODE_HEALTH_SERVICE, PROTO_VERSION, NodeAdvert

log = logging.getLogger("posefleet.node")


class NodeServer:
    """Lifecycle: ``start`` (serve NOT_SERVING, load the model, SERVING, advertise) and ``drain``."""

    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        self.metrics = NodeMetrics()
        self.port = 0
        self.metrics_port: int | None = None
        self.node_id = ""
        self.requests = 0
        self._grpc: GrpcServer | None = None
        self._service: PoseNodeService | None = None
        self._engine: AsyncEngine | None = None
        self._advertiser: Advertiser | None = None
        self._advert: NodeAdvert | None = None
        self._inference: PoseEngine | None = None
        self._trimmer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        s = self.settings
        cap_decoder_pixels(s.max_image_pixels)  # the decoders' own cap, before this process decodes anything
        memory.tune_allocator()  # frames of megabytes come and go: their memory must go back too
        self._trimmer = asyncio.create_task(memory.return_memory(), name="return-memory")
        tls = s.tls_files(s.name)
        guard = Guard(tls)
        # Health answers the coordinators that route to it, admins, and the node's own certificate (its
        # supervisor's readiness check); cameras and subscribers never talk to a node.
        self._grpc = server = GrpcServer(
            s.max_message_bytes, [NODE_HEALTH_SERVICE], guard, ("coordinator", "admin", "node")
        )
        self.port = server.bind(s.host, s.port, tls)
        self.node_id = s.node_id(self.port)
        if tls is not None:
            own_peer(tls, "node", self.node_id)
        self._service = PoseNodeService(self.node_id, self.metrics, s.max_image_side, s.max_image_pixels, guard=guard)
        server.add(self._service, node_pb2.DESCRIPTOR.services_by_name["PoseNode"])
        await server.set_health(NOT_SERVING)
        await server.start()
        log.info("node %s listening on %s:%d, loading %s", self.node_id, s.host, self.port, s.model)

        options = EngineOptions(
            device=s.device,
            hint=s.hint,
            input_size=s.input_size,
            requests=s.infer_requests,
            decode=s.decode,
            inference_precision=s.inference_precision,
            legacy_python=s.legacy_python,
            legacy_env=s.legacy_env,
            simulated=s.simulated,
        )
        engine = await asyncio.get_running_loop().run_in_executor(None, PoseEngine, s.model, options)
        self._inference = engine
        requests, capacity = pipeline_size(engine, s.infer_requests, s.max_inflight)
        self._engine = AsyncEngine(engine, capacity, requests, describe=s.describe_poses)
        card = engine.card
        h, w = engine.input_size
        precision = f"{card.precision}, runs {engine.kernels}"  # e.g. "FP16, runs bf16"
        info = pose_pb2.NodeInfo(
            node_id=self.node_id,
            model_id=card.model_id,
            model_family=card.family,
            input_width=w,
            input_height=h,
            device=s.device,
            capacity=capacity,
            precision=precision,
            keypoint_names=card.keypoints,
            software_version=software_version(),
            max_message_bytes=s.max_message_bytes,
            openvino_version=openvino_version(),
            proto_version=PROTO_VERSION,
        )
        self._service.ready(self._engine, info)
        self.metrics.capacity.set(capacity)
        if s.metrics_port is not None:
            self.metrics_port = self.metrics.serve(s.metrics_host, s.metrics_port, tls)
        self.requests = requests
        await server.set_health(SERVING)
        self._advert = NodeAdvert(
            node_id=self.node_id,
            model_id=card.model_id,
            family=card.family,
            input_size=(h, w),
            device=s.device,
            capacity=capacity,
            version=info.software_version,
            openvino=info.openvino_version,
        )
        if s.advertise:
            self._advertiser = Advertiser(s.zeroconf_interfaces, s.advertise_addresses, self.port)
            await self._advertiser.start(self._advert)
        log.info(
            "node %s serving %s on %s (capacity %d, %d infer requests)",
            self.node_id,
            card.model_id,
            s.device,
            capacity,
            requests,
        )

    async def drain(self) -> None:
        """Graceful stop: refuse new frames, finish in-flight ones, say goodbye, stop the server."""
        s = self.settings
        if self._grpc is not None:
            await self._grpc.set_health(NOT_SERVING)
        if self._service is not None:
            self._service.draining.set()
        if self._advertiser is not None and self._advert is not None:
            await self._advertiser.update(dataclasses.replace(self._advert, state="draining"))
        if self._engine is not None and not await self._engine.wait_idle(s.drain_seconds):
            log.warning("drain: %d frames still in flight after %.1f s", self._engine.inflight, s.drain_seconds)
        if self._advertiser is not None:
            await self._advertiser.close()
        if self._grpc is not None:
            await self._grpc.stop(grace=0.5)
        if self._engine is not None:
            self._engine.close()
        if self._inference is not None:
            self._inference.close()  # its inference backend (a legacy worker process: ended)
        if self._trimmer is not None:
            self._trimmer.cancel()
        log.info("node %s stopped", self.node_id)


async def serve(settings: NodeSettings) -> int:
    """Run a node until SIGTERM/SIGINT, then drain; returns the exit status."""
    node = NodeServer(settings)

    async def start() -> str:
        await node.start()
        return (
            f"posefleet-node ready node_id={node.node_id} port={node.port} metrics_port={node.metrics_port} "
            f"requests={node.requests}"
        )

    return await run_until_signal(start, node.drain)
