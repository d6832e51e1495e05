"""Designs, versions, adaptations, attestations and trust, through the real CLI.

The story of the README: Fab Lab Nairobi publishes a hand pump and improves it; a workshop in
Cusco adapts it; a lab in Pune builds the adaptation and attests it. Records travel between the
homes through :func:`carry`, which verifies each one as a peer would (the network and the
sneakernet carry them for real in tests/test_network.py, tests/test_sync.py and
tests/test_sneakernet.py).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from fabnode.protocol.records import verify_record
from fabnode.storage import BlockStore, open_db
from fabnode.storage.records import RecordStore

from conftest import ROOT, Cli

EXAMPLE = ROOT / "examples" / "hand-pump"


def carry(src: Cli, dst: Cli) -> int:
    """Copy every record of src into dst, verifying each (a stand-in for sync)."""
    source = sqlite3.connect(src.home / "fabnode.db")
    rows = source.execute("SELECT cid, data FROM records ORDER BY rowid").fetchall()
    source.close()
    store = BlockStore(open_db(dst.home / "fabnode.db"))
    records = RecordStore(store.db.conn)
    new = 0
    now = time.time_ns() // 1_000_000
    with store.write_transaction():
        for cid, data in rows:
            new += records.ingest(verify_record(data, now_ms=now, cid=cid), received_ms=now)
    store.close()
    return new


def _state(cli: Cli) -> list:
    conn = sqlite3.connect(cli.home / "fabnode.db")
    try:
        return [conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
                for t in ("blocks", "pins", "records", "versions", "designs", "attestations", "vouches")]
    finally:
        conn.close()


@pytest.fixture
def labs(tmp_path):
    made = {}
    for key, name in (("nairobi", "Fab Lab Nairobi"), ("cusco", "Taller Cusco"), ("pune", "Pune Makers")):
        cli = Cli(tmp_path / key)
        cli.run("init", "--name", name)
        made[key] = cli
    return made


def _copy_example(dst: Path, handle_mm: int | None = None) -> Path:
    shutil.copytree(EXAMPLE, dst)
    if handle_mm is not None:
        readme = dst / "README.md"
        readme.write_text(readme.read_text(encoding="utf-8") + f"\nHandle length: {handle_mm} mm.\n", encoding="utf-8")
    return dst


def test_the_story_of_a_pump(labs, tmp_path):
    nairobi, cusco, pune = labs["nairobi"], labs["cusco"], labs["pune"]
    first = nairobi.json("publish", str(EXAMPLE), "-m", "first design")
    design = first["design"]
    assert first["version"] == design and first["bundle"] == nairobi.out("add", str(EXAMPLE))
    assert first["warnings"] == []  # the example's manifest is complete

    v2 = nairobi.json("publish", str(_copy_example(tmp_path / "pump-v2", 900)), "-m", "longer handle for children",
                      "--design", design, "--label", "1.1.0")
    assert v2["design"] == design
    log = nairobi.json("log", design)
    assert log["heads"] == [v2["version"]]
    assert [v["version"] for v in log["versions"]] == [v2["version"], design]
    assert log["versions"][0]["parents"] == [design] and log["versions"][0]["canonical"] is True

    # Cusco adapts v2 under a licence that is not share-alike: allowed, but warned about.
    carry(nairobi, cusco)
    peru = _copy_example(tmp_path / "pump-peru")
    (peru / "okh.toml").write_text((peru / "okh.toml").read_text(encoding="utf-8").replace(
        'license = "CERN-OHL-S-2.0"', 'license = "MIT"'), encoding="utf-8")
    adapted = cusco.run("publish", str(peru), "-m", "adapted for PVC pipe sizes sold in Cusco",
                        "--parent", v2["version"], "--json")
    assert "share-alike" in adapted.stderr.decode() and "MIT" in adapted.stderr.decode()
    adapted = json.loads(adapted.stdout)
    assert adapted["design"] == adapted["version"] != design

    # Pune builds the adaptation and attests it; everyone hears of everything.
    carry(cusco, pune)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8 a photo of the pump pumping \xff\xd9")
    attestation = pune.out("attest", adapted["version"], "--result", "passed", "-m", "built with 32 mm PVC",
                           "--evidence", str(photo), "--test", "flow-rate")
    shown = pune.json("show", attestation)
    assert shown["valid"] is True and shown["type"] == "attestation"
    assert shown["body"]["subject"] == {"/": adapted["version"]} and shown["body"]["tests"] == ["flow-rate"]
    evidence = shown["body"]["evidence"][0]["/"]
    assert pune.run("cat", evidence).stdout == photo.read_bytes()
    for a, b in ((pune, cusco), (cusco, nairobi), (pune, nairobi)):
        carry(a, b)

    # Nairobi sees the lineage cross designs, and the adaptation's attestation
    log = nairobi.json("log", design)
    assert log["adaptations"] == [{"design": adapted["design"], "title": "Direct-action PVC hand pump",
                                   "author": cusco.json("id")["did"], "author_trusted": False,
                                   "from": [v2["version"]]}]
    peru_log = nairobi.json("log", adapted["version"])
    assert peru_log["upstream"] == [v2["version"]]
    assert peru_log["versions"][0]["attestations"] == {"built/passed": 1}

    # Reputation is personal: Pune's word counts for Nairobi only once Nairobi vouches for Pune.
    before = nairobi.json("reputation", adapted["version"])
    assert before["verdict"] == "unknown" and before["reasons"][0]["weight"] == 0
    nairobi.out("vouch", pune.json("id")["did"], "-m", "we built their jig together")
    after = nairobi.json("reputation", adapted["version"])
    assert after["verdict"] == "recommended" and after["reasons"][0]["weight"] > 0
    assert after["reasons"][0]["path"] == [nairobi.json("id")["did"], pune.json("id")["did"]]
    assert [t["did"] for t in nairobi.json("trust")["trusted"]] == [nairobi.json("id")["did"], pune.json("id")["did"]]
    assert "Pune Makers" in nairobi.out("reputation", adapted["design"])

    # designs and search
    assert {d["design"] for d in nairobi.json("designs")} == {design, adapted["design"]}
    found = nairobi.json("search", "Cusco PVC")
    assert [d["design"] for d in found] == [adapted["design"]]
    assert [d["design"] for d in nairobi.json("search", "children")] == [design]


def test_a_trusted_defect_is_visible_in_the_reasons(labs, tmp_path):
    nairobi, cusco, pune = labs["nairobi"], labs["cusco"], labs["pune"]
    v = nairobi.json("publish", str(EXAMPLE), "-m", "first design")["version"]
    carry(nairobi, cusco)
    carry(nairobi, pune)
    cusco.out("attest", v, "--result", "passed", "-m", "works")
    pune.out("attest", v, "--predicate", "defect", "--result", "failed", "-m", "piston seal tears after 2 days")
    carry(cusco, nairobi)
    carry(pune, nairobi)
    for lab in (cusco, pune):
        nairobi.out("vouch", lab.json("id")["did"])
    rep = nairobi.json("reputation", v)
    assert rep["verdict"] != "recommended"
    negative = [r for r in rep["reasons"] if r["predicate"] == "defect"]
    assert negative and negative[0]["lab"] == "Pune Makers" and negative[0]["weight"] > 0
    assert any("defect" in line and "Pune Makers" in line for line in rep["explanation"])


def test_local_mistakes_are_refused_and_change_nothing(labs, tmp_path):
    lab = labs["nairobi"]
    v = lab.json("publish", str(EXAMPLE), "-m", "first design")["version"]
    before = _state(lab)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "notes.md").write_text("no manifest here")
    assert "no licence" in lab.fails("publish", str(bare), "-m", "x")
    assert "not a valid SPDX" in lab.fails("publish", str(bare), "-m", "x", "--license", "Do What You Want")
    unknown = "bafyreigpskon7xgydefbphezq4vs5uq2ahldzqbwtexerpklsezn4j3ggq"
    assert lab.fails("attest", unknown, "--result", "passed") == (
        f"error: unknown version {unknown}: only versions this node knows can be attested")
    assert "unknown parent version" in lab.fails("publish", str(bare), "-m", "x", "--license", "MIT", "--parent", unknown)
    assert "no design or version" in lab.fails("publish", str(bare), "-m", "x", "--license", "MIT", "--design", unknown)
    assert "is 49 characters long, not 56" in lab.fails("vouch", "did:key:z6MkehRgf7yJbgaGfYsdoAsKdBPE3dj2CYhowQdcj")
    assert "own key" in lab.fails("vouch", lab.json("id")["did"])
    assert "the following arguments are required: --result" in lab.fails("attest", v, code=2)
    assert _state(lab) == before


def test_versions_arriving_before_their_design_are_shown_then_linked(labs, tmp_path):
    """A later version (and an attestation on it) may arrive before the design's first version."""
    nairobi, cusco = labs["nairobi"], labs["cusco"]
    first = nairobi.json("publish", str(EXAMPLE), "-m", "first design")
    v2 = nairobi.json("publish", str(_copy_example(tmp_path / "v2", 850)), "-m", "handle", "--design", first["design"])
    src = sqlite3.connect(nairobi.home / "fabnode.db")
    rows = dict(src.execute("SELECT cid, data FROM records").fetchall())
    src.close()
    from fabnode.protocol.cid import parse_cid

    store = BlockStore(open_db(cusco.home / "fabnode.db"))
    records = RecordStore(store.db.conn)
    now = time.time_ns() // 1_000_000
    with store.write_transaction():
        second = parse_cid(v2["version"])
        records.ingest(verify_record(rows[second], now_ms=now), received_ms=now)
    log = cusco.json("log", v2["version"])
    assert [v["version"] for v in log["versions"]] == [v2["version"]]
    assert log["maintainers"] is None and log["versions"][0]["canonical"] is None and log["heads"] == []
    with store.write_transaction():
        firstcid = parse_cid(first["version"])
        records.ingest(verify_record(rows[firstcid], now_ms=now), received_ms=now)
    store.close()
    log = cusco.json("log", first["design"])
    assert log["heads"] == [v2["version"]] and log["maintainers"] == [nairobi.json("id")["did"]]
    assert all(v["canonical"] for v in log["versions"])


