"""A seeded network simulator: many :class:`NodeService` in one process, over simulated links.

Theory of operation
-------------------
Modelled on radicle heartwood's ``test/simulator.rs`` ("acts as the reactor, but without doing
any I/O"). :class:`Sim` stands where the daemon's runtime stands: it hands each node's service
its events with the (virtual) time and carries out every effect the service drains, the same
effects the daemon carries out with trio, libp2p and SQLite. Nothing else decides anything: the
service's own dialler, sync scheduler, gossip validation and penalties run unchanged.

* **Virtual time.** An inbox ordered by ``(time, seq)`` (a heap). :meth:`Sim.run` pops the
  earliest entry, advances ``now`` to it and delivers it; empty stretches of time cost nothing.
  Times are float milliseconds inside the simulator (a frame on a fast link takes a fraction of
  a millisecond); services are given ``int(now)``.
* **One source of randomness**: ``random.Random(seed)`` (topology, loss, publishers, churn).
  Nothing iterates over a set or hashes a string to decide, so a seed reproduces a run exactly:
  :attr:`Sim.trace_digest` hashes every delivery (time, node, kind).
* **Links** (:class:`Link`, per direction): one-way ``latency_ms``, ``bits_per_second`` (bytes
  queue: a frame of n bytes is sent n*8/bps after the previous one on that direction ends) and
  ``loss``: streams are TCP, so a lost segment is not dropped but delayed by a retransmission
  (one RTT more); a direction never reorders. :meth:`Sim.fail_link` models a whole-link failure:
  the connection closes and its streams reset.
* **Connections**: at most one per pair. ``Dial`` -> after 2 RTT (TCP, noise, yamux)
  ``PeerConnected`` + ``PeerSpeaksFabnode`` at both ends, or ``DialFailed`` after
  :data:`DIAL_TIMEOUT_MS` if the target is stopped or across a partition. ``Disconnect`` and
  closing (partition, stop, link failure) give ``PeerDisconnected`` at both ends at once, and a
  ``StreamFailed`` for every stream of that connection (what the runtime does: a pending
  ``OpenStream`` must be answered). Anything in flight on a closed connection is dropped.
* **Streams**: ``OpenStream`` -> ``InboundStream`` at the other end after the one-way latency,
  ``StreamOpened`` at the opener after one RTT (multistream-select). ``SendFrame`` ->
  ``FrameReceived`` with the varint length prefix stripped; a body over the receiver's
  ``service.frame_limit(stream)`` becomes ``StreamFailed(remote_fault=True)``.
  ``CloseStream``/``ResetStream`` -> ``StreamFailed`` at the other end (ignored by a service
  whose session already ended).
* **Gossip** — the simulator's model of gossipsub's mesh: the mesh of a node is all its
  connections (degree = the node's connections, 3–6 in :func:`random_graph`; gossipsub's D is
  6). ``Publish`` sends the record to every connected peer, ``Forward`` to every connected peer
  but the forwarder. Each node keeps a *seen* cache of message ids (sha256 of the data, entries
  kept :data:`SEEN_TTL_MS` like gossipsub's ``seen_ttl``): a message seen before is dropped
  before validation, as gossipsub does. ``MeshChanged(peers = connected fabnode peers)`` is
  handed in on every connection change.
* **Store**: each node has its own :class:`SimStore` (a :class:`tests.memstore.MemoryRecords`).
  ``StoreRecords`` is answered with ``RecordsStored`` at once, before anything else is handed in
  (the runtime's contract); ``MarkAnnounced`` empties the outbox.
* **Churn**: :meth:`Sim.stop` closes a node's connections and drops its service and timers;
  :meth:`Sim.start` gives it a fresh ``NodeService`` over the same store and the peer book it
  persisted (``RememberPeer``/``ForgetPeer``), as the daemon does on restart.
* **Partitions**: :meth:`Sim.partition` closes connections across groups and makes dials
  across fail; :meth:`Sim.heal` lifts it (the nodes redial by themselves, with their backoff).

The services run with ``seeding=False`` (the in-memory store wants no bundles) and
``outbox_poll_ms=None`` (:meth:`Sim.publish` pokes with ``OutboxChanged``, as the CLI pokes the
daemon): both would otherwise tick every node every second of a simulated month.

Measures: bytes sent per node (frames with their prefix, gossip data; per kind), the backlog of
every link direction, pending inbox entries per node, and the service's own queues
(:meth:`Sim.queue_sizes`), so tests can assert that nothing grows without bound.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from memstore import Author, MemoryRecords  # noqa: E402

from fabnode.node.service import effects as fx  # noqa: E402
from fabnode.node.service import events as ev  # noqa: E402
from fabnode.node.service.service import NodeService, ServiceConfig  # noqa: E402
from fabnode.protocol.records import verify_record  # noqa: E402
from fabnode.protocol.varint import decode_varint  # noqa: E402

T0 = 1_700_000_000_000
"""Virtual time at the start of a run (ms since the epoch: records carry real-looking times)."""
DIAL_TIMEOUT_MS = 5_000
"""A dial to a stopped node or across a partition fails after this long (no answer)."""
SEEN_TTL_MS = 120_000
"""How long a node's gossip seen cache remembers a message id (py-libp2p's seen_ttl)."""
OPEN_BYTES = 40
"""Bytes a stream open, close or reset costs on the link (multistream + yamux headers)."""
RETRANSMIT_MIN_MS = 200
"""TCP's minimum retransmission timeout: a lost segment is delayed by max(RTT, this)."""
MINUTE, HOUR, DAY = 60_000, 3600_000, 86_400_000

