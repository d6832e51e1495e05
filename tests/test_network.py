"""The node online: real `fabnode run` processes on 127.0.0.1, driven through the real CLI.

Each test waits for events (a daemon's log line, a row in a node's database) with deadlines;
none sleeps a fixed time.
"""

from __future__ import annotations

import filecmp
import json

import pytest

from .conftest import ROOT, Cli
from .daemons import Daemon, daemon_state, has_record, record_count, wait_until

EXAMPLE = ROOT / "examples" / "hand-pump"


def make_labs(tmp_path, n: int) -> list[Cli]:
    labs = []
    for i in range(n):
        lab = Cli(tmp_path / f"lab{i}")
        lab.run("init", "--name", f"Lab {i}")
        labs.append(lab)
    return labs


@pytest.fixture
def daemons():
    """Daemons started in a test; whatever is still running at the end is killed."""
    started: list[Daemon] = []
    yield started
    for d in started:
        if d.proc.poll() is None:
            d.kill()


def start(daemons: list, lab: Cli, *args: str, **kw) -> Daemon:
    d = Daemon(lab, *args, **kw)
    daemons.append(d)
    return d


def connect_line(daemons: list, labs: list[Cli]) -> list[Daemon]:
    """Start one daemon per lab, each bootstrapping from the one before: a line."""
    line = [start(daemons, labs[0])]
    for lab in labs[1:]:
        line.append(start(daemons, lab, "--bootstrap", line[-1].addr))
    for left, right in zip(line, line[1:]):
        right.wait_for(f"peer connected: {left.peer_id}")
        left.wait_for(f"peer connected: {right.peer_id}")
    return line


def test_publish_on_one_node_is_visible_on_the_other_and_get_is_byte_identical(tmp_path, daemons):
    a, b = make_labs(tmp_path, 2)
    da, db = connect_line(daemons, [a, b])

    published = a.json("publish", str(EXAMPLE), "-m", "first design")
    got = db.wait_for(f"record received: version {published['version']}", timeout=10)
    assert "Direct-action PVC hand pump" in got
    assert da.wait_for(f"announced {published['version']}")
    history = b.json("log")
    assert [v["version"] for v in history["versions"]] == [published["version"]]

    attestation = b.out("attest", published["version"], "--result", "passed", "-m", "built it, pumps 20 l/min")
    da.wait_for(f"record received: attestation {attestation}", timeout=10)
    assert has_record(a.home, attestation)

    # B does not hold the bundle: `get` asks its daemon, which fetches from A
    out = tmp_path / "pump"
    assert b.out("get", published["bundle"], "-o", str(out)) == str(out)
    assert not filecmp.dircmp(EXAMPLE, out).diff_files and filecmp.dircmp(EXAMPLE, out).left_list == \
        filecmp.dircmp(EXAMPLE, out).right_list
    for name in ["okh.toml", "bom.csv", "cad/hand-pump.scad", "images/hand-pump.png"]:
        assert (out / name).read_bytes() == (EXAMPLE / name).read_bytes()
    db.wait_for(f"fetch finished: {published['bundle']}")
    assert b.json("fsck")["ok"]

    # status and peers show the connection, from either side
    status = b.json("status")
    assert status["running"] and status["connected"] == 1 and status["outbox"] == 0
    assert status["addrs"] == [db.addr]
    peers = b.json("peers")
    assert [(p["peer_id"], p["source"], p["connected"]) for p in peers] == [(da.peer_id, "bootstrap", True)]
    assert peers[0]["address"] == da.addr.rsplit("/p2p/", 1)[0]
    assert [p["peer_id"] for p in a.json("peers") if p["connected"]] == [db.peer_id]

    # SIGTERM: A exits within two seconds and leaves no connection behind (B sees it go)
    assert da.stop() < 2.0 and da.proc.returncode == 0
    db.wait_for(f"peer disconnected: {da.peer_id}", timeout=2)
    assert not (a.home / "daemon.json").exists()
    assert a.json("status")["running"] is False


def test_thirty_records_published_in_one_second_all_arrive(tmp_path, daemons):
    """The library's defaults drop bursts silently (10 of 30 arrive); the daemon is tuned so
    that none is lost. The records are made in-process, all within well under a second."""
    import time

    from node.commons import vouch
    from node.home import Home
    from protocol.identity import did_from_ed25519

    a, b = make_labs(tmp_path, 2)
    da, db = connect_line(daemons, [a, b])
    home = Home(a.home)
    start_t = time.monotonic()
    made = [vouch(home, did_from_ed25519(bytes([i]) * 32), note=f"burst {i}") for i in range(30)]
    assert time.monotonic() - start_t < 1.0
    wait_until(lambda: all(has_record(b.home, cid) for cid in made), timeout=15, what="all 30 records on B")
    assert len(db.said("record received: vouch")) == 30
    assert record_count(a.home, "outbox = 1") == 0


def test_a_record_crosses_five_nodes_in_a_line_both_ways(tmp_path, daemons):
    labs = make_labs(tmp_path, 5)
    line = connect_line(daemons, labs)
    first = labs[0].json("publish", str(EXAMPLE), "-m", "from the west end")
    line[-1].wait_for(f"record received: version {first['version']}", timeout=20)
    for middle in line[1:-1]:  # every node on the way stored it as it passed
        assert has_record(middle.cli.home, first["version"])
    back = labs[-1].out("attest", first["version"], "--result", "warned", "-m", "leaks at the seal")
    line[0].wait_for(f"record received: attestation {back}", timeout=20)
    assert record_count(labs[0].home) == 2


def test_peers_are_redialled_after_either_side_restarts(tmp_path, daemons):
    a, b = make_labs(tmp_path, 2)
    da, db = connect_line(daemons, [a, b])
    port_a, port_b = da.port, db.port

    # B restarts with no --bootstrap: it finds A in its peers table and dials it again
    db.stop()
    da.wait_for(f"peer disconnected: {db.peer_id}")
    db = start(daemons, b, listen=f"/ip4/127.0.0.1/tcp/{port_b}")
    db.wait_for(f"peer connected: {da.peer_id}", timeout=10)

    # A restarts: B notices, redials with backoff (past libp2p's 60 s negative cache) and gets in
    da.stop()
    db.wait_for(f"peer disconnected: {da.peer_id}")
    da = start(daemons, a, listen=f"/ip4/127.0.0.1/tcp/{port_a}")
    db.wait_for(f"peer connected: {da.peer_id}", timeout=15)
    version = a.json("publish", str(EXAMPLE), "-m", "after both restarts")["version"]
    db.wait_for(f"record received: version {version}", timeout=10)

    rows = {p["peer_id"]: p for p in b.json("peers")}
    assert rows[da.peer_id]["connected"] and rows[da.peer_id]["failures"] == 0
    assert daemon_state(b.home)["addrs"] == [db.addr]


def test_records_made_while_offline_wait_in_the_outbox_and_go_out_on_connect(tmp_path, daemons):
    a, b = make_labs(tmp_path, 2)
    da = start(daemons, a)
    made = [a.out("vouch", "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK", "-m", "met at the fair")]
    wait_until(lambda: json.loads(a.run("status", "--json").stdout)["outbox"] == 1, what="the outbox to hold it")
    assert not da.said("announced")  # nobody to tell yet: it waits
    db = start(daemons, b, "--bootstrap", da.addr)
    db.wait_for(f"record received: vouch {made[0]}", timeout=10)
    assert a.json("status")["outbox"] == 0
