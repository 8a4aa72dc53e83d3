"""An OpenVINO IR of an OpenPose-style model (human-pose-estimation-0001): validated and copied as it is."""

from __future__ import annotations

import hashlib
from pathlib import Path

import openvino as ov
from posefleet.node.convert.formats import ConversionError, Converted, SourceFormat, first_line
from posefleet.node.engine.card import InputSpec, ModelCard, SourceSpec, sha256_of


def _ir_files(source: Path) -> tuple[Path, Path]:
    xml = source if source.is_file() else sorted(source.glob("*.xml"))[0]
    bin_path = xml.with_suffix(".bin")
    if not bin_path.is_file():
        raise ConversionError(f"{bin_path}: missing (an OpenVINO IR needs its .bin beside the .xml)")
    return xml, bin_path


class OpenPoseIR(SourceFormat):
    name = "openvino-ir"
    looks_like = "an OpenVINO .xml (or a directory holding one)"

    @classmethod
    def claims(cls, source: Path, head: bytes) -> bool:
        if source.is_dir():
            return bool(list(source.glob("*.xml")))
        return source.suffix == ".xml" or head.lstrip().startswith((b"<?xml", b"<net"))

    @classmethod
    def read(cls, source: Path, size: tuple[int, int] | None, stride: int | None) -> Converted:
        if size is not None or stride is not None:
            raise ConversionError(
                f"{source}: an OpenVINO IR is copied as it is; --input-size and --stride do not apply"
            )
        xml, bin_path = _ir_files(source)
        try:
            model = ov.Core().read_model(str(xml))
            # Reading maps the weights lazily; compiling proves the .bin really holds them.
            ov.Core().compile_model(model, "CPU")
        except Exception as exc:
            raise ConversionError(f"{xml}: invalid OpenVINO IR: {first_line(exc)}") from exc
        if len(model.inputs) != 1 or len(model.outputs) != 2:
            raise ConversionError(f"{xml}: expected one input and two outputs (PAFs, heatmaps) of an OpenPose model")
        channels = {o.get_partial_shape()[1].get_length(): o.get_any_name() for o in model.outputs}
        if set(channels) != {38, 19}:
            raise ConversionError(
                f"{xml}: outputs have {sorted(channels)} channels; an OpenPose COCO model has 38 (PAFs) and 19 "
                "(heatmaps)"
            )
        shape = [d.get_length() for d in model.inputs[0].get_partial_shape()]
        net_size = (shape[2], shape[3])
        heat_h = model.output(channels[19]).get_partial_shape()[2].get_length()
        precision = xml.parent.name if xml.parent.name.upper().startswith("FP") else "as source IR"
        pair_sha = hashlib.sha256((sha256_of(xml) + sha256_of(bin_path)).encode()).hexdigest()
        card = ModelCard(
            model_id=xml.stem,
            family="openpose",
            description=f"{xml.stem} (OpenPose-style part affinity fields), input {net_size[0]}x{net_size[1]}",
            input=InputSpec(
                name=model.inputs[0].get_any_name(),
                size=net_size,
                default_size=net_size,
                layout="NCHW",
                color="BGR",
                element_type="f32",
                resize="letterbox",
            ),
            outputs={"pafs": channels[38], "heatmaps": channels[19]},
            output_stride=net_size[0] // heat_h,
            precision=precision,
            source=SourceSpec(path=str(xml.resolve()), format=cls.name, sha256=pair_sha),
        )
        return Converted(model, card, copy_ir=(xml, bin_path))
