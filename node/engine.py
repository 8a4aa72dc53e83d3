"""Run a converted pose model with OpenVINO: sync calls, and an async infer queue for throughput."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from posefleet.node.models import openpose_decoder, posenet_decoder
from posefleet.node.models.card import IR_XML, ModelCard, load_card
from posefleet.node.models.types import PoseResult, Timings
from posefleet.node.models.wrappers import OpenPoseModel, PoseModel, PoseNetModel, U8Image
from posefleet.node.ov_compat import AsyncInferQueue, CompiledModel, Core, InferRequest, Tensor, infer_in_place

Hint = Literal["LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT"]
DEVICES = ("CPU", "GPU", "NPU", "AUTO", "MYRIAD")


class EngineError(Exception):
    """The model cannot be loaded or run as asked."""


@dataclass(frozen=True)
class EngineOptions:
    device: str = "CPU"
    hint: Hint = "LATENCY"
    #: Network input (height, width); ``None`` takes the card's fixed or default size.
    input_size: tuple[int, int] | None = None
    #: Infer requests for the async queue; 0 asks the device for its optimal number.
    requests: int = 0
    posenet: posenet_decoder.PoseNetDecodeParams = field(default_factory=posenet_decoder.PoseNetDecodeParams)
    openpose: openpose_decoder.OpenPoseDecodeParams = field(default_factory=openpose_decoder.OpenPoseDecodeParams)
    cache_dir: str | None = None


def valid_input_size(card: ModelCard, size: tuple[int, int]) -> tuple[int, int]:
    """Check ``size`` against the card; PoseNet sizes must be ``k * stride + 1``."""
    spec = card.input
    if spec.size is not None and tuple(spec.size) != tuple(size):
        raise EngineError(
            f"model {card.model_id} has a fixed input size {spec.size[0]}x{spec.size[1]}, not {size[0]}x{size[1]}"
        )
    m, o = spec.size_multiple, spec.size_offset
    if m > 1 and any(d < m + o or (d - o) % m for d in size):
        raise EngineError(f"input size {size[0]}x{size[1]} is invalid for {card.model_id}: each side must be k*{m}+{o}")
    return size


def native_input_size(card: ModelCard, image_hw: tuple[int, int]) -> tuple[int, int]:
    """The valid input size nearest an image's own size (for full-resolution runs)."""
    if card.input.size is not None:
        return tuple(card.input.size)  # type: ignore[return-value]
    m, o = card.input.size_multiple, card.input.size_offset
    return tuple(max(1, round((d - o) / m)) * m + o for d in image_hw)  # type: ignore[return-value]


