"""Fusing a scene's windows off the frame path: in a worker process (the coordinator's), or inline.

Both run the same ``WindowFuser``: one window in, serialized once (a ``SceneResult`` holding the window's
results as its views, appended already serialized), the same bytes out with the window's 3D people and its
fusion time appended as a second encoding (the two parse as one message). The coordinator's
event loop only groups results into windows and hands them over, so fusion uses another core and never
slows routing; a worker that falls behind by ``MAX_PENDING`` windows makes the scene skip windows (counted)
rather than queue them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import functools
import logging
import multiprocessing
import os
import pickle
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from posefleet.common.keypoints import COCO_KEYPOINTS
from posefleet.coordinator.keypoint_arrays import PackedPoses
from posefleet.coordinator.wire_bytes import FIXED32, LENGTH, VARINT, embedded, float32, tag, varint
from posefleet.merge.calibration import Camera
from posefleet.merge.scene import FusionParams, Person3D, SceneFuser
from posefleet.v1 import coordinator_pb2, pose_pb2

log = logging.getLogger("posefleet.coordinator")

#: Windows a worker may have in hand, and their bytes; beyond either the scene skips windows. 32 windows are
#: 3 s of a scene at 10 FPS, which rides out the seconds in which a machine's nodes and cameras fill its cores.
MAX_PENDING = 32
MAX_PENDING_BYTES = 128 * 1024
#: A larger window (about 60 people per camera) is skipped: a batch must fit the socket's buffer (asked for
#: ``SOCKET_BUFFER``; Linux gives at most twice net.core.wmem_max, 416 KB by default), as a send must never
#: block the event loop.
MAX_WINDOW_BYTES = 96 * 1024
SOCKET_BUFFER = 512 * 1024
#: The largest message either way; the worker answers a batch in messages of about ``REPLY_BYTES``.
MAX_MESSAGE = 1024 * 1024
REPLY_BYTES = 64 * 1024
#: What the worker says once it can fuse.
_STARTED = "started"


@dataclass
class FusedWindow:
    """What came out of one window: the SceneResult (serialized) and what the scene's status needs."""

    scene: str
    result: bytes
    persons: int
    camera_errors: dict[str, float] = field(default_factory=dict)
    fuse_ms: float = 0.0


class WindowFuser:
    """The scenes' fusers and the window -> SceneResult step (wherever it runs)."""

    def __init__(self) -> None:
        self._fusers: dict[str, SceneFuser] = {}

    def configure(self, scene: str, cameras: dict[str, Camera], params: FusionParams) -> None:
        """(Re)build a scene's fuser for its cameras as they stream now (3D track ids start again)."""
        self._fusers[scene] = SceneFuser(cameras, params)

    def fuse(self, window: bytes, t_ms: float, packed: PackedPoses) -> FusedWindow:
        """``window``: a serialized ``SceneResult`` of the scene's results in one window (``window_start``,
        ``views``, ``missing_cameras``); ``t_ms``: the window's middle (capture time); ``packed``: the OK
        results' poses as arrays (tracking made them: not read from the views again)."""
        t0 = time.perf_counter()
        received = coordinator_pb2.SceneResult.FromString(window)
        results = {result.camera_id: result for result in received.views}
        fuser = self._fusers.get(received.scene)
        added: list[bytes] = []  # what fusion adds to the window: its people, then its time
        errors: dict[str, list[float]] = {}
        persons = 0
        if fuser is not None:
            poses = packed.unpack()
            frame = fuser.fuse({c: p for c, p in poses.items() if c in fuser.cameras}, t_ms)
            for person in frame.persons:
                added.append(embedded(_SCENE["persons"], _person(person, results, fuser.names)))
                for cam, err in person.camera_error_px.items():
                    errors.setdefault(cam, []).append(err)
            persons = len(frame.persons)
        fuse_ms = (time.perf_counter() - t0) * 1e3
        added.append(float32(_SCENE["fuse_ms"], fuse_ms))
        camera_errors = {c: sum(v) / len(v) for c, v in errors.items()}
        # Two messages' encodings concatenated parse as the two merged (the wire format's rule): the window's
        # views go back as they came, never serialized again.
        return FusedWindow(received.scene, window + b"".join(added), persons, camera_errors, fuse_ms)


