"""``posefleet models fetch``: download official weights (or a mirror of them), check them, convert.

Every model has an official base URL; ``--mirror`` replaces that base, keeping the path below it, so
a mirror is a copy of the official layout (an HTTP server, or a ``file://`` folder). Downloads are
streamed into a temporary file with a progress bar, checked for size (and sha256 where the file's
digest is pinned here), and only then moved into the download cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from posefleet.common.errors import PosefleetError
from posefleet.common.paths import home_dir
from posefleet.node.convert import Precision, convert
from posefleet.node.engine.card import ModelCard, sha256_of

TFJS_BASE = "https://storage.googleapis.com/tfjs-models/weights/posenet/"
OMZ_BASE = "https://storage.openvinotoolkit.org/repositories/open_model_zoo/2022.1/models_bin/3/"
SAMPLES_BASE = "https://raw.githubusercontent.com/tensorflow/tfjs-models/master/pose-detection/test_data/"
MOVENET_BASE = "https://storage.googleapis.com/tfhub-lite-models/google/lite-model/movenet/singlepose/"


class FetchError(PosefleetError):
    """A download failed or did not match what was expected."""


@dataclass(frozen=True)
class RemoteFile:
    path: str  # below the base URL
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    description: str
    base_url: str
    kind: str  # "tfjs", "openvino-ir", "tflite" or "sample" (a plain file, not converted)
    folder: str  # below the base URL
    files: tuple[RemoteFile, ...] = ()
    #: sha256 of the whole downloaded folder (card.sha256_of) where known.
    tree_sha256: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def _movenet(variant: str, precision: str, file: RemoteFile) -> CatalogEntry:
    return CatalogEntry(
        name=f"movenet-singlepose-{variant}-{precision}",
        description=f"MoveNet SinglePose {variant.title()} v4, TFLite {precision} (TF Hub)",
        base_url=MOVENET_BASE,
        kind="tflite",
        folder=f"{variant}/tflite/{precision}",
        files=(file,),
    )


def _tfjs(variant: str, tree: str | None = None) -> CatalogEntry:
    return CatalogEntry(
        name=f"posenet-mobilenet-v1-{variant}",
        description=f"PoseNet MobileNetV1 {variant[0]}.{variant[1:]} (tfjs-models weights)",
        base_url=TFJS_BASE,
        kind="tfjs",
        folder=f"mobilenet_v1_{variant}",
        tree_sha256=tree,
    )


CATALOG: dict[str, CatalogEntry] = {
    e.name: e
    for e in (
        _tfjs("050"),
        _tfjs("075", "46d2777d4c062b1ffb9647713a26a831c75a353878b81088dcc01211c9fe8ffc"),
        _tfjs("100"),
        _tfjs("101"),
        CatalogEntry(
            name="human-pose-estimation-0001",
            description="Intel Open Model Zoo human-pose-estimation-0001 (OpenPose), FP16-INT8 IR",
            base_url=OMZ_BASE,
            kind="openvino-ir",
            folder="human-pose-estimation-0001/FP16-INT8",
            files=(
                RemoteFile(
                    "human-pose-estimation-0001.xml",
                    426156,
                    "581b082e749848fdfc6d4b4b70e8189c3c2bae1c2d59c6b2c1a026a5471754e3",
                ),
                RemoteFile(
                    "human-pose-estimation-0001.bin",
                    4170034,
                    "df2a9f41f15c3a0c8a0c5a704650338a3cc5c7bb588f2bfc14ea7093fa37b446",
                ),
            ),
        ),
        _movenet(
            "lightning",
            "int8",
            RemoteFile("4.tflite", 2894840, "cd7cc22fa946e5d146a7b98d496853e1923e22828d3972d579973f27f91bb105"),
        ),
        _movenet("thunder", "int8", RemoteFile("4.tflite")),
        _movenet("lightning", "float16", RemoteFile("4.tflite")),
        _movenet("thunder", "float16", RemoteFile("4.tflite")),
        CatalogEntry(
            name="sample-video",
            description="tfjs-models pose-detection test clip pose_1.mp4 (576x576, 120 frames, one person)",
            base_url=SAMPLES_BASE,
            kind="sample",
            folder="",
            files=(
                RemoteFile("pose_1.mp4", 96106, "a581dd3c6495c4257a8f7756c6c59b445e8949eec0bc2637ba5283bfa7d71930"),
            ),
        ),
    )
}


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts if p.strip("/"))])


Progress = Callable[[str, int | None], Callable[[int], None]]


def _tqdm_progress(label: str, total: int | None) -> Callable[[int], None]:
    from tqdm import tqdm

    bar = tqdm(total=total, unit="B", unit_scale=True, desc=label, leave=False, disable=None)

    def update(n: int) -> None:
        if n < 0:
            bar.close()
        else:
            bar.update(n)

    return update


def download(url: str, dest: Path, expected: RemoteFile | None = None, progress: Progress = _tqdm_progress) -> Path:
    """Stream ``url`` to ``dest`` atomically, checking size and sha256 when known."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    received = 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        try:
            response = urllib.request.urlopen(url, timeout=60)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise FetchError(f"{url}: download failed: {reason}") from exc
        with response, os.fdopen(fd, "wb") as out:
            header = response.headers.get("Content-Length")
            total = int(header) if header and header.isdigit() else (expected.size if expected else None)
            update = progress(dest.name, total)
            try:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    update(len(chunk))
            finally:
                update(-1)
        if header and header.isdigit() and received != int(header):
            raise FetchError(f"{url}: received {received} bytes, server announced {header} (truncated download)")
        if expected and expected.size is not None and received != expected.size:
            raise FetchError(f"{url}: {received} bytes, expected {expected.size}")
        if expected and expected.sha256 and digest.hexdigest() != expected.sha256:
            raise FetchError(f"{url}: sha256 {digest.hexdigest()} does not match the expected {expected.sha256}")
        os.replace(tmp, dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def _tfjs_files(entry: CatalogEntry, base: str, folder: Path, progress: Progress) -> None:
    manifest_path = download(_join(base, entry.folder, "manifest.json"), folder / "manifest.json", None, progress)
    try:
        manifest = json.loads(manifest_path.read_text())
        files = [
            RemoteFile(str(v["filename"]), 4 * _prod(v["shape"])) for v in manifest.values()
        ]  # raw float32 files: the manifest's shapes give their sizes
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FetchError(f"{manifest_path}: not a tfjs weights manifest: {exc}") from exc
    for remote in files:
        download(_join(base, entry.folder, remote.path), folder / remote.path, remote, progress)


def _prod(shape: list[int]) -> int:
    out = 1
    for d in shape:
        out *= int(d)
    return out


def fetch_sample(
    name: str, *, mirror: str | None = None, progress: Progress = _tqdm_progress, log: Callable[[str], None] = print
) -> Path:
    """Download a sample file (no conversion) into the cache, reusing a verified copy."""
    entry = CATALOG[name]
    if entry.kind != "sample":
        raise FetchError(f"{name} is a model; use fetch()")
    (remote,) = entry.files
    dest = home_dir() / "samples" / remote.path
    if dest.exists() and dest.stat().st_size == remote.size and sha256_of(dest) == remote.sha256:
        return dest
    log(f"fetching {name} from {_join(mirror or entry.base_url, entry.folder, remote.path)}")
    return download(_join(mirror or entry.base_url, entry.folder, remote.path), dest, remote, progress)


def fetch(
    name: str,
    outdir: Path | None = None,
    *,
    mirror: str | None = None,
    precision: Precision = "FP16",
    stride: int | None = None,
    input_size: tuple[int, int] | None = None,
    progress: Progress = _tqdm_progress,
    log: Callable[[str], None] = lambda _m: None,
) -> ModelCard:
    """Download ``name`` from its official location (or ``mirror``) and convert it into ``outdir``."""
    if name not in CATALOG:
        raise FetchError(f"unknown model {name!r}; known: {', '.join(CATALOG)}")
    entry = CATALOG[name]
    if entry.kind == "sample":
        raise FetchError(f"{name} is a sample file, not a model")
    base = mirror or entry.base_url
    downloads = home_dir() / "downloads" / name
    partial = downloads.with_name(f".{name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    log(f"fetching {name} from {_join(base, entry.folder)}")
    try:
        if entry.kind == "tfjs":
            _tfjs_files(entry, base, partial, progress)
        else:  # keep the precision folder (FP16-INT8, ...): the model card reports it
            for remote in entry.files:
                dest = partial / Path(entry.folder).name / remote.path
                download(_join(base, entry.folder, remote.path), dest, remote, progress)
        if entry.tree_sha256 and sha256_of(partial) != entry.tree_sha256:
            raise FetchError(f"{name}: downloaded files do not match the pinned checksum {entry.tree_sha256}")
        shutil.rmtree(downloads, ignore_errors=True)
        os.replace(partial, downloads)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    target = outdir or home_dir() / "models" / name
    source = downloads if entry.kind == "tfjs" else downloads / Path(entry.folder).name / entry.files[0].path
    return convert(source, target, precision=precision, stride=stride, input_size=input_size, log=log)
