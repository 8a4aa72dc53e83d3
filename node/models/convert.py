"""``posefleet convert``: PoseNet (TF frozen graph, tfjs checkpoint, TFLite) and OpenPose IR -> IR + card.

Every path writes into a temporary sibling of OUTDIR and renames it into place at the end, so a
failed conversion never leaves a half-written OUTDIR behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import openvino as ov
import openvino.opset13 as ops
from posefleet.node.models import posenet_tfjs
from posefleet.node.models.card import (
    CARD_FILE,
    IR_BIN,
    IR_XML,
    InputSpec,
    ModelCard,
    SourceSpec,
    sha256_of,
)

Precision = Literal["FP16", "FP32"]
SourceFormat = Literal["tf-frozen", "tfjs", "tflite", "openvino-ir"]
POSENET_ROLES = ("heatmap", "offsets", "displacement_fwd", "displacement_bwd")
DEFAULT_POSENET_SIZE = (353, 481)


class ConversionError(Exception):
    """A source model cannot be converted; the message names the file or variable at fault."""


def detect_format(source: Path) -> SourceFormat:
    """Guess the source format from the path and the file's first bytes."""
    if not source.exists():
        raise ConversionError(f"{source}: no such file or directory")
    if source.is_dir():
        if (source / "manifest.json").exists():
            return "tfjs"
        if list(source.glob("*.xml")):
            return "openvino-ir"
        raise ConversionError(
            f"{source}: unknown model format (a directory must hold a tfjs manifest.json or an OpenVINO .xml)"
        )
    try:
        with source.open("rb") as handle:
            head = handle.read(16)
    except OSError as exc:
        raise ConversionError(f"{source}: unreadable: {exc.strerror or exc}") from exc
    if len(head) >= 8 and head[4:8] == b"TFL3":
        return "tflite"
    if source.suffix == ".xml" or head.lstrip().startswith(b"<?xml") or head.lstrip().startswith(b"<net"):
        return "openvino-ir"
    if source.suffix == ".pb":
        return "tf-frozen"
    if source.suffix == ".tflite":
        raise ConversionError(f"{source}: not a TFLite flatbuffer (no TFL3 identifier)")
    raise ConversionError(
        f"{source}: unknown model format (expected a .pb frozen graph, a tfjs checkpoint directory, "
        "a .tflite file or an OpenVINO .xml)"
    )


def _valid_size(size: tuple[int, int], stride: int) -> None:
    bad = [d for d in size if d < stride + 1 or (d - 1) % stride]
    if bad:
        fixed = tuple(max(1, round((d - 1) / stride)) * stride + 1 for d in size)
        raise ConversionError(
            f"input size {size[0]}x{size[1]} is not valid for output stride {stride}: each side must be "
            f"k*{stride}+1 (nearest valid: {fixed[0]}x{fixed[1]})"
        )


def _posenet_input(size: tuple[int, int] | None, stride: int, *, element: str, mean: float, scale: float) -> InputSpec:
    return InputSpec(
        name="image",
        size=size,
        default_size=size or DEFAULT_POSENET_SIZE,
        layout="NHWC",
        color="RGB",
        element_type="f32" if element == "f32" else "u8",
        mean=mean,
        scale=scale,
        resize="stretch",
        size_multiple=stride,
        size_offset=1,
    )


def _name_outputs(model: ov.Model, mapping: dict[str, str]) -> None:
    """Give PoseNet outputs their role names (heatmap, offsets, ...)."""
    for role, old in mapping.items():
        model.output(old).get_tensor().set_names({role})