SIM_CONFIG = ServiceConfig(outbox_poll_ms=None, seeding=False)

# inbox entry kinds
_EV, _TICK, _CEV, _CONNECT, _OPEN, _FRAME, _END, _GOSSIP, _CALL = range(9)


@dataclass(frozen=True, slots=True)
class Link:
    """One direction of a link between two nodes."""

    latency_ms: float = 50.0
    bits_per_second: float = 10e6
    loss: float = 0.0


class SimStore(MemoryRecords):
    """A node's records: :class:`MemoryRecords` that tells the simulator when each record first
    arrived, and does not verify a block again that the simulator already saw verified (the
    service verified it before asking to store it; re-verifying is the SQLite store's job)."""

    def __init__(self, sim: "Sim", index: int) -> None:
        super().__init__()
        self.sim, self.index = sim, index

    def store(self, blocks, now_ms: int) -> list[bytes]:
        new = []
        known = self.sim._verified
        for block in blocks:
            got = known.get(block)
            if got is None:
                record = verify_record(block, now_ms)
                got = known[block] = (record.cid, record.ts)
            cid, ts = got
            if cid not in self.blocks:
                self._put(cid, block, ts)
                new.append(cid)
        return new

    def _put(self, cid: bytes, raw: bytes, ts: int) -> None:
        super()._put(cid, raw, ts)
        self.sim._arrived(cid, self.index)


class Node:
    """A lab: its store and persisted peer book (kept across restarts), and while it runs, its
    service and its connections."""

    def __init__(self, sim: "Sim", index: int) -> None:
        self.index = index
        self.name = f"lab{index:04d}"
        self.addr = f"/sim/{index}"
        self.store = SimStore(sim, index)
        self.book: dict = {}  # peer -> PeerEntry, as persisted by RememberPeer / ForgetPeer
        self.svc: NodeService | None = None
        self.incarnation = 0
        self.conns: dict[int, "Conn"] = {}  # peer index -> connection
        self.streams: dict[object, tuple] = {}  # stream key -> (peer index, remote key, conn id)
        self.seen: dict[bytes, float] = {}
        self.mesh = 0
        self.ticks: set[int] = set()
        self.pending = 0
        self.bytes_sync = 0
        self.bytes_gossip = 0
        self.author: Author | None = None
        self.bootstrap: list[int] = []

    @property
    def running(self) -> bool:
        return self.svc is not None

    @property
    def bytes_sent(self) -> int:
        return self.bytes_sync + self.bytes_gossip


