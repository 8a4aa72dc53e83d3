"""OpenVINO device names and inference precisions a node accepts (here so that settings and flags validate
them without loading OpenVINO)."""

from __future__ import annotations

from typing import Literal, get_args

DEVICES = ("CPU", "GPU", "NPU", "AUTO", "MYRIAD")
#: Device prefixes that take a list of devices after the colon.
MULTI_DEVICE_PREFIXES = ("AUTO:", "MULTI:", "HETERO:")
#: ``INFERENCE_PRECISION_HINT`` values a user may ask for (one without the precision asked for runs its
#: nearest). By default a CPU runs f32 unless the model card records that its own default (bf16 on CPUs with
#: bfloat16) keeps the model's accuracy; other devices run their own default.
InferencePrecision = Literal["f32", "bf16", "f16"]
INFERENCE_PRECISIONS: tuple[str, ...] = get_args(InferencePrecision)


def known_device(device: str) -> bool:
    """Whether ``device`` names a known device (``GPU.1``, ``AUTO:GPU,CPU`` included)."""
    return device.split(":", maxsplit=1)[0].split(".", maxsplit=1)[0].upper() in DEVICES or device.upper().startswith(
        MULTI_DEVICE_PREFIXES
    )
