"""Reachability and relaying, decided without the network (issue 21; docs/design.md, "Labs behind NAT").

Theory of operation
-------------------
**Reachability** (:class:`Reachability`). A node cannot see its NAT. It asks connected fabnode
peers ("helpers") to dial it back on a *fresh* TCP connection at the IP they observe it at and
the port it listens on (node/runtime/nat.py carries this out). Each helper's last answer is kept;
``confirmations`` helpers saying "I reached you" make the node *reachable* at that address; that
many saying "I could not" make it *behind NAT*; otherwise it is *unknown*. A reachable node
offers to relay; a node behind NAT reserves a slot on a reachable relay.

**The dial-back helper's budget** (:class:`DialbackBudget`): a helper dials only the asker's
own observed IP (never a host the asker names: no amplification), at most once per
:data:`DIALBACK_INTERVAL_MS` per peer and a few at once.

**The relay's gate** (:class:`RelayGate`). py-libp2p's relay enforces few of its limits,
so every reservation and circuit passes through fabnode's own limits first, cheapest check first:
a banned peer gets nothing; a peer asking for reservations faster than
``reservations_per_minute`` is refused; the total of reservations and of circuits is capped, and
so are the circuits one peer takes part in. While a circuit runs, each chunk is counted against
the circuit's bytes and seconds and against each end's hourly bytes (the per-peer budget); the
relay's total bandwidth is paced (a delay to wait before forwarding). Each refusal is one reason,
logged once per peer per minute by the caller.

**What `get` says about a link** (:func:`link_note`): a holder reached only through a relay is
named with the relay, why that is slow and who could seed it; a link hole punching made direct
is named as such. The fetch prints each note once.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

HOUR_MS = 3_600_000
MINUTE_MS = 60_000
DIALBACK_INTERVAL_MS = 10_000
DIALBACK_AT_ONCE = 4

REACHABLE, BEHIND_NAT, UNKNOWN = "reachable", "behind NAT", "unknown"


@dataclass
class Reachability:
    """What the helpers said about dialling this node back."""

    confirmations: int = 1
    answers: dict[str, tuple[bool, str]] = field(default_factory=dict)
    """helper peer id -> (reached, the address it dialled)."""

    def heard(self, helper: str, reached: bool, address: str) -> None:
        self.answers[helper] = (reached, address)

    def forget(self, helper: str) -> None:
        self.answers.pop(helper, None)

    def verdict(self) -> tuple[str, list[str]]:
        """(REACHABLE, addresses reached) | (BEHIND_NAT, addresses tried) | (UNKNOWN, [])."""
        yes = sorted({a for ok, a in self.answers.values() if ok})
        no = sorted({a for ok, a in self.answers.values() if not ok})
        if sum(ok for ok, _ in self.answers.values()) >= self.confirmations:
            return REACHABLE, yes
        if sum(not ok for ok, _ in self.answers.values()) >= self.confirmations:
            return BEHIND_NAT, no
        return UNKNOWN, []


@dataclass
class DialbackBudget:
    """Whether a helper dials a peer back now (see the theory above)."""

    interval_ms: int = DIALBACK_INTERVAL_MS
    at_once: int = DIALBACK_AT_ONCE
    last: dict[str, int] = field(default_factory=dict)
    running: int = 0

    def take(self, peer: str, now_ms: int) -> str | None:
        """None to dial back (and count it running), else why not."""
        if self.running >= self.at_once:
            return f"already dialling {self.running} peers back"
        at = self.last.get(peer)
        if at is not None and now_ms - at < self.interval_ms:
            return f"asked again within {self.interval_ms // 1000} s"
        if len(self.last) > 10_000:  # forget the oldest: a bounded table
            for old in sorted(self.last, key=self.last.get)[:5_000]:
                del self.last[old]
        self.last[peer] = now_ms
        self.running += 1
        return None

    def done(self) -> None:
        self.running = max(0, self.running - 1)


@dataclass(frozen=True)
class RelayLimits:
    """fabnode's relay limits (config.toml: ``limits.relay_*``); 0 is "none" only for the rate."""

    reservations: int = 32
    reservations_per_minute: int = 6
    circuits: int = 16
    circuits_per_peer: int = 4
    circuit_bytes: int = 64 << 20
    circuit_seconds: int = 600
    bytes_per_second: int = 4 << 20
    peer_bytes_per_hour: int = 256 << 20


@dataclass
class Circuit:
    source: str
    target: str
    opened_ms: int
    bytes: int = 0


