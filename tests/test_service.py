"""The node service without a network: its machines fed events and times by hand (heartwood's
single-node harness), and two sync sessions pumped against each other (h11's ConnectionPair).

What the simulator (tests/test_simnet.py) shows at scale, these show one decision at a time.
"""

from __future__ import annotations

import ast

import pytest
from conftest import ROOT
from memstore import Author, MemoryRecords

from fabnode.node.service import effects as fx
from fabnode.node.service import events as ev
from fabnode.node.service.peers import PeerBook, backoff_ms
from fabnode.node.service.service import GOSSIP_INVALID_PER_MINUTE, NodeService, ServiceConfig
from fabnode.node.service.sync import MAX_ROUNDS, MAX_SYNCS, SyncScheduler, SyncSession
from fabnode.protocol.records import make_record
from fabnode.protocol.sync import PROTOCOL as SYNC, encode_frame
from fabnode.protocol.varint import decode_varint

T0 = 1_750_000_000_000


def body(frame: bytes) -> bytes:
    length, offset = decode_varint(frame, 0)
    assert len(frame) == offset + length
    return frame[offset:]


def store_with(author_seed: int, n: int, *, start: int = 0) -> MemoryRecords:
    store, author = MemoryRecords(), Author(author_seed)
    for i in range(n):
        store.add_local(author.record(T0 - 1000 * (start + i)))
    return store


def pump(a: SyncSession, b: SyncSession, stores: tuple[MemoryRecords, MemoryRecords]) -> int:
    """Run two sessions against each other until both are done; returns the frames passed."""
    queue = [(b, f) for f in a.start()] + [(a, f) for f in b.start()]
    passed = 0
    while queue:
        target, frame = queue.pop(0)
        passed += 1
        assert passed < 200, "too many frames"
        step = target.receive(body(frame), T0)
        assert step.error is None, step.error
        other = a if target is b else b
        stores[0 if target is a else 1].store(step.records, T0)
        queue += [(other, f) for f in step.frames]
    assert a.state == b.state == "done"
    return passed


def session(store: MemoryRecords, initiator: bool, peer: str = "peer") -> SyncSession:
    return SyncSession(peer=peer, initiator=initiator, items=store.items(), raw=store.raw, now_ms=T0)


# ---------------------------------------------------------------------- sync sessions


@pytest.mark.parametrize("sizes", [(0, 0), (5, 0), (0, 7), (40, 25)])
def test_two_sessions_exchange_exactly_what_each_lacks(sizes):
    a, b = store_with(1, sizes[0]), store_with(2, sizes[1])
    common = Author(3).record(T0 - 5)
    a.add_local(common)
    b.add_local(common)
    sa, sb = session(a, True), session(b, False)
    pump(sa, sb, (a, b))
    assert a.digest() == b.digest() and len(a.blocks) == sizes[0] + sizes[1] + 1
    assert (sa.report.sent, sb.report.sent) == sizes
    assert sa.report.bytes_out > 0 and sb.report.bytes_out > 0


def test_a_session_between_equal_sets_takes_one_round_trip():
    a = store_with(1, 30)
    b = MemoryRecords()
    for cid, raw in a.blocks.items():
        b.store([raw], T0)
    sa, sb = session(a, True), session(b, False)
    pump(sa, sb, (a, b))
    assert sa.report.round_trips == 1 and sa.report.sent == sb.report.sent == 0


def test_an_invalid_record_ends_the_session_as_the_peers_fault_but_keeps_the_valid_ones():
    a = store_with(1, 0)
    responder = session(a, False)
    good = Author(5).record(T0 - 10)
    forged = make_record("vouch", {"subject": Author(6).did, "trust": "trusted"}, author=Author(7).did, ts=T0,
                         sign=Author(8).key.sign)  # signed by another key
    responder.receive(body(encode_frame({"type": "reconcile", "msg": None})), T0)
    responder.receive(body(encode_frame({"type": "want", "ids": []})), T0)
    step = responder.receive(body(encode_frame({"type": "records", "records": [good.raw, forged.raw]})), T0)
    assert step.records == [good.raw]
    assert "invalid record" in str(step.error) and responder.state == "failed"


