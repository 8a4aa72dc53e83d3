"""COCO keypoint evaluation (OKS AP/AR) of a model with pycocotools."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
from posefleet.node.engine.types import PoseResult

#: Names of COCOeval's keypoint summary, in its order.
STAT_NAMES = ("AP", "AP50", "AP75", "AP_M", "AP_L", "AR", "AR50", "AR75", "AR_M", "AR_L")


class Estimator(Protocol):
    def infer(self, image: Any) -> PoseResult: ...


@dataclass
class CocoReport:
    stats: dict[str, float]
    images: int
    detections: list[dict[str, Any]]
    summary: str


def detections_for(estimator: Estimator, annotations: Path, images_dir: Path) -> tuple[list[dict[str, Any]], int]:
    """Run the estimator on every image of the annotation file; COCO results format."""
    gt = json.loads(annotations.read_text())
    detections: list[dict[str, Any]] = []
    for info in gt["images"]:
        path = images_dir / info["file_name"]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"{path}: missing or unreadable image named in {annotations}")
        for pose in estimator.infer(image).poses:
            kps = pose.keypoints
            detections.append(
                {
                    "image_id": info["id"],
                    "category_id": 1,
                    "keypoints": [round(float(v), 3) for v in kps.reshape(-1)],
                    "score": float(pose.score),
                }
            )
    return detections, len(gt["images"])


def evaluate(estimator: Estimator, annotations: Path, images_dir: Path) -> CocoReport:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    detections, count = detections_for(estimator, annotations, images_dir)
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        coco_gt = COCO(str(annotations))
    if not detections:
        return CocoReport({name: 0.0 for name in STAT_NAMES}, count, [], "no detections")
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        coco_dt = coco_gt.loadRes(detections)
        evaluator = COCOeval(coco_gt, coco_dt, "keypoints")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = {name: float(v) for name, v in zip(STAT_NAMES, evaluator.stats, strict=True)}
    return CocoReport(stats, count, detections, summary.getvalue())
