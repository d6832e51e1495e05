"""Bitswap messages and a peer's wants: the pure half of fabnode's Bitswap (docs/protocol.md §Bitswap).

Bitswap (https://specs.ipfs.tech/bitswap-protocol/) is how IPFS nodes (Kubo, Helia) move blocks.
On ``/ipfs/bitswap/1.2.0``, ``1.1.0`` and ``1.0.0`` each side writes varint-length-prefixed
protobuf ``Message``s on streams *it* opened: a want goes out on the asker's stream, the blocks
come back on a stream the server opens (Helia and Kubo never read answers on their own stream)::

    message Message {
      message Wantlist {
        message Entry { bytes block = 1; int32 priority = 2; bool cancel = 3;
                        WantType wantType = 4;  /* Block = 0, Have = 1 */ bool sendDontHave = 5; }
        repeated Entry entries = 1; bool full = 2;
      }
      message Block { bytes prefix = 1; bytes data = 2; }
      message BlockPresence { bytes cid = 1; BlockPresenceType type = 2; /* Have = 0, DontHave = 1 */ }
      Wantlist wantlist = 1;
      repeated bytes blocks = 2;            // 1.0.0: the block bytes only (CIDv0 implied)
      repeated Block payload = 3;           // 1.1.0+: CID prefix + bytes
      repeated BlockPresence blockPresences = 4;
      int32 pendingBytes = 5;
    }

The protobuf reader here is a small strict one (the message has five fields, and the module
stays pure: the generated classes live inside libp2p). A received block is never trusted for
what it says it is: its CID is *computed* from its bytes (sha2-256 under the prefix's codec), so
a block with the wrong bytes simply is another CID, which nobody wanted.

Theory of operation of :class:`PeerWants` (what a server owes one peer): a peer's wantlist
entries go into an ordered queue (highest priority first, then oldest), at most
``max_entries`` of them; an entry over the cap is dropped and counted (the caller logs one line),
a cancel removes its entry, a ``full`` wantlist replaces the queue. The server takes entries
from the front as its upload budget allows and answers each: the block, HAVE, or DONT_HAVE
when the peer asked for that.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from .cid import CODEC_NAMES, DAG_PB, SHA2_256, check_cid_bytes
from .errors import InvalidCID, RemoteProtocolError

PROTOCOLS = ("/ipfs/bitswap/1.2.0", "/ipfs/bitswap/1.1.0", "/ipfs/bitswap/1.0.0")
"""Offered in this order; Helia speaks only 1.2.0, Kubo all three."""
V100 = "/ipfs/bitswap/1.0.0"

MAX_MESSAGE_BYTES = 4 << 20
"""A received message over this is refused (an offence): go-bitswap and Helia send at most 4 MiB."""
MAX_BLOCK_BYTES = 2 << 20
"""A block over this is refused: fabnode's blocks are at most 2 MiB (protocol/car.py), as IPFS's."""
SEND_MESSAGE_BYTES = 1 << 20
"""The server packs blocks into messages of about this size (at least one block each)."""
MAX_CID_BYTES = 128
"""A wantlist CID longer than this is not a CID any node could hold (ours are 36 bytes)."""

WANT_BLOCK, WANT_HAVE = 0, 1
HAVE, DONT_HAVE = 0, 1


@dataclass(frozen=True, slots=True)
class WantEntry:
    cid: bytes
    """The CID as the peer sent it (CIDv0 or v1): answers must name it the same way."""
    priority: int = 1
    cancel: bool = False
    want_have: bool = False
    send_dont_have: bool = False


@dataclass(frozen=True, slots=True)
class ReceivedBlock:
    cid: bytes
    """fabnode's binary CIDv1, computed from the bytes: the block is what this CID names."""
    data: bytes


@dataclass(slots=True)
class Message:
    wants: list[WantEntry] = field(default_factory=list)
    full: bool = False
    blocks: list[ReceivedBlock] = field(default_factory=list)
    presences: list[tuple[bytes, int]] = field(default_factory=list)
    """(CID as sent, HAVE or DONT_HAVE)."""
    unverifiable: int = 0
    """Blocks whose prefix names a hash or codec fabnode cannot check: dropped, counted."""


