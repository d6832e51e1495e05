"""Frames over libp2p streams: reading and writing shared by the fetch and sync protocols.

Reads are plain awaits on the stream; timeouts are the caller's cancel scopes. Writes go through
:func:`write_all`, which respects the peer's Yamux window itself (see there: py-libp2p gives up
on a window that stays shut for five seconds, which is every transfer on a thin link).
"""

from __future__ import annotations

import trio

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


WRITE_STALL_S = 30.0
"""A write may wait this long for the peer to make room (take bytes, grant window), each time."""
WRITE_PIECE = 64 << 10
"""Most handed to the stream at once: a Yamux frame's worth. Once the link's queue is full, a
write returns at the link's pace, so the progress deadline must watch pieces this small (2 s
at 256 kbit/s), never a whole 1 MiB block (33 s: the deadline fired while bytes moved, and a
write cancelled mid-frame leaves the connection's framing broken)."""
WINDOW_POLL_S = 0.01
"""How often a writer waiting for window looks again (py-libp2p's own Yamux polls at this rate)."""


async def write_all(stream, data: bytes, stall_s: float = WRITE_STALL_S) -> None:
    """Write ``data`` whatever the link's speed; raise ``trio.TooSlowError`` if the peer takes
    nothing for ``stall_s``.

    A deadline on the whole write is wrong on a thin link: a 1 MiB block takes 33 s at 256 kbit/s
    while moving all along. And py-libp2p 0.8.1's Yamux gives up ("Timed out waiting for window
    update after 5 seconds") when the peer's receive window stays shut for 5 s; its window
    auto-tuning usually keeps windows large enough that this does not happen, but a 256 KiB
    window takes 8 s to drain over such a link. So the writer hands the stream only what the
    window admits, a frame at a time, and waits for more room itself, with the deadline on
    progress.
    """
    muxed = getattr(stream, "muxed_stream", stream)
    if not hasattr(muxed, "send_window"):  # not Yamux (a test double, another muxer)
        with trio.fail_after(stall_s):
            await stream.write(data)
        return
    view = memoryview(data)
    while view:
        with trio.fail_after(stall_s):
            while muxed.send_window <= 0 and not (muxed.closed or muxed.send_closed):
                await trio.sleep(WINDOW_POLL_S)
            # a closed stream: the write below raises the library's own error
            n = min(max(muxed.send_window, 1), len(view), WRITE_PIECE)
            await stream.write(bytes(view[:n]))
        view = view[n:]
