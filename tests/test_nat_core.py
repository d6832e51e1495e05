"""The pure decisions behind NAT traversal (protocol/nat.py): reachability verdicts, the dial-back
helper's budget, the relay's gate, what `get` says about a link, advertised circuit addresses;
then relays on 127.0.0.1 for real, one set of daemons shared by the module (labs "behind NAT"
there announce a closed port). The real thing, with namespaces, is tests/test_nat.py."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import run_on_terminal, write_random_file
from daemons import Daemon, make_labs
from fabnode.node.runtime.nat import circuit_relays
from fabnode.protocol.labs import short_key
from fabnode.protocol.nat import (BEHIND_NAT, HOUR_MS, MINUTE_MS, REACHABLE, UNKNOWN, DialbackBudget, Reachability,
                                  RelayGate, RelayLimits, link_note)

NOBODY_BANNED = staticmethod(lambda peer: False)


def test_reachability_needs_the_configured_number_of_helpers_and_forgets_those_gone():
    r = Reachability(confirmations=2)
    assert r.verdict() == (UNKNOWN, [])
    r.heard("h1", True, "/ip4/198.18.0.1/tcp/4001")
    assert r.verdict() == (UNKNOWN, [])  # one helper is not enough when two are asked for
    r.heard("h2", True, "/ip4/198.18.0.1/tcp/4001")
    assert r.verdict() == (REACHABLE, ["/ip4/198.18.0.1/tcp/4001"])
    r.heard("h2", False, "/ip4/198.18.0.1/tcp/4001")  # a new answer replaces the old one
    r.heard("h3", False, "/ip4/198.18.0.1/tcp/4001")
    assert r.verdict() == (BEHIND_NAT, ["/ip4/198.18.0.1/tcp/4001"])
    r.forget("h3")
    assert r.verdict() == (UNKNOWN, [])


def test_a_helper_dials_each_peer_back_at_most_once_per_interval_and_a_few_at_once():
    b = DialbackBudget(interval_ms=10_000, at_once=2)
    assert b.take("p1", 0) is None
    assert "again within 10 s" in b.take("p1", 5_000)
    assert b.take("p2", 5_000) is None
    assert "already dialling 2" in b.take("p3", 5_000)
    b.done()
    assert b.take("p3", 5_000) is None
    b.done(), b.done()
    assert b.take("p1", 10_001) is None


def test_the_relay_refuses_reservation_floods_and_banned_peers_and_caps_the_total():
    gate = RelayGate(RelayLimits(reservations=2, reservations_per_minute=3))
    assert gate.reserve("bad", 0, banned=True) == "banned here"
    assert [gate.reserve("a", t, banned=False) for t in (0, 1, 2)] == [None, None, None]  # refreshes
    assert "over 3 reservation requests a minute" in gate.reserve("a", 3, banned=False)
    assert gate.reserve("a", MINUTE_MS + 1, banned=False) is None  # the next minute
    assert gate.reserve("b", 10, banned=False) is None
    assert "all 2 reservation slots are taken" in gate.reserve("c", 11, banned=False)
    gate.release("b")
    assert gate.reserve("c", 12, banned=False) is None
    assert gate.status()["reservations"] == 2 and gate.refused == 3


def test_circuits_need_a_reservation_and_are_capped_per_peer_and_in_total():
    gate = RelayGate(RelayLimits(circuits=3, circuits_per_peer=2))
    gate.reserve("t", 0, banned=False)
    gate.reserve("u", 0, banned=False)
    assert gate.open("s", "x", 0, lambda p: False) == (None, "x holds no reservation here")
    assert gate.open("s", "t", 0, lambda p: p == "s")[1] == "s is banned here"
    assert gate.open("s", "t", 0, lambda p: p == "t")[1] == "t is banned here"
    first, _ = gate.open("s", "t", 0, lambda p: False)
    second, _ = gate.open("s", "t", 0, lambda p: False)
    assert first and second and first != second
    assert gate.open("s", "u", 0, lambda p: False) == (None, "s already has 2 circuits here")
    third, _ = gate.open("v", "u", 0, lambda p: False)
    assert third
    assert gate.open("w", "u", 0, lambda p: False) == (None, "all 3 circuits are in use")
    gate.close(first)
    assert gate.open("w", "u", 0, lambda p: False)[0]


def test_relayed_bytes_count_per_circuit_per_peer_and_hour_and_the_total_is_paced():
    limits = RelayLimits(circuit_bytes=20 << 20, circuit_seconds=60, bytes_per_second=1 << 20,
                         peer_bytes_per_hour=12 << 20)
    gate = RelayGate(limits)
    gate.reserve("t", 0, banned=False)
    c, _ = gate.open("s", "t", 0, lambda p: False)
    assert gate.carried(c, 1 << 20, 0) == (0.0, None)
    wait, stop = gate.carried(c, 1 << 20, 0)  # the second MiB in the same instant waits a second
    assert stop is None and abs(wait - 1.0) < 1e-9
    assert gate.carried(c, 19 << 20, 10)[1] == "over the relay's 20 MiB a circuit"
    assert gate.carried(c, 1, 61_000)[1] == "over the relay's 60 s a circuit"
    gate.close(c)
    c2, _ = gate.open("s", "t", 1000, lambda p: False)
    for _ in range(8):
        assert gate.carried(c2, 1 << 20, 2000)[1] is None
    # s and t have had 10 MiB relayed this hour: 2 more would pass the 12 MiB per-peer budget
    assert gate.carried(c2, 3 << 20, 3000)[1] == "s is over its 12 MiB of relaying an hour"
    gate.close(c2)
    assert gate.open("s", "t", 4000, lambda p: False)[0] is not None
    gate.carried(gate._next_id, 2 << 20, 4000)
    assert "used its 12 MiB of relaying this hour" in gate.open("s", "t", 5000, lambda p: False)[1]
    assert gate.open("s", "t", HOUR_MS + 5000, lambda p: False)[0] is not None  # an hour later
    assert gate.status()["relayed_bytes"] == 12 << 20


def test_get_names_the_relay_why_it_is_slow_and_who_could_seed_it_and_says_when_the_link_turned_direct():
    limits = RelayLimits()
    relayed = link_note("A", "R", "relayed", True, limits)
    assert relayed.startswith("A is reached only through the relay R (hole punching has not succeeded yet): slow")
    assert "64 MiB and 600 s a connection, 4 MiB/s in all" in relayed and relayed.endswith("a public node (R) could seed it")
    assert "(hole punching is off here)" in link_note("A", "R", "relayed", False, limits)
    assert link_note("A", "R", "hole-punched", True, limits) == \
        "A is now reached directly (hole punched through both NATs), no longer through the relay R"
    assert link_note("A", "R", "direct", True, limits) == "" and link_note("A", "", "relayed", True, limits) == ""


def test_only_well_formed_circuit_addresses_a_peer_advertises_for_itself_are_dialled():
    relay, other, me, peer = "12D3KooWRelay", "12D3KooWOther", "12D3KooWMe", "12D3KooWPeer"
    good = f"/ip4/198.18.0.1/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{peer}"
    assert circuit_relays([good, good, f"/ip4/198.18.0.1/tcp/4001/p2p/{relay}/p2p-circuit"], peer, me) == \
        [(f"/ip4/198.18.0.1/tcp/4001/p2p/{relay}", relay)]  # each relay once
    assert circuit_relays([
        f"/ip4/198.18.0.2/tcp/4001/p2p/{other}/p2p-circuit/p2p/{relay}",  # a circuit to someone else
        f"/p2p/{other}/p2p-circuit/p2p/{peer}",  # no address to dial the relay at
        f"/ip4/198.18.0.2/tcp/4001/p2p/{me}/p2p-circuit/p2p/{peer}",  # through us
        f"/ip4/198.18.0.2/tcp/4001/p2p/{peer}/p2p-circuit/p2p/{peer}",  # through itself
        "/ip4/198.18.0.2/tcp/4001"], peer, me) == []
    many = [f"/ip4/198.18.0.{i}/tcp/4001/p2p/R{i}/p2p-circuit/p2p/{peer}" for i in range(10)]
    assert len(circuit_relays(many, peer, me)) == 4  # a provider record cannot make us dial a crowd


# ------------------------------------------------------------------ relays on 127.0.0.1, for real

CLOSED = "/ip4/127.0.0.1/tcp/1"
"""What a lab behind NAT announces here: an address nobody can dial."""


@pytest.fixture(scope="module")
def relays(tmp_path_factory):
    """Relay R (1 MiB relayed per peer an hour) and hub H2, both public, H2 bootstrapped from R;
    lab A behind "NAT" knows only R and holds a slot there, lab B behind "NAT" knows only H2.
    Hole punching is off (on loopback it would always succeed)."""
    base = tmp_path_factory.mktemp("relays")
    r, h2, a, b = make_labs(base, 4)
    (r.home / "config.toml").write_text("[limits]\nrelay_peer_mib_per_hour = 1\n")
    for lab in (a, b):
        (lab.home / "config.toml").write_text("hole_punching = false\n")
    started: list[Daemon] = []
    try:
        dr = Daemon(r)
        started.append(dr)
        with ThreadPoolExecutor(2) as pool:  # both start at once: each waits for its listening line
            starting = [pool.submit(Daemon, h2, "--bootstrap", dr.addr),
                        pool.submit(Daemon, a, "--bootstrap", dr.addr, "--announce", CLOSED)]
            started += [f.result() for f in starting if f.exception() is None]
            dh2, da = (f.result() for f in starting)
        db = Daemon(b, "--bootstrap", dh2.addr, "--announce", CLOSED)
        started.append(db)
        dr.wait_for("relay: offering circuit relay")
        da.wait_for(f"relay: reachable through relay {dr.peer_id}", timeout=40)
        yield {"base": base, "r": r, "a": a, "b": b, "dr": dr, "dh2": dh2, "da": da, "db": db}
    finally:
        for d in started:
            if d.proc.poll() is None:
                d.kill()


def test_a_relay_client_flooding_reservations_and_circuits_is_limited_and_logged_in_one_line(relays):
    """A py-libp2p host asks R's relay for 40 reservations and 40 circuits: it gets the
    per-minute allowance, the rest are refused, and R's log has one line about it. R stays up
    and keeps serving its honest peers."""
    from test_hostile_peers import Attacker

    r, dr = relays["r"], relays["dr"]
    refused_before = r.json("status")["nat"]["relay"]["refused"]
    flood = Attacker("relay-flood", dr.addr, "40")
    try:
        granted, refused = map(int, flood.addr.split())
        assert (granted, refused) == (RelayLimits().reservations_per_minute, 40 - RelayLimits().reservations_per_minute)
        lines = [line for line in dr.said("relay: refused") if "reservation requests a minute" in line]
        assert len(lines) == 1 and "over 6 reservation requests a minute" in lines[0], lines
        status = r.json("status")["nat"]
        assert status["relay"]["refused"] - refused_before == refused + 40  # every circuit refused too
        assert relays["da"].peer_id in status["links"] and status["relay"]["reservations"] >= 1  # A keeps its slot
    finally:
        flood.stop()


def test_a_peer_cut_off_for_an_offence_gets_no_relay_slot(relays):
    """A peer that broke a rule of issue 12 (a fetch request over 4 MiB) is cut off by R, and
    R's relay then gives it nothing: its reservation is refused or its connection dropped."""
    from test_hostile_peers import Attacker

    dr = relays["dr"]
    offender = Attacker("relay-after-offence", dr.addr)
    try:
        assert offender.addr in ("refused", "cut off"), offender.addr
        dr.wait_for("cutting it off for")
    finally:
        offender.stop()


