"""CARv1, streaming and sans-IO: bytes in, verified events out (IPLD spec ``transport/car/carv1``).

A CARv1 file is ``varint(H) header`` followed by sections ``varint(S) CID block``, where ``H`` is
the length of the DAG-CBOR header ``{"roots": [CID…], "version": 1}`` and ``S`` covers the CID
and the block together. Varints are unsigned LEB128. There is no index and no end marker: the
file ends where the last section ends.

Writing
-------
:func:`encode_header` and :func:`encode_section` return the bytes of one piece each; a writer
concatenates (or streams) them. The header is canonical DAG-CBOR, so its keys come in DAG-CBOR
order (length first, then bytes): ``roots`` before ``version``. A header may have no roots
(ipfs-car writes one when it streams to stdout).

Reading: theory of operation
----------------------------
:class:`CarReader` does no I/O, like ``h11``: the caller hands it bytes with :meth:`~CarReader.feed`
(split anywhere, one byte at a time included), says :meth:`~CarReader.feed_eof` at the end of the
input, and pulls events with :meth:`~CarReader.next_event` until it returns :data:`NEED_DATA`
(feed more) or :class:`End`. Events come in this order: one :class:`Header`, then one
:class:`Block` per section, then :class:`End`. Every block is verified against its CID before it
is returned, so a :class:`Block` is trusted data. One exception, asked for explicitly: a reader
made with ``verify_raw=False`` returns raw-codec sections (leaves, which carry no links) as
:class:`UnverifiedBlock`, whose :meth:`~UnverifiedBlock.check` the caller must pass before using
the bytes; a fetch hashes them in its block writer's thread (issue 14).

The reader is a small state machine over one buffer:

``HEADER_LENGTH``
    reading the header's length varint. Bounded by :data:`MAX_HEADER_BYTES` (rejected as soon as
    the varint has enough continuation bytes to exceed it: no waiting for the claimed bytes).
``HEADER``
    waiting for exactly that many bytes, then decoding them: a DAG-CBOR map with exactly the keys
    ``version`` (the integer 1) and ``roots`` (a list of at most :data:`MAX_ROOTS` CID links, each
    one fabnode can verify), in canonical form. Emits :class:`Header`.
``SECTION_LENGTH``
    reading a section's length varint. EOF with nothing buffered here is the normal end (emits
    :class:`End`); EOF inside the varint is a truncated file. The length is bounded by
    :data:`MAX_SECTION_BYTES` (again rejected from the varint's first bytes) and must not be 0.
``SECTION``
    the CID is parsed field by field (version, codec, multihash code, digest length, digest) as
    soon as its bytes arrive, so a CID fabnode cannot verify is rejected before the block is
    buffered. Then the reader waits for the rest of the section, hashes the block and emits
    :class:`Block`, or raises if the bytes do not match the CID.
``DONE`` / ``ERROR``
    terminal. After an error every call to :meth:`~CarReader.next_event` raises it again and the
    buffer is dropped.

Bounds, and why each exists
---------------------------
* :data:`MAX_HEADER_BYTES` (1 MiB, docs/protocol.md §12): the header is buffered whole before it can be
  decoded; without a bound a 9-byte varint could make the reader wait for, and buffer, exabytes.
* :data:`MAX_ROOTS`: real CARs name one root (fabnode exports) or a handful; a bound keeps root
  checks and messages small.
* :data:`MAX_BLOCK_BYTES` (2 MiB, docs/protocol.md §12) and :data:`MAX_SECTION_BYTES` (that plus
  the 36-byte CID): a section is buffered whole before it is verified, and no acceptable block is larger.
* varints are at most 9 bytes and minimally encoded: over-long or padded varints are either an
  attack on the bound checks or a different encoding of the same file.
* buffered memory: the reader holds at most the section it is assembling plus whatever the last
  :meth:`~CarReader.feed` brought. :meth:`~CarReader.feed` refuses more data while more than
  :data:`MAX_BUFFERED_BYTES` are waiting (the caller must drain events first), so memory stays
  at about one section plus one chunk whatever the file size. :attr:`~CarReader.buffered` shows it.

Only CIDv1 with sha2-256 and the codecs raw, dag-pb and dag-cbor are accepted (see
:func:`protocol.cid.check_cid_bytes`): those are the blocks fabnode can verify and store. CIDv0
sections are refused, except by a reader made with ``ipfs_tools=True`` (below).

Files from other IPFS tools (issue 16)
--------------------------------------
A reader made with ``ipfs_tools=True`` (``fabnode import`` uses one; a peer's fetch stream does
not) also reads what Kubo, go-car and friends write:

* **CIDv0** (a bare sha2-256 multihash, ``Qm…`` in text), as a header root or a section's CID.
  By the CID spec a CIDv0 is always dag-pb with sha2-256, so it is the CIDv1 ``0x01 0x70`` +
  the same multihash: the reader returns that CIDv1 (roots and blocks), and verifies the block
  against the same digest. (Links inside dag-pb nodes are converted the same way by
  :mod:`protocol.dagpb`.)
* **CARv2** (IPLD spec ``transport/car/carv2``): the 11-byte pragma ``0a a1 67 76 65 72 73 69 6f
  6e 02`` (a CARv1-style header that is exactly the DAG-CBOR ``{"version": 2}``), a 40-byte header
  (16 bytes of characteristics, then data offset, data size and index offset, each an unsigned
  64-bit little-endian integer), padding up to the data offset, the inner CARv1 (``data size``
  bytes), and an optional index at the index offset. States, after the pragma:

  ``V2_HEADER``
      waiting for the 40 bytes; the offsets must be coherent (the data starts after the
      header, holds at least one byte, and an index, if any, starts after the data).
  ``V2_PADDING``
      skipping bytes up to the data offset (a file that ends first is refused).
  then the CARv1 states above, on the inner CARv1, where no header or section may run past the
  data's end; at the data's end:
  ``V2_TAIL``
      the padding and index after the data are counted and dropped, and at EOF the index offset
      must fall inside the file. The index is never read for blocks: the reader goes through the
      data in order and verifies every block exactly as in a CARv1, so an index cannot make it
      trust anything (the spec calls the index a hint; a lying one changes nothing here).

  The characteristics are ignored (the only one defined, "fully indexed", is about the index). The spec warns that roots need not describe the contents and that blocks
may appear in any order or more than once; callers decide what that means for them.

Every failure raises :class:`CarError` (an :class:`~protocol.errors.InvalidBlock`) with one line
naming what was wrong and, where it helps, the section number (the first block is section 1) and
the byte offset of the section (or header) in the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from . import dagcbor
from .cid import CID_LENGTH, CODEC_NAMES, DAG_PB, RAW, SHA2_256, block_matches, check_cid_bytes, cid_str
from .dagcbor import Link
from .errors import InvalidBlock, InvalidCID
from .varint import MAX_VARINT_BYTES, decode_varint, encode_varint

__all__ = [
    "MAX_HEADER_BYTES", "MAX_BLOCK_BYTES", "MAX_SECTION_BYTES", "MAX_ROOTS", "MAX_BUFFERED_BYTES",
    "CarError", "Header", "Block", "UnverifiedBlock", "End", "NEED_DATA", "CarReader",
    "encode_header", "encode_section", "read_car", "V2_PRAGMA", "V2_HEADER_BYTES", "cid_v0_to_v1",
]

MAX_HEADER_BYTES = 1 << 20
"""Largest header (after its length varint) a reader accepts: 1 MiB (docs/protocol.md §12)."""
MAX_BLOCK_BYTES = 2 << 20
"""Largest block: 2 MiB (docs/protocol.md §2)."""
MAX_SECTION_BYTES = MAX_BLOCK_BYTES + CID_LENGTH
"""Largest section (CID + block) after its length varint."""
CIDV0_LENGTH = 34
"""A CIDv0: the sha2-256 multihash alone (0x12, 0x20, 32-byte digest)."""
MAX_ROOTS = 64
"""Most roots a header may name."""
MAX_BUFFERED_BYTES = MAX_SECTION_BYTES + MAX_VARINT_BYTES
"""While more than this is buffered, :meth:`CarReader.feed` refuses data until events are drained."""

# Multihash codes worth naming in a refusal (the multicodec table); others are shown in hex only.
_HASH_NAMES = {
    0x00: "identity", 0x11: "sha1", 0x12: "sha2-256", 0x13: "sha2-512", 0x14: "sha3-512",
    0x16: "sha3-256", 0x1B: "keccak-256", 0x1E: "blake3", 0xB220: "blake2b-256",
    0xB240: "blake2b-512", 0xB260: "blake2s-256",
}


class CarError(InvalidBlock):
    """A CAR file (or stream) that is malformed, truncated, over a bound, or holds a bad block.

    ``section`` (1-based) and ``offset`` (byte offset in the file of the section or header the
    problem is in) are set where meaningful; the message already names them.
    """

    def __init__(self, message: str, *, section: int | None = None, offset: int | None = None) -> None:
        super().__init__(message)
        self.section = section
        self.offset = offset


@dataclass(frozen=True, slots=True)
class Header:
    """The CAR header: its roots (binary CIDs, possibly none)."""

    roots: tuple[bytes, ...]
    car_version: int = 1
    """2 when these are the roots of a CARv2's inner CARv1."""


