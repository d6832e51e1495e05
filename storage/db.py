"""Opening the node database with the settings every part of fabnode relies on, and telling
when it ran out of space (:func:`is_disk_full`)."""

from __future__ import annotations

import contextlib
import errno
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from fabnode.protocol.errors import DiskFull, human_size

PAGE_SIZE = 65536
"""Large pages: most rows are 1 MiB blocks, which then take 16 overflow pages instead of 256."""
BUSY_TIMEOUT_MS = 10_000
"""The daemon and CLI commands share one file; a writer waits this long for the other."""
SCHEMA_VERSION = 5
"""How many migrations storage/migrations.py defines (a test keeps the two equal). Stored in
``PRAGMA user_version`` once they are applied, so an up-to-date database opens without importing
sqlite-utils (~0.1 s): the command line must answer quickly."""


SQLITE_FULL = 13
SQLITE_IOERR_SHMSIZE = 4874


class Database:
    """An open node database: the connection every store shares."""

    def __init__(self, conn: sqlite3.Connection, path: Path | None = None) -> None:
        self.conn = conn
        self.path = path

    def close(self) -> None:
        self.conn.close()


def open_db(path: Path | str | None = None, *, memory: bool = False) -> Database:
    """Open (creating if needed) the database at ``path`` and apply pending migrations."""
    if memory:
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    else:
        path = Path(path)
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        fresh = conn.execute("PRAGMA page_count").fetchone()[0] == 0
        if fresh:
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a power cut may lose the last commits, never corrupt the file.
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys=ON")
    if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
        _migrate(conn)
    return Database(conn, None if memory else path)


def _code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF  # the primary code of an extended one


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
    says how much room it needed, and where. It asks for twice ``size``: SQLite writes new pages
    to its write-ahead log first, then copies them into the database at the checkpoint, and
    both files hold them until the log is reset. Put it outside the transaction, so that the
    rollback is over when the message is written: nothing of ``what`` is stored."""
    try:
        yield
    except sqlite3.Error as exc:
        if not is_disk_full(exc):
            raise
        raise DiskFull(f"disk full: {what} ({human_size(size)}) needs about {human_size(2 * size)} free on the "
                       f"home's filesystem ({db_path.parent}); nothing was stored") from None


def _migrate(conn: sqlite3.Connection) -> None:
    import sqlite_utils

    from .migrations import migrations

    migrations.apply(sqlite_utils.Database(conn))
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
