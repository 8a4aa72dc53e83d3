"""The ``posefleet.v1.PoseNode`` servicer: Estimate, EstimateStream and GetInfo."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import grpc
from posefleet.node.images import ImageError, decode_image
from posefleet.node.inference import AsyncEngine, AtCapacity
from posefleet.node.metrics import NodeMetrics
from posefleet.node.models.keypoints import COCO_KEYPOINTS
from posefleet.node.simulated import SimulatedEngine
from posefleet.v1 import node_pb2, node_pb2_grpc, pose_pb2

log = logging.getLogger("posefleet.node")


class FrameRefused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class PoseNodeService(node_pb2_grpc.PoseNodeServicer):
    """Answers every frame: poses, or a FAILED result (stream) / gRPC error (unary) saying why."""

    def __init__(
        self, node_id: str, metrics: NodeMetrics, executor: ThreadPoolExecutor, max_side: int, max_pixels: int
    ) -> None:
        self.node_id = node_id
        self.metrics = metrics
        self.executor = executor
        self.max_side = max_side
        self.max_pixels = max_pixels
        self.engine: AsyncEngine | SimulatedEngine | None = None
        self.info = pose_pb2.NodeInfo(node_id=node_id)
        self.draining = asyncio.Event()

    def ready(self, engine: AsyncEngine | SimulatedEngine, info: pose_pb2.NodeInfo) -> None:
        self.engine = engine
        self.info = info

    # -- one frame ---------------------------------------------------------------------------
    def _admit(self) -> AsyncEngine | SimulatedEngine:
        """Take an in-flight slot for a frame, or refuse it at once."""
        if self.draining.is_set():
            raise FrameRefused(grpc.StatusCode.UNAVAILABLE, "node is draining (shutting down); send frames elsewhere")
        if self.engine is None:
            raise FrameRefused(grpc.StatusCode.UNAVAILABLE, "node is loading its model; retry shortly")
        try:
            self.engine.admit()
        except AtCapacity as exc:
            raise FrameRefused(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from exc
        self.metrics.inflight.inc()
        return self.engine

    def _result(self, frame: pose_pb2.Frame) -> pose_pb2.PoseResult:
        result = pose_pb2.PoseResult(
            camera_id=frame.camera_id, sequence=frame.sequence, node_id=self.node_id, model_id=self.info.model_id
        )
        if frame.HasField("capture_time"):
            result.capture_time.CopyFrom(frame.capture_time)
        return result

    def failed(self, frame: pose_pb2.Frame, code: grpc.StatusCode, message: str) -> pose_pb2.PoseResult:
        result = self._result(frame)
        result.status = pose_pb2.RESULT_STATUS_FAILED
        result.error_code = code.value[0]
        result.error = message
        self.metrics.errors.labels(code.name).inc()
        self.metrics.frames.labels("failed").inc()
        return result

    async def _run(
        self, engine: AsyncEngine | SimulatedEngine, frame: pose_pb2.Frame, received: float
    ) -> pose_pb2.PoseResult:
        """Process an admitted frame; always releases its slot."""
        loop = asyncio.get_running_loop()
        try:
            t0 = time.perf_counter()
            image = await loop.run_in_executor(self.executor, decode_image, frame.image, self.max_side, self.max_pixels)
            decode_ms = (time.perf_counter() - t0) * 1e3
            poses, queue_ms = await engine.infer(image)
        except ImageError as exc:
            return self.failed(frame, exc.code, str(exc))
        except Exception as exc:  # never let one frame take the server down
            log.exception("frame %s/%s failed", frame.camera_id, frame.sequence)
            return self.failed(frame, grpc.StatusCode.INTERNAL, f"inference failed: {exc}")
        finally:
            engine.release()
            self.metrics.inflight.dec()
        result = self._result(frame)
        result.status = pose_pb2.RESULT_STATUS_OK
        result.image_height, result.image_width = poses.image_size
        for pose in poses.poses:
            out = result.poses.add(score=float(pose.score))
            for name, (x, y, s) in zip(COCO_KEYPOINTS, pose.keypoints.tolist(), strict=True):
                out.keypoints.add(name=name, x=x, y=y, score=s)
        t = poses.timings
        total_ms = (time.perf_counter() - received) * 1e3
        stages = {"queue": queue_ms, "decode_image": decode_ms, "preprocess": t.preprocess_ms,
                  "inference": t.inference_ms, "postprocess": t.decode_ms, "total": total_ms}  # fmt: skip
        result.timings.CopyFrom(
            pose_pb2.Timings(
                queue_ms=queue_ms,
                decode_image_ms=decode_ms,
                preprocess_ms=t.preprocess_ms,
                inference_ms=t.inference_ms,
                postprocess_ms=t.decode_ms,
                total_ms=total_ms,
            )
        )
        self.metrics.observe_stages(stages)
        self.metrics.frames.labels("ok").inc()
        return result

    # -- RPCs --------------------------------------------------------------------------------
    async def Estimate(self, request: pose_pb2.Frame, context: grpc.aio.ServicerContext) -> pose_pb2.PoseResult:
        received = time.perf_counter()
        try:
            engine = self._admit()
        except FrameRefused as exc:
            result = self.failed(request, exc.code, str(exc))
        else:
            result = await self._run(engine, request, received)
        if result.status == pose_pb2.RESULT_STATUS_FAILED:
            await context.abort(_code(result.error_code), result.error)
        return result

    async def EstimateStream(
        self, request_iterator: AsyncIterator[pose_pb2.Frame], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pose_pb2.PoseResult]:
        out: asyncio.Queue[pose_pb2.PoseResult | None] = asyncio.Queue()
        pending: set[asyncio.Task[pose_pb2.PoseResult]] = set()
        reading_done = asyncio.Event()

        def finish_if_idle() -> None:
            if not pending and (reading_done.is_set() or self.draining.is_set()):
                out.put_nowait(None)

        def on_done(task: asyncio.Task[pose_pb2.PoseResult]) -> None:
            pending.discard(task)
            if not task.cancelled():
                out.put_nowait(task.result())
            finish_if_idle()

        async def read() -> None:
            try:
                async for frame in request_iterator:
                    received = time.perf_counter()
                    try:
                        engine = self._admit()
                    except FrameRefused as exc:
                        out.put_nowait(self.failed(frame, exc.code, str(exc)))
                        continue
                    task = asyncio.create_task(self._run(engine, frame, received))
                    pending.add(task)
                    task.add_done_callback(on_done)
            finally:
                reading_done.set()
                finish_if_idle()

        async def end_on_drain() -> None:
            await self.draining.wait()
            finish_if_idle()

        self.metrics.streams.inc()
        reader = asyncio.create_task(read())
        drainer = asyncio.create_task(end_on_drain())
        try:
            while (item := await out.get()) is not None:
                yield item
        finally:
            self.metrics.streams.dec()
            reader.cancel()
            drainer.cancel()
            for task in list(pending):
                task.cancel()

    async def GetInfo(self, request: node_pb2.GetInfoRequest, context: grpc.aio.ServicerContext) -> pose_pb2.NodeInfo:
        return self.info


def _code(value: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN
