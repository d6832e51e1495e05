"""Whom the node knows, and when to dial each again: the peers table's policy, in memory.

Theory of operation: the runtime loads the peers table into a :class:`PeerBook` at start and
persists every change the book reports (:class:`node.service.effects.RememberPeer`,
:class:`node.service.effects.ForgetPeer`). A failed dial backs off 1 s, 2 s, 4 s … at most a
minute for a bootstrap peer and five for a peer met by chance; a successful connection resets it;
a changed address makes the peer dialable at once. A lab's link that comes back (issue 14: up ten
minutes on market day) must not wait out a long backoff, so the operator's own peers are never
more than a minute away, and the first connection after failures tells the book the link is back:
every bootstrap peer still backing off becomes dialable at once.
Peers met by chance (mDNS, inbound) unreachable for 30 days are forgotten, and at most
:data:`MAX_REMEMBERED` of them are kept (throwaway peer ids must not grow the book); bootstrap
peers are never forgotten: the operator listed them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .effects import ForgetPeer, RememberPeer

MIN_BACKOFF_MS = 1_000
MAX_BACKOFF_MS = 5 * 60_000
MAX_BOOTSTRAP_BACKOFF_MS = 60_000
"""A dead bootstrap peer costs one dial a minute; a returning link finds it within that."""
FORGET_AFTER_MS = 30 * 24 * 3600_000
MAX_REMEMBERED = 1000
"""Peers met by chance (mDNS, inbound) kept for redialling; beyond it the least recently seen go."""
MAX_ADDRS = 8


def backoff_ms(failures: int, bootstrap: bool = False) -> int:
    """Wait after ``failures`` failed dials in a row: 1 s, 2 s, 4 s … capped at five minutes (a
    minute for a bootstrap peer)."""
    cap = MAX_BOOTSTRAP_BACKOFF_MS if bootstrap else MAX_BACKOFF_MS
    return min(MIN_BACKOFF_MS << min(max(failures - 1, 0), 20), cap)


@dataclass(frozen=True, slots=True)
class PeerEntry:
    peer: str
    addrs: tuple[str, ...]
    source: str
    first_seen_ms: int
    last_connected_ms: int = 0
    failures: int = 0
    next_dial_ms: int = 0

    def effect(self) -> RememberPeer:
        return RememberPeer(self.peer, self.addrs, self.source, self.first_seen_ms, self.last_connected_ms,
                            self.failures, self.next_dial_ms)


class PeerBook:
    def __init__(self, entries=()) -> None:
        self.entries: dict[str, PeerEntry] = {e.peer: e for e in entries}

    def get(self, peer: str) -> PeerEntry | None:
        return self.entries.get(peer)

    def is_bootstrap(self, peer: str) -> bool:
        entry = self.entries.get(peer)
        return entry is not None and entry.source == "bootstrap"

    def remember(self, peer: str, addrs: tuple[str, ...], source: str, now_ms: int) -> tuple[bool, list]:
        """Add a peer or refresh its addresses: (new?, effects). A known peer keeps its source
        unless it becomes a bootstrap peer."""
        old = self.entries.get(peer)
        if old is None:
            entry = PeerEntry(peer, tuple(addrs)[:MAX_ADDRS], source, now_ms)
            self.entries[peer] = entry
            effects = [entry.effect()]
            if source != "bootstrap":
                effects += self._trim()
            return True, effects
        merged = tuple(dict.fromkeys(tuple(addrs) + old.addrs))[:MAX_ADDRS]
        source = "bootstrap" if source == "bootstrap" else old.source
        if merged == old.addrs and source == old.source:
            return False, []
        retry = 0 if set(addrs) - set(old.addrs) else old.next_dial_ms
        entry = self.entries[peer] = replace(old, addrs=merged, source=source, next_dial_ms=retry)
        return False, [entry.effect()]

    def connected(self, peer: str, now_ms: int) -> list:
        old = self.entries.get(peer)
        if old is None:
            return []
        link_back = old.failures > 0
        entry = self.entries[peer] = replace(old, last_connected_ms=now_ms, failures=0, next_dial_ms=0)
        effects = [entry.effect()]
        if link_back:  # this connection ends a run of failures: the others may be reachable again too
            for other in list(self.entries.values()):
                if other.source == "bootstrap" and other.failures and other.next_dial_ms > now_ms:
                    other = self.entries[other.peer] = replace(other, next_dial_ms=now_ms)
                    effects.append(other.effect())
        return effects

    def dial_failed(self, peer: str, now_ms: int) -> tuple[int | None, list]:
        """(ms until the next attempt or None if the peer is forgotten, effects)."""
        old = self.entries.get(peer)
        if old is None:
            return backoff_ms(1), []
        if old.source != "bootstrap" and now_ms - max(old.last_connected_ms, old.first_seen_ms) > FORGET_AFTER_MS:
            del self.entries[peer]
            return None, [ForgetPeer(peer)]
        wait = backoff_ms(old.failures + 1, old.source == "bootstrap")
        entry = self.entries[peer] = replace(old, failures=old.failures + 1, next_dial_ms=now_ms + wait)
        return wait, [entry.effect()]

    def due(self, now_ms: int) -> list[PeerEntry]:
        """Peers whose backoff has passed, those seen most recently first."""
        return sorted((e for e in self.entries.values() if e.next_dial_ms <= now_ms),
                      key=lambda e: -e.last_connected_ms)

    def next_due_ms(self, skip) -> int | None:
        return min((e.next_dial_ms for e in self.entries.values() if e.peer not in skip and e.addrs), default=None)

    def _trim(self) -> list:
        chance = [e for e in self.entries.values() if e.source != "bootstrap"]
        if len(chance) <= MAX_REMEMBERED:
            return []
        chance.sort(key=lambda e: -max(e.last_connected_ms, e.first_seen_ms))
        out = []
        for entry in chance[MAX_REMEMBERED:]:
            del self.entries[entry.peer]
            out.append(ForgetPeer(entry.peer))
        return out
