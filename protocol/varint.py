"""Unsigned LEB128 varints, as protobuf, multiformats and CAR use them."""

from __future__ import annotations

from .errors import InvalidBlock

MAX_VARINT_BYTES = 9  # 63 bits: more than any length fabnode accepts


def encode_varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varints are unsigned")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decode the varint at ``buf[pos:]``; return (value, position after it).

    Rejects truncated, over-long and non-minimal encodings: a strict reader is what makes
    "same bytes, same CID" hold.
    """
    value = 0
    shift = 0
    start = pos
    while True:
        if pos >= len(buf):
            raise InvalidBlock("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and pos - start > 1:
                raise InvalidBlock("non-minimal varint")
            return value, pos
        shift += 7
        if pos - start >= MAX_VARINT_BYTES:
            raise InvalidBlock("varint too long")
