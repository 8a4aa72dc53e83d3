"""Run a converted pose model with OpenVINO: one compiled model, its family wrapper, inference per frame."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from posefleet.common.errors import PosefleetError
from posefleet.node.devices import DEVICES, InferencePrecision, known_device
from posefleet.node.engine.adapters import AdapterError, InferenceAdapter, LegacyWorkerAdapter, OpenVINOAdapter, Request
from posefleet.node.engine.card import IR_XML, ModelCard, load_card
from posefleet.node.engine.families import PoseModel, U8Image, create_model
from posefleet.node.engine.ov_compat import CompiledModel, Core, InferRequest
from posefleet.node.engine.simulated import SimulatedAccelerator, SimulatedAdapter, save_recording
from posefleet.node.engine.types import PoseResult, Timings

Hint = Literal["LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT"]


class EngineError(PosefleetError):
    """The model cannot be loaded or run as asked."""


@dataclass(frozen=True)
class EngineOptions:
    device: str = "CPU"
    hint: Hint = "LATENCY"
    #: Network input (height, width); ``None`` takes the card's fixed or default size.
    input_size: tuple[int, int] | None = None
    #: Infer requests the compiled model is tuned for; 0 asks the device for its optimal number.
    requests: int = 0
    #: Decoding parameters of the model's family (validated into its ``Params``).
    decode: Mapping[str, Any] = field(default_factory=dict)
    cache_dir: str | None = None
    #: Run inference in a legacy-OpenVINO worker under this interpreter (NCS2: OpenVINO 2022.3, Python
    #: 3.7-3.10), its environment plus ``legacy_env``; ``None``: this process's OpenVINO.
    legacy_python: str | None = None
    legacy_env: Mapping[str, str] = field(default_factory=dict)
    #: The device's ``INFERENCE_PRECISION_HINT``; ``None`` is posefleet's default, accuracy first: a CPU
    #: runs f32 unless the model card records that the CPU's own default (bf16 where it has bfloat16) keeps
    #: the model's accuracy (``accurate_precision``); other devices keep their own default.
    inference_precision: InferencePrecision | None = None
    #: A simulated accelerator instead of a device (the cluster scale benchmark only).
    simulated: SimulatedAccelerator | None = None


def adapter_for(core: Core, options: EngineOptions) -> InferenceAdapter:
    """The backend the options ask for: the simulated accelerator, the legacy worker when an interpreter is
    named, else this process's OpenVINO."""
    if options.simulated is not None:
        return SimulatedAdapter(options.simulated)
    if options.legacy_python:
        return LegacyWorkerAdapter(options.legacy_python, options.legacy_env)
    return OpenVINOAdapter(core)


def device_precision(core: Core, device: str) -> str:
    """The device's own default inference precision (``bf16`` on CPUs with bfloat16), ``""`` if it does not say."""
    try:
        value = core.get_property(device, "INFERENCE_PRECISION_HINT")
    except (RuntimeError, TypeError):  # e.g. MYRIAD on OpenVINO 2022.3
        return ""
    return str(value.to_string() if hasattr(value, "to_string") else value).lower()


def accurate_precision(card: ModelCard, core: Core, device: str) -> str | None:
    """The precision hint that keeps ``card``'s accuracy on ``device`` by default, ``None`` for its own.

    CPUs with bfloat16 run FP16 IRs in bf16, which costs some models accuracy (human-pose-estimation-0001:
    PCK@0.2 0.995 -> 0.938 on the sample clip): f32 unless the card records that the CPU's default keeps the
    model's accuracy. Other devices' defaults (a GPU's f16, an NPU's) are what they are built for.
    """
    if device.split(".", 1)[0].upper() != "CPU":
        return None
    default = device_precision(core, device)
    if default in ("", "f32") or card.keeps_accuracy_in(default):
        return None
    return "f32"


def valid_input_size(card: ModelCard, size: tuple[int, int]) -> tuple[int, int]:
    """``size`` if the card's model accepts it, else an ``EngineError`` naming the rule."""
    try:
        return card.input.check_size(size)
    except ValueError as exc:
        raise EngineError(f"model {card.model_id}: {exc}") from None


