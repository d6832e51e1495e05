"""Ordered, recorded schema migrations (sqlite-utils ``Migrations``).

Each migration runs in one transaction together with its row in ``_sqlite_migrations``; names
are numbered so their order is their name's order. Never edit an applied migration: add one.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("fabnode")


@migrations(name="001_blocks")
def blocks(db: Database) -> None:
    # Blocks are immutable and keyed by their binary CID; `size` lets fsck and `have` report
    # without reading blobs. Rowid table: large blobs do not belong in a WITHOUT ROWID b-tree.
    db.execute(
        """CREATE TABLE blocks (
               cid BLOB PRIMARY KEY NOT NULL,
               size INTEGER NOT NULL,
               data BLOB NOT NULL
           )"""
    )


@migrations(name="002_pins")
def pins(db: Database) -> None:
    # A pin is a root this node keeps on purpose (an `add` today; a published bundle later).
    db.execute(
        """CREATE TABLE pins (
               cid BLOB PRIMARY KEY NOT NULL,
               kind TEXT NOT NULL,          -- 'file' or 'directory'
               size INTEGER NOT NULL,       -- bytes of file content
               files INTEGER NOT NULL,      -- number of files in it
               source TEXT NOT NULL,        -- the name it was added under
               added_ms INTEGER NOT NULL
           )"""
    )