_SCENE = {f.name: f.number for f in coordinator_pb2.SceneResult.DESCRIPTOR.fields}
_PERSON = {f.name: f.number for f in coordinator_pb2.Person3D.DESCRIPTOR.fields}
_JOINT = {f.name: f.number for f in coordinator_pb2.Joint3D.DESCRIPTOR.fields}
#: Joint3D's fields from x to its reprojection error, each written after its one-byte tag (a structured array's
#: columns of the same names): floats, but views a varint below 128 (a scene has at most 63 cameras).
_VALUE_FIELDS = ("x", "y", "z", "score", "views", "reprojection_error_px")
_JOINT_TAG_BYTES = {name: tag(_JOINT[name], VARINT if name == "views" else FIXED32) for name in _VALUE_FIELDS}
if any(len(t) != 1 for t in _JOINT_TAG_BYTES.values()):  # a field numbered 16 or more: its tag takes two bytes
    raise ImportError("Joint3D's fields x to reprojection_error_px must be numbered below 16 (one-byte tags)")
_JOINT_VALUES = np.dtype(
    [item for f in _VALUE_FIELDS for item in ((f"tag_{f}", "u1"), (f, "u1" if f == "views" else "<f4"))]
)


def _joint_template() -> bytes:
    """Every joint's values with their tags set and their numbers at zero (to fill)."""
    template = np.zeros(len(COCO_KEYPOINTS), _JOINT_VALUES)
    for name, tag_bytes in _JOINT_TAG_BYTES.items():
        template[f"tag_{name}"] = tag_bytes[0]
    return template.tobytes()


_JOINT_TEMPLATE = _joint_template()
_VALUES_BYTES = _JOINT_VALUES.itemsize
_JOINT_NAMES = [embedded(_JOINT["name"], name.encode()) for name in COCO_KEYPOINTS]
_JOINTS_TAG = tag(_PERSON["joints"], LENGTH)
_VIEWS_TAG = tag(_PERSON["views"], LENGTH)
_VIEW = {f.name: f.number for f in coordinator_pb2.PersonView.DESCRIPTOR.fields}
_VIEW_POSE_TAG, _VIEW_TRACK_TAG = tag(_VIEW["pose_index"], VARINT), tag(_VIEW["track_id"], VARINT)
_CAMERA_BITS = 1 << np.arange(63, dtype=np.int64)  # a joint's cameras as the bits of one integer


@functools.lru_cache(maxsize=64)  # one entry per scene's camera list
def _camera_fields(names: tuple[str, ...]) -> tuple[bytes, ...]:
    """Each camera's name as a Joint3D ``cameras`` field (encoded once per scene, not per person)."""
    return tuple(embedded(_JOINT["cameras"], n.encode()) for n in names)


def _view(camera_id: str, pose_index: int, track_id: int) -> bytes:
    """A serialized ``PersonView`` (fields at zero left out, as proto3 writes them)."""
    out = embedded(_VIEW["camera_id"], camera_id.encode()) if camera_id else b""
    if pose_index:
        out += _VIEW_POSE_TAG + varint(pose_index)
    if track_id:
        out += _VIEW_TRACK_TAG + varint(track_id)
    return out


def _person(person: Person3D, views: dict[str, pose_pb2.PoseResult], names: list[str]) -> bytes:
    """``person`` as a serialized ``Person3D``, written directly (``wire_bytes``: what the generated classes
    would write, in a fifth of their time: 17 against 79 us): every joint's numbers in one structured array."""
    values = np.frombuffer(bytearray(_JOINT_TEMPLATE), _JOINT_VALUES)  # a writable copy (the array's copy: 3 us)
    values["x"], values["y"], values["z"] = person.points.T
    values["score"] = person.score
    values["views"] = person.views
    values["reprojection_error_px"] = person.error_px
    values["reprojection_error_px"][np.isnan(person.error_px)] = 0.0
    raw = values.tobytes()
    masks = (person.used @ _CAMERA_BITS[: len(names)]).tolist()  # each joint's cameras, as bits
    each = _camera_fields(tuple(names))
    cameras: dict[int, bytes] = {}
    out = [tag(_PERSON["id"], VARINT), varint(person.id)]
    start = 0
    for name, mask in zip(_JOINT_NAMES, masks, strict=True):
        fields = cameras.get(mask)
        if fields is None:
            fields = cameras[mask] = b"".join([e for c, e in enumerate(each) if mask >> c & 1])
        stop = start + _VALUES_BYTES
        out += (_JOINTS_TAG, varint(len(name) + _VALUES_BYTES + len(fields)), name, raw[start:stop], fields)
        start = stop
    for cam_id, index in sorted(person.cameras.items()):
        poses = views[cam_id].poses
        view = _view(cam_id, index, poses[index].track_id if index < len(poses) else 0)
        out += (_VIEWS_TAG, varint(len(view)), view)
    return b"".join(out)