@dataclass(frozen=True, slots=True)
class Block:
    """One section: a block already verified against its CID."""

    cid: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class UnverifiedBlock:
    """A raw-codec section whose bytes are *not yet* hashed (only from a reader made with
    ``verify_raw=False``): it must pass :meth:`check` before it is stored or written out.

    Raw leaves carry no links, so nothing in them steers a reader; deferring their hash lets a
    caller hash them in another thread (a fetch's block writer) while this one goes on parsing.
    """

    cid: bytes
    data: bytes
    section: int
    """1-based section number, for the message."""
    offset: int
    """Byte offset of the section in the file, for the message."""

    def check(self) -> Block:
        """The verified :class:`Block`; raises :class:`CarError` (the reader's own message) if
        the bytes do not hash to the CID."""
        if not block_matches(self.cid, self.data):
            raise CarError(f"section {self.section} at byte {self.offset}: block {cid_str(self.cid)} does not "
                           f"match its CID (its {len(self.data)} bytes hash to a different sha2-256 digest)",
                           section=self.section, offset=self.offset)
        return Block(self.cid, self.data)


@dataclass(frozen=True, slots=True)
class End:
    """The input ended cleanly after the last section."""


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()
"""Returned by :meth:`CarReader.next_event` when it needs more bytes (or :meth:`CarReader.feed_eof`)."""

