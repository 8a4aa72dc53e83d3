"""The real models in ``$POSEFLEET_ASSETS`` that benchmarks and tests convert (one table for both)."""

from __future__ import annotations

from dataclasses import dataclass

Size = tuple[int, int]


@dataclass(frozen=True)
class AssetModel:
    #: Path below the assets folder.
    path: str
    #: Input sizes of ``bench --all`` (``None``: the model's own fixed size).
    bench_sizes: tuple[Size | None, ...]
    #: Input sizes of ``bench --all --node`` (empty: not in the node benchmark).
    node_bench_sizes: tuple[Size | None, ...] = ()
    #: ``bench --all`` also measures an NNCF INT8 twin (calibrated on the assets' photos and clip).
    int8: bool = False


ASSET_MODELS: dict[str, AssetModel] = {
    "posenet050": AssetModel(
        "models/posenet/mobilenet_v1_050/model-mobilenet_v1_050.pb",
        ((257, 257), (353, 481)),
        ((257, 257), (353, 481)),
        int8=True,
    ),
    "posenet075": AssetModel(
        "models/posenet/tfjs_v1/mobilenet_v1_075", ((257, 257), (353, 481)), ((257, 257), (353, 481)), int8=True
    ),
    "coral353": AssetModel("models/posenet/coral_tflite/posenet_mobilenet_v1_075_353_481_quant.tflite", (None,)),
    "coral481": AssetModel("models/posenet/coral_tflite/posenet_mobilenet_v1_075_481_641_quant.tflite", (None,)),
    "hpe": AssetModel("models/human-pose-estimation-0001/FP16-INT8", (None,), (None,)),
    "movenet": AssetModel("models/movenet/lite-model_movenet_singlepose_lightning_tflite_int8_4.tflite", (None,)),
    # AGPL-3.0 weights: tested and benchmarked against, never bundled (users bring their own export).
    "yolo": AssetModel("models/yolov8n-pose/yolov8n-pose_int8_openvino_model", ((640, 640),)),
}
