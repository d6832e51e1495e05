"""Fetching one DAG from several peers over links that break: who asks whom for what, and when.

Theory of operation. The wire (protocol/fetch.py) answers one request with one DAG, depth-first,
leaving out the blocks the asker lists as held; any sub-DAG of a DAG a peer holds whole is a
valid request. So the work is cut into *units*: a unit is the root of a sub-DAG that is not here
yet (at the start, the frontier: the missing children of the blocks already held, or the root
itself). Each peer has a worker per request it may have in flight (:func:`peer_of` names the
peer); a worker takes a unit from the shared queue, asks its peer for it, and tells
:class:`FetchPlan` about every verified block that arrives (:meth:`received`) and every read
(:meth:`heard`), so the plan learns the DAG's shape as it comes (a dag-pb node's links, each with
the size of its sub-DAG) and each request's pace.

Rebalancing needs no wire change. When the queue is empty and a worker is idle, it *steals* the
end of the busiest unit: a stream sends its DAG depth-first, so the trailing children not yet
reached (at the unit's top level, then inside the child being sent, and so on) form a suffix of
what the stream still has to send. About half of the unit's remaining bytes, taken from the end,
become new units in the queue, and the owner's stream is told to stop right after the last block
before them (the plan knows what a depth-first stream sends next). A peer's two requests never
split work between themselves (they share one link), and its second request only prefetches
(goes out when the first is about to end), so as not to take work another peer could start. When nothing can be split, an idle
worker may *duplicate* a unit whose owner is stalled or clearly slower (the endgame); the first to
finish wins and the other is stopped. A worker whose peer fails puts back what its unit still
lacks, as frontier units.

Retrying: every peer has its own :class:`Backoff` (1 s, 1 s, 2 s, 2 s … to 30 s, with optional jitter
from an injected source); a peer that delivered something since its last failure starts again
from 1 s. A peer that answered "I do not have it", or broke the protocol, is not asked again in
this fetch. The runtime (node/runtime/fetch.py) runs the workers, the clock and the deadline;
this module only decides.

Verification is not this module's job and does not depend on it: every request's session accepts
only blocks provably inside the unit it asked for, and a unit is only ever a CID learnt from a
verified parent, so nothing outside the requested DAG is stored whatever the plan decides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

FIRST_BACKOFF_MS = 1_000
MAX_BACKOFF_MS = 30_000
STALL_MS = 2_000
"""An owner that delivered nothing for this long may have its unit duplicated by an idle worker."""
SETUP_MS = 300
"""What a new request costs before its first byte (a stream's set-up, the server's checks)."""
POLL_MS = 250
"""How often an idle worker asks again (the runtime's wait for news)."""
MIN_STEAL_BYTES = 256 << 10
"""Units are not split below this (a request's round trip costs more than it saves)."""


def peer_of(worker) -> str:
    """A worker is a peer's name, or (name, slot) when a peer has several requests in flight."""
    return worker[0] if isinstance(worker, tuple) else worker


def parse_duration(text: str) -> float:
    """Seconds from ``"600"``, ``"90s"``, ``"10m"``, ``"1h"`` or ``"1.5m"``; ValueError otherwise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text or "")
    if not m:
        raise ValueError(f"not a duration: {text!r} (say e.g. 90s, 10m or 1h)")
    seconds = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    if seconds <= 0:
        raise ValueError(f"not a duration: {text!r} (must be more than 0)")
    return seconds


class Backoff:
    """1 s, 1 s, 2 s, 2 s, 4 s, 4 s … 30 s: each wait twice before it doubles, so after a short
    cut the redial comes soon after the link is back (bench_links.py scenario c: with 1-2-4-8 s
    a cut of 8 s cost up to 7 s more; this way at most about 2), for the same number of dials
    over a long outage once the cap is reached. ``jitter()`` (a float in [0, 1), injected:
    seeded in tests, none by default) stretches each wait by up to a quarter, so peers cut
    together do not redial together."""

    def __init__(self, first_ms: int = FIRST_BACKOFF_MS, cap_ms: int = MAX_BACKOFF_MS, jitter=None) -> None:
        self.first_ms, self.cap_ms, self.jitter = first_ms, cap_ms, jitter
        self._next = first_ms
        self._repeat = True

    def next_ms(self) -> int:
        wait = self._next
        if not self._repeat:
            self._next = min(self._next * 2, self.cap_ms)
        self._repeat = not self._repeat
        if self.jitter is not None:
            wait = int(wait * (1 + self.jitter() / 4))
        return wait

    def reset(self) -> None:
        self._next, self._repeat = self.first_ms, True


@dataclass
class PeerState:
    backoff: Backoff
    retry_at_ms: int = 0
    last_reason: str = ""
    refused: bool = False
    """It said it does not hold the DAG (or broke the protocol): not asked again in this fetch."""
    delivered_since_failure: bool = False
    bytes: int = 0
    blocks: int = 0
    failures: int = 0


@dataclass
class Unit:
    root: bytes
    est: int
    """Estimated bytes of the sub-DAG (its parent's link size)."""
    owners: set = field(default_factory=set)
    done: bool = False
    received: int = 0
    """Bytes received for this unit so far (by any owner, counted as they arrive)."""
    last_block_ms: dict = field(default_factory=dict)
    """Per owner: when bytes of this unit last arrived from it."""


class FetchPlan:
    """The shared queue of units and what each worker is doing (see the module docstring)."""

    def __init__(self, root: bytes, jitter=None) -> None:
        self.root = root
        self.jitter = jitter
        self.kids: dict[bytes, list[tuple[bytes, int]]] = {}
        """Links of every dag-pb node seen (held before, or received): (child, sub-DAG size)."""
        self.have: set[bytes] = set()
        self.parent: dict[bytes, bytes] = {}
        """A parent of each linked block (the first seen): to know what a stream sends next."""
        self.queue: list[Unit] = []
        self.units: dict[bytes, Unit] = {}
        """Every unit made, by root CID (a CID is never made a unit twice while it is not done)."""
        self.working: dict[object, Unit] = {}
        """Worker → the unit it is fetching."""
        self.stop_at: dict[object, set[bytes]] = {}
        """Worker → CIDs where its stream must stop (ceded to others)."""
        self.cancelled: set = set()
        """Workers whose unit another worker finished first: the runtime stops their streams."""
        self.peers: dict[str, PeerState] = {}
        self.rate: dict[object, float] = {}
        """Worker → bytes per ms on its current unit (the endgame's yardstick)."""
        self._pace: dict[object, tuple[int, int]] = {}
        """Worker → (since when, bytes since then) on its current unit."""
        self.peer_rate: dict[str, float] = {}
        """Peer → bytes per ms of all its requests together, last measured."""
        self.steals = self.duplicates = 0

    # ------------------------------------------------------------ what is here

    def held(self, cid: bytes, links: list[tuple[bytes, int]] | None) -> None:
        """A block already stored (``links``: its dag-pb links, or None for a leaf)."""
        self.have.add(cid)
        if links is not None and cid not in self.kids:
            self.kids[cid] = list(links)
            for child, _ in links:
                self.parent.setdefault(child, cid)

    def frontier(self, top: bytes, est: int = 0) -> list[tuple[bytes, int]]:
        """The roots of the missing sub-DAGs under ``top`` (``top`` itself if it is not here)."""
        out, stack, seen = [], [(top, est)], set()
        while stack:
            cid, size = stack.pop()
            if cid in seen:
                continue
            seen.add(cid)
            if cid not in self.have:
                out.append((cid, size))
            else:
                stack.extend(reversed(self.kids.get(cid, [])))
        return out

    def refill(self) -> int:
        """Queue the frontier of the whole DAG as units (start, and after a pass that left gaps);
        returns how many."""
        added = 0
        for cid, size in self.frontier(self.root, self._est(self.root)):
            unit = self.units.get(cid)
            if unit is not None and not unit.done:
                continue
            self._queue(cid, size)
            added += 1
        return added

    def _est(self, cid: bytes) -> int:
        for links in self.kids.values():
            for child, size in links:
                if child == cid:
                    return size
        return 0

    def _queue(self, cid: bytes, est: int) -> Unit:
        unit = Unit(cid, est)
        self.units[cid] = unit
        self.queue.append(unit)
        return unit

    @property
    def idle(self) -> bool:
        """Nothing queued, nothing being fetched: the runtime checks the store and refills."""
        return not self.queue and not self.working

    # ------------------------------------------------------------ peers and retrying

    def peer(self, name: str) -> PeerState:
        state = self.peers.get(name)
        if state is None:
            state = self.peers[name] = PeerState(Backoff(jitter=self.jitter))
        return state

    def connected(self, worker, now_ms: int) -> None:
        """A worker's peer is connected afresh: its pace is measured from now."""
        self._pace[worker] = (now_ms, 0)
        self.rate.pop(worker, None)

    def peer_failed(self, name: str, reason: str, now_ms: int, refused: bool = False) -> int:
        """The peer could not be reached or broke off; returns when to try it again (ms)."""
        state = self.peer(name)
        state.failures += 1
        state.last_reason = reason
        if refused:
            state.refused = True
        if state.delivered_since_failure:
            state.backoff.reset()
            state.delivered_since_failure = False
        state.retry_at_ms = now_ms + state.backoff.next_ms()
        return state.retry_at_ms

    def askable(self, names) -> list[str]:
        return [n for n in names if not self.peer(n).refused]

    def next_retry_ms(self, names) -> int | None:
        """The soonest time one of ``names`` may be tried again (None: none may be)."""
        times = [self.peer(n).retry_at_ms for n in self.askable(names)]
        return min(times) if times else None

    def last_reason(self) -> str:
        """The reason of the most recent failure of any peer."""
        failed = [s for s in self.peers.values() if s.last_reason]
        return max(failed, key=lambda s: s.retry_at_ms).last_reason if failed else ""

    # ------------------------------------------------------------ handing out work

    def take(self, worker, now_ms: int) -> Unit | None:
        """The next unit for ``worker``: from the queue, else the end of the busiest unit, else a
        duplicate of a stalled or slow one; None when there is nothing useful to do now."""
        self.cancelled.discard(worker)
        peer = peer_of(worker)
        busy = [u for w, u in self.working.items() if peer_of(w) == peer and w != worker]
        if busy:  # a peer's next request goes out just before its current one ends (hiding the
            rate = self.peer_rate.get(peer, 0)  # set-up), not alongside it: two would share its link
            if not rate or min(self._remaining(u) for u in busy) > rate * (SETUP_MS + POLL_MS):
                return None  # and take work another peer could start at once
        if self.queue:
            unit = self.queue.pop(0)
            return self._assign(worker, unit, now_ms)
        stolen = self._steal(worker, now_ms)
        if stolen is not None:
            return stolen
        return self._duplicate(worker, now_ms)

    def _assign(self, worker, unit: Unit, now_ms: int) -> Unit:
        unit.owners.add(worker)
        unit.last_block_ms[worker] = now_ms
        self._pace[worker] = (now_ms, 0)  # its rate is measured on this unit
        self.working[worker] = unit
        self.stop_at[worker] = set()
        return unit

    def _remaining(self, unit: Unit) -> int:
        return max(unit.est - unit.received, 0)

    def _suffix(self, owner, unit: Unit) -> list[tuple[bytes, int]]:
        """The trailing not-yet-reached sub-DAGs of ``unit``'s stream, last first (those already
        ceded are skipped: they are the very end)."""
        out: list[tuple[bytes, int]] = []
        ceded = self.stop_at.get(owner, set())
        node = unit.root
        if node not in self.have:
            return out  # the stream has not even started: nothing is known to split
        while True:
            links = self.kids.get(node)
            if not links:
                return out
            inside = None
            for child, size in reversed(links):
                if child in ceded:
                    continue
                if child in self.have or child in self.units:
                    inside = child  # the stream is in (or past) this child
                    break
                out.append((child, size))
            if inside is None or inside not in self.have:
                return out
            node = inside

    def _steal(self, worker, now_ms: int) -> Unit | None:
        best = None
        for other, unit in self.working.items():
            if peer_of(other) == peer_of(worker) or unit.done or len(unit.owners) > 1:
                continue  # splitting work between two requests to the same peer gains nothing
            if self._remaining(unit) < 2 * MIN_STEAL_BYTES:
                continue
            if best is None or self._remaining(unit) > self._remaining(best[1]):
                best = (other, unit)
        if best is None:
            return None
        owner, unit = best
        suffix = self._suffix(owner, unit)
        remaining = self._remaining(unit)
        want = remaining // 2
        ceded, total = [], 0
        for cid, size in suffix:  # from the end of the stream, about half (a quarter either way)
            if (ceded and total + size > want * 5 // 4) or remaining - total - size < MIN_STEAL_BYTES:
                break
            ceded.append((cid, size))
            total += size
            if total >= want * 15 // 16:
                break
        if total < MIN_STEAL_BYTES:
            return None
        unit.est -= total
        self.stop_at[owner].update(cid for cid, _ in ceded)
        new = [Unit(cid, size) for cid, size in reversed(ceded)]  # in the stream's order
        for u in new:
            self.units[u.root] = u
        self.steals += 1
        self.queue = new[1:] + self.queue
        return self._assign(worker, new[0], now_ms)

    def _duplicate(self, worker, now_ms: int) -> Unit | None:
        peer = peer_of(worker)
        if any(peer_of(w) == peer for w in self.working):
            return None  # this peer's link is still busy: a duplicate would only share it
        mine = self.peer_rate.get(peer)
        best, best_left = None, 0.0
        for other, unit in self.working.items():
            if peer_of(other) == peer or unit.done or len(unit.owners) > 1:
                continue
            remaining = self._remaining(unit)
            stalled = now_ms - max(unit.last_block_ms.values(), default=now_ms) >= STALL_MS
            theirs = self.rate.get(other)
            if stalled:
                left = float("inf")
            elif mine and theirs and remaining:
                left = remaining / theirs
                if left <= 1.2 * (remaining / mine + SETUP_MS):
                    continue  # not clearly slower: duplicating would only waste the link
            else:
                continue
            if best is None or left > best_left:
                best, best_left = unit, left
        if best is None:
            return None
        self.duplicates += 1
        return self._assign(worker, best, now_ms)

    # ------------------------------------------------------------ news from the workers

    def received(self, worker, cid: bytes, nbytes: int, links: list[tuple[bytes, int]] | None,
                 now_ms: int) -> bool:
        """A verified block arrived on ``worker``'s stream (and is being stored); False: stop
        that stream now (it reached ground ceded to another unit, or its unit is done)."""
        if cid in self.stop_at.get(worker, ()):
            self.held(cid, links)
            return False
        self.held(cid, links)
        state = self.peers.get(peer_of(worker))
        if state is not None:
            state.delivered_since_failure = True
            state.bytes += nbytes
            state.blocks += 1
        unit = self.working.get(worker)
        if unit is None or unit.done:
            return False
        if cid == unit.root and not unit.est and links:  # the top unit: its size is known now
            unit.est = nbytes + sum(size for _, size in links)
        stops = self.stop_at.get(worker)
        if stops and self._next_in_stream(unit.root, cid) in stops:
            return False  # everything before the ceded ground is here: stop before it comes
        return True

    def heard(self, worker, nbytes: int, now_ms: int) -> None:
        """``nbytes`` arrived on ``worker``'s stream (blocks may be large: progress is bytes)."""
        unit = self.working.get(worker)
        if unit is not None:
            unit.last_block_ms[worker] = now_ms
            unit.received += nbytes
        since, got = self._pace.get(worker, (now_ms, 0))
        self._pace[worker] = (since, got + nbytes)
        if now_ms - since >= 200:
            self.rate[worker] = (got + nbytes) / (now_ms - since)
            peer = peer_of(worker)
            self.peer_rate[peer] = sum(self.rate.get(w, 0) for w in self.working if peer_of(w) == peer)

    def _next_in_stream(self, top: bytes, cid: bytes) -> bytes | None:
        """The block a depth-first stream of ``top`` sends after ``cid`` (None: the end), as
        far as the plan knows the DAG."""
        links = self.kids.get(cid)
        if links:
            return links[0][0]
        while cid != top:
            up = self.parent.get(cid)
            if up is None:
                return None
            siblings = [child for child, _ in self.kids.get(up, [])]
            at = siblings.index(cid) if cid in siblings else len(siblings)
            if at + 1 < len(siblings):
                return siblings[at + 1]
            cid = up
        return None

    def finished(self, worker) -> list:
        """``worker``'s stream ended with its unit complete (or stopped where ceded ground
        starts); returns the other workers on the same unit, which the runtime stops."""
        unit = self.working.pop(worker, None)
        self.stop_at.pop(worker, None)
        if unit is None:
            return []
        unit.owners.discard(worker)
        others = list(unit.owners)
        if not unit.done:
            unit.done = True
            for other in others:
                self.cancelled.add(other)
        return others

    def failed(self, worker) -> None:
        """``worker``'s stream broke: what its unit still lacks goes back in the queue (unless
        another worker is on it, or it was finished by another)."""
        unit = self.working.pop(worker, None)
        stops = self.stop_at.pop(worker, set())
        if unit is None:
            return
        unit.owners.discard(worker)
        if worker in self.cancelled or unit.done or unit.owners:
            self.cancelled.discard(worker)
            return
        unit.done = True  # replaced by its frontier
        for cid, size in self._frontier_within(unit.root, unit.est, stops):
            existing = self.units.get(cid)
            if existing is not None and not existing.done and existing is not unit:
                continue
            self._queue(cid, size)

    def _frontier_within(self, top: bytes, est: int, stops: set[bytes]) -> list[tuple[bytes, int]]:
        return [(cid, size) for cid, size in self.frontier(top, est) if cid not in stops]
