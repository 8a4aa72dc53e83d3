"""A Raspberry Pi's CPU for real: a node on Debian bookworm arm64 (the base of Raspberry Pi OS 64-bit) under
qemu-user emulation, with current OpenVINO's ARM CPU plugin.

Opt-in (``make test-arm64``; marker ``arm64``): emulated inference takes about 20 s a frame. The test builds an
arm64 root with debootstrap once (kept in ``$POSEFLEET_HOME/arm64-bookworm``), installs posefleet's wheel with
the ``node`` extra the way the Ansible role does (a venv of the OS's Python, pip from a wheelhouse of aarch64
wheels), converts PoseNet 0.50 there, serves it at 257x257 and compares its keypoints with x86's. With
``POSEFLEET_ARM64_REPORT=FILE.md`` it writes the figures (``bench/arm64.md``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from posefleet.clients.local_fleet import start_node
from posefleet.clients.sdk import encode_frame
from posefleet.node.convert import convert
from posefleet.node.engine.runtime import EngineOptions, PoseEngine
from posefleet.node.tools.media import frames
from posefleet.v1 import node_pb2, node_pb2_grpc, pose_pb2

pytestmark = [pytest.mark.arm64, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parents[1]
SIZE = (257, 257)
FRAMES = 3
MIRROR = "http://deb.debian.org/debian"
#: The aarch64 wheels a bookworm Pi (glibc 2.36, CPython 3.11) can install.
PLATFORMS = ["manylinux2014_aarch64", *(f"manylinux_2_{minor}_aarch64" for minor in range(17, 37))]
BINFMT = Path("/proc/sys/fs/binfmt_misc")
#: A clean environment inside the root (this machine's pip settings name files the root does not have).
CLEAN_ENV = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"]


def _need(tool: str) -> str:
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None)
    if path is None:
        pytest.fail(f"{tool} is missing: `make test-arm64` installs qemu-user-static and debootstrap")
    return path


def _emulation() -> None:
    """qemu-user for aarch64 registered with binfmt_misc (registered here when the machine has none)."""
    if not (BINFMT / "status").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=False)
    if not (BINFMT / "qemu-aarch64").exists():
        subprocess.run([_need("update-binfmts"), "--enable", "qemu-aarch64"], check=False)
    if not (BINFMT / "qemu-aarch64").exists():
        pytest.fail("cannot register qemu-aarch64 with binfmt_misc (needs root and a writable binfmt_misc)")


def _root() -> tuple[Path, float]:
    """The arm64 bookworm root (built once) and the seconds its build took (0 when it was kept)."""
    home = Path(os.environ.get("POSEFLEET_HOME", Path.home() / ".cache/posefleet"))
    root = home / "arm64-bookworm"
    if (root / ".ready").exists():  # holds the seconds its build took
        return root, float((root / ".ready").read_text() or 0)
    shutil.rmtree(root, ignore_errors=True)  # a build cut short (never mounted: mounts live inside _mounted)
    t0 = time.monotonic()
    packages = "python3,python3-venv,ca-certificates"
    subprocess.run(
        [_need("debootstrap"), "--arch=arm64", "--variant=minbase", f"--include={packages}", "bookworm", root, MIRROR],
        check=True,
        timeout=1800,
        stdout=subprocess.DEVNULL,
    )
    built = time.monotonic() - t0
    (root / ".ready").write_text(f"{built:.1f}")
    return root, built


@pytest.fixture(scope="module")
def arm64_root() -> Iterator[tuple[Path, float]]:
    """The root with /proc, /sys and /dev mounted for the length of the module."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("chroot and binfmt_misc need root on Linux")
    _emulation()
    root, built = _root()
    mounted: list[Path] = []
    try:
        for name in ("proc", "sys", "dev"):
            target = root / name
            subprocess.run(["mount", "--bind", f"/{name}", str(target)], check=True)
            mounted.append(target)
        yield root, built
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", "--lazy", str(target)], check=False)


def _chroot(root: Path, *argv: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLEAN_ENV, _need("chroot"), str(root), *argv], capture_output=True, text=True, check=True, timeout=timeout
    )


