"""An in-memory record store for the node service (tests and the simulator): what the daemon's
SQLite store answers through the service's view, kept in dicts, with the same rules.

The service verifies every record before it asks for it to be stored; this store keeps them,
keeps the outbox, and answers the reconciliation items (cached until a record is added).
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fabnode.protocol.identity import did_from_ed25519
from fabnode.protocol.reconcile import MAX_TS, ItemSet
from fabnode.protocol.records import make_record, verify_record


class Author:
    """A signing key that makes small valid records (vouches) from a seed: deterministic."""

    def __init__(self, seed: int) -> None:
        self.key = Ed25519PrivateKey.from_private_bytes(seed.to_bytes(32, "big"))
        self.did = did_from_ed25519(self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
        self.count = 0

    def record(self, ts: int, subject: "Author | None" = None):
        """A new vouch record at ``ts`` (ms); each call vouches for a fresh subject key."""
        self.count += 1
        subject_did = subject.did if subject else Author(1 << 200 | int.from_bytes(hashlib.sha256(f"{self.did}/{self.count}".encode()).digest()[:16], "big")).did
        return make_record("vouch", {"subject": subject_did, "trust": "trusted", "note": f"#{self.count}"},
                           author=self.did, ts=ts, sign=self.key.sign)


class MemoryRecords:
    """The service's :class:`fabnode.node.service.service.RecordView`, and the writes it asks for."""

    def __init__(self) -> None:
        self.blocks: dict[bytes, bytes] = {}
        self.ts: dict[bytes, int] = {}
        self.outbox_set: dict[bytes, None] = {}
        self._items: ItemSet | None = None

    # ---------------------------------------------------------------- the view

    def items(self) -> ItemSet:
        if self._items is None:
            self._items = ItemSet((min(self.ts[c], MAX_TS), c[4:]) for c in self.blocks)
        return self._items

    def raw(self, cid: bytes) -> bytes | None:
        return self.blocks.get(cid)

    def outbox(self, limit: int) -> list[tuple[bytes, bytes]]:
        return [(c, self.blocks[c]) for c in list(self.outbox_set)[:limit]]

    def outbox_cids(self) -> set[bytes]:
        return set(self.outbox_set)

    def seeding_marker(self) -> object:
        return len(self.blocks)

    def wanted_bundles(self) -> list[tuple[bytes, bytes]]:
        return []

    def seeded_bytes(self) -> int:
        return 0

    def label(self, key: str) -> str:
        from fabnode.protocol.labs import short_key

        return short_key(key)

    # ---------------------------------------------------------------- writes

    def add_local(self, record) -> None:
        """A record made here: stored and put in the outbox (what `fabnode publish` does)."""
        self._put(record.cid, record.raw, record.ts)
        self.outbox_set[record.cid] = None

    def store(self, blocks, now_ms: int) -> list[bytes]:
        """Store verified blocks; returns the CIDs that were new."""
        new = []
        for block in blocks:
            record = verify_record(block, now_ms)
            if record.cid not in self.blocks:
                self._put(record.cid, block, record.ts)
                new.append(record.cid)
        return new

    def announced(self, cids) -> None:
        for cid in cids:
            self.outbox_set.pop(cid, None)

    def _put(self, cid: bytes, raw: bytes, ts: int) -> None:
        self.blocks[cid] = raw
        self.ts[cid] = ts
        self._items = None

    def digest(self) -> bytes:
        """One value for the whole set: two stores agree iff their digests do."""
        import hashlib

        return hashlib.sha256(b"".join(sorted(self.blocks))).digest()
