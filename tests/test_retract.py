"""Taking back what was said (issue 17, "Must have" 5): retracting a version, withdrawing an
attestation. The pure rules (heads, reputation, who may take back what), arrival order against a
real SQLite store, hostile records and commands, and one story across two daemons and a USB stick,
run as an operator runs it."""

from __future__ import annotations

import json
import random
import shutil
import urllib.request

import pytest

from fabnode.node.local.commons import history, receive_records, score
from fabnode.protocol.cid import DAG_PB, cid_str, make_cid
from fabnode.protocol.dagcbor import Link
from fabnode.protocol.errors import FabnodeError
from fabnode.protocol.lineage import VersionNode, canonical_and_heads
from fabnode.protocol.records import RecordRejected, make_record, verify_record
from fabnode.protocol.reputation import Attestation, TrustPath, WITHDRAWN, explain, score_version
from fabnode.protocol.retractions import (TakeBack, judge_retractions, judge_withdrawals, retraction_counts,
                                          withdrawal_counts)
from fabnode.storage.db import open_db
from fabnode.storage.records import RecordStore

from conftest import Cli
from daemons import connect_line, has_record, make_labs, signing_key, wait_until
from test_import_hostile import export_file
from test_sneakernet import EXAMPLE, state

TS = 1764081600000
AUTHOR_KEY, AUTHOR = signing_key(41)
MAINTAINER_KEY, MAINTAINER = signing_key(42)
BUILDER_KEY, BUILDER = signing_key(43)
STRANGER_KEY, STRANGER = signing_key(44)


# ------------------------------------------------------------------ the pure rules


def _node(name: str, author: str, ts: int, *parents: str) -> VersionNode:
    return VersionNode(name.encode(), author, ts, tuple(p.encode() for p in parents))


def test_canonical_heads_skip_a_retracted_version_and_walk_through_it():
    v1, v2 = _node("v1", AUTHOR, 1), _node("v2", AUTHOR, 2, "v1")
    maintainers = [AUTHOR, MAINTAINER]
    assert canonical_and_heads([v1, v2], maintainers)[1] == [b"v2"]
    canonical, heads = canonical_and_heads([v1, v2], maintainers, [b"v2"])
    assert heads == [b"v1"] and canonical == {b"v1", b"v2"}  # back to the version before; v2 still canonical
    v3 = _node("v3", MAINTAINER, 3, "v2")  # a maintainer built on the retracted version: their fix is the head
    assert canonical_and_heads([v1, v2, v3], maintainers, [b"v2"])[1] == [b"v3"]
    p3 = _node("p3", STRANGER, 3, "v2")  # a stranger's proposal on it changes nothing
    assert canonical_and_heads([v1, v2, p3], maintainers, [b"v2"])[1] == [b"v1"]
    assert canonical_and_heads([v1, v2], maintainers, [b"v1", b"v2"])[1] == []  # all retracted: no head
    assert canonical_and_heads([v1, v2], maintainers, [b"p3"])[1] == [b"v2"]  # retracting a non-version: nothing


def test_who_may_take_back_what():
    assert retraction_counts(AUTHOR, AUTHOR, [MAINTAINER])  # the version's author, maintainer or not
    assert retraction_counts(MAINTAINER, AUTHOR, [AUTHOR, MAINTAINER])
    assert not retraction_counts(STRANGER, AUTHOR, [AUTHOR, MAINTAINER])
    assert retraction_counts(AUTHOR, AUTHOR, None) and not retraction_counts(MAINTAINER, AUTHOR, None)
    assert withdrawal_counts(BUILDER, BUILDER) and not withdrawal_counts(AUTHOR, BUILDER)
    by_stranger, late, early = (TakeBack(b"s", STRANGER, 1, "spite"), TakeBack(b"m", MAINTAINER, 9, "cracks"),
                                TakeBack(b"a", AUTHOR, 5, "snaps"))
    counted, ignored = judge_retractions([late, by_stranger, early], AUTHOR, [AUTHOR, MAINTAINER])
    assert counted == early and ignored == [by_stranger]  # the earliest that counts, the same on every node
    assert judge_withdrawals([by_stranger], BUILDER) == (None, [by_stranger])