from test_records import hostile_cases, golden_records  # noqa: E402


@pytest.mark.parametrize("name, raw, reason", hostile_cases(), ids=[c[0] for c in hostile_cases()])
def test_hostile_records_from_elsewhere_store_nothing(labs, name, raw, reason):
    from fabnode.node.local.commons import receive_records

    lab = labs["nairobi"]
    lab.json("vouch", labs["cusco"].json("id")["did"])
    before = _state(lab)
    store = BlockStore(open_db(lab.home / "fabnode.db"))
    good = golden_records()[2]
    with store.write_transaction():
        result = receive_records(RecordStore(store.db.conn), [(good.cid, good.raw), (None, raw)], now=1764081600000)
    store.close()
    assert result.new == [] and len(result.rejected) == 1
    where, why = result.rejected[0]
    assert where == "record #2" and reason in why
    assert _state(lab) == before


def test_records_from_elsewhere_are_idempotent(labs):
    from fabnode.node.local.commons import receive_records

    lab = labs["pune"]
    store = BlockStore(open_db(lab.home / "fabnode.db"))
    blocks = [(r.cid, r.raw) for r in golden_records()]
    with store.write_transaction():
        first = receive_records(RecordStore(store.db.conn), blocks, now=1764081600000)
        again = receive_records(RecordStore(store.db.conn), blocks, now=1764081600000)
    store.close()
    assert len(first.new) == 3 and first.known == [] and again.new == [] and len(again.known) == 3
    # the attestation's version came with it; its bundle did not, which is normal for records
    assert lab.json("log", golden_records()[0].id)["versions"][0]["attestations"] == {"built/passed": 1}


