"""OpenVINO device names a node accepts (here so that settings validate them without loading OpenVINO)."""

from __future__ import annotations

DEVICES = ("CPU", "GPU", "NPU", "AUTO", "MYRIAD")
#: Device prefixes that take a list of devices after the colon.
MULTI_DEVICE_PREFIXES = ("AUTO:", "MULTI:", "HETERO:")


def known_device(device: str) -> bool:
    """Whether ``device`` names a known device (``GPU.1``, ``AUTO:GPU,CPU`` included)."""
    return device.split(":", maxsplit=1)[0].split(".", maxsplit=1)[0].upper() in DEVICES or device.upper().startswith(
        MULTI_DEVICE_PREFIXES
    )