def _measure_stride(model: ov.Model, role: str = "heatmap", size: tuple[int, int] = (257, 257)) -> int:
    probe = model.clone()
    probe.reshape({probe.inputs[0].get_any_name(): [1, size[0], size[1], 3]})
    out_h = probe.output(role).get_partial_shape()[1].get_length()
    return int((size[0] - 1) // (out_h - 1))


def _from_frozen_graph(source: Path, size: tuple[int, int] | None, stride: int | None) -> tuple[ov.Model, ModelCard]:
    try:
        model = ov.convert_model(str(source))
    except Exception as exc:
        raise ConversionError(f"{source}: cannot read TensorFlow frozen graph: {_first_line(exc)}") from exc
    names = {o.get_any_name().split(":")[0]: o.get_any_name() for o in model.outputs}
    wanted = {"heatmap": "heatmap", "offsets": "offset_2", "displacement_fwd": "displacement_fwd_2",
              "displacement_bwd": "displacement_bwd_2"}  # fmt: skip
    missing = [v for v in wanted.values() if v not in names]
    if missing or len(model.inputs) != 1:
        raise ConversionError(
            f"{source}: not a PoseNet graph (outputs {sorted(names)}; expected heatmap, offset_2, "
            "displacement_fwd_2, displacement_bwd_2 and one image input)"
        )
    _name_outputs(model, {role: names[old] for role, old in wanted.items()})
    model.inputs[0].get_tensor().set_names({"image"})
    measured = _measure_stride(model)
    if stride is not None and stride != measured:
        raise ConversionError(
            f"{source}: this frozen graph has output stride {measured}; --stride {stride} needs a tfjs checkpoint"
        )
    if size is not None:
        _valid_size(size, measured)
        model.reshape({"image": [1, size[0], size[1], 3]})
    variant = _variant_from_name(source.name)
    card = _posenet_card(
        model_id=f"posenet-mobilenet-v1-{variant}-s{measured}",
        description=f"PoseNet MobileNetV1 {variant} (TensorFlow frozen graph), output stride {measured}",
        input_spec=_posenet_input(size, measured, element="f32", mean=127.5, scale=127.5),
        stride=measured,
        source=source,
        fmt="tf-frozen",
    )
    return model, card


def _variant_from_name(name: str) -> str:
    for tag in ("050", "075", "100", "101"):
        if tag in name:
            return tag
    return "unknown"


def _from_tfjs(source: Path, size: tuple[int, int] | None, stride: int | None) -> tuple[ov.Model, ModelCard]:
    stride = stride or 16
    try:
        checkpoint = posenet_tfjs.read_checkpoint(source)
        model = posenet_tfjs.build_model(checkpoint, stride)
    except posenet_tfjs.CheckpointError as exc:
        raise ConversionError(str(exc)) from exc
    if size is not None:
        _valid_size(size, stride)
        model.reshape({"image": [1, size[0], size[1], 3]})
    card = _posenet_card(
        model_id=f"posenet-mobilenet-v1-{checkpoint.variant}-s{stride}",
        description=f"PoseNet MobileNetV1 {checkpoint.variant} (tfjs-models checkpoint), output stride {stride}",
        input_spec=_posenet_input(size, stride, element="f32", mean=127.5, scale=127.5),
        stride=stride,
        source=source,
        fmt="tfjs",
    )
    return model, card


def _tflite_quantization(source: Path) -> dict[str, tuple[float, int]]:
    """Output tensor name -> (scale, zero point), read from the flatbuffer itself."""
    import tflite

    try:
        tfl = tflite.Model.GetRootAsModel(source.read_bytes(), 0)
        graph = tfl.Subgraphs(0)
        params: dict[str, tuple[float, int]] = {}
        for i in range(graph.OutputsLength()):
            tensor = graph.Tensors(graph.Outputs(i))
            quant = tensor.Quantization()
            if quant is not None and quant.ScaleLength() == 1:
                params[tensor.Name().decode()] = (float(quant.Scale(0)), int(quant.ZeroPoint(0)))
        return params
    except Exception as exc:
        raise ConversionError(f"{source}: cannot read TFLite quantisation parameters: {exc}") from exc


def _from_tflite(source: Path, size: tuple[int, int] | None, stride: int | None) -> tuple[ov.Model, ModelCard]:
    try:
        model = ov.Core().read_model(str(source))
    except Exception as exc:
        raise ConversionError(f"{source}: cannot read TFLite model: {_first_line(exc)}") from exc
    # The producers behind the Result nodes; a Result's own output cannot feed new operations.
    by_kind: dict[str, ov.Output] = {}
    for result in model.get_results():
        out = result.input_value(0)
        name = out.get_any_name()
        for kind in ("heatmap", "short_offsets", "mid_offsets"):
            if kind in name:
                by_kind[kind] = out
    if len(by_kind) != 3 or len(model.inputs) != 1:
        raise ConversionError(
            f"{source}: not a PoseNet TFLite model (needs heatmaps, short_offsets and mid_offsets outputs; "
            f"has {[o.get_any_name() for o in model.outputs]})"
        )
    quant = _tflite_quantization(source)
    image = model.inputs[0]
    in_shape = [d.get_length() for d in image.get_partial_shape()]
    net_size = (in_shape[1], in_shape[2])
    if size is not None and size != net_size:
        raise ConversionError(f"{source}: this TFLite model has a fixed input size {net_size[0]}x{net_size[1]}")

    def dequantised(out: ov.Output) -> ov.Node:
        node: ov.Node = ops.convert(out, ov.Type.f32)
        name = out.get_any_name()
        if out.get_element_type() != ov.Type.f32:
            if name not in quant:
                raise ConversionError(f"{source}: output {name} is quantised but has no quantisation parameters")
            scale, zero = quant[name]
            node = ops.multiply(ops.subtract(node, np.float32(zero)), np.float32(scale))
        return node

    heat = ops.sigmoid(dequantised(by_kind["heatmap"]))  # the TFLite heads are logits
    offsets = dequantised(by_kind["short_offsets"])
    mid = dequantised(by_kind["mid_offsets"])
    halves = ops.variadic_split(mid, np.int64(3), np.array([32, 32], dtype=np.int64))
    outputs = {"heatmap": heat.output(0), "offsets": offsets.output(0),
               "displacement_fwd": halves.output(0), "displacement_bwd": halves.output(1)}  # fmt: skip
    results = []
    for role, out in outputs.items():
        out.get_tensor().set_names({role})
        results.append(ops.result(out, name=role))
    image.get_tensor().set_names({"image"})
    new_model = ov.Model(results, list(model.get_parameters()), source.stem)
    measured = (net_size[0] - 1) // (new_model.output("heatmap").get_partial_shape()[1].get_length() - 1)
    if stride is not None and stride != measured:
        raise ConversionError(f"{source}: this TFLite model has output stride {measured}")
    card = _posenet_card(
        model_id=f"posenet-mobilenet-v1-{_variant_from_name(source.name)}-{net_size[0]}x{net_size[1]}-tflite-uint8",
        description=f"PoseNet MobileNetV1 {_variant_from_name(source.name)} (TFLite, full-integer quantised), "
        f"input {net_size[0]}x{net_size[1]}, output stride {measured}",
        input_spec=_posenet_input(net_size, measured, element="u8", mean=0.0, scale=1.0),
        stride=measured,
        source=source,
        fmt="tflite",
        precision="INT8 (TFLite uint8, dequantised outputs)",
    )
    return new_model, card


def _posenet_card(
    *,
    model_id: str,
    description: str,
    input_spec: InputSpec,
    stride: int,
    source: Path,
    fmt: SourceFormat,
    precision: str = "",
) -> ModelCard:
    return ModelCard(
        model_id=model_id,
        family="posenet",
        description=description,
        input=input_spec,
        outputs={role: role for role in POSENET_ROLES},
        output_stride=stride,
        precision=precision,
        source=SourceSpec(path=str(source.resolve()), format=fmt, sha256=sha256_of(source)),
    )


def _ir_files(source: Path) -> tuple[Path, Path]:
    xml = source if source.is_file() else sorted(source.glob("*.xml"))[0]
    bin_path = xml.with_suffix(".bin")
    if not bin_path.is_file():
        raise ConversionError(f"{bin_path}: missing (an OpenVINO IR needs its .bin beside the .xml)")
    return xml, bin_path


def _from_openpose_ir(source: Path) -> tuple[ov.Model, ModelCard, tuple[Path, Path]]:
    xml, bin_path = _ir_files(source)
    try:
        model = ov.Core().read_model(str(xml))
        # Reading maps the weights lazily; compiling proves the .bin really holds them.
        ov.Core().compile_model(model, "CPU")
    except Exception as exc:
        raise ConversionError(f"{xml}: invalid OpenVINO IR: {_first_line(exc)}") from exc
    if len(model.inputs) != 1 or len(model.outputs) != 2:
        raise ConversionError(f"{xml}: expected one input and two outputs (PAFs, heatmaps) of an OpenPose model")
    channels = {o.get_partial_shape()[1].get_length(): o.get_any_name() for o in model.outputs}
    if set(channels) != {38, 19}:
        raise ConversionError(
            f"{xml}: outputs have {sorted(channels)} channels; an OpenPose COCO model has 38 (PAFs) and 19 (heatmaps)"
        )
    shape = [d.get_length() for d in model.inputs[0].get_partial_shape()]
    size = (shape[2], shape[3])
    heat_h = model.output(channels[19]).get_partial_shape()[2].get_length()
    precision = xml.parent.name if xml.parent.name.upper().startswith("FP") else "as source IR"
    card = ModelCard(
        model_id=xml.stem,
        family="openpose",
        description=f"{xml.stem} (OpenPose-style part affinity fields), input {size[0]}x{size[1]}",
        input=InputSpec(
            name=model.inputs[0].get_any_name(),
            size=size,
            default_size=size,
            layout="NCHW",
            color="BGR",
            element_type="f32",
            resize="letterbox",
        ),
        outputs={"pafs": channels[38], "heatmaps": channels[19]},
        output_stride=size[0] // heat_h,
        precision=precision,
        source=SourceSpec(path=str(xml.resolve()), format="openvino-ir", sha256=_sha256_pair(xml, bin_path)),
    )
    return model, card, (xml, bin_path)


def _sha256_pair(xml: Path, bin_path: Path) -> str:
    import hashlib

    return hashlib.sha256((sha256_of(xml) + sha256_of(bin_path)).encode()).hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("Check ")]
    return lines[0] if lines else type(exc).__name__


