"""Garbage collection of blocks: mark what pins and leases reach, then sweep the rest in batches.

Theory of operation
-------------------
**Mark** (:func:`mark`) runs in one read transaction, so it sees one snapshot of the store: it
notes the highest block rowid, then walks the DAG of every pin and of every lease touched less
than :data:`LEASE_KEEP_MS` ago (a fetch in progress or interrupted recently, a `get` writing files
out), reading only dag-pb nodes; a walk stops at a missing block (a partial DAG). The marked set
is the CIDs reached (present or not).

**Sweep** (:func:`sweep`) deletes unmarked blocks among those that existed when the mark
started (rowid <= that highest rowid), in batches; each batch is one IMMEDIATE transaction, so a
SIGKILL at any moment leaves the store as it was before some batch: sound, nothing pinned lost.
Writers (``add``, ``import``, a fetch's batches, the daemon) run between batches. Inside each
batch, before deleting, the sweep catches up with what committed since the mark (it holds the
write lock, so nothing else commits meanwhile):

* pins and live leases whose roots were not walked yet are walked (a concurrent ``add`` that
  reused an old unreferenced block: ``INSERT OR IGNORE`` keeps the old row and its old rowid);
* dag-pb blocks written since the mark (rowid above it) have their links followed: a fetch in
  progress that stores a parent linking to an old block keeps that block.

So a block is deleted only if, at the moment of its batch's commit, no pin and no live lease
reaches it. New blocks are never candidates: a row inserted after the mark gets a rowid above
every row still present, and the sweep goes up in rowid order, so the rows not yet swept (up
to the mark's highest rowid) keep new rowids above that bound.

Nb. two gc runs at once would break that last argument: the caller holds a lock (node/local/disk.py).
Since issue 20 a row's bytes live in a pack file: the sweep deletes rows, and the pack bytes they
pointed at are reclaimed afterwards by compaction (storage/packs.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from fabnode.protocol.cid import DAG_PB, cid_codec, cid_str
from fabnode.protocol.dag import DagTooDeep, child_links, walk
from fabnode.protocol.errors import FabnodeError, InvalidBlock

from .blocks import BlockStore

LEASE_KEEP_MS = 7 * 24 * 3600 * 1000
"""A lease protects its root's blocks this long after it was last touched: the leftovers of a fetch
interrupted less than a week ago are kept, so it resumes when the link is back."""
BATCH_ROWS = 2000
"""Rows looked at per sweep transaction (only their CIDs are read)."""
BATCH_BYTES = 64 << 20
"""Bytes deleted per sweep transaction at most: each holds the write lock only briefly."""
DAG_PB_PREFIX = bytes([1, DAG_PB])
"""The first two bytes of a CIDv1 with the dag-pb codec."""


@dataclass
class Marked:
    """What the mark phase found: the reachable CIDs, the roots walked, and the snapshot's bounds."""

    cids: set[bytes] = field(default_factory=set)
    roots: set[bytes] = field(default_factory=set)
    max_rowid: int = 0
    """The highest block rowid when the mark started: only rows up to it are swept."""
    checked_rowid: int = 0
    """Blocks above the mark's bound whose links the sweep already followed."""
    lease_cutoff_ms: int = 0


@dataclass
class SweepResult:
    blocks: int = 0
    bytes: int = 0
    batches: int = 0


def live_leases(conn: sqlite3.Connection, cutoff_ms: int) -> list[bytes]:
    return [r[0] for r in conn.execute("SELECT DISTINCT root FROM leases WHERE touched_ms >= ?", (cutoff_ms,))]


def _walk_into(store: BlockStore, marked: Marked, root: bytes, *, pinned: bool) -> None:
    """Mark ``root``'s DAG as far as it is here. A pinned DAG whose node does not decode stops gc
    (its children would be lost with it); a lease's partial or hostile DAG is marked as far as it goes."""
    try:
        for visit in walk(store.get_unverified, root, skip=marked.cids, has_block=lambda _cid: True):
            marked.cids.add(visit.cid)
    except (DagTooDeep, InvalidBlock) as exc:
        if pinned:
            raise FabnodeError(f"gc stopped before deleting anything more: pinned DAG {cid_str(root)} is unreadable "
                               f"({exc}); run 'fabnode fsck'") from None
    marked.roots.add(root)


def pinned_roots(conn: sqlite3.Connection) -> list[bytes]:
    return [r[0] for r in conn.execute("SELECT cid FROM pins ORDER BY cid")]


def mark(store: BlockStore, now_ms: int, *, roots: Iterable[bytes] | None = None) -> Marked:
    """Walk every pin and live lease in one read snapshot (see the module docstring).
    ``roots`` replaces the pins (a test, or du asking "what if")."""
    conn = store.db.conn
    marked = Marked(lease_cutoff_ms=now_ms - LEASE_KEEP_MS)
    conn.execute("BEGIN")
    try:
        marked.max_rowid = conn.execute("SELECT coalesce(max(rowid), 0) FROM blocks").fetchone()[0]
        marked.checked_rowid = marked.max_rowid
        for root in pinned_roots(conn) if roots is None else roots:
            _walk_into(store, marked, root, pinned=True)
        for root in live_leases(conn, marked.lease_cutoff_ms):
            _walk_into(store, marked, root, pinned=False)
    finally:
        conn.execute("COMMIT")
    return marked


