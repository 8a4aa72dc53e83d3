"""``python -m posefleet.cli``: the ``posefleet`` command."""

from posefleet.cli import console

console()
