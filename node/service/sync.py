"""One sync session (docs/protocol.md §8) as a state machine, and the policy of when to sync.

Theory of operation
-------------------
:class:`SyncSession` is one side of one ``/fabnode/sync/1.0.0`` stream. It is fed the bodies
of the frames that arrive (:meth:`SyncSession.receive`) with the time, and answers with a
:class:`Step`: frames to write, verified record blocks to store, whether it is over, or the
rule the peer broke. Its states, per role::

    initiator:  RECONCILE ──▶ (send part) ──▶ THEIR_PART ──▶ (send answers) ──▶ DONE
    responder:  RECONCILE ──▶ THEIR_PART ──▶ (send part + answers) ──▶ THEIR_LAST ──▶ DONE

In RECONCILE both sides pass ``reconcile`` frames (the initiator's first) through
:class:`protocol.reconcile.Reconciler` until one side's answer is empty; that side sends
``msg = None``. A *part* is ``want`` (short ids we lack), ``records`` frames, ``end``. Every
record that arrives is verified (every rule of docs/protocol.md §4.5) before it is handed out to
be stored; one invalid record, a frame of the wrong type, or a broken budget below ends the
session as the peer's fault (:class:`protocol.sync.SyncProtocolError`: drop the peer). Budgets
(issue 12) are checked on cheap things first — a frame's length before its decoding, rounds and
bytes before the reconciler runs.

:class:`SyncScheduler` decides which sessions run: one per peer (either direction), at most
:data:`MAX_SYNCS` at once; a sync asked for while the peer is busy or every slot is taken waits
in ``pending`` and starts when one frees. Syncs are asked for on meeting a fabnode peer (by the
side with the smaller peer id, so one sync and not two), every ``interval_ms`` (the same side),
and with every other peer after a sync that brought news.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from fabnode.protocol.cid import DAG_CBOR
from fabnode.protocol.errors import RemoteProtocolError
from fabnode.protocol.reconcile import ItemSet, ReconcileError, Reconciler
from fabnode.protocol.records import RecordRejected, verify_record
from fabnode.protocol.sync import (MAX_FRAME, End, Reconcile, Records, SyncProtocolError, Want, parse_frame,
                                   record_frames)

CID_PREFIX = bytes([0x01, DAG_CBOR, 0x12, 0x20])
"""A record's CID is this prefix and the 32-byte digest reconciliation uses as its id."""

# Budgets of one session (issue 12: a peer once grew a daemon from 92 to 560 MB in 10 s with
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
MAX_SESSION_MS = 900_000
"""Wall time of one session."""
FRAME_TIMEOUT_MS = 30_000
"""Silence allowed on the stream — no byte moving either way (the runtime reports progress
within frames: :meth:`SyncSession.progressed`); past it the session ends (not an offence: links
drop). Counted from the last *whole* frame, a 1 MiB frame at 32 kB/s (33 s) once ended every
catch-up over a 256 kbit/s link (issue 14)."""
RECORDS_FRAME_BYTES = 64 << 10
"""Records frames we send hold at most this much (2 s at 32 kB/s): the receiver stores each
frame as it arrives, so a cut loses at most one frame in flight, and the next session does not
resend what was stored. (We accept up to the protocol's 4 MiB from others.)"""
MAX_SYNCS = 8
"""Sync sessions at once, both directions together (one per peer)."""

RECONCILE, THEIR_PART, THEIR_LAST, DONE, FAILED = "reconcile", "their part", "their last part", "done", "failed"


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

    def as_json(self) -> dict:
        return dict(self.__dict__)  # flat fields: dataclasses.asdict's deep copy cost 10 % of a simulated network


@dataclass
class Step:
    """What the session wants done after a frame: write ``frames`` (in order), store ``records``
    (verified blocks), and then, if ``error`` is set, end as the peer's fault; ``done``: the
    session is over and the stream can be closed."""

    frames: list[bytes] = field(default_factory=list)
    records: list[bytes] = field(default_factory=list)
    verified: list = field(default_factory=list)
    """``records`` as verified Record values, in the same order."""
    done: bool = False
    error: RemoteProtocolError | None = None