class PoseEngine:
    """A converted model compiled for one device and input size."""

    def __init__(self, model_dir: str | Path, options: EngineOptions | None = None, core: Core | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.options = options or EngineOptions()
        self.card = load_card(self.model_dir)
        self.core = core or Core()
        size = self.options.input_size or tuple(self.card.input.size or self.card.input.default_size)
        self.input_size: tuple[int, int] = valid_input_size(self.card, size)  # type: ignore[arg-type]
        self.model = create_model(self.card, self.input_size, self.options.decode)
        self.model.warm_up()
        self.adapter = adapter_for(self.core, self.options)
        self._compile(self.model)
        self._request = self.adapter.new_request()  # infer_raw
        self._run_request = self.adapter.new_request()  # infer: only ever used through run()
        self._lock = threading.Lock()

    # -- set-up -----------------------------------------------------------------------------
    def _compile(self, wrapper: PoseModel) -> None:
        device = self.options.device
        if not known_device(device):
            raise EngineError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
        config: dict[str, Any] = {"PERFORMANCE_HINT": self.options.hint}
        if self.options.requests:
            config["PERFORMANCE_HINT_NUM_REQUESTS"] = str(self.options.requests)
        precision = self.options.inference_precision or accurate_precision(self.card, self.core, device)
        if precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        if self.options.cache_dir:
            self.core.set_property({"CACHE_DIR": self.options.cache_dir})
        try:
            model = wrapper.configure(self.core.read_model(str(self.model_dir / IR_XML)))
            self.adapter.load(model, device, config)
        except AdapterError as exc:
            self.adapter.close()  # a worker that could not start leaves nothing behind
            raise EngineError(f"cannot run {self.card.model_id}: {exc}") from exc
        except RuntimeError as exc:
            available = ", ".join(self.core.available_devices)
            raise EngineError(
                f"cannot compile {self.card.model_id} for {device} (available: {available}): "
                f"{str(exc).strip().splitlines()[0]}"
            ) from exc

    @property
    def compiled(self) -> CompiledModel:
        """The in-process compiled model (benchmarks drive OpenVINO's own queues on it)."""
        if not isinstance(self.adapter, OpenVINOAdapter) or self.adapter.compiled is None:
            raise EngineError(f"{self.card.model_id} runs outside this process's OpenVINO: no in-process model")
        return self.adapter.compiled

    def new_request(self) -> Request:
        """An infer request of its own for one thread (``run``)."""
        return self.adapter.new_request()

    def close(self) -> None:
        self.adapter.close()

    @property
    def optimal_requests(self) -> int:
        return self.adapter.optimal_requests

    @property
    def kernels(self) -> str:
        """The precisions of the convolution kernels the device chose (``I8``, ``bf16``, ``f32``...)."""
        return self.adapter.kernels

    @property
    def model_id(self) -> str:
        return self.card.model_id

    # -- inference ---------------------------------------------------------------------------
    def outputs_of(self, request: InferRequest) -> dict[str, npt.NDArray[Any]]:
        """The outputs left in an in-process OpenVINO ``request``, by name: views of its memory, valid until it
        runs again (benchmarks on OpenVINO's own queues)."""
        return {out.get_any_name(): request.get_tensor(out).data for out in self.compiled.outputs}

    def infer_raw(self, tensor: U8Image, *, copy: bool = True) -> dict[str, npt.NDArray[Any]]:
        """One inference on an already prepared NHWC uint8 tensor, outputs by name.

        With ``copy=False`` the outputs are views valid until the next ``infer_raw`` (benchmarks).
        """
        outputs = self._request.infer(np.ascontiguousarray(tensor))
        return {name: data.copy() for name, data in outputs.items()} if copy else outputs

    def run(self, request: Request, image: U8Image, stream: str | None = None) -> PoseResult:
        """Poses in one BGR image on ``request``, which the caller uses from one thread at a time.

        ``stream`` names the camera or video the image is a frame of (families that follow a person from
        frame to frame keep their state per stream).

        An in-process request reads the pre-processed pixels in place (no copy) and its outputs are decoded
        where they lie. Afterwards its input tensor still points at the freed pixels, so a request
        given to ``run`` must only ever be used through ``run`` (which sets the input first).
        """
        t0 = time.perf_counter()
        tensor, meta = self.model.preprocess(image, stream)
        pixels = np.ascontiguousarray(tensor)  # alive until inference ends (a Tensor does not keep it)
        t1 = time.perf_counter()
        outputs = request.infer(pixels)
        t2 = time.perf_counter()
        poses = self.model.decode(outputs, meta)
        t3 = time.perf_counter()
        return PoseResult(poses, meta.source_size, Timings((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3))

    def infer(self, image: U8Image, stream: str | None = None) -> PoseResult:
        """Poses in one BGR image (thread-safe; serialised on one infer request)."""
        with self._lock:
            return self.run(self._run_request, image, stream)


def record_outputs(model_dir: Path, image: U8Image, path: Path, input_size: tuple[int, int] | None = None) -> None:
    """Run the real model once on ``image`` and save its raw outputs for the simulated accelerator."""
    engine = PoseEngine(model_dir, EngineOptions(input_size=input_size))
    try:
        tensor, _ = engine.model.preprocess(image)
        save_recording(path, engine.input_size, engine.infer_raw(tensor))
    finally:
        engine.close()


class NativeResolutionEngine:
    """Runs every image at the valid input size nearest its own, compiling each size once."""

    def __init__(self, model_dir: str | Path, options: EngineOptions | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.options = options or EngineOptions()
        self.card = load_card(self.model_dir)
        self.core = Core()
        self._engines: dict[tuple[int, int], PoseEngine] = {}

    def infer(self, image: U8Image, stream: str | None = None) -> PoseResult:
        size = self.card.input.nearest_size((image.shape[0], image.shape[1]))
        if size not in self._engines:
            opts = dataclasses.replace(self.options, input_size=size)
            self._engines[size] = PoseEngine(self.model_dir, opts, self.core)
        return self._engines[size].infer(image, stream)