def _catch_up(store: BlockStore, marked: Marked) -> None:
    """Inside a sweep transaction: mark what pins, leases and blocks committed since the mark reach."""
    conn = store.db.conn
    for root in pinned_roots(conn):
        if root not in marked.roots:
            _walk_into(store, marked, root, pinned=True)
    for root in live_leases(conn, marked.lease_cutoff_ms):
        if root not in marked.roots:
            _walk_into(store, marked, root, pinned=False)
    top = conn.execute("SELECT coalesce(max(rowid), 0) FROM blocks").fetchone()[0]
    if top <= marked.checked_rowid:
        return
    rows = conn.execute("SELECT cid FROM blocks WHERE rowid > ? AND rowid <= ? AND substr(cid, 1, 2) = ?",
                        (marked.checked_rowid, top, DAG_PB_PREFIX)).fetchall()
    for (cid,) in rows:
        data = store.get_unverified(cid)
        try:
            links = child_links(cid, data) if data is not None else []
        except InvalidBlock:
            continue
        for child, _name in links:
            if child not in marked.cids:
                _walk_into(store, marked, child, pinned=False)
    marked.checked_rowid = top


def _candidates(conn: sqlite3.Connection, marked: Marked, after: int) -> tuple[list[tuple[int, bytes, int]], int]:
    """Up to :data:`BATCH_ROWS` rows after rowid ``after`` (within the mark's bound): the unmarked
    ones, and the last rowid looked at (0 when there are none left)."""
    rows = conn.execute("SELECT rowid, cid, size FROM blocks WHERE rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?",
                        (after, marked.max_rowid, BATCH_ROWS)).fetchall()
    if not rows:
        return [], 0
    return [r for r in rows if r[1] not in marked.cids], rows[-1][0]


def sweep(store: BlockStore, marked: Marked, *, only: Iterable[bytes] | None = None,
          progress: Callable[[int], None] = lambda n: None) -> SweepResult:
    """Delete the unmarked blocks (of ``only``, if given) in batches, each one transaction that
    first catches up with what committed since the mark."""
    result = SweepResult()
    for batch in _batches(store, marked, only):
        with store.write_transaction():
            _catch_up(store, marked)
            doomed = [(rowid, size) for rowid, cid, size in batch if cid not in marked.cids]
            for start in range(0, len(doomed), 500):
                part = doomed[start:start + 500]
                store.db.conn.execute(f"DELETE FROM blocks WHERE rowid IN ({','.join('?' * len(part))})",
                                      [rowid for rowid, _ in part])
        result.batches += 1
        result.blocks += len(doomed)
        freed = sum(size for _, size in doomed)
        result.bytes += freed
        progress(freed)
    return result


def _batches(store: BlockStore, marked: Marked, only: Iterable[bytes] | None) -> Iterator[list[tuple[int, bytes, int]]]:
    """Candidate rows in groups of at most :data:`BATCH_BYTES` (a block bigger than that alone)."""
    conn = store.db.conn
    if only is not None:
        rows = []
        for cid in only:
            row = conn.execute("SELECT rowid, cid, size FROM blocks WHERE cid = ? AND rowid <= ?",
                               (cid, marked.max_rowid)).fetchone()
            if row is not None and cid not in marked.cids:
                rows.append(row)
        rows.sort()
        yield from _by_bytes(rows)
        return
    after = 0
    while True:
        rows, last = _candidates(conn, marked, after)
        if not last:
            return
        after = last
        yield from _by_bytes(rows)


def _by_bytes(rows: list[tuple[int, bytes, int]]) -> Iterator[list[tuple[int, bytes, int]]]:
    batch: list[tuple[int, bytes, int]] = []
    size = 0
    for row in rows:
        if batch and size + row[2] > BATCH_BYTES:
            yield batch
            batch, size = [], 0
        batch.append(row)
        size += row[2]
    if batch:
        yield batch


def drop_expired_leases(store: BlockStore, cutoff_ms: int) -> int:
    with store.write_transaction():
        return store.db.conn.execute("DELETE FROM leases WHERE touched_ms < ?", (cutoff_ms,)).rowcount


# ------------------------------------------------------------------ leases


def take_lease(store: BlockStore, root: bytes, what: str, now_ms: int) -> int:
    """Protect ``root``'s blocks from gc (one transaction, committed before the caller reads
    anything of the DAG); returns the lease's id for :func:`end_lease`."""
    with store.write_transaction():
        return store.db.conn.execute("INSERT INTO leases (root, what, touched_ms) VALUES (?, ?, ?)",
                                     (root, what, now_ms)).lastrowid


def end_lease(store: BlockStore, lease_id: int) -> None:
    with store.write_transaction():
        store.db.conn.execute("DELETE FROM leases WHERE id = ?", (lease_id,))


def touch_lease(store: BlockStore, lease_id: int, now_ms: int) -> None:
    """Keep the leftovers of an interrupted operation for :data:`LEASE_KEEP_MS` from now."""
    with store.write_transaction():
        store.db.conn.execute("UPDATE leases SET touched_ms = ? WHERE id = ?", (now_ms, lease_id))