# ------------------------------------------------------------------ protobuf, the few parts needed


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A protobuf varint (up to 10 bytes: a negative int32 takes ten)."""
    value = shift = 0
    for i in range(10):
        if pos >= len(buf):
            raise RemoteProtocolError("bitswap message: truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise RemoteProtocolError("bitswap message: varint longer than 10 bytes")


def _fields(buf: bytes):
    """(field number, wire type, value) of each field: value an int (varint) or bytes
    (length-delimited). Fixed-width fields are skipped; groups are refused."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if length > len(buf) - pos:
                raise RemoteProtocolError("bitswap message: a field runs past the end")
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 1 or wire == 5:
            pos += 8 if wire == 1 else 4
            if pos > len(buf):
                raise RemoteProtocolError("bitswap message: a field runs past the end")
            continue
        else:
            raise RemoteProtocolError(f"bitswap message: wire type {wire} is not used by Bitswap")
        yield number, wire, value


def _uvarint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32s are sent as ten-byte two's complement
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _bytes_field(number: int, value: bytes) -> bytes:
    return _uvarint(number << 3 | 2) + _uvarint(len(value)) + value


def _int_field(number: int, value: int) -> bytes:
    return _uvarint(number << 3) + _uvarint(value) if value else b""


def _int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


# ------------------------------------------------------------------ CIDs and prefixes


def internal_cid(wire_cid: bytes) -> bytes | None:
    """fabnode's binary CIDv1 for a CID as Bitswap carries it (v1, or v0 = a bare sha2-256
    multihash of a dag-pb block); None for one fabnode cannot hold (another hash or codec)."""
    if len(wire_cid) == 34 and wire_cid[:2] == bytes([SHA2_256, 32]):
        return bytes([0x01, DAG_PB, SHA2_256, 32]) + wire_cid[2:]
    try:
        return check_cid_bytes(wire_cid)
    except InvalidCID:
        return None


def prefix_of(wire_cid: bytes) -> bytes:
    """The 1.1.0 block prefix (version, codec, hash, digest length) for a CID as the peer named it."""
    if len(wire_cid) == 34 and wire_cid[0] == SHA2_256:
        return bytes([0, DAG_PB, SHA2_256, 32])
    return wire_cid[:4]  # fabnode's CIDs are one-byte varints throughout (protocol/cid.py)


def _cid_from_prefix(prefix: bytes, data: bytes) -> bytes | None:
    """The CIDv1 the bytes have under ``prefix``; None for a prefix fabnode cannot verify."""
    try:
        version, pos = _varint(prefix, 0)
        codec, pos = _varint(prefix, pos)
        hash_code, pos = _varint(prefix, pos)
        length, pos = _varint(prefix, pos)
    except RemoteProtocolError:
        return None
    if pos != len(prefix) or version not in (0, 1) or hash_code != SHA2_256 or length != 32:
        return None
    if codec not in CODEC_NAMES or (version == 0 and codec != DAG_PB):
        return None
    return bytes([0x01, codec, SHA2_256, 32]) + hashlib.sha256(data).digest()


# ------------------------------------------------------------------ messages


def decode_message(buf: bytes) -> Message:
    """A received message; blocks are named by the CID their bytes hash to. Raises
    :class:`RemoteProtocolError` (an offence) for a malformed one."""
    if len(buf) > MAX_MESSAGE_BYTES:
        raise RemoteProtocolError(f"bitswap message of {len(buf)} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")
    msg = Message()
    for number, wire, value in _fields(buf):
        if number == 1 and wire == 2:
            _decode_wantlist(value, msg)
        elif number == 2 and wire == 2:  # 1.0.0: bytes only, CIDv0 (dag-pb, sha2-256) implied
            _add_block(msg, bytes([0, DAG_PB, SHA2_256, 32]), value)
        elif number == 3 and wire == 2:
            prefix = data = b""
            for n, w, v in _fields(value):
                if n == 1 and w == 2:
                    prefix = v
                elif n == 2 and w == 2:
                    data = v
            _add_block(msg, prefix, data)
        elif number == 4 and wire == 2:
            cid, kind = b"", HAVE
            for n, w, v in _fields(value):
                if n == 1 and w == 2:
                    cid = v
                elif n == 2 and w == 0:
                    kind = v
            if cid and len(cid) <= MAX_CID_BYTES:
                msg.presences.append((bytes(cid), DONT_HAVE if kind == DONT_HAVE else HAVE))
    return msg