# ---------------------------------------------------------------------------------------- writer


def encode_header(roots: Iterable[bytes]) -> bytes:
    """``varint(len) + DAG-CBOR {"roots": [Link…], "version": 1}``; ``roots`` may be empty."""
    roots = list(roots)
    if len(roots) > MAX_ROOTS:
        raise CarError(f"a CAR header may name at most {MAX_ROOTS} roots, not {len(roots)}")
    for root in roots:
        try:
            check_cid_bytes(bytes(root))
        except InvalidCID as exc:
            raise CarError(f"cannot write CAR root: {exc}") from None
    body = dagcbor.encode({"roots": [Link(bytes(root)) for root in roots], "version": 1})
    return encode_varint(len(body)) + body


def encode_section(cid: bytes, data: bytes) -> bytes:
    """``varint(len(cid) + len(data)) + cid + data``.

    The CID must be one fabnode can verify (a writing bug otherwise); the block is not hashed
    and its size is not checked: blocks come from a verified store that already bounds them,
    and hostile-input tests need to write over-limit sections the reader then refuses.
    """
    return encode_section_head(cid, len(data)) + bytes(data)


def encode_section_head(cid: bytes, size: int) -> bytes:
    """What comes before a ``size``-byte block in its section: ``varint(len(cid) + size) + cid``
    (a writer of large blocks writes the block after it without copying it into one piece)."""
    try:
        check_cid_bytes(bytes(cid))
    except InvalidCID as exc:
        raise CarError(f"cannot write CAR section: {exc}") from None
    return encode_varint(len(cid) + size) + bytes(cid)


