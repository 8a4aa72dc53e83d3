"""What every source format reads into: the ``SourceFormat`` base its modules (``sources/``) subclass, the
``Converted`` graph and card, ``ConversionError``, and the helpers readers share."""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import openvino as ov
from posefleet.common.errors import PosefleetError
from posefleet.node.engine.card import ModelCard

Precision = Literal["FP16", "FP32", "INT8"]


class ConversionError(PosefleetError):
    """A source model cannot be converted; the message names the file or variable at fault."""


@dataclass
class Converted:
    """A source read into memory: the graph and its card, or an IR pair to copy as it is."""

    model: ov.Model
    card: ModelCard
    copy_ir: tuple[Path, Path] | None = None


class SourceFormat(ABC):
    """One kind of source model (a module in ``posefleet.node.convert.sources`` subclasses this)."""

    #: Short name recorded in the card (``source.format``).
    name: ClassVar[str]
    #: What the format looks like, for the "unknown format" message.
    looks_like: ClassVar[str]
    #: Formats with a higher priority are asked first (a more specific claim wins).
    priority: ClassVar[int] = 0
    _registry: ClassVar[dict[str, type[SourceFormat]]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            SourceFormat._registry[cls.name] = cls

    @classmethod
    @abstractmethod
    def claims(cls, source: Path, head: bytes) -> bool:
        """Whether ``source`` (``head``: its first bytes, empty for a directory) is of this format."""

    @classmethod
    @abstractmethod
    def read(cls, source: Path, size: tuple[int, int] | None, stride: int | None) -> Converted:
        """Read the source; ``size`` and ``stride`` are the user's requests (``None``: the source's own)."""


@contextlib.contextmanager
def root_logging_kept() -> Iterator[None]:
    """``ov.convert_model`` sets the root logger to ERROR (with a handler and a filter of its own) and puts it
    back only when the conversion succeeds: a failed one would silence the process's logs from then on."""
    root = logging.getLogger()
    level, filters, handlers = root.level, list(root.filters), list(root.handlers)
    try:
        yield
    finally:
        root.setLevel(level)
        root.filters[:], root.handlers[:] = filters, handlers


def first_line(exc: BaseException) -> str:
    """The informative first line of an OpenVINO/TensorFlow exception."""
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("Check ")]
    return lines[0] if lines else type(exc).__name__


def read_model(path: Path, kind: str) -> ov.Model:
    """``path`` read by OpenVINO, or a ``ConversionError`` naming it as ``kind`` ("TFLite model"...)."""
    try:
        return ov.Core().read_model(str(path))
    except Exception as exc:
        raise ConversionError(f"{path}: cannot read {kind}: {first_line(exc)}") from exc
