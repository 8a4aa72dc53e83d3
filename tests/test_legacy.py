"""The NCS2 path for real: OpenVINO 2022.3 LTS (the last with MYRIAD) in a legacy worker under Python 3.7 and 3.9.

The worker is tested with device CPU standing in for MYRIAD (no stick here): the same 2022.3 runtime, the same
process boundary, the same static-shape IR. The venvs come from PyPI's openvino 2022.3 wheels and are kept in
``$POSEFLEET_HOME/legacy-venvs`` between runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from posefleet.node.engine.runtime import EngineError, EngineOptions, PoseEngine
from posefleet.node.tools.media import frames
from pyenvs import PYENV, legacy_venv

SIZE = (257, 257)


@pytest.fixture(scope="module", params=["3.7", "3.9"])
def legacy_python(request: pytest.FixtureRequest) -> Path:
    return legacy_venv(str(request.param))


def clip(assets: Path, count: int = 30) -> list[np.ndarray]:
    return [f for i, f in zip(range(count), frames(assets / "video" / "pose_1.mp4"), strict=False)]


def test_the_worker_gives_the_in_process_keypoints(models: dict[str, Path], assets: Path, legacy_python: Path) -> None:
    """PoseNet 0.50 at 257x257 through OpenVINO 2022.3 in the worker: the same poses as this process's
    OpenVINO, keypoints within 1 px (measured: 1e-4 px); the worker's requests, restarts after a crash."""
    here = PoseEngine(models["posenet050"], EngineOptions(input_size=SIZE, inference_precision="f32"))
    there = PoseEngine(models["posenet050"], EngineOptions(input_size=SIZE, legacy_python=str(legacy_python)))
    try:
        assert there.kernels.startswith("OpenVINO 2022.3") and there.optimal_requests >= 1
        worst = 0.0
        for frame in clip(assets):
            a, b = here.infer(frame).poses, there.infer(frame).poses
            assert len(a) == len(b) >= 1
            gaps = [float(np.abs(x.keypoints[:, :2] - y.keypoints[:, :2]).max()) for x, y in zip(a, b, strict=True)]
            worst = max(worst, *gaps)
        print(f"{legacy_python}: largest keypoint difference {worst:.2e} px")
        assert worst <= 1.0
        adapter = there.adapter
        proc = adapter._proc  # type: ignore[attr-defined]
        proc.kill()  # the worker dies: the next request starts it again and loads the model again
        proc.wait()
        again = there.infer(clip(assets, 1)[0]).poses
        assert again and adapter.restarts == 1  # type: ignore[attr-defined]
    finally:
        there.close()


def test_the_worker_says_what_is_missing(models: dict[str, Path], tmp_path: Path) -> None:
    """No interpreter, an interpreter without OpenVINO 2022.3, a device the worker does not see: one line each."""
    cases = [
        (str(tmp_path / "no-python"), "CPU", "interpreter .* not found"),
        (next(iter(sorted(PYENV.glob("3.9.*/bin/python"))), None), "CPU", "cannot import NumPy and openvino.runtime"),
    ]
    for python, device, message in cases:
        if python is None:
            continue
        with pytest.raises(EngineError, match=message):
            PoseEngine(models["posenet050"], EngineOptions(input_size=SIZE, device=device, legacy_python=str(python)))
    legacy = legacy_venv("3.9")
    with pytest.raises(EngineError, match=r"device MYRIAD; the worker's OpenVINO sees: CPU"):
        PoseEngine(models["posenet050"], EngineOptions(input_size=SIZE, device="MYRIAD", legacy_python=str(legacy)))


async def test_a_node_serves_the_clip_through_the_worker_to_a_coordinator(
    models: dict[str, Path], assets: Path
) -> None:
    """A real node (--legacy-python, Python 3.9 + OpenVINO 2022.3 doing the inference) behind a real
    coordinator: the sample clip streamed as a camera, every frame OK, keypoints within 1 px of this
    process's OpenVINO on the same JPEG frames."""
    import asyncio
    import time

    import cv2
    from nodes import NodeProcess, jpeg
    from posefleet.clients.local_fleet import start_coordinator
    from posefleet.clients.sdk import PosefleetClient, encode_frame
    from posefleet.common.processes import stop_all
    from posefleet.v1 import pose_pb2

    legacy = legacy_venv("3.9")
    node = NodeProcess(models["posenet050"], "--input-size", "257x257", "--legacy-python", str(legacy))
    coord = start_coordinator(None, "--no-discovery", "--node", node.address, tls=None)
    data = [jpeg(f) for f in clip(assets, 60)]
    try:
        async with PosefleetClient(f"127.0.0.1:{coord.port}", tls=None) as client:
            nodes = await client.wait_for_nodes(1)
            assert "OpenVINO 2022.3" in nodes[0].info.precision, nodes[0].info.precision

            async def gen() -> AsyncIterator[pose_pb2.Frame]:
                for seq, payload in enumerate(data):
                    yield encode_frame(payload, camera_id="ncs", sequence=seq)
                    await asyncio.sleep(1 / 30)

            t0 = time.monotonic()
            results = [r async for r in client.stream_camera(gen())]
            elapsed = time.monotonic() - t0
    finally:
        stop_all([coord, node.running])
    assert [r.status for r in results] == [pose_pb2.RESULT_STATUS_OK] * len(data)
    here = PoseEngine(models["posenet050"], EngineOptions(input_size=SIZE, inference_precision="f32"))
    worst = 0.0
    for payload, result in zip(data, results, strict=True):
        image = np.asarray(cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR), np.uint8)
        mine = here.infer(image).poses
        theirs = [np.array([(k.x, k.y) for k in p.keypoints]) for p in result.poses]
        assert len(mine) == len(theirs)
        worst = max([worst, *(float(np.abs(a.keypoints[:, :2] - b).max()) for a, b in zip(mine, theirs, strict=True))])
    print(f"{len(results)} frames through the 2022.3 worker in {elapsed:.1f} s; largest difference {worst:.2e} px")
    assert worst <= 1.0
