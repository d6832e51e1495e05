"""The chains of keys in real SQLite stores (issue 17, migration 016).

Records arriving in any order end in the same state; records a chain refuses are neither stored
nor offered, and refusing them is not the sender's fault; records by a revoked key are told apart
by when they arrived (before the revocation was learned, or after).
"""

from __future__ import annotations

import random

import pytest

from fabnode.node.local.commons import receive_records
from fabnode.protocol.cid import DAG_CBOR, make_cid
from fabnode.protocol.dagcbor import Link
from fabnode.protocol.keys import ChainRefused
from fabnode.protocol.records import make_record
from fabnode.storage import BlockStore, open_db
from fabnode.storage.keys import DOUBTFUL, REVOKED_LATER
from fabnode.storage.records import RecordStore

from keychains import T0, Key, lab, member, revocation, succession, vouch

MIN = 60_000


class World:
    """Two labs over a while: one rotates its key, the other's key is stolen and revoked."""

    def __init__(self) -> None:
        k = {name: Key(500 + i) for i, name in enumerate(
            ("r", "n", "rrec", "s", "s2", "srec", "thief", "alice", "bob", "friend"))}
        self.k = k
        r, n, s, s2 = k["r"], k["n"], k["s"], k["s2"]
        self.rotation = succession(r, n, T0 + 5 * MIN)
        self.revocation = revocation(k["srec"], s, s, s2, cutoff=T0 + 10 * MIN, ts=T0 + 20 * MIN)
        bundle = Link(make_cid(DAG_CBOR, b"\xa0"))
        self.late_version = make_record("version", {"bundle": bundle, "parents": [], "title": "late", "message": "m",
                                                    "license": "MIT", "maintainers": [r.did]},
                                        author=r.did, ts=T0 + 7 * MIN, sign=r.sign)
        self.revoked_vouch = vouch(s, k["friend"], T0 + 9 * MIN)
        self.refused = {  # by the retired key after its rotation, by the stolen key after its cutoff
            vouch(r, k["friend"], T0 + 6 * MIN).cid, self.late_version.cid,
            vouch(s, k["thief"], T0 + 11 * MIN).cid, vouch(s, k["bob"], T0 + 15 * MIN).cid,
        }
        self.records = [
            lab(r, T0, recovery=k["rrec"], name="Rlab"), lab(s, T0 + 1, recovery=k["srec"], name="Slab"),
            vouch(r, k["friend"], T0 + 2 * MIN), self.rotation, vouch(r, k["friend"], T0 + 6 * MIN),
            self.late_version, vouch(n, k["friend"], T0 + 8 * MIN),
            self.revoked_vouch, vouch(s, k["thief"], T0 + 11 * MIN), vouch(s, k["bob"], T0 + 15 * MIN),
            succession(s, k["thief"], T0 + 12 * MIN),  # the thief's rotation, after the cutoff
            self.revocation, vouch(s2, k["friend"], T0 + 21 * MIN),
            member(s2, s, k["alice"], "maintainer", T0 + 22 * MIN), member(k["alice"], s, k["bob"], "member", T0 + 23 * MIN),
            vouch(k["bob"], k["friend"], T0 + 24 * MIN),
        ]
        assert self.refused <= {r.cid for r in self.records}


@pytest.fixture(scope="module")
def world() -> World:
    return World()


def _store(path) -> tuple[BlockStore, RecordStore]:
    blocks = BlockStore(open_db(path))
    return blocks, RecordStore(blocks.db.conn)


def _ingest_all(blocks: BlockStore, records: RecordStore, ordered: list) -> list:
    refused = []
    for received_ms, record in enumerate(ordered, start=1):
        with blocks.write_transaction():
            try:
                records.ingest(record, received_ms=received_ms)
            except ChainRefused as exc:
                refused.append(str(exc))
    return refused


def _end_state(records: RecordStore, world: World) -> tuple:
    ids = records.keys.identities()
    stored = sorted(cid for cid, _ in records.records_of())
    standings = [ids.standing(r.author, r.ts) for r in world.records]
    return sorted(records.sync_items()), stored, standings, ids


