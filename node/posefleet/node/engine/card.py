"""The model card written beside every converted IR (``model.json``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from posefleet.common.errors import PosefleetError
from posefleet.common.keypoints import COCO_KEYPOINTS
from pydantic import BaseModel, ConfigDict, Field, ValidationError

CARD_FILE = "model.json"
IR_XML = "model.xml"
IR_BIN = "model.bin"
CARD_SCHEMA = "posefleet.model-card/1"


class CardError(PosefleetError):
    """A model directory or card is missing or invalid."""


class InputSpec(BaseModel):
    """How a frame must be prepared for the network (all of it is applied inside the engine)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    #: Fixed (height, width), or ``None`` when the IR accepts any size (PoseNet built from tfjs/TF).
    size: tuple[int, int] | None
    #: Size used when the IR is dynamic and the caller names none.
    default_size: tuple[int, int]
    layout: Literal["NHWC", "NCHW"]
    color: Literal["RGB", "BGR"]
    element_type: Literal["f32", "u8"]
    #: ``(x - mean) / scale`` per channel; mean 0 and scale 1 mean raw pixels.
    mean: float = 0.0
    scale: float = 1.0
    #: ``stretch`` resizes to the input size; ``letterbox`` keeps the aspect ratio and pads.
    resize: Literal["stretch", "letterbox"] = "stretch"
    #: Valid sizes are ``k * size_multiple + size_offset`` (PoseNet: 16k + 1).
    size_multiple: int = 1
    size_offset: int = 0

    def nearest_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """The valid input size nearest ``size`` (the fixed size, if the model has one)."""
        if self.size is not None:
            return self.size
        m, o = self.size_multiple, self.size_offset
        h, w = (max(1, round((d - o) / m)) * m + o for d in size)
        return h, w

    def size_for(self, image: tuple[int, int]) -> tuple[int, int]:
        """The input size for images of ``image`` (height, width): the fixed size; the default size where the
        model letterboxes; else the default size's area at the image's aspect ratio (a portrait camera gets a
        portrait input instead of a stretched one), snapped to a valid size."""
        if self.size is not None:
            return self.size
        if self.resize == "letterbox":
            return self.default_size
        area = self.default_size[0] * self.default_size[1]
        aspect = image[0] / max(image[1], 1)
        return self.nearest_size((round((area * aspect) ** 0.5), round((area / aspect) ** 0.5)))

    def check_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """``size`` if the network accepts it; ``ValueError`` saying the rule and the nearest valid size."""
        if self.size is not None and tuple(self.size) != tuple(size):
            raise ValueError(f"fixed input size {self.size[0]}x{self.size[1]}, not {size[0]}x{size[1]}")
        m, o = self.size_multiple, self.size_offset
        if m > 1 and any(d < m + o or (d - o) % m for d in size):
            near = self.nearest_size(size)
            raise ValueError(
                f"input size {size[0]}x{size[1]} is not valid: each side must be k*{m}+{o} "
                f"(nearest valid: {near[0]}x{near[1]})"
            )
        return size


class QuantizationSpec(BaseModel):
    """How an INT8 model was quantised after training (``posefleet convert --precision INT8``)."""

    model_config = ConfigDict(extra="forbid")

    method: str
    #: Frames of the calibration set, and the sha256 of their pixels (as the model saw them).
    samples: int
    sha256: str
    sources: list[str]
    #: COCO AP of the float model and of this one on ``--validate``'s set, when it was checked.
    validation: dict[str, float] = Field(default_factory=dict)


class PrecisionCheck(BaseModel):
    """Whether a faster inference precision keeps the model's accuracy (``posefleet convert --validate``).

    Without a passing check a CPU runs the model in f32 (accuracy is the default); with one it runs in
    the device's own precision (bf16 on CPUs with bfloat16)."""

    model_config = ConfigDict(extra="forbid")

    #: The precision checked (``bf16``) against f32.
    precision: str
    #: What was measured, e.g. ``COCO AP on person_keypoints_val2017_4img.json``.
    metric: str
    f32: float
    value: float
    tolerance: float

    @property
    def keeps_accuracy(self) -> bool:
        return self.value >= self.f32 - self.tolerance


class SourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    #: The source format's name (``posefleet.node.convert.sources``).
    format: str
    sha256: str


class ModelCard(BaseModel):
    """Everything a runtime needs to know about a converted model."""

    model_config = ConfigDict(extra="forbid")

    schema_: str = Field(CARD_SCHEMA, alias="schema")
    model_id: str
    #: A registered model family (``posefleet.node.engine.families``).
    family: str
    description: str
    keypoints: list[str] = Field(default_factory=lambda: list(COCO_KEYPOINTS))
    input: InputSpec
    #: Role -> output tensor name. PoseNet: heatmap, offsets, displacement_fwd, displacement_bwd;
    #: OpenPose: pafs, heatmaps.
    outputs: dict[str, str]
    output_stride: int
    precision: str
    source: SourceSpec
    converter: dict[str, str] = Field(default_factory=dict)
    quantization: QuantizationSpec | None = None
    #: Faster inference precisions measured against f32 on an evaluation set.
    precision_checks: list[PrecisionCheck] = Field(default_factory=list)

    def keeps_accuracy_in(self, precision: str) -> bool:
        """Whether a check recorded that running in ``precision`` keeps the model's accuracy."""
        return any(c.precision == precision and c.keeps_accuracy for c in self.precision_checks)

    def write(self, directory: Path) -> Path:
        path = directory / CARD_FILE
        path.write_text(json.dumps(self.model_dump(by_alias=True), indent=2) + "\n")
        return path


def load_card(directory: str | Path) -> ModelCard:
    """Read and validate ``model.json`` of a converted model directory."""
    directory = Path(directory)
    path = directory / CARD_FILE
    if not directory.is_dir():
        raise CardError(f"model directory {directory} does not exist (convert a model with 'posefleet convert')")
    for name in (CARD_FILE, IR_XML, IR_BIN):
        if not (directory / name).is_file():
            raise CardError(f"{directory} is not a converted model: {name} is missing")
    try:
        return ModelCard.model_validate_json(path.read_text())
    except ValidationError as exc:
        raise CardError(f"{path}: invalid model card: {exc}") from exc


def sha256_of(path: Path) -> str:
    """sha256 of a file, or of a directory's files (names and contents, sorted by name)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
