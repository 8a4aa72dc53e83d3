"""Turning a ``posefleet.v1.Image`` into pixels, with precise errors for bad input."""

from __future__ import annotations

import cv2
import grpc
import numpy as np
from posefleet.common.errors import PosefleetError
from posefleet.common.images import DecodedImage, EncodedImageError, check_size, decode_encoded
from posefleet.node.engine.families import U8Image
from posefleet.v1 import pose_pb2

_CHANNELS = {pose_pb2.PIXEL_FORMAT_BGR8: 3, pose_pb2.PIXEL_FORMAT_RGB8: 3, pose_pb2.PIXEL_FORMAT_GRAY8: 1}
_KINDS = {pose_pb2.IMAGE_ENCODING_JPEG: "JPEG", pose_pb2.IMAGE_ENCODING_PNG: "PNG"}


class ImageError(PosefleetError):
    """A frame's image cannot be used; ``code`` is the gRPC status to answer with."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT) -> None:
        super().__init__(message)
        self.code = code


def decode_image(image: pose_pb2.Image, max_side: int, max_pixels: int, min_side: int = 0) -> DecodedImage:
    """BGR uint8 pixels of ``image`` and its full size (a large JPEG is decoded at a reduced scale that keeps
    ``min_side``, see ``decode_encoded``); raises ImageError (INVALID_ARGUMENT) with a precise reason."""
    data = image.data
    if not data:
        raise ImageError("empty image: Frame.image.data has no bytes")
    if image.encoding == pose_pb2.IMAGE_ENCODING_RAW:
        channels = _CHANNELS.get(image.pixel_format)
        if channels is None:
            raise ImageError("raw image needs pixel_format BGR8, RGB8 or GRAY8")
        try:
            check_size(image.width, image.height, max_side, max_pixels)
        except EncodedImageError as exc:
            raise ImageError(str(exc).replace("the limits", "this node's limits")) from None
        expected = image.width * image.height * channels
        if len(data) != expected:
            raise ImageError(
                f"raw {image.width}x{image.height} image needs {expected} bytes ({channels} per pixel), got {len(data)}"
            )
        pixels = np.frombuffer(data, np.uint8).reshape(image.height, image.width, channels)
        if image.pixel_format == pose_pb2.PIXEL_FORMAT_GRAY8:
            pixels = np.asarray(cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR), dtype=np.uint8)
        elif image.pixel_format == pose_pb2.PIXEL_FORMAT_RGB8:
            pixels = np.ascontiguousarray(pixels[:, :, ::-1])
        return DecodedImage(pixels, (image.width, image.height))
    kind = _KINDS.get(image.encoding)
    if kind is None:
        raise ImageError(f"unsupported image encoding {image.encoding}; use JPEG, PNG or RAW")
    try:
        return decode_encoded(data, kind, max_side, max_pixels, min_side)
    except EncodedImageError as exc:
        raise ImageError(str(exc).replace("the limits", "this node's limits")) from None


class FrameImage:
    """A frame's image, decoded when called (on an inference thread); ``size`` is then its full (width, height),
    to which the poses found in a reduced decoding are scaled back (``scale``)."""

    def __init__(self, image: pose_pb2.Image, max_side: int, max_pixels: int, input_size: tuple[int, int]) -> None:
        self.image, self.max_side, self.max_pixels = image, max_side, max_pixels
        self.min_side = 4 * max(input_size)  # 4 decoded pixels a side per input pixel: the resize to it loses nothing
        self.size = (0, 0)

    def __call__(self) -> U8Image:
        pixels, self.size = decode_image(self.image, self.max_side, self.max_pixels, self.min_side)
        return pixels

    def scale(self, decoded: tuple[int, int]) -> tuple[float, float] | None:
        """(x, y) factors from ``decoded`` (height, width) pixels to the full image; None if it is full size."""
        if (decoded[1], decoded[0]) == self.size:
            return None
        return self.size[0] / decoded[1], self.size[1] / decoded[0]
