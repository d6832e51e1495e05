"""Offline-first: range-based sync between real daemons on 127.0.0.1 (issue 6)."""

from __future__ import annotations

import hashlib
import signal
import sqlite3
import time

from conftest import ROOT, Cli
from daemons import Daemon, connect_line, make_labs, record_count, start, wait_until

EXAMPLE = ROOT / "examples" / "hand-pump"


NOT_LABS = "type != 'lab'"
"""Every record but the labs' own (each home signs one at init: two labs never start equal)."""


def digest(home, where: str = "1") -> str:
    """The same set digest `fabnode status` shows, read straight from the node's database."""
    conn = sqlite3.connect(f"file:{home / 'fabnode.db'}?mode=ro", uri=True, timeout=10)
    try:
        h = hashlib.sha256()
        for (cid,) in sorted(conn.execute(f"SELECT substr(cid, 5) FROM records WHERE {where}")):
            h.update(cid)
        return h.hexdigest()[:32]
    finally:
        conn.close()


def publish_many(lab: Cli, versions: int, attestations: int) -> None:
    """Many records made quickly, in-process, as a busy lab would over days."""
    from fabnode.node.local.commons import attest, publish
    from fabnode.node.home import Home

    home = Home(lab.home)
    first = publish(home, EXAMPLE, message="version 0")
    made = [first.version]
    for i in range(1, versions):
        made.append(publish(home, EXAMPLE, message=f"version {i}", design=first.design, label=f"1.{i}").version)
    for i in range(attestations):
        attest(home, made[i % len(made)], result=("passed", "warned", "failed")[i % 3], notes=f"build {i}")


# A node stopped while others publish, and two groups partitioned then joined, are scenarios of
# the simulated network now (tests/test_simnet.py: a lab offline for a month catches up; two
# regions partitioned for a week converge), at 20 to 200 labs instead of 3 to 6 daemons. The
# real-daemon tests below keep what only real processes show: a kill in the middle of a sync,
# a peer sending invalid records over a real stream, seeding through real fetches, periodic sync.


def test_a_restart_in_the_middle_of_a_sync_loses_nothing(tmp_path, daemons):
    """A holds 12,000 records; B starts empty and syncs. B is killed (SIGKILL) as soon as the
    first batch is in; after its restart the sync resumes, B ends with exactly A's set, and
    every record on B verifies."""
    from fabnode.node.home import Home
    from fabnode.protocol.identity import did_from_ed25519
    from fabnode.protocol.records import make_record
    from fabnode.storage import open_db
    from fabnode.storage.records import RecordStore

    from daemons import signing_key

    a, b = make_labs(tmp_path, 2)
    key, author = signing_key(42)
    with open(b.home / "config.toml", "a") as f:  # B does not trust the author: lift the strangers' quota
        f.write("[limits]\nstranger_records_per_author_per_hour = 100000\nstranger_storage_mib = 1000\n"
                "stranger_records_per_peer_per_hour = 100000\n")  # the first batch is 64 KiB now: 11,750 follow
    now = int(time.time() * 1000)
    db_a = open_db(Home(a.home).db_path)
    store = RecordStore(db_a.conn)
    db_a.conn.execute("BEGIN IMMEDIATE")
    for i in range(12_000):
        record = make_record("vouch", {"subject": did_from_ed25519(i.to_bytes(32, "big")), "trust": "trusted"},
                             author=author, ts=now - i, sign=key.sign)
        store.ingest(record, received_ms=now)
    db_a.conn.execute("COMMIT")
    db_a.close()
    before = digest(a.home, NOT_LABS)

    da = start(daemons, a)
    db = start(daemons, b, "--bootstrap", da.addr)
    wait_until(lambda: record_count(b.home) > 0, timeout=60, what="B's first batch")
    db.proc.send_signal(signal.SIGKILL)
    db.proc.wait(timeout=10)
    partial = record_count(b.home)
    assert 0 < partial <= 12_000

    db = start(daemons, b)
    wait_until(lambda: digest(b.home, NOT_LABS) == before, timeout=180, what="B to finish the sync")
    assert digest(a.home, NOT_LABS) == before
    report = b.json("fsck")
    assert report["ok"] and report.get("records", 12_002) == 12_002  # and both labs' own records


