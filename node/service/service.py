"""The node's decisions, as one pure state machine: events in, effects out, time an argument.

Theory of operation
-------------------
:class:`NodeService` is what a fabnode node *decides*; it does no I/O and reads no clock. Its
driver — the daemon's runtime (node/runtime/daemon.py) or the simulator (tests/simnet.py) —
calls :meth:`NodeService.handle` with each event (node/service/events.py) and the time in
milliseconds, calls :meth:`NodeService.tick` when :meth:`NodeService.deadline` comes, and
carries out what :meth:`NodeService.drain` returns (node/service/effects.py), in order. Reads of
the node's records go through a *view* (:class:`RecordView`: the record set as reconciliation
items, a record's block, the outbox, the seeding policy's wishes); every write is an effect.

It owns, each a small machine of its own:

* **peers** (:class:`node.service.peers.PeerBook`): dial the known peers that are due while
  fewer than ``max_connections`` are open, back off on failure; drop connections over twice that
  (bootstrap peers stay) and those of peers that are cut off.
* **penalties** (:class:`protocol.penalties.Penalties`): a peer that breaks a rule is
  disconnected and kept away for 1 minute, doubling with each offence.
* **gossip in**: every record passed on is verified before it is forwarded or stored; an invalid
  one is logged (rate limited per peer, :class:`node.service.loglimit.LogLimiter`) and counted:
  :data:`GOSSIP_INVALID_PER_MINUTE` in a minute cut the peer off.
* **gossip out**: records made here (the outbox) are published once a mesh peer exists, at most
  ``gossip_rate`` a second, then leave the outbox.
* **sync** (:mod:`node.service.sync`): sessions as state machines, scheduled one per peer.
* **seeding** (:class:`node.service.seeding.Seeder`): one fetch at a time of what the policy wants.

Timers: ``deadline()`` is the earliest of the dialler's next due peer, the next periodic sync
round, the next announcement slot, the outbox poll, the seeding check and every session's
frame or session deadline; a :class:`node.service.effects.SetTimer` is queued whenever it moves
earlier. Ticking early is harmless: each part checks its own time.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

from fabnode.protocol.cid import cid_str
from fabnode.protocol.labs import short_key
from fabnode.protocol.penalties import Penalties
from fabnode.protocol.reconcile import ItemSet
from fabnode.protocol.records import Record, RecordRejected, verify_record
from fabnode.protocol.sync import PROTOCOL as SYNC

from . import effects as fx
from . import events as ev
from .loglimit import LogLimiter
from .peers import PeerBook, PeerEntry
from .seeding import CHECK_MS as SEEDING_CHECK_MS, Seeder
from .sync import SyncScheduler, SyncSession

GOSSIP_INVALID_PER_MINUTE = 50
"""Invalid records one gossip peer may forward in a minute before it is cut off. Not one: an
honest peer with a skewed clock, or an older version, may pass on a few we refuse."""
DIAL_CHECK_MS = 500
OUTBOX_BATCH = 100
SYNC_FIRST_MS = 60_000
"""Seeding waits at most this long after a fabnode peer connects for its first sync to end."""
IDENTIFY_MS = 10_000
"""... and this long for a connected peer to say whether it speaks fabnode (identify takes a few
round trips: seconds on a far link)."""
SEEDING_SOURCE = "seeded:"


class RecordView(Protocol):
    """What the service reads of the node's store (writes are effects)."""

    def items(self) -> ItemSet: ...
    def raw(self, cid: bytes) -> bytes | None: ...
    def outbox(self, limit: int) -> list[tuple[bytes, bytes]]: ...
    def outbox_cids(self) -> set[bytes]: ...
    def seeding_marker(self) -> object: ...
    def wanted_bundles(self) -> list[tuple[bytes, bytes]]: ...
    def seeded_bytes(self) -> int: ...
    def label(self, key: str) -> str: ...  # a did:key or peer ID as its lab is shown (node/local/names.py)
    def seeded_pins(self) -> list[tuple[bytes, int, int]]: ...
    # optional: def chain_refusal(self, author: str, ts: int) -> str | None — why the chains of keys
    # known here refuse a record by ``author`` at ``ts`` (storage/keys.py); a view without it refuses nothing



