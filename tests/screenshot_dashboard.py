"""``make dashboard-screenshot``: the README's picture of the dashboard, taken by headless Chromium from a
local cluster (a coordinator, two PoseNet nodes, mutual TLS) while two cameras stream the sample clip."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from browser import chromium, dashboard_cluster
from posefleet.clients.demo_fleet import demo_model, sample_video


def main(out: Path) -> int:
    model, clip = demo_model(), Path(sample_video())
    with tempfile.TemporaryDirectory(prefix="posefleet-screenshot-") as tmp:
        driver = chromium(1400, 1050)  # first: a browser that cannot start leaves no cluster behind
        cluster = dashboard_cluster(Path(tmp), model, ["lobby", "hall"])
        try:
            driver.get(cluster.url + f"?token={cluster.token}")
            cameras = [cluster.camera(name, clip, fps=10) for name in ("lobby", "hall")]
            time.sleep(9.0)  # sparklines and counters fill; the clip lasts 12 s at 10 FPS
            out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(out))
            for camera in cameras:
                camera.wait(timeout=60)
        finally:
            driver.quit()
            cluster.stop()
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
