"""The legacy-OpenVINO worker: a small program of its own that runs inference for a node on OpenVINO 2022.3 LTS.

OpenVINO 2023.0 removed the MYRIAD plugin (Neural Compute Stick 2), and 2022.3's Python bindings exist for
Python 3.7-3.10 only, while posefleet needs 3.11. So a node (Python 3.11, its own OpenVINO or none) starts
this file with the old interpreter (``python3.9 legacy_worker.py``); the node keeps JPEG decoding,
pre-processing, pose decoding and gRPC, and only tensors cross, over the worker's stdin and stdout.

It needs NumPy and ``openvino.runtime`` (2022.3) and nothing of posefleet; it runs on Python 3.7 and later.

Messages both ways: an 8-byte header (big-endian lengths of the JSON part and of the payload), the JSON,
the payload. The worker says ``hello`` (its OpenVINO and Python versions, the devices it sees) or why it
cannot start; then answers ``load`` (an IR, a device, a config: the requests the device wants and the
output names), ``infer`` (a tensor in, every output back, by request id; up to the device's optimal
number at once) and ``ping``.
"""

from __future__ import annotations

import json
import struct
import sys
import threading
from typing import Any, BinaryIO

HEADER = struct.Struct(">II")


class Channel:
    def __init__(self, reader: BinaryIO, writer: BinaryIO) -> None:
        self.reader = reader
        self.writer = writer
        self.lock = threading.Lock()

    def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        data = json.dumps(header).encode()
        with self.lock:
            self.writer.write(HEADER.pack(len(data), len(payload)) + data + payload)
            self.writer.flush()

    def _read(self, size: int) -> bytes | None:
        chunks: list[bytes] = []
        while size:
            chunk = self.reader.read(size)
            if not chunk:
                return None
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def receive(self) -> tuple[dict[str, Any] | None, bytes]:
        head = self._read(HEADER.size)
        if head is None:
            return None, b""
        size, payload_size = HEADER.unpack(head)
        data = self._read(size)
        payload = self._read(payload_size) if payload_size else b""
        if data is None or payload is None:
            return None, b""
        return json.loads(data.decode()), payload


def main() -> int:
    channel = Channel(sys.stdin.buffer, sys.stdout.buffer)
    sys.stdout = sys.stderr  # whatever OpenVINO or NumPy print must not reach the protocol
    try:
        import numpy as np
        from openvino.runtime import AsyncInferQueue, Core, get_version
    except ImportError as exc:
        channel.send({"op": "hello", "ok": False, "error": f"cannot import NumPy and openvino.runtime: {exc}"})
        return 3
    core = Core()
    channel.send(
        {
            "op": "hello",
            "ok": True,
            "openvino": get_version(),
            "python": sys.version.split()[0],
            "devices": list(core.available_devices),
        }
    )
    state: dict[str, Any] = {}

    def done(request: Any, tag: int) -> None:
        try:
            names, blobs = [], []
            for i, output in enumerate(state["compiled"].outputs):
                data = np.ascontiguousarray(request.get_output_tensor(i).data)
                names.append({"name": output.get_any_name(), "dtype": str(data.dtype), "shape": list(data.shape)})
                blobs.append(data.tobytes())
            channel.send({"id": tag, "ok": True, "outputs": names}, b"".join(blobs))
        except Exception as exc:  # reported to the node, never lost in OpenVINO's thread
            channel.send({"id": tag, "ok": False, "error": f"inference failed: {exc}"})

    while True:
        header, payload = channel.receive()
        if header is None:  # the node closed the pipe
            if "queue" in state:
                state["queue"].wait_all()
            return 0
        op, tag = header.get("op"), header.get("id")
        try:
            if op == "ping":
                channel.send({"id": tag, "ok": True})
            elif op == "load":
                compiled = core.compile_model(core.read_model(header["xml"]), header["device"], header["config"])
                try:
                    requests = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
                except RuntimeError:
                    requests = 1
                queue = AsyncInferQueue(compiled, requests)
                queue.set_callback(done)
                state.update(compiled=compiled, queue=queue)
                outputs = [output.get_any_name() for output in compiled.outputs]
                channel.send({"id": tag, "ok": True, "requests": requests, "outputs": outputs})
            elif op == "infer":
                if "queue" not in state:
                    raise RuntimeError("no model loaded")
                tensor = np.frombuffer(bytearray(payload), dtype=header["dtype"]).reshape(header["shape"])
                state["queue"].start_async({0: tensor}, tag)  # waits while every request is busy
            else:
                raise RuntimeError(f"unknown operation {op!r}")
        except Exception as exc:
            lines = str(exc).strip().splitlines()
            channel.send({"id": tag, "ok": False, "error": lines[0] if lines else type(exc).__name__})


if __name__ == "__main__":
    sys.exit(main())
