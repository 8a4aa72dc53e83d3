"""A simulated accelerator as an inference adapter, for the cluster scale benchmark only (never a default).

It stands in for a stick like the NCS2 without needing one: each inference takes a fixed time
(``latency_ms``, e.g. 33.3 ms = 30 FPS) on one of ``parallel`` simulated devices and returns a *recorded*
real model output (``record_outputs``). Everything else is the node's own pipeline: the JPEG decoding,
the family's pre-processing and the real pose decoder run on the recorded outputs, as they would on a stick's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from posefleet.node.engine.adapters import AdapterError, Outputs
from posefleet.node.engine.ov_compat import Model

_SIZE_KEY = "__input_size__"


@dataclass(frozen=True)
class SimulatedAccelerator:
    """``record``: outputs saved by ``record_outputs``; ``latency_ms`` per inference on each of ``parallel``
    devices."""

    record: Path
    latency_ms: float = 33.3
    parallel: int = 1


def recorded_input_size(record: Path) -> tuple[int, int]:
    """The (height, width) the recorded outputs were computed at: the simulated node's input size."""
    try:
        with np.load(record) as data:
            h, w = (int(v) for v in data[_SIZE_KEY])
    except (OSError, KeyError, ValueError) as exc:
        raise AdapterError(
            f"{record} is not a recording of model outputs ('posefleet record-outputs'): {exc}"
        ) from None
    return h, w


def save_recording(path: Path, input_size: tuple[int, int], outputs: Outputs) -> None:
    """Save a model's raw outputs at ``input_size`` (``runtime.record_outputs`` runs the real model)."""
    arrays: dict[str, Any] = {_SIZE_KEY: np.array(input_size), **outputs}
    np.savez(str(path), **arrays)


class SimulatedAdapter:
    """``parallel`` devices that each take ``latency_ms`` per inference and answer the recorded outputs."""

    def __init__(self, spec: SimulatedAccelerator) -> None:
        self.spec = spec
        self._outputs: Outputs = {}
        self._devices = threading.BoundedSemaphore(spec.parallel)

    def load(self, model: Model, device: str, config: Mapping[str, Any]) -> None:
        """Check the recording fits the graph (its input size and output names); nothing is compiled."""
        h, w = recorded_input_size(self.spec.record)
        shape = list(model.input().get_partial_shape().to_shape())
        if shape[1:3] != [h, w]:
            raise AdapterError(f"{self.spec.record} was recorded at {h}x{w}, the model runs at {shape[1]}x{shape[2]}")
        with np.load(self.spec.record) as data:
            self._outputs = {k: data[k] for k in data.files if k != _SIZE_KEY}
        missing = {out.get_any_name() for out in model.outputs} - set(self._outputs)
        if missing:
            raise AdapterError(f"{self.spec.record} lacks the model's outputs {sorted(missing)}")

    def new_request(self) -> SimulatedRequest:
        return SimulatedRequest(self)

    def infer(self) -> Outputs:
        with self._devices:
            if self.spec.latency_ms:
                time.sleep(self.spec.latency_ms / 1e3)
        return self._outputs

    @property
    def optimal_requests(self) -> int:
        return self.spec.parallel

    @property
    def kernels(self) -> str:
        return "simulated"

    def close(self) -> None:
        self._outputs = {}


class SimulatedRequest:
    def __init__(self, adapter: SimulatedAdapter) -> None:
        self.adapter = adapter

    def infer(self, pixels: npt.NDArray[np.uint8]) -> Outputs:
        return self.adapter.infer()
