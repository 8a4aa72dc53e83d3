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

import inspect

from openvino.preprocess import ColorFormat, PrePostProcessor

_SHARES_OUTPUTS = "share_outputs" in inspect.signature(InferRequest.infer).parameters


def infer_in_place(request: InferRequest) -> None:
    """Synchronous inference on the tensors set on ``request``, GIL released; outputs stay in the request.

    Current OpenVINO hands the outputs back without copying them; 2022.3 copies (NCS2 nodes only).
    """
    if _SHARES_OUTPUTS:
        request.infer(share_outputs=True)
    else:  # pragma: no cover - OpenVINO 2022.3 LTS
        request.infer()


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
    "infer_in_place",
    "openvino_version",
    "opset",
]
