"""Pack maintenance: moving a pre-014 home's inline blocks into packs, compacting packs after gc's
sweep, and the pack-level facts fsck and du report.

Theory of operation
-------------------
Both :func:`move_inline_blocks` and :func:`compact` are a sequence of write transactions, each
bounded to :data:`BATCH_BYTES`. Each one appends the blocks it moves to a pack, makes the pack
durable (:meth:`PackWriter.make_durable`), and rewrites those blocks' rows to point at the new
copy, all before its COMMIT. A kill before the commit leaves the old rows (pointing at the old,
untouched copy) and a garbage tail the next writer cuts off; a kill after it leaves the new rows
(pointing at durable bytes). So either run resumes where the last commit left it.

A compacted pack's ``packs`` row is deleted in the transaction that moves its last live block;
its file is unlinked after that commit. A kill in between leaves a file with no row, which
:func:`remove_orphan_packs` unlinks under the write lock (no writer is mid-transaction then, and
``AUTOINCREMENT`` never hands a deleted pack's number out again).

Compaction copies into a *fresh* pack (never into one it may compact), and only packs other than
the newest are compacted by default: the newest is where writes go next.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from .blocks import BlockStore, pack_path

BATCH_BYTES = int(os.environ.get("FABNODE_TEST_PACK_BATCH_BYTES", 64 << 20))
"""Bytes moved per transaction at most: each holds the write lock only briefly. (The environment
variable is for tests only: small batches, so a small store takes many, for the SIGKILL tests.)"""
COMPACT_BELOW = 0.5
"""``gc`` compacts a pack once less than this share of its bytes is still live."""
PACK_NAME = re.compile(r"^(\d{6,})\.pack$")


@dataclass
class PackUse:
    """One pack: its committed length, the bytes its live rows use, and its file's length."""

    pack: int
    size: int
    live_bytes: int
    live_blocks: int
    file_bytes: int | None


@dataclass
class PackReport:
    packs: list[PackUse] = field(default_factory=list)
    orphan_files: list[str] = field(default_factory=list)
    """Pack files no ``packs`` row names (a compaction or a rolled-back write killed midway)."""

    @property
    def dead_bytes(self) -> int:
        """Committed bytes no row points at any more (gc's sweep freed them; compaction reclaims)."""
        return sum(p.size - p.live_bytes for p in self.packs)

    @property
    def tail_bytes(self) -> int:
        """Bytes past packs' committed ends (a rollback or a kill; cut off by the next write)."""
        return sum(max(0, (p.file_bytes or 0) - p.size) for p in self.packs)

    @property
    def file_bytes(self) -> int:
        return sum(p.file_bytes or 0 for p in self.packs)


def pack_report(store: BlockStore) -> PackReport:
    """What the packs hold, from one read of the index and a stat of each file."""
    report = PackReport()
    if store.pack_dir is None:
        return report
    conn = store.db.conn
    live = {pack: (n, total) for pack, n, total in
            conn.execute("SELECT pack, count(*), sum(size) FROM blocks WHERE pack IS NOT NULL GROUP BY pack")}
    known = set()
    for pack, size in conn.execute("SELECT id, size FROM packs ORDER BY id").fetchall():
        known.add(pack)
        try:
            file_bytes = pack_path(store.pack_dir, pack).stat().st_size
        except FileNotFoundError:
            file_bytes = None
        n, total = live.get(pack, (0, 0))
        report.packs.append(PackUse(pack, size, total, n, file_bytes))
    for name in _pack_files(store):
        match = PACK_NAME.match(name)
        if match is None or int(match[1]) not in known:
            report.orphan_files.append(name)
    return report


def _pack_files(store: BlockStore) -> list[str]:
    try:
        return sorted(os.listdir(store.pack_dir))
    except FileNotFoundError:
        return []


