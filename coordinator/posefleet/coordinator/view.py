"""The fleet as plain data for people: cameras (stats, latest poses with track ids), nodes (health, model,
load, FPS), scenes (3D people and their reprojection on each camera). The dashboard and MQTT read it."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from posefleet.common.jsonview import poses_of, scene_to_dict
from posefleet.coordinator.consumers import ResultConsumer
from posefleet.v1 import coordinator_pb2, pose_pb2

if TYPE_CHECKING:
    from posefleet.coordinator.cameras import CameraStats
    from posefleet.coordinator.merging import Merger
    from posefleet.coordinator.registry import Registry


def _r(value: float, digits: int = 1) -> float | None:
    return round(value, digits) if math.isfinite(value) else None


class FleetView(ResultConsumer):
    """Builds the snapshot; keeps what a snapshot needs between calls (latest results, node FPS), bounded by
    the cameras and nodes the coordinator knows."""

    def __init__(self, cameras: dict[str, CameraStats], registry: Registry, merger: Merger) -> None:
        """``cameras``: the coordinator's table of camera stats (read, never changed here)."""
        self.cameras, self.registry, self.merger = cameras, registry, merger
        self.latest: dict[str, pose_pb2.PoseResult] = {}  # camera -> latest OK result (evicted with it)
        self._done: dict[str, tuple[float, int, float]] = {}  # node key -> (time, frames done, fps)

    def answered(self, result: pose_pb2.PoseResult) -> None:
        if result.status == pose_pb2.RESULT_STATUS_OK:
            self.latest[result.camera_id] = result

    def forget(self, camera: str) -> None:
        self.latest.pop(camera, None)

    def _node_fps(self, key: str, done: int) -> float:
        """Frames a node answered per second, over at least the last second."""
        now = time.monotonic()
        since, before, fps = self._done.setdefault(key, (now, done, 0.0))
        if now - since < 1.0:
            return fps
        fps = max(0.0, (done - before) / (now - since))
        self._done[key] = (now, done, fps)
        return fps

    def __call__(self) -> dict[str, Any]:
        cameras = []
        for camera, stats in sorted(self.cameras.items()):
            s = stats.to_proto()
            latest = self.latest.get(camera)
            cameras.append(
                {
                    "id": camera,
                    "input_fps": _r(s.input_fps),
                    "processed_fps": _r(s.processed_fps),
                    "ok": s.frames_ok,
                    "dropped": s.frames_dropped,
                    "failed": s.frames_failed,
                    "latency_p50_ms": _r(s.latency_p50_ms),
                    "latency_p99_ms": _r(s.latency_p99_ms),
                    "sequence": latest.sequence if latest is not None else None,
                    "width": latest.image_width if latest is not None else 0,
                    "height": latest.image_height if latest is not None else 0,
                    "poses": poses_of(latest) if latest is not None else [],
                    # a person is a tracked pose; the decoder's weak leftovers are not people
                    "people": sum(1 for p in latest.poses if p.track_id) if latest is not None else 0,
                }
            )
        nodes = []
        links = self.registry.links
        for gone in set(self._done) - set(links):
            del self._done[gone]
        for key, link in sorted(links.items()):
            nodes.append(
                {
                    "id": link.info.node_id or key,
                    "address": link.address,
                    "healthy": link.available,
                    "model": link.info.model_id,
                    "device": link.info.device,
                    "precision": link.info.precision,
                    "in_flight": link.credits.in_flight,
                    "capacity": link.credits.capacity,
                    "done": link.frames_done,
                    "failed": link.frames_failed,
                    "fps": _r(self._node_fps(key, link.frames_done)),
                    "last_error": link.last_error,
                }
            )
        scenes = [self._scene(name) for name in sorted(self.merger.scenes)]
        return {"time": time.time(), "cameras": cameras, "nodes": nodes, "scenes": scenes}

    def _scene(self, name: str) -> dict[str, Any]:
        scene = self.merger.scenes[name]
        out: dict[str, Any] = {
            "name": name,
            "cameras": sorted(scene.calibrated),
            "windows": scene.windows_done,
            "persons": [],
            "reprojections": {},
        }
        if scene.last_fused is None:
            return out
        out["persons"] = scene_to_dict(coordinator_pb2.SceneResult.FromString(scene.last_fused))["persons"]
        for camera, fitted in scene.fitted.items():  # each person's joints seen through each calibrated camera
            per_person = []
            for person in out["persons"]:
                joints = person["keypoints"]
                known = [[j["x"], j["y"], j["z"]] for j in joints if j["x"] is not None]
                projected = iter(fitted.project(np.asarray(known, np.float64)).tolist() if known else [])
                keypoints = []
                for joint in joints:  # the 2D pose shape; a joint not triangulated has score 0
                    x, y = next(projected) if joint["x"] is not None else (0.0, 0.0)
                    score = 1.0 if joint["x"] is not None else 0.0
                    keypoints.append({"name": joint["name"], "x": round(x, 1), "y": round(y, 1), "score": score})
                per_person.append({"track_id": person["id"], "keypoints": keypoints})
            width, height = fitted.image_size or fitted.size
            out["reprojections"][camera] = {"width": width, "height": height, "persons": per_person}
        return out