def _wheelhouse(house: Path) -> None:
    """posefleet's wheel and every dependency of its ``node`` extra, as aarch64 wheels for CPython 3.11."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(house), str(ROOT)],
        check=True,
        timeout=600,
    )
    wheel = next(house.glob("posefleet-*.whl"))
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    target = ["--python-version", "3.11", "--implementation", "cp", "--only-binary=:all:", *platforms]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", *target, "-d", str(house), f"{wheel}[node]"],
        check=True,
        timeout=1800,
    )


def _keypoints(poses: list[np.ndarray]) -> np.ndarray:
    return poses[0] if poses else np.zeros((17, 3))


def test_a_node_installs_and_serves_on_arm64(arm64_root: tuple[Path, float], assets: Path, tmp_path: Path) -> None:
    root, built = arm64_root
    work = root / "opt" / "posefleet-test"
    shutil.rmtree(work, ignore_errors=True)
    (work / "house").mkdir(parents=True)
    figures: dict[str, float | str] = {"root_build_s": round(built, 1)}

    t0 = time.monotonic()
    _wheelhouse(work / "house")
    figures["wheelhouse_s"] = round(time.monotonic() - t0, 1)
    t0 = time.monotonic()
    _chroot(root, "python3", "-m", "venv", "/opt/posefleet-test/venv")
    _chroot(
        root,
        "/opt/posefleet-test/venv/bin/pip",
        "install",
        "--quiet",
        "--no-index",
        "--find-links",
        "/opt/posefleet-test/house",
        "posefleet[node]",
    )
    figures["install_s"] = round(time.monotonic() - t0, 1)
    versions = _chroot(
        root,
        "/opt/posefleet-test/venv/bin/python",
        "-c",
        "import json, platform, openvino; "
        "print(json.dumps([platform.machine(), platform.python_version(), openvino.get_version()]))",
    )
    machine, python, openvino = json.loads(versions.stdout)
    assert machine == "aarch64"
    figures.update(machine=machine, python=python, openvino=openvino)

    source = assets / "models/posenet/mobilenet_v1_050/model-mobilenet_v1_050.pb"
    shutil.copy(source, work / source.name)
    t0 = time.monotonic()
    _chroot(
        root,
        "/opt/posefleet-test/venv/bin/posefleet",
        "convert",
        f"/opt/posefleet-test/{source.name}",
        "-o",
        "/opt/posefleet-test/posenet050",
    )
    figures["convert_s"] = round(time.monotonic() - t0, 1)

    clip = [f for _, f in zip(range(FRAMES), frames(assets / "video" / "pose_1.mp4"), strict=False)]
    x86_model = tmp_path / "posenet050"
    convert(source, x86_model)
    x86 = PoseEngine(x86_model, EngineOptions(input_size=SIZE))
    expected = [_keypoints([p.keypoints for p in x86.infer(f).poses]) for f in clip]
    x86.close()

    command = [*CLEAN_ENV, _need("chroot"), str(root), "/opt/posefleet-test/venv/bin/posefleet"]
    t0 = time.monotonic()
    node = start_node(
        Path("/opt/posefleet-test/posenet050"),
        "pi-arm64",
        tmp_path / "node.log",
        "--input-size",
        "257x257",
        "--no-advertise",
        tls=None,
        timeout=900,
        command=command,
    )
    figures["node_start_s"] = round(time.monotonic() - t0, 1)
    try:

        async def serve() -> tuple[list[np.ndarray], list[float]]:
            got, seconds = [], []
            async with grpc.aio.insecure_channel(f"127.0.0.1:{node.port}") as channel:
                stub = node_pb2_grpc.PoseNodeStub(channel)
                info = await stub.GetInfo(node_pb2.GetInfoRequest())
                figures["precision"] = info.precision
                for i, frame in enumerate(clip):
                    png = cv2.imencode(".png", frame)[1].tobytes()  # lossless: both sides see the same pixels
                    t = time.monotonic()
                    reply = await stub.Estimate(encode_frame(png, sequence=i), timeout=600)
                    seconds.append(time.monotonic() - t)
                    assert reply.status == pose_pb2.RESULT_STATUS_OK, reply.error
                    got.append(
                        _keypoints([np.array([[k.x, k.y, k.score] for k in pose.keypoints]) for pose in reply.poses])
                    )
            return got, seconds

        got, seconds = asyncio.run(serve())
    finally:
        node.stop()
    worst = max(
        float(np.abs(a[:, :2] - b[:, :2])[(a[:, 2] > 0.3) | (b[:, 2] > 0.3)].max(initial=0.0))
        for a, b in zip(got, expected, strict=True)
    )
    figures.update(seconds_per_frame=round(float(np.median(seconds)), 1), worst_keypoint_px=round(worst, 3))
    print(json.dumps(figures))
    assert all(len(g) and g[:, 2].max() > 0.3 for g in got), "the arm64 node found the person in every frame"
    assert worst <= 2.0, f"arm64 keypoints differ from x86's by {worst:.2f} px"
    if report := os.environ.get("POSEFLEET_ARM64_REPORT"):
        _write_report(Path(report), figures)


def _write_report(path: Path, figures: dict[str, float | str]) -> None:
    lines = [
        "# A node on arm64 (Debian bookworm, the base of Raspberry Pi OS 64-bit) under qemu-user emulation",
        "",
        "Measured by `make test-arm64` (tests/test_arm64.py) on an x86-64 machine: a debootstrap root, posefleet's",
        "wheel with the `node` extra installed from a wheelhouse of aarch64 wheels as the Ansible role installs it,",
        f"PoseNet 0.50 converted in the root and served at 257x257 on OpenVINO's ARM CPU plugin, {FRAMES} frames of",
        "the sample clip compared with x86's keypoints (joints either side scores above 0.3). The seconds measure",
        "qemu's emulation of the ARM CPU plugin on this machine, not a Pi.",
        "",
        "| figure | value |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in figures.items()),
        "",
    ]
    path.write_text("\n".join(lines))
    path.with_suffix(".json").write_text(json.dumps(figures, indent=2) + "\n")
