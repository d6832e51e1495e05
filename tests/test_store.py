"""The SQLite block store on real database files."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import damage_block

from fabnode.protocol.cid import RAW, make_cid
from fabnode.protocol.errors import DamagedBlock, MissingBlock
from fabnode.storage import BlockStore, open_db
from fabnode.storage.db import SCHEMA_VERSION


@pytest.fixture
def store(tmp_path) -> BlockStore:
    return BlockStore(open_db(tmp_path / "fabnode.db"))


def test_database_is_wal_with_recorded_migrations(tmp_path):
    db = open_db(tmp_path / "fabnode.db")
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    applied = [r[0] for r in db.conn.execute("SELECT name FROM _sqlite_migrations ORDER BY id")]
    assert applied == ["001_blocks", "002_pins", "003_records", "004_peers", "005_follows", "006_stranger_quota",
                       "007_leases", "008_lab_names", "009_translations", "010_search_scripts",
                       "011_lab_profiles", "012_design_requirements", "013_requests", "014_packs", "015_design_profiles",
                       "016_keys", "017_retractions"]
    db.conn.close()
    again = open_db(tmp_path / "fabnode.db")  # reopening applies nothing twice
    assert again.conn.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0] == len(applied)
    assert again.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_schema_version_counts_the_migrations():
    from fabnode.storage.migrations import migration_names

    assert len(migration_names()) == SCHEMA_VERSION


def test_a_database_from_an_older_fabnode_is_migrated(tmp_path):
    """A database at schema 2 (before records) gains the record tables on open, keeping its blocks."""
    from sqlite_utils import Database as UtilsDatabase

    from fabnode.storage.migrations import migrations

    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    migrations.apply(UtilsDatabase(conn), stop_before="003_records")
    conn.execute("INSERT INTO blocks (cid, size, data) VALUES (?, 1, ?)", (make_cid(RAW, b"x"), b"x"))
    conn.close()
    store = BlockStore(open_db(tmp_path / "old.db"))
    assert store.get(make_cid(RAW, b"x")) == b"x"
    assert store.db.conn.execute("SELECT count(*) FROM records").fetchone()[0] == 0


def test_put_get_has_missing(store):
    blocks = {make_cid(RAW, d): d for d in (b"", b"a", b"pump" * 1000)}
    absent = make_cid(RAW, b"never stored")
    with store.write_transaction():
        for cid, data in blocks.items():
            store.put(cid, data)
        store.put(next(iter(blocks)), b"")  # same CID again: ignored
    for cid, data in blocks.items():
        assert store.has(cid)
        assert store.get(cid) == data
    assert not store.has(absent)
    order = [absent, *blocks, absent]
    assert store.missing(order) == [absent]
    assert store.count() == (3, 4001)
    with pytest.raises(MissingBlock, match="is not in this store"):
        store.get(absent)


def test_a_failed_transaction_leaves_nothing(store):
    cid = make_cid(RAW, b"half an add")
    with pytest.raises(RuntimeError):
        with store.write_transaction():
            store.put(cid, b"half an add")
            raise RuntimeError("interrupted")
    assert not store.has(cid)
    assert store.count() == (0, 0)


def test_uncommitted_add_is_invisible_to_another_connection(tmp_path):
    writer = BlockStore(open_db(tmp_path / "fabnode.db"))
    reader = BlockStore(open_db(tmp_path / "fabnode.db"))
    cid = make_cid(RAW, b"x")
    with writer.write_transaction():
        writer.put(cid, b"x")
        assert not reader.has(cid)
    assert reader.has(cid)


def test_damaged_block_is_detected_on_read(tmp_path, store):
    cid = make_cid(RAW, b"original")
    with store.write_transaction():
        store.put(cid, b"original")
    raw = sqlite3.connect(tmp_path / "fabnode.db")
    damage_block(raw, cid, b"origina1")
    with pytest.raises(DamagedBlock, match="no longer hash"):
        store.get(cid)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=4096), max_size=20))
def test_roundtrip_any_blocks(blobs):
    store = BlockStore(open_db(memory=True))
    with store.write_transaction():
        for data in blobs:
            store.put(make_cid(RAW, data), data)
    for data in blobs:
        assert store.get(make_cid(RAW, data)) == data
    assert store.count()[0] == len(set(blobs))


def _persist(peers, effects) -> None:
    from fabnode.node.service.effects import ForgetPeer

    for effect in effects:
        peers.forget(effect.peer) if isinstance(effect, ForgetPeer) else peers.save(effect)


def test_peers_are_remembered_with_exponential_backoff_and_kept_on_disk(tmp_path):
    """The policy is the service's book (node/service/peers.py); the table keeps it across restarts."""
    from fabnode.node.service.peers import MAX_BACKOFF_MS, PeerBook, backoff_ms
    from fabnode.storage import PeerStore

    assert [backoff_ms(n) for n in range(1, 6)] == [1000, 2000, 4000, 8000, 16000]
    assert backoff_ms(40) == MAX_BACKOFF_MS == 300_000
    peers = PeerStore(open_db(tmp_path / "fabnode.db").conn)
    book = PeerBook()
    new, effects = book.remember("12D3KooWA", ("/ip4/127.0.0.1/tcp/4001",), "mdns", 1000)
    assert new
    _persist(peers, effects)
    new, effects = book.remember("12D3KooWA", ("/ip4/127.0.0.1/tcp/4001",), "bootstrap", 2000)
    assert not new
    _persist(peers, effects)
    assert peers.get("12D3KooWA").source == "bootstrap"  # a bootstrap entry is never demoted
    for now, expected in ((10_000, 1000), (11_000, 2000)):
        wait, effects = book.dial_failed("12D3KooWA", now)
        assert wait == expected
        _persist(peers, effects)
    assert book.due(12_000) == [] and [p.peer for p in book.due(13_000)] == ["12D3KooWA"]
    # a new address makes it worth trying at once; a success resets the count
    _persist(peers, book.remember("12D3KooWA", ("/ip4/127.0.0.1/tcp/4002",), "inbound", 12_000)[1])
    assert [p.peer for p in book.due(12_000)] == ["12D3KooWA"]
    _persist(peers, book.connected("12D3KooWA", 12_500))
    row = open_db(tmp_path / "fabnode.db").conn.execute("SELECT failures, last_connected_ms FROM peers").fetchone()
    assert row == (0, 12_500)  # on disk, for the next start


def test_peers_met_by_chance_are_forgotten_after_a_month_away(tmp_path):
    from fabnode.node.service.peers import FORGET_AFTER_MS, PeerBook
    from fabnode.storage import PeerStore

    peers = PeerStore(open_db(tmp_path / "fabnode.db").conn)
    book = PeerBook()
    _persist(peers, book.remember("12D3KooWlan", ("/ip4/127.0.0.1/tcp/4001",), "mdns", 0)[1])
    _persist(peers, book.remember("12D3KooWhub", ("/ip4/127.0.0.1/tcp/4002",), "bootstrap", 0)[1])
    _persist(peers, book.connected("12D3KooWlan", 1000))
    assert book.dial_failed("12D3KooWlan", FORGET_AFTER_MS)[0] == 1000  # a month minus a second
    wait, effects = book.dial_failed("12D3KooWlan", FORGET_AFTER_MS + 2000)
    assert wait is None
    _persist(peers, effects)
    assert peers.get("12D3KooWlan") is None
    assert book.dial_failed("12D3KooWhub", 10 * FORGET_AFTER_MS)[0] == 1000  # listed by the operator
