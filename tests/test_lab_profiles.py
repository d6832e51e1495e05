"""Lab profiles (issue 18), as pure rules and over a real SQLite store: the process vocabulary
folds synonyms and keeps unknown terms flagged, distances are haversine, coordinates are rounded
before signing, every profile field has a bound that a peer's record is refused for breaking
(in one line), and the store keeps the newest profile per lab, near and by process."""

from __future__ import annotations

import math

import pytest

from fabnode.protocol.dagcbor import encode
from fabnode.protocol.geo import EARTH_RADIUS_KM, distance_km, rounded_micro
from fabnode.protocol.labs import ProfileRefused, node_tie_statement, profile_body, profile_from_record
from fabnode.protocol.processes import PROCESSES, canonical_process, fold_term, nearest_processes
from fabnode.protocol.records import FORMAT_VERSION, RecordRejected, make_record, signing_bytes, verify_record

from daemons import signing_key
from test_labs import node

NOW = 1_764_081_600_000
NAKURU = (-0.30719, 36.07225)
NAIROBI = (-1.28333, 36.81667)
PUNE = (18.51957, 73.85535)


def lab(seed: int, name: str, ts: int = NOW, **profile):
    key, did = signing_key(seed)
    body = {"name": name, "nodes": [node(seed + 100, did)], **profile}
    return make_record("lab", body, author=did, ts=ts, sign=key.sign)


def forged(seed: int, body: dict, ts: int = NOW) -> bytes:
    """Signed by its author, with a body make_record would refuse (what a hostile peer sends)."""
    key, did = signing_key(seed)
    body = {"name": "Lab X", "nodes": [], **body}
    sig = key.sign(signing_bytes("lab", did, ts, body))
    return encode({"fabnode": FORMAT_VERSION, "type": "lab", "author": did, "ts": ts, "body": body, "sig": sig})


# ------------------------------------------------------------------ vocabulary


@pytest.mark.parametrize("typed, canonical", [
    ("FDM", "3d-printing-fdm"), ("3D printing", "3d-printing-fdm"), ("3d-print", "3d-printing-fdm"),
    ("3D_Printing", "3d-printing-fdm"), ("  3d   printer ", "3d-printing-fdm"), ("ＦＤＭ", "3d-printing-fdm"),
    ("Laser Cutter", "laser-cutting"), ("laser-cutting", "laser-cutting"), ("TIG welding", "welding"),
    ("soldering", "pcb-assembly"), ("lathe", "cnc-turning"), ("sewing", "sewing"), ("basket weaving", None),
])
def test_synonyms_fold_to_one_canonical_id_and_unknown_terms_to_none(typed, canonical):
    assert canonical_process(typed) == canonical


def test_the_vocabulary_is_consistent():
    seen = {}
    for pid, info in PROCESSES.items():
        assert pid == info.id == fold_term(pid).replace(" ", "-") and canonical_process(pid) == pid
        for synonym in info.synonyms:
            assert canonical_process(synonym) in (pid, seen.get(fold_term(synonym))), (pid, synonym)
            seen.setdefault(fold_term(synonym), pid)
    assert {"3d-printing-fdm", "laser-cutting", "cnc-milling", "welding", "pcb-assembly", "sewing"} <= set(PROCESSES)
    assert PROCESSES["welding"].tsdc == "WEL" and PROCESSES["3d-printing-fdm"].tsdc == "3DP"
    assert nearest_processes("laser cuting")[0] == "laser-cutting" and nearest_processes("weldng")[0] == "welding"


# ------------------------------------------------------------------ places


def test_distances_are_haversine_on_the_mean_earth_radius():
    assert distance_km(0, 0, 0, 1) == pytest.approx(2 * math.pi * EARTH_RADIUS_KM / 360)
    assert distance_km(0, 0, 0, 180) == pytest.approx(math.pi * EARTH_RADIUS_KM)
    assert distance_km(*NAKURU, *NAIROBI) == pytest.approx(125, abs=15)
    assert distance_km(0, 179.5, 0, -179.5) == pytest.approx(111.2, abs=0.1)  # across the antimeridian


@pytest.mark.parametrize("precision", [0.1, 1, 10, 100, 500])
@pytest.mark.parametrize("spot", [NAKURU, PUNE, (64.1466, -21.9426), (-54.8, -68.3), (0.0, 179.99)])
def test_rounding_moves_a_spot_by_about_the_precision_and_hides_it(spot, precision):
    rlat, rlon = rounded_micro(*spot, precision)
    moved = distance_km(*spot, rlat / 1e6, rlon / 1e6)
    assert moved <= precision * 0.75 + 0.01
    assert rounded_micro(rlat / 1e6, rlon / 1e6, precision) == (rlat, rlon)  # a grid point: nothing finer is left


