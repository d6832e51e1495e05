"""fabnode's SQLite store: one database file per node home, in WAL mode, migrated in order."""

from .blocks import BlockStore, Pin
from .db import open_db
from .peers import PeerStore
from .records import RecordStore
from .stores import Stores

__all__ = ["BlockStore", "PeerStore", "Pin", "RecordStore", "Stores", "open_db"]