# ---------------------------------------------------------------------------------------- reader

_HEADER_LENGTH, _HEADER, _SECTION_LENGTH, _SECTION, _DONE, _ERROR, _V2_HEADER, _V2_PADDING, _V2_TAIL = range(9)

V2_PRAGMA = bytes.fromhex("0aa16776657273696f6e02")
"""The first 11 bytes of every CARv2 file: ``varint(10)`` + DAG-CBOR ``{"version": 2}``."""
V2_HEADER_BYTES = 40
"""characteristics (16) + data offset (8) + data size (8) + index offset (8)."""
_V2_DATA_MIN_OFFSET = len(V2_PRAGMA) + V2_HEADER_BYTES


class _Incomplete(Exception):
    """Internal: the bytes needed are not buffered yet."""


class CarReader:
    """Sans-IO CARv1 reader; see the module docstring for its states and bounds."""

    def __init__(self, *, verify_raw: bool = True, ipfs_tools: bool = False) -> None:
        self._verify_raw = verify_raw
        """False: raw-codec sections come out as :class:`UnverifiedBlock`, for the caller to hash."""
        self._ipfs_tools = ipfs_tools
        """True: also read CARv2 and CIDv0 (files from Kubo and other IPFS tools; module docstring)."""
        self._car_version = 1
        self._data_end: int | None = None  # CARv2: file offset where the inner CARv1 ends
        self._index_offset = 0  # CARv2: where the header says the index starts (0: none)
        self._cid_v0 = False  # the current section's CID is a CIDv0
        self._buf = bytearray()
        self._offset = 0  # file offset of self._buf[0]
        self._state = _HEADER_LENGTH
        self._eof = False
        self._error: CarError | None = None
        self._blocks = 0  # sections read and verified
        self._section = 0  # number of the section being read, 1-based
        self._start = 0  # file offset of the current header/section's length varint
        self._need = 0  # length of the current header/section body
        self._cid_len = 0  # length of the current section's CID once parsed, else 0

    # -- public surface

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet turned into events."""
        return len(self._buf)

    @property
    def offset(self) -> int:
        """File offset of the first byte still buffered (bytes consumed so far)."""
        return self._offset

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add input bytes (any amount, split anywhere). ``b""`` is a no-op, not EOF.

        Raises :class:`RuntimeError` after :meth:`feed_eof`, or while more than
        :data:`MAX_BUFFERED_BYTES` wait unread (drain :meth:`next_event` to :data:`NEED_DATA`
        first). After an error the reader ignores input.
        """
        if self._state == _ERROR:
            return
        if self._eof:
            raise RuntimeError("CarReader.feed() called after feed_eof()")
        if len(self._buf) > MAX_BUFFERED_BYTES:
            raise RuntimeError(f"CarReader holds {len(self._buf)} unread bytes: "
                               "call next_event() until NEED_DATA before feeding more")
        self._buf += data

    def feed_eof(self) -> None:
        """Declare the end of input: next_event() then returns End or raises for a truncated file."""
        self._eof = True

    def next_event(self) -> Header | Block | UnverifiedBlock | End | _NeedData:
        """The next event, or :data:`NEED_DATA`; raises :class:`CarError` on bad input."""
        if self._error is not None:
            raise CarError(str(self._error), section=self._error.section, offset=self._error.offset)
        try:
            return self._next()
        except CarError as exc:
            self._error = exc
            self._state = _ERROR
            self._buf = bytearray()
            raise

    # -- internals

    def _fail(self, message: str) -> CarError:
        return CarError(message, section=self._section or None, offset=self._start)

    def _where(self) -> str:
        return f"section {self._section} at byte {self._start}"

    def _consume(self, n: int) -> None:
        del self._buf[:n]  # O(1) amortised for a bytearray's head
        self._offset += n

    def _length_varint(self, limit: int, what: str, why: str) -> int | None:
        """Read a length varint at the head of the buffer; None while incomplete.

        Raises as soon as the value is known to exceed ``limit``: a varint's first bytes already
        bound it from below, so a huge claim fails before its remaining bytes (or the data it
        promises) arrive.
        """
        buf = self._buf
        for i in range(min(len(buf), MAX_VARINT_BYTES)):
            if buf[i] < 0x80:
                try:
                    value, end = decode_varint(buf, 0)
                except InvalidBlock as exc:
                    raise self._fail(f"{what} at byte {self._start}: {exc}") from None
                if value > limit:
                    raise self._fail(f"{what} at byte {self._start} claims {value} bytes, "
                                     f"more than the {limit}-byte limit ({why})")
                self._consume(end)
                return value
        if len(buf) >= MAX_VARINT_BYTES:
            raise self._fail(f"{what} at byte {self._start}: varint too long")
        # k bytes with the continuation bit set: a minimal varint now encodes at least 2**(7k).
        at_least = 1 << (7 * len(buf))
        if at_least > limit:
            raise self._fail(f"{what} at byte {self._start} claims at least {at_least} bytes, "
                             f"more than the {limit}-byte limit ({why})")
        return None

    def _next(self) -> Header | Block | UnverifiedBlock | End | _NeedData:
        state = self._state
        if state == _DONE:
            return End()
        if state == _HEADER_LENGTH:
            if not self._buf:
                if self._eof:
                    raise CarError("empty CAR file", offset=0)
                return NEED_DATA
            length = self._length_varint(MAX_HEADER_BYTES, "CAR header length", "1 MiB")
            if length is None:
                if self._eof:
                    raise CarError(f"truncated CAR: file ends inside the header length varint "
                                   f"(after {_bytes(len(self._buf))})", offset=0)
                return NEED_DATA
            if length == 0:
                raise CarError("CAR header has zero length", offset=0)
            self._need = length
            self._state = state = _HEADER
        if state == _HEADER:
            if len(self._buf) < self._need:
                if self._eof:
                    raise CarError(f"truncated CAR: header ends after {len(self._buf)} of {self._need} bytes",
                                   offset=0)
                return NEED_DATA
            raw = bytes(self._buf[:self._need])
            if self._data_end is None and _is_v2_pragma(raw, self._need, self._ipfs_tools):
                if not self._ipfs_tools:
                    raise CarError("this is a CARv2 file; only 'fabnode import' reads CARv2 (peers send CARv1)",
                                   offset=0)
                self._consume(self._need)
                self._state = state = _V2_HEADER
            else:
                if self._data_end is not None and raw == V2_PRAGMA[1:]:
                    raise self._fail("the data of this CARv2 is another CARv2; it must be a CARv1")
                if self._data_end is not None and self._offset + self._need > self._data_end:
                    raise self._fail(f"the CARv1 header inside the CARv2 runs past the end of the data "
                                     f"(byte {self._data_end}, from the data size)")
                roots = _parse_header(raw, self._ipfs_tools)
                self._consume(self._need)
                self._state = _SECTION_LENGTH
                self._start = self._offset
                return Header(roots, self._car_version)
        if state == _V2_HEADER:
            if len(self._buf) < V2_HEADER_BYTES:
                if self._eof:
                    raise CarError(f"truncated CARv2: the file ends inside its {V2_HEADER_BYTES}-byte header",
                                   offset=len(V2_PRAGMA))
                return NEED_DATA
            self._read_v2_header(bytes(self._buf[:V2_HEADER_BYTES]))
            self._consume(V2_HEADER_BYTES)
            self._state = state = _V2_PADDING
        if state == _V2_PADDING:
            data_start = self._data_end - self._data_size
            skip = min(len(self._buf), data_start - self._offset)
            self._consume(skip)
            if self._offset < data_start:
                if self._eof:
                    raise CarError(f"CARv2 data offset {data_start} is beyond the end of the file "
                                   f"({self._offset} bytes)", offset=len(V2_PRAGMA))
                return NEED_DATA
            self._car_version = 2
            self._start = self._offset
            self._state = state = _HEADER_LENGTH
            return self._next()
        if state == _V2_TAIL:
            self._consume(len(self._buf))
            if not self._eof:
                return NEED_DATA
            if self._index_offset and self._index_offset >= self._offset:
                raise CarError(f"CARv2 index offset {self._index_offset} is beyond the end of the file "
                               f"({self._offset} bytes)", offset=len(V2_PRAGMA))
            self._state = _DONE
            return End()
        if state == _SECTION_LENGTH:
            if self._data_end is not None and self._offset >= self._data_end:
                self._state = _V2_TAIL
                return self._next()
            if not self._buf:
                if self._eof:
                    if self._data_end is not None:
                        raise self._fail(f"truncated CARv2: the file ends at byte {self._offset} but its header "
                                         f"says the data runs to byte {self._data_end}")
                    self._state = _DONE
                    return End()
                return NEED_DATA
            self._section = self._blocks + 1
            self._start = self._offset
            length = self._length_varint(MAX_SECTION_BYTES, f"section {self._section} length",
                                         f"a {CID_LENGTH}-byte CID plus a {MAX_BLOCK_BYTES >> 20} MiB block")
            if length is None:
                if self._eof:
                    raise self._fail(f"truncated CAR: file ends inside the length varint of section "
                                     f"{self._section} at byte {self._start} (after {_bytes(len(self._buf))})")
                return NEED_DATA
            if length == 0:
                raise self._fail(f"{self._where()} has zero length (a section holds at least a CID)")
            if self._data_end is not None and self._offset + length > self._data_end:
                raise self._fail(f"{self._where()} runs past the end of the CARv2 data (byte {self._data_end}, "
                                 "from the header's data size)")
            self._need = length
            self._cid_len = 0
            self._cid_v0 = False
            self._state = state = _SECTION
        if state == _SECTION:
            if not self._cid_len:
                try:
                    self._cid_len = self._parse_cid()
                except _Incomplete:
                    if self._eof:
                        raise self._fail(f"truncated CAR: {self._where()} ends after {len(self._buf)} "
                                         f"of {self._need} bytes (inside its CID)") from None
                    return NEED_DATA
            if len(self._buf) < self._need:
                if self._eof:
                    raise self._fail(f"truncated CAR: {self._where()} ends after {len(self._buf)} "
                                     f"of {self._need} bytes")
                return NEED_DATA
            cid = bytes(self._buf[:self._cid_len])
            if self._cid_v0:
                cid = cid_v0_to_v1(cid)
            if not self._verify_raw and cid[1] == RAW:
                with memoryview(self._buf) as view:
                    data_view = view[self._cid_len:self._need]
                    data = bytes(data_view)
                    data_view.release()
                self._consume(self._need)
                self._blocks += 1
                self._state = _SECTION_LENGTH
                section, self._start = self._start, self._offset
                return UnverifiedBlock(cid, data, self._section, section)
            with memoryview(self._buf) as view:
                data_view = view[self._cid_len:self._need]
                try:
                    ok = block_matches(cid, data_view)
                    data = bytes(data_view) if ok else b""
                finally:
                    data_view.release()
            if not ok:
                raise self._fail(f"{self._where()}: block {cid_str(cid)} does not match its CID "
                                 f"(its {self._need - self._cid_len} bytes hash to a different sha2-256 digest)")
            self._consume(self._need)
            self._blocks += 1
            self._state = _SECTION_LENGTH
            self._start = self._offset
            return Block(cid, data)
        raise AssertionError(f"CarReader in unknown state {state}")  # pragma: no cover

    def _read_v2_header(self, raw: bytes) -> None:
        """Check the CARv2 header's offsets against each other (the file's size is checked as it ends)."""
        data_offset = int.from_bytes(raw[16:24], "little")
        data_size = int.from_bytes(raw[24:32], "little")
        index_offset = int.from_bytes(raw[32:40], "little")
        if data_offset < _V2_DATA_MIN_OFFSET:
            raise CarError(f"CARv2 data offset {data_offset} points inside the pragma and header (the data "
                           f"starts at byte {_V2_DATA_MIN_OFFSET} or later)", offset=len(V2_PRAGMA))
        if data_size == 0:
            raise CarError("CARv2 data size is 0: the file holds no CARv1", offset=len(V2_PRAGMA))
        if index_offset and index_offset < data_offset + data_size:
            raise CarError(f"CARv2 index offset {index_offset} points into the header or the data "
                           f"(bytes 0-{data_offset + data_size - 1})", offset=len(V2_PRAGMA))
        self._data_size = data_size
        self._data_end = data_offset + data_size
        self._index_offset = index_offset

    def _parse_cid(self) -> int:
        """Check the CID at the head of the current section; return its length.

        Raises :class:`_Incomplete` when more bytes are needed, :class:`CarError` when the CID is
        not one fabnode can verify or does not fit in the section.
        """
        buf = self._buf
        limit = self._need
        avail = min(len(buf), limit)
        pos = 0

        def field(name: str) -> int:
            nonlocal pos
            for i in range(pos, min(avail, pos + MAX_VARINT_BYTES)):
                if buf[i] < 0x80:
                    try:
                        value, pos = decode_varint(buf, pos)
                    except InvalidBlock as exc:
                        raise self._fail(f"{self._where()}: CID {name}: {exc}") from None
                    return value
            if avail - pos >= MAX_VARINT_BYTES:
                raise self._fail(f"{self._where()}: CID {name}: varint too long")
            if avail == limit:
                raise self._fail(f"{self._where()}: its CID runs past the end of the {limit}-byte section")
            raise _Incomplete

        version = field("version")
        if version == SHA2_256 and self._ipfs_tools:
            if limit < CIDV0_LENGTH:
                raise self._fail(f"{self._where()}: its CID runs past the end of the {limit}-byte section")
            if avail < 2:
                raise _Incomplete
            if buf[1] != 0x20:
                raise self._fail(f"{self._where()}: a CIDv0 must be a 32-byte sha2-256 multihash")
            if avail < CIDV0_LENGTH:
                raise _Incomplete
            self._cid_v0 = True
            return CIDV0_LENGTH
        if version == SHA2_256 and (avail < 2 or buf[1] == 0x20):
            raise self._fail(f"{self._where()} holds a CIDv0 (bare sha2-256 multihash); "
                             "fabnode reads only CIDv1 sections")
        if version != 1:
            raise self._fail(f"{self._where()}: CID version {version} is not supported (only CIDv1)")
        codec = field("codec")
        if codec not in CODEC_NAMES:
            raise self._fail(f"{self._where()}: CID uses codec 0x{codec:x}; "
                             "fabnode stores only raw, dag-pb and dag-cbor")
        hash_code = field("hash function")
        if hash_code != SHA2_256:
            name = _HASH_NAMES.get(hash_code)
            shown = f"0x{hash_code:x}" + (f" ({name})" if name else "")
            raise self._fail(f"{self._where()}: CID uses hash function {shown}; fabnode verifies only sha2-256")
        digest_len = field("digest length")
        if digest_len != 32:
            raise self._fail(f"{self._where()}: CID has a {digest_len}-byte sha2-256 digest, not 32 bytes")
        end = pos + digest_len
        if end > limit:
            raise self._fail(f"{self._where()}: its CID runs past the end of the {limit}-byte section")
        if avail < end:
            raise _Incomplete
        try:
            check_cid_bytes(bytes(buf[:end]))
        except InvalidCID as exc:  # not reachable with the checks above; kept as the final word
            raise self._fail(f"{self._where()}: {exc}") from None
        return end