def test_a_profile_is_rounded_before_it_is_signed_and_never_holds_the_precise_spot():
    body = profile_body(place="Nakuru", lat=NAKURU[0], lon=NAKURU[1], processes=["FDM", "basket weaving", "fdm"],
                        materials=["PLA", "pla "], languages=["sw", "en_GB"], machines=["laser cutter; 600x400 mm; CO2"])
    record = lab(1, "Fab Lab Nakuru", **body)
    assert b"30719" not in record.raw and b"07225" not in record.raw  # the typed digits are not in the block
    profile = profile_from_record(verify_record(record.raw, now_ms=NOW))
    assert profile.precision_km == 10 and distance_km(*NAKURU, profile.lat, profile.lon) < 7.5
    assert profile.processes == ("3d-printing-fdm",) and profile.unknown_processes == ("basket weaving",)
    assert profile.materials == ("pla",) and profile.languages == ("sw", "en-GB")
    assert profile.machines[0].kind == "laser cutter" and profile.machines[0].size == "600x400 mm"
    assert profile.taking_requests is False and profile.nodes == (record.body["nodes"][0]["peer"],)


def test_a_peers_synonyms_are_folded_when_read():
    """A profile written by another node (or before a term was known) is read with today's vocabulary."""
    profile = profile_from_record(lab(2, "Lab B", processes=["FDM", "Laser Cutter", "welding", "weaving"]))
    assert profile.processes == ("3d-printing-fdm", "laser-cutting", "welding") and profile.unknown_processes == ("weaving",)


@pytest.mark.parametrize("body, says", [
    ({"location": {"lat": 90_000_001, "lon": 0, "precision_m": 10_000}}, "body.location.lat (microdegrees) 90000001 is out of range"),
    ({"location": {"lat": 0, "lon": -180_000_001, "precision_m": 10_000}}, "body.location.lon (microdegrees)"),
    ({"location": {"lat": 0, "lon": 0, "precision_m": 10}}, "body.location.precision_m 10 is out of range (100 to 500000)"),
    ({"location": {"lat": 0, "lon": 0, "precision_m": 5_000_000}}, "precision_m 5000000 is out of range"),
    ({"location": {"lat": 0, "lon": 0}}, "must be a map of exactly lat, lon and precision_m"),
    ({"location": {"lat": "0", "lon": 0, "precision_m": 100}}, "must be an integer, not str"),
    ({"processes": [f"p{i}" for i in range(10_000)]}, "body.processes has 10000 entries (at most 64)"),
    ({"machines": [{"kind": "lathe"}] * 65}, "body.machines has 65 entries (at most 64)"),
    ({"materials": [f"m{i}" for i in range(129)]}, "body.materials has 129 entries (at most 128)"),
    ({"languages": ["en"] * 17}, "body.languages has 17 entries (at most 16)"),
    ({"languages": ["en_GB"]}, "body.languages[0]: 'en_GB' is not in canonical case"),
    ({"languages": ["english!!"]}, "not a well-formed language tag"),
    ({"languages": ["sw", "sw"]}, "lists 'sw' twice"),
    ({"processes": ["welding", "Welding"]}, "lists 'Welding' twice"),
    ({"place": "Nakuru\nerror: disk full"}, "body.place holds the invisible or control character U+000A"),
    ({"place": "x" * 201}, "body.place is 201 characters long (at most 200)"),
    ({"contact": "a\u202eb"}, "U+202E"),
    ({"bioregion": ""}, "body.bioregion is empty"),
    ({"machines": [{"kind": "lathe", "colour": "red"}]}, "must be a map of kind and optionally size and notes"),
    ({"taking_requests": "yes"}, "body.taking_requests must be true or false, not str"),
])
def test_a_peers_profile_out_of_bounds_is_refused_in_one_line(body, says):
    with pytest.raises(RecordRejected) as refused:
        verify_record(forged(3, body), now_ms=NOW)
    assert says in str(refused.value) and "\n" not in str(refused.value), str(refused.value)


