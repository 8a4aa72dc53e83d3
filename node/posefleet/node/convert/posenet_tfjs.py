"""Build PoseNet (MobileNetV1) directly in OpenVINO from a tfjs-models v1 checkpoint.

A checkpoint directory holds ``manifest.json`` (variable name -> file name and shape) and one raw
little-endian float32 file per variable, with batch norm already folded into the biases. The graph
mirrors tfjs-models ``posenet/src/mobilenet.ts``: a strided MobileNetV1 trunk whose remaining strides
turn into dilations once the requested output stride is reached, and four 1x1 heads.
No TensorFlow is needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import openvino as ov
import openvino.opset13 as ops
from posefleet.common.errors import PosefleetError

#: Strides of the 14 MobileNetV1 blocks. tfjs-models uses a separate table for 0.50 and 0.75,
#: whose Conv2d_12 does not downsample (their trunk ends at stride 16).
_STRIDES_SMALL = (2, 1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 1, 1)
_STRIDES_FULL = (2, 1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1)
#: Output channels of Conv2d_0 -> multiplier.
_MULTIPLIER_BY_STEM = {16: 0.50, 24: 0.75, 32: 1.00}
HEADS = {
    "heatmap": "heatmap_2",
    "offsets": "offset_2",
    "displacement_fwd": "displacement_fwd_2",
    "displacement_bwd": "displacement_bwd_2",
}
_HEAD_CHANNELS = {"heatmap_2": 17, "offset_2": 34, "displacement_fwd_2": 32, "displacement_bwd_2": 32}

F32Array = npt.NDArray[np.float32]


class CheckpointError(PosefleetError):
    """The checkpoint directory is incomplete or inconsistent."""


@dataclass(frozen=True)
class TfjsCheckpoint:
    multiplier: float
    variant: str  # "050", "075", "100" or "101"
    weights: dict[str, F32Array]

    def __getitem__(self, name: str) -> F32Array:
        return self.weights[name]


def required_variables() -> list[str]:
    names = ["MobilenetV1/Conv2d_0/weights", "MobilenetV1/Conv2d_0/biases"]
    for block in range(1, 14):
        names += [
            f"MobilenetV1/Conv2d_{block}_depthwise/depthwise_weights",
            f"MobilenetV1/Conv2d_{block}_depthwise/biases",
            f"MobilenetV1/Conv2d_{block}_pointwise/weights",
            f"MobilenetV1/Conv2d_{block}_pointwise/biases",
        ]
    for head in _HEAD_CHANNELS:
        names += [f"MobilenetV1/{head}/weights", f"MobilenetV1/{head}/biases"]
    return names


def read_checkpoint(directory: Path) -> TfjsCheckpoint:
    """Load and check every variable PoseNet needs; errors name the variable and its file."""
    manifest_path = directory / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(f"{manifest_path}: missing (a tfjs checkpoint needs manifest.json)") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{manifest_path}: unreadable manifest: {exc}") from exc
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{manifest_path}: expected an object of variables")

    weights: dict[str, F32Array] = {}
    for name in required_variables():
        entry = manifest.get(name)
        if not isinstance(entry, dict) or "filename" not in entry or "shape" not in entry:
            raise CheckpointError(f"{manifest_path}: variable {name} is missing from the manifest")
        shape = tuple(int(d) for d in entry["shape"])
        path = directory / str(entry["filename"])
        expected = int(np.prod(shape)) * 4
        try:
            size = path.stat().st_size
        except FileNotFoundError as exc:
            raise CheckpointError(f"{path}: weight file of variable {name} is missing") from exc
        if size != expected:
            raise CheckpointError(
                f"{path}: variable {name} has {size} bytes, expected {expected} for shape {list(shape)}"
                + (" (truncated file?)" if size < expected else "")
            )
        weights[name] = np.fromfile(path, dtype="<f4").reshape(shape)

    stem = weights["MobilenetV1/Conv2d_0/weights"].shape
    if len(stem) != 4 or stem[:3] != (3, 3, 3) or stem[3] not in _MULTIPLIER_BY_STEM:
        raise CheckpointError(
            f"{directory}: MobilenetV1/Conv2d_0/weights has shape {list(stem)}, expected [3, 3, 3, 16|24|32]"
        )
    multiplier = _MULTIPLIER_BY_STEM[stem[3]]
    variant = {0.50: "050", 0.75: "075", 1.00: "100"}[multiplier]
    if variant == "100" and "101" in directory.name:
        variant = "101"
    _check_shapes(directory, weights)
    return TfjsCheckpoint(multiplier=multiplier, variant=variant, weights=weights)


def _check_shapes(directory: Path, weights: dict[str, F32Array]) -> None:
    def fail(name: str, got: tuple[int, ...], want: tuple[int, ...]) -> CheckpointError:
        return CheckpointError(f"{directory}: variable {name} has shape {list(got)}, expected {list(want)}")

    channels = weights["MobilenetV1/Conv2d_0/weights"].shape[3]
    if weights["MobilenetV1/Conv2d_0/biases"].shape != (channels,):
        raise fail("MobilenetV1/Conv2d_0/biases", weights["MobilenetV1/Conv2d_0/biases"].shape, (channels,))
    for block in range(1, 14):
        prefix = f"MobilenetV1/Conv2d_{block}"
        checks: list[tuple[str, tuple[int, ...] | None]] = [
            (f"{prefix}_depthwise/depthwise_weights", (3, 3, channels, 1)),
            (f"{prefix}_depthwise/biases", (channels,)),
        ]
        pointwise = weights[f"{prefix}_pointwise/weights"].shape
        if len(pointwise) != 4 or pointwise[:3] != (1, 1, channels):
            raise fail(f"{prefix}_pointwise/weights", pointwise, (1, 1, channels, pointwise[-1]))
        channels = pointwise[3]
        checks.append((f"{prefix}_pointwise/biases", (channels,)))
        for name, want in checks:
            if want is not None and weights[name].shape != want:
                raise fail(name, weights[name].shape, want)
    for head, out in _HEAD_CHANNELS.items():
        for name, want in (
            (f"MobilenetV1/{head}/weights", (1, 1, channels, out)),
            (f"MobilenetV1/{head}/biases", (out,)),
        ):
            if weights[name].shape != want:
                raise fail(name, weights[name].shape, want)


def supported_strides(multiplier: float) -> tuple[int, ...]:
    return (8, 16) if multiplier < 1.0 else (8, 16, 32)


def _strided_layers(multiplier: float, output_stride: int) -> list[tuple[int, int]]:
    """(stride, dilation) per block, as tfjs-models ``toOutputStridedLayers``."""
    table = _STRIDES_SMALL if multiplier < 1.0 else _STRIDES_FULL
    current, rate, layers = 1, 1, []
    for stride in table:
        if current == output_stride:
            layers.append((1, rate))
            rate *= stride
        else:
            layers.append((stride, 1))
            current *= stride
    return layers


def _conv(x: ov.Node, w_hwio: F32Array, b: F32Array, stride: int, dilation: int) -> ov.Node:
    w = ops.constant(np.ascontiguousarray(w_hwio.transpose(3, 2, 0, 1)))
    y = ops.convolution(x, w, [stride, stride], [0, 0], [0, 0], [dilation, dilation], auto_pad="same_upper")
    return ops.add(y, ops.constant(b.reshape(1, -1, 1, 1)))


def _depthwise(x: ov.Node, w_hwc1: F32Array, b: F32Array, stride: int, dilation: int) -> ov.Node:
    # [h, w, C, 1] -> GroupConvolution filters [C, 1, 1, h, w]
    w = ops.constant(np.ascontiguousarray(w_hwc1.transpose(2, 3, 0, 1)[:, :, None]))
    y = ops.group_convolution(x, w, [stride, stride], [0, 0], [0, 0], [dilation, dilation], auto_pad="same_upper")
    return ops.add(y, ops.constant(b.reshape(1, -1, 1, 1)))


def _relu6(x: ov.Node) -> ov.Node:
    return ops.clamp(x, 0.0, 6.0)


def build_model(checkpoint: TfjsCheckpoint, output_stride: int) -> ov.Model:
    """PoseNet graph: input ``image`` [1,H,W,3] RGB in [-1, 1]; NHWC outputs named as ``HEADS``."""
    if output_stride not in supported_strides(checkpoint.multiplier):
        raise CheckpointError(
            f"PoseNet MobileNetV1 {checkpoint.multiplier:.2f} supports output stride "
            f"{' or '.join(map(str, supported_strides(checkpoint.multiplier)))}, not {output_stride}"
        )
    image = ops.parameter([1, -1, -1, 3], ov.Type.f32, name="image")
    image.output(0).get_tensor().set_names({"image"})
    x: ov.Node = ops.transpose(image, ops.constant(np.array([0, 3, 1, 2], dtype=np.int64)))
    for block, (stride, dilation) in enumerate(_strided_layers(checkpoint.multiplier, output_stride)):
        prefix = f"MobilenetV1/Conv2d_{block}"
        if block == 0:
            x = _relu6(_conv(x, checkpoint[f"{prefix}/weights"], checkpoint[f"{prefix}/biases"], stride, 1))
            continue
        x = _relu6(
            _depthwise(
                x,
                checkpoint[f"{prefix}_depthwise/depthwise_weights"],
                checkpoint[f"{prefix}_depthwise/biases"],
                stride,
                dilation,
            )
        )
        x = _relu6(_conv(x, checkpoint[f"{prefix}_pointwise/weights"], checkpoint[f"{prefix}_pointwise/biases"], 1, 1))
    to_nhwc = ops.constant(np.array([0, 2, 3, 1], dtype=np.int64))
    results = []
    for role, head in HEADS.items():
        y = _conv(x, checkpoint[f"MobilenetV1/{head}/weights"], checkpoint[f"MobilenetV1/{head}/biases"], 1, 1)
        if role == "heatmap":
            y = ops.sigmoid(y)
        out = ops.transpose(y, to_nhwc)
        out.output(0).get_tensor().set_names({role})
        results.append(ops.result(out, name=role))
    return ov.Model(results, [image], f"posenet_mobilenet_v1_{checkpoint.variant}_s{output_stride}")
