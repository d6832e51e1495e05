"""fabnode's SQLite store: one database file per node home, in WAL mode, migrated in order."""

from .blocks import BlockStore, Pin
from .db import open_db

__all__ = ["BlockStore", "Pin", "open_db"]
