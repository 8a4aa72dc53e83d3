"""A small typed asyncio SDK for the coordinator: Estimate, StreamCamera, Subscribe, ListNodes, GetStats.

tls = TlsFiles.from_pki(Path("fleet-pki"), "cam-lobby")  # a camera certificate (posefleet pki issue)
async with PosefleetClient("127.0.0.1:50050", tls=tls) as client:
    result = await client.estimate(image)            # a BGR numpy image, or JPEG/PNG bytes
    for pose in poses_of(result): ...
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator
from types import TracebackType
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from posefleet.common.jsonview import poses_of, scene_to_dict
from posefleet.common.tls import TlsFiles, aio_channel, role_name
from posefleet.v1 import coordinator_pb2, coordinator_pb2_grpc, pose_pb2

MiB = 1 << 20
__all__ = ["PosefleetClient", "encode_frame", "poses_of", "scene_to_dict"]


def encode_frame(
    image: npt.NDArray[np.uint8] | bytes,
    *,
    camera_id: str = "",
    sequence: int = 0,
    quality: int = 85,
    family: str = "",
    model_id: str = "",
) -> pose_pb2.Frame:
    """A Frame with a JPEG image (numpy BGR input) or the given JPEG/PNG bytes, stamped now."""
    if isinstance(image, bytes):
        encoding = pose_pb2.IMAGE_ENCODING_PNG if image[:4] == b"\x89PNG" else pose_pb2.IMAGE_ENCODING_JPEG
        data = image
    else:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError("cannot JPEG-encode the image")
        encoding, data = pose_pb2.IMAGE_ENCODING_JPEG, buf.tobytes()
    frame = pose_pb2.Frame(
        camera_id=camera_id,
        sequence=sequence,
        image=pose_pb2.Image(encoding=encoding, data=data),
        model=pose_pb2.ModelSelector(family=family, model_id=model_id),
    )
    frame.capture_time.GetCurrentTime()
    return frame


class PosefleetClient:
    """A coordinator's RPCs. ``tls`` is this client's fleet certificate (mutual TLS; the coordinator must prove
    it is a fleet coordinator); ``None`` only against an --insecure coordinator (development)."""

    def __init__(self, address: str, *, tls: TlsFiles | None, max_message_mb: float = 16.0) -> None:
        limit = int(max_message_mb * MiB)
        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", limit),
            ("grpc.max_receive_message_length", limit),
            # A client of its own connection: gRPC's process-wide subchannel pool would hand a new client the
            # old one's connection backoff (up to 2 minutes after an outage), failing calls to a coordinator
            # that is back; short reconnect backoffs for the same reason (callers keep their own budget).
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 1000),
            # A reader's lag must show where the coordinator can see it: gRPC's BDP probing grows a stream's
            # receive window to megabytes, and a slow subscriber then sits seconds behind in its own buffers,
            # never told (measured: 12 s behind with a 3 s limit). A fixed 64 KB window keeps what is unread
            # here small, so the coordinator's backlog fills, counts what is lost and applies the lag limit.
            ("grpc.http2.bdp_probe", 0),
            ("grpc.http2.lookahead_bytes", 64 * 1024),
        ]
        self.address = address
        self._channel = aio_channel(address, tls, role_name("coordinator"), options)
        self._stub = coordinator_pb2_grpc.CoordinatorStub(self._channel)

    async def __aenter__(self) -> PosefleetClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def estimate(
        self,
        image: npt.NDArray[np.uint8] | bytes | pose_pb2.Frame,
        *,
        family: str = "",
        model_id: str = "",
        timeout: float | None = 30.0,
    ) -> pose_pb2.PoseResult:
        """Poses of one image through the cluster; raises grpc.aio.AioRpcError when it fails."""
        frame = image if isinstance(image, pose_pb2.Frame) else encode_frame(image, family=family, model_id=model_id)
        result: pose_pb2.PoseResult = await self._stub.Estimate(frame, timeout=timeout)
        return result

    def stream_camera(self, frames: AsyncIterable[pose_pb2.Frame]) -> AsyncIterator[pose_pb2.PoseResult]:
        """One result per frame, in sequence order (OK, DROPPED or FAILED)."""
        call: AsyncIterator[pose_pb2.PoseResult] = self._stub.StreamCamera(frames)
        return call

    def subscribe(
        self, camera_ids: list[str] | None = None, window_ms: int = 0
    ) -> AsyncIterator[coordinator_pb2.MultiViewResult]:
        """Merged results of the chosen cameras (all when empty), grouped by capture-time window."""
        request = coordinator_pb2.SubscribeRequest(camera_ids=camera_ids or [], window_ms=window_ms)
        call: AsyncIterator[coordinator_pb2.MultiViewResult] = self._stub.Subscribe(request)
        return call

    def subscribe_scene(self, scene: str) -> AsyncIterator[coordinator_pb2.SceneResult]:
        """A calibrated scene's fused 3D people, one ``SceneResult`` per window."""
        call: AsyncIterator[coordinator_pb2.SceneResult] = self._stub.SubscribeScene(
            coordinator_pb2.SubscribeSceneRequest(scene=scene)
        )
        return call

    async def list_nodes(self) -> list[coordinator_pb2.NodeStatus]:
        reply = await self._stub.ListNodes(coordinator_pb2.ListNodesRequest(), timeout=10)
        return list(reply.nodes)

    async def wait_for_nodes(self, count: int, timeout: float = 30.0) -> list[coordinator_pb2.NodeStatus]:
        """Poll ListNodes until ``count`` nodes are healthy; raises TimeoutError naming what it saw."""
        deadline = time.monotonic() + timeout
        while True:
            nodes = await self.list_nodes()
            if sum(n.healthy for n in nodes) >= count:
                return nodes
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{self.address}: {sum(n.healthy for n in nodes)} of {count} nodes healthy after {timeout:.0f} s"
                )
            await asyncio.sleep(0.1)

    async def calibrate_scene(
        self,
        scene: str,
        windows: int = 0,
        person_height_m: float = 0.0,
        timeout_s: float = 0.0,
        *,
        refine: bool = False,
        keep_centres: bool = False,
    ) -> coordinator_pb2.CalibrateSceneResponse:
        """Admin: the scene's cameras calibrated from the people its next ``windows`` windows show (``refine``:
        its own calibration adjusted on them, world frame and scale kept; ``keep_centres``: only turned)."""
        request = coordinator_pb2.CalibrateSceneRequest(
            scene=scene, windows=windows, person_height_m=person_height_m, timeout_s=timeout_s, refine=refine,
            keep_centres=keep_centres,
        )  # fmt: skip
        wait = (timeout_s or 120.0) + 600.0  # the recording, then the calibration itself
        reply: coordinator_pb2.CalibrateSceneResponse = await self._stub.CalibrateScene(request, timeout=wait)
        return reply

    async def stats(self) -> coordinator_pb2.Stats:
        reply: coordinator_pb2.Stats = await self._stub.GetStats(coordinator_pb2.GetStatsRequest(), timeout=10)
        return reply
