"""The block store: immutable, content-addressed blocks and the pins that keep roots.

Blocks are only ever inserted (the same CID is the same bytes) and every read re-hashes what it
returns, so a damaged disk sector is reported as a damaged block, never handed on. Writes happen
inside :meth:`BlockStore.write_transaction`, so a whole ``add`` (its blocks and its pin) appears
at once or not at all.

Theory of operation (issue 20: each byte written once)
------------------------------------------------------
A block's bytes live in an append-only *pack file* under the home (``packs/NNNNNN.pack``); the
``blocks`` table holds only its index row: cid, size, pack, offset (``data`` is empty). A row
whose ``pack`` is NULL still carries its bytes inline: a home made before migration 014 (moved
into packs by :func:`move_inline_blocks`, in batches) and in-memory stores (tests), which have no
home to put packs in. Both kinds of row are read the same way, so a half-moved store works.

* Only one transaction writes at a time (``BEGIN IMMEDIATE`` takes SQLite's write lock), and
  only a write transaction appends to a pack: the lock is the packs' lock too.
* ``packs.size`` is a pack's *committed* length. A write transaction opens its pack, cuts it to
  that length (what lies past it was left by a rollback or a kill: garbage no row points at),
  appends, and before COMMIT calls ``fdatasync`` on every pack it touched (and ``fsync`` on the
  folder when it made a pack file), then records the new lengths in the same transaction. So an
  index row is never committed before its bytes are durable, and one fsync per pack per
  transaction is all an ``add`` costs (SQLite's own WAL carries only the small rows).
* Pack bytes are never changed in place. Space comes back only through gc's compaction
  (storage/gc.py): live blocks are copied to a new pack, which is fsynced before their rows are
  moved in one transaction; the old pack's row goes in that transaction and its file is unlinked
  after the commit. A kill at any point leaves the old or the new copy complete and indexed; a
  pack file with no ``packs`` row is garbage, removed by the next gc.
* Readers open packs read-only and ``pread`` committed ranges only, so they run beside a writer.
  A pack unlinked by a compaction between a reader's SELECT and its open is looked up again.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from fabnode import interrupts
from fabnode.protocol.cid import block_matches, cid_str
from fabnode.protocol.errors import DamagedBlock, MissingBlock

from .db import Database

PACK_DIR = "packs"
"""The folder, beside the database file, that holds the pack files."""
PACK_TARGET_BYTES = int(os.environ.get("FABNODE_TEST_PACK_BYTES", 256 << 20))
"""A write moves on to a new pack once its pack holds this much: gc compacts a pack at a time,
so smaller packs free space sooner; larger ones mean fewer files and fsyncs. (The environment
variable is for tests only: small packs, so a small store has several.)"""
READERS_KEPT = 64
"""Pack files a store keeps open for reading."""
WRITEBACK_BYTES = int(os.environ.get("FABNODE_TEST_WRITEBACK_BYTES", 8 << 20))
"""Appended bytes after which a writer asks the kernel to start writing them to the disk (see
:func:`start_writeback`). (The environment variable is for tests only: a huge value leaves the
whole write to the commit's ``fdatasync``, long enough for a test to interrupt it there.)"""


def _sync_file_range():
    """libc's ``sync_file_range`` (Linux), or None where there is none."""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _sync_file_range()
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024
_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range out now, without waiting for it.

    Why: with gigabytes of free memory the kernel starts writing dirty pages only ~30 s later or
    at ``fdatasync``, so an add would first fill the page cache and then wait for the whole disk
    write at its commit. Started as we go, the disk writes while we read and hash, and the
    commit's ``fdatasync`` (which alone makes anything durable: this is only a hint, and its
    errors are left for ``fdatasync`` to report) waits for the last few megabytes only.
    """
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def pack_path(directory: Path, pack: int) -> Path:
    return directory / f"{pack:06d}.pack"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _OpenPack:
    __slots__ = ("id", "fd", "end", "committed", "new", "written_out")

    def __init__(self, pack: int, fd: int, end: int, new: bool) -> None:
        self.id, self.fd, self.end, self.committed, self.new = pack, fd, end, end, new
        self.written_out = end
        """Where the last :func:`start_writeback` ended."""


class PackWriter:
    """The packs one write transaction appends to (see the module docstring); made inside the
    transaction, so it holds SQLite's write lock and no other writer appends meanwhile."""

    def __init__(self, conn: sqlite3.Connection, directory: Path, *, fresh: bool = False,
                 target: int | None = None) -> None:
        """``fresh`` starts a new pack even when the last one has room (gc's compaction must
        never copy into a pack it may compact)."""
        self._conn = conn
        self.directory = directory
        self.target = PACK_TARGET_BYTES if target is None else target
        self._packs: list[_OpenPack] = []
        self._current: _OpenPack | None = None
        self._fresh = fresh

    @property
    def bytes_written(self) -> int:
        return sum(p.end - p.committed for p in self._packs)

    def _open(self) -> _OpenPack:
        # a new pack when asked, or when this transaction filled one (the index still holds that
        # pack's committed length: reopening it would cut what the transaction wrote)
        fresh = self._fresh or bool(self._packs)
        row = None if fresh else self._conn.execute("SELECT id, size FROM packs ORDER BY id DESC LIMIT 1").fetchone()
        fd = None
        if row is not None and row[1] < self.target:
            pack, size = row
            try:
                fd = os.open(pack_path(self.directory, pack), os.O_RDWR | os.O_CLOEXEC)
                if os.fstat(fd).st_size < size:  # damaged (fsck says so): never pad it, never append to it
                    os.close(fd)
                    fd = None
                elif os.fstat(fd).st_size > size:
                    os.ftruncate(fd, size)  # a rollback's or a kill's tail: no row points past `size`
            except FileNotFoundError:
                fd = None
            except BaseException:
                if fd is not None:
                    os.close(fd)
                raise
        new = fd is None
        if new:
            pack = self._conn.execute("INSERT INTO packs (size) VALUES (0)").lastrowid
            size = 0
            self.directory.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(pack_path(self.directory, pack), os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        opened = _OpenPack(pack, fd, size, new)
        self._packs.append(opened)
        return opened

    def append(self, data: bytes) -> tuple[int, int]:
        """Write ``data`` at the end of the current pack; returns (pack, offset)."""
        return self.append_many([data])[0]

    def append_many(self, datas: list[bytes]) -> list[tuple[int, int]]:
        """Write each of ``datas`` at the end of the current pack, in order, with one
        ``pwritev`` per pack they land in; returns each one's (pack, offset). A block goes to a
        new pack once the current one holds :data:`PACK_TARGET_BYTES`, as one at a time would."""
        places: list[tuple[int, int]] = []
        first = 0
        while first < len(datas):
            current = self._current
            if current is None or current.end >= self.target:
                current = self._current = self._open()
            end, last = current.end, first
            while last < len(datas) and (last == first or end < self.target):
                places.append((current.id, end))
                end += len(datas[last])
                last += 1
            self._write(current, datas[first:last])
            first = last
        return places

    def _write(self, pack: _OpenPack, datas: list[bytes]) -> None:
        views = [memoryview(d) for d in datas if d]
        offset, i = pack.end, 0
        while i < len(views):
            written = os.pwritev(pack.fd, views[i:i + _IOV_MAX], offset)
            offset += written
            while i < len(views) and written >= len(views[i]):
                written -= len(views[i])
                i += 1
            if written:  # a short write: the rest of this view next
                views[i] = views[i][written:]
        pack.end = offset
        if pack.end - pack.written_out >= WRITEBACK_BYTES:
            start_writeback(pack.fd, pack.written_out, pack.end - pack.written_out)
            pack.written_out = pack.end

    def make_durable(self) -> None:
        """Before COMMIT: fdatasync what was appended, then record the packs' new lengths."""
        made_file = False
        for p in self._packs:
            if p.end != p.committed or p.new:
                os.fdatasync(p.fd)
                made_file |= p.new
        if made_file:
            _fsync_dir(self.directory)
        for p in self._packs:
            if p.end != p.committed or p.new:
                self._conn.execute("UPDATE packs SET size = ? WHERE id = ?", (p.end, p.id))

    def discard(self) -> None:
        """Under the write lock, after the rollback: cut each pack this transaction appended to
        back to its committed length, as the index says now (a pack whose row the rollback
        removed goes whole)."""
        for p in self._packs:
            row = self._conn.execute("SELECT size FROM packs WHERE id = ?", (p.id,)).fetchone()
            with contextlib.suppress(OSError):
                if row is None:
                    pack_path(self.directory, p.id).unlink()
                elif os.fstat(p.fd).st_size > row[0]:
                    os.ftruncate(p.fd, row[0])

    def close(self) -> None:
        for p in self._packs:
            os.close(p.fd)
        self._packs.clear()
        self._current = None


def _read_at(fd: int, offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset`` (short only at the end of the file)."""
    data = os.pread(fd, size, offset)
    while len(data) < size:
        more = os.pread(fd, size - len(data), offset + len(data))
        if not more:
            break
        data += more
    return data


GROUP_BLOCKS = 256
GROUP_BYTES = 8 << 20


def _groups(blocks: Iterable[tuple[bytes, bytes]]) -> Iterator[list[tuple[bytes, bytes]]]:
    """``blocks`` in groups of at most :data:`GROUP_BLOCKS` blocks and about
    :data:`GROUP_BYTES`: :meth:`BlockStore.put_many` looks each group up with one query and
    writes it with one ``pwritev``, instead of a query and a write per block."""
    group: list[tuple[bytes, bytes]] = []
    size = 0
    for block in blocks:
        group.append(block)
        size += len(block[1])
        if len(group) >= GROUP_BLOCKS or size >= GROUP_BYTES:
            yield group
            group, size = [], 0
    if group:
        yield group


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
        self.pack_dir: Path | None = None if db.path is None else Path(db.path).parent / PACK_DIR
        """Where this store's packs live; None for an in-memory store (its blocks stay inline)."""
        if self.pack_dir is not None:
            with contextlib.suppress(OSError):  # made with the home, so a home's files do not change on first write
                self.pack_dir.mkdir(mode=0o700, exist_ok=True)
        self._writer: PackWriter | None = None
        self._in_write = False
        self._readers: dict[int, int] = {}

    @contextlib.contextmanager
    def write_transaction(self, *, final: bool = False) -> Iterator[None]:
        """One IMMEDIATE transaction: takes the write lock up front so two writers queue
        instead of deadlocking on a read-to-write upgrade.

        The packs written in it are made durable before the COMMIT (module docstring). On any
        exception (Ctrl-C included) it rolls back, unless SQLite already has: after SQLITE_FULL,
        SQLITE_IOERR and the like SQLite ends the transaction itself, and a second ROLLBACK
        would hide the real error behind "no transaction is active". ``final`` marks a
        command's last transaction: see :func:`fabnode.interrupts.point_of_no_return`.
        """
        self._conn.execute("BEGIN IMMEDIATE")
        self._in_write = True
        try:
            yield
            if final:
                interrupts.point_of_no_return()
            try:
                if self._writer is not None:
                    self._writer.make_durable()
                self._conn.execute("COMMIT")
            except BaseException:
                if final:
                    interrupts.commit_failed()
                raise
        except BaseException:
            if self._conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # the first error is the one to report
                    self._conn.execute("ROLLBACK")
            if self._writer is not None:
                self._cut_back(self._writer)
            raise
        finally:
            self._in_write = False
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    def _cut_back(self, writer: PackWriter) -> None:
        """After a rollback: cut what the transaction appended, under the write lock taken
        again (so no other writer is appending), so a failed write leaves the disk as it was.
        Best effort: the next writer cuts any tail left anyway."""
        with contextlib.suppress(sqlite3.Error, OSError):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                writer.discard()
            finally:
                self._conn.execute("ROLLBACK")

    def close(self) -> None:
        """Close the connection; the last one to close copies the WAL into the main file."""
        for fd in self._readers.values():
            os.close(fd)
        self._readers.clear()
        self.db.close()

    def pack_writer(self, *, fresh: bool = False) -> PackWriter:
        """The pack writer of the write transaction in progress (made on first use; ``fresh``
        makes it start a new pack, for gc's compaction)."""
        if not self._in_write:
            raise RuntimeError("blocks are written inside BlockStore.write_transaction()")
        if self._writer is None:
            assert self.pack_dir is not None
            self._writer = PackWriter(self._conn, self.pack_dir, fresh=fresh)
        return self._writer

    def forget_reader(self, pack: int) -> None:
        """Close this store's read handle on a pack (gc unlinked it)."""
        fd = self._readers.pop(pack, None)
        if fd is not None:
            os.close(fd)

    def put(self, cid: bytes, data: bytes) -> None:
        """Store a block whose CID the caller computed from ``data`` (or verified)."""
        self.put_many(((cid, data),))

    def put_many(self, blocks: Iterable[tuple[bytes, bytes]]) -> None:
        """:meth:`put` for many (cid, data) pairs (a fetch's batch). Outside a write transaction
        each call is one of its own."""
        if not self._in_write:
            with self.write_transaction():
                self.put_many(blocks)
            return
        if self.pack_dir is None:
            self._conn.executemany("INSERT OR IGNORE INTO blocks (cid, size, data) VALUES (?, ?, ?)",
                                   ((cid, len(data), data) for cid, data in blocks))
            return
        writer = self.pack_writer()
        for group in _groups(blocks):
            unique = dict(group)  # the same CID twice in a group: the same bytes, written once
            held = {row[0] for row in self._conn.execute(
                f"SELECT cid FROM blocks WHERE cid IN ({','.join('?' * len(unique))})", list(unique))}
            new = [(cid, data) for cid, data in unique.items() if cid not in held]
            places = writer.append_many([data for _, data in new])
            self._conn.executemany("INSERT INTO blocks (cid, size, data, pack, pack_offset) VALUES (?, ?, x'', ?, ?)",
                                   [(cid, len(data), pack, offset) for (cid, data), (pack, offset) in zip(new, places)])

    # ---- reading

    def _reader(self, pack: int) -> int:
        fd = self._readers.get(pack)
        if fd is not None and os.fstat(fd).st_nlink == 0:
            # compacted and unlinked by gc: let its space go, and open the name again (gone: the
            # caller looks the block up again and finds its new place)
            self.forget_reader(pack)
            fd = None
        if fd is None:
            assert self.pack_dir is not None
            for gone in [p for p, f in self._readers.items() if os.fstat(f).st_nlink == 0]:
                self.forget_reader(gone)  # opening a pack (rare): also drop handles on compacted ones
            fd = os.open(pack_path(self.pack_dir, pack), os.O_RDONLY | os.O_CLOEXEC)
            if len(self._readers) >= READERS_KEPT:
                os.close(self._readers.pop(next(iter(self._readers))))
            self._readers[pack] = fd
        return fd

    def read_packed(self, pack: int, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` of a pack (short if the file was cut: a damaged block)."""
        return _read_at(self._reader(pack), offset, size)
    def get_unverified(self, cid: bytes) -> bytes | None:
        for attempt in range(3):
            row = self._conn.execute("SELECT data, pack, pack_offset, size FROM blocks WHERE cid = ?", (cid,)).fetchone()
            if row is None:
                return None
            data, pack, offset, size = row
            if pack is None:
                return data
            try:
                return self.read_packed(pack, offset, size)
            except FileNotFoundError:
                continue  # a compaction moved it between the SELECT and the open: look again
        raise DamagedBlock(f"block {cid_str(cid)} is damaged: its pack file {pack:06d}.pack is missing (run 'fabnode fsck')")

    def get(self, cid: bytes) -> bytes:
        """The block's bytes, re-hashed against its CID; raises if missing or damaged."""
        data = self.get_unverified(cid)
        if data is None:
            raise MissingBlock(f"block {cid_str(cid)} is not in this store")
        return self.verified(cid, data)

    @staticmethod
    def verified(cid: bytes, data: bytes) -> bytes:
        """``data`` if it hashes to ``cid``, else :class:`DamagedBlock` as :meth:`get` raises it
        (for readers that hash what :meth:`get_unverified` read in another thread)."""
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
        """Every stored block as (cid, data), unverified, one block in memory at a time: inline
        rows first, then packed ones in pack order (each pack read front to back)."""
        # Rows come in pack order: one handle of its own per pack, not a lookup per block (a pack
        # compacted meanwhile still reads right through a handle open on it).
        fd, fd_pack = None, None
        try:
            for cid, data, pack, offset, size in self._iter_rows():
                if pack is None:
                    yield cid, data
                    continue
                if pack != fd_pack:
                    if fd is not None:
                        os.close(fd)
                    fd, fd_pack = None, pack
                    with contextlib.suppress(FileNotFoundError):
                        assert self.pack_dir is not None
                        fd = os.open(pack_path(self.pack_dir, pack), os.O_RDONLY | os.O_CLOEXEC)
                yield cid, b"" if fd is None else _read_at(fd, offset, size)  # b"": its pack is gone, a damaged block
        finally:
            if fd is not None:
                os.close(fd)

    def _iter_rows(self) -> Iterator[tuple]:
        cursor = self._conn.execute("SELECT cid, data, pack, pack_offset, size FROM blocks WHERE pack IS NULL ORDER BY rowid")
        while rows := cursor.fetchmany(16):
            yield from rows
        cursor = self._conn.execute("SELECT cid, data, pack, pack_offset, size FROM blocks WHERE pack IS NOT NULL"
                                    " ORDER BY pack, pack_offset")
        while rows := cursor.fetchmany(256):
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
