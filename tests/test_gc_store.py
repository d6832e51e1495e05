"""storage/gc.py on real SQLite files: the interleavings that gc under concurrency must survive,
made deterministic by running the mark, the other writer and the sweep one after another on two
connections (tests/test_disk.py runs the same thing as separate processes)."""

from __future__ import annotations

import random

from fabnode.protocol.cid import RAW, make_cid
from fabnode.protocol.dag import walk
from fabnode.protocol.unixfs import FileBuilder
from fabnode.storage import BlockStore, Pin, open_db
from fabnode.storage import gc as storegc

NOW = 1_800_000_000_000


def _file(store: BlockStore, data: bytes) -> bytes:
    """Store a chunked file's blocks (no pin); returns its root."""
    builder = FileBuilder()
    blocks = []
    for start in range(0, len(data), 1 << 20):
        blocks += builder.add_chunk(data[start:start + (1 << 20)])
    tail, built = builder.finish()
    with store.write_transaction():
        for b in blocks + tail:
            store.put(b.cid, b.data)
    return built.cid


def _pin(store: BlockStore, root: bytes, name: str) -> None:
    with store.write_transaction():
        store.pin(Pin(root, "file", 0, 1, name, NOW))


def _complete(store: BlockStore, root: bytes) -> bool:
    return all(v.present for v in walk(store.get_unverified, root))


def _stores(tmp_path):
    path = tmp_path / "fabnode.db"
    return BlockStore(open_db(path)), BlockStore(open_db(path))


def test_an_add_committed_between_mark_and_sweep_keeps_the_old_blocks_it_reused(tmp_path):
    """The add's INSERT OR IGNORE finds the unreferenced blocks still there and keeps their old
    rowids, which the sweep would delete without its catch-up: the pin would lose them."""
    gc_side, add_side = _stores(tmp_path)
    rng = random.Random(1)
    data = rng.randbytes(3 << 20)
    old = _file(add_side, data)  # stored, never pinned: garbage
    kept = _file(add_side, rng.randbytes(10_000))
    _pin(add_side, kept, "kept")
    marked = storegc.mark(gc_side, NOW)
    assert old not in marked.cids
    again = _file(add_side, data)  # the same file added again, and pinned, after the mark
    _pin(add_side, again, "again")
    assert again == old
    swept = storegc.sweep(gc_side, marked)
    assert swept.blocks == 0
    assert _complete(add_side, again) and _complete(add_side, kept)


def test_a_fetch_storing_a_parent_after_the_mark_keeps_the_old_children_it_links(tmp_path):
    """A lease's walk stops at a missing block; the fetch then stores that block (a new rowid),
    whose children were already here unreferenced: the sweep follows new blocks' links."""
    gc_side, fetch_side = _stores(tmp_path)
    rng = random.Random(2)
    builder = FileBuilder()
    leaves = []
    for _ in range(3):
        leaves += builder.add_chunk(rng.randbytes(1 << 20))
    tail, built = builder.finish()
    with fetch_side.write_transaction():
        for leaf in leaves:  # the leaves are here already (from an earlier, unpinned copy)
            fetch_side.put(leaf.cid, leaf.data)
    storegc.take_lease(fetch_side, built.cid, "fetch", NOW)  # the fetch starts: root still missing
    marked = storegc.mark(gc_side, NOW)
    assert not (marked.cids & {leaf.cid for leaf in leaves})
    with fetch_side.write_transaction():
        for b in tail:  # the root arrives
            fetch_side.put(b.cid, b.data)
    assert storegc.sweep(gc_side, marked).blocks == 0
    assert _complete(fetch_side, built.cid)


def test_the_sweep_deletes_exactly_the_unreferenced_blocks_in_batches(tmp_path, monkeypatch):
    store, _ = _stores(tmp_path)
    rng = random.Random(3)
    monkeypatch.setattr(storegc, "BATCH_ROWS", 7)
    pinned = [_file(store, rng.randbytes(rng.randrange(100, 3000))) for _ in range(20)]
    garbage = [_file(store, rng.randbytes(rng.randrange(100, 3000))) for _ in range(30)]
    for i, root in enumerate(pinned):
        _pin(store, root, f"p{i}")
    raw = make_cid(RAW, b"x")
    storegc.take_lease(store, raw, "fetch", NOW - storegc.LEASE_KEEP_MS - 1)  # expired: not protected
    with store.write_transaction():
        store.put(raw, b"x")
    marked = storegc.mark(store, NOW)
    result = storegc.sweep(store, marked)
    assert result.batches > 3
    left = {r[0] for r in store.db.conn.execute("SELECT cid FROM blocks")}
    assert left == set(pinned)
    assert result.blocks == len(garbage) + 1


def test_pin_kinds_are_read_from_the_pins_source_the_follows_and_this_labs_versions():
    from fabnode.node.local.disk import pin_kind
    from fabnode.protocol.cid import DAG_CBOR, cid_str

    followed, other = make_cid(DAG_CBOR, b"followed design"), make_cid(DAG_CBOR, b"other design")
    mine, theirs = make_cid(RAW, b"my bundle"), make_cid(RAW, b"a bundle")
    cases = {
        (f"seeded:{cid_str(followed)}", theirs): "followed",
        (f"seeded:{cid_str(other)}", theirs): "seeded",
        (f"fetched:{cid_str(theirs)}", theirs): "fetched",
        ("import:lab-a.car", theirs): "imported",
        ("hand-pump", mine): "published",
        ("scans", theirs): "added",
        ("seeded:not-a-cid", theirs): "seeded",
    }
    for (source, cid), kind in cases.items():
        assert pin_kind(source, cid, {followed}, {mine}) == kind, source


def test_a_fetch_lease_is_renewed_while_it_runs_kept_when_it_fails_and_ended_once_pinned(tmp_path, monkeypatch):
    import pytest

    from fabnode.node.runtime import fetch

    store, _ = _stores(tmp_path)
    root = make_cid(RAW, b"root")

    def touched() -> list[int]:
        return [r[0] for r in store.db.conn.execute("SELECT touched_ms FROM leases WHERE root = ?", (root,))]

    monkeypatch.setattr(fetch, "LEASE_RENEW_S", 0)
    with pytest.raises(RuntimeError):
        with fetch.fetch_lease(store, root) as renew:
            store.db.conn.execute("UPDATE leases SET touched_ms = 5")
            renew()
            assert touched()[0] > 5  # renewed
            raise RuntimeError("the link broke")
    assert len(touched()) == 1  # a failed fetch leaves its lease
    with fetch.fetch_lease(store, root):
        assert len(touched()) == 2
    assert len(touched()) == 1  # a fetch that got its pin ends its own lease
