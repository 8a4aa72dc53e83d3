"""Model families, one module each, found by name: ``create_model(card, size, params)``.

Adding a family is one new module here (a ``PoseModel`` subclass naming its ``family`` and ``Params``)
plus its tests: the engine, the node, the CLI and the card schema need no edit.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

from posefleet.common.errors import PosefleetError
from posefleet.node.engine.card import ModelCard
from posefleet.node.engine.families.base import FrameMeta, PoseModel, U8Image
from pydantic import TypeAdapter, ValidationError

__all__ = ["FamilyError", "FrameMeta", "PoseModel", "U8Image", "create_model", "families", "family"]


class FamilyError(PosefleetError):
    """An unknown family, or decoding parameters the family does not accept."""


def families() -> dict[str, type[PoseModel]]:
    """Every registered family by name (the modules of this package are imported once)."""
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")
    return dict(sorted(PoseModel.registry.items()))


def family(name: str) -> type[PoseModel]:
    known = families()
    if name not in known:
        raise FamilyError(f"unknown model family {name!r} (this posefleet knows {', '.join(known)})")
    return known[name]


def family_params(cls: type[PoseModel], values: Mapping[str, Any]) -> Any:
    """``values`` (from flags, settings or code) validated into the family's typed ``Params``."""
    try:
        return TypeAdapter(cls.Params).validate_python(dict(values))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'decode'}: {e['msg']}" for e in exc.errors())
        raise FamilyError(f"decode parameters for {cls.family}: {problems}") from None


def create_model(card: ModelCard, input_size: tuple[int, int], params: Mapping[str, Any] | None = None) -> PoseModel:
    """The family wrapper of ``card`` for ``input_size``, with its decoding parameters."""
    cls = family(card.family)
    return cls(card, input_size, family_params(cls, params or {}))
