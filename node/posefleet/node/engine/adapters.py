"""Inference backends as adapters (the OpenVINO model_api pattern: the runtime apart from the model family).

A ``PoseEngine`` prepares the model graph (its family's pre-processing folded in) and hands it to an
adapter, which compiles it for a device and makes infer requests: ``request.infer(pixels)`` returns the
outputs by name. Two adapters run inference:

- ``OpenVINOAdapter``: this process's OpenVINO (current releases: CPU, GPU, NPU);
- ``LegacyWorkerAdapter``: OpenVINO 2022.3 LTS in a worker process of its own (``legacy_worker.py``) started
  with an older interpreter, for devices current OpenVINO dropped: the Neural Compute Stick 2 (MYRIAD);
- ``SimulatedAdapter`` (``simulated.py``): a stick that answers recorded outputs after a fixed latency, for the
  cluster scale benchmark only.

``runtime.adapter_for`` picks one from the engine's options.

Another accelerator (a Hailo-8L or a Coral Edge TPU on a Raspberry Pi) plugs in as one more adapter: ``load``
compiles or loads the graph for its runtime, ``new_request`` gives objects whose ``infer`` takes the
pre-processed NHWC uint8 pixels and returns the model's outputs by the names the model card uses.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from posefleet.common.errors import PosefleetError
from posefleet.node.engine.ov_compat import CompiledModel, Core, InferRequest, Model, Tensor, infer_in_place

Outputs = dict[str, npt.NDArray[Any]]
WORKER = Path(__file__).with_name("legacy_worker.py")
_HEADER_SIZE = 8


class AdapterError(PosefleetError):
    """An inference backend that cannot start or run, and why."""


class Request(Protocol):
    def infer(self, pixels: npt.NDArray[np.uint8]) -> Outputs:
        """The outputs by name for one NHWC uint8 tensor (valid until this request runs again)."""
        ...


class InferenceAdapter(Protocol):
    def load(self, model: Model, device: str, config: Mapping[str, Any]) -> None: ...

    def new_request(self) -> Request: ...

    @property
    def optimal_requests(self) -> int: ...

    @property
    def kernels(self) -> str: ...

    def close(self) -> None: ...


# -- this process's OpenVINO --------------------------------------------------------------------------
class OpenVINORequest:
    """An OpenVINO infer request that reads the caller's pixels in place and leaves its outputs in place."""

    def __init__(self, compiled: CompiledModel) -> None:
        self.request: InferRequest = compiled.create_infer_request()
        self._outputs = [(out.get_any_name(), out) for out in compiled.outputs]

    def infer(self, pixels: npt.NDArray[np.uint8]) -> Outputs:
        # The tensor does not keep ``pixels`` alive: the caller holds them until inference ends.
        self.request.set_input_tensor(Tensor(pixels, shared_memory=True))
        infer_in_place(self.request)
        return {name: self.request.get_tensor(out).data for name, out in self._outputs}


