"""Whom this node keeps away, and for how long: a peer that breaks a protocol rule is cut off,
and each further offence doubles the time (1 minute, 2, 4 … at most a day).

Theory of operation: pure bookkeeping, time passed in by the caller (milliseconds). The daemon
calls :meth:`Penalties.strike` when a peer breaks a rule (a sync frame over its limit, too many
rounds, an invalid record in a sync), disconnects it, refuses its connections and does not dial
it while :meth:`Penalties.cut_off` answers; `fabnode peers` shows the reason and time left.
Offences are forgotten a day after the last one, so a peer that was wrong once is not punished
forever. Entries are bounded (:data:`MAX_TRACKED`): the oldest are forgotten first, so throwaway
peer ids cannot grow this table without limit.
"""

from __future__ import annotations

from dataclasses import dataclass

FIRST_CUT_MS = 60_000
LONGEST_CUT_MS = 24 * 3600 * 1000
FORGIVE_AFTER_MS = 24 * 3600 * 1000
MAX_TRACKED = 10_000


@dataclass
class Offence:
    strikes: int
    until_ms: int
    reason: str
    last_ms: int


class Penalties:
    def __init__(self) -> None:
        self._by_peer: dict[str, Offence] = {}

    def strike(self, peer: str, reason: str, now_ms: int) -> int:
        """Record an offence; returns how long the peer is now kept away (ms)."""
        old = self._by_peer.pop(peer, None)
        strikes = 1 if old is None or now_ms - old.last_ms > FORGIVE_AFTER_MS else old.strikes + 1
        wait = min(FIRST_CUT_MS << min(strikes - 1, 20), LONGEST_CUT_MS)
        self._by_peer[peer] = Offence(strikes, now_ms + wait, reason, now_ms)
        while len(self._by_peer) > MAX_TRACKED:
            del self._by_peer[next(iter(self._by_peer))]
        return wait

    def cut_off(self, peer: str, now_ms: int) -> Offence | None:
        """The offence keeping ``peer`` away now, or None."""
        offence = self._by_peer.get(peer)
        return offence if offence is not None and offence.until_ms > now_ms else None

    def current(self, now_ms: int) -> dict[str, Offence]:
        return {p: o for p, o in self._by_peer.items() if o.until_ms > now_ms}
