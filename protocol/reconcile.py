"""Range-based set reconciliation over (timestamp, record id), in the manner of negentropy v1.

Theory of operation
-------------------
Each side holds a set of items ``(ts, id)`` — a record's advisory timestamp in milliseconds and
the 32-byte digest of its CID — sorted by ``(ts, id)``. A message is a list of consecutive
ranges covering the whole space, each ending at an exclusive upper *bound* and carrying a mode:

* ``SKIP``: nothing to do in this range (both sides agree, or it is settled);
* ``FINGERPRINT``: a digest of the sender's items in the range (count and the sum of ids);
* ``IDLIST``: the sender's items in the range, as 8-byte short ids.

The initiator sends fingerprints over its set cut into ``initial_branches`` ranges. The receiver
of a message answers each range in turn: an equal fingerprint becomes ``SKIP``; a different one
is split into ``branches`` smaller fingerprint ranges over the receiver's own items, or, once the
receiver holds at most ``idlist_threshold`` items there, answered with an ``IDLIST``. The
receiver of an ``IDLIST`` knows both sides of that range, so it settles it locally: its own items
missing from the list are ones to *send*; listed short ids it lacks are ones to *ask for*; it
answers ``SKIP``. Both roles run the same :meth:`Reconciler.respond`; a message of skips only
means done. Cost grows with the number of differences (each isolated in about
log_branches(n / differences) rounds), not with the size of the sets.

Fingerprint: the first 8 bytes of SHA-256(sum of the ids as little-endian integers mod 2^256,
32 bytes little-endian ‖ varint(count)) — negentropy's construction, shortened: a collision only
hides a difference from the two peers that computed it, and the next sync (or another peer)
finds it. Prefix sums make any range's fingerprint O(1).

Wire format (version byte 0x61, then ranges until the last, whose bound is infinity)::

    bound   := varint(ts == INF ? 0 : ts - previous_ts + 1)  varint(len(prefix))  prefix
    range   := bound  varint(mode)  payload
    payload := SKIP: nothing | FINGERPRINT: 8 bytes | IDLIST: varint(n) n×8 bytes

A bound ``(ts, prefix)`` lies just below every item with that ts whose id starts with prefix;
bounds are minimal (the shortest prefix separating two neighbours). A frame that would exceed
``frame_limit`` ends early with one fingerprint over everything left, answered in a later round.
Pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from dataclasses import dataclass, field

from .errors import InvalidBlock, RemoteProtocolError
from .varint import decode_varint, encode_varint

VERSION = 0x61
SKIP, FINGERPRINT, IDLIST = 0, 1, 2
ID_BYTES = 32
SHORT_ID = 8
FINGERPRINT_BYTES = 8
INF_TS = 1 << 64
MAX_TS = (1 << 62) - 1
"""Timestamps above this are clamped by the caller (a record's ts is advisory, and only orders)."""
MOD = 1 << 256
DEFAULT_FRAME_LIMIT = 256 * 1024
MAX_RANGES = 100_000
MAX_IDLIST = 10_000


class ReconcileError(RemoteProtocolError):
    """A peer's reconciliation message breaks the format; the sync with it stops."""


@dataclass(frozen=True, order=True, slots=True)
class Bound:
    ts: int
    prefix: bytes = b""

    @property
    def key(self) -> tuple[int, bytes]:
        return (self.ts, self.prefix)


INFINITY = Bound(INF_TS)


def short_id(item_id: bytes) -> bytes:
    return item_id[:SHORT_ID]


def fingerprint(id_sum: int, count: int) -> bytes:
    return hashlib.sha256((id_sum % MOD).to_bytes(32, "little") + encode_varint(count)).digest()[:FINGERPRINT_BYTES]


def minimal_bound(below: tuple[int, bytes], at: tuple[int, bytes]) -> Bound:
    """The shortest bound b with ``below < b <= at``."""
    if below[0] != at[0]:
        return Bound(at[0])
    shared = 0
    while shared < ID_BYTES and below[1][shared] == at[1][shared]:
        shared += 1
    return Bound(at[0], at[1][:shared + 1])


class ItemSet:
    """A sorted, immutable set of (ts, id) items with O(1) range fingerprints."""

    def __init__(self, items) -> None:
        self.items: list[tuple[int, bytes]] = sorted(set(items))
        for ts, item_id in self.items:
            if not (0 <= ts <= MAX_TS) or len(item_id) != ID_BYTES:
                raise ValueError(f"bad item ({ts}, {item_id!r})")
        self._sums = [0]
        for _, item_id in self.items:
            self._sums.append((self._sums[-1] + int.from_bytes(item_id, "little")) % MOD)
        self._by_short: dict[bytes, list[bytes]] = {}
        for _, item_id in self.items:
            self._by_short.setdefault(short_id(item_id), []).append(item_id)

    def __len__(self) -> int:
        return len(self.items)

    def index(self, bound: Bound) -> int:
        """How many items lie below ``bound``."""
        return len(self.items) if bound.ts == INF_TS else bisect_left(self.items, bound.key)

    def fingerprint(self, lo: int, hi: int) -> bytes:
        return fingerprint(self._sums[hi] - self._sums[lo], hi - lo)

    def ids_for_short(self, short: bytes) -> list[bytes]:
        return list(self._by_short.get(short, ()))


@dataclass
class Range:
    upper: Bound
    mode: int
    payload: bytes | list[bytes] = b""


def encode_message(ranges: list[Range]) -> bytes:
    out = bytearray([VERSION])
    previous = 0
    for r in ranges:
        if r.upper.ts == INF_TS:
            out += encode_varint(0)
        else:
            out += encode_varint(r.upper.ts - previous + 1)
            previous = r.upper.ts
        out += encode_varint(len(r.upper.prefix)) + r.upper.prefix
        out += encode_varint(r.mode)
        if r.mode == FINGERPRINT:
            out += r.payload
        elif r.mode == IDLIST:
            out += encode_varint(len(r.payload)) + b"".join(r.payload)
    return bytes(out)


def decode_message(data: bytes) -> list[Range]:
    """Parse and check a peer's message: increasing bounds ending at infinity, known modes."""
    if not data or data[0] != VERSION:
        raise ReconcileError("reconciliation message: unsupported version (want 0x61)")
    pos, previous, last, ranges = 1, 0, None, []
    try:
        while pos < len(data):
            if len(ranges) >= MAX_RANGES:
                raise ReconcileError(f"reconciliation message: more than {MAX_RANGES} ranges")
            delta, pos = decode_varint(data, pos)
            if delta == 0:
                ts = INF_TS
            else:
                ts = previous + delta - 1
                if ts > MAX_TS:
                    raise ReconcileError("reconciliation message: timestamp out of range")
                previous = ts
            length, pos = decode_varint(data, pos)
            if length > ID_BYTES or pos + length > len(data):
                raise ReconcileError("reconciliation message: bad bound prefix")
            bound = Bound(ts, data[pos:pos + length])
            pos += length
            if last is not None and bound <= last:
                raise ReconcileError("reconciliation message: bounds must increase")
            if last is not None and last.ts == INF_TS:
                raise ReconcileError("reconciliation message: a range after the infinite bound")
            last = bound
            mode, pos = decode_varint(data, pos)
            if mode == SKIP:
                ranges.append(Range(bound, SKIP))
            elif mode == FINGERPRINT:
                if pos + FINGERPRINT_BYTES > len(data):
                    raise ReconcileError("reconciliation message: truncated fingerprint")
                ranges.append(Range(bound, FINGERPRINT, data[pos:pos + FINGERPRINT_BYTES]))
                pos += FINGERPRINT_BYTES
            elif mode == IDLIST:
                count, pos = decode_varint(data, pos)
                if count > MAX_IDLIST or pos + count * SHORT_ID > len(data):
                    raise ReconcileError("reconciliation message: bad id list")
                ids = [data[pos + i * SHORT_ID:pos + (i + 1) * SHORT_ID] for i in range(count)]
                pos += count * SHORT_ID
                ranges.append(Range(bound, IDLIST, ids))
            else:
                raise ReconcileError(f"reconciliation message: unknown mode {mode}")
    except InvalidBlock as exc:  # a truncated or overlong varint
        raise ReconcileError(f"reconciliation message: {exc}") from None
    if not ranges or ranges[-1].upper.ts != INF_TS:
        raise ReconcileError("reconciliation message: must end with the infinite bound")
    return ranges


@dataclass
class Outcome:
    """What one step decided: the reply (None when done), ids to send, short ids to ask for."""

    reply: bytes | None
    send: list[bytes] = field(default_factory=list)
    ask: list[bytes] = field(default_factory=list)


class Reconciler:
    """One side of a reconciliation; keeps no state between messages but its item set."""

    def __init__(self, items: ItemSet, *, initial_branches: int = 64, branches: int = 16,
                 idlist_threshold: int = 16, frame_limit: int = DEFAULT_FRAME_LIMIT) -> None:
        self.items = items
        self.initial_branches = initial_branches
        self.branches = branches
        self.idlist_threshold = idlist_threshold
        self.frame_limit = frame_limit

    def _split(self, lo: int, hi: int, upper: Bound, parts: int) -> list[Range]:
        """Fingerprint ranges over my items [lo, hi), the last one ending at ``upper``."""
        out = []
        count = hi - lo
        parts = max(1, min(parts, count))
        start = lo
        for p in range(parts):
            end = lo + (count * (p + 1)) // parts
            bound = upper if p == parts - 1 else minimal_bound(self.items.items[end - 1], self.items.items[end])
            out.append(Range(bound, FINGERPRINT, self.items.fingerprint(start, end)))
            start = end
        return out

    def initiate(self) -> bytes:
        n = len(self.items)
        if n <= self.idlist_threshold:
            ranges = [Range(INFINITY, IDLIST, [short_id(i) for _, i in self.items.items])]
        else:
            ranges = self._split(0, n, INFINITY, max(1, min(self.initial_branches, self.frame_limit // 16)))
        return encode_message(ranges)

    def respond(self, message: bytes) -> Outcome:
        ranges = decode_message(message)
        out: list[Range] = []
        send: list[bytes] = []
        ask: list[bytes] = []
        size = 1
        lower_index = 0
        for position, r in enumerate(ranges):
            lo, hi = lower_index, self.items.index(r.upper)
            if size > self.frame_limit:  # answer the rest next round
                out.append(Range(INFINITY, FINGERPRINT, self.items.fingerprint(lo, len(self.items))))
                break
            if r.mode == SKIP:
                reply = [Range(r.upper, SKIP)]
            elif r.mode == FINGERPRINT:
                if r.payload == self.items.fingerprint(lo, hi):
                    reply = [Range(r.upper, SKIP)]
                elif hi - lo <= self.idlist_threshold:
                    reply = [Range(r.upper, IDLIST, [short_id(i) for _, i in self.items.items[lo:hi]])]
                else:
                    reply = self._split(lo, hi, r.upper, self.branches)
            else:  # IDLIST: settle the range here
                theirs = set(r.payload)
                mine = {short_id(i): i for _, i in self.items.items[lo:hi]}
                send.extend(i for s, i in mine.items() if s not in theirs)
                ask.extend(s for s in r.payload if s not in mine)
                reply = [Range(r.upper, SKIP)]
            for piece in reply:
                size += len(encode_message([piece])) - 1
            out.extend(reply)
            lower_index = hi
        if all(r.mode == SKIP for r in out):
            return Outcome(None, send, ask)
        return Outcome(encode_message(_merge_skips(out)), send, ask)


def _merge_skips(ranges: list[Range]) -> list[Range]:
    """Adjacent skips say the same as one skip up to the last of them."""
    out: list[Range] = []
    for r in ranges:
        if r.mode == SKIP and out and out[-1].mode == SKIP:
            out[-1] = r
        else:
            out.append(r)
    return out