def test_a_peer_that_never_stops_reconciling_is_stopped_after_the_round_budget():
    a = store_with(1, 200)
    b = store_with(2, 200)
    initiator = session(a, True)
    first = initiator.start()[0]
    # the peer answers every message by starting over: the rounds never end
    restart = body(session(b, True).start()[0])
    step = None
    for _ in range(MAX_ROUNDS + 1):
        step = initiator.receive(restart, T0)
        if step.error:
            break
    assert first and step.error is not None and f"more than {MAX_ROUNDS} reconcile rounds" in str(step.error)


@pytest.mark.parametrize("frame, reason", [
    ({"type": "want", "ids": []}, "expected a reconcile frame, got 'want'"),
    ({"type": "reconcile", "msg": b"\x00\x01"}, "unsupported version"),
])
def test_a_frame_out_of_turn_or_malformed_is_the_peers_fault(frame, reason):
    s = session(store_with(1, 3), False)
    step = s.receive(body(encode_frame(frame)), T0)
    assert step.error is not None and reason in str(step.error)


def test_an_oversized_reconcile_frame_is_refused_before_it_is_decoded():
    s = session(MemoryRecords(), False)
    assert s.frame_limit() == 512 << 10
    step = s.receive(b"\x00" * ((512 << 10) + 1), T0)
    assert "over the 524288-byte limit" in str(step.error)


def test_a_silent_peer_meets_the_frame_deadline():
    s = session(MemoryRecords(), True)
    s.start()
    assert s.deadline() == T0 + 30_000


# ---------------------------------------------------------------------- scheduling and peers


def test_the_scheduler_runs_one_session_per_peer_and_at_most_eight_then_starts_the_waiting():
    sched = SyncScheduler("m", 60_000)
    peers = [f"p{i:02d}" for i in range(MAX_SYNCS + 3)]
    for p in peers:
        sched.ask(p)
    sched.ask("p00")
    started = sched.ready(lambda p: True)
    assert started == peers[:MAX_SYNCS] and sched.full()
    assert sched.refusal("p00") == "one session per peer at a time"
    assert sched.refusal("zz") == f"{MAX_SYNCS} sessions already running"
    sched.finished("p00")
    assert sched.ready(lambda p: True) == [peers[MAX_SYNCS]]


def test_dial_backoff_doubles_to_five_minutes_and_a_connection_resets_it():
    book = PeerBook()
    book.remember("q", ("/ip4/127.0.0.1/tcp/1",), "mdns", 0)
    waits = [book.dial_failed("q", 0)[0] for _ in range(12)]
    assert waits[:4] == [1000, 2000, 4000, 8000] and waits[-1] == 300_000 == backoff_ms(40)
    assert book.due(0) == [] and book.due(300_000)[0].peer == "q"
    book.connected("q", 10)
    assert book.get("q").failures == 0 and book.due(10)


def test_a_bootstrap_peer_is_never_more_than_a_minute_away():
    """Issue 14: a link up ten minutes a day must not lose five of them to a dial backoff."""
    book = PeerBook()
    book.remember("boot", ("/ip4/127.0.0.1/tcp/1",), "bootstrap", 0)
    waits = [book.dial_failed("boot", 0)[0] for _ in range(12)]
    assert waits[:4] == [1000, 2000, 4000, 8000] and waits[-1] == 60_000 == backoff_ms(40, bootstrap=True)


def test_the_first_connection_after_failures_makes_every_backing_off_bootstrap_peer_dialable():
    book = PeerBook()
    for name, source in (("a", "bootstrap"), ("b", "bootstrap"), ("c", "mdns"), ("d", "bootstrap")):
        book.remember(name, ("/ip4/127.0.0.1/tcp/1",), source, 0)
    for name in "abc":
        for _ in range(8):
            book.dial_failed(name, 1_000)
    assert book.due(2_000) == [] or [e.peer for e in book.due(2_000)] == ["d"]
    effects = book.connected("a", 2_000)  # the link is back
    due = {e.peer for e in book.due(2_000)}
    assert due == {"a", "b", "d"}, due  # the chance peer keeps its backoff; "d" never failed
    assert {e.peer for e in effects} == {"a", "b"}  # each change persisted
    assert book.connected("a", 3_000) == [book.get("a").effect()]  # no failures before: nobody else touched