def _add_block(msg: Message, prefix: bytes, data: bytes) -> None:
    if len(data) > MAX_BLOCK_BYTES:
        raise RemoteProtocolError(f"bitswap block of {len(data)} bytes is over the {MAX_BLOCK_BYTES}-byte limit")
    cid = _cid_from_prefix(prefix, data)
    if cid is None:
        msg.unverifiable += 1
    else:
        msg.blocks.append(ReceivedBlock(cid, bytes(data)))


def _decode_wantlist(buf: bytes, msg: Message) -> None:
    for number, wire, value in _fields(buf):
        if number == 2 and wire == 0:
            msg.full = bool(value)
        elif number == 1 and wire == 2:
            cid, priority, cancel, want_have, dont_have = b"", 1, False, False, False
            for n, w, v in _fields(value):
                if n == 1 and w == 2:
                    cid = v
                elif w != 0:
                    continue
                elif n == 2:
                    priority = _int32(v)
                elif n == 3:
                    cancel = bool(v)
                elif n == 4:
                    want_have = v == WANT_HAVE
                elif n == 5:
                    dont_have = bool(v)
            if not cid or len(cid) > MAX_CID_BYTES:
                raise RemoteProtocolError("bitswap message: a wantlist entry without a CID, or one too long")
            msg.wants.append(WantEntry(bytes(cid), priority, cancel, want_have, dont_have))


def encode_message(*, wants: list[WantEntry] = (), full: bool = False, blocks: list[tuple[bytes, bytes]] = (),
                   presences: list[tuple[bytes, int]] = (), v100: bool = False) -> bytes:
    """A message (without its length prefix). ``blocks`` are (CID as the peer named it, bytes);
    on 1.0.0 (``v100``) they go out bare and presences are left out (1.0.0 has none)."""
    out = bytearray()
    if wants or full:
        entries = b"".join(_bytes_field(1, _bytes_field(1, w.cid) + _int_field(2, w.priority) +
                                        _int_field(3, int(w.cancel)) + _int_field(4, int(w.want_have)) +
                                        _int_field(5, int(w.send_dont_have)))
                           for w in wants)
        out += _bytes_field(1, entries + _int_field(2, int(full)))
    for cid, data in blocks:
        out += _bytes_field(2, data) if v100 else _bytes_field(3, _bytes_field(1, prefix_of(cid)) + _bytes_field(2, data))
    if not v100:
        for cid, kind in presences:
            out += _bytes_field(4, _bytes_field(1, cid) + _int_field(2, kind))
    return bytes(out)


def frame(message: bytes) -> bytes:
    """A message as it goes on the stream: its length as a varint, then the bytes."""
    return _uvarint(len(message)) + message


# ------------------------------------------------------------------ what a server owes one peer


class PeerWants:
    """One peer's wantlist as the server keeps it: ordered, bounded (see the module's theory)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: dict[bytes, WantEntry] = {}
        self.dropped = 0
        """Entries refused because the queue was full, since the caller last looked (it resets it)."""

    def __len__(self) -> int:
        return len(self._entries)

    def apply(self, msg: Message) -> None:
        """Take a received message's wantlist: a full list replaces the queue, a cancel removes."""
        if msg.full:
            self._entries.clear()
        for want in msg.wants:
            if want.cancel:
                self._entries.pop(want.cid, None)
            elif want.cid in self._entries:
                self._entries[want.cid] = want  # a changed priority or want type
            elif len(self._entries) < self.max_entries:
                self._entries[want.cid] = want
            else:
                self.dropped += 1

    def take(self, n: int) -> list[WantEntry]:
        """Up to ``n`` entries to answer now, highest priority first, then oldest; removed."""
        chosen = sorted(self._entries.values(), key=lambda w: -w.priority)[:n]  # stable: oldest first
        for want in chosen:
            del self._entries[want.cid]
        return chosen
