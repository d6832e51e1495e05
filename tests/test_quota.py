"""Quotas for strangers (issue 12, protocol/quota.py): two real daemons sync; the receiving lab
keeps strangers' records only within its quotas, never loses a trusted key's or its own, and does
not fetch evicted records again."""

from __future__ import annotations

import re
import sqlite3
import time

from daemons import signing_key, make_labs, record_count, start, wait_until
from fabnode.node.home import Home
from fabnode.protocol.identity import did_from_ed25519
from fabnode.protocol.quota import StrangerLimits, refusal, to_evict
from fabnode.protocol.records import make_record
from fabnode.storage import open_db
from fabnode.storage.records import RecordStore


def _fill(home, records: list) -> None:
    db = open_db(Home(home).db_path)
    store = RecordStore(db.conn)
    db.conn.execute("BEGIN IMMEDIATE")
    for record in records:
        store.ingest(record, received_ms=record.ts)
    db.conn.execute("COMMIT")
    db.close()


def _vouches(seed: int, n: int, note_bytes: int, now: int) -> list:
    key, author = signing_key(seed)
    return [make_record("vouch", {"subject": did_from_ed25519(bytes([seed]) + i.to_bytes(31, "big")), "trust": "trusted",
                                  "note": "n" * note_bytes}, author=author, ts=now - i, sign=key.sign) for i in range(n)]


def _by_author(home, author: str) -> int:
    return record_count(home, f"author = '{author}'")


def test_pure_rules():
    limits = StrangerLimits(per_author_per_hour=2, per_peer_per_hour=3, storage_bytes=100)
    assert refusal(author="t", trusted=frozenset({"t"}), author_recent=99, peer_recent=99, limits=limits) is None
    assert "already sent 2 records this hour" in refusal(author="s", trusted=frozenset(), author_recent=2,
                                                        peer_recent=0, limits=limits)
    assert "relayed 3 records" in refusal(author="s", trusted=frozenset(), author_recent=0, peer_recent=3, limits=limits)
    assert to_evict([(b"a", 60), (b"b", 60), (b"c", 60)], 180, limits) == [b"a", b"b"]
    assert to_evict([(b"a", 60)], 60, limits) == []


def test_a_strangers_records_are_rate_limited_per_author(tmp_path, daemons):
    a, b = make_labs(tmp_path, 2)
    now = int(time.time() * 1000)
    spam = _vouches(61, 30, 100, now)
    _fill(a.home, spam)
    with open(b.home / "config.toml", "a") as f:
        f.write("[limits]\nstranger_records_per_author_per_hour = 10\n")
    da = start(daemons, a)
    db = start(daemons, b, "--bootstrap", da.addr)
    line = db.wait_for("over the strangers' quota, not kept")
    # 10 of the stranger's, and A's lab record unless gossip brought it first
    assert re.search(r"received (10|11) new record\(s\) \(20 by untrusted keys", line), line
    assert _by_author(b.home, spam[0].author) == 10


def test_the_storage_quota_evicts_the_oldest_strangers_never_trusted_keys_or_our_own(tmp_path, daemons):
    """A holds 120 strangers' records of ~16 KB (2 MB) and 20 by a key T that B vouched for; B's
    quota for strangers is 1 MiB. B keeps every record of T and its own, at most 1 MiB of
    strangers' (the others evicted, with tombstones), and a second sync brings nothing again."""
    a, b = make_labs(tmp_path, 2)
    now = int(time.time() * 1000)
    strangers = [r for seed in range(70, 76) for r in _vouches(seed, 20, 16_000, now)]
    trusted = _vouches(90, 20, 16_000, now)
    _fill(a.home, strangers + trusted)
    b.run("vouch", trusted[0].author, "-m", "we built their pump")
    with open(b.home / "config.toml", "a") as f:
        f.write("[limits]\nstranger_storage_mib = 1\n[sync]\ninterval_seconds = 2\n")
    with open(a.home / "config.toml", "a") as f:
        f.write("[sync]\ninterval_seconds = 2\n")
    da = start(daemons, a)
    db = start(daemons, b, "--bootstrap", da.addr)
    db.wait_for("evicted the")
    wait_until(lambda: _by_author(b.home, trusted[0].author) == 20, what="every record of the trusted key")
    conn = sqlite3.connect(f"file:{b.home / 'fabnode.db'}?mode=ro", uri=True)
    me = b.json("id")["did"]
    stranger_bytes = conn.execute("SELECT sum(length(data)) FROM records WHERE author NOT IN (?, ?)",
                                  (me, trusted[0].author)).fetchone()[0]
    evicted = conn.execute("SELECT count(*) FROM evicted").fetchone()[0]
    conn.close()
    assert stranger_bytes <= 1 << 20 and evicted > 0
    assert _by_author(b.home, me) == 2  # B's own vouch and lab record
    # a later periodic sync sees the evicted records as held (tombstones): nothing comes again
    after = int(time.time() * 1000)
    before = record_count(b.home)

    def later_sync():
        syncs = [s for s in b.json("status")["last_syncs"] if s.get("started_ms", 0) > after and not s.get("error")]
        return syncs[0] if syncs else None

    sync = wait_until(later_sync, timeout=30, what="a later periodic sync")
    assert sync["new"] == 0 and sync["over_quota"] == 0
    assert record_count(b.home) == before
