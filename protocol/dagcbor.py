"""Strict DAG-CBOR for fabnode's records (IPLD spec ``codecs/dag-cbor``).

Encoding is ours, because a record's bytes are signed and hashed: shortest-form heads, map keys
sorted by length then bytes, CID links as tag 42 over ``0x00 + CID``, no floats (records carry
time as integer milliseconds). A link is a :class:`Link`, never bare ``bytes``, so a byte string
can never be mistaken for a link or the other way round.

Decoding uses ``libipld`` (Rust: fast, rejects unsorted keys and trailing data), which returns
links as plain ``bytes``; callers therefore check a decoded value against a schema and accept a
block only if :func:`encode` of the typed value gives back exactly its bytes. That re-encoding
check is what catches every non-canonical form libipld tolerates (e.g. over-long integer heads).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache

from .errors import InvalidBlock


@dataclass(frozen=True, slots=True)
class Link:
    """A CID link (DAG-CBOR tag 42); ``cid`` is the binary CID."""

    cid: bytes


def _head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes([(major << 5) | value])
    if value < 0x100:
        return bytes([(major << 5) | 24, value])
    if value < 0x10000:
        return bytes([(major << 5) | 25]) + struct.pack(">H", value)
    if value < 0x100000000:
        return bytes([(major << 5) | 26]) + struct.pack(">I", value)
    if value < 0x10000000000000000:
        return bytes([(major << 5) | 27]) + struct.pack(">Q", value)
    raise ValueError("integer out of DAG-CBOR range")


def _key_order(key: str) -> tuple[int, bytes]:
    raw = key.encode("utf-8")
    return len(raw), raw


@lru_cache(maxsize=1024)
def _sorted_keys(keys: tuple) -> tuple:
    """Canonical key order for a map's key set (records reuse a handful of key sets)."""
    for key in keys:
        if not isinstance(key, str):
            raise TypeError("DAG-CBOR map keys must be strings")
    return tuple(sorted(keys, key=_key_order))


def _encode(value, out: bytearray) -> None:
    kind = type(value)
    if kind is str:
        raw = value.encode("utf-8")
        out += _head(3, len(raw))
        out += raw
    elif kind is dict:
        out += _head(5, len(value))
        for key in _sorted_keys(tuple(value)):
            raw = key.encode("utf-8")
            out += _head(3, len(raw))
            out += raw
            _encode(value[key], out)
    elif kind is int:
        out += _head(0, value) if value >= 0 else _head(1, -1 - value)
    elif kind is Link:
        out += b"\xd8\x2a"  # tag 42
        out += _head(2, len(value.cid) + 1)
        out.append(0)
        out += value.cid
    elif kind is list or kind is tuple:
        out += _head(4, len(value))
        for item in value:
            _encode(item, out)
    elif kind is bytes or kind is bytearray or kind is memoryview:
        out += _head(2, len(value))
        out += value
    elif value is None:
        out.append(0xF6)
    elif value is True:
        out.append(0xF5)
    elif value is False:
        out.append(0xF4)
    else:
        raise TypeError(f"cannot encode {kind.__name__} as DAG-CBOR")


def encode(value) -> bytes:
    out = bytearray()
    _encode(value, out)
    return bytes(out)


def decode(data: bytes):
    """Decode one DAG-CBOR item (links come back as ``bytes``: type them with a schema)."""
    import libipld

    try:
        return libipld.decode_dag_cbor(data)
    except Exception as exc:  # libipld raises ValueError subclasses with a one-line reason
        raise InvalidBlock(f"not valid DAG-CBOR: {str(exc).splitlines()[0]}") from None