def test_a_lab_sharing_no_relay_with_the_holder_reaches_it_through_its_advertised_relay_and_hears_why_slow(relays):
    """B knows only H2; A holds a slot only on R. A's provider record (kept by R) carries A's
    relayed address, so B dials R, then the circuit through it, and gets A's file; `get` on a
    terminal says once, at once, that A is reached through R, why that is slow, who could seed it."""
    a, b, dr, da, db = (relays[k] for k in ("a", "b", "dr", "da", "db"))
    assert dr.peer_id not in b.json("status")["nat"]["links"]  # B met R nowhere yet
    small = write_random_file(relays["base"] / "small.bin", 96 << 10, seed=211)
    bundle = a.out("add", str(small))
    da.wait_for("announced 1 bundle(s) as provider in the DHT")
    out = relays["base"] / "small-out.bin"
    code, shown = run_on_terminal(b, "get", bundle, "-o", str(out), "--timeout", "40")
    text = shown.decode(errors="replace")
    assert code == 0, text
    assert out.read_bytes() == small.read_bytes()
    assert db.said(f"relay: reached {short_key(da.peer_id)} through its advertised relay {short_key(dr.peer_id)}")
    note = (f"note: {short_key(da.peer_id)} is reached only through the relay {short_key(dr.peer_id)} "
            "(hole punching is off here): slow")
    assert text.count(note) == 1, text
    assert f"a public node ({short_key(dr.peer_id)}) could seed it" in text, text
    assert db.said(f"fetching {bundle}: {short_key(da.peer_id)} is reached only through the relay")