def test_a_past_dated_lab_record_is_refused_and_so_is_one_claiming_another_labs_node():
    with pytest.raises(RecordRejected, match=r"dated 86400000 ms \(before 2020-01-01\) is past-dated nonsense"):
        verify_record(forged(4, {}, ts=86_400_000), now_ms=NOW)
    _, other = signing_key(5)
    with pytest.raises(RecordRejected, match="did not sign that it runs for"):
        verify_record(forged(4, {"nodes": [node(105, other)], "place": "Nakuru"}), now_ms=NOW)


@pytest.mark.parametrize("kwargs, says", [
    ({"lat": 91.0, "lon": 0.0}, "latitude 91.0 is out of range"),
    ({"lat": 0.0, "lon": 181.0}, "longitude 181.0 is out of range"),
    ({"lat": math.nan, "lon": 0.0}, "latitude nan is out of range"),
    ({"lat": 1.0}, "give both --lat and --lon"),
    ({"lat": 1.0, "lon": 1.0, "precision_km": 0.05}, "precision 0.05 km is absurd"),
    ({"lat": 1.0, "lon": 1.0, "precision_km": 501}, "precision 501 km is absurd"),
    ({"precision_km": 5}, "--precision-km needs coordinates"),
    ({"processes": ["x"] * 65}, "processes has 65 entries (at most 64)"),
    ({"languages": ["not a tag"]}, "is not a well-formed language tag"),
])
def test_what_an_operator_types_is_refused_in_one_line_before_anything_is_signed(kwargs, says):
    with pytest.raises(ProfileRefused) as refused:
        profile_body(**kwargs)
    assert says in str(refused.value) and "\n" not in str(refused.value)


# ------------------------------------------------------------------ the store


@pytest.fixture
def records(tmp_path):
    from fabnode.storage import Stores, open_db

    return Stores.over(open_db(tmp_path / "fabnode.db")).records


def _at(lat_lon, precision_km=10.0):
    return profile_body(lat=lat_lon[0], lon=lat_lon[1], precision_km=precision_km)


def test_the_store_answers_near_by_radius_and_by_process_from_the_newest_profile(records):
    from fabnode.storage.labs import lab_profile, lab_profiles, reindex_all

    conn = records._conn
    nakuru = lab(6, "Fab Lab Nakuru", **_at(NAKURU), processes=["welding", "FDM"])
    nairobi = lab(7, "Nairobi Makers", **_at(NAIROBI), processes=["laser cutter"])
    pune = lab(8, "Fab Lab Pune", **_at(PUNE), processes=["welding"])
    nowhere = lab(9, "Lab Without A Place", processes=["welding"])
    for r in (nakuru, nairobi, pune, nowhere):
        records.ingest(r, received_ms=NOW)
    near = lab_profiles(conn, near=NAIROBI, radius_km=200)
    assert [p.name for p in near] == ["Nairobi Makers", "Fab Lab Nakuru"]
    assert [p.name for p in lab_profiles(conn, near=NAIROBI)] == ["Nairobi Makers", "Fab Lab Nakuru", "Fab Lab Pune"]
    assert [p.name for p in lab_profiles(conn, process="WELD")] == ["Fab Lab Nakuru", "Fab Lab Pune", "Lab Without A Place"]
    assert [p.name for p in lab_profiles(conn, near=NAIROBI, radius_km=200, process="tig welding")] == ["Fab Lab Nakuru"]
    assert [p.name for p in lab_profiles(conn, near=(0.0, 179.9), radius_km=500)] == []
    # a newer profile replaces the older; one arriving late does not win
    _, did = signing_key(6)
    newer = lab(6, "Fab Lab Nakuru", ts=NOW + 10, **_at(NAKURU), processes=["sewing"])
    older = lab(6, "Fab Lab Nakuru", ts=NOW - 10, processes=["casting"])
    records.ingest(newer, received_ms=NOW)
    records.ingest(older, received_ms=NOW)
    assert lab_profile(conn, did).processes == ("sewing",)
    assert [p.name for p in lab_profiles(conn, process="welding")] == ["Fab Lab Pune", "Lab Without A Place"]
    # the newest evicted (the strangers' quota applies to lab records as to any): the next one speaks again
    records.evict([newer.cid], NOW)
    assert lab_profile(conn, did).processes == ("welding", "3d-printing-fdm")
    # what migration 011 does for records stored before it: the same rows again
    before = lab_profiles(conn)
    conn.execute("DELETE FROM lab_profiles")
    reindex_all(conn)
    assert lab_profiles(conn) == before
