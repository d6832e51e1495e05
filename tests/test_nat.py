"""Labs behind NAT reach each other (issue 21), with real NAT on one machine.

The test builds network namespaces (tests/nattopo.py): a public segment with a hub, and two labs
each behind its own masquerading NAT that drops unsolicited SYNs; no route joins the labs'
private networks. Real `fabnode run` daemons run inside them (``ip netns exec``), and the CLI
runs there too, as on each lab's own machine. One topology serves the whole module, and its
tests run in order. Without
root, ``ip`` or ``iptables`` the tests skip, saying which.
"""

from __future__ import annotations

import filecmp
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import ROOT, Cli
from daemons import Daemon, wait_until
from fabnode.protocol.labs import short_key
from nattopo import HUB_IP, LAB_A_IP, LAB_B_IP, NatTopology, why_unavailable

EXAMPLE = ROOT / "examples" / "hand-pump"
WHY_NOT = why_unavailable()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")


def lab(topo: NatTopology, role: str, home, name: str, *config: str) -> Cli:
    cli = Cli(home, prefix=topo.prefix(role))
    cli.run("init", "--name", name)
    if config:
        (home / "config.toml").write_text("\n".join(config) + "\n")
    return cli


def start_labs(topo: NatTopology, a: Cli, b: Cli, hub: Daemon, started: list) -> tuple[Daemon, Daemon]:
    """Labs A and B, each bootstrapped from the hub, started at once (each waits for its listening line)."""
    with ThreadPoolExecutor(2) as pool:
        starting = [pool.submit(Daemon, lab_cli, "--bootstrap", hub.addr, listen=f"/ip4/{ip}/tcp/4001",
                                prefix=topo.prefix(role))
                    for lab_cli, ip, role in ((a, LAB_A_IP, "lab-a"), (b, LAB_B_IP, "lab-b"))]
        started += [f.result() for f in starting if f.exception() is None]
        return starting[0].result(), starting[1].result()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The topology, a hub and labs A and B behind their NATs, A having published a design."""
    topo = NatTopology(suffix=f"{os.getpid():x}")  # one topology per test process: names never collide
    started: list[Daemon] = []
    try:
        base = tmp_path_factory.mktemp("nat")
        hub = lab(topo, "hub", base / "hub", "Hub")
        a = lab(topo, "lab-a", base / "a", "Lab A")
        b = lab(topo, "lab-b", base / "b", "Lab B")
        dh = Daemon(hub, listen=f"/ip4/{HUB_IP}/tcp/4001", prefix=topo.prefix("hub"))
        started.append(dh)
        da, db = start_labs(topo, a, b, dh, started)
        dh.wait_for(f"reachability: reachable at /ip4/{HUB_IP}/tcp/4001")
        da.wait_for("reachability: behind NAT")
        da.wait_for(f"relay: reachable through relay {dh.peer_id}", timeout=40)
        published = a.json("publish", str(EXAMPLE), "-m", "pump from behind a NAT")
        da.wait_for("as provider in the DHT")  # the hub now knows A holds the bundle
        yield {"topo": topo, "hub": hub, "a": a, "b": b, "dh": dh, "da": da, "db": db, "published": published,
               "tmp": base, "started": started}
    finally:
        for d in started:
            if os.environ.get("NAT_DEBUG"):
                d.said("")
                print("=====", d.peer_id, "\n".join(d.lines))
            if d.proc.poll() is None:
                d.kill()
        topo.close()


def test_a_lab_behind_nat_gets_a_design_held_only_by_another_lab_behind_nat(world):
    b, db, da, dh = world["b"], world["db"], world["da"], world["dh"]
    bundle = world["published"]["bundle"]
    out = world["tmp"] / "pump"
    assert b.out("get", bundle, "-o", str(out), "--timeout", "90") == str(out)
    cmp = filecmp.dircmp(EXAMPLE, out)
    assert not cmp.diff_files and cmp.left_list == cmp.right_list
    for name in ["okh.toml", "bom.csv", "cad/hand-pump.scad", "images/hand-pump.png"]:
        assert (out / name).read_bytes() == (EXAMPLE / name).read_bytes()
    assert db.wait_for(f"fetch finished: {bundle}").endswith(f"from {short_key(da.peer_id)}")
    # A's provider record, kept by the hub, carried A's relayed address: B dialled the circuit from it
    assert db.said(f"relay: reached {short_key(da.peer_id)} through its advertised relay {short_key(world['dh'].peer_id)}")
    # and `get` was told at once why (the daemon's log has the note `get` prints on a terminal)
    assert db.said(f"fetching {bundle}: {short_key(da.peer_id)} is reached only through the relay "
                   f"{short_key(world['dh'].peer_id)} (hole punching has not succeeded yet)")

    # the labs met over the hub's relay, then punched a hole through both NATs (DCUtR)
    wait_until(lambda: b.json("status")["nat"]["links"].get(da.peer_id) == "hole-punched", timeout=60,
               what="a hole-punched direct connection from B to A")
    wait_until(lambda: world["a"].json("status")["nat"]["links"].get(db.peer_id) == "hole-punched", timeout=30,
               what="A to see the hole-punched connection too")

    # status says where each stands and how each peer is reached
    sb, sa, sh = b.json("status"), world["a"].json("status"), world["hub"].json("status")
    assert sh["nat"]["reachability"] == "reachable" and sh["nat"]["addrs"] == [f"/ip4/{HUB_IP}/tcp/4001"]
    assert sh["nat"]["relay"]["offering"] and sh["nat"]["relay"]["relayed_bytes"] > 0
    assert sa["nat"]["reachability"] == "behind NAT" and dh.peer_id in sa["nat"]["relays"]
    assert sb["nat"]["reachability"] == "behind NAT"
    assert sb["nat"]["links"][dh.peer_id] == "direct"
    text = b.out("status")
    assert f"reach     behind NAT: reachable through relay {dh.peer_id}" in text
    assert f"Lab A (unverified) {da.peer_id}: hole-punched" in text, text
    assert f"Hub (unverified) {dh.peer_id}: direct" in text, text
    assert f"reach     reachable at /ip4/{HUB_IP}/tcp/4001" in world["hub"].out("status")


def test_with_the_hubs_relay_off_get_says_in_one_line_why_it_cannot_reach_the_holder(world):
    """The hub restarts with ``relay = false``: A finds no relay, and B's `get` of a bundle only
    A holds fails in one line naming the holder, the NAT and who could seed it."""
    a, b, hub, dh = world["a"], world["b"], world["hub"], world["dh"]
    topo = world["topo"]
    for d in (world["da"], world["db"], dh):  # all restart: no connection (punched or relayed) is left
        d.stop()
    with open(hub.home / "config.toml", "a") as config:
        config.write("relay = false\n")
    dh2 = Daemon(hub, listen=f"/ip4/{HUB_IP}/tcp/4001", prefix=topo.prefix("hub"))
    world["started"].append(dh2)
    da, db = start_labs(topo, a, b, dh, world["started"])
    dh2.wait_for("reachability: reachable at", timeout=60)
    assert not dh2.said("relay: offering")
    da.wait_for("as provider in the DHT", timeout=60)  # the first design again, after the restart
    tree = world["tmp"] / "second"
    tree.mkdir()
    (tree / "notes.txt").write_text("a second design, held only by lab A\n")
    bundle = a.out("add", str(tree))
    da.wait_for("announced 1 bundle(s) as provider in the DHT", timeout=60)
    line = b.fails("get", bundle, "-o", str(world["tmp"] / "second-out"), "--timeout", "8")
    assert f"the holder {short_key(da.peer_id)} is behind NAT and no relay is reachable" in line, line
    assert f"ask a public node ({short_key(dh.peer_id)}) to seed it" in line, line
    assert not (world["tmp"] / "second-out").exists()
    status = hub.json("status")
    assert status["nat"]["relay"] is None and "relay     off" in hub.out("status")
    world.update(dh=dh2, da=da, db=db)


def test_a_hub_seeds_what_its_trusted_labs_publish_so_others_get_it_with_the_lab_gone(world):
    """The hub configuration (config.example.toml): the hub vouches for lab A, so it seeds what A
    publishes (seeding.follow_trusted_authors); A goes offline, and B still gets A's new design,
    byte-identical, from the hub, with the hub's relay still off."""
    a, b, hub, dh, da, db = (world[k] for k in ("a", "b", "hub", "dh", "da", "db"))
    hub.run("vouch", a.json("id")["did"], "-m", "our region's lab A")
    tree = world["tmp"] / "third"
    (tree / "cad").mkdir(parents=True)
    (tree / "cad" / "frame.scad").write_text("cube([40, 40, 2]);\n")
    (tree / "okh.toml").write_bytes((EXAMPLE / "okh.toml").read_bytes())
    published = a.json("publish", str(tree), "-m", "a frame, seeded by the hub")
    dh.wait_for(f"fetch finished: {published['bundle']}", timeout=60)
    da.stop()
    out = world["tmp"] / "third-out"
    assert b.out("get", published["bundle"], "-o", str(out), "--timeout", "30") == str(out)
    assert (out / "cad" / "frame.scad").read_bytes() == (tree / "cad" / "frame.scad").read_bytes()
    assert (out / "okh.toml").read_bytes() == (tree / "okh.toml").read_bytes()
    assert db.wait_for(f"fetch finished: {published['bundle']}").endswith(f"from {short_key(dh.peer_id)}")
