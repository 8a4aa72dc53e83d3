"""PoseNet sources: the TensorFlow frozen graph, the tfjs-models checkpoint and the Coral TFLite model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops
from posefleet.node.convert import posenet_tfjs
from posefleet.node.convert.formats import (
    ConversionError,
    Converted,
    SourceFormat,
    first_line,
    read_model,
    root_logging_kept,
)
from posefleet.node.engine.card import InputSpec, ModelCard, SourceSpec, sha256_of

POSENET_ROLES = ("heatmap", "offsets", "displacement_fwd", "displacement_bwd")
DEFAULT_POSENET_SIZE = (353, 481)


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


def _fixed_size(model: ov.Model, size: tuple[int, int] | None, spec: InputSpec) -> None:
    """Reshape to the requested size after checking it against the card's size rule."""
    if size is not None:
        try:
            spec.model_copy(update={"size": None}).check_size(size)  # the rule of the dynamic network
        except ValueError as exc:
            raise ConversionError(str(exc)) from None
        model.reshape({"image": [1, size[0], size[1], 3]})


def _measure_stride(model: ov.Model, role: str = "heatmap", size: tuple[int, int] = (257, 257)) -> int:
    probe = model.clone()
    probe.reshape({probe.inputs[0].get_any_name(): [1, size[0], size[1], 3]})
    out_h = probe.output(role).get_partial_shape()[1].get_length()
    return int((size[0] - 1) // (out_h - 1))


def _variant_from_name(name: str) -> str:
    for tag in ("050", "075", "100", "101"):
        if tag in name:
            return tag
    return "unknown"


def _card(
    *, model_id: str, description: str, input_spec: InputSpec, stride: int, source: Path, fmt: str, precision: str = ""
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


class FrozenGraph(SourceFormat):
    """A TensorFlow frozen PoseNet graph (as the posenet-python converter writes it)."""

    name = "tf-frozen"
    looks_like = "a .pb frozen graph"

    @classmethod
    def claims(cls, source: Path, head: bytes) -> bool:
        return source.is_file() and source.suffix == ".pb"

    @classmethod
    def read(cls, source: Path, size: tuple[int, int] | None, stride: int | None) -> Converted:
        try:
            with root_logging_kept():
                model = ov.convert_model(str(source))
        except Exception as exc:
            raise ConversionError(f"{source}: cannot read TensorFlow frozen graph: {first_line(exc)}") from exc
        names = {o.get_any_name().split(":")[0]: o.get_any_name() for o in model.outputs}
        wanted = {
            "heatmap": "heatmap",
            "offsets": "offset_2",
            "displacement_fwd": "displacement_fwd_2",
            "displacement_bwd": "displacement_bwd_2",
        }
        missing = [v for v in wanted.values() if v not in names]
        if missing or len(model.inputs) != 1:
            raise ConversionError(
                f"{source}: not a PoseNet graph (outputs {sorted(names)}; expected heatmap, offset_2, "
                "displacement_fwd_2, displacement_bwd_2 and one image input)"
            )
        for role, old in wanted.items():
            model.output(names[old]).get_tensor().set_names({role})
        model.inputs[0].get_tensor().set_names({"image"})
        measured = _measure_stride(model)
        if stride is not None and stride != measured:
            raise ConversionError(
                f"{source}: this frozen graph has output stride {measured}; --stride {stride} needs a tfjs checkpoint"
            )
        return _float_posenet(model, source, cls.name, "TensorFlow frozen graph", size=size, stride=measured)


def _float_posenet(
    model: ov.Model,
    source: Path,
    fmt: str,
    kind: str,
    *,
    size: tuple[int, int] | None,
    stride: int,
    variant: str | None = None,
) -> Converted:
    """A float PoseNet graph (inputs in [-1, 1]) fixed at ``size``, with its card; ``variant`` (0.50, 0.75...)
    from the source's file name unless given."""
    spec = _posenet_input(size, stride, element="f32", mean=127.5, scale=127.5)
    _fixed_size(model, size, spec)
    variant = variant or _variant_from_name(source.name)
    card = _card(
        model_id=f"posenet-mobilenet-v1-{variant}-s{stride}",
        description=f"PoseNet MobileNetV1 {variant} ({kind}), output stride {stride}",
        input_spec=spec,
        stride=stride,
        source=source,
        fmt=fmt,
    )
    return Converted(model, card)


class TfjsCheckpoint(SourceFormat):
    """A tfjs-models PoseNet v1 checkpoint (``manifest.json`` + raw float32 files), built with OpenVINO ops."""

    name = "tfjs"
    looks_like = "a tfjs checkpoint directory"

    @classmethod
    def claims(cls, source: Path, head: bytes) -> bool:
        return source.is_dir() and (source / "manifest.json").exists()

    @classmethod
    def read(cls, source: Path, size: tuple[int, int] | None, stride: int | None) -> Converted:
        stride = stride or 16
        try:
            checkpoint = posenet_tfjs.read_checkpoint(source)
            model = posenet_tfjs.build_model(checkpoint, stride)
        except posenet_tfjs.CheckpointError as exc:
            raise ConversionError(str(exc)) from exc
        return _float_posenet(
            model, source, cls.name, "tfjs-models checkpoint", size=size, stride=stride, variant=checkpoint.variant
        )


class CoralTflite(SourceFormat):
    """A full-integer PoseNet TFLite model (Coral): outputs dequantised with the flatbuffer's own parameters."""

    name = "tflite"
    looks_like = "a .tflite file"

    @classmethod
    def claims(cls, source: Path, head: bytes) -> bool:
        if len(head) >= 8 and head[4:8] == b"TFL3":
            return True
        if source.is_file() and source.suffix == ".tflite":
            raise ConversionError(f"{source}: not a TFLite flatbuffer (no TFL3 identifier)")
        return False

    @staticmethod
    def _quantization(source: Path) -> dict[str, tuple[float, int]]:
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

    @classmethod
    def read(cls, source: Path, size: tuple[int, int] | None, stride: int | None) -> Converted:
        model = read_model(source, "TFLite model")
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
        quant = cls._quantization(source)
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
        outputs = {
            "heatmap": heat.output(0),
            "offsets": offsets.output(0),
            "displacement_fwd": halves.output(0),
            "displacement_bwd": halves.output(1),
        }
        results = []
        for role, out in outputs.items():
            out.get_tensor().set_names({role})
            results.append(ops.result(out, name=role))
        image.get_tensor().set_names({"image"})
        new_model = ov.Model(results, list(model.get_parameters()), source.stem)
        measured = (net_size[0] - 1) // (new_model.output("heatmap").get_partial_shape()[1].get_length() - 1)
        if stride is not None and stride != measured:
            raise ConversionError(f"{source}: this TFLite model has output stride {measured}")
        variant = _variant_from_name(source.name)
        card = _card(
            model_id=f"posenet-mobilenet-v1-{variant}-{net_size[0]}x{net_size[1]}-tflite-uint8",
            description=f"PoseNet MobileNetV1 {variant} (TFLite, full-integer quantised), "
            f"input {net_size[0]}x{net_size[1]}, output stride {measured}",
            input_spec=_posenet_input(net_size, measured, element="u8", mean=0.0, scale=1.0),
            stride=measured,
            source=source,
            fmt=cls.name,
            precision="INT8 (TFLite uint8, dequantised outputs)",
        )
        return Converted(new_model, card)