class OpenVINOAdapter:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.compiled: CompiledModel | None = None

    def load(self, model: Model, device: str, config: Mapping[str, Any]) -> None:
        self.compiled = self.core.compile_model(model, device, dict(config))

    def _model(self) -> CompiledModel:
        if self.compiled is None:
            raise AdapterError("no model loaded")
        return self.compiled

    def new_request(self) -> OpenVINORequest:
        return OpenVINORequest(self._model())

    @property
    def optimal_requests(self) -> int:
        try:
            return max(1, int(self._model().get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        except RuntimeError:
            return 1

    @property
    def kernels(self) -> str:
        return conv_kernels(self._model())

    def close(self) -> None:
        self.compiled = None


CONV_LAYERS = {"Convolution", "GroupConvolution"}


def conv_kernels(compiled: CompiledModel) -> str:
    """The precisions of a compiled model's convolution kernels as the device reports them, e.g. ``"I8"``
    or ``"bf16"`` (``"unknown"`` from devices that do not say)."""
    kinds = set()
    try:
        for op in compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if info["layerType"].astype(str) in CONV_LAYERS:
                kinds.add(info["primitiveType"].astype(str).rsplit("_", 1)[-1])
    except (RuntimeError, KeyError, AttributeError, TypeError):  # e.g. MYRIAD on OpenVINO 2022.3
        return "unknown"
    return "/".join(sorted(kinds)) or "none"


# -- OpenVINO 2022.3 in a worker process ----------------------------------------------------------------
class _Pending:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.header: dict[str, Any] = {}
        self.payload = b""


class LegacyWorkerAdapter:
    """OpenVINO 2022.3 LTS in ``legacy_worker.py`` under ``python`` (3.7-3.10, with NumPy and openvino 2022.3),
    its environment plus ``env`` (``LD_LIBRARY_PATH`` and the like for an archive install). Tensors cross the
    worker's stdin and stdout; a worker that dies is started again (and the model loaded again) by the next
    request, and every request it held fails with the reason."""

    def __init__(self, python: str | Path, env: Mapping[str, str] | None = None, start_timeout: float = 60.0) -> None:
        self.python = str(python)
        self.env = dict(env or {})
        self.start_timeout = start_timeout
        self.hello: dict[str, Any] = {}
        self.requests = 1
        self._dir = Path(tempfile.mkdtemp(prefix="posefleet-legacy-"))
        self._xml: Path | None = None
        self._device = ""
        self._config: dict[str, Any] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()  # process, pending table, ids
        self._write = threading.Lock()  # one message at a time on the worker's stdin
        self._life = threading.Lock()  # one start at a time
        self._next = 0
        self.restarts = 0

    # -- the process --------------------------------------------------------------------------------
    def _log_tail(self) -> str:
        try:
            lines = (self._dir / "worker.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return f" (its last words: {lines[-1]})" if lines else ""

    def _start(self) -> None:
        if shutil.which(self.python) is None and not Path(self.python).is_file():
            raise AdapterError(
                f"legacy worker: interpreter {self.python} not found (the node's legacy_python: a Python 3.7-3.10 "
                "with `pip install 'openvino==2022.3.*'`)"
            )
        # A copy of its own, run from a folder with nothing else: the worker's folder in this package holds
        # modules (``types``) that would shadow the standard library's on its sys.path.
        script = self._dir / WORKER.name
        shutil.copyfile(WORKER, script)
        log = (self._dir / "worker.log").open("ab")
        try:
            self._proc = subprocess.Popen(
                [self.python, "-u", str(script)],
                cwd=self._dir,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env={**os.environ, **self.env},
            )
        except OSError as exc:
            raise AdapterError(f"legacy worker: cannot start {self.python}: {exc}") from None
        finally:
            log.close()
        hello = _Pending()
        self._pending = {-1: hello}
        threading.Thread(target=self._read, args=(self._proc,), name="legacy-worker-reader", daemon=True).start()
        if not hello.done.wait(self.start_timeout):
            self._kill()
            raise AdapterError(f"legacy worker: {self.python} did not answer in {self.start_timeout:.0f} s")
        if not hello.header.get("ok"):
            self._kill()
            reason = hello.header.get("error") or f"it exited{self._log_tail()}"
            raise AdapterError(
                f"legacy worker ({self.python}): {reason}; it needs NumPy and OpenVINO 2022.3: "
                f"`{self.python} -m pip install 'openvino==2022.3.*'`"
            )
        self.hello = hello.header

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        """Answers to their requests, until the worker's stdout ends; then every open request fails."""
        assert proc.stdout is not None
        out = proc.stdout
        while True:
            head = out.read(_HEADER_SIZE)
            if len(head) < _HEADER_SIZE:
                break
            size, payload_size = int.from_bytes(head[:4], "big"), int.from_bytes(head[4:], "big")
            header = json.loads(out.read(size))
            payload = out.read(payload_size) if payload_size else b""
            with self._lock:
                pending = self._pending.pop(header.get("id", -1), None)
            if pending is not None:
                pending.header, pending.payload = header, payload
                pending.done.set()
        code = proc.wait()
        with self._lock:
            if self._proc is proc:
                self._proc = None
            left, self._pending = self._pending, {}
        for pending in left.values():
            pending.header = {"ok": False, "error": f"the worker exited (status {code}){self._log_tail()}"}
            pending.done.set()

    def _call(
        self, header: dict[str, Any], payload: bytes = b"", timeout: float = 120.0
    ) -> tuple[dict[str, Any], bytes]:
        with self._lock:
            restart = self._proc is None
        if restart:
            self._restart()
        with self._lock:
            proc = self._proc
            if proc is None or proc.stdin is None:
                raise AdapterError(f"legacy worker: not running{self._log_tail()}")
            tag = self._next = self._next + 1
            pending = self._pending[tag] = _Pending()
        data = json.dumps({**header, "id": tag}).encode()
        try:
            with self._write:
                proc.stdin.write(len(data).to_bytes(4, "big") + len(payload).to_bytes(4, "big") + data + payload)
                proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the reader fails the request with the worker's exit status
        if not pending.done.wait(timeout):
            raise AdapterError(f"legacy worker: no answer to {header.get('op')} in {timeout:.0f} s")
        if not pending.header.get("ok"):
            raise AdapterError(f"legacy worker: {pending.header.get('error', 'failed')}")
        return pending.header, pending.payload

    def _restart(self) -> None:
        with self._life:
            if self._proc is not None:
                return
            self._start()
            if self._xml is not None:
                self.restarts += 1
                self._load()

    def _load(self) -> None:
        assert self._xml is not None
        try:
            answer, _ = self._call(
                {"op": "load", "xml": str(self._xml), "device": self._device, "config": self._config}
            )
        except AdapterError as exc:
            seen = ", ".join(self.hello.get("devices", [])) or "none"
            raise AdapterError(f"{exc} (device {self._device}; the worker's OpenVINO sees: {seen})") from None
        self.requests = int(answer["requests"])

    # -- the adapter --------------------------------------------------------------------------------
    def load(self, model: Model, device: str, config: Mapping[str, Any]) -> None:
        """The graph saved as an IR the worker reads (static shapes: the model's input size), compiled there."""
        from openvino import save_model

        self._xml = self._dir / "model.xml"
        save_model(model, str(self._xml), compress_to_fp16=False)
        self._device, self._config = device, {k: str(v) for k, v in config.items()}
        with self._life:
            if self._proc is None:
                self._start()
        self._load()

    def new_request(self) -> LegacyRequest:
        return LegacyRequest(self)

    def infer(self, pixels: npt.NDArray[np.uint8]) -> Outputs:
        header, payload = self._call(
            {"op": "infer", "dtype": str(pixels.dtype), "shape": list(pixels.shape)}, pixels.tobytes()
        )
        outputs, offset = {}, 0
        for out in header["outputs"]:
            dtype = np.dtype(out["dtype"])
            count = int(np.prod(out["shape"])) if out["shape"] else 1
            outputs[out["name"]] = np.frombuffer(payload, dtype, count, offset).reshape(out["shape"])
            offset += count * dtype.itemsize
        return outputs

    def ping(self) -> bool:
        try:
            self._call({"op": "ping"}, timeout=5.0)
        except AdapterError:
            return False
        return True

    @property
    def optimal_requests(self) -> int:
        return self.requests

    @property
    def kernels(self) -> str:
        return f"OpenVINO {self.hello.get('openvino', '2022.3')} worker"

    def close(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)


class LegacyRequest:
    def __init__(self, adapter: LegacyWorkerAdapter) -> None:
        self.adapter = adapter

    def infer(self, pixels: npt.NDArray[np.uint8]) -> Outputs:
        return self.adapter.infer(pixels)
