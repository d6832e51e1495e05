"""The facade use cases take: every store of one node database, over its one connection."""

from __future__ import annotations

from dataclasses import dataclass

from .blocks import BlockStore
from .db import Database
from .peers import PeerStore
from .records import RecordStore


@dataclass(frozen=True)
class Stores:
    """The blocks, records and peers of one database. They share its connection, so they share
    its transactions (``blocks.write_transaction()``) and its thread: open one per thread."""

    db: Database
    blocks: BlockStore
    """Content blocks and pins."""
    records: RecordStore
    """Signed records and their indexes (designs, versions, attestations, vouches, search)."""
    peers: PeerStore
    """Peers met, with their addresses and backoff."""

    @classmethod
    def over(cls, db: Database) -> Stores:
        return cls(db, BlockStore(db), RecordStore(db.conn), PeerStore(db.conn))

    @classmethod
    def of(cls, blocks: BlockStore) -> Stores:
        """The stores sharing ``blocks``' connection (the daemon's, a command's)."""
        return cls(blocks.db, blocks, RecordStore(blocks.db.conn), PeerStore(blocks.db.conn))