def convert(
    source: str | Path,
    outdir: str | Path,
    *,
    input_size: tuple[int, int] | None = None,
    stride: int | None = None,
    precision: Precision = "FP16",
    log: Callable[[str], None] = lambda _msg: None,
) -> ModelCard:
    """Convert ``source`` into ``outdir`` (model.xml, model.bin, model.json) and return the card."""
    source, outdir = Path(source), Path(outdir)
    fmt = detect_format(source)
    if stride is not None and stride not in (8, 16, 32):
        raise ConversionError(f"--stride must be 8, 16 or 32, not {stride}")
    if outdir.exists() and (not outdir.is_dir() or (any(outdir.iterdir()) and not (outdir / CARD_FILE).exists())):
        raise ConversionError(f"{outdir}: exists and is not a posefleet model directory; refusing to overwrite it")
    log(f"converting {source} ({fmt})")
    copy_from: tuple[Path, Path] | None = None
    if fmt == "tf-frozen":
        model, card = _from_frozen_graph(source, input_size, stride)
    elif fmt == "tfjs":
        model, card = _from_tfjs(source, input_size, stride)
    elif fmt == "tflite":
        model, card = _from_tflite(source, input_size, stride)
    else:
        if input_size is not None or stride is not None:
            raise ConversionError(
                f"{source}: an OpenVINO IR is copied as it is; --input-size and --stride do not apply"
            )
        model, card, copy_from = _from_openpose_ir(source)

    import posefleet.node as node_pkg

    card.converter = {"posefleet": getattr(node_pkg, "__version__", "0"), "openvino": ov.get_version()}
    outdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.tmp-", dir=outdir.parent))
    try:
        if copy_from is not None:
            shutil.copyfile(copy_from[0], tmp / IR_XML)
            shutil.copyfile(copy_from[1], tmp / IR_BIN)
        else:
            if not card.precision:
                card.precision = precision
            ov.save_model(model, str(tmp / IR_XML), compress_to_fp16=(precision == "FP16"))
        card.write(tmp)
        if outdir.exists():
            old = outdir.with_name(f".{outdir.name}.old-{os.getpid()}")
            os.replace(outdir, old)
            os.replace(tmp, outdir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, outdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {outdir / IR_XML} ({card.model_id}, {card.precision})")
    return card