def test_show_and_fsck_report_a_record_that_no_longer_verifies(labs):
    lab = labs["nairobi"]
    v = lab.json("publish", str(EXAMPLE), "-m", "first design")["version"]
    assert lab.json("show", v)["valid"] is True
    conn = sqlite3.connect(lab.home / "fabnode.db")
    data = conn.execute("SELECT data FROM records WHERE type = 'version'").fetchone()[0]
    conn.execute("UPDATE records SET data = ? WHERE type = 'version'", (data.replace(b"first design", b"First design"),))
    conn.commit()
    conn.close()
    shown = lab.run("show", v, "--json")
    assert shown.returncode == 0
    result = json.loads(shown.stdout)
    assert result["valid"] is False and "its bytes hash to" in result["reason"] and result["type"] == "version"
    fsck = lab.run("fsck", "--json", check=False)
    assert fsck.returncode == 1
    report = json.loads(fsck.stdout)
    assert report["records"] == 2 and report["invalid_records"][0].startswith(v)  # and the lab record


def test_publish_lints_the_manifest_but_does_not_refuse(labs, tmp_path):
    lab = labs["nairobi"]
    design = _copy_example(tmp_path / "pump")
    (design / "bom.csv").unlink()
    text = (design / "okh.toml").read_text(encoding="utf-8")
    (design / "okh.toml").write_text(text.replace('licensor = "Fab Lab Nairobi contributors"', 'licensor = " "'),
                                     encoding="utf-8")  # blank: the schema accepts it, fabnode advises
    result = lab.run("publish", str(design), "-m", "first", "--json")
    warnings = json.loads(result.stdout)["warnings"]
    assert any("licensor" in w for w in warnings) and any("bom.csv" in w for w in warnings)
    assert all(f"warning: {w}" in result.stderr.decode() for w in warnings)