def test_a_peer_met_by_chance_is_forgotten_after_thirty_days_but_a_bootstrap_peer_never():
    book = PeerBook()
    book.remember("chance", ("a",), "inbound", 0)
    book.remember("boot", ("b",), "bootstrap", 0)
    month = 31 * 24 * 3600_000
    wait, effects = book.dial_failed("chance", month)
    assert wait is None and effects == [fx.ForgetPeer("chance")]
    assert book.dial_failed("boot", month)[0] == 1000


def service(me: str = "m", store: MemoryRecords | None = None, **config) -> NodeService:
    return NodeService(me, store or MemoryRecords(), ServiceConfig(**{"outbox_poll_ms": None, **config}))


def logs(effects) -> list[str]:
    return [e.line for e in effects if isinstance(e, fx.Log)]


def connect(svc: NodeService, peer: str, now: int = T0) -> list:
    svc.handle(ev.PeerConnected(peer, "/ip4/127.0.0.1/tcp/9"), now)
    svc.handle(ev.PeerSpeaksFabnode(peer, ("/ip4/127.0.0.1/tcp/9",)), now)
    return svc.drain()


def test_the_side_with_the_smaller_peer_id_opens_the_sync():
    small, large = service("a"), service("b")
    assert any(isinstance(e, fx.OpenStream) and e.protocol == SYNC for e in connect(small, "b"))
    assert not any(isinstance(e, fx.OpenStream) for e in connect(large, "a"))


def test_fifty_invalid_gossip_records_in_a_minute_cut_the_forwarder_off_and_its_next_connection_is_dropped():
    svc = service()
    connect(svc, "z")
    out = []
    for i in range(GOSSIP_INVALID_PER_MINUTE):
        svc.handle(ev.GossipReceived("z", b"\xa1junk" + bytes([i])), T0 + i)
        out += svc.drain()
    assert not any(isinstance(e, fx.Forward) for e in out)
    assert fx.Disconnect("z", f"gossip: {GOSSIP_INVALID_PER_MINUTE} invalid records in a minute") in out
    assert sum("rejected a record from z" in line for line in logs(out)) == 20  # the log is capped
    svc.handle(ev.PeerDisconnected("z"), T0 + 100)
    again = connect(svc, "z", T0 + 200)
    assert any(isinstance(e, fx.Disconnect) for e in again)
    assert any("connection from z dropped: cut off for 59 s more" in line for line in logs(again))
    assert "z" not in svc.connected


def test_a_valid_gossip_record_is_forwarded_and_stored_and_logged_once_stored():
    svc = service()
    connect(svc, "z")
    record = Author(4).record(T0 - 1)
    svc.handle(ev.GossipReceived("z", record.raw, "origin"), T0)
    out = svc.drain()
    store = next(e for e in out if isinstance(e, fx.StoreRecords))
    assert fx.Forward(record.raw, "z") in out and store.gossip and store.blocks == (record.raw,)
    svc.handle(ev.RecordsStored(store.ticket, (record.cid,)), T0)
    assert any(line.startswith("record received: vouch") for line in logs(svc.drain()))


def test_announcements_wait_for_a_mesh_peer_then_go_out_at_the_gossip_rate():
    store = store_with(1, 5)
    svc = service(store=store, gossip_rate=10)
    svc.handle(ev.OutboxChanged(), T0)
    assert not any(isinstance(e, fx.Publish) for e in svc.drain())
    svc.handle(ev.MeshChanged(1), T0)
    published = [T0] if any(isinstance(e, fx.Publish) for e in svc.drain()) else []
    now = T0
    while len(published) < 5:
        now = svc.deadline()
        svc.tick(now)
        effects = svc.drain()
        published += [now for e in effects if isinstance(e, fx.Publish)]
        if len(published) == 5:
            assert fx.MarkAnnounced(tuple(store.outbox_set)) in effects
    assert [b - a for a, b in zip(published, published[1:])] == [100] * 4


