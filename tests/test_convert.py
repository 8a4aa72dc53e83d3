"""Every conversion path on the real assets, and the errors a user can cause."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from posefleet.common.keypoints import COCO_KEYPOINTS
from posefleet.node.convert import ConversionError, convert, detect_format, posenet_tfjs
from posefleet.node.engine.card import load_card
from posefleet.node.engine.runtime import EngineError, EngineOptions, PoseEngine
from posefleet.node.tools.media import read_image


def test_frozen_graph(assets: Path, tmp_path: Path) -> None:
    card = convert(assets / "models/posenet/mobilenet_v1_050/model-mobilenet_v1_050.pb", tmp_path / "m")
    assert card.family == "posenet" and card.model_id == "posenet-mobilenet-v1-050-s16"
    assert card.output_stride == 16 and card.precision == "FP16" and card.input.size is None
    assert card.source.format == "tf-frozen" and len(card.source.sha256) == 64
    assert load_card(tmp_path / "m") == card
    assert card.keypoints == list(COCO_KEYPOINTS)


def test_tfjs_checkpoint_fixed_size(assets: Path, tmp_path: Path) -> None:
    card = convert(assets / "models/posenet/tfjs_v1/mobilenet_v1_075", tmp_path / "m", input_size=(257, 257))
    assert card.model_id == "posenet-mobilenet-v1-075-s16" and card.input.size == (257, 257)
    assert card.source.format == "tfjs"
    engine = PoseEngine(tmp_path / "m")
    assert engine.input_size == (257, 257)
    with pytest.raises(Exception, match="fixed input size"):
        PoseEngine(tmp_path / "m", EngineOptions(input_size=(353, 481)))


def test_tfjs_stride_8_and_unsupported_32(assets: Path, tmp_path: Path) -> None:
    card = convert(assets / "models/posenet/tfjs_v1/mobilenet_v1_075", tmp_path / "s8", stride=8)
    assert card.output_stride == 8
    out = PoseEngine(tmp_path / "s8", EngineOptions(input_size=(257, 257))).infer_raw(
        np.zeros((1, 257, 257, 3), np.uint8)
    )
    assert out["heatmap"].shape == (1, 33, 33, 17)
    with pytest.raises(ConversionError, match="supports output stride 8 or 16"):
        convert(assets / "models/posenet/tfjs_v1/mobilenet_v1_075", tmp_path / "s32", stride=32)
    assert not (tmp_path / "s32").exists()


def _synthetic_checkpoint(directory: Path, multiplier: float) -> None:
    """A random checkpoint with the real variable names and shapes of another multiplier.

    Only 0.75 weights are in the assets; 0.50/1.00/1.01 share the format, so the builder's
    architecture tables are checked on random weights of the right shapes.
    """
    rng = np.random.default_rng(0)
    widths = [32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
    ch = [max(8, int(w * multiplier)) for w in widths]
    manifest = {}

    def put(name: str, shape: tuple[int, ...]) -> None:
        fname = name.replace("/", "_")
        (rng.standard_normal(shape).astype("<f4") * 0.05).tofile(directory / fname)
        manifest[name] = {"filename": fname, "shape": list(shape)}

    directory.mkdir(parents=True)
    put("MobilenetV1/Conv2d_0/weights", (3, 3, 3, ch[0]))
    put("MobilenetV1/Conv2d_0/biases", (ch[0],))
    for i in range(1, 14):
        put(f"MobilenetV1/Conv2d_{i}_depthwise/depthwise_weights", (3, 3, ch[i - 1], 1))
        put(f"MobilenetV1/Conv2d_{i}_depthwise/biases", (ch[i - 1],))
        put(f"MobilenetV1/Conv2d_{i}_pointwise/weights", (1, 1, ch[i - 1], ch[i]))
        put(f"MobilenetV1/Conv2d_{i}_pointwise/biases", (ch[i],))
    for head, n in (
        ("heatmap_2", 17),
        ("offset_2", 34),
        ("displacement_fwd_2", 32),
        ("displacement_bwd_2", 32),
    ):
        put(f"MobilenetV1/{head}/weights", (1, 1, ch[13], n))
        put(f"MobilenetV1/{head}/biases", (n,))
    (directory / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("variant", "multiplier", "stride", "grid"),
    [
        ("050", 0.5, 8, 33),
        ("050", 0.5, 16, 17),
        ("100", 1.0, 8, 33),
        ("100", 1.0, 16, 17),
        ("101", 1.0, 32, 9),
    ],
)
def test_tfjs_every_multiplier_and_stride(
    tmp_path: Path, variant: str, multiplier: float, stride: int, grid: int
) -> None:
    src = tmp_path / f"mobilenet_v1_{variant}"
    _synthetic_checkpoint(src, multiplier)
    card = convert(src, tmp_path / "out", stride=stride, input_size=(257, 257), precision="FP32")
    assert card.model_id == f"posenet-mobilenet-v1-{variant}-s{stride}"
    out = PoseEngine(tmp_path / "out").infer_raw(np.zeros((1, 257, 257, 3), np.uint8))
    assert out["heatmap"].shape == (1, grid, grid, 17)
    assert out["displacement_bwd"].shape == (1, grid, grid, 32)


def test_tflite(assets: Path, tmp_path: Path) -> None:
    src = assets / "models/posenet/coral_tflite/posenet_mobilenet_v1_075_353_481_quant.tflite"
    card = convert(src, tmp_path / "m")
    assert card.input.size == (353, 481) and card.input.element_type == "u8" and card.output_stride == 16
    out = PoseEngine(tmp_path / "m").infer_raw(np.full((1, 353, 481, 3), 128, np.uint8))
    heat = out["heatmap"]
    assert heat.dtype == np.float32 and heat.shape == (1, 23, 31, 17)
    assert heat.min() >= 0.0 and heat.max() <= 1.0  # dequantised logits through a sigmoid
    # Dequantisation uses the model's own (scale, zero point): displacements reach tens of pixels.
    assert out["displacement_fwd"].shape == (1, 23, 31, 32) and np.abs(out["displacement_fwd"]).max() > 10
    with pytest.raises(ConversionError, match="fixed input size 353x481"):
        convert(src, tmp_path / "bad", input_size=(257, 257))


def test_openvino_ir_is_validated_and_copied(assets: Path, tmp_path: Path) -> None:
    src = assets / "models/human-pose-estimation-0001/FP16-INT8"
    card = convert(src, tmp_path / "m")
    assert card.family == "openpose" and card.input.size == (256, 456) and card.output_stride == 8
    assert card.precision == "FP16-INT8" and card.outputs == {
        "pafs": "Mconv7_stage2_L1",
        "heatmaps": "Mconv7_stage2_L2",
    }
    assert (tmp_path / "m/model.bin").read_bytes() == (src / "human-pose-estimation-0001.bin").read_bytes()


def test_fp16_and_fp32_agree_within_a_pixel(assets: Path, tmp_path: Path) -> None:
    src = assets / "models/posenet/tfjs_v1/mobilenet_v1_075"
    convert(src, tmp_path / "fp16", precision="FP16")
    card32 = convert(src, tmp_path / "fp32", precision="FP32")
    assert card32.precision == "FP32"
    assert (tmp_path / "fp32/model.bin").stat().st_size > 1.9 * (tmp_path / "fp16/model.bin").stat().st_size

    distances = []
    for name in ("pose.jpg",):
        image = read_image(assets / "video" / name)
        a = PoseEngine(tmp_path / "fp16").infer(image).poses[0].keypoints
        b = PoseEngine(tmp_path / "fp32").infer(image).poses[0].keypoints
        distances.extend(np.linalg.norm(a[:, :2] - b[:, :2], axis=1).tolist())
    for name in ("multi_skiing.jpg", "two_on_bench.jpg", "tennis.jpg"):
        image = read_image(assets / "images" / name)
        a = PoseEngine(tmp_path / "fp16").infer(image).poses[0].keypoints
        b = PoseEngine(tmp_path / "fp32").infer(image).poses[0].keypoints
        distances.extend(np.linalg.norm(a[:, :2] - b[:, :2], axis=1).tolist())
    assert float(np.median(distances)) < 1.0


# -- errors ---------------------------------------------------------------------------------------


@pytest.fixture
def tfjs_copy(assets: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "mobilenet_v1_075"
    shutil.copytree(assets / "models/posenet/tfjs_v1/mobilenet_v1_075", dst)
    return dst


def _assert_no_outdir(tmp_path: Path, name: str = "out") -> None:
    assert not (tmp_path / name).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".{name}.")]


def test_missing_weight_file(tfjs_copy: Path, tmp_path: Path) -> None:
    (tfjs_copy / "MobilenetV1_Conv2d_7_pointwise_weights").unlink()
    with pytest.raises(
        ConversionError,
        match=r"MobilenetV1_Conv2d_7_pointwise_weights.*MobilenetV1/Conv2d_7_pointwise/weights is missing",
    ):
        convert(tfjs_copy, tmp_path / "out")
    _assert_no_outdir(tmp_path)


def test_truncated_weight_file(tfjs_copy: Path, tmp_path: Path) -> None:
    path = tfjs_copy / "MobilenetV1_heatmap_2_weights"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ConversionError, match=r"heatmap_2/weights has 1000 bytes, expected 26112 .*truncated"):
        convert(tfjs_copy, tmp_path / "out")
    _assert_no_outdir(tmp_path)


def test_shape_mismatch(tfjs_copy: Path, tmp_path: Path) -> None:
    manifest = json.loads((tfjs_copy / "manifest.json").read_text())
    manifest["MobilenetV1/Conv2d_3_depthwise/depthwise_weights"]["shape"] = [3, 3, 1, 96]
    (tfjs_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        ConversionError,
        match=r"Conv2d_3_depthwise/depthwise_weights has shape \[3, 3, 1, 96\], expected \[3, 3, 96, 1\]",
    ):
        convert(tfjs_copy, tmp_path / "out")
    _assert_no_outdir(tmp_path)


def test_missing_variable_in_manifest(tfjs_copy: Path, tmp_path: Path) -> None:
    manifest = json.loads((tfjs_copy / "manifest.json").read_text())
    del manifest["MobilenetV1/offset_2/biases"]
    (tfjs_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConversionError, match="variable MobilenetV1/offset_2/biases is missing from the manifest"):
        convert(tfjs_copy, tmp_path / "out")


def test_unknown_format_and_unreadable_files(tmp_path: Path) -> None:
    junk = tmp_path / "weights.bin"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ConversionError, match="unknown model format"):
        convert(junk, tmp_path / "out")
    with pytest.raises(ConversionError, match="no such file"):
        detect_format(tmp_path / "nope.pb")
    garbage = tmp_path / "model.pb"
    garbage.write_bytes(b"this is not a protobuf" * 10)
    root = logging.getLogger()
    before = root.level, list(root.handlers)
    with pytest.raises(ConversionError, match=r"model.pb: cannot read TensorFlow frozen graph"):
        convert(garbage, tmp_path / "out")
    assert (root.level, root.handlers) == before, "a failed ov.convert_model leaves the process's logging as it was"
    fake = tmp_path / "fake.tflite"
    fake.write_bytes(b"\x00" * 32)
    with pytest.raises(ConversionError, match="not a TFLite flatbuffer"):
        convert(fake, tmp_path / "out")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(ConversionError, match="unknown model format"):
        convert(tmp_path / "emptydir", tmp_path / "out")
    _assert_no_outdir(tmp_path)


def test_truncated_frozen_graph_and_tflite(assets: Path, tmp_path: Path) -> None:
    pb = tmp_path / "model-mobilenet_v1_050.pb"
    pb.write_bytes((assets / "models/posenet/mobilenet_v1_050/model-mobilenet_v1_050.pb").read_bytes()[:50000])
    with pytest.raises(ConversionError, match=r"model-mobilenet_v1_050\.pb"):
        convert(pb, tmp_path / "out")
    tfl = tmp_path / "posenet.tflite"
    tfl.write_bytes(
        (assets / "models/posenet/coral_tflite/posenet_mobilenet_v1_075_353_481_quant.tflite").read_bytes()[:4096]
    )
    with pytest.raises(ConversionError, match=r"posenet\.tflite"):
        convert(tfl, tmp_path / "out")
    _assert_no_outdir(tmp_path)


def test_truncated_ir_bin(assets: Path, tmp_path: Path) -> None:
    src = tmp_path / "FP16"
    src.mkdir()
    ir = assets / "models/human-pose-estimation-0001/FP16-INT8"
    shutil.copy(ir / "human-pose-estimation-0001.xml", src)
    (src / "human-pose-estimation-0001.bin").write_bytes((ir / "human-pose-estimation-0001.bin").read_bytes()[:100000])
    with pytest.raises(ConversionError, match=r"human-pose-estimation-0001\.xml: invalid OpenVINO IR"):
        convert(src, tmp_path / "out")
    (src / "human-pose-estimation-0001.bin").unlink()
    with pytest.raises(ConversionError, match=r"human-pose-estimation-0001.bin: missing"):
        convert(src, tmp_path / "out")
    _assert_no_outdir(tmp_path)


def test_bad_input_size_and_foreign_outdir(assets: Path, tmp_path: Path) -> None:
    src = assets / "models/posenet/tfjs_v1/mobilenet_v1_075"
    with pytest.raises(ConversionError, match=r"nearest valid: 305x305"):
        convert(src, tmp_path / "out", input_size=(300, 300))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ConversionError, match="refusing to overwrite"):
        convert(src, foreign)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_reconvert_replaces_previous_model(assets: Path, tmp_path: Path) -> None:
    src = assets / "models/posenet/tfjs_v1/mobilenet_v1_075"
    convert(src, tmp_path / "m", input_size=(257, 257))
    card = convert(src, tmp_path / "m", input_size=(353, 481))
    assert load_card(tmp_path / "m").input.size == (353, 481) == card.input.size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_strided_layers_match_tfjs_tables() -> None:
    # 1.00 at stride 16: Conv2d_12 stops downsampling and Conv2d_13 dilates by 2.
    layers = posenet_tfjs._strided_layers(1.0, 16)
    assert layers[12] == (1, 1) and layers[13] == (1, 2)
    # 0.75 at stride 8: Conv2d_6 keeps its resolution and every later block dilates by 2.
    assert posenet_tfjs._strided_layers(0.75, 8)[6:] == [(1, 1)] + [(1, 2)] * 7


def test_ultralytics_export_converts_and_a_folder_without_metadata_is_refused(assets: Path, tmp_path: Path) -> None:
    src = assets / "models/yolov8n-pose/yolov8n-pose_int8_openvino_model"
    card = convert(src, tmp_path / "yolo")
    assert card.family == "yolo-pose" and card.input.size is None and card.input.size_multiple == 32
    assert (
        card.input.default_size == (640, 640)
        and card.input.resize == "letterbox"
        and card.source.format == "ultralytics"
    )
    engine = PoseEngine(tmp_path / "yolo", EngineOptions(input_size=(480, 640)))
    poses = engine.infer(read_image(assets / "images" / "two_on_bench.jpg")).poses
    assert len(poses) >= 2 and all(p.keypoints.shape == (17, 3) for p in poses) and poses[0].score > 0.5
    with pytest.raises(EngineError, match="each side must be k\\*32\\+0"):
        PoseEngine(tmp_path / "yolo", EngineOptions(input_size=(500, 640)))
    bare = tmp_path / "bare_openvino_model"
    bare.mkdir()
    for f in src.glob("yolov8n-pose.*"):
        (bare / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ConversionError, match=r"bare_openvino_model: no metadata\.yaml"):
        convert(bare, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def ultralytics_onnx(path: Path, metadata: dict[str, object], size: tuple[int, int] | None = None) -> Path:
    """An ONNX file shaped like an Ultralytics pose export (``images`` in, ``output0`` of 56 x 8 anchors out, the
    exporter's ``metadata_props``) whose one person is fixed: anchor 0 at (160, 160), 100 x 200, score 0.9, keypoint
    k at (150 + 3k, 80 + 8k) in network pixels. Built here: there is no real ONNX export among the assets."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out = np.zeros((1, 56, 8), np.float32)
    out[0, :5, 0] = 160, 160, 100, 200, 0.9
    for k in range(17):
        out[0, 5 + 3 * k : 8 + 3 * k, 0] = 150 + 3 * k, 80 + 8 * k, 0.8
    dims: list[int | str] = [1, 3, *size] if size else [1, 3, "height", "width"]
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["images"], ["mean"], axes=[0, 1, 2, 3], keepdims=0),
            helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
            helper.make_node("Add", ["person", "nothing"], ["output0"]),
        ],
        "pose",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 56, 8])],
        [numpy_helper.from_array(np.zeros((), np.float32), "zero"), numpy_helper.from_array(out, "person")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    for key, value in metadata.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, str(value)  # as Ultralytics' exporter writes them
    onnx.save(model, str(path))
    return path


def test_ultralytics_onnx_export_reads_its_own_metadata(tmp_path: Path) -> None:
    meta = {"task": "pose", "stride": 32, "imgsz": [320, 320], "kpt_shape": [17, 3], "names": {0: "person"}}
    card = convert(ultralytics_onnx(tmp_path / "yolo11n-pose.onnx", meta), tmp_path / "m")
    assert card.family == "yolo-pose" and card.source.format == "ultralytics" and card.model_id == "yolo11n-pose"
    assert card.input.size is None and card.input.default_size == (320, 320) and card.input.resize == "letterbox"
    poses = PoseEngine(tmp_path / "m").infer(np.zeros((240, 320, 3), np.uint8)).poses
    assert len(poses) == 1 and poses[0].score == pytest.approx(0.9, abs=1e-3)  # FP16 IR
    expected = [(150 + 3 * k, 80 + 8 * k - 40) for k in range(17)]  # letterboxed: 40 px of grey above the image
    np.testing.assert_allclose(poses[0].keypoints[:, :2], expected, atol=0.5)

    fixed = convert(ultralytics_onnx(tmp_path / "fixed.onnx", meta, size=(320, 320)), tmp_path / "f")
    assert fixed.input.size == (320, 320)  # exported without dynamic=True
    with pytest.raises(ConversionError, match=r"fixed input 320x320; export it with dynamic=True"):
        convert(tmp_path / "fixed.onnx", tmp_path / "f640", input_size=(640, 640))
    detect = ultralytics_onnx(tmp_path / "detect.onnx", {**meta, "task": "detect", "kpt_shape": None})
    with pytest.raises(ConversionError, match=r"detect\.onnx: not a 17-keypoint pose model \(task 'detect'"):
        convert(detect, tmp_path / "d")
    with pytest.raises(ConversionError, match=r"plain\.onnx: no Ultralytics metadata in the file"):
        convert(ultralytics_onnx(tmp_path / "plain.onnx", {}), tmp_path / "p")
    assert not (tmp_path / "f640").exists() and not (tmp_path / "d").exists() and not (tmp_path / "p").exists()


def test_movenet_tflite_converts_keeps_a_crop_per_stream_and_an_impostor_is_refused(
    assets: Path, tmp_path: Path
) -> None:
    card = convert(
        assets / "models/movenet/lite-model_movenet_singlepose_lightning_tflite_int8_4.tflite", tmp_path / "m"
    )
    assert card.family == "movenet" and card.input.size == (192, 192) and card.input.element_type == "u8"
    engine = PoseEngine(tmp_path / "m")
    image = read_image(assets / "video" / "pose.jpg")
    (alone,) = engine.infer(image).poses
    engine.infer(image, "cam-a")
    (followed,) = engine.infer(image, "cam-a").poses  # the second frame of a stream is cropped around the person
    crops = engine.model._crops  # type: ignore[attr-defined]
    assert set(crops) == {"cam-a"} and crops["cam-a"][0][2] < max(image.shape[:2])
    assert np.abs(followed.keypoints[:, :2] - alone.keypoints[:, :2]).mean() < 25
    engine.infer(image, "cam-b")
    assert set(crops) == {"cam-a", "cam-b"}
    crops["cam-a"] = (crops["cam-a"][0], crops["cam-a"][1] - 60)  # a stream quiet for a minute expires
    engine.infer(image, "cam-b")
    assert set(crops) == {"cam-b"}
    impostor = tmp_path / "movenet_not_really.tflite"
    impostor.write_bytes(
        (assets / "models/posenet/coral_tflite/posenet_mobilenet_v1_075_353_481_quant.tflite").read_bytes()
    )
    with pytest.raises(ConversionError, match=r"movenet_not_really\.tflite: not a MoveNet SinglePose model"):
        convert(impostor, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_int8_post_training_quantisation_records_its_calibration_set(assets: Path, tmp_path: Path) -> None:
    card = convert(
        assets / "models/posenet/tfjs_v1/mobilenet_v1_075",
        tmp_path / "q",
        input_size=(257, 257),
        precision="INT8",
        calibration=[assets / "images", assets / "video" / "pose_1.mp4"],
        calibration_size=40,
    )
    assert card.precision.startswith("INT8 (NNCF") and card.quantization is not None
    assert card.quantization.samples == 40 and len(card.quantization.sha256) == 64
    assert any(s.endswith("pose_1.mp4") for s in card.quantization.sources)
    assert load_card(tmp_path / "q").quantization == card.quantization
    xml = (tmp_path / "q" / "model.xml").read_text()
    assert "FakeQuantize" in xml or "fake_quantize" in xml.lower()
    poses = PoseEngine(tmp_path / "q").infer(read_image(assets / "video" / "pose.jpg")).poses
    assert poses and poses[0].score > 0.5
    coral = convert(
        assets / "models/posenet/coral_tflite/posenet_mobilenet_v1_075_353_481_quant.tflite",
        tmp_path / "c",
        precision="INT8",
        calibration=[assets / "images"],
    )
    assert coral.quantization is None and coral.precision.startswith("INT8 (TFLite uint8")  # not quantised twice


def test_int8_ceiling_bench_measures_the_kernels_it_names(assets: Path, tmp_path: Path) -> None:
    """``bench --int8-ceiling``: each figure's convolutions really ran in the precision its column names."""
    import openvino as ov
    from nodes import integer_kernels, run_cli
    from posefleet.bench.precision import measure_models

    default = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()  # bf16 on CPUs with it
    source = assets / "models/posenet/tfjs_v1/mobilenet_v1_075"
    convert(source, tmp_path / "f", input_size=(257, 257))
    calibration = [assets / "images"]
    convert(source, tmp_path / "q", input_size=(257, 257), precision="INT8", calibration=calibration)
    image = read_image(assets / "video" / "pose.jpg")
    row = measure_models(tmp_path / "f", tmp_path / "q", image, None, frames=20, seconds=1)
    assert row.workload == "posenet-mobilenet-v1-075-s16 at 257x257"
    assert {name: run.kernels.lower() for name, run in row.runs.items() if name != "INT8"} == {
        "f32": "f32",
        "default": default.lower(),
    }
    assert integer_kernels(row.runs["INT8"].kernels)
    assert all(run.fps > 0 for run in row.runs.values())
    done = run_cli("bench", "--int8-ceiling", "--frames", "20", "--seconds", "1", "--json", tmp_path / "c.json")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "c.json").read_text())
    assert f"default inference precision {default}" in report["device"]
    rows = report["rows"]
    kernels = [(r["workload"].split()[0], r["f32_kernels"].lower(), r["default_kernels"].lower()) for r in rows]
    assert kernels == [("pointwise", "f32", default.lower()), ("depthwise", "f32", default.lower())]
    assert all(integer_kernels(r["INT8_kernels"]) for r in rows)


