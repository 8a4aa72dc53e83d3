"""Auditing nodes (hardening, second pass, item 6): a node that answers plausible but wrong poses, found by
sending a small share of frames to a second node and a referee, quarantined and reported. Unit tests of the
agreement measure, and a real cluster: two PoseNet nodes and a liar beside them."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from nodes import NodeProcess, jpeg, write_report
from posefleet.clients.local_fleet import start_coordinator
from posefleet.clients.sdk import PosefleetClient, encode_frame
from posefleet.merge.agreement import agreement
from posefleet.node.tools.media import frames
from posefleet.v1 import node_pb2, pose_pb2
from test_tls import RogueNode

OK = pose_pb2.RESULT_STATUS_OK


def person(x: float, y: float, scale: float = 1.0) -> np.ndarray:
    """A standing person's 17 COCO keypoints around (x, y), all scored 0.9."""
    offsets = [(0, -80), (-8, -88), (8, -88), (-16, -84), (16, -84), (-30, -50), (30, -50), (-40, -10), (40, -10),
               (-45, 25), (45, 25), (-20, 30), (20, 30), (-22, 90), (22, 90), (-24, 150), (24, 150)]  # fmt: skip
    points = np.array([(x + dx * scale, y + dy * scale, 0.9) for dx, dy in offsets], np.float32)
    return points


def test_answers_agree_to_numeric_noise_and_disagree_when_moved_or_missing() -> None:
    a = [person(300, 200), person(600, 220)]
    rng = np.random.default_rng(0)
    noisy = [p + np.concatenate([rng.normal(0, 0.5, (17, 2)), np.zeros((17, 1))], axis=1).astype(np.float32) for p in a]
    assert agreement(a, noisy) > 0.95  # two honest nodes: the same people, within half a pixel
    assert agreement(a, list(reversed(noisy))) > 0.95  # order does not matter
    assert agreement(a, [person(300, 200)]) == pytest.approx(0.5, abs=0.05)  # one person missing
    assert agreement(a, [person(420, 260), person(700, 300)]) < 0.3  # plausible people, wrong places
    assert agreement([], []) == 1.0 and agreement(a, []) == 0.0


class LyingNode(RogueNode):
    """A node with every right answer but one: it finds a plausible person where there is none."""

    def __init__(self, model_id: str) -> None:
        super().__init__("liar", None)
        self.model_id = model_id

    async def GetInfo(self, request: node_pb2.GetInfoRequest, context: grpc.aio.ServicerContext) -> pose_pb2.NodeInfo:
        return pose_pb2.NodeInfo(node_id="liar", model_id=self.model_id, model_family="posenet", capacity=8)

    async def EstimateStream(
        self, request_iterator: AsyncIterator[pose_pb2.Frame], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pose_pb2.PoseResult]:
        names = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                 "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                 "right_knee", "left_ankle", "right_ankle"]  # fmt: skip
        fake = pose_pb2.Pose(
            score=0.8,
            keypoints=[pose_pb2.Keypoint(name=n, x=float(x), y=float(y), score=0.9)
                       for n, (x, y, _) in zip(names, person(90, 120, 0.6), strict=True)],
        )  # fmt: skip
        async for frame in request_iterator:
            self.frames += 1
            await asyncio.sleep(0.02)  # as fast as a real node: it gets its share of frames
            yield pose_pb2.PoseResult(
                status=OK, sequence=frame.sequence, node_id="liar", poses=[fake], image_width=257, image_height=257
            )


async def test_a_node_answering_plausible_wrong_poses_is_quarantined(models: dict[str, Path], assets: Path) -> None:
    """Two real PoseNet nodes and a liar serve one camera (the sample clip at 15 FPS). At the default audit share
    (3%), the liar is quarantined well within 60 s, reported in `posefleet status`, and gets no frame after;
    the audit's cost is the share of extra node answers. With POSEFLEET_AUDIT_REPORT=FILE.md the figures are
    written there (``make bench-audit``: bench/audit.md)."""
    clip = [
        jpeg(cv2.resize(f, (257, 257), interpolation=cv2.INTER_AREA)) for f in frames(assets / "video" / "pose_1.mp4")
    ]
    nodes = [
        NodeProcess(models["posenet075"], "--input-size", "257x257", "--no-advertise", name=f"honest-{i}")
        for i in range(2)
    ]
    liar = LyingNode("posenet-mobilenet-v1-075-s16")
    port = await liar.start(advertise=False)
    static = [a for n in [*(n.address for n in nodes), f"127.0.0.1:{port}"] for a in ("--node", n)]
    coord = start_coordinator(None, "--no-discovery", *static, tls=None)
    address = f"127.0.0.1:{coord.port}"
    caught: float | None = None
    try:
        async with PosefleetClient(address, tls=None) as client:
            await client.wait_for_nodes(3, timeout=60)
            started = time.monotonic()
            stop = asyncio.Event()

            async def camera() -> list[pose_pb2.PoseResult]:
                async def gen() -> AsyncIterator[pose_pb2.Frame]:
                    for i in range(15 * 90):
                        if stop.is_set():
                            return
                        await asyncio.sleep(max(0.0, started + i / 15 - time.monotonic()))
                        yield encode_frame(clip[i % len(clip)], camera_id="door", sequence=i)

                return [r async for r in client.stream_camera(gen())]

            streaming = asyncio.create_task(camera())
            while time.monotonic() - started < 75:
                stats = await client.stats()
                liar_status = next(n for n in stats.nodes if n.address.endswith(f":{port}"))
                if "quarantined" in liar_status.last_error:
                    caught = time.monotonic() - started
                    break
                await asyncio.sleep(0.25)
            liar_frames_when_caught = liar.frames
            await asyncio.sleep(3.0)  # the camera goes on: nothing more reaches the liar
            stop.set()
            results = await streaming
            stats = await client.stats()
            from posefleet.clients.status import format_stats

            shown = format_stats(address, stats)
    finally:
        coord.stop()
        await liar.stop()
        for n in nodes:
            n.stop()
    answered = sum(n.frames_done for n in stats.nodes)
    camera_ok = sum(r.status == OK for r in results)
    extra = answered - len(results)
    extra_share = round(extra / max(1, len(results)), 3)
    figures: dict[str, object] = {
        "audit_share": 0.03,
        "caught_after_s": round(caught, 1) if caught is not None else None,
        "camera_frames": len(results),
        "camera_ok": camera_ok,
        "frames_the_liar_answered_before": liar_frames_when_caught,
        "node_answers": answered,
        "extra_node_answers": extra,
        "extra_share": extra_share,
    }
    print(json.dumps(figures))
    assert caught is not None and caught <= 60, figures
    assert liar.frames <= liar_frames_when_caught + 8, "after quarantine the liar gets no more frames"
    assert "quarantined: its answers disagreed with other nodes'" in shown, shown
    assert extra_share <= 0.15, figures  # the audit copies, and a referee on each disagreement
    if report := os.environ.get("POSEFLEET_AUDIT_REPORT"):
        about = [
            "`make bench-audit` (tests/test_audit.py): two real PoseNet 0.75 nodes and a liar (a node that",
            "answers every frame OK with a plausible person where there is none) serve one camera, the sample",
            "clip at 15 FPS, until the coordinator quarantines the liar. Extra node answers are the audit's",
            "copies (and a referee for each disagreement) over the camera's frames: its cost in node work.",
        ]
        write_report(report, "Auditing nodes: catching a node that answers plausible but wrong poses", about, figures)
