"""``posefleet demo``: the README's first command.

This first version runs the whole pipeline on one machine: fetch the model and the sample clip
through the models fetch/mirror mechanism (the assets folder as a file:// mirror when
$POSEFLEET_ASSETS is set, the official URLs otherwise), estimate poses in every frame, and write an
annotated video and a JSONL of results. The cluster demo (coordinator + two nodes on loopback)
replaces this once the coordinator lands.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

DEMO_MODEL = "posenet-mobilenet-v1-075"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run the local demo end to end and exit")
    p.add_argument("--source", type=Path, help="video file (default: the sample clip)")
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder (default ./demo-out)")
    p.add_argument("--device", default="CPU")
    p.set_defaults(func=run_demo)


def _mirrors() -> tuple[str | None, str | None]:
    from posefleet.node.assets import assets_dir

    assets = assets_dir(required=False)
    if assets is None:
        return None, None
    return (assets / "models/posenet/tfjs_v1").as_uri(), (assets / "video").as_uri()


def run_demo(args: argparse.Namespace) -> int:
    import cv2
    from posefleet.node import media
    from posefleet.node.assets import home_dir
    from posefleet.node.engine import EngineOptions, PoseEngine
    from posefleet.node.models.card import CardError, load_card
    from posefleet.node.models.fetch import fetch, fetch_sample
    from posefleet.node.render import draw_poses

    model_mirror, sample_mirror = _mirrors()
    model_dir = home_dir() / "models" / DEMO_MODEL
    try:
        load_card(model_dir)
    except CardError:
        fetch(DEMO_MODEL, model_dir, mirror=model_mirror, log=print)
    source = args.source or fetch_sample("sample-video", mirror=sample_mirror)
    engine = PoseEngine(model_dir, EngineOptions(device=args.device, input_size=(353, 481)))
    args.out.mkdir(parents=True, exist_ok=True)
    video_out, jsonl_out = args.out / "demo.mp4", args.out / "demo.jsonl"
    writer = None
    count, poses, start = 0, 0, time.perf_counter()
    with jsonl_out.open("w") as jsonl:
        for index, frame in enumerate(media.frames(source)):
            result = engine.infer(frame)
            count += 1
            poses += len(result.poses)
            jsonl.write(json.dumps({"camera": "demo", "index": index, "poses": [p.to_dict() for p in result.poses]}))
            jsonl.write("\n")
            if writer is None:
                size = (frame.shape[1], frame.shape[0])
                writer = cv2.VideoWriter(str(video_out), cv2.VideoWriter.fourcc(*"mp4v"), media.video_fps(source), size)
            writer.write(draw_poses(frame, result.poses))
    if writer is not None:
        writer.release()
    elapsed = time.perf_counter() - start
    print(f"{count} frames, {poses} poses in {elapsed:.1f} s ({count / elapsed:.1f} FPS) with {engine.model_id}")
    print(f"wrote {video_out} and {jsonl_out}")
    return 0
