"""Where posefleet finds test/demo assets and keeps downloaded models."""

from __future__ import annotations

import os
from pathlib import Path

from posefleet.common.errors import PosefleetError

ASSETS_ENV = "POSEFLEET_ASSETS"
HOME_ENV = "POSEFLEET_HOME"


def assets_dir(required: bool = True) -> Path | None:
    """``$POSEFLEET_ASSETS`` (the Makefile and .ci/run default it to ../shared/assets)."""
    value = os.environ.get(ASSETS_ENV)
    if value and Path(value).is_dir():
        return Path(value).resolve()
    if required:
        hint = f" ({value} is not a directory)" if value else ""
        raise PosefleetError(f"set {ASSETS_ENV} to the assets folder (see SOURCES.md){hint}")
    return None


def home_dir() -> Path:
    """Downloaded and converted models: ``$POSEFLEET_HOME`` or ``~/.cache/posefleet``."""
    value = os.environ.get(HOME_ENV)
    return Path(value) if value else Path.home() / ".cache" / "posefleet"
