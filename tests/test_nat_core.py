"""The pure decisions behind NAT traversal (protocol/nat.py): reachability verdicts, the dial-back
helper's budget and the relay's gate. The real thing, with namespaces, is tests/test_nat.py."""

from __future__ import annotations

from fabnode.protocol.nat import (BEHIND_NAT, HOUR_MS, MINUTE_MS, REACHABLE, UNKNOWN, DialbackBudget, Reachability,
                                  RelayGate, RelayLimits)

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


# ------------------------------------------------------------------ the relay under attack, for real

def test_a_relay_client_flooding_reservations_and_circuits_is_limited_and_logged_in_one_line(tmp_path, daemons):
    """A py-libp2p host asks a public node's relay (on 127.0.0.1) for 40 reservations and 40
    circuits: it gets the per-minute allowance, the rest are refused, and the relay's log has one
    line about it. The relay stays up and keeps serving its honest peer."""
    from test_hostile_peers import Attacker

    from daemons import make_labs, start

    relay_lab, helper_lab = make_labs(tmp_path, 2)
    relay = start(daemons, relay_lab)
    helper = start(daemons, helper_lab, "--bootstrap", relay.addr)
    relay.wait_for("reachability: reachable at /ip4/127.0.0.1/")  # the helper dialled it back
    relay.wait_for("relay: offering circuit relay")
    flood = Attacker("relay-flood", relay.addr, "40")
    try:
        granted, refused = map(int, flood.addr.split())
        assert (granted, refused) == (RelayLimits().reservations_per_minute, 40 - RelayLimits().reservations_per_minute)
        lines = relay.said("relay: refused")
        assert len(lines) == 1 and "over 6 reservation requests a minute" in lines[0], lines
        status = relay_lab.json("status")["nat"]["relay"]
        assert status["refused"] == refused + 40 and status["circuits"] == 0  # every circuit refused too
        assert helper.peer_id in relay_lab.json("status")["nat"]["links"]
    finally:
        flood.stop()


def test_a_large_fetch_over_a_relay_past_its_limits_says_why_it_stopped_and_who_could_seed_it(tmp_path, daemons):
    """Labs A and B cannot be dialled (each announces a closed port, as labs behind NAT are seen)
    and A holds 3 MiB; the relay cuts a circuit after 1 MiB and relays 2 MiB an hour for a peer.
    B's `get` comes back with one line naming the relay, its limits and the public node to ask."""
    from conftest import write_random_file
    from daemons import make_labs, start
    from fabnode.protocol.labs import short_key

    r, a, b = make_labs(tmp_path, 3)
    with open(r.home / "config.toml", "a") as config:
        config.write("[limits]\nrelay_circuit_mib = 1\nrelay_peer_mib_per_hour = 2\n")
    for lab in (a, b):
        with open(lab.home / "config.toml", "a") as config:
            config.write("hole_punching = false\n")
    dr = start(daemons, r)
    da = start(daemons, a, "--bootstrap", dr.addr, "--announce", "/ip4/127.0.0.1/tcp/1")
    db = start(daemons, b, "--bootstrap", dr.addr, "--announce", "/ip4/127.0.0.1/tcp/1")
    da.wait_for(f"relay: reachable through relay {dr.peer_id}", timeout=40)
    big = write_random_file(tmp_path / "big.bin", 3 << 20, seed=21)
    bundle = a.out("add", str(big))
    da.wait_for("as provider in the DHT")
    line = b.fails("get", bundle, "-o", str(tmp_path / "out.bin"), "--timeout", "12")
    # the last word on A: its circuit was cut past the relay's limits, or the relay refuses more
    last = line.split(f"{short_key(da.peer_id)}: ", 1)[1]
    assert f"relay {short_key(dr.peer_id)}" in last and "past its limits" in last or "over its limits" in last, line
    assert f"ask a public node ({short_key(dr.peer_id)}) to seed it" in last, line
    assert dr.said(f"relay: cut a circuit of {short_key(da.peer_id)}: over the relay's 1 MiB a circuit")
    assert not (tmp_path / "out.bin").exists()
