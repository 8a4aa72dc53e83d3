"""The ``posefleet.v1.PoseNode`` servicer: Estimate, EstimateStream and GetInfo."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from functools import partial

import grpc
from posefleet.common.certs import Guard, require
from posefleet.common.grpc_server import Malformed, status_code
from posefleet.common.keypoints import COCO_KEYPOINTS
from posefleet.node.engine.types import PoseResult
from posefleet.node.server.images import FrameImage, ImageError
from posefleet.node.server.metrics import NodeMetrics
from posefleet.node.server.pipeline import AsyncEngine, AtCapacity
from posefleet.v1 import node_pb2, node_pb2_grpc, pose_pb2

log = logging.getLogger("posefleet.node")
_NAMED_POSE = pose_pb2.Pose(keypoints=[pose_pb2.Keypoint(name=name) for name in COCO_KEYPOINTS])


class FrameRefused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


#: Who may call a node: the coordinators of its fleet, and admins.
CALLERS = ("coordinator", "admin")


class PoseNodeService(node_pb2_grpc.PoseNodeServicer):
    """Answers every frame: poses, or a FAILED result (stream) / gRPC error (unary) saying why."""

    def __init__(self, node_id: str, metrics: NodeMetrics, max_side: int, max_pixels: int, *, guard: Guard) -> None:
        self.node_id = node_id
        self.guard = guard  # mutual TLS: only coordinators (and admins) may call
        self.metrics = metrics
        self.max_side = max_side
        self.max_pixels = max_pixels
        self.engine: AsyncEngine | None = None
        self.info = pose_pb2.NodeInfo(node_id=node_id)
        self.draining = asyncio.Event()

    def ready(self, engine: AsyncEngine, info: pose_pb2.NodeInfo) -> None:
        self.engine = engine
        self.info = info

    # -- one frame ---------------------------------------------------------------------------
    def _admit(self) -> AsyncEngine:
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

    def _submit(self, engine: AsyncEngine, frame: pose_pb2.Frame, image: FrameImage) -> asyncio.Future[PoseResult]:
        """Start an admitted frame; its future completes when the frame is done, whatever happens."""
        try:
            return engine.submit(image, frame.camera_id or None)
        except Exception as exc:  # e.g. the worker pool is shut down while draining
            future: asyncio.Future[PoseResult] = asyncio.get_running_loop().create_future()
            future.set_exception(exc)
            return future

    def _image(self, engine: AsyncEngine, frame: pose_pb2.Frame) -> FrameImage:
        """The frame's image, decoded at a reduced scale if it is over 8 times the model input's side (large JPEGs)."""
        return FrameImage(frame.image, self.max_side, self.max_pixels, engine.engine.input_size)

    def _finish(
        self,
        engine: AsyncEngine,
        frame: pose_pb2.Frame,
        image: FrameImage,
        received: float,
        done: asyncio.Future[PoseResult],
    ) -> pose_pb2.PoseResult:
        """The answer to a finished frame (poses or why not); releases its slot."""
        engine.release()
        self.metrics.inflight.dec()
        if done.cancelled():
            return self.failed(frame, grpc.StatusCode.CANCELLED, "frame cancelled before it finished")
        if (exc := done.exception()) is not None:
            if isinstance(exc, ImageError):
                return self.failed(frame, exc.code, str(exc))
            log.error("frame %s/%s failed", frame.camera_id, frame.sequence, exc_info=exc)
            return self.failed(frame, grpc.StatusCode.INTERNAL, f"inference failed: {exc}")
        poses = done.result()
        result = self._result(frame)
        result.status = pose_pb2.RESULT_STATUS_OK
        result.image_width, result.image_height = image.size
        scale = image.scale(poses.image_size)
        looks = poses.looks or []
        for i, pose in enumerate(poses.poses):
            out = result.poses.add()
            out.CopyFrom(_NAMED_POSE)  # the 17 named keypoints; about half the time of adding them one by one
            out.score = float(pose.score)
            points = pose.keypoints if scale is None else pose.keypoints * (scale[0], scale[1], 1.0)
            for keypoint, (x, y, s) in zip(out.keypoints, points.tolist(), strict=True):
                keypoint.x, keypoint.y, keypoint.score = x, y, s
            if i < len(looks) and (look := looks[i]) is not None:
                out.appearance.extend(look.tolist())
        t = poses.timings
        total_ms = (time.perf_counter() - received) * 1e3
        timings = result.timings
        timings.queue_ms = t.queue_ms
        timings.decode_image_ms = t.decode_image_ms
        timings.preprocess_ms = t.preprocess_ms
        timings.inference_ms = t.inference_ms
        timings.postprocess_ms = t.decode_ms
        timings.total_ms = total_ms
        self.metrics.observe_frame(
            t.queue_ms, t.decode_image_ms, t.preprocess_ms, t.inference_ms, t.decode_ms, total_ms
        )
        return result

    # -- RPCs --------------------------------------------------------------------------------
    async def Estimate(self, request: pose_pb2.Frame, context: grpc.aio.ServicerContext) -> pose_pb2.PoseResult:
        await require(context, CALLERS, self.guard)
        if isinstance(request, Malformed):
            self.metrics.errors.labels(grpc.StatusCode.INVALID_ARGUMENT.name).inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(request))
        received = time.perf_counter()
        try:
            engine = self._admit()
        except FrameRefused as exc:
            result = self.failed(request, exc.code, str(exc))
        else:
            image = self._image(engine, request)
            done = self._submit(engine, request, image)
            try:
                await asyncio.wait([done])  # never cancels ``done``
            except asyncio.CancelledError:  # the caller went away: the frame frees its slot when it ends
                done.add_done_callback(partial(self._finish, engine, request, image, received))
                raise
            result = self._finish(engine, request, image, received, done)
        if result.status == pose_pb2.RESULT_STATUS_FAILED:
            await context.abort(status_code(result.error_code), result.error)
        return result

    async def EstimateStream(
        self, request_iterator: AsyncIterator[pose_pb2.Frame], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pose_pb2.PoseResult]:
        """Frames in, results out in completion order; no per-frame task, one callback per frame."""
        await require(context, CALLERS, self.guard)
        out: asyncio.Queue[pose_pb2.PoseResult | None] = asyncio.Queue()
        pending = 0
        reading_done = asyncio.Event()

        def finish_if_idle() -> None:
            if not pending and (reading_done.is_set() or self.draining.is_set()):
                out.put_nowait(None)

        def on_done(
            engine: AsyncEngine,
            frame: pose_pb2.Frame,
            image: FrameImage,
            received: float,
            done: asyncio.Future[PoseResult],
        ) -> None:
            nonlocal pending
            pending -= 1
            out.put_nowait(self._finish(engine, frame, image, received, done))
            finish_if_idle()

        async def read() -> None:
            nonlocal pending
            try:
                async for frame in request_iterator:
                    if isinstance(frame, Malformed):  # answered FAILED; the stream goes on
                        bad = str(frame)
                        out.put_nowait(self.failed(pose_pb2.Frame(), grpc.StatusCode.INVALID_ARGUMENT, bad))
                        continue
                    received = time.perf_counter()
                    try:
                        engine = self._admit()
                    except FrameRefused as exc:
                        out.put_nowait(self.failed(frame, exc.code, str(exc)))
                        continue
                    pending += 1
                    image = self._image(engine, frame)
                    self._submit(engine, frame, image).add_done_callback(
                        partial(on_done, engine, frame, image, received)
                    )
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
            # Frames still running finish on their own and free their slots; their results have no reader.
            self.metrics.streams.dec()
            reader.cancel()
            drainer.cancel()

    async def GetInfo(self, request: node_pb2.GetInfoRequest, context: grpc.aio.ServicerContext) -> pose_pb2.NodeInfo:
        await require(context, CALLERS, self.guard)
        return self.info