def test_a_stalled_session_ends_at_its_deadline_without_blaming_the_peer():
    svc = service("a", seeding=False)
    opened = next(e for e in connect(svc, "b") if isinstance(e, fx.OpenStream))
    svc.handle(ev.StreamOpened(opened.stream), T0)
    svc.drain()
    assert svc.deadline() == T0 + 30_000
    svc.tick(T0 + 29_999)
    assert not any(isinstance(e, fx.ResetStream) for e in svc.drain())
    svc.tick(T0 + 30_000)
    out = svc.drain()
    assert fx.ResetStream(opened.stream) in out and not svc.penalties.cut_off("b", T0 + 30_000)
    assert any("interrupted" in line for line in logs(out))


def test_an_inbound_sync_from_a_peer_already_syncing_is_refused():
    svc = service("b")
    connect(svc, "a")
    svc.handle(ev.InboundStream("s1", "a", SYNC), T0)
    svc.handle(ev.InboundStream("s2", "a", SYNC), T0)
    out = svc.drain()
    assert fx.ResetStream("s2") in out and fx.ResetStream("s1") not in out
    assert any("rejected a sync stream from a: one session per peer at a time" in line for line in logs(out))


def test_connections_over_twice_the_limit_drop_the_newcomer_but_a_bootstrap_peer_stays():
    svc = service(max_connections=1)
    svc.handle(ev.PeerDiscovered("boot", ("/x",), "bootstrap"), T0)
    connect(svc, "p1")
    connect(svc, "p2")
    out = connect(svc, "p3")
    assert fx.Disconnect("p3", "too many connections") in out
    out = connect(svc, "boot")
    assert "boot" in svc.connected and fx.Disconnect("p2", "too many connections") in out


class SeedingView(MemoryRecords):
    def __init__(self, wanted):
        super().__init__()
        self.wanted = wanted

    def wanted_bundles(self):
        return self.wanted

    def seeding_marker(self):
        return len(self.wanted)


def test_seeding_fetches_one_bundle_at_a_time_and_retries_a_failure_a_minute_later():
    view = SeedingView([(b"b1", b"d1"), (b"b2", b"d2")])
    from fabnode.node.service.service import SYNC_FIRST_MS

    svc = NodeService("m", view, ServiceConfig(outbox_poll_ms=None, sync_interval_ms=3_600_000))
    opened = [e.stream for e in connect(svc, "p") if isinstance(e, fx.OpenStream)]  # m < p: m syncs first
    svc.tick(T0)
    assert not any(isinstance(e, fx.Fetch) for e in svc.drain())  # records first: the sync is starting
    svc.tick(T0 + SYNC_FIRST_MS - 1)
    assert not any(isinstance(e, fx.Fetch) for e in svc.drain())  # still opening: records first
    svc.handle(ev.StreamFailed(opened[0], "ConnectionResetError"), T0 + SYNC_FIRST_MS)  # tried: enough
    T1 = T0 + SYNC_FIRST_MS + 1000  # the seeder looks again a second later
    svc.tick(T1)
    fetches = [e for e in svc.drain() if isinstance(e, fx.Fetch)]
    assert [f.root for f in fetches] == [b"b1"]
    svc.tick(T1 + 5000)
    assert not any(isinstance(e, fx.Fetch) for e in svc.drain())  # one at a time
    svc.handle(ev.FetchFinished(b"b1", "nobody has it"), T1 + 6000)
    svc.tick(T1 + 7000)
    assert [e.root for e in svc.drain() if isinstance(e, fx.Fetch)] == [b"b2"]
    svc.handle(ev.FetchFinished(b"b2"), T1 + 8000)
    view.wanted = [(b"b1", b"d1")]
    svc.tick(T1 + 9000)
    assert not any(isinstance(e, fx.Fetch) for e in svc.drain())
    svc.tick(T1 + 6000 + 60_000)
    assert [e.root for e in svc.drain() if isinstance(e, fx.Fetch)] == [b"b1"]