class PoseEngine:
    """A converted model compiled for one device and input size."""

    def __init__(self, model_dir: str | Path, options: EngineOptions | None = None, core: Core | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.options = options or EngineOptions()
        self.card = load_card(self.model_dir)
        self.core = core or Core()
        size = self.options.input_size or tuple(self.card.input.size or self.card.input.default_size)
        self.input_size: tuple[int, int] = valid_input_size(self.card, size)  # type: ignore[arg-type]
        self.model = self._wrapper(self.input_size)
        self.model.warm_up()
        self.compiled = self._compile(self.model)
        self._outputs = [(out.get_any_name(), out) for out in self.compiled.outputs]
        self._request = self.compiled.create_infer_request()  # infer_raw: inputs copied in
        self._run_request = self.compiled.create_infer_request()  # infer: only ever used through run()
        self._lock = threading.Lock()

    # -- set-up -----------------------------------------------------------------------------
    def _wrapper(self, size: tuple[int, int]) -> PoseModel:
        if self.card.family == "posenet":
            return PoseNetModel(self.card, size, self.options.posenet)
        return OpenPoseModel(self.card, size, self.options.openpose)

    def _compile(self, wrapper: PoseModel) -> CompiledModel:
        device = self.options.device
        if device.split(":")[0].split(".")[0] not in DEVICES and not device.startswith(("AUTO:", "MULTI:", "HETERO:")):
            raise EngineError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
        config: dict[str, Any] = {"PERFORMANCE_HINT": self.options.hint}
        if self.options.requests:
            config["PERFORMANCE_HINT_NUM_REQUESTS"] = str(self.options.requests)
        if self.options.cache_dir:
            self.core.set_property({"CACHE_DIR": self.options.cache_dir})
        try:
            model = wrapper.configure(self.core.read_model(str(self.model_dir / IR_XML)))
            return self.core.compile_model(model, device, config)
        except RuntimeError as exc:
            available = ", ".join(self.core.available_devices)
            raise EngineError(
                f"cannot compile {self.card.model_id} for {device} (available: {available}): "
                f"{str(exc).strip().splitlines()[0]}"
            ) from exc

    @property
    def optimal_requests(self) -> int:
        try:
            return max(1, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        except RuntimeError:
            return 1

    @property
    def model_id(self) -> str:
        return self.card.model_id

    # -- inference ---------------------------------------------------------------------------
    def outputs_of(self, request: InferRequest) -> dict[str, npt.NDArray[Any]]:
        """The outputs left in ``request``, by name: views of its memory, valid until it runs again."""
        return {name: request.get_tensor(out).data for name, out in self._outputs}

    def infer_raw(self, tensor: U8Image, request: InferRequest | None = None) -> dict[str, npt.NDArray[Any]]:
        """One inference on an already prepared NHWC uint8 tensor, outputs by name (copies)."""
        req = request or self._request
        req.infer({0: tensor})
        return {name: data.copy() for name, data in self.outputs_of(req).items()}

    def run(self, request: InferRequest, image: U8Image) -> PoseResult:
        """Poses in one BGR image on ``request``, which the caller uses from one thread at a time.

        The request reads the pre-processed pixels in place (no copy) and its outputs are decoded
        where they lie. Afterwards its input tensor still points at the freed pixels, so a request
        given to ``run`` must only ever be used through ``run`` (which sets the input first).
        """
        t0 = time.perf_counter()
        tensor, meta = self.model.preprocess(image)
        pixels = np.ascontiguousarray(tensor)  # alive until inference ends (a Tensor does not keep it)
        t1 = time.perf_counter()
        request.set_input_tensor(Tensor(pixels, shared_memory=True))
        infer_in_place(request)
        t2 = time.perf_counter()
        poses = self.model.decode(self.outputs_of(request), meta)
        t3 = time.perf_counter()
        return PoseResult(poses, meta.source_size, Timings((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3))

    def infer(self, image: U8Image) -> PoseResult:
        """Poses in one BGR image (thread-safe; serialised on one infer request)."""
        with self._lock:
            return self.run(self._run_request, image)


class NativeResolutionEngine:
    """Runs every image at the valid input size nearest its own, compiling each size once."""

    def __init__(self, model_dir: str | Path, options: EngineOptions | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.options = options or EngineOptions()
        self.card = load_card(self.model_dir)
        self.core = Core()
        self._engines: dict[tuple[int, int], PoseEngine] = {}

    def infer(self, image: U8Image) -> PoseResult:
        size = native_input_size(self.card, (image.shape[0], image.shape[1]))
        if size not in self._engines:
            opts = dataclasses.replace(self.options, input_size=size)
            self._engines[size] = PoseEngine(self.model_dir, opts, self.core)
        return self._engines[size].infer(image)


ResultCallback = Callable[[PoseResult | BaseException, Any], None]


class AsyncPipeline:
    """Keeps up to ``jobs`` frames in flight on an OpenVINO ``AsyncInferQueue``.

    ``submit`` pre-processes on the caller's thread and blocks only while every request is busy;
    decoding runs in OpenVINO's completion callback, which then hands the result to ``callback``.
    """

    def __init__(self, engine: PoseEngine, callback: ResultCallback, jobs: int = 0, decode: bool = True) -> None:
        self.engine = engine
        self.jobs = jobs or engine.optimal_requests
        self.decode = decode
        self._callback = callback
        self._queue = AsyncInferQueue(engine.compiled, self.jobs)
        self._queue.set_callback(self._done)

    def submit(self, image: U8Image, userdata: Any = None) -> None:
        t0 = time.perf_counter()
        tensor, meta = self.engine.model.preprocess(image)
        self.submit_tensor(tensor, meta, userdata, preprocess_ms=(time.perf_counter() - t0) * 1e3)

    def submit_tensor(self, tensor: U8Image, meta: Any, userdata: Any = None, preprocess_ms: float = 0.0) -> None:
        self._queue.start_async({0: tensor}, (meta, userdata, preprocess_ms, time.perf_counter()))

    def _done(self, request: InferRequest, data: tuple[Any, Any, float, float]) -> None:
        meta, userdata, pre_ms, started = data
        t_inf = time.perf_counter()
        try:
            poses = []
            if self.decode:
                poses = self.engine.model.decode(self.engine.outputs_of(request), meta)
            timings = Timings(pre_ms, (t_inf - started) * 1e3, (time.perf_counter() - t_inf) * 1e3)
            result: PoseResult | BaseException = PoseResult(poses, meta.source_size, timings)
        except Exception as exc:  # handed to the caller, never lost in OpenVINO's thread
            result = exc
        self._callback(result, userdata)

    def wait_all(self) -> None:
        self._queue.wait_all()