class SyncSession:
    def __init__(self, *, peer: str, initiator: bool, items: ItemSet, raw: Callable[[bytes], bytes | None],
                 now_ms: int) -> None:
        """``items``: our record set as reconciliation items; ``raw(cid)``: a record's block."""
        self.peer, self.initiator, self.items, self.raw = peer, initiator, items, raw
        self.report = SyncReport(peer, "initiator" if initiator else "responder", started_ms=now_ms)
        self.state = RECONCILE
        self.last_frame_ms = now_ms
        """The last time bytes moved on the stream, either way (a whole frame or part of one)."""
        self.first: set[bytes] = set()
        """Record CIDs to send before the others (this node's own, waiting in the outbox)."""
        self._reconciler = Reconciler(items)
        self._send: dict[bytes, None] = {}  # ordered sets: a peer asking twice for a range costs nothing twice
        self._ask: dict[bytes, None] = {}
        self._their_want: list[bytes] | None = None

    # ------------------------------------------------------------------ inputs

    def start(self) -> list[bytes]:
        """The frames to write when the stream opens (the initiator speaks first)."""
        if not self.initiator:
            return []
        return self._out([Reconcile(self._reconciler.initiate()).encode()])

    def frame_limit(self) -> int:
        """The largest frame the next one may be (the runtime refuses to read a longer one)."""
        return MAX_RECONCILE_FRAME if self.state == RECONCILE else MAX_FRAME

    def progressed(self, now_ms: int) -> None:
        """Bytes moved on the stream (part of a frame read or written): not stalled."""
        self.last_frame_ms = max(self.last_frame_ms, now_ms)

    def deadline(self) -> int:
        return min(self.last_frame_ms + FRAME_TIMEOUT_MS, self.report.started_ms + MAX_SESSION_MS)

    def receive(self, body: bytes, now_ms: int) -> Step:
        """One frame's body arrived. Never raises for the peer's mistakes: they come back as
        ``Step.error`` (after the valid records of the same frame, which are kept)."""
        self.last_frame_ms = now_ms
        step = Step()
        try:
            self._receive(body, now_ms, step)
        except (RemoteProtocolError, ReconcileError) as exc:
            kept = getattr(exc, "kept", [])  # valid records of the same frame are kept
            step.records += [r.raw for r in kept]
            step.verified += kept
            self.state = FAILED
            step.error = exc if isinstance(exc, SyncProtocolError) else SyncProtocolError(str(exc))
            self.report.error = str(step.error)
        step.frames = self._out(step.frames)
        if self.state == DONE:
            step.done = True
            self.report.took_ms = now_ms - self.report.started_ms
        return step

    def broke(self, reason: str) -> SyncProtocolError:
        """The runtime saw the peer break a rule on the stream itself (a frame over
        :meth:`frame_limit`): the session ends as the peer's fault."""
        self.state = FAILED
        error = SyncProtocolError(f"sync: {reason}")
        self.report.error = str(error)
        return error

    # ------------------------------------------------------------------ the machine

    def _receive(self, body: bytes, now_ms: int, step: Step) -> None:
        report = self.report
        report.bytes_in += len(body) + 1
        if report.bytes_in > MAX_SESSION_BYTES:
            raise SyncProtocolError(f"sync: the peer sent more than {MAX_SESSION_BYTES >> 20} MiB in one session")
        if self.state == RECONCILE:
            if len(body) > MAX_RECONCILE_FRAME:
                raise SyncProtocolError(f"sync: frame of {len(body)} bytes is over the {MAX_RECONCILE_FRAME}-byte limit")
            frame = parse_frame(body, (Reconcile,))
            report.round_trips += 1
            if report.round_trips > MAX_ROUNDS:
                raise SyncProtocolError(f"sync: more than {MAX_ROUNDS} reconcile rounds")
            if report.bytes_in > MAX_RECONCILE_BYTES:
                raise SyncProtocolError(f"sync: more than {MAX_RECONCILE_BYTES >> 20} MiB of reconcile frames")
            if frame.msg is not None:
                outcome = self._reconciler.respond(frame.msg)
                self._send.update(dict.fromkeys(outcome.send))
                for short in outcome.ask:
                    if len(self._ask) >= MAX_ASK:
                        break  # the rest of the difference waits for the next sync
                    self._ask[short] = None
                step.frames.append(Reconcile(outcome.reply).encode())
                if outcome.reply is not None:
                    return
            # reconciliation is over: the initiator sends its part first
            self.state = THEIR_PART
            if self.initiator:
                step.frames += self._part(list(self._ask), list(self._send))
            return
        if self._their_want is None:
            self._their_want = list(parse_frame(body, (Want,)).ids)
            return
        frame = parse_frame(body, (Records, End))
        if isinstance(frame, Records):
            verified = self._verified(list(frame.records), now_ms)
            step.records += [r.raw for r in verified]
            step.verified += verified
            return
        their_want, self._their_want = self._their_want, None
        if self.initiator:
            step.frames += self._part([], self._answers(their_want))
            self.state = DONE
        elif self.state == THEIR_PART:
            step.frames += self._part(list(self._ask), list(self._send) + self._answers(their_want))
            self.state = THEIR_LAST
        else:
            self.state = DONE

    def _verified(self, blocks: list[bytes], now_ms: int) -> list:
        self.report.received += len(blocks)
        valid, rejected = [], []
        for block in blocks:
            try:
                valid.append(verify_record(block, now_ms))
            except RecordRejected as exc:
                rejected.append(str(exc).removeprefix("record rejected: "))
            except Exception as exc:  # anything a malformed block trips
                rejected.append(f"not a record ({type(exc).__name__})")
        if rejected:
            error = SyncProtocolError(f"the peer sent {len(rejected)} invalid record(s), e.g. {rejected[0]}")
            error.kept = valid  # stored before the session fails: valid records are not lost
            raise error
        return valid

    def _answers(self, want: list[bytes]) -> list[bytes]:
        return [d for short in want for d in self.items.ids_for_short(short)]

    def _part(self, want: list[bytes], digests: list[bytes]) -> list[bytes]:
        ordered = list(dict.fromkeys(digests))
        if self.first:  # our own records first: stable, so the rest keep the reconciler's order
            ordered.sort(key=lambda d: CID_PREFIX + d not in self.first)
        blocks = [b for b in (self.raw(CID_PREFIX + d) for d in ordered) if b is not None]
        self.report.sent += len(blocks)
        return [Want(tuple(want)).encode(), *record_frames(blocks, RECORDS_FRAME_BYTES), End().encode()]

    def _out(self, frames: list[bytes]) -> list[bytes]:
        self.report.bytes_out += sum(len(f) for f in frames)
        return frames