def test_a_sync_that_ends_before_its_connection_is_told_still_lets_seeding_start():
    """The peer's own sync can open, run and end before libp2p's connection event reaches the
    service (seen in CI): that event must not start the records-first wait again, or seeding
    waits a whole minute for a sync that already happened."""
    view = SeedingView([(b"b1", b"d1")])
    svc = NodeService("m", view, ServiceConfig(outbox_poll_ms=None, sync_interval_ms=3_600_000))
    svc.handle(ev.InboundStream("s1", "a", SYNC), T0)  # a < m: a syncs first
    svc.handle(ev.StreamFailed("s1", "ConnectionResetError"), T0 + 10)
    connect(svc, "a", T0 + 20)
    svc.tick(T0 + 2_000)
    assert [e.root for e in svc.drain() if isinstance(e, fx.Fetch)] == [b"b1"]


# ---------------------------------------------------------------------- purity


def test_the_service_does_no_io_and_reads_no_clock():
    """node/service imports nothing that does I/O or tells the time (nor randomness)."""
    banned = {"trio", "libp2p", "sqlite3", "sqlite_utils", "time", "random", "socket", "os", "datetime",
              "fabnode.node.runtime", "fabnode.node.http", "fabnode.storage"}
    for path in (ROOT / "node" / "service").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert not any(name == b or name.startswith(b + ".") for b in banned), f"{path.name} imports {name}"


# ---------------------------------------------------------------------- serving budgets


def test_serving_slots_go_to_streams_that_make_progress():
    from fabnode.node.service.fetching import STALL_MS, ServeSlots

    slots = ServeSlots(per_peer=4, total=4)
    for i in range(4):
        assert slots.admit(("hog", i), "hog", 0) == (True, None)
    assert slots.admit(("hog", 4), "hog", 0) == (False, None)  # its own limit
    slots.requested(("hog", 0), 0)
    admitted, victim = slots.admit("newcomer", "new", 1)  # an idle slot (no request) of the greedier peer
    assert admitted and victim.key != ("hog", 0) and not victim.has_request
    slots2 = ServeSlots(per_peer=4, total=2)
    slots2.admit("a", "p", 0)
    slots2.requested("a", 0)
    slots2.admit("b", "p", 0)
    slots2.requested("b", 0)
    assert slots2.admit("c", "q", STALL_MS) == (False, None)  # moving transfers are never cut
    admitted, victim = slots2.admit("c", "q", STALL_MS + 1)
    assert admitted and victim.peer == "p"


def test_sync_frames_are_frozen_values_that_round_trip():
    from dataclasses import FrozenInstanceError

    from fabnode.protocol.sync import End, Reconcile, Records, Want, parse_frame

    for frame in (Reconcile(b"\x61\x00"), Reconcile(None), Want((b"\x01" * 8,)), Records((b"\xa0",)), End()):
        assert parse_frame(body(frame.encode()), (type(frame),)) == frame
    with pytest.raises(FrozenInstanceError):
        Want(()).ids = (b"x",)
    with pytest.raises(Exception, match="expected a end frame, got 'want'"):
        parse_frame(body(Want(()).encode()), (End,))


def test_a_peer_lost_while_its_stream_opens_is_synced_with_again_when_it_returns():
    svc = service("a", seeding=False)
    first = next(e for e in connect(svc, "b") if isinstance(e, fx.OpenStream))
    svc.handle(ev.PeerDisconnected("b"), T0 + 1)
    svc.handle(ev.StreamOpened(first.stream), T0 + 2)  # too late: refused, not a session
    assert fx.ResetStream(first.stream) in svc.drain()
    again = [e for e in connect(svc, "b", T0 + 3) if isinstance(e, fx.OpenStream)]
    assert len(again) == 1 and again[0].stream != first.stream


def test_connected_peers_are_synced_again_every_interval_by_the_smaller_peer_id():
    svc = service("a", seeding=False, sync_interval_ms=60_000)
    first = next(e for e in connect(svc, "b") if isinstance(e, fx.OpenStream))
    connect(svc, "0")  # a smaller peer id: it starts, not us
    svc.handle(ev.StreamFailed(first.stream, "ConnectionResetError"), T0 + 10)
    svc.drain()
    assert svc.deadline() == T0 + 60_000
    svc.tick(T0 + 59_999)
    assert not any(isinstance(e, fx.OpenStream) for e in svc.drain())
    svc.tick(T0 + 60_000)
    opened = [e for e in svc.drain() if isinstance(e, fx.OpenStream)]
    assert [e.peer for e in opened] == ["b"] and svc.deadline() == T0 + 120_000
