"""Turning a ``posefleet.v1.Image`` into pixels, with precise errors for bad input."""

from __future__ import annotations

import struct

import cv2
import grpc
import numpy as np
from posefleet.common.errors import PosefleetError
from posefleet.node.engine.families import U8Image
from posefleet.v1 import pose_pb2

_CHANNELS = {pose_pb2.PIXEL_FORMAT_BGR8: 3, pose_pb2.PIXEL_FORMAT_RGB8: 3, pose_pb2.PIXEL_FORMAT_GRAY8: 1}
#: A JPEG spends a few bits on every 8x8 block, even of a blank frame (a blank 4096x4096 frame: pixels/64
#: bytes baseline, pixels/255 progressive grey); one with fewer than pixels/1024 bytes is a decompression
#: bomb (or cut short), refused before the decoder allocates and fills the size its header claims.
JPEG_MIN_PIXELS_PER_BYTE = 1024
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class ImageError(PosefleetError):
    """A frame's image cannot be used; ``code`` is the gRPC status to answer with."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT) -> None:
        super().__init__(message)
        self.code = code


def header_size(data: bytes, encoding: int) -> tuple[int, int] | None:
    """(width, height) from a JPEG SOF or PNG IHDR header, without decoding; None if not found."""
    if encoding == pose_pb2.IMAGE_ENCODING_PNG:
        if len(data) >= 24 and data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
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


def decode_image(image: pose_pb2.Image, max_side: int, max_pixels: int) -> U8Image:
    """BGR uint8 pixels of ``image``; raises ImageError (INVALID_ARGUMENT) with a precise reason."""
    data = image.data
    if not data:
        raise ImageError("empty image: Frame.image.data has no bytes")

    def check_size(width: int, height: int) -> None:
        if width < 1 or height < 1:
            raise ImageError(f"image size {width}x{height} is empty")
        if width > max_side or height > max_side or width * height > max_pixels:
            raise ImageError(
                f"image size {width}x{height} is beyond this node's limits "
                f"({max_side} pixels per side, {max_pixels} pixels in all)"
            )

    if image.encoding == pose_pb2.IMAGE_ENCODING_RAW:
        channels = _CHANNELS.get(image.pixel_format)
        if channels is None:
            raise ImageError("raw image needs pixel_format BGR8, RGB8 or GRAY8")
        check_size(image.width, image.height)
        expected = image.width * image.height * channels
        if len(data) != expected:
            raise ImageError(
                f"raw {image.width}x{image.height} image needs {expected} bytes ({channels} per pixel), got {len(data)}"
            )
        pixels = np.frombuffer(data, np.uint8).reshape(image.height, image.width, channels)
        if image.pixel_format == pose_pb2.PIXEL_FORMAT_GRAY8:
            return np.asarray(cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR), dtype=np.uint8)
        if image.pixel_format == pose_pb2.PIXEL_FORMAT_RGB8:
            return np.ascontiguousarray(pixels[:, :, ::-1])
        return pixels
    if image.encoding not in (pose_pb2.IMAGE_ENCODING_JPEG, pose_pb2.IMAGE_ENCODING_PNG):
        raise ImageError(f"unsupported image encoding {image.encoding}; use JPEG, PNG or RAW")
    name = "JPEG" if image.encoding == pose_pb2.IMAGE_ENCODING_JPEG else "PNG"
    size = header_size(data, image.encoding)
    if size is None:
        raise ImageError(f"corrupt {name}: no {'SOF' if name == 'JPEG' else 'IHDR'} header found")
    check_size(*size)
    if name == "JPEG" and len(data) * JPEG_MIN_PIXELS_PER_BYTE < size[0] * size[1]:
        raise ImageError(
            f"JPEG claims {size[0]}x{size[1]} pixels in only {len(data)} bytes (a decompression bomb or a cut-short "
            f"image): at least {size[0] * size[1] // JPEG_MIN_PIXELS_PER_BYTE} bytes expected"
        )
    tail = data.rstrip(b"\x00")
    if name == "JPEG" and not tail.endswith(b"\xff\xd9"):
        raise ImageError(f"corrupt JPEG: truncated ({len(data)} bytes, no end-of-image marker)")
    if name == "PNG" and not tail.endswith(b"IEND\xaeB`\x82"):
        raise ImageError(f"corrupt PNG: truncated ({len(data)} bytes, no IEND chunk)")
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise ImageError(f"corrupt {name}: cannot be decoded ({len(data)} bytes, header says {size[0]}x{size[1]})")
    return np.asarray(decoded, dtype=np.uint8)