def test_a_peer_sending_invalid_records_in_a_sync_is_cut_off(tmp_path):
    """A hostile responder answers the sync with a forged record: B stores none of it, keeps
    what it had, and disconnects that peer."""
    import subprocess
    import sys

    b = make_labs(tmp_path, 1)[0]
    b.run("vouch", "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK", "-m", "mine")
    before = digest(b.home)
    hostile = subprocess.Popen([sys.executable, str(ROOT / "tests" / "hostile_sync.py"), b.json("id")["peer_id"]],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        addr = hostile.stdout.readline().decode().strip()
        assert addr.startswith("/ip4/127.0.0.1/"), hostile.stderr.read().decode() if hostile.poll() else addr
        db = Daemon(b, "--bootstrap", addr)
        try:
            line = db.wait_for("sync with", timeout=20)
            assert "failed" in line and "invalid record" in line and "cutting it off for 60 s" in line
            db.wait_for(f"peer disconnected: {addr.rsplit('/', 1)[1]}", timeout=5)
        finally:
            db.stop()
    finally:
        hostile.stdin.close()
        hostile.wait(timeout=10)
    assert digest(b.home) == before and record_count(b.home) == 2  # the vouch and the lab's own record


def test_the_seeding_policy_fetches_followed_and_trusted_designs_within_the_budget(tmp_path, daemons):
    """A publishes two designs, C one. B (budget 3 MiB) fetches nothing on its own at first.
    B vouches for C's key: C's design arrives by itself. B follows A's big design: it arrives
    (and fills the budget). B follows A's other design: the budget is used up, so it is not
    fetched, and the log and status say so."""
    from conftest import write_random_file

    a, b, c = make_labs(tmp_path, 3)
    write_random_file(tmp_path / "frame" / "frame.step", 3 << 20, seed=11)
    write_random_file(tmp_path / "clamp" / "clamp.scad", 20_000, seed=12)
    pump = a.json("publish", str(EXAMPLE), "-m", "hand pump")
    frame = a.json("publish", str(tmp_path / "frame"), "-m", "a welded frame", "--license", "CERN-OHL-P-2.0")
    clamp = c.json("publish", str(tmp_path / "clamp"), "-m", "a pipe clamp", "--license", "CERN-OHL-P-2.0")
    with open(b.home / "config.toml", "a") as f:
        f.write("[seeding]\nbudget_mib = 3\n")
    da = start(daemons, a)
    dc = start(daemons, c, "--bootstrap", da.addr)
    db = start(daemons, b, "--bootstrap", da.addr, "--bootstrap", dc.addr)
    wait_until(lambda: record_count(b.home, "type = 'version'") == 3, timeout=20, what="B to have the three versions")
    assert b.json("status")["seeding"]["wanted"] == 0 and not db.said("seeding:")

    b.run("vouch", c.json("id")["did"], "-m", "we built their clamp")
    db.wait_for(f"fetch finished: {clamp['bundle']}", timeout=20)

    assert b.out("follow", frame["design"]).startswith(frame["design"])
    db.wait_for(f"fetch finished: {frame['bundle']}", timeout=20)
    assert [f["design"] for f in b.json("follow")] == [frame["design"]]
    assert (tmp_path / "frame" / "frame.step").read_bytes() == b.run("cat", frame["bundle"] + "/frame.step").stdout

    b.run("follow", pump["design"])
    db.wait_for("seeding budget of 3 MiB reached: 1 bundle(s) not fetched", timeout=20)
    status = b.json("status")
    assert status["seeding"]["wanted"] == 1 and status["seeding"]["used_bytes"] >= 3 << 20
    assert not db.said(f"fetch finished: {pump['bundle']}")
    assert "is not in this store" in b.fails("cat", pump["bundle"] + "/okh.toml")
    assert b.out("unfollow", pump["design"]) == f"no longer following {pump['design']}"


def test_connected_nodes_also_sync_periodically(tmp_path, daemons):
    """A record that reaches a store without gossip (written while the daemon runs, e.g. by an
    import) still reaches the connected peer: the periodic sync (sync.interval_seconds) finds it."""
    from fabnode.node.home import Home
    from fabnode.protocol.records import make_record
    from fabnode.storage import open_db
    from fabnode.storage.records import RecordStore

    from daemons import signing_key

    a, b = make_labs(tmp_path, 2)
    for lab in (a, b):
        with open(lab.home / "config.toml", "a") as f:
            f.write("[sync]\ninterval_seconds = 2\n")
    da, db = connect_line(daemons, [a, b])
    # the sync on connecting exchanges the labs' own records first: the record below comes later
    wait_until(lambda: digest(b.home) == digest(a.home), timeout=15, what="the first sync")
    syncer = da if da.peer_id < db.peer_id else db
    before = len(syncer.said("synced with"))
    key, author = signing_key(7)
    record = make_record("vouch", {"subject": signing_key(8)[1], "trust": "trusted"}, author=author,
                         ts=int(time.time() * 1000), sign=key.sign)
    conn = open_db(Home(a.home).db_path).conn
    conn.execute("BEGIN IMMEDIATE")
    RecordStore(conn).ingest(record, received_ms=0)  # not in the outbox: gossip never carries it
    conn.execute("COMMIT")
    conn.close()
    carried = wait_until(lambda: [line for line in syncer.said("synced with")[before:]
                                  if "sent 1," in line or "received 1 new" in line],
                         timeout=15, what="a periodic sync to carry the record")
    assert carried
    wait_until(lambda: digest(b.home) == digest(a.home), timeout=5, what="B to have the record")