def remove_orphan_packs(store: BlockStore) -> int:
    """Unlink pack files no ``packs`` row names (under the write lock); returns bytes freed."""
    freed = 0
    with store.write_transaction():
        known = {row[0] for row in store.db.conn.execute("SELECT id FROM packs")}
        for name in _pack_files(store):
            match = PACK_NAME.match(name)
            if match is not None and int(match[1]) not in known:
                path = store.pack_dir / name
                with contextlib.suppress(FileNotFoundError):
                    freed += path.stat().st_size
                    path.unlink()
    return freed


def move_inline_blocks(store: BlockStore, *, batch_bytes: int | None = None,
                       progress: Callable[[int], None] = lambda n: None) -> int:
    """Move every block still held inline in SQLite (a home made before migration 014) into
    packs, one transaction per batch; resumable. Returns the number of blocks moved."""
    if store.pack_dir is None:
        return 0
    batch_bytes = batch_bytes or BATCH_BYTES
    conn = store.db.conn
    moved = 0
    while True:
        with store.write_transaction():
            rows = conn.execute("SELECT rowid, size FROM blocks WHERE pack IS NULL ORDER BY rowid LIMIT 2000").fetchall()
            if not rows:
                break
            writer = store.pack_writer()
            taken = 0
            for rowid, size in rows:
                if taken and taken + size > batch_bytes:
                    break
                (data,) = conn.execute("SELECT data FROM blocks WHERE rowid = ?", (rowid,)).fetchone()
                pack, offset = writer.append(data)
                conn.execute("UPDATE blocks SET data = x'', pack = ?, pack_offset = ? WHERE rowid = ?",
                             (pack, offset, rowid))
                taken += size
                moved += 1
        progress(taken)
    return moved


@dataclass
class CompactResult:
    packs_compacted: int = 0
    bytes_copied: int = 0
    bytes_freed: int = 0


def compact(store: BlockStore, *, below: float = COMPACT_BELOW, everything: bool = False,
            batch_bytes: int | None = None) -> CompactResult:
    """Rewrite the packs whose live share is under ``below`` (with ``everything``, every pack
    with a dead byte, the newest included): copy their live blocks to a fresh pack, move the
    rows, drop the pack's row, unlink its file. Orphan pack files are removed first."""
    result = CompactResult()
    if store.pack_dir is None:
        return result
    batch_bytes = batch_bytes or BATCH_BYTES
    result.bytes_freed += remove_orphan_packs(store)
    report = pack_report(store)
    newest = report.packs[-1].pack if report.packs else None
    doomed = [p for p in report.packs
              if p.size and p.live_bytes < p.size
              and (everything or (p.pack != newest and p.live_bytes < below * p.size))]
    conn = store.db.conn
    fresh = True  # the first copy goes to a new pack, newer than every pack compacted
    for use in doomed:
        while True:
            with store.write_transaction():
                still = conn.execute("SELECT size FROM packs WHERE id = ?", (use.pack,)).fetchone()
                if still is None:
                    break
                rows = conn.execute("SELECT rowid, pack_offset, size FROM blocks WHERE pack = ? ORDER BY pack_offset LIMIT 2000",
                                    (use.pack,)).fetchall()
                if rows:
                    writer = store.pack_writer(fresh=fresh)
                    fresh = False
                    taken = 0
                    for rowid, offset, size in rows:
                        if taken and taken + size > batch_bytes:
                            break
                        pack, new_offset = writer.append(store.read_packed(use.pack, offset, size))
                        conn.execute("UPDATE blocks SET pack = ?, pack_offset = ? WHERE rowid = ?", (pack, new_offset, rowid))
                        taken += size
                    result.bytes_copied += taken
                    last = conn.execute("SELECT 1 FROM blocks WHERE pack = ? LIMIT 1", (use.pack,)).fetchone() is None
                else:
                    last = True
                if last:
                    conn.execute("DELETE FROM packs WHERE id = ?", (use.pack,))
            if last:
                path = pack_path(store.pack_dir, use.pack)
                with contextlib.suppress(FileNotFoundError):
                    result.bytes_freed += path.stat().st_size
                    path.unlink()
                store.forget_reader(use.pack)
                result.packs_compacted += 1
                break
    return result
