"""The node's SQLite stores as the service sees them: reads through the view, writes as the
service's effects ask (node/service/service.py's RecordView)."""

from __future__ import annotations

from fabnode.node.local.commons import receive_records
from fabnode.protocol.cid import DAG_CBOR, cid_str, make_cid
from fabnode.protocol.reconcile import MAX_TS, ItemSet
from fabnode.storage import BlockStore
from fabnode.storage.records import RecordStore


class ItemCache:
    """The record set as reconciliation items, rebuilt only when records were added."""

    def __init__(self, records: RecordStore) -> None:
        self.records = records
        self._marker = None
        self._items: ItemSet | None = None

    def get(self) -> ItemSet:
        marker = self.records.change_marker()
        if marker != self._marker or self._items is None:
            self._items = ItemSet((min(ts, MAX_TS), digest) for ts, digest in self.records.sync_items())
            self._marker = marker
        return self._items


class StoreView:
    """What the service reads, answered from SQLite; and the writes its effects ask for."""

    def __init__(self, store: BlockStore, records: RecordStore, me: str, follow_trusted: bool, quota=None) -> None:
        self.store, self.records, self.me, self.follow_trusted, self.quota = store, records, me, follow_trusted, quota
        self._items = ItemCache(records)
        self.my_name: str | None = None
        self.my_peer_id: str | None = None
        """This lab's configured name and this node's peer ID, for :meth:`label` (the daemon sets them)."""

    def items(self) -> ItemSet:
        return self._items.get()

    def raw(self, cid: bytes) -> bytes | None:
        return self.records.raw(cid)

    def outbox(self, limit: int) -> list[tuple[bytes, bytes]]:
        return self.records.outbox(limit=limit)

    def outbox_cids(self) -> set[bytes]:
        return self.records.outbox_cids()

    def seeding_marker(self) -> object:
        # the policy's answer only changes with the records, the follows or the pins
        return (self.records.change_marker(), tuple(self.records.follows()), len(self.store.pins()))

    def wanted_bundles(self) -> list[tuple[bytes, bytes]]:
        from .seeding import wanted_bundles

        return wanted_bundles(self.records, self.store, self.me, self.follow_trusted)

    def seeded_bytes(self) -> int:
        from .seeding import seeded_bytes

        return seeded_bytes(self.store)

    def label(self, key: str) -> str:
        """A did:key or peer ID as its lab (node/local/names.py), read fresh: names arrive with records."""
        from fabnode.node.local.names import Names

        names = Names(self.records, self.me, self.my_name)
        names.my_peer_id = self.my_peer_id
        return names.label(key)

    def chain_refusal(self, author: str, ts: int) -> str | None:
        """Why this node's chains of keys refuse a record by ``author`` at ``ts`` (None: they do not)."""
        return self.records.keys.refusal(author, ts)

    def seeded_pins(self) -> list[tuple[bytes, int, int]]:
        from .seeding import seeded_pins

        return seeded_pins(self.store)

    # ------------------------------------------------------------------ writes

    def store_records(self, blocks, peer: str, now_ms: int, verified=None):
        """Store record blocks received from ``peer`` (the strangers' quota applies), in one
        transaction; returns (new CIDs, over-quota count, first quota reason)."""
        with self.store.write_transaction():
            return self.store_records_in_transaction(blocks, peer, now_ms, verified)

    def store_records_in_transaction(self, blocks, peer: str, now_ms: int, verified=None):
        """:meth:`store_records` inside the caller's transaction (gossip stores in batches)."""
        result = receive_records(self.records, [(None, b) for b in blocks], now=now_ms, all_or_nothing=False,
                                 quota=self.quota, peer=peer, verified=list(verified) if verified else None)
        new = set(result.new)
        cids = tuple(c for c in (make_cid(DAG_CBOR, b) for b in blocks) if cid_str(c) in new)
        reason = result.over_quota[0][1] if result.over_quota else ""
        return cids, len(result.over_quota), reason

    def announced(self, cids) -> None:
        with self.store.write_transaction():
            self.records.announced(cids)

