"""The peers table: whom the daemon has met and when to dial them again (docs/protocol.md §6)."""

from __future__ import annotations

import json
import sqlite3
from typing import NamedTuple

MIN_BACKOFF_MS = 1_000
MAX_BACKOFF_MS = 5 * 60_000
FORGET_AFTER_MS = 30 * 24 * 3600_000
"""A peer found by mDNS or that dialled us, unreachable this long since we last saw it, is
forgotten (bootstrap peers never are: the operator listed them)."""


def backoff_ms(failures: int) -> int:
    """Wait after ``failures`` failed dials in a row: 1 s, 2 s, 4 s … capped at five minutes."""
    return min(MIN_BACKOFF_MS << min(max(failures - 1, 0), 20), MAX_BACKOFF_MS)


class PeerRow(NamedTuple):
    peer_id: str
    addrs: list[str]
    source: str
    first_seen_ms: int
    last_connected_ms: int
    failures: int
    next_dial_ms: int


MAX_REMEMBERED = 1000
"""Peers met by chance (mDNS, inbound) kept for redialling; beyond it the least recently seen go."""


class PeerStore:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def remember(self, peer_id: str, addrs: list[str], source: str, now_ms: int) -> bool:
        """Add a peer or refresh its addresses; True if it is new. A known peer keeps its source
        unless it becomes a bootstrap peer, and a changed address makes it dialable at once."""
        row = self.get(peer_id)
        if row is None:
            self._conn.execute(
                "INSERT INTO peers (peer_id, addrs, source, first_seen_ms) VALUES (?, ?, ?, ?)",
                (peer_id, json.dumps(addrs), source, now_ms))
            if source != "bootstrap":  # throwaway peer ids must not grow the table without limit
                self._conn.execute(
                    "DELETE FROM peers WHERE source != 'bootstrap' AND peer_id NOT IN (SELECT peer_id FROM peers"
                    " WHERE source != 'bootstrap' ORDER BY max(last_connected_ms, first_seen_ms) DESC LIMIT ?)",
                    (MAX_REMEMBERED,))
            return True
        merged = list(dict.fromkeys(addrs + row.addrs))[:8]
        source = "bootstrap" if source == "bootstrap" else row.source
        if merged != row.addrs or source != row.source:
            retry = 0 if set(addrs) - set(row.addrs) else row.next_dial_ms
            self._conn.execute("UPDATE peers SET addrs = ?, source = ?, next_dial_ms = ? WHERE peer_id = ?",
                               (json.dumps(merged), source, retry, peer_id))
        return False

    def connected(self, peer_id: str, now_ms: int) -> None:
        self._conn.execute("UPDATE peers SET last_connected_ms = ?, failures = 0, next_dial_ms = 0 WHERE peer_id = ?",
                           (now_ms, peer_id))

    def dial_failed(self, peer_id: str, now_ms: int) -> int | None:
        """Record a failed dial; returns the milliseconds until the next attempt, or None if the
        peer was forgotten (see FORGET_AFTER_MS)."""
        row = self.get(peer_id)
        if row and row.source != "bootstrap" and now_ms - max(row.last_connected_ms, row.first_seen_ms) > FORGET_AFTER_MS:
            self._conn.execute("DELETE FROM peers WHERE peer_id = ?", (peer_id,))
            return None
        failures = (row.failures if row else 0) + 1
        wait = backoff_ms(failures)
        self._conn.execute("UPDATE peers SET failures = ?, next_dial_ms = ? WHERE peer_id = ?",
                           (failures, now_ms + wait, peer_id))
        return wait

    def save(self, row) -> None:
        """Write what the node service knows of a peer (node/service/peers.py keeps the policy:
        backoff, forgetting, trimming; this table only keeps it across restarts)."""
        self._conn.execute(
            "INSERT INTO peers (peer_id, addrs, source, first_seen_ms, last_connected_ms, failures, next_dial_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(peer_id) DO UPDATE SET addrs = excluded.addrs,"
            " source = excluded.source, last_connected_ms = excluded.last_connected_ms,"
            " failures = excluded.failures, next_dial_ms = excluded.next_dial_ms",
            (row.peer, json.dumps(list(row.addrs)), row.source, row.first_seen_ms, row.last_connected_ms,
             row.failures, row.next_dial_ms))

    def forget(self, peer_id: str) -> None:
        self._conn.execute("DELETE FROM peers WHERE peer_id = ?", (peer_id,))

    def due(self, now_ms: int) -> list[PeerRow]:
        """Peers whose backoff has passed, those seen most recently first."""
        rows = self._conn.execute("SELECT * FROM peers WHERE next_dial_ms <= ? ORDER BY last_connected_ms DESC",
                                  (now_ms,)).fetchall()
        return [self._row(r) for r in rows]

    def get(self, peer_id: str) -> PeerRow | None:
        row = self._conn.execute("SELECT * FROM peers WHERE peer_id = ?", (peer_id,)).fetchone()
        return self._row(row) if row else None

    def all(self) -> list[PeerRow]:
        return [self._row(r) for r in self._conn.execute("SELECT * FROM peers ORDER BY last_connected_ms DESC")]

    @staticmethod
    def _row(row) -> PeerRow:
        return PeerRow(row[0], json.loads(row[1]), *row[2:])
