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
import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Protocol

import numpy as np
from posefleet.common.keypoints import COCO_KEYPOINTS
from posefleet.coordinator.keypoint_arrays import PackedPoses
from posefleet.merge.calibration import Camera
from posefleet.merge.scene import FusionParams, Person3D, SceneFuser
from posefleet.v1 import coordinator_pb2, pose_pb2

log = logging.getLogger("posefleet.coordinator")

#: Windows a worker may have in hand, and their bytes; beyond either the scene skips windows. The pipe (a
#: socket pair) holds about 200 KB: a send must never block the event loop. 32 windows are 3 s of a scene at
#: 10 FPS, which rides out the seconds in which a machine's nodes and cameras fill its cores.
MAX_PENDING = 32
MAX_PENDING_BYTES = 128 * 1024
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
        out = coordinator_pb2.SceneResult()  # what fusion adds to the window: its people and its time
        errors: dict[str, list[float]] = {}
        persons = 0
        if fuser is not None:
            poses = packed.unpack()
            frame = fuser.fuse({c: p for c, p in poses.items() if c in fuser.cameras}, t_ms)
            for person in frame.persons:
                _person(out.persons.add(), person, results, fuser.names)
                for cam, err in person.camera_error_px.items():
                    errors.setdefault(cam, []).append(err)
            persons = len(frame.persons)
        out.fuse_ms = (time.perf_counter() - t0) * 1e3
        camera_errors = {c: sum(v) / len(v) for c, v in errors.items()}
        # Two messages' encodings concatenated parse as the two merged (the wire format's rule): the window's
        # views go back as they came, never serialized again.
        return FusedWindow(received.scene, window + out.SerializeToString(), persons, camera_errors, out.fuse_ms)


def _person(
    out: coordinator_pb2.Person3D, person: Person3D, views: dict[str, pose_pb2.PoseResult], names: list[str]
) -> None:
    out.id = person.id
    errors = np.where(np.isnan(person.error_px), 0.0, person.error_px).tolist()
    masks = (person.used.astype(np.int64) @ (1 << np.arange(len(names)))).tolist()  # each joint's cameras, as bits
    cameras: dict[int, list[str]] = {}
    for name, (x, y, z), score, count, error, mask in zip(
        COCO_KEYPOINTS,
        person.points.tolist(),
        person.score.tolist(),
        person.views.tolist(),
        errors,
        masks,
        strict=True,
    ):
        if mask not in cameras:
            cameras[mask] = [n for c, n in enumerate(names) if mask >> c & 1]
        out.joints.add(
            name=name, x=x, y=y, z=z, score=score, views=count, reprojection_error_px=error, cameras=cameras[mask]
        )
    for cam_id, index in sorted(person.cameras.items()):
        poses = views[cam_id].poses
        out.views.add(camera_id=cam_id, pose_index=index, track_id=poses[index].track_id if index < len(poses) else 0)


OnFused = Callable[[FusedWindow], None]


class Fusion(Protocol):
    """Where windows are fused; a window is submitted only when ``ready`` (else the scene skips it)."""

    def configure(self, scene: str, cameras: dict[str, Camera], params: FusionParams) -> None: ...

    def ready(self) -> bool: ...

    def submit(self, window: bytes, t_ms: float, poses: PackedPoses) -> None: ...


class InlineFusion:
    """Fuses in the caller's thread (tests, offline tools): ``on_fused`` runs before ``submit`` returns."""

    def __init__(self, on_fused: OnFused) -> None:
        self._fuser = WindowFuser()
        self._on_fused = on_fused

    def configure(self, scene: str, cameras: dict[str, Camera], params: FusionParams) -> None:
        self._fuser.configure(scene, cameras, params)

    def ready(self) -> bool:
        return True

    def submit(self, window: bytes, t_ms: float, poses: PackedPoses) -> None:
        self._on_fused(self._fuser.fuse(window, t_ms, poses))


def _worker(conn: Connection) -> None:
    """The worker process: configure and fuse messages in, ``FusedWindow`` out, in order, until the pipe closes.

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
    with contextlib.suppress(EOFError, KeyboardInterrupt):
        conn.send(_STARTED)  # its imports are done: windows sent now are fused at once
        while (message := conn.recv()) is not None:
            kind, args = message
            if kind == "configure":
                fuser.configure(*args)
            else:
                conn.send(fuser.fuse(*args))


class ProcessFusion:
    """Fuses in one worker process (spawned: no forked gRPC state); replies are read on the event loop."""

    def __init__(self, on_fused: OnFused) -> None:
        self._on_fused = on_fused
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_worker, args=(child,), name="posefleet-fusion", daemon=True)
        self._process.start()
        child.close()
        self._sizes: collections.deque[int] = collections.deque()  # bytes of each window in hand, in order
        self.pending_bytes = 0
        self._alive = True
        self._started = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._conn.fileno(), self._readable)

    async def started(self, timeout: float) -> bool:
        """Wait until the worker has started (a spawned interpreter importing NumPy, SciPy and OpenCV: a
        second or more on a busy machine, in which a scene's first windows would be skipped)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._started.wait(), timeout)
        return self._started.is_set()

    def configure(self, scene: str, cameras: dict[str, Camera], params: FusionParams) -> None:
        self._send(("configure", (scene, cameras, params)))

    @property
    def pending(self) -> int:
        """Windows sent and not answered yet."""
        return len(self._sizes)

    def ready(self) -> bool:
        return self.pending < MAX_PENDING and self.pending_bytes < MAX_PENDING_BYTES and self._alive

    def submit(self, window: bytes, t_ms: float, poses: PackedPoses) -> None:
        if not self._send(("fuse", (window, t_ms, poses))):
            return
        size = len(window) + len(poses.data) + 256
        self._sizes.append(size)
        self.pending_bytes += size

    def _send(self, message: tuple[str, tuple[Any, ...]]) -> bool:
        """Send to the worker; one that died stops the scenes' fusion (windows skipped), never the caller."""
        if not self._alive:
            return False
        try:
            self._conn.send(message)
        except (OSError, ValueError):  # BrokenPipeError: the worker is gone before its pipe said so
            self._dead()
            return False
        return True

    def _dead(self) -> None:
        log.error("the fusion worker died: scenes stop fusing, routing goes on")
        self._alive = False
        with contextlib.suppress(OSError, ValueError):
            self._loop.remove_reader(self._conn.fileno())

    def _readable(self) -> None:
        try:
            while self._conn.poll():
                fused: Any = self._conn.recv()
                if fused == _STARTED:
                    self._started.set()
                    continue
                self.pending_bytes -= self._sizes.popleft()
                self._on_fused(fused)
        except (EOFError, OSError):  # the worker died: scenes stop fusing (windows skipped), routing goes on
            self._dead()

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._loop.remove_reader(self._conn.fileno())
            self._conn.send(None)
        self._process.join(2.0)
        if self._process.is_alive():
            self._process.kill()
        self._conn.close()
