"""Results as plain JSON-able dicts: one shape for the SDK's JSONL, the dashboard and MQTT."""

from __future__ import annotations

import math
from typing import Any

from posefleet.v1 import coordinator_pb2, pose_pb2


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
