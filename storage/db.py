"""Opening the node database with the settings every part of fabnode relies on, and telling
apart the ways it can fail: damaged (:func:`diagnose`) or out of space (:func:`is_disk_full`)."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import weakref
from collections.abc import Iterator
from pathlib import Path

from fabnode.protocol.errors import DamagedDatabase, DiskFull, human_size

PAGE_SIZE = 4096
"""SQLite's default. Block bytes live in pack files (storage/blocks.py, issue 20), so rows are small
index entries; the 64 KiB pages chosen when blocks were rows made a fresh home's ~110 tables and
indexes take 6.7 MB (and its first WAL 11 MB). Homes made before keep their page size."""
BUSY_TIMEOUT_MS = 10_000
"""The daemon and CLI commands share one file; a writer waits this long for the other."""
SCHEMA_VERSION = 17
"""How many migrations storage/migrations.py defines (a test keeps the two equal). Stored in
``PRAGMA user_version`` once they are applied, so an up-to-date database opens without importing
sqlite-utils (~0.1 s): the command line must answer quickly."""


SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_NOTADB = 26
SQLITE_IOERR_SHMSIZE = 4874
HEADER_MAGIC = b"SQLite format 3\x00"
"""The first 16 bytes of every SQLite database file."""
WAL_HEADER_BYTES = 32

_open: weakref.WeakSet = weakref.WeakSet()


class Database:
    """An open node database: the connection every store shares."""

    def __init__(self, conn: sqlite3.Connection, path: Path | None = None) -> None:
        self.conn = conn
        self.path = path
        _open.add(self)

    def close(self) -> None:
        self.conn.close()
        _open.discard(self)  # a connection closed in its own thread (a worker's) is not closed again


def close_all() -> None:
    """Close every database this process opened (the command line does it before exiting, so
    the checkpoint SQLite runs on close happens while interrupts are still handled)."""
    for db in list(_open):
        db.close()


def open_db(path: Path | str | None = None, *, memory: bool = False) -> Database:
    """Open (creating if needed) the database at ``path`` and apply pending migrations.

    A file SQLite cannot read raises :class:`DamagedDatabase` saying what is wrong with it."""
    if memory:
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        _configure(conn)
        return Database(conn)
    path = Path(path)
    _private(path)
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        fresh = conn.execute("PRAGMA page_count").fetchone()[0] == 0
        if fresh:
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a power cut may lose the last commits, never corrupt the file.
        conn.execute("PRAGMA synchronous=NORMAL")
        _configure(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        if is_damage(exc):
            raise DamagedDatabase(path, diagnose(path) or str(exc)) from None
        raise
    return Database(conn, path)


def _configure(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys=ON")
    if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
        _migrate(conn)


def _code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF  # the primary code of an extended one


def is_damage(exc: BaseException) -> bool:
    """SQLite found the file is not a database, or a page of it is malformed."""
    return isinstance(exc, sqlite3.DatabaseError) and _code(exc) in (SQLITE_CORRUPT, SQLITE_NOTADB)


def is_disk_full(exc: BaseException) -> bool:
    """SQLite's "database or disk is full", or a file write that found no space (or quota).

    SQLITE_IOERR_SHMSIZE counts too: on a completely full filesystem SQLite cannot even make
    the 32 KiB index of its write-ahead log, so opening the database fails with it."""
    if isinstance(exc, sqlite3.Error):
        return _code(exc) == SQLITE_FULL or getattr(exc, "sqlite_errorcode", None) == SQLITE_IOERR_SHMSIZE
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def room_for(db_path: Path, what: str, size: int) -> Iterator[None]:
    """Turn a full disk met while opening the database or during ``what`` into one line that
    says how much room it needed, and where. It asks for ``size``: the blocks' bytes are written
    once, to a pack file (storage/blocks.py); SQLite holds only their small index rows. Put it
    outside the transaction, so that the rollback (which also cuts the pack back) is over when
    the message is written: nothing of ``what`` is stored."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        if not is_disk_full(exc):
            raise
        raise DiskFull(f"disk full: {what} ({human_size(size)}) needs about {human_size(size)} free on the "
                       f"home's filesystem ({db_path.parent}); nothing was stored") from None


def diagnose(path: Path) -> str | None:
    """What is wrong with the database file, as far as its header and length tell; None when
    both look right (then the damage, if any, is inside, and SQLite's message says so)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            header = f.read(100)
    except OSError:
        return None
    if size == 0:
        return None  # a database about to be created
    if size < 100:
        return f"it is truncated: {size} bytes, less than the 100-byte SQLite header"
    if header[:16] != HEADER_MAGIC:
        return "its first 16 bytes are not the SQLite header"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        return f"its header gives an impossible page size ({page_size})"
    pages = int.from_bytes(header[28:32], "big")
    header_size_valid = pages and header[24:28] == header[92:96]  # SQLite's own rule
    if header_size_valid and pages * page_size > size and not _wal_has_frames(path):
        return f"it is truncated: {size} of {pages * page_size} bytes"
    return None


@contextlib.contextmanager
def reading(db: Database, part: str) -> Iterator[None]:
    """If SQLite finds the file damaged while ``part`` is read, say which part it was."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if not is_damage(exc):
            raise
        raise DamagedDatabase(db.path, f"reading its {part} failed: {exc}") from None


def _wal_has_frames(path: Path) -> bool:
    """Pages may live in the write-ahead log until a checkpoint: then a short file is normal."""
    try:
        return (path.parent / (path.name + "-wal")).stat().st_size > WAL_HEADER_BYTES
    except OSError:
        return False


def _private(path: Path) -> None:
    """The database only its owner can read (issue 12): created mode 0600 before SQLite opens
    it (SQLite gives the -wal and -shm files the database's mode), and an older file that others
    could read tightened, with its -wal and -shm."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        return
    except FileExistsError:
        pass
    except OSError:
        return  # a read-only place or a path SQLite will report on: leave that to it
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if os.stat(p).st_mode & 0o077:
                os.chmod(p, 0o600)
        except OSError:
            pass


def _migrate(conn: sqlite3.Connection) -> None:
    import sqlite_utils

    from .migrations import migrations

    migrations.apply(sqlite_utils.Database(conn))
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
