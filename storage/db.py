"""Opening the node database with the settings every part of fabnode relies on."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

PAGE_SIZE = 65536
"""Large pages: most rows are 1 MiB blocks, which then take 16 overflow pages instead of 256."""
BUSY_TIMEOUT_MS = 10_000
"""The daemon and CLI commands share one file; a writer waits this long for the other."""
SCHEMA_VERSION = 6
"""How many migrations storage/migrations.py defines (a test keeps the two equal). Stored in
``PRAGMA user_version`` once they are applied, so an up-to-date database opens without importing
sqlite-utils (~0.1 s): the command line must answer quickly."""


class Database:
    """An open node database: the connection every store shares."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def close(self) -> None:
        self.conn.close()


def open_db(path: Path | str | None = None, *, memory: bool = False) -> Database:
    """Open (creating if needed) the database at ``path`` and apply pending migrations."""
    if memory:
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    else:
        _private(Path(path))
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
    return Database(conn)


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
