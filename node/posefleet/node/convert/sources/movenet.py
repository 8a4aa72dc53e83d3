"""MoveNet SinglePose TFLite models (Lightning 192x192, Thunder 256x256; INT8 or float16), read directly."""

from __future__ import annotations

from pathlib import Path

import openvino as ov
from posefleet.node.convert.formats import ConversionError, Converted, SourceFormat, read_model
from posefleet.node.engine.card import InputSpec, ModelCard, SourceSpec, sha256_of


def _is_movenet(model: ov.Model) -> bool:
    out = model.outputs[0].get_partial_shape()
    return (
        len(model.inputs) == 1 and len(model.outputs) == 1 and out.is_static and list(out.to_shape()) == [1, 1, 17, 3]
    )


class MoveNetTflite(SourceFormat):
    name = "movenet-tflite"
    looks_like = "a MoveNet SinglePose .tflite"
    priority = 5  # before the PoseNet TFLite reader, which claims every other .tflite

    @classmethod
    def claims(cls, source: Path, head: bytes) -> bool:
        if not (len(head) >= 8 and head[4:8] == b"TFL3"):
            return False
        if "movenet" in source.name.lower():
            return True
        try:
            return _is_movenet(ov.Core().read_model(str(source)))
        except Exception:  # not ours to judge: the next reader says what is wrong with it
            return False

    @classmethod
    def read(cls, source: Path, size: tuple[int, int] | None, stride: int | None) -> Converted:
        model = read_model(source, "TFLite model")
        if not _is_movenet(model):
            raise ConversionError(
                f"{source}: not a MoveNet SinglePose model (expected one output of shape "
                f"[1, 1, 17, 3], has {[str(o.get_partial_shape()) for o in model.outputs]})"
            )
        image = model.inputs[0]
        shape = [d.get_length() for d in image.get_partial_shape()]
        net = (shape[1], shape[2])
        if size is not None and size != net:
            raise ConversionError(f"{source}: this MoveNet has a fixed input size {net[0]}x{net[1]}")
        if stride is not None:
            raise ConversionError(f"{source}: --stride does not apply to MoveNet")
        u8 = image.get_element_type() == ov.Type.u8
        variant = "thunder" if net[0] >= 256 else "lightning"
        quantised = "int8" in source.name.lower() or u8
        card = ModelCard(
            model_id=f"movenet-singlepose-{variant}" + ("-int8" if quantised else ""),
            family="movenet",
            description=f"MoveNet SinglePose {variant.title()} (TFLite{', INT8' if quantised else ''}), "
            f"input {net[0]}x{net[1]}, one person followed by its crop region",
            input=InputSpec(
                name=image.get_any_name(),
                size=net,
                default_size=net,
                layout="NHWC",
                color="RGB",
                element_type="u8" if u8 else "f32",
                resize="stretch",
            ),
            outputs={"keypoints": model.outputs[0].get_any_name()},
            output_stride=1,
            precision="INT8 (TFLite)" if quantised else "",
            source=SourceSpec(path=str(source.resolve()), format=cls.name, sha256=sha256_of(source)),
        )
        return Converted(model, card)
