"""What INT8 can gain on this CPU: raw async FPS of the same work in f32, bf16 and INT8, in one run.

Two synthetic stacks bound the gain. 1x1 (pointwise) convolutions sum over channels, so they gain what
the CPU's INT8 dot products (VNNI, which sum neighbouring channels) offer over its bf16 or f32 ones.
3x3 depthwise convolutions never sum over channels and gain little. MobileNetV1, PoseNet's backbone,
alternates the two, so its INT8 gain lies between them. Given converted models, the FP16 IR (in f32
and in the device's default precision) is measured against its INT8 twin the same way. Every figure
names the convolution kernels that ran, read from the compiled model, so a row cannot claim INT8 that
ran in bf16.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import openvino as ov
from openvino import opset13 as ops
from posefleet.bench.throughput import raw_async_fps
from posefleet.node.devices import InferencePrecision
from posefleet.node.engine.adapters import conv_kernels
from posefleet.node.engine.runtime import EngineOptions, PoseEngine, device_precision

#: The runs of one row: the float model in f32, the float model in the device's default precision, INT8.
RUNS = ("f32", "default", "INT8")


@dataclass
class Run:
    fps: float
    #: The convolution kernels' precisions as the compiled model reports them (e.g. ``I8``, ``bf16``).
    kernels: str


@dataclass
class CeilingRow:
    workload: str
    runs: dict[str, Run] = field(default_factory=dict)

    def ratio(self, over: str) -> float:
        return self.runs["INT8"].fps / self.runs[over].fps

    def to_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            **{f"{name}_fps": run.fps for name, run in self.runs.items()},
            **{f"{name}_kernels": run.kernels for name, run in self.runs.items()},
            "int8_over_default": self.ratio("default"),
            "int8_over_f32": self.ratio("f32"),
        }


def measure(compiled: ov.CompiledModel, tensor: npt.NDArray[Any], *, frames: int, seconds: float) -> Run:
    return Run(raw_async_fps(compiled, tensor, frames=frames, seconds=seconds)[0], conv_kernels(compiled))


def synthetic(kind: str, *, channels: int = 512, size: int = 32, layers: int = 4, seed: int = 0) -> ov.Model:
    """A stack of ``layers`` 1x1 (``"pointwise"``) or 3x3 depthwise (``"depthwise"``) convolutions with ReLU."""
    rng = np.random.default_rng(seed)
    x = ops.parameter([1, channels, size, size], np.float32, name="x")
    y: Any = x
    for _ in range(layers):
        if kind == "pointwise":
            w = (rng.standard_normal((channels, channels, 1, 1)) / np.sqrt(channels)).astype(np.float32)
            y = ops.convolution(y, ops.constant(w), [1, 1], [0, 0], [0, 0], [1, 1])
        elif kind == "depthwise":
            w = (rng.standard_normal((channels, 1, 1, 3, 3)) / 3).astype(np.float32)
            y = ops.group_convolution(y, ops.constant(w), [1, 1], [1, 1], [1, 1], [1, 1])
        else:
            raise ValueError(f"unknown synthetic workload {kind!r}")
        y = ops.relu(y)
    return ov.Model([y], [x], f"{kind}-{layers}x{channels}@{size}")


def quantized(model: ov.Model, samples: list[npt.NDArray[np.float32]]) -> ov.Model:
    import nncf

    return nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples))


def measure_synthetic(
    kind: str, *, channels: int = 512, size: int = 32, layers: int = 4, frames: int = 100_000, seconds: float = 4.0
) -> CeilingRow:
    """One synthetic workload in f32, in the CPU's default precision and quantised to INT8 by NNCF."""
    core = ov.Core()
    rng = np.random.default_rng(1)
    samples = [rng.standard_normal((1, channels, size, size)).astype(np.float32) for _ in range(16)]
    model = synthetic(kind, channels=channels, size=size, layers=layers)
    row = CeilingRow(f"{kind} conv x{layers}, {channels} ch at {size}x{size}")
    builds: dict[str, tuple[ov.Model, dict[str, str]]] = {
        "f32": (model, {"INFERENCE_PRECISION_HINT": "f32"}),
        "default": (model, {}),
        "INT8": (quantized(model.clone(), samples), {}),  # a copy: NNCF may transform what it is given
    }
    for name, (graph, config) in builds.items():
        compiled = core.compile_model(graph, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT", **config})
        row.runs[name] = measure(compiled, samples[0], frames=frames, seconds=seconds)
    return row


def measure_models(
    float_dir: Path,
    int8_dir: Path,
    image: npt.NDArray[np.uint8],
    input_size: tuple[int, int] | None,
    *,
    frames: int = 100_000,
    seconds: float = 4.0,
) -> CeilingRow:
    """A converted float model (in f32 and the default precision) against its INT8 twin, on one frame."""
    import cv2

    default = cast(InferencePrecision, device_precision(ov.Core(), "CPU") or "f32")  # bf16 on CPUs with it
    runs: dict[str, tuple[Path, InferencePrecision]] = {
        "f32": (float_dir, "f32"),
        "default": (float_dir, default),
        "INT8": (int8_dir, default),
    }
    row: CeilingRow | None = None
    for name, (model_dir, precision) in runs.items():
        options = EngineOptions(hint="THROUGHPUT", input_size=input_size, inference_precision=precision)
        engine = PoseEngine(model_dir, options)
        h, w = engine.input_size
        tensor, _ = engine.model.preprocess(cv2.resize(image, (w, h)))
        row = row or CeilingRow(f"{engine.card.model_id} at {h}x{w}")
        row.runs[name] = measure(engine.compiled, tensor, frames=frames, seconds=seconds)
    assert row is not None
    return row


def device_line() -> str:
    core = ov.Core()
    default = device_precision(core, "CPU")
    capabilities = ", ".join(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return (
        f"CPU: {core.get_property('CPU', 'FULL_DEVICE_NAME')}; capabilities {capabilities}; "
        f"default inference precision {default}; OpenVINO {ov.get_version()}"
    )


def markdown_table(rows: list[CeilingRow]) -> str:
    lines = [
        device_line(),
        "",
        "| workload | f32 FPS (kernels) | default FPS (kernels) | INT8 FPS (kernels) | INT8 / default | INT8 / f32 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        cells = [f"{row.runs[name].fps:.1f} ({row.runs[name].kernels})" for name in RUNS]
        lines.append(
            f"| {row.workload} | {' | '.join(cells)} | {row.ratio('default'):.2f}x | {row.ratio('f32'):.2f}x |"
        )
    return "\n".join(lines)
