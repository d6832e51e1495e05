"""Opening the node database with the settings every part of fabnode relies on."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlite_utils import Database

from .migrations import migrations

PAGE_SIZE = 65536
"""Large pages: most rows are 1 MiB blocks, which then take 16 overflow pages instead of 256."""
BUSY_TIMEOUT_MS = 10_000
"""The daemon and CLI commands share one file; a writer waits this long for the other."""


def open_db(path: Path | str | None = None, *, memory: bool = False) -> Database:
    """Open (creating if needed) the database at ``path`` and apply pending migrations."""
    if memory:
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    else:
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        fresh = conn.execute("PRAGMA page_count").fetchone()[0] == 0
        if fresh:
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a power cut may lose the last commits, never corrupt the file.
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys=ON")
    db = Database(conn)
    migrations.apply(db)
    return db
