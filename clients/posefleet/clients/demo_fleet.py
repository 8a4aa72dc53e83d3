"""What both demos use: the demo model and the sample clip (fetched through the assets mirror when present)
and a throwaway fleet of certificates."""

from __future__ import annotations

from pathlib import Path

from posefleet.common.processes import run_posefleet
from posefleet.common.tls import TlsFiles

DEMO_MODEL = "posenet-mobilenet-v1-075"
DEMO_INPUT = "257x257"


def mirrors() -> tuple[str | None, str | None]:
    """The assets folder's PoseNet and video folders as file:// mirrors (None, None without assets)."""
    from posefleet.common.paths import assets_dir

    assets = assets_dir(required=False)
    if assets is None:
        return None, None
    return (assets / "models/posenet/tfjs_v1").as_uri(), (assets / "video").as_uri()


ADMIN = "demo-admin"


def demo_fleet(directory: Path, nodes: list[str], cameras: list[str]) -> dict[str, TlsFiles]:
    """A throwaway fleet CA in ``directory`` and certificates for a coordinator, the nodes, an admin (stats,
    subscriptions) and each camera (its own camera id only): the demo runs mutual TLS end to end."""
    from posefleet.common.certs import throwaway_fleet

    members: list[tuple[str, str, list[str]]] = [("coordinator", "coordinator", []), ("admin", ADMIN, [])]
    members += [("node", n, []) for n in nodes] + [("camera", c, [c]) for c in cameras]
    return throwaway_fleet(directory, members)


def demo_model() -> Path:
    """The demo's model directory, fetched (through the assets mirror when present) on first use."""
    from posefleet.common.paths import home_dir

    model_dir = home_dir() / "models" / DEMO_MODEL
    if not (model_dir / "model.json").is_file():
        mirror = mirrors()[0]
        args = ["models", "fetch", DEMO_MODEL, "-o", str(model_dir), *(["--mirror", mirror] if mirror else [])]
        print(run_posefleet(args), end="")
    return model_dir


def sample_video() -> str:
    """The sample clip, fetched through the models fetch/mirror mechanism; its local path."""
    mirror = mirrors()[1]
    out = run_posefleet(["models", "fetch", "sample-video", *(["--mirror", mirror] if mirror else [])])
    print(out, end="")
    return out.strip().splitlines()[-1].removeprefix("ready: ")
