"""Regenerate the Python code of the posefleet.v1 contract (``make proto``).

Usage: ``python proto/generate.py [OUTDIR]`` (default: proto/, next to the .proto files).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
SOURCES = sorted((PROTO_ROOT / "posefleet" / "v1").glob("*.proto"))


def generate(outdir: Path) -> None:
    include = Path(grpc_tools.__file__).parent / "_proto"
    # protoc finds the mypy-protobuf plugins (protoc-gen-mypy, protoc-gen-mypy_grpc) on PATH.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    outdir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={outdir}",
        f"--grpc_python_out={outdir}",
        f"--mypy_out={outdir}",
        f"--mypy_grpc_out={outdir}",
        *(str(p.relative_to(PROTO_ROOT)) for p in SOURCES),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO_ROOT)
