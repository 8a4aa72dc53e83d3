"""One frame on its way through the cluster, and the one place its result gets the frame's identity."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field

import grpc
from posefleet.common.images import header_size
from posefleet.v1 import pose_pb2


@dataclass(eq=False)
class Job:
    """A frame and the future of its one result; ``deadline`` (monotonic) bounds everything done for it."""

    frame: pose_pb2.Frame
    future: asyncio.Future[pose_pb2.PoseResult]
    deadline: float
    received: float = field(default_factory=time.perf_counter)
    attempts: int = 0  # nodes it was sent to
    in_flight: int = 0  # nodes it is on now (a straggler's copy may be on a second one)
    tried: set[str] = field(default_factory=set)
    #: The node work it asks for, in credits (``frame_cost``): a 4096x4096 frame is not a VGA frame.
    cost: int = 1
    #: Credits its camera's share counts for it while it is unanswered (set when first sent to a node).
    share: int = 0
    #: The frame timeout its deadline came from (named when it runs out).
    timeout_s: float = 0.0

    @classmethod
    def start(cls, frame: pose_pb2.Frame, timeout_s: float) -> Job:
        """A job for a frame that just arrived: capture time stamped now when the camera sent none."""
        if not frame.HasField("capture_time"):
            frame.capture_time.GetCurrentTime()
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout_s
        return cls(frame, loop.create_future(), deadline, cost=frame_cost(frame.image), timeout_s=timeout_s)

    @property
    def done(self) -> bool:
        return self.future.done()

    async def result(self) -> pose_pb2.PoseResult:
        """Its one result, when it comes or at its deadline (FAILED, DEADLINE_EXCEEDED), whatever the caller's
        own deadline; the result's route time is set."""
        try:
            await asyncio.wait_for(asyncio.shield(self.future), timeout=max(0.0, self.deadline - time.monotonic()))
        except TimeoutError:
            self.fail(grpc.StatusCode.DEADLINE_EXCEEDED, f"no result within {self.timeout_s:.1f} s")
        result = self.future.result()
        result.timings.route_ms = self.elapsed_ms()
        return result

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.received) * 1e3

    def resolve(self, result: pose_pb2.PoseResult) -> None:
        """Answer the job (first answer wins) with ``result`` carrying the frame's own identity."""
        if self.future.done():
            return
        frame = self.frame
        result.camera_id = frame.camera_id
        result.sequence = frame.sequence
        result.capture_time.CopyFrom(frame.capture_time)
        self.future.set_result(result)

    def fail(self, code: grpc.StatusCode, message: str) -> None:
        self.resolve(unanswered(pose_pb2.RESULT_STATUS_FAILED, message, code))

    def drop(self, message: str) -> None:
        self.resolve(unanswered(pose_pb2.RESULT_STATUS_DROPPED, message))


#: One credit of node work: decoding and resizing a VGA frame. Larger frames take more credits.
COST_UNIT_PIXELS = 640 * 480
_KINDS = {pose_pb2.IMAGE_ENCODING_JPEG: "JPEG", pose_pb2.IMAGE_ENCODING_PNG: "PNG"}


def frame_cost(image: pose_pb2.Image) -> int:
    """Credits a frame takes on a node: its pixels (from the JPEG or PNG header, or a raw frame's size) per
    ``COST_UNIT_PIXELS``, at least 1. Node work is shared by what it costs to decode, not by frame count:
    a camera sending huge frames holds a node's credits for them and waits (dropping its own oldest frames)
    while others' cheap frames go by."""
    kind = _KINDS.get(image.encoding)
    size = header_size(image.data, kind) if kind is not None else (image.width, image.height)
    pixels = size[0] * size[1] if size is not None else 0
    return max(1, math.ceil(pixels / COST_UNIT_PIXELS))


def unanswered(
    status: pose_pb2.ResultStatus.ValueType, message: str, code: grpc.StatusCode | None = None
) -> pose_pb2.PoseResult:
    """The result of a frame no node answered (FAILED or DROPPED); ``Job.resolve`` adds its identity."""
    return pose_pb2.PoseResult(status=status, error=message, error_code=code.value[0] if code is not None else 0)