@dataclass(frozen=True, slots=True)
class ServiceConfig:
    sync_interval_ms: int = 60_000
    gossip_rate: int = 100
    """Records announced per second at most (peers refuse a faster sender)."""
    max_connections: int = 50
    seeding_budget: int = 2048 << 20
    outbox_poll_ms: int | None = 1_000
    """How often the outbox is looked at without a poke (None: only on :class:`OutboxChanged`)."""
    seeding: bool = True


def short(peer: str) -> str:
    """A peer ID in a log line: the one abbreviation of protocol/labs.py."""
    return short_key(peer)


def describe_record(record: Record, label=short_key) -> str:
    """One readable phrase for a log line: what the record says, by whom (``label`` shows a key
    as its lab: the view's :meth:`RecordView.label`)."""
    body = record.body
    who = label(record.author)
    if record.type == "lab":
        return f"lab {cid_str(record.cid)}: {record.author} calls itself “{body['name']}”"
    if record.type == "version":
        return f"version {cid_str(record.cid)} “{body['title']}” by {who}"
    if record.type == "attestation":
        return (f"attestation {cid_str(record.cid)}: {body['predicate']} {body['result']} on "
                f"{cid_str(body['subject'].cid)} by {who}")
    if record.type == "vouch":
        return f"vouch {cid_str(record.cid)}: {who} {body['trust']} {label(body['subject'])}"
    if record.type == "succession":
        return f"succession {cid_str(record.cid)}: {who} rotates to {label(body['next'])}"
    if record.type == "revocation":
        return (f"revocation {cid_str(record.cid)}: {label(body['revoked'])} revoked from {body['cutoff']},"
                f" {label(body['next'])} takes over {label(body['identity'])}")
    if record.type == "member":
        return f"member {cid_str(record.cid)}: {who} makes {label(body['member'])} {body['role']} of {label(body['lab'])}"
    if record.type in ("retraction", "withdrawal"):  # issue 17: taking back a version or an attestation
        return f"{record.type} {cid_str(record.cid)} of {cid_str(body['subject'].cid)} by {who}: {body['reason']}"
    return f"{record.type} {cid_str(record.cid)} by {who}"


