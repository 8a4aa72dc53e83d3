"""``posefleet bench-merge``: what tracking and live 3D fusion cost the coordinator (in one process).

- fusion: one window of 4 cameras x 3 people (the lab calibration, synthetic people projected with 1 px of
  noise at a quarter of the calibrated size), timed as the coordinator fuses it (results in, SceneResult
  out) over many windows: p50 and p99.
- capacity: a real coordinator (gRPC server, camera sessions, routing, tracking) whose nodes are in-process
  loopback links answering at once with those people's 2D poses; 4 camera streams as fast as their credits
  allow, with and without the scene configured, in alternating rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
from posefleet.common.cli import positive_float, positive_int, report
from posefleet.common.keypoints import COCO_KEYPOINTS
from posefleet.common.paths import assets_dir
from posefleet.v1 import coordinator_pb2_grpc, pose_pb2

CAMS = {f"cam_0{i}": f"cam0{i}" for i in range(1, 5)}
SIZE = (272, 480)  # a quarter of the lab cameras' 1088x1920


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench-merge", help="cost of tracking and live 3D fusion in the coordinator")
    p.add_argument("--seconds", type=positive_float, default=3.0, help="per capacity round")
    p.add_argument("--rounds", type=positive_int, default=9, help="alternating rounds, without and with (medians)")
    p.add_argument("--windows", type=positive_int, default=3000, help="fusion windows timed")
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    p.set_defaults(func=cmd_bench_merge)


def _calibration() -> Path:
    assets = assets_dir()
    assert assets is not None
    return assets / "multiview" / "pose2sim" / "calibration" / "Calib_qualisys.toml"


class SyntheticScene:
    """Three people walking in the lab, seen by the four calibrated cameras at ``SIZE``."""

    def __init__(self) -> None:
        from posefleet.merge.calibration import load_calibration

        calibration = load_calibration(_calibration())
        self.cameras = {cam: calibration[calib].fit(*SIZE) for calib, cam in CAMS.items()}
        self.rng = np.random.default_rng(0)
        heights = np.array(
            [1.7, 1.73, 1.73, 1.7, 1.7, 1.45, 1.45, 1.15, 1.15, 0.9, 0.9, 0.95, 0.95, 0.5, 0.5, 0.08, 0.08]
        )
        side = np.array(
            [0, 0.03, -0.03, 0.08, -0.08, 0.2, -0.2, 0.3, -0.3, 0.35, -0.35, 0.12, -0.12, 0.13, -0.13, 0.14, -0.14]
        )
        self.body = np.stack([side, np.zeros(17), heights], axis=1)

    def people(self, t: float) -> list[np.ndarray]:
        spots = [(0.3 * np.cos(t), 0.4), (-0.9, -0.3 + 0.2 * np.sin(t)), (0.8, -0.8)]
        return [self.body + np.array([x, y, 0.0]) for x, y in spots]

    def poses(self, camera: str, t: float) -> list[np.ndarray]:
        cam = self.cameras[camera]
        out = []
        for person in self.people(t):
            xy = cam.project(person) + self.rng.normal(0, 1.0, (17, 2))
            out.append(np.concatenate([xy, np.full((17, 1), 0.9)], axis=1).astype(np.float32))
        return out

    def result(self, camera: str, seq: int, fps: float = 30.0) -> pose_pb2.PoseResult:
        out = pose_pb2.PoseResult(
            camera_id=camera, sequence=seq, status=pose_pb2.RESULT_STATUS_OK, image_width=SIZE[0], image_height=SIZE[1]
        )
        for kp in self.poses(camera, seq / fps):
            pose = out.poses.add(score=0.9)
            for name, (x, y, s) in zip(COCO_KEYPOINTS, kp.tolist(), strict=True):
                pose.keypoints.add(name=name, x=x, y=y, score=s)
        return out


#: Passes over the same windows, each with a fresh scene: a stall of this shared machine hits one pass of a
#: window, fusion's own work every pass (the p99 of each window's median over the passes is reported beside).
PASSES = 3


def fusion_times(windows: int) -> dict[str, float]:
    """Milliseconds the coordinator spends per window (``LiveScene``, fusing inline): its four results added
    (with their poses as arrays, as tracking hands them over: tracking's own cost is its ``track_ms``), the
    window serialized, fused, and its SceneResult out; ``windows`` in all, over ``PASSES`` passes."""
    from posefleet.coordinator.keypoint_arrays import keypoint_arrays
    from posefleet.coordinator.live_scene import LiveScene
    from posefleet.coordinator.settings import SceneSettings

    synthetic = SyntheticScene()
    start = time.time()
    results = [[synthetic.result(cam, i) for cam in CAMS.values()] for i in range(200)]
    arrays = [[keypoint_arrays(r) for r in window] for window in results]
    per_pass = max(1, windows // PASSES)
    times = np.zeros((PASSES, per_pass))
    fuse = np.zeros((PASSES, per_pass))
    persons: list[int] = []
    for k in range(PASSES):
        scene = LiveScene("bench", SceneSettings(calibration=_calibration(), cameras=CAMS))
        for i in range(per_pass):
            window = results[i % len(results)]
            for r in window:
                r.capture_time.FromNanoseconds(round((start + i / 30) * 1e9))
            t0 = time.perf_counter()
            for r, poses in zip(window, arrays[i % len(results)], strict=True):
                scene.add(r, poses)  # the last completes the window: fused now
            times[k, i] = (time.perf_counter() - t0) * 1e3
            fuse[k, i] = scene.fuse_ms[-1]  # the fusion step alone, as the scene's status reports it (fuse_p99_ms)
            persons.append(scene.last_persons)
    return {
        "p50_ms": float(np.percentile(fuse, 50)),
        "p99_ms": float(np.percentile(fuse, 99)),
        "p99_of_window_medians_ms": float(np.percentile(np.median(fuse, axis=0), 99)),
        "window_p50_ms": float(np.percentile(times, 50)),
        "window_p99_ms": float(np.percentile(times, 99)),
        "persons_mean": float(np.mean(persons)),
        "windows": per_pass * PASSES,
    }


async def _capacity(with_scene: bool, seconds: float) -> tuple[float, int, int]:
    """Frames/s through the coordinator, and the windows fused and skipped meanwhile."""
    from posefleet.bench.loopback import LoopbackLink
    from posefleet.coordinator.server import CoordinatorServer
    from posefleet.coordinator.settings import CoordinatorSettings, SceneSettings

    synthetic = SyntheticScene()
    scenes = {"bench": SceneSettings(calibration=_calibration(), cameras=CAMS)} if with_scene else {}
    LoopbackLink.nodes = {f"n{i}": {"capacity": 64, "answer": _answer(synthetic)} for i in range(2)}
    settings = CoordinatorSettings(
        host="127.0.0.1", port=0, discover=False, camera_queue=64, drop_policy="block", scenes=scenes, insecure=True
    )
    server = CoordinatorServer(settings, link_factory=LoopbackLink)
    await server.start()
    for key in LoopbackLink.nodes:
        server.registry.add(key, f"loopback-{key}", "static")
    import grpc

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = coordinator_pb2_grpc.CoordinatorStub(channel)
            for _ in range(500):  # the loopback links join within milliseconds
                if all(link.available for link in server.registry.links.values()):
                    break
                await asyncio.sleep(0.01)
            counts = [0]
            await _streams(stub, min(1.0, seconds), [0])  # warm-up
            start = time.perf_counter()
            await _streams(stub, seconds, counts)
            fps = counts[0] / (time.perf_counter() - start)
            await asyncio.sleep(0.3)  # the last windows come back
            live = list(server.service.merger.scenes.values())
            fused = sum(scene.windows_done for scene in live)
            skipped = sum(scene.skipped for scene in live)
            return fps, fused, skipped
    finally:
        await server.stop()


def _answer(synthetic: SyntheticScene) -> Any:
    """Answers made beforehand (30 frames of motion per camera), so the loopback node costs next to nothing."""
    made = {cam: [synthetic.result(cam, i).SerializeToString() for i in range(30)] for cam in CAMS.values()}
    turn = dict.fromkeys(CAMS.values(), 0)

    def answer(link: Any, frame: pose_pb2.Frame) -> pose_pb2.PoseResult:
        turn[frame.camera_id] = (turn[frame.camera_id] + 1) % 30
        result = pose_pb2.PoseResult.FromString(made[frame.camera_id][turn[frame.camera_id]])
        result.sequence = frame.sequence  # the link's tag; the coordinator restores the camera's identity
        return result

    return answer


async def _streams(
    stub: coordinator_pb2_grpc.CoordinatorStub, seconds: float, counts: list[int], stop: asyncio.Event | None = None
) -> None:
    """Four cameras streaming for ``seconds`` (or until ``stop`` is set), 16 frames in flight each; ``counts[0]``
    counts the OK results."""
    image = pose_pb2.Image(encoding=pose_pb2.IMAGE_ENCODING_JPEG, data=b"\xff\xd8bench")
    until = time.perf_counter() + seconds
    epoch = time.time()

    async def camera(cam: str) -> None:
        credits = asyncio.Semaphore(16)

        async def frames() -> AsyncIterator[pose_pb2.Frame]:
            seq = 0
            while time.perf_counter() < until and not (stop is not None and stop.is_set()):
                await credits.acquire()
                frame = pose_pb2.Frame(camera_id=cam, sequence=seq, image=image)
                frame.capture_time.FromNanoseconds(round((epoch + seq / 30) * 1e9))
                yield frame
                seq += 1

        async for result in stub.StreamCamera(frames()):
            credits.release()
            counts[0] += result.status == pose_pb2.RESULT_STATUS_OK

    await asyncio.gather(*(camera(cam) for cam in CAMS.values()))


def bench(seconds: float, rounds: int, windows: int) -> dict[str, Any]:
    fusion = fusion_times(windows)
    without, with_scene, fused, skipped = [], [], [], []
    for _ in range(rounds):
        without.append(asyncio.run(_capacity(False, seconds))[0])
        fps, done, missed = asyncio.run(_capacity(True, seconds))
        with_scene.append(fps)
        fused.append(done)
        skipped.append(missed)
    a, b = statistics.median(without), statistics.median(with_scene)
    return {
        "fusion": fusion,
        "windows": {"fused": fused, "skipped": skipped},
        "capacity": {
            "tracking_only_fps": a,
            "with_fusion_fps": b,
            "ratio": b / a,
            # Each round with the scene runs seconds after its round without: the pair sees one phase of a
            # machine whose speed drifts by minutes (shared hosts), where the medians of each side mix phases.
            "paired_ratio": statistics.median(w / o for w, o in zip(with_scene, without, strict=True)),
            "rounds_without": without,
            "rounds_with": with_scene,
        },
    }


def markdown(report: dict[str, Any]) -> str:
    f, c = report["fusion"], report["capacity"]
    return (
        "| measure | value |\n|---|---:|\n"
        f"| fusion per window, 4 cameras x 3 people (the fusion step: the scene status's fuse_p99_ms): p50 / p99 / "
        f"p99 of each window's median over {PASSES} passes | {f['p50_ms']:.2f} / {f['p99_ms']:.2f} / "
        f"{f['p99_of_window_medians_ms']:.2f} ms |\n"
        f"| the coordinator's whole work per window, fusing inline (4 results added, the window serialized, fused, "
        f"SceneResult out): p50 / p99 | {f['window_p50_ms']:.2f} / {f['window_p99_ms']:.2f} ms |\n"
        f"| 3D people per window (of 3) | {f['persons_mean']:.2f} |\n"
        f"| routing capacity, tracking only (in-process loopback nodes, 4 cameras) | {c['tracking_only_fps']:.0f} "
        "frames/s |\n"
        f"| routing capacity with the scene fused live | {c['with_fusion_fps']:.0f} frames/s |\n"
        f"| with fusion / without: the median of the alternating pairs' ratios (the ratio of the medians) | "
        f"{c['paired_ratio']:.0%} ({c['ratio']:.0%}) |\n"
        f"| windows fused / skipped at that rate (fusion runs at a lower priority than routing) | "
        f"{sum(report['windows']['fused'])} / {sum(report['windows']['skipped'])} |\n"
    )


def cmd_bench_merge(args: argparse.Namespace) -> int:
    result = bench(args.seconds, args.rounds, args.windows)
    report(args, markdown(result), result)
    return 0
