"""posefleet's own version, read once from the installed distribution."""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version


@cache
def software_version() -> str:
    try:
        return version("posefleet")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return "0+unknown"