class SyncScheduler:
    """Which sessions run, and when the next periodic round is due (see the module's theory)."""

    def __init__(self, me: str, interval_ms: int, max_syncs: int = MAX_SYNCS) -> None:
        self.me, self.interval_ms, self.max_syncs = me, interval_ms, max_syncs
        self.outbound: set[str] = set()
        self.inbound: set[str] = set()
        self.pending: dict[str, None] = {}
        self.next_round_ms: int | None = None

    def busy(self, peer: str) -> bool:
        return peer in self.outbound or peer in self.inbound

    def full(self) -> bool:
        return len(self.outbound) + len(self.inbound) >= self.max_syncs

    def starts_with(self, peer: str) -> bool:
        """On meeting and periodically, the side with the smaller peer id starts."""
        return peer > self.me

    def ask(self, peer: str) -> None:
        self.pending[peer] = None
        while len(self.pending) > 10_000:  # bounded: the periodic round covers what is dropped
            del self.pending[next(iter(self.pending))]

    def refusal(self, peer: str) -> str | None:
        """Why an inbound session from ``peer`` is refused now, or None."""
        if self.busy(peer):
            return "one session per peer at a time"
        if self.full():
            return f"{self.max_syncs} sessions already running"
        return None

    def ready(self, connected: Callable[[str], bool]) -> list[str]:
        """Pending peers whose session can start now (they leave ``pending``)."""
        out = []
        for peer in list(self.pending):
            if not connected(peer):
                del self.pending[peer]
            elif not self.busy(peer) and not self.full():
                del self.pending[peer]
                self.outbound.add(peer)
                out.append(peer)
        return out

    def finished(self, peer: str) -> None:
        self.outbound.discard(peer)
        self.inbound.discard(peer)
