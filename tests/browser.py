"""The distribution's Chromium, headless, driven by Selenium and its chromedriver (``make system-deps``
installs both); and the dashboard cluster the browser test and ``make dashboard-screenshot`` look at."""

from __future__ import annotations

import colorsys
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from posefleet.clients.local_fleet import start_coordinator, start_node
from posefleet.common.certs import issue_token, throwaway_fleet
from posefleet.common.processes import PosefleetProcess, stop_all
from posefleet.common.tls import TlsFiles, cli_args
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def chromium(width: int = 1400, height: int = 1000) -> webdriver.Chrome:
    """Headless Chromium; it trusts the throwaway fleet CA's dashboard certificate (--ignore-certificate-errors:
    the CA is not in the system's store)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--ignore-certificate-errors",
        f"--window-size={width},{height}",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def track_rgb(track_id: int) -> tuple[int, int, int]:
    """The colour the page draws a track in (``trackColour`` in app.js: hsl(id x 137.508, 95%, 55%))."""
    r, g, b = colorsys.hls_to_rgb(((track_id * 137.508) % 360) / 360, 0.55, 0.95)
    return round(r * 255), round(g * 255), round(b * 255)


@dataclass
class DashboardCluster:
    """A coordinator with its dashboard, PoseNet nodes and a fleet; ``camera`` streams a clip into it."""

    work: Path
    fleet: dict[str, TlsFiles]
    coordinator: PosefleetProcess
    nodes: dict[str, PosefleetProcess]
    token: str
    cameras: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.coordinator.fields['http_port']}/"

    def camera(self, name: str, clip: Path, fps: float) -> subprocess.Popen[bytes]:
        """``posefleet camera`` streaming ``clip`` as camera ``name`` (its own certificate)."""
        address = f"127.0.0.1:{self.coordinator.port}"
        args = ["camera", "--coordinator", address, "--source", str(clip), "--camera-id", name, "--fps", str(fps)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "posefleet.cli", *args, "--resize-to-model", *cli_args(self.fleet[name])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.cameras.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.cameras:
            if proc.poll() is None:
                proc.kill()
        stop_all([self.coordinator, *self.nodes.values()])


def dashboard_cluster(work: Path, model: Path, cameras: list[str], nodes: int = 2) -> DashboardCluster:
    names = [f"dash-node-{i}" for i in range(nodes)]
    members: list[tuple[str, str, list[str]]] = [("coordinator", "coordinator", []), *[("node", n, []) for n in names]]
    members += [("camera", c, [c]) for c in cameras]
    fleet = throwaway_fleet(work / "pki", members)
    coordinator = start_coordinator(work / "coordinator.log", "--http-port", "0", tls=fleet["coordinator"], timeout=60)
    started: dict[str, PosefleetProcess] = {}
    try:
        for name in names:
            size = ("--input-size", "257x257")
            started[name] = start_node(model, name, work / f"{name}.log", *size, tls=fleet[name], timeout=90)
    except Exception:
        stop_all([coordinator, *started.values()])
        raise
    token = issue_token(work / "pki", role="admin", name="viewer", days=1)
    return DashboardCluster(work, fleet, coordinator, started, token)
