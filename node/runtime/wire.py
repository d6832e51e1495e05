"""Frames over libp2p streams: the reading side shared by the fetch and sync protocols.

Reads are plain awaits on the stream; timeouts are the caller's cancel scopes.
"""

from __future__ import annotations

from fabnode.protocol.errors import FabnodeError, RemoteProtocolError
from fabnode.protocol.varint import MAX_VARINT_BYTES


class StreamEnded(FabnodeError):
    """The peer closed the stream mid-frame: it went away, which is not an offence (so not a
    :class:`~protocol.errors.RemoteProtocolError`: nobody is cut off for it)."""


async def read_exact(stream, n: int) -> bytes:
    """Exactly ``n`` bytes from a libp2p stream; :class:`StreamEnded` if it closes first."""
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.read(n - len(buf))
        if not chunk:
            raise StreamEnded(f"stream ended after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


async def read_frame(stream, limit: int) -> bytes:
    """One varint-length-prefixed frame from a libp2p stream (the framing of the fetch and
    sync protocols); a length over ``limit`` or a varint too long is the peer's fault."""
    length = shift = 0
    for i in range(MAX_VARINT_BYTES):
        byte = (await read_exact(stream, 1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    else:
        raise RemoteProtocolError("frame length varint too long")
    if length > limit:
        raise RemoteProtocolError(f"frame of {length} bytes is over the {limit}-byte limit")
    return await read_exact(stream, length)
