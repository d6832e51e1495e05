"""The sync protocol ``/fabnode/sync/1.0.0`` (docs/protocol.md §8): its frames, without I/O.

Theory of operation: when two nodes meet, one (the *initiator*) opens a stream. Both run
:class:`protocol.reconcile.Reconciler` over their record sets, passing ``reconcile`` frames back
and forth (initiator first) until one side's step returns no reply; that side sends a final
``reconcile`` frame with ``msg = None``. Each side now knows which of its records the other lacks
(*send*) and which short ids of the other's it lacks (*ask*). Then, in turn — initiator, then
responder, then initiator — each sends its ``want`` (short ids), then ``records`` frames (its
*send* list, and the answers to the other's ``want``), then ``end``. Every record received is
verified against every rule of docs/protocol.md §4.5 before it is stored; a peer that sends anything
malformed or invalid is cut off.

Frames are varint-length-prefixed msgpack maps of at most 4 MiB (docs/protocol.md §8.1)::

    {"type": "reconcile", "msg": bytes | None}
    {"type": "want", "ids": [8-byte short ids]}
    {"type": "records", "records": [record blocks]}
    {"type": "end"}
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from .errors import RemoteProtocolError
from .reconcile import SHORT_ID
from .records import MAX_RECORD_BYTES
from .varint import encode_varint

PROTOCOL = "/fabnode/sync/1.0.0"
MAX_FRAME = 4 << 20
MAX_WANT = 400_000
"""Short ids in one want frame (3.2 MiB, under the frame limit)."""
RECORDS_PER_FRAME_BYTES = 1 << 20
"""Records frames are kept to 1 MiB (under the 4 MiB limit) so a large catch-up commits often."""


class SyncProtocolError(RemoteProtocolError):
    """The peer broke the sync protocol; the sync stops and the peer is disconnected."""


def encode_frame(frame: dict) -> bytes:
    body = msgpack.packb(frame, use_bin_type=True)
    if len(body) > MAX_FRAME:
        raise ValueError("sync frame too large")
    return encode_varint(len(body)) + body


def decode_frame(body: bytes, expect: set[str]) -> dict:
    """Check one frame's body (length already read and bounded) and its type."""
    try:
        frame = msgpack.unpackb(body, raw=False, strict_map_key=True, max_bin_len=MAX_FRAME)
    except Exception as exc:
        raise SyncProtocolError(f"sync frame is not msgpack ({type(exc).__name__})") from None
    if not isinstance(frame, dict) or frame.get("type") not in expect:
        got = frame.get("type") if isinstance(frame, dict) else type(frame).__name__
        raise SyncProtocolError(f"sync: expected a {' or '.join(sorted(expect))} frame, got {got!r}")
    kind = frame["type"]
    if kind == "reconcile":
        if set(frame) != {"type", "msg"} or not (frame["msg"] is None or isinstance(frame["msg"], bytes)):
            raise SyncProtocolError("sync: a reconcile frame carries msg (bytes or nil) only")
    elif kind == "want":
        ids = frame.get("ids")
        if set(frame) != {"type", "ids"} or not isinstance(ids, list) or len(ids) > MAX_WANT \
                or not all(isinstance(i, bytes) and len(i) == SHORT_ID for i in ids):
            raise SyncProtocolError(f"sync: a want frame lists at most {MAX_WANT} {SHORT_ID}-byte short ids")
    elif kind == "records":
        records = frame.get("records")
        if set(frame) != {"type", "records"} or not isinstance(records, list) \
                or not all(isinstance(r, bytes) and len(r) <= MAX_RECORD_BYTES for r in records):
            raise SyncProtocolError(f"sync: a records frame lists record blocks of at most {MAX_RECORD_BYTES} bytes")
    elif set(frame) != {"type"}:
        raise SyncProtocolError("sync: an end frame carries nothing else")
    return frame


def record_frames(blocks: list[bytes], max_bytes: int = RECORDS_PER_FRAME_BYTES) -> list[bytes]:
    """``records`` frames holding ``blocks``, each under ``max_bytes`` (and the frame limit)."""
    frames, batch, size = [], [], 0
    max_bytes = min(max_bytes, RECORDS_PER_FRAME_BYTES)
    for block in blocks:
        if batch and size + len(block) + 8 > max_bytes:
            frames.append(encode_frame({"type": "records", "records": batch}))
            batch, size = [], 0
        batch.append(block)
        size += len(block) + 8
    if batch:
        frames.append(encode_frame({"type": "records", "records": batch}))
    return frames


# ---------------------------------------------------------------------- frames as values


@dataclass(frozen=True, slots=True)
class Reconcile:
    """A reconciliation message (protocol.reconcile), or None: nothing more to say."""

    msg: bytes | None

    def encode(self) -> bytes:
        return encode_frame({"type": "reconcile", "msg": self.msg})


@dataclass(frozen=True, slots=True)
class Want:
    """Short ids of the sender's missing records."""

    ids: tuple[bytes, ...]

    def encode(self) -> bytes:
        return encode_frame({"type": "want", "ids": list(self.ids)})


@dataclass(frozen=True, slots=True)
class Records:
    """Record blocks (each checked before it is stored)."""

    records: tuple[bytes, ...]

    def encode(self) -> bytes:
        return encode_frame({"type": "records", "records": list(self.records)})


@dataclass(frozen=True, slots=True)
class End:
    """The sender's part is over."""

    def encode(self) -> bytes:
        return encode_frame({"type": "end"})


FRAMES = {"reconcile": Reconcile, "want": Want, "records": Records, "end": End}


def parse_frame(body: bytes, expect: tuple[type, ...]) -> Reconcile | Want | Records | End:
    """One frame's body as a value, checked (:func:`decode_frame`) to be of a type in ``expect``."""
    names = {name for name, kind in FRAMES.items() if kind in expect}
    frame = decode_frame(body, names)
    kind = frame.pop("type")
    return FRAMES[kind](**{k: tuple(v) if isinstance(v, list) else v for k, v in frame.items()})
