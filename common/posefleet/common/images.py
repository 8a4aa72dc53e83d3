"""Encoded images (JPEG, PNG) checked before any decoder allocates for them, wherever they are decoded.

The node decodes camera frames, the coordinator's dashboard decodes them again for thumbnails: both call
``decode_encoded``, which

- refuses bytes whose signature is not the declared format (a PNG labelled JPEG would otherwise skip the
  JPEG checks and decode to whatever its own header says);
- reads the size from the format's own header and refuses images beyond the limits, and JPEGs too small for
  the pixels they claim (decompression bombs);
- caps the decoder itself (OpenCV's ``OPENCV_IO_MAX_IMAGE_PIXELS``, read once per process: set before the
  first decode, see ``cap_decoder_pixels``) and checks that what was decoded is what the header said.
"""

from __future__ import annotations

import os
import struct
from typing import NamedTuple

import cv2
import numpy as np
import numpy.typing as npt
from posefleet.common.errors import PosefleetError

U8Image = npt.NDArray[np.uint8]
#: File suffixes read as still images (folders of photos: pose, quantisation sets, calibration boards).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
#: The file signature of each format.
SIGNATURES = {"JPEG": b"\xff\xd8\xff", "PNG": b"\x89PNG\r\n\x1a\n"}
#: A JPEG spends a few bits on every 8x8 block, even of a blank frame (a blank 4096x4096 frame: pixels/64
#: bytes baseline, pixels/255 progressive grey); one with fewer than pixels/1024 bytes is a decompression
#: bomb (or cut short), refused before the decoder allocates and fills the size its header claims.
JPEG_MIN_PIXELS_PER_BYTE = 1024
#: The decoder's own cap when none was set: the node's default limit (4096 x 4096).
DEFAULT_DECODER_PIXELS = 4096 * 4096
#: libjpeg's reduced decodings, largest reduction first.
_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class DecodedImage(NamedTuple):
    """Decoded BGR pixels and the image's full (width, height), which a reduced decoding makes larger."""

    pixels: U8Image
    size: tuple[int, int]


class EncodedImageError(PosefleetError):
    """Encoded bytes that must not be decoded, and why."""


def cap_decoder_pixels(max_pixels: int) -> None:
    """Make OpenCV's decoders refuse images above ``max_pixels`` whatever a header says (effective when set
    before the process's first decode)."""
    os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(max(1, int(max_pixels)))


os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(DEFAULT_DECODER_PIXELS))


def sniff(data: bytes) -> str | None:
    """The format whose signature ``data`` starts with, or None."""
    return next((kind for kind, magic in SIGNATURES.items() if data.startswith(magic)), None)


def header_size(data: bytes, kind: str) -> tuple[int, int] | None:
    """(width, height) from a JPEG SOF or PNG IHDR header, without decoding; None if not found."""
    if kind == "PNG":
        if len(data) >= 24 and data[:8] == SIGNATURES["PNG"] and data[12:16] == b"IHDR":
            width, height = struct.unpack(">II", data[16:24])
            return int(width), int(height)
        return None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i = data.find(b"\xff", i)  # C-speed jump to the next marker: megabytes of filler cost microseconds
            if i < 0 or i + 9 >= len(data):
                return None
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(width), int(height)
        i += 2 + length
    return None


def check_size(width: int, height: int, max_side: int, max_pixels: int) -> None:
    if width < 1 or height < 1:
        raise EncodedImageError(f"image size {width}x{height} is empty")
    if width > max_side or height > max_side or width * height > max_pixels:
        raise EncodedImageError(
            f"image size {width}x{height} is beyond the limits ({max_side} pixels per side, {max_pixels} pixels in all)"
        )


def check_encoded(data: bytes, kind: str, max_side: int, max_pixels: int) -> tuple[int, int]:
    """(width, height) of ``data`` declared as ``kind`` (JPEG or PNG) if it may be decoded; else
    ``EncodedImageError`` saying why."""
    if not data:
        raise EncodedImageError("empty image: no bytes")
    actual = sniff(data)
    if actual != kind:
        what = f"a {actual}" if actual else "not a JPEG or PNG (no known signature)"
        raise EncodedImageError(f"declared {kind} but the bytes are {what}: refused")
    size = header_size(data, kind)
    if size is None:
        raise EncodedImageError(f"corrupt {kind}: no {'SOF' if kind == 'JPEG' else 'IHDR'} header found")
    check_size(*size, max_side, max_pixels)
    if kind == "JPEG" and len(data) * JPEG_MIN_PIXELS_PER_BYTE < size[0] * size[1]:
        raise EncodedImageError(
            f"JPEG claims {size[0]}x{size[1]} pixels in only {len(data)} bytes (a decompression bomb or a cut-short "
            f"image): at least {size[0] * size[1] // JPEG_MIN_PIXELS_PER_BYTE} bytes expected"
        )
    tail = data.rstrip(b"\x00")
    if kind == "JPEG" and not tail.endswith(b"\xff\xd9"):
        raise EncodedImageError(f"corrupt JPEG: truncated ({len(data)} bytes, no end-of-image marker)")
    if kind == "PNG" and not tail.endswith(b"IEND\xaeB`\x82"):
        raise EncodedImageError(f"corrupt PNG: truncated ({len(data)} bytes, no IEND chunk)")
    return size


def decode_encoded(data: bytes, kind: str, max_side: int, max_pixels: int, min_side: int = 0) -> DecodedImage:
    """BGR pixels of ``data`` (declared ``kind``), checked first (``check_encoded``), and its full (width,
    height); the decoder's own pixel cap and the decoded size must agree with the header. A JPEG whose shorter
    side is at least twice ``min_side`` is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, the
    largest that keeps the shorter side >= ``min_side``): a 4096x4096 frame for a 257x257 model (``min_side``
    1028 on a node) costs 30 instead of 100 ms of decoding and resizing."""
    size = check_encoded(data, kind, max_side, max_pixels)
    factor, flag = 1, cv2.IMREAD_COLOR
    if kind == "JPEG" and min_side > 0:
        factor, flag = next(((f, fl) for f, fl in _REDUCED if min(size) // f >= min_side), (1, cv2.IMREAD_COLOR))
    try:
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    except cv2.error as exc:  # OpenCV's own pixel cap (OPENCV_IO_MAX_IMAGE_PIXELS), whatever the header said
        raise EncodedImageError(f"{kind} refused by the decoder's pixel cap ({len(data)} bytes)") from exc
    if decoded is None:
        raise EncodedImageError(
            f"corrupt {kind}: cannot be decoded ({len(data)} bytes, header says {size[0]}x{size[1]})"
        )
    expected = (-(-size[0] // factor), -(-size[1] // factor))
    if (decoded.shape[1], decoded.shape[0]) != expected:
        raise EncodedImageError(
            f"{kind} decoded to {decoded.shape[1]}x{decoded.shape[0]} where its header says {size[0]}x{size[1]}"
        )
    return DecodedImage(np.asarray(decoded, dtype=np.uint8), size)
