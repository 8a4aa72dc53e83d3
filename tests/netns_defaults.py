"""Run inside a network namespace by test_defaults: a node and a coordinator with their documented defaults
(no interface, host or port option), discovering each other by mDNS; prints what a camera got as JSON."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from posefleet.clients.sdk import PosefleetClient, poses_of
from posefleet.common.processes import start_posefleet, stop_all

COORDINATOR = "127.0.0.1:50050"  # the coordinator's default port


async def ask(frame: bytes) -> dict[str, object]:
    async with PosefleetClient(COORDINATOR, tls=None) as client:
        nodes = await client.wait_for_nodes(1, timeout=30)
        results = [await client.estimate(frame) for _ in range(5)]
    return {
        "nodes": [(n.info.node_id, n.address, n.source) for n in nodes],
        "poses": [len(poses_of(r)) for r in results],
        "statuses": [int(r.status) for r in results],
    }


def main(model: Path, image: Path) -> dict[str, object]:
    node = start_posefleet(["node", "--model", str(model)], tls=None, timeout=120)
    running = [node]
    try:
        running.append(start_posefleet(["coordinator"], tls=None, timeout=60))
        return {**asyncio.run(ask(image.read_bytes())), "node_log": node.output()}
    finally:
        stop_all(running)


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]))))