def test_a_withdrawn_attestation_weighs_nothing_and_says_so():
    trust = {AUTHOR: TrustPath(1.0, (AUTHOR,)), BUILDER: TrustPath(0.5, (AUTHOR, BUILDER))}
    older = Attestation("a-old", BUILDER, "built", "failed", "Builders", 1)
    newer = Attestation("a-new", BUILDER, "built", "passed", "Builders", 2)
    assert score_version([older, newer], trust).verdict == "recommended"  # the newest word counts
    taken_back = Attestation("a-new", BUILDER, "built", "passed", "Builders", 2, "built from the wrong files")
    result = score_version([older, taken_back], trust)
    by_cid = {r.cid: r for r in result.reasons}
    assert by_cid["a-new"].status == WITHDRAWN and by_cid["a-new"].weight == 0.0
    assert by_cid["a-old"].weight > 0 and result.verdict == "not recommended"  # the older word stands again
    line = next(line for line in explain(result) if "withdrawn" in line)
    assert "not counted: withdrawn by its author: built from the wrong files" in line
    alone = score_version([taken_back], trust)
    assert alone.verdict == "unknown" and alone.value == 0.0


# ------------------------------------------------------------------ records, and any arrival order


def _sign(key):
    return key.sign


def _records():
    """v1 (first, maintainers AUTHOR and MAINTAINER), v2 on it, BUILDER's attestation on v2, the
    author's retraction of v2, the builder's withdrawal, and a stranger's retraction of v1."""
    bundle = Link(make_cid(DAG_PB, b"pump files"))
    v1 = make_record("version", {"bundle": bundle, "parents": [], "title": "Pump", "message": "first",
                                 "license": "MIT", "maintainers": [AUTHOR, MAINTAINER]},
                     author=AUTHOR, ts=TS, sign=_sign(AUTHOR_KEY))
    v2 = make_record("version", {"bundle": Link(make_cid(DAG_PB, b"pump files 2")), "parents": [Link(v1.cid)],
                                 "design": Link(v1.cid), "title": "Pump", "message": "longer handle", "license": "MIT"},
                     author=AUTHOR, ts=TS + 1000, sign=_sign(AUTHOR_KEY))
    att = make_record("attestation", {"subject": Link(v2.cid), "predicate": "built", "result": "passed"},
                      author=BUILDER, ts=TS + 2000, sign=_sign(BUILDER_KEY))
    retraction = make_record("retraction", {"subject": Link(v2.cid), "reason": "the handle snaps"},
                             author=AUTHOR, ts=TS + 3000, sign=_sign(AUTHOR_KEY))
    withdrawal = make_record("withdrawal", {"subject": Link(att.cid), "reason": "wrong files"},
                             author=BUILDER, ts=TS + 4000, sign=_sign(BUILDER_KEY))
    spite = make_record("retraction", {"subject": Link(v1.cid), "reason": "I do not like it"},
                        author=STRANGER, ts=TS + 5000, sign=_sign(STRANGER_KEY))
    return v1, v2, att, retraction, withdrawal, spite


def _outcome(records: RecordStore, v1, v2) -> tuple:
    """What a user is shown, as JSON text: the log (heads, retractions, counts) and the reputation."""
    log = history(records, BUILDER, cid_str(v1.cid))
    rep = score(records, BUILDER, cid_str(v2.cid))
    designs = sorted(r[0] for r in records._conn.execute(
        "SELECT type || ':' || hex(design) FROM records WHERE type IN ('retraction', 'withdrawal')"))
    return json.dumps([log["heads"], log["versions"], rep["reasons"], rep["retracted"], designs], sort_keys=True)


def test_any_arrival_order_gives_the_same_lineage_reputation_and_export(tmp_path):
    records = _records()
    v1, v2 = records[0], records[1]
    outcomes = set()
    orders = [list(records), list(reversed(records))]
    rng = random.Random(17)
    orders += [rng.sample(records, len(records)) for _ in range(4)]
    for i, order in enumerate(orders):
        db = open_db(tmp_path / f"order{i}.db")
        store = RecordStore(db.conn)
        for record in order:  # one at a time: each arrives in a sync of its own
            received = receive_records(store, [(record.cid, record.raw)], now=TS + 10_000)
            assert not received.rejected, received.rejected
        outcomes.add(_outcome(store, v1, v2))
        db.close()
    assert len(outcomes) == 1
    heads, versions, reasons, retracted, designs = json.loads(outcomes.pop())
    assert heads == [cid_str(v1.cid)]
    by_version = {v["version"]: v for v in versions}
    assert by_version[cid_str(v2.cid)]["retracted"]["reason"] == "the handle snaps"
    assert by_version[cid_str(v1.cid)]["retracted"] is None  # the stranger's retraction counts nowhere…
    assert [r["by"] for r in by_version[cid_str(v1.cid)]["retractions_ignored"]] == [STRANGER]  # …but is listed
    assert by_version[cid_str(v2.cid)]["withdrawn_attestations"] == 1
    assert [(r["status"], r["withdrawn"]) for r in reasons] == [("withdrawn", "wrong files")]
    assert retracted["reason"] == "the handle snaps"
    design_hex = v1.cid.hex().upper()
    assert designs == sorted([f"retraction:{design_hex}"] * 2 + [f"withdrawal:{design_hex}"])  # a design export carries them
    # the author retracts v1 too: no head is left, and judging the design says why
    db = open_db(tmp_path / "all-retracted.db")
    store = RecordStore(db.conn)
    last = make_record("retraction", {"subject": Link(v1.cid), "reason": "the whole pump leaks"}, author=MAINTAINER,
                       ts=TS + 6000, sign=_sign(MAINTAINER_KEY))
    assert not receive_records(store, [(r.cid, r.raw) for r in (*records, last)], now=TS + 10_000).rejected
    assert history(store, BUILDER, cid_str(v1.cid))["heads"] == []
    with pytest.raises(FabnodeError, match="no canonical version left to judge: its maintainers retracted every one"):
        score(store, BUILDER, cid_str(v1.cid))
    db.close()


