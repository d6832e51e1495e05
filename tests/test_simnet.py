"""The network as scenarios in the simulator (tests/simnet.py): the same NodeService the daemon
runs, many labs in one process, virtual time, one seed per run.

The whole file is meant to stay under ~40 s of real time on a slow 2-core machine: a simulated
event costs about 70–100 µs (most of it the service's own handling), so each scenario is sized
in events — lab counts, record counts and sync intervals are chosen for that and each docstring
says how.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from simnet import (DAY, HOUR, MINUTE, SIM_CONFIG, Link, Sim, forged, network, random_graph,  # noqa: E402
                    two_regions)

from memstore import Author  # noqa: E402

from fabnode.node.service import effects as fx  # noqa: E402
from fabnode.protocol.sync import PROTOCOL as SYNC  # noqa: E402
from fabnode.protocol.varint import encode_varint  # noqa: E402

from fabnode.protocol.cid import DAG_CBOR, make_cid  # noqa: E402

RECORD_BYTES = 270
"""About the size of a simulated record (a vouch): the unit of the byte budgets below."""


def converged(sim: Sim, nodes=None) -> bool:
    nodes = range(len(sim.nodes)) if nodes is None else nodes
    counts = {len(sim.nodes[i].store.blocks) for i in nodes}
    return len(counts) == 1 and len({sim.nodes[i].store.digest() for i in nodes}) == 1


def assert_bytes(sim: Sim, records: int, most: float, mean: float) -> None:
    """Bytes each lab sent over the whole run (gossip, sync rounds, catching up), in copies of
    the ``records`` published: at most ``most`` for any lab, ``mean`` on average."""
    sent = [n.bytes_sent for n in sim.nodes]
    assert max(sent) <= most * records * RECORD_BYTES, (max(sent), records)
    assert sum(sent) / len(sent) <= mean * records * RECORD_BYTES, (sum(sent) / len(sent), records)


def assert_bounded(sim: Sim, *, degree: int = 8) -> dict:
    """No node's queues grew without bound: each is within what its degree and the service's
    own limits allow, and nothing waits for an answer that never comes."""
    q = sim.peak
    assert q.get("sessions", 0) <= 8, q  # MAX_SYNCS
    assert q.get("pending_syncs", 0) <= degree + 2, q
    now = sim.max_queues()
    assert now.get("tickets", 0) == 0 and q.get("tickets", 0) == 0, q  # StoreRecords is answered at once
    assert now.get("effects", 0) == 0 and q.get("effects", 0) == 0, q  # every effect was drained
    assert q.get("announcing", 0) <= 100, q  # OUTBOX_BATCH
    assert q.get("streams", 0) <= 2 * 8 + degree, q
    assert q.get("ticks", 0) <= 50, q
    assert q.get("inbox", 0) <= 200, q
    assert q.get("dialing", 0) <= degree + 2, q
    assert sim.max_pending <= 5_000, sim.max_pending
    return q


# ==================================================================== the simulator itself


def two_labs(link: Link = Link(), **kw) -> Sim:
    sim = Sim(2, link=link, **kw)
    sim.bootstrap([(0, 1)])
    sim.start_all()
    return sim


def test_latency_orders_delivery_and_connects_after_two_round_trips():
    sim = two_labs(Link(latency_ms=100))
    sim.run_for(399)
    assert not sim.nodes[0].conns
    sim.run_for(2)
    assert 1 in sim.nodes[0].conns and 0 in sim.nodes[1].conns
    assert sim.nodes[0].svc.mesh_peers == 1 and sim.nodes[1].svc.mesh_peers == 1
    sent = sim.now
    cids = sim.publish(0)
    sim.run_until(lambda s: s.everyone_has(cids), 10_000, step_ms=1)
    arrived = sim.arrivals[cids[0]]
    assert arrived[0] == sent and 100 <= arrived[1] - sent <= 102  # one way, plus ~0.2 ms on the wire


def test_bandwidth_queues_bytes_on_a_link():
    sim = Sim(2, link=Link(latency_ms=10, bits_per_second=80_000))  # 10 bytes a millisecond
    t = [sim._transmit(0, 1, 1000) for _ in range(3)]
    assert t == [110.0 + sim.t0, 210.0 + sim.t0, 310.0 + sim.t0]
    assert sim._transmit(1, 0, 1000) == 110.0 + sim.t0  # the other direction has its own queue
    assert sim.max_link_backlog == 2000


def test_loss_delays_but_never_drops_or_reorders():
    sim = Sim(2, seed=3, link=Link(latency_ms=50, loss=0.3))
    times = []
    for k in range(200):
        times.append(sim._transmit(0, 1, 100))
        if k % 2:
            sim.now += 1000  # pairs: the second of a pair waits behind a delayed first (TCP)
    assert times == sorted(times)
    delays = [t - sim.t0 - 1000 * (k // 2) for k, t in enumerate(times)]
    late = [d for d in delays if d > 60]
    assert 30 <= len(late) <= 110 and all(250 <= d <= 251 for d in late)  # + max(RTT, 200 ms)


def test_partition_blocks_dials_and_closes_connections_across():
    sim = two_labs()
    sim.run_for(1000)
    assert sim.nodes[0].conns
    sim.partition([0], [1])
    assert not sim.nodes[0].conns and not sim.nodes[1].conns
    assert sim.nodes[0].svc.connected == {} and sim.nodes[1].svc.connected == {}
    sim.run_for(60_000)
    assert not sim.nodes[0].conns
    assert sim.nodes[0].svc.book.get("lab0001").failures >= 3  # the service's own backoff
    assert any("cannot reach lab0001" in line for _, _, line in sim.trace)
    sim.heal()
    sim.run_for(MINUTE)  # a bootstrap peer's backoff is at most a minute (issue 14)
    assert sim.nodes[0].conns


def test_a_frame_over_the_limit_is_the_peers_fault_and_a_failed_link_is_redialled():
    sim = two_labs()
    sim.run_for(1000)
    evil = sim.nodes[0]
    evil.svc._emit(fx.OpenStream(("evil", 1), "lab0001", SYNC))  # a stream the service never asked for
    evil.svc._emit(fx.SendFrame(("evil", 1), encode_varint(600 << 10) + bytes(600 << 10)))
    sim._effects(evil)
    sim.run_for(1000)
    offence = sim.nodes[1].svc.penalties._by_peer["lab0000"]
    assert offence.reason == "sync: frame of 614400 bytes over the limit"
    first, *again = sim.disconnects
    assert first[1:] == ("lab0001", "lab0000", "sync: frame of 614400 bytes over the limit")
    assert again and all(d[1:] == ("lab0001", "lab0000", "cut off") for d in again)  # it redials at once
    assert not sim.nodes[0].conns
    sim.run_for(2 * MINUTE)  # the penalty is over: lab0000 redials
    assert sim.nodes[0].conns
    sim.fail_link(0, 1)
    assert not sim.nodes[0].conns and not sim.nodes[1].svc.connected
    sim.run_for(5_000)
    assert sim.nodes[0].conns and sim.nodes[1].svc.connected == {"lab0000": "/sim/0"}


def test_stop_and_start_keep_the_store_and_the_peer_book():
    sim = two_labs()
    sim.run_for(1000)
    cids = sim.publish(1, 3)
    sim.run_for(1000)
    sim.stop(0)
    assert not sim.nodes[1].conns and sim.nodes[1].svc.connected == {}
    more = sim.publish(1, 2)
    sim.run_for(HOUR)
    sim.start(1)  # already running: nothing
    sim.start(0)
    assert "lab0001" in sim.nodes[0].svc.book.entries
    sim.run_for(MINUTE)
    assert sim.everyone_has(cids + more)
    assert converged(sim)


def test_a_seed_reproduces_a_run_exactly():
    def run(seed):
        sim = network(30, seed=seed, link=Link(latency_ms=40, loss=0.05))
        for k in range(6):
            sim.at(sim.now + k * 7_000, lambda s: s.publish(s.rng.randrange(30), 2))
        sim.at(sim.now + 20_000, lambda s: s.stop(s.rng.randrange(30)))
        sim.run_for(3 * MINUTE)
        return sim.trace_digest, sim.events, [n.store.digest() for n in sim.nodes], list(sim.trace)

    a, b, c = run(7), run(7), run(8)
    assert a == b
    assert a[0] != c[0]


def test_a_seed_reproduces_a_run_in_another_process():
    """Nothing depends on Python's per-process string hashing (PYTHONHASHSEED)."""
    script = (
        "import sys; sys.path.insert(0, 'tests')\n"
        "from simnet import *\n"
        "sim = network(20, seed=9, link=Link(latency_ms=40, loss=0.05))\n"
        "sim.at(sim.now + 5_000, lambda s: s.publish(s.rng.randrange(20), 3))\n"
        "sim.at(sim.now + 9_000, lambda s: s.stop(s.rng.randrange(20)))\n"
        "sim.run_for(MINUTE)\n"
        "print(sim.trace_digest, sim.events, [n.store.digest().hex()[:8] for n in sim.nodes])\n")
    root = Path(__file__).resolve().parent.parent
    out = {subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONHASHSEED": str(h)}).stdout for h in (1, 2)}
    assert len(out) == 1 and out.pop().strip()


# ==================================================================== scenarios


def test_200_labs_a_record_published_anywhere_reaches_every_lab():
    """(a) 200 labs, random graph of degree 3–6 (bootstrap peers; each lab dials through the
    service's own dialler). Five records from five labs spread by gossip alone, within a few
    seconds of simulated time. Each lab sends each record to at most its other peers (degree 3–6,
    a few 7): bytes per lab per record stay under 8 records' worth."""
    sim = network(200, seed=1)
    sim.run_for(30_000)
    assert all(len(n.conns) >= 3 for n in sim.nodes)
    before = {n.index: n.bytes_gossip for n in sim.nodes}
    sync_before = sum(n.bytes_sync for n in sim.nodes)
    start = sim.now
    cids = []
    for lab in sim.rng.sample(range(200), 5):
        cids += sim.publish(lab)
    assert sim.run_until(lambda s: s.everyone_has(cids), 30_000, step_ms=100)
    assert sim.now - start <= 5_000
    per_lab = [(n.bytes_gossip - before[n.index]) / len(cids) for n in sim.nodes]
    assert max(per_lab) <= 8 * RECORD_BYTES
    assert sum(per_lab) / len(per_lab) <= 6 * RECORD_BYTES
    assert sum(n.bytes_sync for n in sim.nodes) == sync_before  # gossip alone did it
    assert converged(sim)
    assert_bounded(sim)


def test_two_regions_partitioned_for_a_week_converge_when_joined():
    """(b) 100 labs in two regions of 50 (each a random graph of degree 3–6) joined by 4 long
    links; the links fail for a simulated week while each region publishes 20 records (spread
    over the week); then they heal. Sync runs once a day (the default is a minute: a week of
    one-minute rounds is millions of events; a daily round keeps the run to seconds, and the
    sync on reconnection — not the periodic round — is what must join the regions). Within an
    hour of healing every lab has the same record-set digest."""
    config = replace(SIM_CONFIG, sync_interval_ms=DAY)
    sim = network(100, seed=2, config=config, edges=lambda n, rng: two_regions(n, rng, bridges=4)[0])
    left, right = list(range(50)), list(range(50, 100))
    sim.run_for(MINUTE)
    sim.partition(left, right)
    week = 7 * DAY
    for k in range(20):
        sim.at(sim.now + (k + 0.5) * week / 20, lambda s: s.publish(s.rng.choice(left)))
        sim.at(sim.now + (k + 0.7) * week / 20, lambda s: s.publish(s.rng.choice(right)))
    sim.run_for(week)
    assert converged(sim, left) and converged(sim, right)
    assert len(sim.nodes[0].store.blocks) == 20 and len(sim.nodes[99].store.blocks) == 20
    bytes_before = [n.bytes_sent for n in sim.nodes]
    sim.heal()
    healed = sim.now
    assert sim.run_until(converged, HOUR, step_ms=10_000)
    assert len(sim.nodes[0].store.blocks) == 40
    assert sim.now - healed <= 3 * MINUTE  # redial backoff (at most 1 min) + syncs down the graph
    spent = [n.bytes_sent - b for n, b in zip(sim.nodes, bytes_before)]
    assert max(spent) <= 40 * RECORD_BYTES * 8  # each lab passes 20 new records to < 8 peers
    assert_bounded(sim)


def test_30_percent_churn_while_publishing_converges():
    """(c) 100 labs; for two simulated hours, 30 of them stop for 5–20 minutes at random times
    (some twice), while running labs publish a record every two minutes. Sync every 10 minutes
    (a restart syncs at once anyway). An hour after the churn ends, all hold the same records."""
    config = replace(SIM_CONFIG, sync_interval_ms=10 * MINUTE)
    sim = network(100, seed=3, config=config)
    sim.run_for(MINUTE)
    rng = sim.rng
    churners = rng.sample(range(100), 30)
    for lab in churners:
        t = sim.now
        for _ in range(rng.choice((1, 2))):
            t += rng.uniform(0, 40) * MINUTE
            down = rng.uniform(5, 20) * MINUTE
            sim.at(t, lambda s, lab=lab: s.stop(lab))
            sim.at(t + down, lambda s, lab=lab: s.start(lab))
            t += down

    def publish(s):
        up = [n.index for n in s.nodes if n.running]
        s.publish(s.rng.choice(up))

    for k in range(60):
        sim.at(sim.now + k * 2 * MINUTE, publish)
    sim.run_for(2 * HOUR)
    assert all(n.running for n in sim.nodes)
    assert sim.run_until(converged, HOUR, step_ms=MINUTE)
    assert len(sim.nodes[0].store.blocks) == 60
    assert_bytes(sim, 60, most=10, mean=6)  # with a sync round every 10 minutes for 3 hours
    assert_bounded(sim)


def test_a_lab_offline_for_a_month_catches_up():
    """(d) 20 labs; lab 0 stops for a simulated month while the others publish a record a day.
    Its neighbours redial it every minute for the month (a bootstrap peer's backoff cap): that,
    not the sync rounds (daily here), is most of the run's events, hence 20 labs. Back online, it
    has all 30 records within minutes, its peer book still knows its bootstrap peers, and its own
    record made while offline reaches everyone."""
    config = replace(SIM_CONFIG, sync_interval_ms=DAY)
    sim = network(20, seed=4, config=config)
    sim.run_for(MINUTE)
    sim.stop(0)
    for k in range(30):
        sim.at(sim.now + (k + 0.5) * DAY, lambda s: s.publish(s.rng.randrange(1, 20)))
    sim.run_for(30 * DAY)
    own = sim.publish(0)  # made while offline: waits in its outbox
    assert len(sim.nodes[0].store.blocks) == 1 and converged(sim, range(1, 20))
    sim.start(0)
    back = sim.now
    assert sim.run_until(converged, HOUR, step_ms=10_000)
    assert sim.now - back <= 5 * MINUTE
    assert len(sim.nodes[0].store.blocks) == 31 and sim.everyone_has(own)
    assert not sim.nodes[0].store.outbox_set  # announced, or held by every peer it synced with
    assert_bytes(sim, 31, most=12, mean=7)  # with 30 daily sync rounds
    assert_bounded(sim)


def test_a_flooding_peer_and_a_forging_peer_are_cut_off_and_honest_records_arrive():
    """(e) 40 honest labs (random graph, degree 3–6) and two hostile ones, each connected to 4
    honest labs: the flooder sends 300 invalid records as gossip in a minute; the forger holds
    records with bad signatures (which sync then sends) and gossips 10 forged records. Both are
    cut off by every honest peer (the service's penalties, and a Disconnect), and 10 honest
    records published meanwhile reach every honest lab."""
    honest = 40
    flooder, forger = honest, honest + 1
    sim = Sim(honest + 2, seed=5)
    rng = sim.rng
    victims = {flooder: rng.sample(range(honest), 4), forger: rng.sample(range(honest), 4)}
    sim.bootstrap(random_graph(honest, rng) + [(h, v) for h in victims for v in victims[h]])
    evil = Author(666)
    for k in range(5):  # forged records in the forger's store: sync hands them out
        block = forged(evil.record(sim.t0 - 1000 * k).raw)
        sim.nodes[forger].store._put(make_cid(DAG_CBOR, block), block, sim.t0 - 1000 * k)
    bad_cids = set(sim.nodes[forger].store.blocks)
    sim.start_all()
    sim.run_for(10_000)
    assert all(sim.nodes[v].conns.get(flooder) for v in victims[flooder])
    start = sim.now

    def flood(s):
        for k in range(30):
            s.inject_gossip(flooder, b"\xa1junk" + k.to_bytes(4, "big") + s.rng.randbytes(100))

    for k in range(10):  # 30 every 6 s
        sim.at(start + k * 6_000, flood)

    def forge(s):
        record = evil.record(int(s.now))
        s.inject_gossip(forger, forged(record.raw))

    for k in range(10):
        sim.at(start + k * 3_000, forge)
    cids = []
    for k in range(10):
        sim.at(start + k * 5_000, lambda s: cids.extend(s.publish(s.rng.randrange(honest))))
    sim.run_for(2 * MINUTE)
    for hostile, reason in ((flooder, "gossip: 50 invalid records"), (forger, "sync: ")):
        name = sim.nodes[hostile].name
        for v in victims[hostile]:
            offence = sim.nodes[v].svc.penalties._by_peer.get(name)  # the service's penalties
            assert offence is not None and offence.reason.startswith(reason), (v, name, offence)
            assert any(d[1] == sim.nodes[v].name and d[2] == name and d[3].startswith(reason)
                       for d in sim.disconnects), (v, name)
    assert len(cids) == 10
    assert sim.everyone_has(cids, range(honest))
    assert converged(sim, range(honest))
    assert not any(c in sim.nodes[i].store.blocks for c in bad_cids for i in range(honest))
    assert_bounded(sim)


def test_slow_links_256_kbit_and_600_ms_round_trips_still_converge():
    """(f) 60 labs on links of 256 kbit/s with 300 ms each way (600 ms round trips) and 1 %
    loss; 30 records from random labs in a minute, and one lab that was off for an hour comes
    back. Everything arrives within two simulated minutes of the last record; nothing queues:
    the largest link backlog stays far below a second of the link."""
    slow = Link(latency_ms=300, bits_per_second=256_000, loss=0.01)
    config = replace(SIM_CONFIG, sync_interval_ms=10 * MINUTE)
    sim = network(60, seed=6, link=slow, config=config)
    sim.run_for(MINUTE)
    assert all(len(n.conns) >= 3 for n in sim.nodes)
    sim.stop(7)
    for k in range(30):
        sim.at(sim.now + k * 2_000, lambda s: s.publish(s.rng.choice([i for i in range(60) if i != 7])))
    sim.run_for(HOUR)
    sim.start(7)
    back = sim.now
    assert sim.run_until(converged, 10 * MINUTE, step_ms=5_000)
    assert sim.now - back <= 2 * MINUTE
    assert len(sim.nodes[0].store.blocks) == 30
    assert_bytes(sim, 30, most=10, mean=6)
    q = assert_bounded(sim)
    assert q["link_backlog_bytes"] <= 256_000 // 8  # under a second of the link
