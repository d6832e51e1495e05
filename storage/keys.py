"""The chains of keys, stored (issue 17): key records, first signatures, refused ids, the cached Identities.

The resolver (protocol/keys.py) is pure and computes from the whole set; this module keeps what
it needs in tables (migration 016) so that asking "does this record's author stand?" costs a
dictionary lookup: :meth:`KeyIndex.identities` recomputes only when ``key_state.version`` moved.

A record whose author's chain refuses it (dated after its key's rotation or revocation cutoff) is
not stored: its id goes to ``key_refused``, which sync counts as held, so peers do not resend it.
When a newly arrived succession or revocation refuses records already stored, :meth:`settle`
moves them there too, so every node ends with the same records whatever the arrival order. A
refusal that a later record lifts (rare: a succession that turns out to rotate to a used key) is
undone by deleting its ``key_refused`` row: the next sync brings the record back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from fabnode.protocol.keys import NEVER, ChainRefused, Identities, KeyRecord, resolve

KEY_TYPES = ("succession", "revocation", "member")
REVOKED_LATER = "signed by a key later revoked"
DOUBTFUL = "doubtful"


class KeyIndex:
    """The key tables of one connection, and the Identities they resolve to (cached)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._cached: tuple[int, Identities, frozenset[str]] | None = None

    # ------------------------------------------------------------ reading

    def version(self) -> int:
        return self._conn.execute("SELECT version FROM key_state WHERE id = 1").fetchone()[0]

    def key_records(self) -> list[KeyRecord]:
        out = []
        for cid, rtype, author, ts, lab, revoked, nxt, role, cutoff, recovery in self._conn.execute(
                "SELECT cid, type, author, ts, lab, revoked, next, role, cutoff, recovery FROM key_records"):
            if rtype == "lab":
                body = {"recovery": recovery}
            elif rtype == "succession":
                body = {"next": nxt}
            elif rtype == "revocation":
                body = {"identity": lab, "revoked": revoked, "cutoff": cutoff, "next": nxt}
                if recovery is not None:
                    body["recovery"] = recovery
            else:
                body = {"lab": lab, "member": nxt, "role": role}
            out.append(KeyRecord(cid, rtype, author, ts, body))
        return out

    def first_signed(self) -> dict[str, int]:
        """The earliest ts signed by each key some succession or revocation rotates *to*."""
        return dict(self._conn.execute(
            "SELECT author, first_ts FROM key_authors WHERE author IN (SELECT next FROM key_records "
            "WHERE type IN ('succession', 'revocation'))"))

    def identities(self) -> Identities:
        """The resolved chains, recomputed only after the key tables changed."""
        return self._state()[0]

    def _state(self) -> tuple[Identities, frozenset[str]]:
        """(Identities, the keys some succession or revocation rotates to), cached on the version."""
        version = self.version()
        if self._cached is None or self._cached[0] != version:
            rows = self.key_records()
            nexts = frozenset(r.body["next"] for r in rows if r.type in ("succession", "revocation"))
            self._cached = (version, resolve(rows, self.first_signed()), nexts)
        return self._cached[1], self._cached[2]

    def refusal(self, author: str, ts: int) -> str | None:
        """Why a record by ``author`` at ``ts`` cannot stand (one line), or None."""
        standing = self.identities().standing(author, ts)
        return standing.reason if standing.kind == "refused" else None

    def is_refused(self, cid: bytes) -> bool:
        return self._conn.execute("SELECT 1 FROM key_refused WHERE cid = ?", (cid,)).fetchone() is not None

    def refused(self) -> list[tuple[bytes, str, int, str]]:
        """(id, author, ts, reason) of every record a chain refuses here, by id."""
        return [tuple(r) for r in self._conn.execute("SELECT cid, author, ts, reason FROM key_refused ORDER BY cid")]

    def mark(self, author: str, ts: int, received_ms: int) -> str | None:
        """For a record covered by a revocation: "signed by a key later revoked" if this node had
        it before it learned of the revocation, "doubtful" if it came after; else None."""
        standing = self.identities().standing(author, ts)
        if standing.kind != "revoked":
            return None
        row = self._conn.execute("SELECT received_ms FROM records WHERE cid = ?", (standing.revocation,)).fetchone()
        learned = row[0] if row else NEVER
        return REVOKED_LATER if received_ms < learned else DOUBTFUL

    # ------------------------------------------------------------ writing (inside the caller's transaction)

    def admit(self, record, now_ms: int) -> bool:
        """At ingest: remember that the author signed something dated ``record.ts`` (even if it
        is refused: a key that signed anything cannot be rotated to later), then refuse the record
        (remembered in ``key_refused``, :class:`ChainRefused` raised) if its chain refuses it.

        Key records are never refused here: whether they stand depends on the whole set, which
        the resolver decides (they are stored, relayed and offered so that every node sees it).
        Returns True when the record changed the chains (its author, rotated to by a succession,
        turns out to have signed earlier): the caller settles them."""
        lowered = self._conn.execute(
            "INSERT INTO key_authors (author, first_ts) VALUES (?, ?) ON CONFLICT (author) DO UPDATE"
            " SET first_ts = excluded.first_ts WHERE excluded.first_ts < key_authors.first_ts",
            (record.author, record.ts)).rowcount
        if record.type in KEY_TYPES or record.type == "lab":  # no resolving here: a batch settles once
            if lowered and self._conn.execute("SELECT 1 FROM key_records WHERE next = ? LIMIT 1",
                                              (record.author,)).fetchone():
                self._bump()
                return True
            return False
        ids, nexts = self._state()
        changed = bool(lowered) and record.author in nexts
        if changed:
            self._bump()
            ids = self.identities()
        standing = ids.standing(record.author, record.ts)
        if standing.kind == "refused":
            self.refuse(record.cid, record.author, record.ts, standing.reason, now_ms)
            raise ChainRefused(f"record refused: {standing.reason}")
        return changed

    def refuse(self, cid: bytes, author: str, ts: int, reason: str, now_ms: int) -> None:
        self._conn.execute("INSERT OR IGNORE INTO key_refused (cid, author, ts, reason, refused_ms)"
                           " VALUES (?, ?, ?, ?, ?)", (cid, author, ts, reason, now_ms))

    def add(self, record) -> bool:
        """Index a key record (a lab record only if it commits a recovery key); True if it
        changes the resolver's input."""
        body = record.body
        if record.type == "lab":
            recovery = body.get("recovery")
            if not (isinstance(recovery, bytes) and len(recovery) == 32):
                return False
            row = (None, None, None, None, None, recovery)
        elif record.type == "succession":
            row = (None, None, body["next"], None, None, None)
        elif record.type == "revocation":
            row = (body["identity"], body["revoked"], body["next"], None, body["cutoff"], body.get("recovery"))
        elif record.type == "member":
            row = (body["lab"], None, body["member"], body["role"], None, None)
        else:
            return False
        self._conn.execute("INSERT OR IGNORE INTO key_records (cid, type, author, ts, lab, revoked, next, role, cutoff,"
                           " recovery) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (record.cid, record.type, record.author, record.ts, *row))
        self._bump()
        return True

    def forget(self, cid: bytes) -> None:
        """A key record left the store (evicted over the strangers' quota)."""
        if self._conn.execute("DELETE FROM key_records WHERE cid = ?", (cid,)).rowcount:
            self._bump()

    def _bump(self) -> None:
        self._conn.execute("UPDATE key_state SET version = version + 1 WHERE id = 1")

    def settle(self, drop: Callable[[bytes], None], now_ms: int) -> tuple[int, int]:
        """Make the stored records agree with the chains: move records the chains now refuse to
        ``key_refused`` (``drop`` removes one from the records and their indexes), and forget
        refusals that no longer hold. Returns (refused now, refusals lifted)."""
        ids = self.identities()
        limits = ids.refusal_limits()
        refused = 0
        for author, limit in sorted(limits.items()):
            rows = self._conn.execute(
                "SELECT cid, ts FROM records WHERE author = ? AND ts > ? AND type NOT IN"
                " ('lab', 'succession', 'revocation', 'member')", (author, limit)).fetchall()
            for cid, ts in rows:
                self.refuse(cid, author, ts, ids.standing(author, ts).reason, now_ms)
                drop(cid)
                refused += 1
        lifted = [cid for cid, author, ts in self._conn.execute("SELECT cid, author, ts FROM key_refused")
                  if ts <= limits.get(author, NEVER)]
        self._conn.executemany("DELETE FROM key_refused WHERE cid = ?", [(c,) for c in lifted])
        return refused, len(lifted)
