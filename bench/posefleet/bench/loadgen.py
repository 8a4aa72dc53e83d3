"""Drives the compiled EstimateStream load generator (``clients/loadgen/estimate_stream_load.cc``).

``posefleet bench --node`` runs its load generator on the same cores as the node. gRPC Python costs
about 0.25 ms of CPU per frame on the client side, the C++ client about half that, so with it the
node gets more of the machine, as it would with cameras on other hosts. ``make loadgen`` builds it;
$POSEFLEET_LOADGEN (or ``--loadgen``) names the binary.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import tempfile
from pathlib import Path

import grpc
from posefleet.common.errors import PosefleetError
from posefleet.v1 import node_pb2, node_pb2_grpc, pose_pb2


class LoadgenError(PosefleetError):
    """The compiled load generator is missing, failed, or its replies do not add up."""


def find_loadgen(path: Path | None = None) -> Path | None:
    """The load generator binary: ``path``, else $POSEFLEET_LOADGEN, else None (use the Python client)."""
    chosen = path or (Path(os.environ["POSEFLEET_LOADGEN"]) if os.environ.get("POSEFLEET_LOADGEN") else None)
    if chosen is None:
        return None
    if not (chosen.is_file() and os.access(chosen, os.X_OK)):
        raise LoadgenError(f"{chosen}: no load generator binary there (build it with `make loadgen`)")
    return chosen


def parse_replies(data: bytes) -> list[pose_pb2.PoseResult]:
    """The replies file: each PoseResult as a little-endian uint32 length and its bytes."""
    results, offset = [], 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise LoadgenError("replies file ends inside a length prefix")
        (size,) = struct.unpack_from("<I", data, offset)
        offset += 4
        results.append(pose_pb2.PoseResult.FromString(data[offset : offset + size]))
        offset += size
    return results


def native_stream_throughput(
    binary: Path, address: str, payload: bytes, frames: int, seconds: float
) -> tuple[float, int, int]:
    """(frames/s, capacity, frames answered OK) over one stream with the node's capacity as credit window."""
    with grpc.insecure_channel(address) as channel:
        capacity = node_pb2_grpc.PoseNodeStub(channel).GetInfo(node_pb2.GetInfoRequest(), timeout=10).capacity
    image = pose_pb2.Image(encoding=pose_pb2.IMAGE_ENCODING_JPEG, data=payload)
    with tempfile.TemporaryDirectory(prefix="posefleet-loadgen-") as tmp:
        frame_file, replies_file = Path(tmp) / "frame.bin", Path(tmp) / "replies.bin"
        frame_file.write_bytes(pose_pb2.Frame(camera_id="bench", image=image).SerializeToString())
        argv = [str(binary), address, str(frame_file), str(frames), str(seconds), str(capacity), str(replies_file)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
        try:
            summary = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError) as exc:
            raise LoadgenError(f"{binary} exited {proc.returncode}: {proc.stderr.strip()[-500:]}") from exc
        if proc.returncode != 0:
            raise LoadgenError(f"{binary}: stream ended with status {summary['code']}: {summary['message']}")
        results = parse_replies(replies_file.read_bytes())
    if sorted(r.sequence for r in results) != list(range(summary["sent"])):
        raise LoadgenError(f"{len(results)} replies for {summary['sent']} frames, or wrong sequence numbers")
    ok = sum(r.status == pose_pb2.RESULT_STATUS_OK for r in results)
    return len(results) / summary["seconds"], capacity, ok