def test_any_arrival_order_ends_in_the_same_records_and_standings(world, tmp_path):
    states = []
    for seed in range(4):
        ordered = list(world.records)
        random.Random(seed).shuffle(ordered)
        blocks, records = _store(tmp_path / f"{seed}.db")
        _ingest_all(blocks, records, ordered)
        states.append(_end_state(records, world))
        held = {cid for cid, _ in records.records_of()}
        assert held.isdisjoint(world.refused), f"order {seed} kept a refused record"
        assert {cid for cid, *_ in records.keys.refused()} == world.refused
        assert records.version(world.late_version.cid) is None  # out of the indexes too
        blocks.db.close()
    assert all(state == states[0] for state in states[1:])
    ids = states[0][3]
    assert ids.current_key(world.k["s"].did) == world.k["s2"].did
    assert ids.current_key(world.k["r"].did) == world.k["n"].did
    assert ids.speaks_for(world.k["bob"].did, T0 + 24 * MIN) == world.k["s"].did


def test_a_chain_refused_record_is_not_stored_not_offered_and_not_the_senders_fault(world, tmp_path):
    blocks, records = _store(tmp_path / "refuse.db")
    r, friend = world.k["r"], world.k["friend"]
    late = vouch(r, friend, T0 + 6 * MIN)
    with blocks.write_transaction():
        records.ingest(world.rotation, received_ms=1)
    with blocks.write_transaction(), pytest.raises(ChainRefused) as caught:
        records.ingest(late, received_ms=2)
    assert str(caught.value) == (f"record refused: signed by {r.did} after it was rotated to {world.k['n'].did}"
                                 f" at {T0 + 5 * MIN}")
    assert not records.has(late.cid) and records.raw(late.cid) is None
    assert (late.ts, late.cid[4:]) in records.sync_items()  # held, so no peer resends it
    # from a peer (sync, gossip, a file): listed apart, not rejected, and the good ones are stored
    good = vouch(world.k["n"], friend, T0 + 6 * MIN)
    again = vouch(r, friend, T0 + 7 * MIN)
    with blocks.write_transaction():
        result = receive_records(records, [(None, again.raw), (None, good.raw)], now=T0 + 8 * MIN,
                                 all_or_nothing=True)
    assert result.rejected == [] and result.new == [good.id]
    assert [cid for cid, _ in result.refused_by_chain] == [again.id]
    # local signing with the retired key fails the same way (the CLI prints it as one error line)
    with blocks.write_transaction(), pytest.raises(ChainRefused):
        records.ingest(vouch(r, friend, T0 + 9 * MIN), received_ms=3)
    blocks.db.close()


def test_a_rotation_arriving_late_takes_stored_records_out(world, tmp_path):
    blocks, records = _store(tmp_path / "late.db")
    r, friend = world.k["r"], world.k["friend"]
    early, late = vouch(r, friend, T0 + 2 * MIN), vouch(r, friend, T0 + 6 * MIN)
    _ingest_all(blocks, records, [early, late, world.late_version])
    assert records.has(late.cid) and records.version(world.late_version.cid) is not None
    before = records.change_marker()
    _ingest_all(blocks, records, [world.rotation])
    assert records.has(early.cid) and not records.has(late.cid)
    assert records.version(world.late_version.cid) is None and records.design(world.late_version.cid) is None
    assert {cid for cid, *_ in records.keys.refused()} == {late.cid, world.late_version.cid}
    assert records.change_marker() != before
    blocks.db.close()


def test_records_by_a_revoked_key_are_revoked_later_or_doubtful_by_arrival(world, tmp_path):
    blocks, records = _store(tmp_path / "marks.db")
    s, friend = world.k["s"], world.k["friend"]
    before = world.revoked_vouch                     # dated before the cutoff, here before the revocation
    old_dated = vouch(s, world.k["alice"], T0 + 3 * MIN)  # dated before the cutoff, arrives after it
    _ingest_all(blocks, records, [world.records[1], before, world.revocation, old_dated])
    received = {cid: ms for cid, _, ms in records.iter_raw()}
    assert records.keys.mark(s.did, before.ts, received[before.cid]) == REVOKED_LATER
    assert records.keys.mark(s.did, old_dated.ts, received[old_dated.cid]) == DOUBTFUL
    assert records.keys.mark(world.k["s2"].did, T0 + 21 * MIN, 99) is None
    blocks.db.close()