class NodeService:
    def __init__(self, me: str, view: RecordView, config: ServiceConfig = ServiceConfig(),
                 peers: list[PeerEntry] = ()) -> None:
        self.me, self.view, self.config = me, view, config
        self.now = 0
        """The time of the event being handled (ms): the only clock the parts below read."""
        self.book = PeerBook(peers)
        self.connected: dict[str, str] = {}
        self.fabnode: set[str] = set()
        self.dialing: set[str] = set()
        self.penalties = Penalties()
        self.scheduler = SyncScheduler(me, config.sync_interval_ms)
        self.sessions: dict[object, SyncSession] = {}
        self.opening: dict[object, str] = {}
        self.last_syncs: dict[str, dict] = {}
        self.mesh_peers = 0
        self.seeder = Seeder(config.seeding_budget)
        self._outbox_before: dict[object, set[bytes]] = {}
        self._tickets: dict[int, tuple] = {}
        self._next_ticket = 0
        self._next_stream = 0
        self._gossip_invalid: dict[str, tuple[int, int]] = {}
        self._unsynced: dict[str, int] = {}
        self._sync_tried: set[str] = set()  # a sync with it ended: it may end before its connection is told
        self.records_sent = {"sync": 0, "gossip": 0}
        """Records sent since the start: in finished syncs, and announced by gossip."""
        """Fabnode peers connected and not yet synced with since: when they were met."""
        self._announcing: deque[tuple[bytes, bytes]] = deque()
        self._announced: list[bytes] = []
        self._next_publish_ms = 0
        self._next_outbox_ms: int | None = 0 if config.outbox_poll_ms else None
        self._next_dial_ms = 0
        self._out: list = []
        self._timer: int | None = None
        self._rejections = LogLimiter(self._log, clock=lambda: self.now / 1000)

    # ================================================================== driving

    def drain(self) -> list:
        """The effects queued since the last call, oldest first."""
        out, self._out = self._out, []
        return out

    def handle(self, event, now_ms: int) -> None:
        self.now = now_ms
        getattr(self, "_on_" + type(event).__name__)(event)
        self._start_ready_syncs()
        self._arm()

    def tick(self, now_ms: int) -> None:
        """Time passed: dial, announce, start periodic syncs, end stalled sessions, seed."""
        self.now = now_ms
        if now_ms >= self._next_dial_ms:
            self._dial_due()
        if self.scheduler.next_round_ms is not None and now_ms >= self.scheduler.next_round_ms:
            self.scheduler.next_round_ms = now_ms + self.config.sync_interval_ms
            for peer in sorted(self.fabnode & self.connected.keys()):
                if self.scheduler.starts_with(peer):
                    self.scheduler.ask(peer)
        for stream, session in list(self.sessions.items()):
            if now_ms >= session.deadline():
                self._interrupted(stream, "TooSlowError")
        if self._next_outbox_ms is not None and now_ms >= self._next_outbox_ms:
            self._next_outbox_ms = now_ms + self.config.outbox_poll_ms
            self._fill_announcements()
        self._announce()
        if self.config.seeding:
            drop = self.seeder.over_budget(self.view)
            if drop is not None:
                self._log(f"seeding: dropping bundle {cid_str(drop[0])} ({drop[1] >> 10} KiB), the least recently "
                          f"wanted, to stay within the budget of {self.config.seeding_budget >> 20} MiB")
                self._emit(fx.DropBundle(drop[0]))
        if self.config.seeding and self.connected and now_ms >= self.seeder.next_check_ms and not self._records_first():
            self.seeder.next_check_ms = now_ms + SEEDING_CHECK_MS  # records first: look again later
        if self.config.seeding and self.connected and now_ms >= self.seeder.next_check_ms:
            wanted, line = self.seeder.check(self.view, now_ms)
            if line:
                self._log(line)
            if wanted is not None:
                bundle, design = wanted
                self._log(f"seeding: fetching bundle {cid_str(bundle)} of design {cid_str(design)}")
                self._emit(fx.Fetch(bundle, SEEDING_SOURCE + cid_str(design)))
        self._start_ready_syncs()
        self._arm()

    def deadline(self) -> int | None:
        """When :meth:`tick` must run next (ms), or None when nothing is waiting on time."""
        times = [s.deadline() for s in self.sessions.values()]
        if self.scheduler.next_round_ms is not None:
            times.append(self.scheduler.next_round_ms)
        if self._announcing and self.mesh_peers:
            times.append(self._next_publish_ms)
        if self._next_outbox_ms is not None and self.mesh_peers:
            times.append(self._next_outbox_ms)
        if len(self.connected) < self.config.max_connections:
            due = self.book.next_due_ms(self.connected.keys() | self.dialing | {self.me})
            if due is not None:
                times.append(max(due, self._next_dial_ms))
        if self.config.seeding and self.connected and self.seeder.fetching is None:
            times.append(self.seeder.next_check_ms)
        return min(times) if times else None

    def frame_limit(self, stream) -> int:
        """The largest frame the runtime may read next on ``stream``."""
        session = self.sessions.get(stream)
        return session.frame_limit() if session else 0

    def _emit(self, effect) -> None:
        self._out.append(effect)

    def _log(self, line: str) -> None:
        self._out.append(fx.Log(line))

    def _arm(self) -> None:
        at = self.deadline()
        if at is not None and (self._timer is None or at < self._timer or self._timer <= self.now):
            self._timer = at
            self._emit(fx.SetTimer(at))

    # ================================================================== peers

    def _on_PeerDiscovered(self, e: ev.PeerDiscovered) -> None:
        if e.peer == self.me:
            return
        new, effects = self.book.remember(e.peer, e.addrs, e.source, self.now)
        self._out += effects
        if new and e.source == "mdns":
            self._log(f"peer found on the LAN: {e.peer}")

    def _on_PeerConnected(self, e: ev.PeerConnected) -> None:
        self.dialing.discard(e.peer)
        offence = self.penalties.cut_off(e.peer, self.now)
        if offence is not None:
            self._log(f"connection from {short(e.peer)} dropped: cut off for "
                      f"{(offence.until_ms - self.now) // 1000} s more ({offence.reason})")
            self._emit(fx.Disconnect(e.peer, "cut off"))
            return
        cap = self.config.max_connections * 2  # dialled ones, and as many again dialling in
        if e.peer not in self.connected and len(self.connected) >= cap:
            victim = e.peer
            if self.book.is_bootstrap(e.peer):  # the newest peer met by chance goes instead
                victim = next((p for p in reversed(self.connected) if not self.book.is_bootstrap(p)), e.peer)
            self._reject(victim, f"{cap} connections already open (limits.max_connections x 2)", "a connection")
            self._emit(fx.Disconnect(victim, "too many connections"))
            if victim == e.peer:
                return
        if e.peer in self.connected:
            return
        self.connected[e.peer] = e.addr
        if e.peer not in self._sync_tried:  # records first: no seeding before it is known and synced
            self._unsynced[e.peer] = self.now
        lab = self.view.label(e.peer)
        self._log(f"peer connected: {e.peer} via {e.addr}" + (f" ({lab})" if lab != short(e.peer) else ""))
        self._out += self.book.connected(e.peer, self.now)
        self._fill_announcements()

    def _on_PeerSpeaksFabnode(self, e: ev.PeerSpeaksFabnode) -> None:
        if e.peer not in self.connected or e.peer in self.fabnode:
            return
        self.fabnode.add(e.peer)
        if e.peer not in self._sync_tried:  # from now on, up to SYNC_FIRST_MS for its first sync
            self._unsynced[e.peer] = self.now
        if self.scheduler.next_round_ms is None:
            self.scheduler.next_round_ms = self.now + self.config.sync_interval_ms
        if self.scheduler.starts_with(e.peer):
            self.scheduler.ask(e.peer)
        # a bootstrap peer keeps the addresses the operator gave (a tunnel, a shaped link): the
        # ones it announces may lead around them (issue 14)
        addrs = () if self.book.is_bootstrap(e.peer) else e.addrs
        _, effects = self.book.remember(e.peer, addrs, "inbound", self.now)
        self._out += effects + self.book.connected(e.peer, self.now)

    def _on_PeerDisconnected(self, e: ev.PeerDisconnected) -> None:
        if e.peer in self.connected:
            lab = self.view.label(e.peer)
            self._log(f"peer disconnected: {e.peer}" + (f" ({lab})" if lab != short(e.peer) else ""))
            self._lost(e.peer)

    def _lost(self, peer: str) -> None:
        self.connected.pop(peer, None)
        self.fabnode.discard(peer)
        self._unsynced.pop(peer, None)
        self._sync_tried.discard(peer)
        for stream in [s for s, p in self.opening.items() if p == peer]:  # no StreamOpened will matter now
            del self.opening[stream]
            self.scheduler.finished(peer)
        for stream in [s for s, sess in self.sessions.items() if sess.peer == peer]:
            self._interrupted(stream, "ConnectionClosed")

    def _on_DialFailed(self, e: ev.DialFailed) -> None:
        self.dialing.discard(e.peer)
        entry = self.book.get(e.peer)
        wait, effects = self.book.dial_failed(e.peer, self.now)
        self._out += effects
        if wait is None:
            self._log(f"forgetting {short(e.peer)}: unreachable for 30 days")
        elif entry is not None and (entry.failures == 0 or wait >= 60_000):
            self._log(f"cannot reach {short(e.peer)} ({e.error}); retrying in {wait // 1000} s")

    def _dial_due(self) -> None:
        self._next_dial_ms = self.now + DIAL_CHECK_MS
        if len(self.connected) >= self.config.max_connections:
            return
        for entry in self.book.due(self.now):
            if entry.peer in self.connected or entry.peer in self.dialing or not entry.addrs or entry.peer == self.me:
                continue
            if self.penalties.cut_off(entry.peer, self.now):
                continue
            self.dialing.add(entry.peer)
            self._emit(fx.Dial(entry.peer, entry.addrs))

    def cut_off(self, peer: str, reason: str, line: str | None = None) -> None:
        """``peer`` broke a rule: disconnect it and keep it away for a while."""
        wait = self.penalties.strike(peer, reason, self.now)
        self._log((line or f"{short(peer)} broke a rule ({reason}): cutting it off for") + f" {wait // 1000} s")
        self._emit(fx.Disconnect(peer, reason))  # PeerDisconnected follows

    def _reject(self, peer: str, reason: str, what: str = "a record") -> None:
        """One line per rejected record or stream, at most 20 per peer per minute."""
        who = short(peer)
        self._rejections.say(peer, f"rejected {what} from {who}: {reason}",
                             stopping=f"rejected more from {who}; not logging the rest for a minute",
                             left_out=lambda n: f"… {n} more from {who} were rejected in that minute")

    # ================================================================== gossip

    def _on_GossipReceived(self, e: ev.GossipReceived) -> None:
        """Validate a record passed on by gossip: forward and store it, or count an offence.
        Cheap first: the size is checked before anything is decoded (protocol.records)."""
        try:
            record = verify_record(e.data, self.now)
        except RecordRejected as exc:
            if e.forwarder != self.me:
                self._reject(e.forwarder, str(exc).removeprefix("record rejected: "))
                self._gossip_offence(e.forwarder)
            return
        except Exception as exc:  # anything a malformed block trips
            if e.forwarder != self.me:
                self._reject(e.forwarder, f"not a record ({type(exc).__name__})")
                self._gossip_offence(e.forwarder)
            return
        chain_refusal = getattr(self.view, "chain_refusal", None)
        refused = chain_refusal(record.author, record.ts) if chain_refusal is not None else None
        if refused is not None:  # neither relayed nor stored, and no offence: the peer may not know the chain
            if e.forwarder != self.me:
                self._reject(e.forwarder, refused)
            return
        self._emit(fx.Forward(e.data, e.forwarder))
        if e.forwarder != self.me:
            self._store(("gossip", e.origin, {record.cid: record}), e.origin, (record,))

    def _gossip_offence(self, peer: str) -> None:
        window, count = self._gossip_invalid.pop(peer, (self.now, 0))
        if self.now - window > 60_000:
            window, count = self.now, 0
        count += 1
        self._gossip_invalid[peer] = (window, count)
        while len(self._gossip_invalid) > 10_000:
            del self._gossip_invalid[next(iter(self._gossip_invalid))]
        if count == GOSSIP_INVALID_PER_MINUTE and not self.penalties.cut_off(peer, self.now):
            self.cut_off(peer, f"gossip: {count} invalid records in a minute",
                         f"{short(peer)} forwarded {count} invalid records in a minute: cutting it off for")

    def _store(self, ticket_info: tuple, peer: str, records: tuple) -> None:
        self._next_ticket += 1
        self._tickets[self._next_ticket] = ticket_info
        self._emit(fx.StoreRecords(self._next_ticket, peer, tuple(r.raw for r in records),
                                   gossip=ticket_info[0] == "gossip", records=tuple(records)))

    def _on_RecordsStored(self, e: ev.RecordsStored) -> None:
        info = self._tickets.pop(e.ticket, None)
        if info is None:
            return
        if info[0] == "gossip":
            _, origin, records = info
            if e.over_quota:
                self._reject(origin, e.quota_reason, what="records over the strangers' quota")
            for cid in e.new:
                if cid in records:
                    self._log(f"record received: {describe_record(records[cid], self.view.label)} (from {self.view.label(origin)})")
            return
        session = self.sessions.get(info[1])
        if session is not None:
            session.report.new += len(e.new)
            session.report.over_quota += e.over_quota

    def _on_MeshChanged(self, e: ev.MeshChanged) -> None:
        was, self.mesh_peers = self.mesh_peers, e.peers
        if e.peers and not was:
            self._fill_announcements()

    def _on_OutboxChanged(self, e: ev.OutboxChanged) -> None:
        self._fill_announcements()

    def _fill_announcements(self) -> None:
        if not self.mesh_peers or self._announcing:
            return
        self._announcing.extend(self.view.outbox(OUTBOX_BATCH))

    def _announce(self) -> None:
        """Publish the outbox one record per ``1 / gossip_rate`` s, so peers never refuse us."""
        pause = max(1, 1000 // self.config.gossip_rate)
        while self._announcing and self.mesh_peers and self.now >= self._next_publish_ms:
            cid, data = self._announcing.popleft()
            self._emit(fx.Publish(cid, data))
            self.records_sent["gossip"] += 1
            self._log(f"announced {cid_str(cid)} to {self.mesh_peers} peer(s)")
            self._announced.append(cid)
            self._next_publish_ms = max(self._next_publish_ms + pause, self.now)
            if not self._announcing:
                self._emit(fx.MarkAnnounced(tuple(self._announced)))
                self._announced = []
                self._fill_announcements()

    # ================================================================== sync

    def _start_ready_syncs(self) -> None:
        for peer in self.scheduler.ready(lambda p: p in self.connected and p in self.fabnode
                                         and not self.penalties.cut_off(p, self.now)):
            self._next_stream += 1
            stream = ("sync", self._next_stream)
            self.opening[stream] = peer
            self._emit(fx.OpenStream(stream, peer, SYNC))

    def _on_StreamOpened(self, e: ev.StreamOpened) -> None:
        peer = self.opening.pop(e.stream, None)
        if peer is None:
            self._emit(fx.ResetStream(e.stream))
            return
        if peer not in self.connected:
            self.scheduler.finished(peer)
            self._emit(fx.ResetStream(e.stream))
            return
        self._begin(e.stream, peer, initiator=True)

    def _on_InboundStream(self, e: ev.InboundStream) -> None:
        if e.protocol != SYNC:
            self._emit(fx.ResetStream(e.stream))
            return
        refusal = ("one session per peer at a time" if self.scheduler.busy(e.peer)
                   else "cut off" if self.penalties.cut_off(e.peer, self.now)
                   else self.scheduler.refusal(e.peer))
        if refusal is not None:
            self._reject(e.peer, refusal, what="a sync stream")
            self._emit(fx.ResetStream(e.stream))
            return
        self.scheduler.inbound.add(e.peer)
        self._begin(e.stream, e.peer, initiator=False)

    def _begin(self, stream, peer: str, *, initiator: bool) -> None:
        session = SyncSession(peer=peer, initiator=initiator, items=self.view.items(), raw=self.view.raw,
                              now_ms=self.now)
        self.sessions[stream] = session
        self._outbox_before[stream] = session.first = self.view.outbox_cids()
        for frame in session.start():
            self._emit(fx.SendFrame(stream, frame))

    def _on_FrameReceived(self, e: ev.FrameReceived) -> None:
        session = self.sessions.get(e.stream)
        if session is None:
            return
        step = session.receive(e.body, self.now)
        if step.verified:
            self._store(("sync", e.stream), session.peer, tuple(step.verified))
        if step.error is not None:
            self._failed(e.stream, step.error)
            return
        for frame in step.frames:
            self._emit(fx.SendFrame(e.stream, frame))
        if step.done:
            self._succeeded(e.stream)

    def _on_StreamProgress(self, e: ev.StreamProgress) -> None:
        session = self.sessions.get(e.stream)
        if session is not None:
            session.progressed(self.now)

    def _on_StreamFailed(self, e: ev.StreamFailed) -> None:
        peer = self.opening.pop(e.stream, None)
        if peer is not None:
            self.scheduler.finished(peer)
            self._sync_was_tried(peer)  # records first waited for an attempt, not a success
            self._log(f"sync with {short(peer)} could not start: {e.error}")
            return
        session = self.sessions.get(e.stream)
        if session is None:
            return
        if e.remote_fault:
            self._failed(e.stream, session.broke(e.error))
        else:
            self._interrupted(e.stream, e.error)

    def _end(self, stream) -> SyncSession:
        session = self.sessions.pop(stream)
        self._outbox_before.pop(stream, None)
        self.scheduler.finished(session.peer)
        self._sync_was_tried(session.peer)  # records first waited for this attempt, however it ended
        return session

    def _sync_was_tried(self, peer: str) -> None:
        """A sync with ``peer`` ended. The peer's own sync may end before its connection event
        reaches the service: remembered, so that event does not start the wait again."""
        self._unsynced.pop(peer, None)
        if len(self._sync_tried) < 10_000:  # bounded: forgetting one only delays seeding
            self._sync_tried.add(peer)

    def _failed(self, stream, error) -> None:
        session = self._end(stream)
        peer = session.peer
        self.last_syncs[peer] = {"peer": peer, "error": str(error), "started_ms": self.now}
        self._emit(fx.ResetStream(stream))
        reason = str(error) if str(error).startswith("sync: ") else f"sync: {error}"  # most errors say it already
        self.cut_off(peer, reason, f"sync with {short(peer)} failed: {error}; cutting it off for")

    def _interrupted(self, stream, error: str) -> None:
        session = self._end(stream)
        self._log(f"sync with {short(session.peer)} interrupted ({error}); the next one resumes")
        self._emit(fx.ResetStream(stream))

    def _succeeded(self, stream) -> None:
        before = self._outbox_before.get(stream) or set()
        session = self._end(stream)
        report, peer = session.report, session.peer
        self._emit(fx.CloseStream(stream))
        self.records_sent["sync"] += report.sent
        self.last_syncs[peer] = report.as_json()
        while len(self.last_syncs) > 1000:
            del self.last_syncs[next(iter(self.last_syncs))]
        if before:  # the peer now holds everything we had: nothing left to announce to it
            self._emit(fx.MarkAnnounced(tuple(sorted(before))))
        if report.sent or report.new or report.over_quota:
            over = (f" ({report.over_quota} by untrusted keys over the strangers' quota, not kept)"
                    if report.over_quota else "")
            held = report.received - report.new - report.over_quota
            again = f" ({held} already held)" if held > 0 else ""
            self._log(f"synced with {short(peer)}: sent {report.sent}, received {report.new} new record(s){over}{again} "
                      f"in {report.round_trips} round trip(s), {report.bytes_out + report.bytes_in} bytes, "
                      f"{report.took_ms / 1000:.1f} s")
        if report.new:  # pass the news on to everyone else at once
            for other in sorted(self.fabnode & self.connected.keys() - {peer}):
                self.scheduler.ask(other)

    # ================================================================== seeding

    def _records_first(self) -> bool:
        """Records before bundles (issue 14): no seeding fetch starts while a sync runs or waits
        to start, nor before a first sync with each fabnode peer met has been tried (it ended,
        however: two peers opening syncs to each other at once may both be refused, and the
        records then come by gossip or the next round), at most :data:`SYNC_FIRST_MS` after
        it connected. On a link up for minutes a day, the records cross first."""
        if self.sessions or self.opening or self.scheduler.pending:
            return False
        return all(self.now - at >= (SYNC_FIRST_MS if peer in self.fabnode else IDENTIFY_MS)
                   for peer, at in self._unsynced.items() if peer in self.connected)

    def _on_BundleDropped(self, e: ev.BundleDropped) -> None:
        self.seeder.dropped_bundle(e.root)
        self._log(f"seeding: dropped bundle {cid_str(e.root)}: " + (f"freed {e.freed >> 10} KiB" if not e.error
                                                                    else f"failed ({e.error})"))

    def _on_FetchFinished(self, e: ev.FetchFinished) -> None:
        self.seeder.finished(e.root, e.error, self.now)
        if e.error:
            self._log(f"seeding: {cid_str(e.root)} not fetched for now ({e.error})")

    # ================================================================== status

    def status(self) -> dict:
        return {"connected": dict(self.connected), "mesh_peers": self.mesh_peers,
                "last_syncs": list(self.last_syncs.values()), "seeding": dict(self.seeder.status),
                "records_sent": dict(self.records_sent), "syncs_running": len(self.sessions),
                "syncs_waiting": len(self.scheduler.pending) + len(self.opening)}

    def cut_off_peers(self, now_ms: int) -> dict:
        """The peers kept away at ``now_ms``: why, for how long, how many offences."""
        return {p: {"reason": o.reason, "for_s": (o.until_ms - now_ms) // 1000, "strikes": o.strikes}
                for p, o in self.penalties.current(now_ms).items()}
