"""Running ``/fabnode/sync/1.0.0`` over a libp2p stream (the frames: :mod:`protocol.sync`).

One :func:`sync_over_stream` serves both roles. Records received are verified and stored frame
by frame, each frame in its own transaction, so a sync cut off half-way keeps what arrived and
the next sync (reconciling again from the stores as they now are) fetches only the rest.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import trio

from fabnode.protocol.cid import DAG_CBOR
from fabnode.protocol.reconcile import MAX_TS, ItemSet, Reconciler
from fabnode.protocol.sync import MAX_FRAME, SyncProtocolError, decode_frame, encode_frame, record_frames
from fabnode.storage.records import RecordStore

from fabnode.node.runtime.fetch import RemoteProtocolError, StreamEnded, _read_frame

FRAME_TIMEOUT = 30
CID_PREFIX = bytes([0x01, DAG_CBOR, 0x12, 0x20])

# Budgets of one sync session (issue 12: a peer once grew a daemon from 92 to 560 MB in 10 s with
# reconcile frames). Breaking one is a protocol error: the session stops, the peer is cut off.
MAX_ROUNDS = 48
"""Reconcile rounds: 100,000 records against 100,000 with 10,000 differences take 6."""
MAX_RECONCILE_FRAME = 512 << 10
"""A reconcile frame: our reconciler writes at most 256 KiB (protocol.reconcile)."""
MAX_RECONCILE_BYTES = 16 << 20
"""All reconcile frames of a session together."""
MAX_ASK = 200_000
"""Short ids we ask for in one session (1.6 MB of ids); more differences wait for the next sync."""
MAX_SESSION_BYTES = 512 << 20
"""Everything received in one session (a catch-up of 100,000 records is about 100 MB)."""
MAX_SESSION_SECONDS = 900
"""Wall time of one session."""


@dataclass
class SyncReport:
    """What one sync did, for the log and `fabnode status`."""

    peer: str
    role: str
    started_ms: int = 0
    took_ms: int = 0
    round_trips: int = 0
    sent: int = 0
    received: int = 0
    new: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    over_quota: int = 0
    error: str = ""
    new_ids: list = field(default_factory=list, repr=False)

    def as_json(self) -> dict:
        out = asdict(self)
        del out["new_ids"]
        return out


class ItemCache:
    """The record set as reconciliation items, rebuilt only when records were added."""

    def __init__(self, records: RecordStore) -> None:
        self.records = records
        self._marker = None
        self._items: ItemSet | None = None

    def get(self) -> ItemSet:
        marker = self.records.change_marker()
        if marker != self._marker or self._items is None:
            self._items = ItemSet((min(ts, MAX_TS), digest) for ts, digest in self.records.sync_items())
            self._marker = marker
        return self._items


class _Channel:
    """Frames over one stream, counting bytes."""

    def __init__(self, stream, report: SyncReport) -> None:
        self.stream = stream
        self.report = report

    async def send(self, frame: bytes) -> None:
        self.report.bytes_out += len(frame)
        await self.stream.write(frame)

    async def receive(self, expect: set[str], limit: int = MAX_FRAME) -> dict:
        try:
            with trio.fail_after(FRAME_TIMEOUT):
                body = await _read_frame(self.stream, limit)
        except StreamEnded:
            raise
        except RemoteProtocolError as exc:  # over the frame limit: an offence
            raise SyncProtocolError(f"sync: {exc}") from None
        self.report.bytes_in += len(body) + 1
        if self.report.bytes_in > MAX_SESSION_BYTES:
            raise SyncProtocolError(f"sync: the peer sent more than {MAX_SESSION_BYTES >> 20} MiB in one session")
        return decode_frame(body, expect)


async def sync_over_stream(stream, *, initiator: bool, peer: str, items: ItemCache, records: RecordStore,
                           store, now_ms, quota=None) -> SyncReport:
    """Reconcile with the peer on ``stream`` and exchange exactly the missing records.

    Raises SyncProtocolError / ReconcileError (after keeping the valid records that arrived) if
    the peer misbehaves; the caller disconnects it.
    """
    with trio.fail_after(MAX_SESSION_SECONDS):
        return await _sync_session(stream, initiator=initiator, peer=peer, items=items, records=records,
                                   store=store, now_ms=now_ms, quota=quota)


async def _sync_session(stream, *, initiator: bool, peer: str, items: ItemCache, records: RecordStore,
                        store, now_ms, quota) -> SyncReport:
    report = SyncReport(peer, "initiator" if initiator else "responder", started_ms=now_ms())
    start = time.monotonic()
    channel = _Channel(stream, report)
    item_set = items.get()
    reconciler = Reconciler(item_set)
    send: dict[bytes, None] = {}  # ordered sets: a peer asking twice for a range costs nothing twice
    ask: dict[bytes, None] = {}

    # 1. reconcile until one side has nothing more to say, within the session's budgets
    if initiator:
        await channel.send(encode_frame({"type": "reconcile", "msg": reconciler.initiate()}))
    while True:
        frame = await channel.receive({"reconcile"}, MAX_RECONCILE_FRAME)
        report.round_trips += 1
        if report.round_trips > MAX_ROUNDS:
            raise SyncProtocolError(f"sync: more than {MAX_ROUNDS} reconcile rounds")
        if report.bytes_in > MAX_RECONCILE_BYTES:
            raise SyncProtocolError(f"sync: more than {MAX_RECONCILE_BYTES >> 20} MiB of reconcile frames")
        if frame["msg"] is None:
            break
        outcome = reconciler.respond(frame["msg"])
        send.update(dict.fromkeys(outcome.send))
        for short in outcome.ask:
            if len(ask) >= MAX_ASK:
                break  # the rest of the difference waits for the next sync
            ask[short] = None
        await channel.send(encode_frame({"type": "reconcile", "msg": outcome.reply}))
        if outcome.reply is None:
            break
    send, ask = list(send), list(ask)

    # 2. exchange: initiator, responder, initiator
    def blocks_for(ids: list[bytes]) -> list[bytes]:
        out = []
        for digest in ids:
            raw = records.raw(CID_PREFIX + digest)
            if raw is not None:
                out.append(raw)
        return out

    def answers(want: list[bytes]) -> list[bytes]:
        return [d for short in want for d in item_set.ids_for_short(short)]

    async def send_part(want: list[bytes], digests: list[bytes]) -> None:
        await channel.send(encode_frame({"type": "want", "ids": want}))
        blocks = blocks_for(list(dict.fromkeys(digests)))
        for frame_bytes in record_frames(blocks):
            await channel.send(frame_bytes)
        await channel.send(encode_frame({"type": "end"}))
        report.sent += len(blocks)

    async def receive_part() -> list[bytes]:
        want = (await channel.receive({"want"}))["ids"]
        while True:
            frame = await channel.receive({"records", "end"})
            if frame["type"] == "end":
                return want
            _store(frame["records"], records, store, report, now_ms, quota)

    if initiator:
        await send_part(ask, send)
        their_want = await receive_part()
        await send_part([], answers(their_want))
    else:
        their_want = await receive_part()
        await send_part(ask, send + answers(their_want))
        await receive_part()
    report.took_ms = int((time.monotonic() - start) * 1000)
    return report


def _store(blocks: list[bytes], records: RecordStore, store, report: SyncReport, now_ms, quota=None) -> None:
    from fabnode.node.local.commons import receive_records

    with store.write_transaction():
        result = receive_records(records, [(None, b) for b in blocks], now=now_ms(), all_or_nothing=False,
                                 quota=quota, peer=report.peer)
    report.over_quota += len(result.over_quota)
    report.received += len(blocks)
    report.new += len(result.new)
    report.new_ids.extend(result.new)
    if result.rejected:
        where, why = result.rejected[0]
        raise SyncProtocolError(f"the peer sent {len(result.rejected)} invalid record(s), e.g. {why}")
