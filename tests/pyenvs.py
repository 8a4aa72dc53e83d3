"""pyenv's older interpreters with OpenVINO 2022.3 (the NCS2 worker's runtime), built once per machine."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

PYENV = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"


def pyenv_python(version: str) -> Path:
    """pyenv's interpreter of ``version`` (fails in CI where pyenv exists without it, skips elsewhere)."""
    python = next(iter(sorted(PYENV.glob(f"{version}.*/bin/python"))), None)
    if python is None:
        if os.environ.get("CI") and PYENV.is_dir():
            pytest.fail(f"pyenv has no Python {version} on this CI machine")
        pytest.skip(f"no pyenv Python {version} here")
    return python


def legacy_venv(version: str) -> Path:
    """A venv of pyenv's Python ``version`` with openvino 2022.3 (built once, in ``$POSEFLEET_HOME``)."""
    python = pyenv_python(version)
    home = Path(os.environ.get("POSEFLEET_HOME", Path.home() / ".cache/posefleet"))
    venv = home / "legacy-venvs" / f"py{version}-openvino2022.3"
    ready = venv / ".ready"
    if not ready.exists():
        subprocess.run([str(python), "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
        subprocess.run([str(venv / "bin/pip"), "install", "--quiet", "openvino==2022.3.*"], check=True, timeout=900)
        ready.touch()
    return venv / "bin/python"