OnFused = Callable[[FusedWindow], None]


class Fusion(Protocol):
    """Where windows are fused; a window is submitted only when ``ready`` (else the scene skips it)."""

    def configure(self, scene: str, cameras: dict[str, Camera], params: FusionParams) -> None: ...

    def ready(self) -> bool: ...

    def submit(self, window: bytes, t_ms: float, poses: PackedPoses) -> bool:
        """Hand a window over; False if it was not taken (the scene counts it skipped)."""
        ...


class InlineFusion:
    """Fuses in the caller's thread (tests, offline tools): ``on_fused`` runs before ``submit`` returns."""

    def __init__(self, on_fused: OnFused) -> None:
        self._fuser = WindowFuser()
        self._on_fused = on_fused

    def configure(self, scene: str, cameras: dict[str, Camera], params: FusionParams) -> None:
        self._fuser.configure(scene, cameras, params)

    def ready(self) -> bool:
        return True

    def submit(self, window: bytes, t_ms: float, poses: PackedPoses) -> bool:
        self._on_fused(self._fuser.fuse(window, t_ms, poses))
        return True


#: A message to the worker: its commands, in order (``("configure", args)`` or ``("fuse", args)``); ``None`` ends it.
Batch = list[tuple[str, tuple[Any, ...]]]


def _worker(sock: socket.socket) -> None:
    """The worker process: batches of commands in, each batch's fused windows out (in order, in messages under
    ``REPLY_BYTES``, the last one marked), until ``None`` or the socket's end.

    It only runs on CPU time nothing else wants (Linux SCHED_IDLE, else nice 19): routing frames comes first,
    fusion takes what is left over (a worker at nice 10 instead, which takes a tenth of a busy core, cost routing
    20% at saturation: measured). Windows wait for it while the cores are busy, up to ``MAX_PENDING``, and a
    scene skips windows beyond that.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError, AttributeError):
            os.nice(19)
    fuser = WindowFuser()
    buffer = bytearray(MAX_MESSAGE)
    with contextlib.suppress(EOFError, KeyboardInterrupt, OSError), sock:
        sock.sendall(pickle.dumps(_STARTED))  # its imports are done: windows sent now are fused at once
        batch: Batch | None
        while (batch := _read(sock, buffer, 0)) is not None:
            reply: list[FusedWindow] = []
            size = 0
            for kind, args in batch:
                if kind == "configure":
                    fuser.configure(*args)
                    continue
                reply.append(fuser.fuse(*args))
                size += len(reply[-1].result) + 1024
                if size > REPLY_BYTES:
                    sock.sendall(pickle.dumps((reply, False), pickle.HIGHEST_PROTOCOL))
                    reply, size = [], 0
            sock.sendall(pickle.dumps((reply, True), pickle.HIGHEST_PROTOCOL))


def _read(sock: socket.socket, buffer: bytearray, flags: int) -> Any:
    """One message off a SOCK_SEQPACKET socket (one ``recv``: the socket keeps each message whole); ``EOFError``
    at the peer's end, ``BlockingIOError`` when ``flags`` has MSG_DONTWAIT and nothing waits."""
    size = sock.recv_into(buffer, 0, flags | socket.MSG_TRUNC)  # MSG_TRUNC: the message's whole size
    if size == 0:
        raise EOFError
    if size > len(buffer):
        raise OSError(f"a fusion message of {size} bytes is over {len(buffer)}")
    return pickle.loads(memoryview(buffer)[:size])


