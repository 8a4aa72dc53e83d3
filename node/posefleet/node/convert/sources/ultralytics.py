"""Ultralytics pose exports: the OpenVINO export folder (``*.xml``, ``*.bin``, ``metadata.yaml``) or ONNX."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import openvino as ov
from posefleet.node.convert.formats import ConversionError, Converted, SourceFormat, read_model
from posefleet.node.engine.card import InputSpec, ModelCard, SourceSpec, sha256_of

#: Metadata keys whose ONNX values are Python literals written with ``str()`` by Ultralytics' exporter.
_LITERALS = ("imgsz", "kpt_shape", "names")


def _metadata_yaml(folder: Path) -> dict[str, Any] | None:
    import yaml

    path = folder / "metadata.yaml"
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConversionError(f"{path}: unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise ConversionError(f"{path}: not an Ultralytics metadata file")
    return data


def _metadata_onnx(model: ov.Model) -> dict[str, Any] | None:
    """The ``metadata_props`` an Ultralytics ONNX export carries (OpenVINO keeps them under ``framework``)."""
    if not model.has_rt_info(["framework", "kpt_shape"]):
        return None
    data: dict[str, Any] = {}
    for key, value in model.get_rt_info()["framework"].items():
        text = value.astype(str)
        try:
            data[key] = ast.literal_eval(text) if key in _LITERALS else text
        except (ValueError, SyntaxError):
            raise ConversionError(f"metadata {key}={text!r} is not a Python literal") from None
    return data


def _checked(data: dict[str, Any], where: str) -> dict[str, Any]:
    if data.get("task") not in (None, "pose") or list(data.get("kpt_shape", [])) != [17, 3]:
        raise ConversionError(
            f"{where}: not a 17-keypoint pose model (task {data.get('task')!r}, kpt_shape {data.get('kpt_shape')!r})"
        )
    imgsz = data.get("imgsz", [640, 640])
    data["imgsz"] = [imgsz, imgsz] if isinstance(imgsz, int) else list(imgsz)
    return data


def _metadata(source: Path, model: ov.Model) -> dict[str, Any]:
    """An export folder's metadata.yaml, or an ONNX export's own metadata (else a metadata.yaml beside it)."""
    folder = source if source.is_dir() else source.parent
    own = None if source.is_dir() else _metadata_onnx(model)
    if own is not None:
        return _checked(own, str(source))
    beside = _metadata_yaml(folder)
    if beside is not None:
        return _checked(beside, str(folder / "metadata.yaml"))
    if source.is_dir():
        raise ConversionError(
            f"{folder}: no metadata.yaml (an Ultralytics export writes it beside the model: imgsz, stride, kpt_shape)"
        )
    raise ConversionError(
        f"{source}: no Ultralytics metadata in the file (imgsz, stride, kpt_shape) and no metadata.yaml beside it; "
        "export it again with `yolo export format=onnx`"
    )


class UltralyticsPose(SourceFormat):
    name = "ultralytics"
    looks_like = "an Ultralytics pose export (a *_openvino_model folder with metadata.yaml, or its .onnx export)"
    priority = 10  # before the plain OpenVINO IR

    @classmethod
    def claims(cls, source: Path, head: bytes) -> bool:
        if source.is_dir():
            return bool(list(source.glob("*.xml"))) and (
                (source / "metadata.yaml").exists() or source.name.endswith("_openvino_model")
            )
        return source.suffix == ".onnx"

    @classmethod
    def read(cls, source: Path, size: tuple[int, int] | None, stride: int | None) -> Converted:
        model_file = sorted(source.glob("*.xml"))[0] if source.is_dir() else source
        model = read_model(model_file, "the model")
        meta = _metadata(source, model)
        channels = model.outputs[0].get_partial_shape()[1]
        if len(model.inputs) != 1 or len(model.outputs) != 1 or not channels.is_static or channels.get_length() != 56:
            raise ConversionError(
                f"{model_file}: expected one image input and one output of 56 channels (box, score, "
                "17 keypoints) per anchor"
            )
        net_stride = int(meta.get("stride", 32))
        if stride is not None and stride != net_stride:
            raise ConversionError(f"{model_file}: this export has stride {net_stride}")
        default = tuple(int(v) for v in meta["imgsz"])
        shape = model.inputs[0].get_partial_shape()
        fixed = (shape[2].get_length(), shape[3].get_length()) if shape.is_static else None  # dynamic=False export
        spec = InputSpec(
            name=model.inputs[0].get_any_name(),
            size=fixed,
            default_size=fixed or (default[0], default[1]),
            layout="NCHW",
            color="RGB",
            element_type="f32",
            mean=0.0,
            scale=255.0,
            resize="letterbox",
            size_multiple=net_stride,
            size_offset=0,
        )
        if size is not None and fixed is not None and size != fixed:
            raise ConversionError(
                f"{model_file}: this export has a fixed input {fixed[0]}x{fixed[1]}; export it with dynamic=True "
                "for other sizes"
            )
        if size is not None:
            try:
                spec.check_size(size)
            except ValueError as exc:
                raise ConversionError(str(exc)) from None
            spec = spec.model_copy(update={"size": size, "default_size": size})
        output = model.outputs[0].get_any_name()
        files = [model_file, model_file.with_suffix(".bin")] if model_file.suffix == ".xml" else [model_file]
        card = ModelCard(
            model_id=f"{model_file.stem}-{source.name.removesuffix('_openvino_model').split('_')[-1]}"
            if source.is_dir()
            else model_file.stem,
            family="yolo-pose",
            description=f"{meta.get('description', model_file.stem)} (Ultralytics {meta.get('version', '?')}, "
            f"{meta.get('license', 'see the export')})",
            input=spec,
            outputs={"predictions": output},
            output_stride=net_stride,
            precision="INT8 (as exported)" if "int8" in source.name.lower() else "",
            source=SourceSpec(
                path=str(source.resolve()),
                format=cls.name,
                sha256=sha256_of(files[0]) if len(files) == 1 else sha256_of(source),
            ),
        )
        return Converted(model, card)
