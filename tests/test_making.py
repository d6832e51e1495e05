"""Issue 18's making half, pure cores: requirements from okh.toml, request and offer records and
their state, and matching labs to designs (protocol/requirements.py, requests.py, canmake.py)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import pytest
from nacl.signing import SigningKey

from fabnode.protocol.canmake import Needs, capabilities, describe_missing, match_designs, match_labs
from fabnode.protocol.cid import DAG_CBOR, make_cid
from fabnode.protocol.dagcbor import Link
from fabnode.protocol.identity import did_from_ed25519
from fabnode.protocol.records import RecordRejected, make_record, verify_record
from fabnode.protocol.requests import (
    BadDate,
    Offer,
    RequestState,
    check_new_request,
    order_requests,
    parse_date,
    request_state,
)
from fabnode.protocol.requirements import MAX_PARTS, bom_item_names, bom_path, read_requirements

KEY = SigningKey(bytes([7]) * 32)
DID = did_from_ed25519(bytes(KEY.verify_key))
OTHER_KEY = SigningKey(bytes([8]) * 32)
OTHER = did_from_ed25519(bytes(OTHER_KEY.verify_key))
STRANGER = did_from_ed25519(bytes(SigningKey(bytes([9]) * 32).verify_key))
TS = 1764081600000
DESIGN = Link(make_cid(DAG_CBOR, b"a design"))
TODAY = datetime.date(2026, 11, 27)


def sign(message: bytes) -> bytes:
    return KEY.sign(message).signature


# ------------------------------------------------------------------ requirements


def test_requirements_are_read_from_parts_and_tsdc_and_folded():
    manifest = {"tsdc": "WEL", "part": [
        {"name": "frame", "source": "frame.scad", "manufacturing-process": ["Laser Cutting", "3D printing"],
         "material": ["Plywood  6 mm", "PLA"]},
        {"name": "bracket", "source": "b.scad", "tsdc": "3DP", "material": "pla"},
    ]}
    req, warnings = read_requirements(manifest)
    assert req.processes == ("3d-printing-fdm", "laser-cutting", "welding")
    assert req.materials == ("pla", "plywood 6 mm")
    assert req.unknown_processes == ()
    assert req.parts == 2
    assert warnings == []


def test_missing_information_is_a_warning_that_says_what_to_add():
    req, warnings = read_requirements({"part": [{"name": "frame", "source": "f.scad"}]})
    assert req.empty
    assert any("part 'frame' names no manufacturing process: add `manufacturing-process = " in w and "TsDC" in w
               for w in warnings), warnings
    assert any("part 'frame' names no material: add `material = " in w for w in warnings), warnings
    _, warnings = read_requirements({"name": "x"})
    assert len(warnings) == 1 and "says nothing about how the design is made" in warnings[0]


def test_unknown_process_is_kept_folded_and_flagged():
    req, warnings = read_requirements({"part": [{"name": "p", "source": "s", "manufacturing-process": "Hand  Forging",
                                                 "material": "steel"}]})
    assert req.unknown_processes == ("hand forging",)
    assert req.processes == ()
    assert len(warnings) == 1 and "'Hand  Forging' is not in fabnode's process vocabulary" in warnings[0]


def test_hostile_manifest_costs_little_and_warns():
    parts = [{"name": f"p{i}", "source": "s", "manufacturing-process": f"weird process {i}", "material": f"m{i}"}
             for i in range(MAX_PARTS + 50)]
    req, warnings = read_requirements({"part": parts, "tsdc": 42})
    assert len(req.unknown_processes) <= 64 and len(req.materials) <= 64
    assert any(f"only the first {MAX_PARTS} were read" in w for w in warnings)
    assert any("'tsdc' should be a TsDC id" in w for w in warnings)
    req, warnings = read_requirements({"part": [{"name": "p", "source": "s", "manufacturing-process": "x" * 500,
                                                 "material": {"not": "text"}}]})
    assert req.empty
    assert any("longer than 100 characters" in w for w in warnings)
    assert any("material should be text or a list of texts" in w for w in warnings)


def test_bom_items_and_path():
    assert bom_item_names("item,quantity,material\npipe,2,PVC\nvalve,1,HDPE\npipe,3,PVC\n") == ("pipe", "valve")
    assert bom_item_names("") == ()
    assert bom_path({"bom": "./docs/bom.csv"}) == "docs/bom.csv"
    assert bom_path({"bom": "../bom.csv"}) is None
    assert bom_path({"bom": "https://example.org/bom.csv"}) is None
    assert bom_path({"bom": "bom.ods"}) is None


def test_example_design_carries_requirements():
    import tomllib
    from pathlib import Path

    examples = sorted((Path(__file__).parent.parent / "examples").glob("*/okh.toml"))
    assert examples
    for path in examples:
        req, warnings = read_requirements(tomllib.loads(path.read_text()))
        assert req.processes and req.materials, path
        assert req.unknown_processes == (), (path, req.unknown_processes)
        assert warnings == [], (path, warnings)


# ------------------------------------------------------------------ records


def request_record(body: dict, key=KEY, ts=TS):
    did = did_from_ed25519(bytes(key.verify_key))
    return make_record("request", body, author=did, ts=ts, sign=lambda m: key.sign(m).signature)


def test_request_and_offer_records_round_trip():
    r = request_record({"design": DESIGN, "quantity": 4, "needed_by": "2026-12-20", "note": "for the school"})
    assert verify_record(r.raw, now_ms=TS).body["quantity"] == 4
    o = make_record("offer", {"request": Link(r.cid), "quantity": 2}, author=DID, ts=TS, sign=sign)
    assert verify_record(o.raw, now_ms=TS).body["request"] == Link(r.cid)
    c = request_record({"closes": Link(r.cid)})
    assert verify_record(c.raw, now_ms=TS).body == {"closes": Link(r.cid)}


@pytest.mark.parametrize("body, reason", [
    ({"design": DESIGN, "quantity": 0, "needed_by": "2026-12-20"}, "between 1 and 1,000,000, not 0"),
    ({"design": DESIGN, "quantity": 1_000_001, "needed_by": "2026-12-20"}, "between 1 and 1,000,000"),
    ({"design": DESIGN, "quantity": True, "needed_by": "2026-12-20"}, "must be a whole number"),
    ({"design": DESIGN, "quantity": 2.5, "needed_by": "2026-12-20"}, "must be a whole number"),
    ({"design": DESIGN, "quantity": 2, "needed_by": "20/12/2026"}, "is not a date written YYYY-MM-DD"),
    ({"design": DESIGN, "quantity": 2, "needed_by": "2026-02-30"}, "is not a date on the calendar"),
    ({"design": DESIGN, "quantity": 2, "needed_by": "2026-12-20", "note": "x" * 501}, "longer than 500"),
    ({"design": DESIGN, "quantity": 2}, "a request needs body.needed_by"),
    ({"closes": DESIGN, "quantity": 2}, "carries nothing else"),
    ({"design": DESIGN, "quantity": 2, "needed_by": "2026-12-20", "colour": "red"}, "unknown body field"),
])
def test_bad_requests_are_refused_in_one_line(body, reason):
    with pytest.raises(RecordRejected, match=reason) as info:
        request_record(body)
    assert "\n" not in str(info.value)


def test_received_request_dated_in_the_past_is_kept():
    """Past dates are refused when made here, never when received (shown as expired instead)."""
    r = request_record({"design": DESIGN, "quantity": 1, "needed_by": "2001-01-01"})
    assert verify_record(r.raw, now_ms=TS).body["needed_by"] == "2001-01-01"


def test_new_request_checks():
    check_new_request(3, TODAY.isoformat(), "", TODAY)
    with pytest.raises(Exception, match="is in the past"):
        check_new_request(3, "2026-11-26", "", TODAY)
    with pytest.raises(Exception, match="more than three years away"):
        check_new_request(3, "2031-01-01", "", TODAY)
    with pytest.raises(Exception, match="between 1 and"):
        check_new_request(0, "2026-12-01", "", TODAY)
    with pytest.raises(BadDate):
        parse_date("2026-1-5")


# ------------------------------------------------------------------ request state


def state(quantity=4, needed_by="2026-12-20", offers=(), closes=(), trusted=(DID, OTHER)):
    return request_state(cid=b"r", author=DID, ts=TS, design=b"d", quantity=quantity, needed_by=needed_by, note="",
                         offers=offers, closes=closes, trusted=set(trusted), today=TODAY)


def test_request_states():
    assert state().state is RequestState.OPEN
    assert state(needed_by="2026-11-26").state is RequestState.EXPIRED
    assert state(needed_by=TODAY.isoformat()).state is RequestState.OPEN
    half = [Offer(b"o1", OTHER, TS, 2)]
    assert state(offers=half).state is RequestState.OPEN
    full = half + [Offer(b"o2", OTHER, TS + 1, 2)]
    assert state(offers=full).state is RequestState.FULFILLED
    assert state(offers=full, needed_by="2026-01-01").state is RequestState.FULFILLED
    assert state(closes=[(b"c", DID)]).state is RequestState.CLOSED


def test_strangers_cannot_fulfil_or_close_a_request():
    flood = [Offer(b"o", STRANGER, TS, 1_000_000)]
    view = state(offers=flood)
    assert view.state is RequestState.OPEN
    assert (view.offered_trusted, view.offered_untrusted) == (0, 1_000_000)
    assert state(closes=[(b"c", OTHER)]).state is RequestState.OPEN
    assert state(offers=[Offer(b"self", DID, TS, 9)]).offered_trusted == 0  # the requester's own offer


def test_open_requests_come_first_then_nearest():
    near = state()
    far = request_state(cid=b"far", author=OTHER, ts=TS, design=b"d", quantity=1, needed_by="2026-12-01", note="",
                        offers=(), closes=(), trusted={DID}, today=TODAY)
    done = state(closes=[(b"c", DID)])
    ordered = order_requests([done, far, near], {DID: 5.0, OTHER: 300.0})
    assert [v.cid for v in ordered[:2]] == [b"r", b"far"]
    assert ordered[2].state is RequestState.CLOSED


# ------------------------------------------------------------------ matching


@dataclass(frozen=True)
class Lab:
    author: str
    name: str
    lat: float | None
    lon: float | None
    processes: tuple = ()
    unknown_processes: tuple = ()
    materials: tuple = ()


NEEDS = Needs(("laser-cutting", "welding"), (), ("plywood 6 mm",))
NAIROBI = (-1.29, 36.82)


def test_labs_with_everything_first_then_one_short_nearest_then_most_trusted():
    labs = [
        Lab("did:far", "Far", 0.1, 34.75, ("laser-cutting", "welding"), (), ("plywood 6 mm",)),       # Kisumu-ish
        Lab("did:near", "Near", -1.30, 36.80, ("laser-cutting", "welding"), (), ("plywood 6 mm",)),
        Lab("did:short", "Short", -1.29, 36.82, ("laser-cutting",), (), ("plywood 6 mm",)),          # no welding
        Lab("did:two", "Two", -1.29, 36.82, ("laser-cutting",), (), ()),                            # two short
        Lab("did:nowhere", "Nowhere", None, None, ("laser-cutting", "welding"), (), ("plywood 6 mm",)),
        Lab("did:same", "Same place, trusted", -1.30, 36.80, ("laser-cutting", "welding"), (), ("plywood 6 mm",)),
    ]
    matches = match_labs(NEEDS, labs, here=NAIROBI, trust={"did:same": 0.9, "did:near": 0.1})
    assert [m.profile.author for m in matches] == ["did:same", "did:near", "did:far", "did:nowhere", "did:short"]
    assert matches[-1].missing == (("process", "welding"),)
    assert describe_missing(matches[-1].missing) == "no welding"
    assert matches[0].distance_km == pytest.approx(2.49, abs=0.05)
    within = match_labs(NEEDS, labs, here=NAIROBI, trust={}, radius_km=100)
    assert "did:far" not in {m.profile.author for m in within} and "did:nowhere" not in {m.profile.author for m in within}


def test_unknown_processes_match_word_for_word_and_materials_are_named():
    needs = Needs((), ("hand forging",), ("steel",))
    labs = [Lab("did:a", "A", None, None, (), ("hand forging",), ()), Lab("did:b", "B", None, None, (), (), ("steel",))]
    matches = match_labs(needs, labs, here=None, trust={})
    assert [(m.profile.author, describe_missing(m.missing)) for m in matches] == [
        ("did:a", "no steel in stock"), ("did:b", "no hand forging")]


def test_designs_a_lab_can_make_then_one_short():
    lab = Lab("did:me", "Me", None, None, ("laser-cutting", "welding"), (), ("plywood 6 mm",))
    have = capabilities(lab)
    candidates = [(b"1", "Bench", Needs(("laser-cutting",), (), ("plywood 6 mm",))),
                  (b"2", "Trailer", Needs(("welding", "cnc-milling"), (), ())),
                  (b"3", "Robot", Needs(("pcb-assembly", "cnc-milling"), (), ())),
                  (b"4", "Unknown", Needs())]
    matches = match_designs(candidates, have)
    assert [(m.title, m.missing) for m in matches] == [("Bench", ()), ("Trailer", (("process", "cnc-milling"),))]


# ------------------------------------------------------------------ storage: strangers' quotas, eviction


def test_strangers_requests_and_offers_fall_under_the_same_quotas_and_leave_the_index_when_evicted(tmp_path):
    """A stranger's requests count against its hourly quota like any record; evicted over the
    storage quota, a request leaves the requests table too (nothing half-indexed stays)."""
    from fabnode.node.local.commons import receive_records
    from fabnode.node.runtime.quota import StrangerQuota
    from fabnode.protocol.quota import StrangerLimits
    from fabnode.storage import open_db
    from fabnode.storage.records import RecordStore

    db = open_db(tmp_path / "fabnode.db")
    records = RecordStore(db.conn)
    spam = [request_record({"design": DESIGN, "quantity": i + 1, "needed_by": "2026-12-20"}, key=OTHER_KEY, ts=TS + i)
            for i in range(8)]
    limits = StrangerLimits(per_author_per_hour=5, per_peer_per_hour=1000, storage_bytes=3 * len(spam[0].raw))
    quota = StrangerQuota(records, DID, limits, log=lambda *_: None)
    db.conn.execute("BEGIN IMMEDIATE")
    result = receive_records(records, [(r.cid, r.raw) for r in spam], now=TS + 100, all_or_nothing=False,
                             quota=quota, peer="12D3KooWpeer")
    db.conn.execute("COMMIT")
    assert len(result.over_quota) == 3 and "already sent 5 records this hour" in result.over_quota[0][1]
    kept = db.conn.execute("SELECT count(*) FROM records WHERE type = 'request'").fetchone()[0]
    indexed = db.conn.execute("SELECT count(*) FROM requests").fetchone()[0]
    assert kept == indexed == 3  # 5 admitted, the 2 received longest ago evicted over the storage quota
    assert db.conn.execute("SELECT min(quantity) FROM requests").fetchone()[0] == 3
    db.close()


def test_lab_candidates_follow_the_newest_profile_and_name_what_is_missing(tmp_path):
    """The SQL filter (storage/making.py) and the pure ranking agree with a profile's latest word."""
    from fabnode.protocol.labs import profile_body
    from fabnode.storage import open_db
    from fabnode.storage.making import lab_candidates
    from fabnode.storage.records import RecordStore

    db = open_db(tmp_path / "fabnode.db")
    records = RecordStore(db.conn)

    def lab(key, ts, **profile):
        did = did_from_ed25519(bytes(key.verify_key))
        body = {"name": f"Lab {ts}", "nodes": [], **profile_body(**profile)}
        return make_record("lab", body, author=did, ts=ts, sign=lambda m: key.sign(m).signature)

    db.conn.execute("BEGIN IMMEDIATE")
    records.ingest(lab(KEY, TS, lat=-1.29, lon=36.82, processes=["laser cutting", "welding"], materials=["Plywood 6 mm"]),
                   received_ms=TS)
    records.ingest(lab(OTHER_KEY, TS, lat=0.1, lon=34.75, processes=["laser cutting"], materials=["plywood 6 mm"]),
                   received_ms=TS)
    db.conn.execute("COMMIT")
    found = lab_candidates(db.conn, list(NEEDS.pairs()))
    matches = match_labs(NEEDS, found, here=NAIROBI, trust={})
    assert [(m.profile.author, describe_missing(m.missing)) for m in matches] == [(DID, ""), (OTHER, "no welding")]
    db.conn.execute("BEGIN IMMEDIATE")  # Nairobi's newer profile: no plywood any more
    records.ingest(lab(KEY, TS + 1, lat=-1.29, lon=36.82, processes=["laser cutting", "welding"], materials=["steel"]),
                   received_ms=TS + 1)
    db.conn.execute("COMMIT")
    matches = match_labs(NEEDS, lab_candidates(db.conn, list(NEEDS.pairs())), here=NAIROBI, trust={})
    assert [(m.profile.author, describe_missing(m.missing)) for m in matches] == [
        (DID, "no plywood 6 mm in stock"), (OTHER, "no welding")]
    assert lab_candidates(db.conn, list(NEEDS.pairs()), near=NAIROBI, radius_km=50)[0].author == DID
    assert len(lab_candidates(db.conn, list(NEEDS.pairs()), near=NAIROBI, radius_km=50)) == 1
    db.close()
