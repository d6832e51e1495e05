"""Who may fetch from us, and how fast: the serving side's budgets as pure bookkeeping.

Theory of operation: every inbound ``/fabnode/car/1.0.0`` stream asks :meth:`ServeSlots.admit`
for a slot. A peer holds at most ``per_peer`` slots and all peers together ``total``. Slots go
to streams that make progress (issue 12: four throwaway peer ids holding all 16 slots with
streams that never sent a request shut serving off for everyone): when every slot is taken, a
newcomer may take the slot of an *idle* stream — no request yet, or no block taken for
:data:`STALL_MS` — of a peer that holds more slots than the newcomer does; the greediest idle
peer loses first, and a transfer that is moving is never cut for another. The upload cap is
node/service/pacing.py's, shared with every protocol. Time is passed in (ms); the
runtime (node/runtime/fetch.py) enforces the timeouts and carries out the evictions.

The asker's side is :class:`protocol.fetch.FetchSession`, pure as well: it accepts only the
blocks the DAG needs, each checked against its CID.
"""

from __future__ import annotations

from dataclasses import dataclass

STALL_MS = 5_000


@dataclass
class Slot:
    key: object
    peer: str
    has_request: bool = False
    last_progress_ms: int = 0


class ServeSlots:
    def __init__(self, per_peer: int, total: int) -> None:
        self.per_peer, self.total = per_peer, total
        self.slots: dict[object, Slot] = {}

    def held_by(self, peer: str) -> int:
        return sum(1 for s in self.slots.values() if s.peer == peer)

    def admit(self, key, peer: str, now_ms: int) -> tuple[bool, Slot | None]:
        """(admitted?, the idle slot evicted to make room or None)."""
        mine = self.held_by(peer)
        if mine >= self.per_peer:
            return False, None
        victim = None
        if len(self.slots) >= self.total:
            idle = [s for s in self.slots.values() if s.peer != peer and self.held_by(s.peer) > mine
                    and (not s.has_request or now_ms - s.last_progress_ms > STALL_MS)]
            if not idle:
                return False, None
            victim = max(idle, key=lambda s: (self.held_by(s.peer), not s.has_request, -s.last_progress_ms))
            del self.slots[victim.key]
        self.slots[key] = Slot(key, peer, last_progress_ms=now_ms)
        return True, victim

    def requested(self, key, now_ms: int) -> None:
        slot = self.slots.get(key)
        if slot is not None:
            slot.has_request, slot.last_progress_ms = True, now_ms

    def progressed(self, key, now_ms: int) -> None:
        slot = self.slots.get(key)
        if slot is not None:
            slot.last_progress_ms = now_ms

    def release(self, key) -> None:
        self.slots.pop(key, None)