def _is_v2_pragma(raw: bytes, length: int, ipfs_tools: bool) -> bool:
    """Whether a header body is a CARv2 pragma; a reader of CARv2 refuses a near-miss (version 2
    with other keys) as such."""
    if len(raw) + 1 == len(V2_PRAGMA) and length == 10 and raw == V2_PRAGMA[1:]:
        return True
    if not ipfs_tools:
        return False
    try:
        value = dagcbor.decode(raw)
    except InvalidBlock:
        return False
    if isinstance(value, dict) and value.get("version") == 2:
        raise CarError("CAR header says version 2 but is not the CARv2 pragma (exactly the 11 bytes "
                       f"{V2_PRAGMA.hex(' ')})", offset=0)
    return False


def cid_v0_to_v1(multihash: bytes) -> bytes:
    """A CIDv0 (a bare sha2-256 multihash) as the CIDv1 it stands for: dag-pb, same multihash."""
    return bytes([1, DAG_PB]) + multihash


def _is_cid_v0(value: bytes) -> bool:
    return len(value) == CIDV0_LENGTH and value[0] == SHA2_256 and value[1] == 32


def _parse_header(raw: bytes, ipfs_tools: bool = False) -> tuple[bytes, ...]:
    try:
        value = dagcbor.decode(raw)
    except InvalidBlock as exc:
        raise CarError(f"CAR header is {exc}", offset=0) from None
    if not isinstance(value, dict):
        raise CarError(f"CAR header is not a DAG-CBOR map (it is {_kind(value)})", offset=0)
    keys = set(value)
    if keys != {"roots", "version"}:
        missing = sorted({"roots", "version"} - keys)
        extra = sorted(str(k) for k in keys - {"roots", "version"})
        parts = ([f"missing {', '.join(map(repr, missing))}"] if missing else []) + \
                ([f"unexpected {', '.join(map(repr, extra))}"] if extra else [])
        raise CarError(f"CAR header must have exactly the keys 'roots' and 'version' ({'; '.join(parts)})",
                       offset=0)
    version = value["version"]
    if type(version) is not int or version != 1:
        raise CarError(f"CAR header has version {version!r}; only CARv1 (version 1) is read here", offset=0)
    roots = value["roots"]
    if not isinstance(roots, list):
        raise CarError(f"CAR header roots is {_kind(roots)}, not a list of CIDs", offset=0)
    if len(roots) > MAX_ROOTS:
        raise CarError(f"CAR header names {len(roots)} roots; at most {MAX_ROOTS} are accepted", offset=0)
    for i, root in enumerate(roots, 1):
        if not isinstance(root, bytes):
            raise CarError(f"CAR header root {i} is {_kind(root)}, not a CID", offset=0)
        if ipfs_tools and _is_cid_v0(root):
            continue  # a CIDv0 root (Kubo): converted below, once the header is proven canonical
        try:
            check_cid_bytes(root)
        except InvalidCID as exc:
            raise CarError(f"CAR header root {i}: {exc}", offset=0) from None
    # libipld returns links and byte strings alike as bytes, and tolerates some non-canonical
    # forms: only a byte-exact re-encoding proves every root is a tag-42 link.
    if dagcbor.encode({"roots": [Link(r) for r in roots], "version": 1}) != raw:
        if dagcbor.encode({"roots": roots, "version": 1}) == raw:
            raise CarError("CAR header roots are byte strings, not CID links (tag 42)", offset=0)
        raise CarError("CAR header is not canonical DAG-CBOR (or a root is not a CID link)", offset=0)
    return tuple(cid_v0_to_v1(r) if ipfs_tools and _is_cid_v0(r) else r for r in roots)