class Conn:
    __slots__ = ("id", "a", "b", "opened")

    def __init__(self, cid: int, a: int, b: int) -> None:
        self.id, self.a, self.b = cid, a, b
        self.opened = 0  # streams opened on it: names the inbound ends


class Sim:
    def __init__(self, n: int, *, seed: int = 0, link: Link = Link(), config: ServiceConfig = SIM_CONFIG,
                 t0: int = T0, trace_lines: int = 2000) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.now: float = float(t0)
        self.t0 = t0
        self.config = config
        self.default_link = link
        self.links: dict[tuple[int, int], Link] = {}
        self._busy: dict[tuple[int, int], float] = {}
        self._last: dict[tuple[int, int], float] = {}
        self.nodes = [Node(self, i) for i in range(n)]
        self.by_name = {node.name: node.index for node in self.nodes}
        self.groups: dict[int, int] | None = None  # node -> partition group
        self._heap: list = []
        self._seq = 0
        self._conn_ids = 0
        self._verified: dict[bytes, tuple[bytes, int]] = {}
        self.arrivals: dict[bytes, list[float]] = {}
        """Record CID -> the times it reached each node (first copy), in order."""
        self.trace: deque = deque(maxlen=trace_lines)
        self._hash = hashlib.sha256()
        self.events = 0
        self.disconnects: list[tuple[float, str, str, str]] = []
        self.max_link_backlog = 0.0
        self.max_pending = 0
        self.max_heap = 0
        self.peak: dict[str, int] = {}
        self._sampled_at = 0
        """The largest each queue of :meth:`max_queues` was at any sample."""
        self.gossip_duplicates = 0
        self._gossip_origin = "?"

    # ================================================================ building a world

    def link(self, a: int, b: int) -> Link:
        return self.links.get((a, b), self.default_link)

    def set_link(self, a: int, b: int, link: Link) -> None:
        self.links[(a, b)] = self.links[(b, a)] = link

    def bootstrap(self, edges) -> None:
        """Give each edge (a, b) to a as a bootstrap peer (``/sim/<b>``): a dials b."""
        for a, b in edges:
            self.nodes[a].bootstrap.append(b)
            if self.nodes[a].running:
                nb = self.nodes[b]
                self._push(self.now, a, _EV, ev.PeerDiscovered(nb.name, (nb.addr,), "bootstrap"))

    def start_all(self) -> None:
        for node in self.nodes:
            if not node.running:
                self.start(node.index)

    def start(self, i: int) -> None:
        """Start (or restart) a node: a fresh service over its store and persisted peer book."""
        node = self.nodes[i]
        if node.running:
            return
        node.incarnation += 1
        node.svc = NodeService(node.name, node.store, self.config, peers=list(node.book.values()))
        node.mesh = 0
        node.seen = {}
        node.ticks = set()
        for b in node.bootstrap:  # the configuration's bootstrap peers, read at every start
            nb = self.nodes[b]
            self._push(self.now, i, _EV, ev.PeerDiscovered(nb.name, (nb.addr,), "bootstrap"))
        self._push(self.now, i, _TICK, None)
        if node.store.outbox_set:
            self._push(self.now, i, _EV, ev.OutboxChanged())

    def stop(self, i: int) -> None:
        """Stop a node (its store and peer book are kept): its connections close."""
        node = self.nodes[i]
        if not node.running:
            return
        for peer in sorted(node.conns):
            self._close(node.conns[peer], "stopped")
        node.svc = None
        node.incarnation += 1
        node.streams.clear()
        node.ticks = set()

    def partition(self, *groups) -> None:
        """Nodes in different groups cannot reach each other (nodes in none: a group of their own
        each); connections across close now."""
        self.groups = {}
        for g, members in enumerate(groups):
            for i in members:
                self.groups[i] = g
        for node in self.nodes:
            for peer in sorted(node.conns):
                if peer > node.index and not self.reachable(node.index, peer):
                    self._close(node.conns[peer], "partitioned")

    def heal(self) -> None:
        self.groups = None

    def reachable(self, a: int, b: int) -> bool:
        if self.groups is None:
            return True
        return self.groups.get(a, -1 - a) == self.groups.get(b, -1 - b)

    def fail_link(self, a: int, b: int) -> None:
        """The link between a and b fails: the connection closes, its streams reset."""
        conn = self.nodes[a].conns.get(b)
        if conn is not None:
            self._close(conn, "link failed")

    def at(self, t_ms: float, fn) -> None:
        """Call ``fn(sim)`` at virtual time ``t_ms``."""
        self._push(t_ms, -1, _CALL, fn)

    # ================================================================ what labs do

    def publish(self, i: int, count: int = 1) -> list[bytes]:
        """Lab ``i`` makes ``count`` records now (as `fabnode publish`): into its store and
        outbox, then the service is poked. Returns their CIDs."""
        node = self.nodes[i]
        if node.author is None:
            node.author = Author(10_000 + i)
        cids = []
        for _ in range(count):
            record = node.author.record(int(self.now), subject=_SUBJECT)
            self._verified[record.raw] = (record.cid, record.ts)
            node.store.add_local(record)
            cids.append(record.cid)
        if node.running:
            self._push(self.now, i, _EV, ev.OutboxChanged())
        return cids

    def inject_gossip(self, i: int, data: bytes, to=None) -> None:
        """Node ``i`` sends ``data`` on the gossip topic to its connected peers (or ``to``)
        without validating it: a hostile peer."""
        node = self.nodes[i]
        msgid = hashlib.sha256(data).digest()
        for peer in (sorted(node.conns) if to is None else to):
            conn = node.conns.get(peer)
            if conn is not None:
                self._send_gossip(node, peer, conn, data, msgid, node.name)

    # ================================================================ running

    def run(self, until_ms: float | None = None, max_events: int | None = None) -> None:
        """Deliver inbox entries in order until ``until_ms`` (then ``now`` is ``until_ms``),
        the inbox is empty, or ``max_events`` were delivered."""
        heap = self._heap
        pop = heapq.heappop
        count = 0
        while heap:
            if until_ms is not None and heap[0][0] > until_ms:
                break
            if max_events is not None and count >= max_events:
                return
            t, _, i, inc, kind, payload = pop(heap)
            self.now = t
            count += 1
            self.events += 1
            if i < 0:
                if kind == _CALL:
                    payload(self)
                continue
            if not self.events & 8191:
                self._sample()
            node = self.nodes[i]
            node.pending -= 1
            if inc != node.incarnation or node.svc is None:
                continue
            self._deliver(node, kind, payload)
        if until_ms is not None and until_ms > self.now:
            self.now = until_ms
        if self.events - self._sampled_at >= 1024 or not self.peak:
            self._sample()

    def run_for(self, ms: float) -> None:
        self.run(self.now + ms)

    def run_until(self, done, limit_ms: float, step_ms: float = 1000) -> bool:
        """Run in steps of ``step_ms`` until ``done(sim)`` or ``limit_ms`` of virtual time pass."""
        end = self.now + limit_ms
        while not done(self):
            if self.now >= end:
                return False
            self.run(min(self.now + step_ms, end))
        return True

    @property
    def trace_digest(self) -> str:
        return self._hash.hexdigest()

    # ================================================================ measures

    def digests(self) -> dict[bytes, list[int]]:
        """Record-set digest -> the running nodes holding it."""
        out: dict[bytes, list[int]] = {}
        for node in self.nodes:
            out.setdefault(node.store.digest(), []).append(node.index)
        return out

    def holders(self, cid: bytes) -> int:
        return len(self.arrivals.get(cid, ()))

    def everyone_has(self, cids, nodes=None) -> bool:
        want = len(self.nodes) if nodes is None else len(nodes)
        if nodes is None:
            return all(len(self.arrivals.get(c, ())) >= want for c in cids)
        return all(c in self.nodes[i].store.blocks for c in cids for i in nodes)

    def queue_sizes(self, i: int) -> dict[str, int]:
        """Every queue of node ``i`` that could grow: the simulator's and its service's."""
        node = self.nodes[i]
        out = {"inbox": node.pending, "streams": len(node.streams), "seen": len(node.seen),
               "ticks": len(node.ticks)}
        svc = node.svc
        if svc is not None:
            out.update(pending_syncs=len(svc.scheduler.pending), sessions=len(svc.sessions),
                       opening=len(svc.opening), tickets=len(svc._tickets), announcing=len(svc._announcing),
                       outbox_before=len(svc._outbox_before), gossip_invalid=len(svc._gossip_invalid),
                       last_syncs=len(svc.last_syncs), dialing=len(svc.dialing), book=len(svc.book.entries),
                       effects=len(svc._out))
        return out

    def _sample(self) -> None:
        """Keep the peak of every queue (sampled every 8192 events, and at the end of a run
        that delivered 1024 or more since the last sample: sampling 1,000 labs costs ~25 ms)."""
        self._sampled_at = self.events
        if len(self._heap) > self.max_heap:
            self.max_heap = len(self._heap)
        for k, v in self.max_queues().items():
            if v > self.peak.get(k, 0):
                self.peak[k] = v

    def max_queues(self) -> dict[str, int]:
        """The largest of each queue over all nodes, now (:attr:`peak`: the largest seen)."""
        out: dict[str, int] = {}
        for node in self.nodes:
            for k, v in self.queue_sizes(node.index).items():
                if v > out.get(k, 0):
                    out[k] = v
        out["link_backlog_bytes"] = int(self.max_link_backlog)
        out["inbox_max_ever"] = self.max_heap
        return out

    # ================================================================ internals

    def _push(self, t: float, i: int, kind: int, payload) -> None:
        self._seq += 1
        inc = self.nodes[i].incarnation if i >= 0 else 0
        if i >= 0:
            self.nodes[i].pending += 1
        heapq.heappush(self._heap, (t, self._seq, i, inc, kind, payload))

    def _arrived(self, cid: bytes, i: int) -> None:
        self.arrivals.setdefault(cid, []).append(self.now)

    def _transmit(self, a: int, b: int, nbytes: int) -> float:
        """Queue ``nbytes`` on the direction a -> b now; the time they arrive at b."""
        link = self.links.get((a, b), self.default_link)
        key = (a, b)
        now = self.now
        busy = self._busy.get(key, 0.0)
        if busy > now:
            backlog = (busy - now) * link.bits_per_second / 8000
            if backlog > self.max_link_backlog:
                self.max_link_backlog = backlog
            start = busy
        else:
            start = now
        end = start + nbytes * 8000 / link.bits_per_second
        self._busy[key] = end
        arrive = end + link.latency_ms
        if link.loss and self.rng.random() < link.loss:
            arrive += max(2 * link.latency_ms, RETRANSMIT_MIN_MS)
        last = self._last.get(key, 0.0)
        if arrive < last:
            arrive = last
        self._last[key] = arrive
        return arrive

    def _rtt(self, a: int, b: int) -> float:
        return self.link(a, b).latency_ms + self.link(b, a).latency_ms

    def _handle(self, node: Node, event) -> None:
        self._hash.update(f"{self.now:.3f}|{node.index}|{type(event).__name__}\n".encode())
        node.svc.handle(event, int(self.now))
        self._effects(node)

    def _deliver(self, node: Node, kind: int, payload) -> None:
        if kind == _EV:
            self._handle(node, payload)
        elif kind == _TICK:
            node.ticks.discard(payload)
            self._hash.update(f"{self.now:.3f}|{node.index}|tick\n".encode())
            node.svc.tick(int(self.now))
            self._effects(node)
        elif kind == _CEV:  # an event that only makes sense while a connection lasts
            conn_id, peer, event = payload
            conn = node.conns.get(peer)
            if conn is not None and conn.id == conn_id:
                self._handle(node, event)
        elif kind == _CONNECT:
            self._connected(node, payload)
        elif kind == _OPEN:
            conn_id, peer, key, remote_key, protocol = payload
            conn = node.conns.get(peer)
            if conn is None or conn.id != conn_id:
                return
            node.streams[key] = (peer, remote_key, conn_id)
            self._handle(node, ev.InboundStream(key, self.nodes[peer].name, protocol))
        elif kind == _FRAME:
            key, body = payload
            if key not in node.streams:
                return
            svc = node.svc
            if key not in svc.sessions:
                return  # the runtime reads nothing on a stream without a session
            if len(body) > svc.frame_limit(key):
                node.streams.pop(key, None)
                self._handle(node, ev.StreamFailed(key, f"frame of {len(body)} bytes over the limit",
                                                   remote_fault=True))
                return
            self._handle(node, ev.FrameReceived(key, body))
        elif kind == _END:
            key, error = payload
            if node.streams.pop(key, None) is not None:
                self._handle(node, ev.StreamFailed(key, error))
        elif kind == _GOSSIP:
            conn_id, peer, data, msgid, origin = payload
            conn = node.conns.get(peer)
            if conn is None or conn.id != conn_id:
                return
            seen = node.seen
            if msgid in seen:
                self.gossip_duplicates += 1
                return
            if len(seen) > 64:
                horizon = self.now - SEEN_TTL_MS
                while seen:
                    first = next(iter(seen))
                    if seen[first] > horizon:
                        break
                    del seen[first]
            seen[msgid] = self.now
            self._gossip_origin = origin
            self._handle(node, ev.GossipReceived(self.nodes[peer].name, data, origin))
            self._gossip_origin = "?"

    def _effects(self, node: Node) -> None:
        """Carry out what the node's service decided, in order."""
        out = node.svc.drain()
        if not out:
            return
        work = deque(out)
        i = node.index
        while work:
            e = work.popleft()
            t = type(e)
            if t is fx.SendFrame:
                got = node.streams.get(e.stream)
                if got is None:
                    continue
                peer, remote_key, conn_id = got
                data = e.data
                n, off = decode_varint(data, 0)
                node.bytes_sync += len(data)
                self._push(self._transmit(i, peer, len(data)), peer, _FRAME, (remote_key, data[off:]))
            elif t is fx.StoreRecords:
                new = node.store.store(e.blocks, int(self.now))
                node.svc.handle(ev.RecordsStored(e.ticket, tuple(new)), int(self.now))
                work.extendleft(reversed(node.svc.drain()))
            elif t is fx.Log:
                self.trace.append((self.now, node.name, e.line))
            elif t is fx.SetTimer:
                at = e.at_ms
                if at not in node.ticks:
                    node.ticks.add(at)
                    self._push(max(float(at), self.now), i, _TICK, at)
            elif t is fx.Forward:
                msgid = hashlib.sha256(e.data).digest()
                node.seen.setdefault(msgid, self.now)
                for peer in sorted(node.conns):
                    if self.nodes[peer].name != e.forwarder:
                        self._send_gossip(node, peer, node.conns[peer], e.data, msgid, self._gossip_origin)
            elif t is fx.Publish:
                msgid = hashlib.sha256(e.data).digest()
                node.seen[msgid] = self.now
                for peer in sorted(node.conns):
                    self._send_gossip(node, peer, node.conns[peer], e.data, msgid, node.name)
            elif t is fx.OpenStream:
                peer = self.by_name.get(e.peer)
                conn = node.conns.get(peer) if peer is not None else None
                if conn is None:
                    self._push(self.now, i, _EV, ev.StreamFailed(e.stream, "no connection"))
                    continue
                conn.opened += 1
                remote_key = ("in", conn.id, conn.opened, i)
                node.streams[e.stream] = (peer, remote_key, conn.id)
                arrive = self._transmit(i, peer, OPEN_BYTES)
                self._push(arrive, peer, _OPEN, (conn.id, i, remote_key, e.stream, e.protocol))
                self._push(self.now + self._rtt(i, peer), i, _CEV, (conn.id, peer, ev.StreamOpened(e.stream)))
            elif t is fx.CloseStream or t is fx.ResetStream:
                got = node.streams.pop(e.stream, None)
                if got is not None:
                    peer, remote_key, _ = got
                    error = "closed by the peer" if t is fx.CloseStream else "reset by the peer"
                    self._push(self._transmit(i, peer, OPEN_BYTES), peer, _END, (remote_key, error))
            elif t is fx.MarkAnnounced:
                node.store.announced(e.cids)
            elif t is fx.Dial:
                self._dial(node, e.peer)
            elif t is fx.Disconnect:
                self.disconnects.append((self.now, node.name, e.peer, e.reason))
                peer = self.by_name.get(e.peer)
                conn = node.conns.get(peer) if peer is not None else None
                if conn is not None:
                    self._close(conn, e.reason)
            elif t is fx.RememberPeer:
                node.book[e.peer] = _entry(e)
            elif t is fx.ForgetPeer:
                node.book.pop(e.peer, None)
            elif t is fx.Fetch:  # no bundles in the simulated world
                self._push(self.now, i, _EV, ev.FetchFinished(e.root, "no provider"))
        if node.pending > self.max_pending:
            self.max_pending = node.pending

    def _send_gossip(self, node: Node, peer: int, conn: Conn, data: bytes, msgid: bytes, origin: str) -> None:
        node.bytes_gossip += len(data)
        self._push(self._transmit(node.index, peer, len(data)), peer, _GOSSIP, (conn.id, node.index, data, msgid, origin))

    def _dial(self, node: Node, name: str) -> None:
        peer = self.by_name.get(name)
        i = node.index
        if peer is None or peer == i or not self.reachable(i, peer) or not self.nodes[peer].running:
            self._push(self.now + DIAL_TIMEOUT_MS, i, _EV, ev.DialFailed(name, "timed out"))
            return
        self._push(self.now + 2 * self._rtt(i, peer), i, _CONNECT, peer)

    def _connected(self, node: Node, peer: int) -> None:
        """A dial from ``node`` to ``peer`` completes (if it still can)."""
        i = node.index
        other = self.nodes[peer]
        if not other.running or not self.reachable(i, peer):
            self._handle(node, ev.DialFailed(other.name, "timed out"))
            return
        if peer in node.conns:  # the other side dialled too: one connection
            self._handle(node, ev.PeerConnected(other.name, other.addr))
            return
        self._conn_ids += 1
        conn = Conn(self._conn_ids, i, peer)
        node.conns[peer] = other.conns[i] = conn
        for a, b in ((node, other), (other, node)):
            if a.svc is not None and a.conns.get(b.index) is conn:
                self._handle(a, ev.PeerConnected(b.name, b.addr))
            if a.svc is not None and a.conns.get(b.index) is conn:
                self._handle(a, ev.PeerSpeaksFabnode(b.name, (b.addr,)))
            self._mesh(a)

    def _close(self, conn: Conn, why: str) -> None:
        a, b = self.nodes[conn.a], self.nodes[conn.b]
        if a.conns.get(b.index) is not conn:
            return
        del a.conns[b.index]
        del b.conns[a.index]
        for node, other in ((a, b), (b, a)):
            if node.svc is None:
                continue
            self._handle(node, ev.PeerDisconnected(other.name))
            for key in [k for k, got in node.streams.items() if got[2] == conn.id]:
                if node.streams.pop(key, None) is not None and node.svc is not None:
                    self._handle(node, ev.StreamFailed(key, "ConnectionClosed"))
            self._mesh(node)

    def _mesh(self, node: Node) -> None:
        if node.svc is not None and node.mesh != len(node.conns):
            node.mesh = len(node.conns)
            self._handle(node, ev.MeshChanged(node.mesh))