class ProcessFusion:
    """Fuses in one worker process (spawned: no forked gRPC state); replies are read on the event loop.

    One batch is in the worker's hands at a time: windows submitted meanwhile wait here and go as the next
    batch once the worker has answered. An idle worker gets each window at once; a busy one gets them a
    batch at a time, so that under load the two processes wake each other once per batch, not twice per window
    (a wake-up across cores costs the event loop tens of microseconds on a virtual machine: measured). A window
    waits no longer than it would in the socket: the worker fuses in order either way.
    """

    def __init__(self, on_fused: OnFused) -> None:
        self._on_fused = on_fused
        context = multiprocessing.get_context("spawn")
        # Messages kept whole: each read by one recv, each sent by one send that never blocks the event loop
        # (a multiprocessing Pipe polls, then reads a length and a body: three system calls a message).
        self._sock, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for end in (self._sock, child):
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        self._buffer = bytearray(MAX_MESSAGE)
        self._process = context.Process(target=_worker, args=(child,), name="posefleet-fusion", daemon=True)
        self._process.start()
        child.close()
        self._sizes: collections.deque[int] = collections.deque()  # bytes of each window in hand, in order
        self.pending_bytes = 0
        self._waiting: Batch = []  # commands for the next batch
        self._busy = False  # a batch is in the worker's hands
        self._alive = True
        self._started = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._readable)

    async def started(self, timeout: float) -> bool:
        """Wait until the worker has started (a spawned interpreter importing NumPy, SciPy and OpenCV: a
        second or more on a busy machine, in which a scene's first windows would be skipped)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._started.wait(), timeout)
        return self._started.is_set()

    def configure(self, scene: str, cameras: dict[str, Camera], params: FusionParams) -> None:
        self._command(("configure", (scene, cameras, params)))

    @property
    def pending(self) -> int:
        """Windows submitted and not answered yet."""
        return len(self._sizes)

    def ready(self) -> bool:
        return self.pending < MAX_PENDING and self.pending_bytes < MAX_PENDING_BYTES and self._alive

    def submit(self, window: bytes, t_ms: float, poses: PackedPoses) -> bool:
        size = len(window) + len(poses.data) + 256
        if not self._alive:
            return False
        if size > MAX_WINDOW_BYTES:
            log.warning("a window of %d KB is skipped (fusion takes at most %d KB)", size >> 10, MAX_WINDOW_BYTES >> 10)
            return False
        self._sizes.append(size)
        self.pending_bytes += size
        self._command(("fuse", (window, t_ms, poses)))
        return True

    def _command(self, command: tuple[str, tuple[Any, ...]]) -> None:
        if not self._alive:
            return
        self._waiting.append(command)
        if not self._busy:
            self._send_batch()

    def _send_batch(self) -> None:
        """The waiting commands to the worker, never blocking; one that died stops the scenes' fusion (windows
        skipped), never the caller."""
        batch, self._waiting = self._waiting, []
        try:
            self._sock.send(pickle.dumps(batch, pickle.HIGHEST_PROTOCOL), socket.MSG_DONTWAIT)
            self._busy = True
        except OSError as exc:  # BrokenPipeError: the worker is gone before its socket said so
            if exc.errno in (errno.EAGAIN, errno.EMSGSIZE):  # bounded by ``ready``: not seen
                log.warning("the fusion worker could not take %d commands: %s", len(batch), exc)
            else:
                self._dead()
            self._lost(batch)

    def _lost(self, batch: Batch) -> None:
        """Windows that never reached the worker leave the count in hand."""
        for kind, _ in batch:
            if kind == "fuse":
                self.pending_bytes -= self._sizes.pop()

    def _dead(self) -> None:
        if not self._alive:
            return
        log.error("the fusion worker died: scenes stop fusing, routing goes on")
        self._alive = False
        self._lost(self._waiting)
        self._waiting = []
        with contextlib.suppress(OSError, ValueError):
            self._loop.remove_reader(self._sock.fileno())

    def _readable(self) -> None:
        try:
            while True:
                reply: Any = _read(self._sock, self._buffer, socket.MSG_DONTWAIT)
                if reply == _STARTED:
                    self._started.set()
                    continue
                fused, last = reply
                for window in fused:
                    self.pending_bytes -= self._sizes.popleft()
                    self._on_fused(window)
                if last:
                    self._busy = False
                    if self._waiting:
                        self._send_batch()
        except BlockingIOError:  # all read
            pass
        except (EOFError, OSError, pickle.UnpicklingError):  # the worker died: routing goes on, fusion stops
            self._dead()

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._loop.remove_reader(self._sock.fileno())
            self._sock.send(pickle.dumps(None), socket.MSG_DONTWAIT)
        self._process.join(2.0)
        if self._process.is_alive():
            self._process.kill()
        self._sock.close()