def test_a_peer_past_its_relayed_bytes_budget_is_cut_in_one_line_and_get_says_why_and_who_could_seed_it(relays):
    """R relays 1 MiB an hour for a peer, counted also in its upload pacer per peer (the budgets
    of issue 12). B's `get` of 2 MiB A holds (B reached A through R just before) is cut: one line in R's log, one line from `get`
    naming the relay, its limits and the public node to ask."""
    a, b, r, dr, da, db = (relays[k] for k in ("a", "b", "r", "dr", "da", "db"))
    big = write_random_file(relays["base"] / "big.bin", 2 << 20, seed=21)
    bundle = a.out("add", str(big))
    da.wait_for("announced 1 bundle(s) as provider in the DHT")
    line = b.fails("get", bundle, "-o", str(relays["base"] / "big-out.bin"), "--timeout", "8")
    last = line.split(f"{short_key(da.peer_id)}: ", 1)[1]
    assert f"relay {short_key(dr.peer_id)}" in last and ("past its limits" in last or "over its limits" in last), line
    assert f"ask a public node ({short_key(dr.peer_id)}) to seed it" in last, line
    cut = [x for x in dr.said("relay: cut a circuit") if "of relaying an hour" in x]
    assert len(cut) == 1 and "is over its 1 MiB of relaying an hour" in cut[0], dr.said("relay:")
    per_peer = r.json("status")["sent"]["sent_bytes_per_peer"]
    assert sum(per_peer.get(p, {}).get("relay", 0) for p in (da.peer_id, db.peer_id)) >= 1 << 19, per_peer
    assert not (relays["base"] / "big-out.bin").exists()