@pytest.mark.parametrize("body, reason", [
    ({"subject": "v"}, "needs body.reason"),
    ({"subject": "v", "reason": "   "}, "must say why"),
    ({"subject": "v", "reason": "x" * 501}, "longer than 500 characters"),
    ({"subject": "v", "reason": 7}, "must be text"),
    ({"subject": "not a link", "reason": "why"}, "CID link"),
    ({"reason": "why"}, "needs body.subject"),
    ({"subject": "v", "reason": "why", "severity": "high"}, "unknown body field"),
])
@pytest.mark.parametrize("rtype", ["retraction", "withdrawal"])
def test_malformed_takebacks_are_refused_in_one_line(rtype, body, reason):
    v = _records()[1]
    body = {k: (Link(v.cid) if value == "v" else value) for k, value in body.items()}
    with pytest.raises(RecordRejected) as caught:
        make_record(rtype, body, author=AUTHOR, ts=TS, sign=_sign(AUTHOR_KEY))
    assert reason in str(caught.value) and "\n" not in str(caught.value)
    good = make_record(rtype, {"subject": Link(v.cid), "reason": "x" * 500}, author=AUTHOR, ts=TS, sign=_sign(AUTHOR_KEY))
    assert verify_record(good.raw, now_ms=TS).body["reason"] == "x" * 500


# ------------------------------------------------------------------ hostile, at the command line


def test_hostile_takebacks_are_refused_in_one_line_and_change_nothing(tmp_path):
    cli = Cli(tmp_path / "home")
    cli.run("init", "--name", "Builders")
    v1, v2, att, retraction, withdrawal, spite = _records()
    cli.out("import", str(_file(tmp_path / "base.car", [v1, v2, att])))
    design = cid_str(v1.cid)
    me_att = cli.out("attest", cid_str(v2.cid), "--result", "passed")
    misaimed = [
        (make_record("retraction", {"subject": Link(att.cid), "reason": "not a version"}, author=BUILDER, ts=TS,
                     sign=_sign(BUILDER_KEY)), "a retraction's subject must be a version"),
        (make_record("withdrawal", {"subject": Link(v2.cid), "reason": "not an attestation"}, author=AUTHOR, ts=TS,
                     sign=_sign(AUTHOR_KEY)), "a withdrawal's subject must be an attestation"),
    ]
    before = state(cli)
    for record, reason in misaimed:
        line = cli.fails("import", str(_file(tmp_path / "bad.car", [record])))
        assert reason in line
        assert state(cli) == before
    for args, reason in [
        (("retract", cid_str(v2.cid)), "a reason is required"),
        (("retract", cid_str(v2.cid), "--reason", "  "), "a reason is required"),
        (("retract", cid_str(v2.cid), "--reason", "x" * 501), "at most 500"),
        (("retract", cid_str(v2.cid), "--reason", "spite"), "neither the author"),  # this lab is a stranger to v2
        (("retract", me_att, "--reason", "oops"), "is a attestation, not a version"),
        (("retract", cid_str(make_cid(DAG_PB, b"nothing")), "--reason", "oops"), "no version"),
        (("attest", "--withdraw", cid_str(att.cid), "--reason", "not mine"), "only its author can withdraw it"),
        (("attest", "--withdraw", cid_str(v2.cid), "--reason", "oops"), "not an attestation"),
        (("attest", "--withdraw", me_att), "a reason is required"),
    ]:
        assert reason in cli.fails(*args), args
        assert state(cli) == before, args
    assert "--reason goes with --withdraw" in cli.fails("attest", cid_str(v2.cid), "--result", "passed", "--reason",
                                                        "why", code=2)  # misuse, as argparse says it
    # a stranger's retraction is stored and shown as what it is: ignored
    cli.out("import", str(_file(tmp_path / "spite.car", [spite])))
    log = cli.json("log", design)
    assert log["heads"] == [cid_str(v2.cid)] and not any(v["retracted"] for v in log["versions"])
    shown = cli.out("show", cid_str(v1.cid))
    assert "ignored: a retraction by" in shown and "not the author or a maintainer: I do not like it" in shown
    assert "IGNORED  ignored: its author is not the version's author" in cli.out("show", cid_str(spite.cid))