_SUBJECT = Author(1)
"""Every simulated record vouches for this key (records differ by author, note and time)."""


def _entry(e: fx.RememberPeer):
    from fabnode.node.service.peers import PeerEntry

    return PeerEntry(e.peer, e.addrs, e.source, e.first_seen_ms, e.last_connected_ms, e.failures, e.next_dial_ms)


def random_graph(n: int, rng: random.Random, lo: int = 3, hi: int = 6) -> list[tuple[int, int]]:
    """A connected random graph on ``n`` nodes where each node's degree is drawn in [lo, hi]
    (a few nodes may end one over ``hi`` to connect the graph or reach ``lo``). Edges (a, b):
    a gets b as a bootstrap peer (which end is drawn too)."""
    target = [rng.randint(lo, hi) for _ in range(n)]
    adj: list[set[int]] = [set() for _ in range(n)]
    order = list(range(n))
    rng.shuffle(order)
    for a in order:
        while len(adj[a]) < target[a]:
            b = _pick(rng, n, a, adj, target)
            if b is None:
                free = [b for b in range(n) if b != a and b not in adj[a] and len(adj[b]) < target[b]]
                if not free:
                    break
                b = free[rng.randrange(len(free))]
            adj[a].add(b)
            adj[b].add(a)
    for a in range(n):  # those left short: to anyone under hi
        while len(adj[a]) < lo:
            free = [b for b in range(n) if b != a and b not in adj[a] and len(adj[b]) < hi] or \
                   [b for b in range(n) if b != a and b not in adj[a]]
            b = free[rng.randrange(len(free))]
            adj[a].add(b)
            adj[b].add(a)
    # connect the components
    comp = [-1] * n
    roots = []
    for s in range(n):
        if comp[s] < 0:
            roots.append(s)
            comp[s] = s
            stack = [s]
            while stack:
                x = stack.pop()
                for y in adj[x]:
                    if comp[y] < 0:
                        comp[y] = s
                        stack.append(y)
    for r1, r2 in zip(roots, roots[1:]):
        adj[r1].add(r2)
        adj[r2].add(r1)
    edges = []
    for a in range(n):
        for b in sorted(adj[a]):
            if a < b:
                edges.append((a, b) if rng.random() < 0.5 else (b, a))
    return edges


