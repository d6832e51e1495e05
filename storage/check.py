"""What ``fabnode fsck`` asks SQLite itself: its integrity check, the schema's bookkeeping, and
whether a row is in a table when its index says not. The checks of blocks, pins and records
themselves live in node/local/files.py and read through the stores."""

from __future__ import annotations

from .db import Database


def integrity_problems(db: Database, limit: int = 100) -> list[str]:
    """``PRAGMA integrity_check``'s messages (at most ``limit``); empty when the file is sound."""
    return [message for (message,) in db.conn.execute(f"PRAGMA integrity_check({int(limit)})") if message != "ok"]


def reindex(db: Database) -> None:
    """Rebuild every index from its table (inside the caller's write transaction)."""
    db.conn.execute("REINDEX")


def migration_record(db: Database) -> tuple[list[str], list[str]]:
    """(the migrations storage/migrations.py defines, in order; those the database records as
    applied, sorted by name)."""
    from .migrations import migration_names, migrations

    expected = migration_names()
    recorded = [row[0] for row in db.conn.execute("SELECT name FROM _sqlite_migrations WHERE migration_set = ?"
                                                  " ORDER BY name", (migrations.name,))]
    return expected, recorded


def schema_version(db: Database) -> int:
    """``PRAGMA user_version``: how many migrations were applied (storage/db.py SCHEMA_VERSION)."""
    return db.conn.execute("PRAGMA user_version").fetchone()[0]


def block_in_table(db: Database, cid: bytes) -> bool:
    """Whether the blocks table holds ``cid``, read without its index (which may be the damaged part)."""
    return db.conn.execute("SELECT 1 FROM blocks NOT INDEXED WHERE cid = ?", (cid,)).fetchone() is not None
