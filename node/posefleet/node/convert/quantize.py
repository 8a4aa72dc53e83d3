"""Post-training INT8 quantisation with NNCF on a calibration set of images and videos.

Frames go through the model family's own pre-processing and the card's colour, scaling and layout, so
the model is calibrated on exactly what it sees when it runs. Sources already quantised (a Coral or
MoveNet INT8 TFLite, an INT8 IR, an Ultralytics INT8 export) are recognised and kept as they are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import openvino as ov
from posefleet.common.images import IMAGE_SUFFIXES
from posefleet.node.convert.formats import ConversionError
from posefleet.node.engine.card import InputSpec, ModelCard, QuantizationSpec
from posefleet.node.engine.families import create_model

U8Image = npt.NDArray[np.uint8]
#: Frames NNCF calibrates on by default (its own default subset), and the fewest accepted.
DEFAULT_SAMPLES = 300
MIN_SAMPLES = 10
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}


def already_quantised(card: ModelCard) -> bool:
    return "INT8" in card.precision.upper()


def _files(paths: list[Path]) -> list[Path]:
    found = []
    for path in paths:
        if not path.exists():
            raise ConversionError(f"--calibration {path}: no such file or folder")
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        found += [p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES]
    if not found:
        listed = " ".join(str(p) for p in paths)
        raise ConversionError(f"--calibration {listed}: no images or videos to calibrate with")
    return found


def calibration_frames(paths: list[Path], count: int = DEFAULT_SAMPLES) -> tuple[list[U8Image], list[str]]:
    """Up to ``count`` BGR frames: every image, and frames sampled evenly from each video for the rest."""
    files = _files(paths)
    images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
    videos = [f for f in files if f.suffix.lower() in VIDEO_SUFFIXES]
    frames: list[U8Image] = []
    for path in images[:count]:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ConversionError(f"--calibration {path}: cannot read image")
        frames.append(np.asarray(image, np.uint8))
    left = count - len(frames)
    for i, path in enumerate(videos):
        share = left // (len(videos) - i) if left > 0 else 0
        cap = cv2.VideoCapture(str(path))
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or 1
        wanted = set(np.linspace(0, total - 1, min(share, total)).round().astype(int).tolist()) if share else set()
        index = 0
        while wanted and index <= max(wanted):
            ok, frame = cap.read()
            if not ok:
                break
            if index in wanted:
                frames.append(np.asarray(frame, np.uint8))
            index += 1
        cap.release()
        left = count - len(frames)
    if len(frames) < MIN_SAMPLES:
        raise ConversionError(
            f"--calibration: only {len(frames)} frame(s) found; quantising needs at least {MIN_SAMPLES} "
            "(add images or a video of the scenes the model will see)"
        )
    return frames, [str(f) for f in files]


def network_input(tensor: U8Image, spec: InputSpec) -> npt.NDArray[np.generic]:
    """A pre-processed BGR uint8 NHWC tensor as the raw network wants it (what the runtime's
    PrePostProcessor does in the graph: colour, element type, mean and scale, layout)."""
    x: npt.NDArray[np.generic] = tensor[..., ::-1] if spec.color == "RGB" else tensor
    if spec.element_type == "f32":
        x = (x.astype(np.float32) - np.float32(spec.mean)) / np.float32(spec.scale)
    if spec.layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x)


def quantize(
    model: ov.Model,
    card: ModelCard,
    input_size: tuple[int, int],
    paths: list[Path],
    *,
    count: int = DEFAULT_SAMPLES,
    log: Callable[[str], None] = lambda _msg: None,
) -> ov.Model:
    """``model`` quantised to INT8 on frames of ``paths``; records the calibration set in ``card``."""
    import nncf

    frames, sources = calibration_frames(paths, count)
    wrapper = create_model(card, input_size)
    digest = hashlib.sha256()
    samples = []
    for frame in frames:
        tensor, _ = wrapper.preprocess(frame)
        digest.update(tensor.tobytes())
        samples.append(network_input(tensor, card.input))
    log(f"quantising to INT8 with NNCF on {len(samples)} frames at {input_size[0]}x{input_size[1]}")
    quantised = nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples))
    card.precision = f"INT8 (NNCF post-training, {len(samples)} frames)"
    card.quantization = QuantizationSpec(
        method=f"nncf {nncf.__version__} quantize", samples=len(samples), sha256=digest.hexdigest(), sources=sources
    )
    return quantised
