"""Protobuf wire-format pieces written directly, for the two hot spots of a scene's window (its views appended
already serialized; its 3D people's joints): the encoding the generated classes would give, without building
their objects. Tests parse what these write with the generated classes."""

from __future__ import annotations

import struct

#: Wire types: a varint, a length-delimited field (string, bytes, message), a 32-bit value (float).
VARINT, LENGTH, FIXED32 = 0, 2, 5


_BYTES = [bytes((n,)) for n in range(0x80)]


def tag(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def varint(n: int) -> bytes:
    if n < 0x80:
        return _BYTES[n]
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def embedded(field: int, payload: bytes) -> bytes:
    """``payload`` (a serialized message, or a string's UTF-8) as one occurrence of field ``field``: its tag,
    its length, itself. Appended to a serialized message, it is what setting the field would serialize to."""
    return tag(field, LENGTH) + varint(len(payload)) + payload


def float32(field: int, value: float) -> bytes:
    return tag(field, FIXED32) + struct.pack("<f", value)