def test_rotating_this_labs_key_and_delegating_in_a_real_home(tmp_path):
    from fabnode.node.home import Home, init_home
    from fabnode.node.local.keys import rotate_key, set_member
    from fabnode.protocol.errors import FabnodeError

    old_did = init_home(tmp_path / "home", "Rotating Lab").identity.did
    home = Home(tmp_path / "home")
    old_key_bytes = (home.path / "author.key").read_bytes()
    out = rotate_key(home)
    assert out["old"] == old_did and out["identity"] == old_did
    assert home.identity().did == out["new"] != old_did
    assert (home.path / out["retired_key_file"]).read_bytes() == old_key_bytes
    assert not (home.path / "author.key.next").exists()
    stores = home.open_stores()
    ids = stores.records.keys.identities()
    assert ids.current_key(old_did) == out["new"]
    outbox = {cid for cid, _ in stores.records.outbox()}
    from fabnode.protocol.cid import parse_cid

    assert parse_cid(out["succession"]) in outbox
    # the new key delegates; a delegation the rules refuse is not stored
    alice = Key(901)
    added = set_member(home, alice.did, "maintainer")
    assert added["lab"] == old_did
    ids = stores.records.keys.identities()
    assert ids.role(alice.did, old_did, added["ts"]) == "maintainer"
    with pytest.raises(FabnodeError, match="role 'owner'"):
        set_member(home, alice.did, "owner")
    # the retired key's records are refused from now on, whoever signs them
    from cryptography.hazmat.primitives import serialization

    retired = serialization.load_pem_private_key(old_key_bytes, password=None)
    late = make_record("vouch", {"subject": alice.did, "trust": "trusted"}, author=old_did, ts=out["ts"] + 1,
                       sign=retired.sign)
    with stores.blocks.write_transaction(), pytest.raises(ChainRefused, match="after it was rotated"):
        stores.records.ingest(late, received_ms=out["ts"] + 2)
    stores.db.close()


def test_gossip_neither_relays_nor_stores_a_chain_refused_record_and_strikes_no_one(world):
    from memstore import MemoryRecords

    from fabnode.node.service import effects as fx
    from fabnode.node.service import events as ev
    from fabnode.node.service.service import NodeService, ServiceConfig
    from fabnode.protocol.keys import resolve

    from keychains import key_records

    ids = resolve(key_records([world.rotation]))

    class ChainView(MemoryRecords):
        def chain_refusal(self, author, ts):
            standing = ids.standing(author, ts)
            return standing.reason if standing.kind == "refused" else None

    now = T0 + 60 * MIN
    svc = NodeService("m", ChainView(), ServiceConfig(outbox_poll_ms=None))
    svc.handle(ev.PeerConnected("z", "/ip4/127.0.0.1/tcp/9"), now)
    svc.handle(ev.PeerSpeaksFabnode("z", ("/ip4/127.0.0.1/tcp/9",)), now)
    svc.drain()
    out = []
    for i in range(60):  # more than the invalid records a minute that cut a forwarder off
        late = vouch(world.k["r"], world.k["friend"], T0 + 6 * MIN + i)
        svc.handle(ev.GossipReceived("z", late.raw, "origin"), now + i)
        out += svc.drain()
    assert not any(isinstance(e, (fx.Forward, fx.StoreRecords, fx.Disconnect)) for e in out)
    assert any("after it was rotated to" in e.line for e in out if isinstance(e, fx.Log))
    good = vouch(world.k["n"], world.k["friend"], T0 + 6 * MIN)
    svc.handle(ev.GossipReceived("z", good.raw, "origin"), now + 100)
    assert any(isinstance(e, fx.Forward) for e in svc.drain())


def test_a_refusal_that_a_later_record_lifts_is_forgotten_and_the_record_can_come_back(world, tmp_path):
    blocks, records = _store(tmp_path / "lift.db")
    r, n, friend = world.k["r"], world.k["n"], world.k["friend"]
    late = vouch(r, friend, T0 + 6 * MIN)
    refused = _ingest_all(blocks, records, [world.rotation, late])
    assert len(refused) == 1 and (late.ts, late.cid[4:]) in records.sync_items()
    # `n` turns out to have signed a record before the rotation: the rotation does not stand
    _ingest_all(blocks, records, [vouch(n, friend, T0 + MIN)])
    assert "a key already in use" in records.keys.identities().refused_records()[world.rotation.cid]
    assert records.keys.refused() == [] and (late.ts, late.cid[4:]) not in records.sync_items()
    assert _ingest_all(blocks, records, [late]) == [] and records.has(late.cid)  # the next sync brings it
    blocks.db.close()
