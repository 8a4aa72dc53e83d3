"""``posefleet camera``: stream a camera, video file or RTSP/HTTP source to the coordinator.

Frames are captured with OpenCV, paced to ``--fps`` (video files default to their own rate),
optionally resized to the model's input size on the camera side, JPEG-encoded and sent over one
StreamCamera call. Every frame sent gets a result or an explicit status: when the coordinator goes
away, frames in flight are recorded as FAILED locally and the client reconnects with backoff.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import cv2
import grpc
import numpy as np
import numpy.typing as npt
from posefleet.clients.sdk import PosefleetClient, encode_frame, poses_of
from posefleet.common import tls
from posefleet.common.drawing import draw_skeletons
from posefleet.common.errors import PosefleetError
from posefleet.common.keypoints import NUM_KEYPOINTS
from posefleet.common.tls import TlsFiles, explain_refusal, role_name, split_address
from posefleet.v1 import pose_pb2

log = logging.getLogger("posefleet.camera")
RECONNECT_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
}
Image = npt.NDArray[np.uint8]
#: While it waits to reconnect, a camera checks this often whether its coordinator accepts connections again.
PROBE_S = 0.2


@dataclass
class CameraOptions:
    coordinator: str
    source: str
    camera_id: str
    tls: TlsFiles | None  # its camera certificate; None only against an --insecure coordinator
    fps: float | None = None
    resize_to_model: bool = False
    jsonl: Path | None = None
    render: Path | None = None
    show: bool = False
    max_frames: int | None = None
    family: str = ""
    model_id: str = ""
    quality: int = 85
    stats_every_s: float = 2.0
    max_reconnects: int = 20
    #: Recorded footage of one scene: frame i is stamped (and sent) at ``start_at + i / fps`` (Unix time),
    #: so cameras started with the same ``start_at`` share capture times frame by frame.
    start_at: float | None = None


@dataclass
class CameraReport:
    sent: int = 0
    ok: int = 0
    dropped: int = 0
    failed: int = 0
    reconnects: int = 0
    #: Frames a live source produced while the coordinator was away (estimated from its rate); never sent.
    missed: int = 0
    #: The client stopped trying after ``max_reconnects`` failed attempts in one outage.
    gave_up: bool = False
    poses: int = 0
    #: Recent round trips only: a live camera runs for days.
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    elapsed_s: float = 0.0

    @property
    def answered(self) -> int:
        return self.ok + self.dropped + self.failed

    def line(self, camera_id: str) -> str:
        p50 = float(np.percentile(list(self.latencies_ms), 50)) if self.latencies_ms else 0.0
        fps = self.ok / self.elapsed_s if self.elapsed_s else 0.0
        return (
            f"camera {camera_id}: sent {self.sent}, ok {self.ok}, dropped {self.dropped}, failed {self.failed}, "
            f"{fps:.1f} FPS processed, latency p50 {p50:.1f} ms, reconnects {self.reconnects}"
            + (f", {self.missed} frames missed while disconnected" if self.missed else "")
            + (", gave up reconnecting" if self.gave_up else "")
        )


def open_source(source: str) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(int(source)) if source.isdigit() else cv2.VideoCapture(source)
    if not cap.isOpened():
        raise PosefleetError(f"cannot open video source {source!r} (device index, file, or rtsp/http URL)")
    return cap


class CameraClient:
    def __init__(self, options: CameraOptions) -> None:
        self.o = options
        self.report = CameraReport()
        self._sent_at: dict[int, float] = {}
        self._images: dict[int, Image] = {}
        self._scale: dict[int, tuple[float, float]] = {}
        self._jsonl: TextIO | None = None
        self._writer: cv2.VideoWriter | None = None
        self._seq = 0
        self._connected = False
        self.exhausted = False
        # A read still running in its thread when a stream fails must not meet the final release.
        self._cap_lock = threading.Lock()

    async def _model_size(self, client: PosefleetClient) -> tuple[int, int] | None:
        for node in await client.list_nodes():
            info = node.info
            if (
                node.healthy
                and (not self.o.family or info.model_family == self.o.family)
                and (not self.o.model_id or info.model_id == self.o.model_id)
            ):
                return info.input_height, info.input_width
        return None

    def _record(self, result: pose_pb2.PoseResult) -> None:
        seq = result.sequence
        sent = self._sent_at.pop(seq, None)
        sx, sy = self._scale.pop(seq, (1.0, 1.0))
        for pose in result.poses:  # back to source pixels when the camera resized the frame
            for kp in pose.keypoints:
                kp.x, kp.y = kp.x * sx, kp.y * sy
        if result.status == pose_pb2.RESULT_STATUS_OK:
            self.report.ok += 1
            self.report.poses += len(result.poses)
            if sent is not None:
                self.report.latencies_ms.append((time.perf_counter() - sent) * 1e3)
        elif result.status == pose_pb2.RESULT_STATUS_DROPPED:
            self.report.dropped += 1
        else:
            self.report.failed += 1
        if self._jsonl is not None:
            status = pose_pb2.ResultStatus.Name(result.status).removeprefix("RESULT_STATUS_").lower()
            line = {
                "camera": result.camera_id,
                "sequence": seq,
                "status": status,
                "node": result.node_id,
                "error": result.error,
                "poses": poses_of(result),
            }
            self._jsonl.write(json.dumps(line) + "\n")
        image = self._images.pop(seq, None)
        if image is not None and (self.o.render or self.o.show):
            self._draw(image, result)

    def _draw(self, image: Image, result: pose_pb2.PoseResult) -> None:
        poses = [
            (np.array([[k.x, k.y, k.score] for k in p.keypoints], np.float32), p.score)
            for p in result.poses
            if len(p.keypoints) == NUM_KEYPOINTS
        ]
        drawn = draw_skeletons(image, poses)
        if self.o.render is not None:
            if self._writer is None:
                self.o.render.parent.mkdir(parents=True, exist_ok=True)
                fps = self.o.fps or 30.0
                self._writer = cv2.VideoWriter(
                    str(self.o.render), cv2.VideoWriter.fourcc(*"mp4v"), fps, (image.shape[1], image.shape[0])
                )
            self._writer.write(drawn)
        if self.o.show:  # pragma: no cover - needs a display
            cv2.imshow(self.o.camera_id, drawn)
            cv2.waitKey(1)

    def _lost(self, reason: str) -> None:
        """Frames sent on a broken stream get an explicit FAILED status."""
        for seq in sorted(self._sent_at):
            self._record(
                pose_pb2.PoseResult(
                    camera_id=self.o.camera_id,
                    sequence=seq,
                    status=pose_pb2.RESULT_STATUS_FAILED,
                    error=reason,
                    error_code=grpc.StatusCode.UNAVAILABLE.value[0],
                )
            )

    def _read(self, cap: cv2.VideoCapture) -> tuple[bool, npt.NDArray[np.uint8] | None]:
        with self._cap_lock:
            ok, image = cap.read()
            return bool(ok), image

    async def _frames(self, cap: cv2.VideoCapture, target: tuple[int, int] | None) -> AsyncIterator[pose_pb2.Frame]:
        """Capture, pace, resize and encode frames; sets ``exhausted`` when the source ends."""
        next_at = time.perf_counter()
        while self.o.max_frames is None or self._seq < self.o.max_frames:
            ok, image = await asyncio.to_thread(self._read, cap)
            if not ok:
                break
            image = np.asarray(image, dtype=np.uint8)
            sent_image, scale = image, (1.0, 1.0)
            if target is not None and image.shape[:2] != target:
                sent_image = cv2.resize(image, (target[1], target[0]), interpolation=cv2.INTER_AREA)
                scale = (image.shape[1] / target[1], image.shape[0] / target[0])
            frame = encode_frame(
                sent_image,
                camera_id=self.o.camera_id,
                sequence=self._seq,
                quality=self.o.quality,
                family=self.o.family,
                model_id=self.o.model_id,
            )
            if self.o.start_at is not None and self.o.fps:
                due = self.o.start_at + self._seq / self.o.fps
                await asyncio.sleep(max(0.0, due - time.time()))
                frame.capture_time.FromNanoseconds(round(due * 1e9))
            elif self.o.fps:
                next_at += 1.0 / self.o.fps
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            self._sent_at[self._seq] = time.perf_counter()
            self._scale[self._seq] = scale
            if self.o.render or self.o.show:
                self._images[self._seq] = image
            self.report.sent += 1
            self._seq += 1
            yield frame
        self.exhausted = True

    async def _session(self, cap: cv2.VideoCapture, start: float) -> None:
        """One StreamCamera call, until the source ends or the coordinator goes away."""
        last_stats = time.monotonic()
        async with PosefleetClient(self.o.coordinator, tls=self.o.tls) as client:
            target = await self._model_size(client) if self.o.resize_to_model else None
            async for result in client.stream_camera(self._frames(cap, target)):
                self._connected = True  # the coordinator answers: an outage, if there was one, is over
                self._record(result)
                if time.monotonic() - last_stats >= self.o.stats_every_s:
                    last_stats = time.monotonic()
                    self.report.elapsed_s = time.perf_counter() - start
                    print(self.report.line(self.o.camera_id), flush=True)

    async def _wait_for_coordinator(self, seconds: float) -> None:
        """Wait up to ``seconds`` before the next attempt, probing the coordinator's port every ``PROBE_S`` (a TCP
        connect: no TLS, no call): the attempt starts as soon as it accepts again. The reconnect budget
        (``max_reconnects`` attempts, backoff up to 8 s) is unchanged; a camera is back within a probe of its
        coordinator rather than within a backoff."""
        try:
            host, port = split_address(self.o.coordinator)
        except ValueError:  # an address without a port gRPC still dials: nothing to probe, wait the backoff
            await asyncio.sleep(seconds)
            return
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=min(left, PROBE_S))
            except (OSError, TimeoutError):
                await asyncio.sleep(min(PROBE_S, max(0.0, deadline - time.monotonic())))
                continue
            writer.close()
            return

    async def run(self) -> CameraReport:
        cap = await asyncio.to_thread(open_source, self.o.source)
        source_fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        if self.o.fps is None and not self.o.source.isdigit() and source_fps > 0:
            self.o.fps = source_fps  # a file plays at its own rate
        if self.o.jsonl is not None:
            self.o.jsonl.parent.mkdir(parents=True, exist_ok=True)
            self._jsonl = self.o.jsonl.open("w")
        start = time.perf_counter()
        backoff, attempts = 0.5, 0  # both per outage: reset once a session gets answers again
        live = self.o.source.isdigit() or "://" in self.o.source
        try:
            while not self.exhausted:
                self._connected = False
                try:
                    await self._session(cap, start)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() not in RECONNECT_CODES:
                        raise
                    self._lost(f"coordinator connection lost: {exc.code().name}")
                    if self._connected:
                        backoff, attempts = 0.5, 0
                    attempts += 1
                    if attempts > self.o.max_reconnects:
                        self.report.gave_up = True
                        log.error("coordinator %s: gave up after %d attempts", self.o.coordinator, attempts - 1)
                        break
                    self.report.reconnects += 1
                    if attempts == 1 and exc.code() == grpc.StatusCode.UNAVAILABLE and self.o.tls is not None:
                        why = await explain_refusal(self.o.coordinator, self.o.tls, role_name("coordinator"))
                        log.warning("coordinator %s: %s", self.o.coordinator, why)
                    log.warning(
                        "coordinator %s unavailable (%s); reconnecting in %.1f s",
                        self.o.coordinator,
                        exc.code().name,
                        backoff,
                    )
                    away = time.perf_counter()
                    await self._wait_for_coordinator(backoff)
                    if live:  # a live source went on producing frames nobody sent
                        self.report.missed += round((time.perf_counter() - away) * (self.o.fps or 30.0))
                    backoff = min(8.0, backoff * 2)
            self._lost("no result before the stream ended")
        finally:
            with self._cap_lock:
                cap.release()
            self.report.elapsed_s = time.perf_counter() - start
            if self._jsonl is not None:
                self._jsonl.close()
            if self._writer is not None:
                self._writer.release()
        return self.report


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("camera", help="stream a camera/video/RTSP source to the coordinator and get poses back")
    p.add_argument("--coordinator", required=True, metavar="HOST:PORT")
    p.add_argument("--source", required=True, help="device index, video file, or rtsp/http URL")
    p.add_argument("--camera-id", required=True)
    p.add_argument("--fps", type=float, help="send rate (default: the file's own rate; cameras as captured)")
    p.add_argument("--resize-to-model", action="store_true", help="resize to the model input before sending")
    p.add_argument("--jsonl", type=Path, help="one JSON line per result")
    p.add_argument("--render", type=Path, help="annotated video (mp4)")
    p.add_argument("--show", action="store_true", help="show the annotated stream in a window")
    p.add_argument("--max-frames", type=int)
    p.add_argument("--family", default="", help="ask for a model family (posenet, openpose)")
    p.add_argument("--model-id", default="", help="ask for one model id")
    p.add_argument(
        "--max-reconnects",
        type=int,
        default=20,
        help="failed attempts in one outage before giving up (exit status 1; default 20)",
    )
    p.add_argument(
        "--start-at",
        type=float,
        metavar="UNIX_TIME",
        help="recorded footage of a scene: stamp and send frame i at UNIX_TIME + i/fps (give every "
        "camera of the scene the same value)",
    )
    tls.add_arguments(p)
    p.set_defaults(func=cmd_camera)


def cmd_camera(args: argparse.Namespace) -> int:
    options = CameraOptions(
        coordinator=args.coordinator,
        source=args.source,
        camera_id=args.camera_id,
        tls=tls.from_args(args, "posefleet camera"),
        fps=args.fps,
        resize_to_model=args.resize_to_model,
        jsonl=args.jsonl,
        render=args.render,
        show=args.show,
        max_frames=args.max_frames,
        family=args.family,
        model_id=args.model_id,
        start_at=args.start_at,
        max_reconnects=args.max_reconnects,
    )
    report = asyncio.run(CameraClient(options).run())
    print(report.line(args.camera_id))
    return 0 if report.sent == report.answered and not report.gave_up else 1
