"""The block store: immutable, content-addressed blocks and the pins that keep roots.

Blocks are only ever inserted (``INSERT OR IGNORE``: the same CID is the same bytes) and every
read re-hashes what it returns, so a damaged disk sector is reported as a damaged block, never
handed on. Writes happen inside :meth:`BlockStore.write_transaction`, so a whole ``add`` (its
blocks and its pin) appears at once or not at all.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from fabnode import interrupts
from fabnode.protocol.cid import block_matches, cid_str
from fabnode.protocol.errors import DamagedBlock, MissingBlock

from .db import Database


class Pin(NamedTuple):
    cid: bytes
    kind: str
    size: int
    files: int
    source: str
    added_ms: int


class BlockStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._conn = db.conn

    @contextlib.contextmanager
    def write_transaction(self, *, final: bool = False) -> Iterator[None]:
        """One IMMEDIATE transaction: takes the write lock up front so two writers queue
        instead of deadlocking on a read-to-write upgrade.

        On any exception (Ctrl-C included) it rolls back, unless SQLite already has: after
        SQLITE_FULL, SQLITE_IOERR and the like SQLite ends the transaction itself, and a second
        ROLLBACK would hide the real error behind "no transaction is active". ``final`` marks a
        command's last transaction: see :func:`fabnode.interrupts.point_of_no_return`.
        """
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            if final:
                interrupts.point_of_no_return()
            try:
                self._conn.execute("COMMIT")
            except BaseException:
                if final:
                    interrupts.commit_failed()
                raise
        except BaseException:
            if self._conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # the first error is the one to report
                    self._conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the connection; the last one to close copies the WAL into the main file."""
        self.db.close()

    def put(self, cid: bytes, data: bytes) -> None:
        """Store a block whose CID the caller computed from ``data`` (or verified)."""
        self._conn.execute("INSERT OR IGNORE INTO blocks (cid, size, data) VALUES (?, ?, ?)", (cid, len(data), data))

    def put_many(self, blocks: Iterable[tuple[bytes, bytes]]) -> None:
        """:meth:`put` for many (cid, data) pairs in one statement run (a fetch's batch)."""
        self._conn.executemany("INSERT OR IGNORE INTO blocks (cid, size, data) VALUES (?, ?, ?)",
                               ((cid, len(data), data) for cid, data in blocks))

    def get_unverified(self, cid: bytes) -> bytes | None:
        row = self._conn.execute("SELECT data FROM blocks WHERE cid = ?", (cid,)).fetchone()
        return None if row is None else row[0]

    def get(self, cid: bytes) -> bytes:
        """The block's bytes, re-hashed against its CID; raises if missing or damaged."""
        data = self.get_unverified(cid)
        if data is None:
            raise MissingBlock(f"block {cid_str(cid)} is not in this store")
        if not block_matches(cid, data):
            raise DamagedBlock(f"block {cid_str(cid)} is damaged: its bytes no longer hash to its CID (run 'fabnode fsck')")
        return data

    def size(self, cid: bytes) -> int | None:
        """A stored block's length, without reading it (None if absent)."""
        row = self.db.conn.execute("SELECT size FROM blocks WHERE cid = ?", (cid,)).fetchone()
        return None if row is None else row[0]

    def total_size(self, cids: Iterable[bytes]) -> int:
        """Bytes of the stored blocks among ``cids`` (absent ones count 0), read from the index."""
        cids = list(cids)
        return sum(self._conn.execute(
            f"SELECT coalesce(sum(size), 0) FROM blocks WHERE cid IN ({','.join('?' * len(chunk))})", chunk
        ).fetchone()[0] for chunk in (cids[i:i + 500] for i in range(0, len(cids), 500)))

    def has(self, cid: bytes) -> bool:
        return self._conn.execute("SELECT 1 FROM blocks WHERE cid = ?", (cid,)).fetchone() is not None

    def missing(self, cids: Iterable[bytes]) -> list[bytes]:
        """The CIDs of ``cids`` this store lacks, in the order given (duplicates kept once)."""
        out: list[bytes] = []
        seen: set[bytes] = set()
        for cid in cids:
            if cid not in seen:
                seen.add(cid)
                if not self.has(cid):
                    out.append(cid)
        return out

    def count(self) -> tuple[int, int]:
        """(number of blocks, total bytes)."""
        n, total = self._conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM blocks").fetchone()
        return n, total

    def iter_all(self) -> Iterator[tuple[bytes, bytes]]:
        """Every stored block as (cid, data), unverified, one row in memory at a time."""
        cursor = self._conn.execute("SELECT cid, data FROM blocks ORDER BY rowid")
        while True:
            rows = cursor.fetchmany(16)
            if not rows:
                return
            yield from rows

    # ---- pins

    def pin(self, pin: Pin, *, replace: bool = True) -> None:
        """Keep a root; ``replace=False`` leaves an existing pin (and its time) untouched."""
        self._conn.execute(
            f"INSERT OR {'REPLACE' if replace else 'IGNORE'} INTO pins (cid, kind, size, files, source, added_ms) VALUES (?, ?, ?, ?, ?, ?)",
            (pin.cid, pin.kind, pin.size, pin.files, pin.source, pin.added_ms),
        )

    def pins(self) -> list[Pin]:
        rows = self._conn.execute("SELECT cid, kind, size, files, source, added_ms FROM pins ORDER BY added_ms, cid")
        return [Pin(*row) for row in rows]
