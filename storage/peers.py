"""The peers table: whom the daemon has met and when to dial them again (docs/protocol.md §6).

The policy — backoff, forgetting, the bound on peers met by chance — is the node service's
(node/service/peers.py); this table keeps what it decided across restarts."""

from __future__ import annotations

import json
import sqlite3
from typing import NamedTuple


class PeerRow(NamedTuple):
    peer_id: str
    addrs: list[str]
    source: str
    first_seen_ms: int
    last_connected_ms: int
    failures: int
    next_dial_ms: int


class PeerStore:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

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

    def get(self, peer_id: str) -> PeerRow | None:
        row = self._conn.execute("SELECT * FROM peers WHERE peer_id = ?", (peer_id,)).fetchone()
        return self._row(row) if row else None

    def all(self) -> list[PeerRow]:
        return [self._row(r) for r in self._conn.execute("SELECT * FROM peers ORDER BY last_connected_ms DESC")]

    @staticmethod
    def _row(row) -> PeerRow:
        return PeerRow(row[0], json.loads(row[1]), *row[2:])