class RelayGate:
    """The relay's limits as a state machine over reservations, circuits and bytes."""

    def __init__(self, limits: RelayLimits) -> None:
        self.limits = limits
        self.reservations: set[str] = set()
        self.asked: dict[str, deque[int]] = {}
        self.circuits: dict[int, Circuit] = {}
        self.peer_bytes: dict[str, deque[tuple[int, int]]] = {}
        """peer -> (ms, bytes) relayed for it in the last hour, oldest first."""
        self._peer_totals: dict[str, int] = {}
        """peer -> the sum of its window (kept, so a check is O(1) per chunk)."""
        self._next_id = 0
        self._paced_until_ms = 0.0
        self.relayed_bytes = 0
        self.refused = 0

    # ------------------------------------------------------------ reservations

    def reserve(self, peer: str, now_ms: int, banned: bool) -> str | None:
        """None to grant (or refresh) ``peer``'s reservation, else why it is refused."""
        if banned:
            return self._refuse("banned here")
        times = self.asked.setdefault(peer, deque())
        while times and times[0] <= now_ms - MINUTE_MS:
            times.popleft()
        if len(times) >= self.limits.reservations_per_minute:
            return self._refuse(f"over {self.limits.reservations_per_minute} reservation requests a minute")
        times.append(now_ms)
        if peer not in self.reservations and len(self.reservations) >= self.limits.reservations:
            return self._refuse(f"all {self.limits.reservations} reservation slots are taken")
        self.reservations.add(peer)
        if len(self.asked) > 10_000:
            for old in [p for p, t in self.asked.items() if not t][:5_000]:
                del self.asked[old]
        return None

    def release(self, peer: str) -> None:
        """``peer`` left: its reservation goes (it reserves again when it comes back)."""
        self.reservations.discard(peer)

    # ------------------------------------------------------------ circuits

    def open(self, source: str, target: str, now_ms: int, banned) -> tuple[int | None, str | None]:
        """(circuit id, None) to relay ``source`` to ``target``, else (None, why not).
        ``banned(peer)`` says whether a peer is banned here."""
        if banned(source):
            return None, self._refuse(f"{source} is banned here")
        if banned(target):
            return None, self._refuse(f"{target} is banned here")
        if target not in self.reservations:
            return None, self._refuse(f"{target} holds no reservation here")
        if len(self.circuits) >= self.limits.circuits:
            return None, self._refuse(f"all {self.limits.circuits} circuits are in use")
        for peer in (source, target):
            taking = sum(peer in (c.source, c.target) for c in self.circuits.values())
            if taking >= self.limits.circuits_per_peer:
                return None, self._refuse(f"{peer} already has {taking} circuits here")
            if self._hour_bytes(peer, now_ms) >= self.limits.peer_bytes_per_hour:
                return None, self._refuse(f"{peer} used its {self.limits.peer_bytes_per_hour >> 20} MiB "
                                          "of relaying this hour")
        self._next_id += 1
        self.circuits[self._next_id] = Circuit(source, target, now_ms)
        return self._next_id, None

    def close(self, circuit: int) -> None:
        self.circuits.pop(circuit, None)

    def carried(self, circuit: int, nbytes: int, now_ms: int) -> tuple[float, str | None]:
        """``nbytes`` are about to cross ``circuit``: (seconds to wait first, None) to go on,
        or (0, why the circuit must stop). Counts the bytes against every budget."""
        c = self.circuits.get(circuit)
        if c is None:
            return 0.0, "circuit closed"
        limits = self.limits
        if now_ms - c.opened_ms > limits.circuit_seconds * 1000:
            return 0.0, f"over the relay's {limits.circuit_seconds} s a circuit"
        if c.bytes + nbytes > limits.circuit_bytes:
            return 0.0, f"over the relay's {limits.circuit_bytes >> 20} MiB a circuit"
        for peer in (c.source, c.target):
            if self._hour_bytes(peer, now_ms) + nbytes > limits.peer_bytes_per_hour:
                return 0.0, f"{peer} is over its {limits.peer_bytes_per_hour >> 20} MiB of relaying an hour"
        c.bytes += nbytes
        self.relayed_bytes += nbytes
        for peer in (c.source, c.target):
            self.peer_bytes.setdefault(peer, deque()).append((now_ms, nbytes))
            self._peer_totals[peer] = self._peer_totals.get(peer, 0) + nbytes
        wait = 0.0
        if limits.bytes_per_second > 0:
            start = max(float(now_ms), self._paced_until_ms)
            self._paced_until_ms = start + nbytes * 1000 / limits.bytes_per_second
            wait = max(0.0, (start - now_ms) / 1000)
        return wait, None

    def _hour_bytes(self, peer: str, now_ms: int) -> int:
        window = self.peer_bytes.get(peer)
        if not window:
            return 0
        while window and window[0][0] <= now_ms - HOUR_MS:
            self._peer_totals[peer] -= window.popleft()[1]
        return self._peer_totals.get(peer, 0)

    def _refuse(self, reason: str) -> str:
        self.refused += 1
        return reason

    def status(self) -> dict:
        return {"reservations": len(self.reservations), "circuits": len(self.circuits),
                "relayed_bytes": self.relayed_bytes, "refused": self.refused}


def link_note(peer: str, relay: str, link: str | None, hole_punching: bool, limits: RelayLimits) -> str:
    """The note `get` prints about the link to ``peer`` (short ids), reached through ``relay``:
    "" when there is nothing to say (a direct link, or no relay involved)."""
    if not relay:
        return ""
    if link == "relayed":
        punching = "hole punching has not succeeded yet" if hole_punching else "hole punching is off here"
        return (f"{peer} is reached only through the relay {relay} ({punching}): slow, as a relay shares its "
                f"bandwidth among its peers and cuts a relayed connection past its limits (a fabnode relay by "
                f"default: {limits.circuit_bytes >> 20} MiB and {limits.circuit_seconds} s a connection, "
                f"{limits.bytes_per_second >> 20} MiB/s in all); a public node ({relay}) could seed it")
    if link == "hole-punched":
        return f"{peer} is now reached directly (hole punched through both NATs), no longer through the relay {relay}"
    return ""
