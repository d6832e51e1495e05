"""The `lab` record and showing labs by name (issue 15), as pure rules and over a real SQLite
store: a node's tie to its lab is the node's own signature, names that would deceive a terminal
or a page are refused with one line, the newest record by a key wins, and every key is shown one
way (local name, else declared name marked unverified, else the key abbreviated)."""

from __future__ import annotations

import pytest

from fabnode.protocol.dagcbor import encode
from fabnode.protocol.identity import peer_id_from_ed25519
from fabnode.protocol.labs import UNVERIFIED, lab_label, node_tie_statement, short_key
from fabnode.protocol.records import RecordRejected, make_record, verify_record

from daemons import signing_key

NOW = 1_764_081_600_000


def public(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def node(seed: int, lab_did: str) -> dict:
    """A node entry: the node (key ``seed``) signs that it runs for ``lab_did``."""
    key, _ = signing_key(seed)
    return {"peer": peer_id_from_ed25519(public(key)), "sig": key.sign(node_tie_statement(lab_did))}


def lab_record(seed: int, name: str, nodes: list[dict], ts: int = NOW, **extra):
    key, did = signing_key(seed)
    return make_record("lab", {"name": name, "nodes": nodes, **extra}, author=did, ts=ts, sign=key.sign)


def forged(seed: int, body: dict, ts: int = NOW) -> bytes:
    """A lab record signed by its author but with a body make_record would refuse."""
    from fabnode.protocol.records import FORMAT_VERSION, signing_bytes

    key, did = signing_key(seed)
    sig = key.sign(signing_bytes("lab", did, ts, body))
    return encode({"fabnode": FORMAT_VERSION, "type": "lab", "author": did, "ts": ts, "body": body, "sig": sig})


def test_a_lab_record_round_trips_and_ties_its_node():
    _, did = signing_key(1)
    record = lab_record(1, "Fab Lab Pune", [node(101, did)])
    again = verify_record(record.raw, now_ms=NOW, cid=record.cid)
    assert again.type == "lab" and again.body["name"] == "Fab Lab Pune"
    assert again.body["nodes"][0]["peer"].startswith("12D3KooW")


@pytest.mark.parametrize("name, says", [
    ("x" * 101, "101 characters long (at most 100)"),
    ("Pune\nerror: your disk is full", "U+000A"),
    ("Pune\x1b[31m", "U+001B"),
    ("Pune \u202eenuP", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
    ("Pune\u2066", "U+2066"),
    ("Pune\u200b", "U+200B"),
    ("   ", "is empty"),
    (" Pune", "starts or ends with a space"),
])
def test_names_that_would_deceive_a_terminal_or_a_page_are_refused_in_one_line(name, says):
    with pytest.raises(RecordRejected) as made:
        lab_record(2, name, [])
    with pytest.raises(RecordRejected) as received:
        verify_record(forged(2, {"name": name, "nodes": []}), now_ms=NOW)
    for exc in (made.value, received.value):
        assert says in str(exc) and "\n" not in str(exc) and str(exc).startswith("record rejected: body.name")


def test_a_node_entry_must_be_signed_by_that_node_for_this_lab():
    _, a_did = signing_key(3)
    _, b_did = signing_key(4)
    a_node = node(103, a_did)
    # B copies A's node entry (signature and all) into its own record: the node said A, not B
    with pytest.raises(RecordRejected, match=r"node 12D3KooW\w+ did not sign that it runs for did:key:z6Mk"):
        verify_record(forged(4, {"name": "Lab B", "nodes": [a_node]}), now_ms=NOW)
    # a signature by another key than the node's own
    other_key, _ = signing_key(104)
    wrong_signer = {"peer": a_node["peer"], "sig": other_key.sign(node_tie_statement(b_did))}
    with pytest.raises(RecordRejected, match="did not sign that it runs for"):
        verify_record(forged(4, {"name": "Lab B", "nodes": [wrong_signer]}), now_ms=NOW)
    # garbage where the signature goes, and a peer ID that is not one
    with pytest.raises(RecordRejected, match="did not sign"):
        verify_record(forged(4, {"name": "Lab B", "nodes": [{"peer": a_node["peer"], "sig": bytes(64)}]}), now_ms=NOW)
    with pytest.raises(RecordRejected, match=r"body.nodes\[0\].peer: not an Ed25519 peer ID"):
        verify_record(forged(4, {"name": "Lab B", "nodes": [{"peer": "QmNotAPeer", "sig": bytes(64)}]}), now_ms=NOW)
    with pytest.raises(RecordRejected, match="lists node .* twice"):
        verify_record(forged(4, {"name": "Lab B", "nodes": [node(105, b_did), node(105, b_did)]}), now_ms=NOW)
    with pytest.raises(RecordRejected, match="more than 32 entries"):
        verify_record(forged(4, {"name": "Lab B", "nodes": [node(105, b_did)] * 33}), now_ms=NOW)


def test_unknown_lab_fields_are_kept_for_later_profiles_but_other_types_still_refuse_them():
    _, did = signing_key(5)
    record = lab_record(5, "Lab E", [node(106, did)], place="Nairobi", processes=["laser", "cnc"])
    again = verify_record(record.raw, now_ms=NOW)
    assert again.body["place"] == "Nairobi" and again.raw == record.raw
    key, author = signing_key(6)
    with pytest.raises(RecordRejected, match="unknown body field"):
        make_record("vouch", {"subject": did, "trust": "trusted", "place": "x"}, author=author, ts=NOW, sign=key.sign)


def test_the_store_keeps_the_newest_record_per_lab_and_the_newest_tie_per_node(tmp_path):
    from fabnode.node.local.names import Names
    from fabnode.storage import Stores, open_db

    records = Stores.over(open_db(tmp_path / "fabnode.db")).records
    _, a = signing_key(7)
    _, b = signing_key(8)
    newer = lab_record(7, "Fab Lab Pune", [node(107, a)], ts=NOW + 10)
    older = lab_record(7, "Pune Makers", [node(108, a)], ts=NOW)
    records.ingest(newer, received_ms=NOW)
    records.ingest(older, received_ms=NOW)  # arrives late: does not win
    assert records.lab(a)[0] == "Fab Lab Pune" and records.nodes_of(a) == sorted([newer.body["nodes"][0]["peer"],
                                                                                  older.body["nodes"][0]["peer"]])
    shared = node(107, b)  # node 107 also signed for lab B, later: it shows as B's now
    records.ingest(lab_record(8, "Fab Lab Nairobi", [shared], ts=NOW + 20), received_ms=NOW)
    names = Names(records)
    assert names.label(shared["peer"]) == "Fab Lab Nairobi" + UNVERIFIED
    assert names.label(a) == "Fab Lab Pune (unverified)"
    records.set_local_name(a, "Pune", NOW)
    assert Names(records).label(a) == "Pune" and Names(records).fields(a) == {"name": "Pune", "name_source": "local"}
    assert Names(records).label(older.body["nodes"][0]["peer"]) == "Pune"  # A's node, A's local name
    # the newest record evicted (the strangers' quota): the older one names the lab again
    records.evict([newer.cid], NOW)
    assert records.lab(a)[0] == "Pune Makers"
    _, nobody = signing_key(9)
    assert Names(records).label(nobody) == short_key(nobody) == nobody[:12] + "…" + nobody[-4:]


def test_one_display_rule():
    did = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
    assert lab_label(did) == "did:key:z6Mk…2doK"
    assert lab_label(did, declared="Pune") == "Pune (unverified)"
    assert lab_label(did, local="Pune", declared="Evil") == "Pune"
    assert short_key("12D3KooWGUnbrxn79Fntufv6dJzua6qqrMz6mP9yGaz9hdhopnGF") == "12D3KooWGUnb…pnGF"


def test_an_import_holding_a_lab_record_that_claims_another_labs_node_stores_nothing(tmp_path):
    """The same rule on a real path: a USB stick's file with one such record is refused whole,
    in one line naming the node, and the store is as it was."""
    from types import SimpleNamespace

    from fabnode.protocol.cid import DAG_CBOR, make_cid

    from conftest import Cli
    from test_import_hostile import export_file
    from test_sneakernet import state

    cli = Cli(tmp_path / "lab")
    cli.run("init", "--name", "Lab C")
    _, a_did = signing_key(3)
    honest = lab_record(3, "Lab A", [node(103, a_did)])
    stolen = forged(4, {"name": "Lab B", "nodes": [node(103, a_did)]})
    car = tmp_path / "stick.car"
    car.write_bytes(export_file([honest, SimpleNamespace(cid=make_cid(DAG_CBOR, stolen), raw=stolen)]))
    before = state(cli)
    line = cli.fails("import", str(car))
    assert "did not sign that it runs for did:key:z6Mk" in line and honest.body["nodes"][0]["peer"] in line
    assert state(cli) == before and cli.json("name") == [
        {"key": cli.json("id")["did"], "local": None, "declared": "Lab C", "shown": "Lab C"}]
