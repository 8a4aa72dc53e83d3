"""OpenVINO device names and inference precisions a node accepts (here so that settings and flags validate
them without loading OpenVINO)."""

from __future__ import annotations

from typing import Literal, get_args

DEVICES = ("CPU", "GPU", "NPU", "AUTO", "MYRIAD")
#: Device prefixes that take a list of devices after the colon.
MULTI_DEVICE_PREFIXES = ("AUTO:", "MULTI:", "HETERO:")
#: ``INFERENCE_PRECISION_HINT`` values a user may ask for; by default a device picks its own (CPUs with
#: bfloat16 run FP16 IRs in bf16), and one without the precision asked for runs its nearest.
InferencePrecision = Literal["f32", "bf16", "f16"]
INFERENCE_PRECISIONS: tuple[str, ...] = get_args(InferencePrecision)


def known_device(device: str) -> bool:
    """Whether ``device`` names a known device (``GPU.1``, ``AUTO:GPU,CPU`` included)."""
    return device.split(":", maxsplit=1)[0].split(".", maxsplit=1)[0].upper() in DEVICES or device.upper().startswith(
        MULTI_DEVICE_PREFIXES
    )
