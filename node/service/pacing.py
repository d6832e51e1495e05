"""One upload cap for every protocol, records first: the priority pacer (issue 14).

Theory of operation
-------------------
A thin link (a 256 kbit/s radio, a phone's data plan) is one queue. Whatever this node writes
to it — sync frames, gossip announcements, bundle blocks it serves — waits behind what was
written before, in the socket buffers and in the link itself. So the node keeps its own queue
instead, in front of every write, and sends into the link no faster than
``limits.upload_bytes_per_second``: set somewhat below the link's rate, the link's queue stays
short, and what waits, waits *here*, where the most important bytes can go first.

:class:`PriorityPacer` is that queue, as bookkeeping only (no clock of its own: every call is
given the time in ms). A writer asks for ``nbytes`` at a *priority* (:data:`RECORDS` before
:data:`OWN_BUNDLES` before :data:`BUNDLES`) with :meth:`request`; :meth:`grant` hands out the
waiting requests the link has room for now, most important first and in order of asking within
one priority; :meth:`next_ms` says when the next one can go. The link is modelled as a virtual
clock ``busy_until``: a grant of n bytes moves it ``n / rate`` seconds on, and a request goes
once ``busy_until`` is less than :data:`BURST_MS` ahead of now (a small burst keeps a writer
busy while the previous piece is in flight). Big writes are cut by the runtime into pieces of
at most :meth:`piece_bytes` (about 1/8 s of the link), each asked for on its own, so a record
never waits behind more than one piece of a bundle. With no cap (rate 0) every request is
granted at once and only counted.

The pacer also counts what went out, per protocol and per peer (``sent``), for ``fabnode
status``: bytes granted are bytes written.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

RECORDS, OWN_BUNDLES, BUNDLES = 0, 1, 2
"""Priorities, most important first: records (sync, gossip); bundles of this lab's own and
followed designs; every other bundle."""
PRIORITY_NAMES = ("records", "own and followed bundles", "other bundles")
BURST_MS = 50
"""How far ahead of now the link may be booked: enough to keep a piece in flight, short enough
that a record asked for now goes within about this much plus one piece."""
MIN_PIECE, MAX_PIECE = 1 << 10, 16 << 10
MAX_PEERS_COUNTED = 1000


@dataclass(slots=True)
class Request:
    key: object
    priority: int
    nbytes: int
    protocol: str
    peer: str


class PriorityPacer:
    def __init__(self, rate: int) -> None:
        """``rate``: bytes a second for every protocol together (0: no cap)."""
        self.rate = rate
        self.busy_until = 0.0
        self._queues: tuple[deque[Request], ...] = tuple(deque() for _ in PRIORITY_NAMES)
        self._waiting: dict[object, Request] = {}
        self.sent: dict[str, int] = {}
        """Bytes granted per protocol since the start."""
        self.sent_to: dict[str, dict[str, int]] = {}
        """Bytes granted per peer and protocol (the most recent :data:`MAX_PEERS_COUNTED` peers)."""

    def piece_bytes(self) -> int:
        """The largest piece a write should be cut into: ~1/8 s of the link, 1–16 KiB."""
        if not self.rate:
            return MAX_PIECE
        return max(MIN_PIECE, min(MAX_PIECE, self.rate // 8))

    def request(self, key, priority: int, nbytes: int, now_ms: float, *, protocol: str = "", peer: str = "") -> bool:
        """Ask to send ``nbytes``; True if it may go at once (then nothing waits under ``key``)."""
        req = Request(key, min(max(priority, 0), len(PRIORITY_NAMES) - 1), nbytes, protocol, peer)
        if not self._waiting and self._room(now_ms):
            self._send(req, now_ms)
            return True
        self._queues[req.priority].append(req)
        self._waiting[key] = req
        return False

    def grant(self, now_ms: float) -> list:
        """The keys of waiting requests that may go now, most important first."""
        out = []
        while self._waiting and self._room(now_ms):
            queue = next(q for q in self._queues if q)
            req = queue.popleft()
            del self._waiting[req.key]
            self._send(req, now_ms)
            out.append(req.key)
        return out

    def cancel(self, key) -> None:
        """A waiting writer gave up (its stream ended): forget its request."""
        req = self._waiting.pop(key, None)
        if req is not None:
            self._queues[req.priority].remove(req)

    def next_ms(self) -> float | None:
        """When :meth:`grant` will have something to give (None: nothing waits)."""
        if not self._waiting:
            return None
        return self.busy_until - BURST_MS

    def waiting(self) -> dict[str, int]:
        """Bytes waiting per priority, for ``fabnode status``."""
        return {name: sum(r.nbytes for r in q) for name, q in zip(PRIORITY_NAMES, self._queues) if q}

    def _room(self, now_ms: float) -> bool:
        return not self.rate or self.busy_until - now_ms < BURST_MS

    def _send(self, req: Request, now_ms: float) -> None:
        if self.rate:
            self.busy_until = max(self.busy_until, now_ms) + req.nbytes * 1000 / self.rate
        if req.protocol:
            self.sent[req.protocol] = self.sent.get(req.protocol, 0) + req.nbytes
        if req.peer:
            counts = self.sent_to.pop(req.peer, None) or {}
            counts[req.protocol] = counts.get(req.protocol, 0) + req.nbytes
            self.sent_to[req.peer] = counts  # most recent last
            while len(self.sent_to) > MAX_PEERS_COUNTED:
                del self.sent_to[next(iter(self.sent_to))]
