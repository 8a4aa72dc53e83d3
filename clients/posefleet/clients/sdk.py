"""A small typed asyncio SDK for the coordinator: Estimate, StreamCamera, Subscribe, ListNodes, GetStats.

tls = TlsFiles.from_pki(Path("fleet-pki"), "cam-lobby")  # a camera certificate (posefleet pki issue)
async with PosefleetClient("127.0.0.1:50050", tls=tls) as client:
    result = await client.estimate(image)            # a BGR numpy image, or JPEG/PNG bytes
    for pose in poses_of(result): ...
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterable, AsyncIterator
from types import TracebackType
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from posefleet.common.tls import TlsFiles, aio_channel, role_name
from posefleet.v1 import coordinator_pb2, coordinator_pb2_grpc, pose_pb2

MiB = 1 << 20


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


def poses_of(result: pose_pb2.PoseResult) -> list[dict[str, Any]]:
    """Poses as plain dicts: ``{"score", "keypoints": [{"name", "x", "y", "score"}]}``, plus ``track_id`` and
    ``bbox`` ([x, y, width, height]) when the coordinator tracked them."""
    out = []
    for p in result.poses:
        pose: dict[str, Any] = {
            "score": round(p.score, 5),
            "keypoints": [
                {"name": k.name, "x": round(k.x, 2), "y": round(k.y, 2), "score": round(k.score, 5)}
                for k in p.keypoints
            ],
        }
        if p.track_id:
            pose["track_id"] = p.track_id
            pose["bbox"] = [round(v, 2) for v in (p.bbox.x, p.bbox.y, p.bbox.width, p.bbox.height)]
        out.append(pose)
    return out


def _finite(value: float, digits: int) -> float | None:
    return round(value, digits) if math.isfinite(value) else None


def scene_to_dict(scene: coordinator_pb2.SceneResult) -> dict[str, Any]:
    """One window of a scene as JSON: 3D persons (metres; joints not triangulated have null x, y, z) and the
    2D views they came from."""
    return {
        "scene": scene.scene,
        "window_start_ms": scene.window_start.ToMilliseconds(),
        "persons": [
            {
                "id": person.id,
                "keypoints": [
                    {
                        "name": j.name,
                        "x": _finite(j.x, 4),
                        "y": _finite(j.y, 4),
                        "z": _finite(j.z, 4),
                        "score": round(j.score, 4),
                        "views": j.views,
                        "reprojection_error_px": round(j.reprojection_error_px, 2),
                    }
                    for j in person.joints
                ],
                "views": [
                    {"camera": v.camera_id, "pose_index": v.pose_index, "track_id": v.track_id} for v in person.views
                ],
            }
            for person in scene.persons
        ],
        "views": [
            {
                "camera": v.camera_id,
                "sequence": v.sequence,
                "capture_time_ms": v.capture_time.ToMilliseconds(),
                "status": pose_pb2.ResultStatus.Name(v.status).removeprefix("RESULT_STATUS_").lower(),
                "poses": poses_of(v),
            }
            for v in scene.views
        ],
        "missing_cameras": list(scene.missing_cameras),
        "fuse_ms": round(scene.fuse_ms, 3),
    }


class PosefleetClient:
    """A coordinator's RPCs. ``tls`` is this client's fleet certificate (mutual TLS; the coordinator must prove
    it is a fleet coordinator); ``None`` only against an --insecure coordinator (development)."""

    def __init__(self, address: str, *, tls: TlsFiles | None, max_message_mb: float = 16.0) -> None:
        limit = int(max_message_mb * MiB)
        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", limit),
            ("grpc.max_receive_message_length", limit),
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

    async def stats(self) -> coordinator_pb2.Stats:
        reply: coordinator_pb2.Stats = await self._stub.GetStats(coordinator_pb2.GetStatsRequest(), timeout=10)
        return reply
