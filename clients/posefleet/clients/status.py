"""``posefleet status``: what a coordinator or a node reports, optionally waiting until it is ready.

Operators read the fleet with it; provisioning waits with it. The rolling upgrade restarts a node,
waits until it serves (gRPC health) and until every coordinator routes frames to it, and only then
drains the next node, so the fleet never runs out of nodes while cameras stream.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass

import grpc
from google.protobuf.json_format import MessageToDict
from posefleet.clients.sdk import PosefleetClient
from posefleet.common import tls
from posefleet.common.errors import PosefleetError
from posefleet.common.health import SERVING, health
from posefleet.common.tls import TlsFiles, aio_channel, explain_refusal, role_name
from posefleet.v1 import coordinator_pb2, node_pb2, node_pb2_grpc, pose_pb2
from posefleet.v1.discovery import NODE_HEALTH_SERVICE

_POLL_S = 0.2


@dataclass
class NodeReport:
    """A node's own view: its health and, when it answers, its info."""

    address: str
    health: str
    info: pose_pb2.NodeInfo | None = None
    error: str = ""

    @property
    def serving(self) -> bool:
        return self.health == SERVING


async def node_report(address: str, tls: TlsFiles | None, timeout: float = 2.0) -> NodeReport:
    """One health check and GetInfo (GetInfo needs an admin certificate); a node that does not answer is
    reported, not raised."""
    async with aio_channel(address, tls, role_name("node")) as channel:
        try:
            status = await health(channel, NODE_HEALTH_SERVICE, timeout)
        except grpc.aio.AioRpcError as exc:
            return NodeReport(address, "UNREACHABLE", error=f"{exc.code().name}: {exc.details() or ''}".strip())
        if status != SERVING:
            return NodeReport(address, status)
        try:
            info = await node_pb2_grpc.PoseNodeStub(channel).GetInfo(node_pb2.GetInfoRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return NodeReport(address, status, error=f"GetInfo: {exc.code().name}")
        return NodeReport(address, status, info)


async def wait_node(address: str, tls: TlsFiles | None, timeout: float) -> NodeReport:
    """Poll until the node is SERVING; returns the last report (not serving when ``timeout`` ran out)."""
    deadline = time.monotonic() + timeout
    while True:
        report = await node_report(address, tls)
        if report.serving or time.monotonic() >= deadline:
            return report
        await asyncio.sleep(_POLL_S)


def not_routed(stats: coordinator_pb2.Stats, node_ids: list[str]) -> list[str]:
    """The wanted node ids the coordinator does not route frames to (unknown or not healthy)."""
    healthy = {n.info.node_id for n in stats.nodes if n.healthy}
    return [node_id for node_id in node_ids if node_id not in healthy]


async def wait_coordinator(
    address: str, tls: TlsFiles | None, node_ids: list[str], timeout: float
) -> tuple[coordinator_pb2.Stats, str]:
    """Poll GetStats until every wanted node is routed to; returns the stats and what is still missing."""
    deadline = time.monotonic() + timeout
    stats, missing = coordinator_pb2.Stats(), "no answer"
    async with PosefleetClient(address, tls=tls) as client:
        while True:
            try:
                stats = await client.stats()
                left = not_routed(stats, node_ids)
                missing = f"not routed to: {', '.join(left)}" if left else ""
            except grpc.aio.AioRpcError as exc:
                missing = f"coordinator unreachable: {exc.code().name}"
                if exc.code() == grpc.StatusCode.UNAVAILABLE and tls is not None:
                    missing += f": {await explain_refusal(address, tls, role_name('coordinator'))}"
            if not missing or time.monotonic() >= deadline:
                return stats, missing
            await asyncio.sleep(_POLL_S)


def format_node_report(report: NodeReport) -> str:
    line = f"node {report.address}: {report.health}"
    if report.info is not None:
        i = report.info
        line += (
            f", {i.node_id}, {i.model_id} ({i.model_family}) {i.input_width}x{i.input_height} on {i.device}"
            f" ({i.precision}),"
            f" capacity {i.capacity}, posefleet {i.software_version}, OpenVINO {i.openvino_version}"
        )
    return line + (f" ({report.error})" if report.error else "")


def format_stats(address: str, stats: coordinator_pb2.Stats) -> str:
    links = [n for n in stats.nodes if not n.ignored]
    lines = [f"coordinator {address}: {sum(n.healthy for n in links)} of {len(links)} nodes routed to"]
    for n in links:
        state = "routed" if n.healthy else "out"
        precision = f" ({n.info.precision})" if n.info.precision else ""
        # A node's id is the one its certificate proved; before that, what its advert claims, marked so.
        who = n.info.node_id or (f"{n.claimed_id} (claimed, not proved)" if n.claimed_id else "(no id proved)")
        line = (
            f"  node {who} {n.address} [{n.source}] {state}: {n.info.model_id or '-'}{precision},"
            f" in flight {n.in_flight}/{n.info.capacity}, done {n.frames_done}, failed {n.frames_failed}"
        )
        lines.append(line + (f" ({n.last_error})" if n.last_error else ""))
    for n in stats.nodes:
        if n.ignored:
            where = f" at {n.address}" if n.address else ""
            lines.append(f"  advert {n.claimed_id or '?'}{where} ignored: {n.last_error}")
    for c in stats.cameras:
        lines.append(
            f"  camera {c.camera_id}: in {c.input_fps:.1f} FPS, processed {c.processed_fps:.1f} FPS, ok {c.frames_ok},"
            f" dropped {c.frames_dropped}, failed {c.frames_failed}, latency p50 {c.latency_p50_ms:.1f} ms"
            f" p99 {c.latency_p99_ms:.1f} ms"
        )
    for scene in stats.scenes:
        lines.append(
            f"  scene {scene.scene}: {scene.windows} windows fused ({scene.windows_skipped} skipped), "
            f"{scene.persons} people in the last, window {scene.window_ms:.0f} ms, "
            f"fusion p99 {scene.fuse_p99_ms:.1f} ms"
        )
        for cam in scene.cameras:
            state = "streaming" if cam.streaming else "silent"
            lines.append(
                f"    {cam.camera_id} ({cam.calibration_name}) {state}, median reprojection error "
                f"{cam.median_reprojection_error_px:.1f} px" + (f": {cam.problem}" if cam.problem else "")
            )
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "status",
        help="show a coordinator's nodes and cameras, or a node's health; optionally wait until ready",
        description="Exit status: 0 ready, 1 not ready (when waiting: not within --timeout).",
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--coordinator", metavar="HOST:PORT", help="a coordinator: its nodes and cameras")
    target.add_argument("--node", metavar="HOST:PORT", help="a node: its health and info")
    p.add_argument(
        "--wait-node",
        action="append",
        default=[],
        metavar="NODE_ID",
        help="with --coordinator: wait until the coordinator routes frames to this node (repeatable)",
    )
    p.add_argument("--wait", action="store_true", help="with --node: wait until the node is SERVING")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default 60)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    tls.add_arguments(p)
    p.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise PosefleetError(f"--timeout must be positive, got {args.timeout}")
    if args.node:
        if args.wait_node:
            raise PosefleetError("--wait-node needs --coordinator (use --wait with --node)")
        report = asyncio.run(
            wait_node(args.node, tls.from_args(args, "posefleet status"), args.timeout if args.wait else 0.0)
        )
        if args.json:
            info = MessageToDict(report.info) if report.info is not None else None
            print(json.dumps({"address": report.address, "health": report.health, "info": info, "error": report.error}))
        else:
            print(format_node_report(report))
        if not report.serving and args.wait:
            print(f"posefleet status: node {args.node} not SERVING within {args.timeout:g} s", file=sys.stderr)
        return 0 if report.serving else 1
    if args.wait:
        raise PosefleetError("--wait needs --node (use --wait-node NODE_ID with --coordinator)")
    timeout = args.timeout if args.wait_node else 0.0
    files = tls.from_args(args, "posefleet status")
    stats, missing = asyncio.run(wait_coordinator(args.coordinator, files, args.wait_node, timeout))
    print(json.dumps(MessageToDict(stats)) if args.json else format_stats(args.coordinator, stats))
    if missing:
        waited = f" within {args.timeout:g} s" if args.wait_node else ""
        print(f"posefleet status: coordinator {args.coordinator}: {missing}{waited}", file=sys.stderr)
        return 1
    return 0