def test_validate_records_whether_the_faster_precision_keeps_the_accuracy(assets: Path, tmp_path: Path) -> None:
    """``convert --validate`` measures the CPU's own precision against f32 and records it in the card; a CPU runs
    the model in its own precision by default only with a passing check (f32 otherwise, or where f32 is its own)."""
    import openvino as ov
    from nodes import run_cli
    from posefleet.node.engine.card import PrecisionCheck

    fast = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string().lower()
    coco: list[str | Path] = [assets / "coco/person_keypoints_val2017_4img.json", "--images", assets / "coco/images"]
    source = assets / "models/posenet/tfjs_v1/mobilenet_v1_075"
    done = run_cli("convert", source, "-o", tmp_path / "m", "--input-size", "257x257", "--validate", *coco)
    assert done.returncode == 0, done.stderr
    card = load_card(tmp_path / "m")
    if fast == "f32":  # nothing faster to check on this CPU
        assert card.precision_checks == [] and PoseEngine(tmp_path / "m").kernels.lower() == "f32"
        return
    (check,) = card.precision_checks
    assert check.precision == fast and check.metric.startswith("COCO AP") and 0.1 < check.f32 < 1  # 257x257: a low AP
    assert f"COCO AP in f32 {check.f32:.3f}, in {fast} {check.value:.3f}" in done.stdout
    expected = fast if check.keeps_accuracy else "f32"
    assert PoseEngine(tmp_path / "m").kernels.lower() == expected
    # Either verdict, written by hand: the default follows the card, an explicit precision overrides it.
    for keeps, kernels in ((True, fast), (False, "f32")):
        value = check.f32 if keeps else check.f32 - 0.1
        card.precision_checks = [
            PrecisionCheck(precision=fast, metric="m", f32=check.f32, value=value, tolerance=0.005)
        ]
        card.write(tmp_path / "m")
        assert PoseEngine(tmp_path / "m").kernels.lower() == kernels
    assert PoseEngine(tmp_path / "m", EngineOptions(inference_precision="f32")).kernels.lower() == "f32"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--precision INT8 needs --calibration"),
        (["--calibration", "EMPTY"], "no images or videos to calibrate with"),
        (["--calibration", "FEW"], "only 2 frame(s) found; quantising needs at least 10"),
        (["--calibration", "IMAGES", "--validate", "GT", "--images", "COCO", "--max-ap-drop", "-1"], "INT8 refused"),
    ],
)
def test_int8_user_errors_leave_no_outdir(assets: Path, tmp_path: Path, extra: list[str], message: str) -> None:
    from nodes import run_cli

    (tmp_path / "empty").mkdir()
    (tmp_path / "few").mkdir()
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / "few" / name).write_bytes((assets / "video" / "pose.jpg").read_bytes())
    names = {
        "EMPTY": tmp_path / "empty",
        "FEW": tmp_path / "few",
        "IMAGES": assets / "images",
        "GT": assets / "coco/person_keypoints_val2017_4img.json",
        "COCO": assets / "coco/images",
    }
    args = [str(names.get(a, a)) for a in extra]
    proc = run_cli(
        "convert",
        assets / "models/posenet/tfjs_v1/mobilenet_v1_075",
        "-o",
        tmp_path / "out",
        "--input-size",
        "257x257",
        "--precision",
        "INT8",
        *args,
    )
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()