def two_regions(n: int, rng: random.Random, bridges: int = 4) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Two regions of n/2 labs, each a :func:`random_graph` (degree 3–6), joined by ``bridges``
    long links between random labs of each: (edges, first region, second region). Partitioning
    the regions cuts only the bridges, so a long partition does not cost every lab a redial every
    five minutes of it (which a random bisection of one graph would: half its edges cross)."""
    half = n // 2
    left, right = list(range(half)), list(range(half, n))
    edges = random_graph(half, rng) + [(a + half, b + half) for a, b in random_graph(n - half, rng)]
    for _ in range(bridges):
        edges.append((rng.choice(left), rng.choice(right)))
    return list(dict.fromkeys(edges)), left, right


def _pick(rng, n, a, adj, target) -> int | None:
    """A random lab that can take one more edge from ``a``, by 32 tries (None: scan instead)."""
    for _ in range(32):
        b = rng.randrange(n)
        if b != a and b not in adj[a] and len(adj[b]) < target[b]:
            return b
    return None


def network(n: int, *, seed: int = 0, link: Link = Link(), config: ServiceConfig = SIM_CONFIG,
            edges=None) -> Sim:
    """A started simulation of ``n`` labs on a :func:`random_graph` (or ``edges(n, rng)``),
    bootstrapped."""
    sim = Sim(n, seed=seed, link=link, config=config)
    sim.edges = random_graph(n, sim.rng) if edges is None else edges(n, sim.rng)
    sim.bootstrap(sim.edges)
    sim.start_all()
    return sim


def forged(raw: bytes) -> bytes:
    """A record block with its signature spoiled (one bit of the 64 bytes after ``"sig"``): a
    well-formed record whose signature does not verify."""
    at = raw.index(b"\x63sig\x58\x40") + 6
    return raw[:at] + bytes([raw[at] ^ 1]) + raw[at + 1:]
