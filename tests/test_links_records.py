"""What matters first on a thin link (issue 14, item 4): "market day".

A village lab (B) reaches the hub lab (A) over a 256 kbit/s link that is up for a short window
(ten minutes a day; here some seconds, with a data set to match). B listens nowhere (it only
dials out, as behind a NAT or a phone's data link) and reaches A only through
tests/linkshaper.py, whose byte counts the test checks. In the window, in this order:

1. records, both ways: B's own vouch (made offline, in its outbox) reaches A, and A's 200
   records reach B, before any bundle byte moves;
2. the bundle of the design B follows (older), before the newer bundle of an author B trusts
   (newest-first alone would fetch that one first);
3. a record A makes while that bundle streams to B overtakes the bundle (A's upload cap, a
   little below the link's rate, keeps the link's queue short; records go first in it);
4. the market closes (the link is cut) with the trusted author's bundle still coming:
   ``fabnode status`` on B shows it waiting, with what is already here, and on A what went out.
"""

from __future__ import annotations

import time

from linkshaper import LinkShaper

from conftest import write_random_file
from daemons import Daemon, has_record, make_labs, record_count, start, wait_until
from test_links_sync import make_vouches

RATE = 32_000
"""256 kbit/s each way."""
CAP = 28_000
"""Both labs' upload cap (limits.upload_bytes_per_second): somewhat below the link's rate."""
FOLLOWED_SIZE, TRUSTED_SIZE, PIECE = 128 << 10, 1 << 20, 64 << 10


def publish(lab, tmp_path, name: str, size: int, seed: int) -> dict:
    """A design of ``size`` bytes in 64 KiB files (one block each: a cut keeps whole files)."""
    folder = tmp_path / name
    for i in range(size // PIECE):
        write_random_file(folder / f"part{i:02}.stl", PIECE, seed * 1000 + i)
    return lab.json("publish", str(folder), "-m", f"{name} first version", "--title", name, "--license", "CERN-OHL-S-2.0")


def pinned(lab, bundle: str) -> bool:
    return any(p.get("cid") == bundle for p in lab.json("ls"))


def test_market_day_records_first_then_followed_designs_then_trusted_authors(tmp_path, daemons):
    a, b = make_labs(tmp_path, 2)
    for lab in (a, b):
        with open(lab.home / "config.toml", "a") as f:  # B: only dials out (as in test_links_sync)
            f.write(("listen = []\n" if lab is b else "") +
                    f"[limits]\nupload_bytes_per_second = {CAP}\n[sync]\ninterval_seconds = 600\n")
    followed = publish(a, tmp_path, "water-pump", FOLLOWED_SIZE, 1)  # older ...
    trusted = publish(a, tmp_path, "solar-dryer", TRUSTED_SIZE, 2)    # ... newer: newest-first would take it first
    make_vouches(a.home, 200)
    a_records = record_count(a.home)

    # last month's USB stick brought B the water pump's record: B follows it, and trusts A's key
    stick = tmp_path / "stick.car"
    a.run("export", str(stick), "--design", followed["design"], "--records-only")
    b.run("import", str(stick))
    b.run("follow", followed["design"])
    mine = b.out("vouch", a.json("id")["did"], "-m", "the hub lab")

    da = start(daemons, a)
    with LinkShaper(da.port, rate=RATE, delay=0.05) as link:
        db = Daemon(b, "--bootstrap", f"/ip4/127.0.0.1/tcp/{link.port}/p2p/{da.peer_id}", listen=None)
        daemons.append(db)
        db.wait_for("synced with", timeout=60)
        first = db.wait_for("seeding: fetching bundle", timeout=60)
        assert followed["bundle"] in first, first  # the followed design first, though older
        # records first: when the first bundle was asked for, every record had crossed both ways
        assert record_count(b.home) >= a_records + 1
        assert has_record(a.home, mine)
        carried_for_records = link.total
        second = db.wait_for("seeding: fetching bundle", timeout=60)
        assert trusted["bundle"] in second, second
        assert pinned(b, followed["bundle"])
        assert link.total - carried_for_records >= FOLLOWED_SIZE  # the bundle really crossed the link

        # while the trusted author's bundle streams to B, A makes a record: it overtakes the bundle
        wait_until(lambda: _serving(a, trusted["bundle"]) >= 2 * PIECE, timeout=30, what="the second bundle to stream")
        asked = time.monotonic()
        news = a.out("vouch", "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK", "-m", "market news")
        wait_until(lambda: has_record(b.home, news), timeout=30, what="A's new record on B")
        took = time.monotonic() - asked
        assert not pinned(b, trusted["bundle"]), "the record had to wait for the whole bundle"
        assert took < 4, f"the record waited {took:.1f} s behind the bundle"  # measured: 0.5 s; no cap: 6.4 s

        link.cut(down=120)  # the market closes
        db.wait_for("peer disconnected", timeout=30)
        status_b = b.json("status")
        status_a = a.json("status")
        b_text = b.out("status")

    # what waits on B: the trusted author's bundle, part of it already here
    wanted = {w["bundle"]: w for w in status_b["waiting"]["bundles"]}
    assert trusted["bundle"] in wanted and not wanted[trusted["bundle"]]["first"]
    assert 0 < wanted[trusted["bundle"]]["held_bytes"] < TRUSTED_SIZE
    assert f"wanted    {trusted['bundle']} (trusted author)" in b_text
    # what went out: per protocol, through the one cap
    sent_a = status_a["sent"]
    assert sent_a["upload_bytes_per_second"] == CAP
    assert sent_a["sent_bytes"]["fetch"] >= FOLLOWED_SIZE and sent_a["sent_bytes"]["sync"] > 40_000
    assert sent_a["records"]["sync"] >= 200 and sent_a["records"]["gossip"] >= 1
    assert status_b["sent"]["records"]["sync"] + status_b["sent"]["records"]["gossip"] >= 1  # B's own vouch
    assert link.carried["down"] >= FOLLOWED_SIZE + 40_000


def _serving(lab, bundle: str) -> int:
    """Bytes of ``bundle`` the lab's daemon has sent so far, from its status."""
    return sum(t["sent_bytes"] for t in lab.json("status").get("serving", []) if t["root"] == bundle)