def test_a_sybil_swarm_does_not_move_the_score_through_the_real_store(labs):
    """1000 fresh keys vouch for each other and attest "passed" on a bad version; one trusted lab
    reports a defect. The node's answer is the same as without them, until a trusted key vouches
    for one of them."""
    import random

    from nacl.signing import SigningKey

    from fabnode.node.local.commons import receive_records
    from fabnode.protocol.cid import parse_cid
    from fabnode.protocol.dagcbor import Link
    from fabnode.protocol.identity import did_from_ed25519
    from fabnode.protocol.records import make_record

    nairobi, pune = labs["nairobi"], labs["pune"]
    bad = nairobi.json("publish", str(EXAMPLE), "-m", "first design")["version"]
    carry(nairobi, pune)
    pune.out("attest", bad, "--predicate", "defect", "--result", "failed", "-m", "cracks under load")
    carry(pune, nairobi)
    nairobi.out("vouch", pune.json("id")["did"])
    baseline = nairobi.json("reputation", bad)
    assert baseline["verdict"] == "not recommended"

    rng = random.Random(1000)
    keys = [SigningKey(rng.randbytes(32)) for _ in range(1000)]
    dids = [did_from_ed25519(bytes(k.verify_key)) for k in keys]
    now = time.time_ns() // 1_000_000
    blocks = []
    for i, key in enumerate(keys):
        sign = lambda m, k=key: k.sign(m).signature  # noqa: E731
        for j in {(i + 1) % 1000, (i + 7) % 1000, rng.randrange(1000)} - {i}:
            r = make_record("vouch", {"subject": dids[j], "trust": "trusted"}, author=dids[i], ts=now - 5000, sign=sign)
            blocks.append((r.cid, r.raw))
        r = make_record("attestation", {"subject": Link(parse_cid(bad)), "predicate": "built", "result": "passed",
                                        "lab": f"sybil {i}"}, author=dids[i], ts=now - 4000, sign=sign)
        blocks.append((r.cid, r.raw))
    store = BlockStore(open_db(nairobi.home / "fabnode.db"))
    with store.write_transaction():
        assert len(receive_records(RecordStore(store.db.conn), blocks, now=now).new) == len(blocks)
    store.close()

    swarmed = nairobi.json("reputation", bad)
    assert (swarmed["value"], swarmed["verdict"]) == (baseline["value"], baseline["verdict"])
    assert len(swarmed["reasons"]) == 1001 and swarmed["reasons"][0]["lab"] == "Pune Makers"
    assert all(r["weight"] == 0 and r["path"] == [] for r in swarmed["reasons"][1:])

    # A trusted key (Pune) vouches for one of them: the swarm now counts, but only through Pune.
    carry(nairobi, pune)
    pune.out("vouch", dids[0])
    carry(pune, nairobi)
    admitted = nairobi.json("reputation", bad)
    counted = [r for r in admitted["reasons"] if r["lab"].startswith("sybil") and r["weight"] > 0]
    assert counted and admitted["value"] > baseline["value"]
    assert all(r["path"][:2] == [nairobi.json("id")["did"], pune.json("id")["did"]] for r in counted)
    trust_of = {t["did"]: t["weight"] for t in nairobi.json("trust")["trusted"]}
    swarm_total = sum(trust_of.get(d, 0) for d in dids)
    assert 0 < swarm_total <= trust_of[pune.json("id")["did"]] + 1e-9  # bounded by Pune's own trust


def test_log_without_a_design_and_search_with_odd_text(labs, tmp_path):
    lab = labs["nairobi"]
    first = lab.json("publish", str(EXAMPLE), "-m", "first design")
    second = lab.json("publish", str(_copy_example(tmp_path / "v2", 880)), "-m", "second", "--design", first["design"])
    assert [v["version"] for v in lab.json("log")["versions"]] == [second["version"], first["version"]]
    for text in ('pump"', "NEAR(", "*", "title:pump", "AND OR NOT", "'); DROP TABLE designs; --"):
        result = lab.run("search", text, "--json", check=False)
        assert result.returncode == 0 and "Traceback" not in result.stderr.decode(), (text, result.stderr)
    assert [d["design"] for d in lab.json("search", "PVC pump")] == [first["design"]]
    assert lab.json("search", "   ") == []