def _file(path, records):
    path.write_bytes(export_file(records))
    return path


# ------------------------------------------------------------------ the story: two daemons, a USB stick


def test_retract_and_withdraw_across_two_daemons_a_usb_stick_and_the_web_page(tmp_path, daemons):
    a, b = make_labs(tmp_path, 2)
    pump2 = tmp_path / "pump2"
    shutil.copytree(EXAMPLE, pump2)
    (pump2 / "README.md").write_text("# Pump, longer handle\n", encoding="utf-8")
    v1 = a.json("publish", str(EXAMPLE), "-m", "first design")
    design = v1["design"]
    v2 = a.json("publish", str(pump2), "-m", "longer handle", "--design", design)["version"]
    da, db_ = connect_line(daemons, [a, b])
    wait_until(lambda: has_record(b.home, v2), timeout=60, what="v2 at lab B")
    att = b.out("attest", v2, "--result", "passed", "-m", "built it")
    wait_until(lambda: has_record(a.home, att), timeout=60, what="B's attestation at lab A")
    reason_r, reason_w = "the longer handle snaps under load", "we built it from the wrong files"
    retraction = a.out("retract", v2, "--reason", reason_r)
    withdrawal = b.out("attest", "--withdraw", att, "--reason", reason_w)
    wait_until(lambda: all(has_record(lab.home, cid) for lab in (a, b) for cid in (retraction, withdrawal)),
               timeout=60, what="the retraction and the withdrawal at both labs")
    for lab in (a, b):
        log = lab.json("log", design)
        row = next(v for v in log["versions"] if v["version"] == v2)
        assert row["retracted"]["reason"] == reason_r and row["retracted"]["record"] == retraction
        assert log["heads"] == [v1["version"]] and not row["head"]
        assert row["withdrawn_attestations"] == 1 and row["attestations_by_trust"]["trusted"] == {}
        text = lab.out("log", design)
        line = next(line for line in text.splitlines() if line.startswith(v2))
        assert "RETRACTED" in line and "1 withdrawn by their authors, not counted" in line
        assert f"retracted by Lab 0" in text and reason_r in text
        rep = lab.json("reputation", v2)
        assert rep["verdict"] == "unknown" and [r["status"] for r in rep["reasons"]] == ["withdrawn"]
        said = lab.out("reputation", v2)
        assert f"not counted: withdrawn by its author: {reason_w}" in said and reason_r in said
        assert lab.json("reputation", design)["version"] == v1["version"]  # the design is judged by its head
        assert f"withdrawn by its author on" in lab.out("show", att) and reason_w in lab.out("show", att)
        assert "counts  signed by the version's author" in lab.out("show", retraction)
    base = "http://" + json.loads((a.home / "daemon.json").read_text())["http"]
    with urllib.request.urlopen(f"{base}/design/{design}", timeout=10) as response:
        page = response.read().decode()
    row = page.split(f'data-version="{v2}"', 1)[1].split("</tr>", 1)[0]
    assert 'class="retracted"' in page and "<s>" in row and reason_r in row and "Lab 0" in row
    assert 'data-retracted="true"' in page and 'text-decoration="line-through"' in page  # the lineage drawing
    with urllib.request.urlopen(f"{base}/version/{v2}", timeout=10) as response:
        version_page = response.read().decode()
    assert 'id="retracted"' in version_page and 'class="attestation withdrawn"' in version_page
    assert reason_w in version_page
    with urllib.request.urlopen(f"{base}/", timeout=10) as response:
        home_page = response.read().decode()
    latest = home_page.split('id="latest-versions"', 1)[1].split("</table>", 1)[0]
    assert '<tr class="retracted"><td><s>' in latest and reason_r in latest
    # a USB stick to a third lab, with no daemon: the design's records carry both
    stick = tmp_path / "stick.car"
    a.out("export", str(stick), "--design", design, "--records-only")
    c = Cli(tmp_path / "lab-c")
    c.run("init", "--name", "Lab C")
    c.out("import", str(stick))
    log = c.json("log", design)
    assert log["heads"] == [v1["version"]]
    assert next(v for v in log["versions"] if v["version"] == v2)["retracted"]["reason"] == reason_r
    assert [r["withdrawn"] for r in c.json("reputation", v2)["reasons"]] == [reason_w]
