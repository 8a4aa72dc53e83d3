"""The slice of the OpenVINO runtime API posefleet uses, for current OpenVINO and 2022.3 LTS.

OpenVINO 2023.0 removed the MYRIAD plugin, so Neural Compute Stick 2 nodes pin 2022.3, whose Python
API lives under ``openvino.runtime`` (the top-level ``openvino.Core`` arrived in 2023.1 and
``openvino.runtime`` is gone from 2026). Runtime code imports from here; conversion needs current
OpenVINO and runs on the control machine.
"""

from __future__ import annotations

try:
    from openvino import AsyncInferQueue, CompiledModel, Core, InferRequest, Layout, Model, Node, Output, Tensor, Type
    from openvino import opset10 as opset
except ImportError:  # pragma: no cover - OpenVINO 2022.3 LTS on an NCS2 node
    from openvino.runtime import (
        AsyncInferQueue,
        CompiledModel,
        Core,
        InferRequest,
        Layout,
        Model,
        Node,
        Output,
        Tensor,
        Type,
    )
    from openvino.runtime import opset10 as opset

from openvino.preprocess import ColorFormat, PrePostProcessor


def openvino_version() -> str:
    try:
        from openvino import get_version
    except ImportError:  # pragma: no cover - 2022.3
        from openvino.runtime import get_version
    return str(get_version())


__all__ = [
    "AsyncInferQueue",
    "ColorFormat",
    "CompiledModel",
    "Core",
    "InferRequest",
    "Layout",
    "Model",
    "Node",
    "Output",
    "PrePostProcessor",
    "Tensor",
    "Type",
    "openvino_version",
    "opset",
]