def _bytes(n: int) -> str:
    return "1 byte" if n == 1 else f"{n} bytes"


def _kind(value) -> str:
    """``a list``, ``an integer``…: how a decoded DAG-CBOR value is named in messages."""
    return {dict: "a map", list: "a list", str: "a string", bytes: "a byte string", bool: "a boolean",
            int: "an integer", float: "a float", type(None): "null"}.get(type(value), type(value).__name__)


def read_car(chunks: Iterable[bytes], *, ipfs_tools: bool = False) -> Iterator[Header | Block]:
    """Read a whole CAR from an iterable of byte chunks: one :class:`Header`, then each :class:`Block`.

    Memory stays at about one section plus one chunk. Raises :class:`CarError` on bad input.
    ``ipfs_tools``: also read CARv2 and CIDv0 (see the module docstring).
    """
    reader = CarReader(ipfs_tools=ipfs_tools)
    for chunk in chunks:
        reader.feed(chunk)
        while True:
            event = reader.next_event()
            if event is NEED_DATA:
                break
            yield event  # type: ignore[misc]
    reader.feed_eof()
    while True:
        event = reader.next_event()
        if isinstance(event, End):
            return
        if event is NEED_DATA:  # pragma: no cover - after EOF the reader ends or raises
            raise AssertionError("CarReader wanted data after EOF")
        yield event  # type: ignore[misc]
