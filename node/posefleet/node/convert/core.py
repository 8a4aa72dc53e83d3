"""``posefleet convert``: find the source's format, read it, write IR + card atomically.

Every conversion writes into a temporary sibling of OUTDIR and renames it into place at the end, so a
failed conversion never leaves a half-written OUTDIR behind.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import openvino as ov
from posefleet.common.version import software_version
from posefleet.node.convert.formats import ConversionError, Converted, Precision, SourceFormat
from posefleet.node.engine.card import CARD_FILE, IR_BIN, IR_XML, ModelCard


def source_formats() -> dict[str, type[SourceFormat]]:
    """Every known source format, by name (the modules of ``sources/`` are imported once)."""
    from posefleet.node.convert import sources

    for module in pkgutil.iter_modules(sources.__path__):
        importlib.import_module(f"{sources.__name__}.{module.name}")
    ordered = sorted(SourceFormat._registry.values(), key=lambda fmt: (-fmt.priority, fmt.name))
    return {fmt.name: fmt for fmt in ordered}


def detect_format(source: Path) -> type[SourceFormat]:
    """The format that claims ``source``, from the path and its first bytes."""
    if not source.exists():
        raise ConversionError(f"{source}: no such file or directory")
    head = b""
    if source.is_file():
        try:
            with source.open("rb") as handle:
                head = handle.read(16)
        except OSError as exc:
            raise ConversionError(f"{source}: unreadable: {exc.strerror or exc}") from exc
    formats = source_formats()
    for fmt in formats.values():
        if fmt.claims(source, head):
            return fmt
    kinds = ", ".join(fmt.looks_like for fmt in formats.values())
    raise ConversionError(f"{source}: unknown model format (expected {kinds})")


def convert(
    source: str | Path,
    outdir: str | Path,
    *,
    input_size: tuple[int, int] | None = None,
    stride: int | None = None,
    precision: Precision = "FP16",
    calibration: list[Path] | None = None,
    calibration_size: int = 300,
    log: Callable[[str], None] = lambda _msg: None,
) -> ModelCard:
    """Convert ``source`` into ``outdir`` (model.xml, model.bin, model.json) and return the card.

    ``precision`` INT8 quantises with NNCF on the frames of ``calibration`` (images, videos, folders);
    a source that is quantised already is kept as it is.
    """
    source, outdir = Path(source), Path(outdir)
    fmt = detect_format(source)
    if stride is not None and stride not in (8, 16, 32):
        raise ConversionError(f"--stride must be 8, 16 or 32, not {stride}")
    if outdir.exists() and (not outdir.is_dir() or (any(outdir.iterdir()) and not (outdir / CARD_FILE).exists())):
        raise ConversionError(f"{outdir}: exists and is not a posefleet model directory; refusing to overwrite it")
    if precision == "INT8" and not calibration:
        raise ConversionError("--precision INT8 needs --calibration PATH ... (images or videos like the cameras')")
    log(f"converting {source} ({fmt.name})")
    converted = fmt.read(source, input_size, stride)
    card = converted.card
    if precision == "INT8":
        from posefleet.node.convert.quantize import already_quantised, quantize

        if already_quantised(card):
            log(f"{card.model_id} is quantised already ({card.precision}): kept as it is, not quantised twice")
        else:
            source_model = converted.model
            if converted.copy_ir is not None:  # a float IR: quantised, then saved rather than copied
                converted = Converted(ov.Core().read_model(str(converted.copy_ir[0])), card)
                source_model = converted.model
            size = card.input.size or input_size or card.input.default_size
            assert calibration is not None
            converted.model = quantize(source_model, card, size, calibration, count=calibration_size, log=log)
    card.converter = {"posefleet": software_version(), "openvino": ov.get_version()}
    outdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.tmp-", dir=outdir.parent))
    try:
        if converted.copy_ir is not None:
            shutil.copyfile(converted.copy_ir[0], tmp / IR_XML)
            shutil.copyfile(converted.copy_ir[1], tmp / IR_BIN)
        else:
            if not card.precision:
                card.precision = precision
            ov.save_model(converted.model, str(tmp / IR_XML), compress_to_fp16=(precision != "FP32"))
        card.write(tmp)
        if outdir.exists():
            old = outdir.with_name(f".{outdir.name}.old-{os.getpid()}")
            os.replace(outdir, old)
            os.replace(tmp, outdir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, outdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {outdir / IR_XML} ({card.model_id}, {card.precision})")
    return card
