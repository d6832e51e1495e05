"""Peers treat a chain of keys as one identity (issue 17): trust, reputation, maintainers and the
pages read every signature through protocol/key_views.py.

Pure tests of the mapping first (resolver + trust + score, no storage); then one two-daemon test:
trust given to A's old key carries to A's new key on B, and B's pages show the chain.
"""

from __future__ import annotations

import pytest

from fabnode.protocol.key_views import (CONFLICT, DOUBTFUL, REVOKED_LATER, signer_of, trust_through,
                                        vouches_through)
from fabnode.protocol.keys import resolve
from fabnode.protocol.lineage import VersionNode, canonical_and_heads
from fabnode.protocol.reputation import Attestation, Vouch, compute_trust, explain, score_version

from keychains import T0, Key, key_records, lab, member, revocation, succession

MIN = 60_000


@pytest.fixture(scope="module")
def k():
    names = ("me", "a", "a2", "a3", "rec", "lab", "alice", "bob", "evil", "evil_member", "x", "y")
    return {name: Key(seed) for seed, name in enumerate(names, start=101)}


def ids_of(*records, first_signed=None):
    return resolve(key_records(records), first_signed)


def vouch(author, subject, ts, received=None, trust="trusted"):
    return (Vouch(author.did, subject.did, trust, ts), received)


def attest(cid, author, ts, ids, received=None, learned=None, result="passed"):
    signer = signer_of(ids, author.did, ts, received, learned)
    return Attestation(cid, author.did, "built", result, "", ts, identity=signer.identity, mark=signer.mark,
                       mark_reason=signer.reason)


# ---------------------------------------------------------------- trust carries over


def test_trust_given_to_an_old_key_carries_over_a_rotation_and_a_recovery(k):
    me, a, a2, a3, rec = k["me"], k["a"], k["a2"], k["a3"], k["rec"]
    ids = ids_of(lab(a, T0, recovery=rec), succession(a, a2, T0 + 10 * MIN),
                 revocation(rec, a, a2, a3, cutoff=T0 + 20 * MIN, ts=T0 + 30 * MIN))
    trust, _ = trust_through(ids, me.did, (), [vouch(me, a, T0 + MIN)])
    # I vouched for a's first key; its second and its recovered third key are the same lab
    assert trust.get(a.did).weight == 0.5
    assert trust.get(a2.did) is trust.get(a.did) and trust.get(a3.did) is trust.get(a.did)
    # without the chain, the new keys would be strangers: the mapping is what makes them trusted
    assert a3.did not in compute_trust(me.did, (), [Vouch(me.did, a.did, "trusted", T0 + MIN)])
    # and the lab's new key vouching for x passes the lab's trust on (its word is the lab's)
    trust, _ = trust_through(ids, me.did, (), [vouch(me, a, T0 + MIN), vouch(a3, k["x"], T0 + 40 * MIN)])
    assert trust.get(k["x"].did).weight == 0.25 and trust.get(k["x"].did).path == (me.did, a.did, k["x"].did)
    # an attestation by the recovered key weighs what I trust the lab
    score = score_version([attest("c1", a3, T0 + 40 * MIN, ids)], trust)
    assert score.verdict == "recommended" and score.reasons[0].weight == 0.5
    line = explain(score, signed_as=lambda key, identity: "rotated")[0]
    assert "rotated into" in line and "trust 0.50" in line


def test_members_count_as_their_lab_while_the_delegation_stands_then_stop(k):
    me, lab_key, alice = k["me"], k["lab"], k["alice"]
    ids = ids_of(member(lab_key, lab_key, alice, "member", T0 + MIN),
                 member(lab_key, lab_key, alice, "removed", T0 + 10 * MIN))
    trust, _ = trust_through(ids, me.did, (), [vouch(me, lab_key, T0)])
    during = attest("during", alice, T0 + 5 * MIN, ids)
    after = attest("after", alice, T0 + 20 * MIN, ids, result="failed")
    assert during.identity == lab_key.did and after.identity == alice.did
    score = score_version([during, after], trust)
    by_cid = {r.cid: r for r in score.reasons}
    assert by_cid["during"].weight == 0.5 and by_cid["during"].status == "counted"
    # after her removal alice speaks only for herself, whom I do not trust: her defect counts nothing
    assert by_cid["after"].weight == 0.0 and by_cid["after"].status == "untrusted"
    assert score.verdict == "recommended"
    assert "signed by member" in explain(score, signed_as=lambda key, identity: "member")[0]
    # a member's vouch while delegated is the lab's vouch; after removal it passes nothing on
    trust, _ = trust_through(ids, me.did, (), [vouch(me, lab_key, T0), vouch(alice, k["x"], T0 + 5 * MIN),
                                               vouch(alice, k["y"], T0 + 20 * MIN)])
    assert trust.get(k["x"].did).path == (me.did, lab_key.did, k["x"].did)
    assert k["y"].did not in trust


def test_a_forked_chain_is_trusted_nowhere_and_the_explanation_says_why(k):
    me, a, a2, a3 = k["me"], k["a"], k["a2"], k["a3"]
    ids = ids_of(succession(a, a2, T0 + MIN), succession(a, a3, T0 + 2 * MIN))
    trust, _ = trust_through(ids, me.did, (a.did,), [vouch(me, a, T0), vouch(a, k["x"], T0 - MIN)])
    assert a.did not in trust and a2.did not in trust and a.did in trust.conflicts
    assert trust.conflict_of(a2.did) and k["x"].did not in trust   # and it passes nothing on
    att = attest("c", a, T0 - MIN, ids)
    assert att.mark == CONFLICT and att.identity is None
    score = score_version([att], trust)
    assert score.verdict == "unknown" and score.reasons[0].status == CONFLICT
    assert "trusted nowhere" in explain(score)[0] and "forked" in explain(score)[0]
    # nor can it take anything back, even what it signed itself ("no one" never equals "no one")
    from fabnode.node.local.commons import speaker, takeback_speaker
    from fabnode.protocol.retractions import retraction_counts, withdrawal_counts

    assert not retraction_counts(takeback_speaker(ids, a.did, T0 + 3 * MIN), speaker(ids, a.did, T0 - MIN), None)
    assert not withdrawal_counts(takeback_speaker(ids, a.did, T0 + 3 * MIN), speaker(ids, a.did, T0 - MIN))


def test_doubtful_records_count_nothing_revoked_later_ones_keep_their_weight(k):
    me, a, a2, rec = k["me"], k["a"], k["a2"], k["rec"]
    revoke = revocation(rec, a, a, a2, cutoff=T0 + 10 * MIN, ts=T0 + 30 * MIN)
    ids = ids_of(lab(a, T0, recovery=rec), revoke)
    learned = {revoke.cid: T0 + 31 * MIN}
    trust, _ = trust_through(ids, me.did, (), [vouch(me, a2, T0 + 40 * MIN)], learned)
    before = attest("before", a, T0 + 5 * MIN, ids, received=T0 + 6 * MIN, learned=learned)
    late = attest("late", a, T0 + 5 * MIN + 1, ids, received=T0 + 50 * MIN, learned=learned, result="failed")
    assert before.mark == REVOKED_LATER and late.mark == DOUBTFUL
    score = score_version([before, late], trust)
    by_cid = {r.cid: r for r in score.reasons}
    assert by_cid["before"].weight == 0.5 and by_cid["late"].weight == 0.0 and by_cid["late"].status == DOUBTFUL
    assert score.verdict == "recommended"   # the doubtful defect, newer, neither counts nor supersedes
    lines = explain(score)
    assert any("signed by a key later revoked" in line for line in lines)
    assert any("doubtful: signed by a revoked key, dated before its cut-off but received after the revocation" in line
               for line in lines)
    # a doubtful vouch passes no trust: the thief backdating a vouch for a friend gains nothing
    mapped = vouches_through(ids, [vouch(a, k["evil"], T0 + 5 * MIN, received=T0 + 50 * MIN)], learned)
    assert mapped == []


# ---------------------------------------------------------------- Sybil bounds still hold


def test_a_chain_of_a_thousand_rotations_gains_no_more_trust_than_one_key(k):
    me, t = k["me"], k["x"]
    chain = [Key(10_000 + i) for i in range(1_001)]
    records = [succession(chain[i], chain[i + 1], T0 + i) for i in range(1_000)]
    ids = ids_of(*records)
    vouches = [vouch(me, t, T0), vouch(t, chain[0], T0)]
    # every key of the chain vouches for each other key's successor and for a friend
    vouches += [vouch(chain[i], k["evil_member"], T0 + i) for i in range(1_000)]
    vouches += [vouch(t, chain[i], T0 + i) for i in range(1_000)]   # T naming every key: still one identity
    trust, _ = trust_through(ids, me.did, (), vouches)
    one_key, _ = trust_through(ids_of(), me.did, (), [vouch(me, t, T0), vouch(t, chain[0], T0),
                                                     vouch(chain[0], k["evil_member"], T0)])
    assert trust.get(chain[1_000].did).weight == one_key.get(chain[0].did).weight == 0.25
    assert trust.get(k["evil_member"].did).weight == one_key.get(k["evil_member"].did).weight == 0.125
    total = sum(p.weight for ident, p in dict.items(trust) if ident not in (me.did, t.did))
    assert total <= trust.get(t.did).weight   # the cluster bound of protocol/reputation.py


def test_members_of_an_untrusted_lab_get_nothing_and_no_one_can_join_a_lab_uninvited(k):
    me, lab_key, evil, em = k["me"], k["lab"], k["evil"], k["evil_member"]
    # evil's own lab delegates to em; em also claims (signing itself, and via evil) to be in my trusted lab
    ids = ids_of(member(evil, evil, em, "maintainer", T0), member(evil, lab_key, em, "maintainer", T0),
                 member(em, lab_key, em, "maintainer", T0))
    assert ids.speaks_for(em.did, T0 + MIN) == evil.did
    trust, _ = trust_through(ids, me.did, (), [vouch(me, lab_key, T0), vouch(em, k["x"], T0 + MIN)])
    score = score_version([attest("c", em, T0 + MIN, ids)], trust)
    assert score.reasons[0].weight == 0.0 and score.verdict == "unknown"
    assert k["x"].did not in trust and evil.did not in trust


# ---------------------------------------------------------------- maintainers through identities


def test_a_maintainers_new_key_and_its_member_sign_canonical_versions_a_removed_one_no_longer(k):
    a, a2, bob = k["a"], k["a2"], k["bob"]
    ids = ids_of(succession(a, a2, T0 + 10 * MIN), member(a2, a, bob, "member", T0 + 20 * MIN),
                 member(a2, a, bob, "removed", T0 + 40 * MIN))
    speak = lambda key, ts: ids.speaks_for(key.did, ts) or ""  # noqa: E731
    v1 = VersionNode(b"v1", speak(a, T0), T0, ())
    v2 = VersionNode(b"v2", speak(a2, T0 + 15 * MIN), T0 + 15 * MIN, (b"v1",))
    v3 = VersionNode(b"v3", speak(bob, T0 + 30 * MIN), T0 + 30 * MIN, (b"v2",))
    v4 = VersionNode(b"v4", speak(bob, T0 + 50 * MIN), T0 + 50 * MIN, (b"v3",))
    canonical, heads = canonical_and_heads([v1, v2, v3, v4], [ids.identity_of(a.did)])
    assert canonical == {b"v1", b"v2", b"v3"} and heads == [b"v3"]   # v4: bob was removed by then



def test_in_a_real_store_names_heads_retractions_and_marks_follow_the_identity(tmp_path, k):
    """One SQLite store (in-process): the lab's name, its maintainership and its right to retract
    carry over its rotation; a removed member's later version is a proposal; a doubtful attestation
    (old-dated, arriving after the revocation) is listed with its mark and counts nothing."""
    from fabnode.node.local.commons import history, score
    from fabnode.node.local.names import Names
    from fabnode.protocol.cid import DAG_PB, cid_str, make_cid
    from fabnode.protocol.dagcbor import Link
    from fabnode.protocol.records import make_record
    from fabnode.storage import BlockStore, open_db
    from fabnode.storage.records import RecordStore

    me, a, a2, a3, rec, bob, x = k["me"], k["a"], k["a2"], k["a3"], k["rec"], k["bob"], k["x"]

    def record(rtype, body, key, ts):
        return make_record(rtype, body, author=key.did, ts=ts, sign=key.sign)

    def version(n, key, ts, parent=None, first=None):
        body = {"bundle": Link(make_cid(DAG_PB, f"files {n}".encode())), "title": "Pump", "message": f"v{n}",
                "license": "MIT", "parents": [Link(parent.cid)] if parent else []}
        if first is None:
            body["maintainers"] = [a.did]
        else:
            body["design"] = Link(first.cid)
        return record("version", body, key, ts)

    v1 = version(1, a, T0)
    v2 = version(2, a2, T0 + 20 * MIN, v1, v1)           # by the lab's new key
    v3 = version(3, bob, T0 + 40 * MIN, v2, v1)          # by a member, while delegated
    v4 = version(4, bob, T0 + 70 * MIN, v3, v1)          # by the same person after removal
    v5 = version(5, a2, T0 + 85 * MIN, v3, v1)           # by the revoked key, backdated, arriving late: doubtful
    revoke = revocation(rec, a, a2, a3, cutoff=T0 + 90 * MIN, ts=T0 + 100 * MIN)
    ordered = [lab(a, T0 - MIN, recovery=rec, name="Pump Lab"), v1, succession(a, a2, T0 + 10 * MIN),
               member(a2, a, bob, "member", T0 + 30 * MIN), v2, v3,
               member(a2, a, bob, "removed", T0 + 60 * MIN), v4,
               record("vouch", {"subject": a.did, "trust": "trusted"}, me, T0),
               record("attestation", {"subject": Link(v3.cid), "predicate": "built", "result": "passed"},
                      x, T0 + 45 * MIN),
               record("vouch", {"subject": x.did, "trust": "trusted"}, me, T0),
               revoke,
               record("attestation", {"subject": Link(v3.cid), "predicate": "defect", "result": "failed"},
                      a2, T0 + 80 * MIN),          # old-dated, received after the revocation: doubtful
               v5,
               record("retraction", {"subject": Link(v2.cid), "reason": "bad seal"}, a3, T0 + 110 * MIN)]
    blocks = BlockStore(open_db(tmp_path / "store.db"))
    records = RecordStore(blocks.db.conn)
    for received, r in enumerate(ordered):
        with blocks.write_transaction():
            records.ingest(r, received_ms=T0 + 200 * MIN + received)
    names = Names(records, me.did)
    assert names.label(a3.did) == names.label(a.did) and "Pump Lab" in names.label(a3.did)
    log = history(records, me.did, cid_str(v1.cid))
    rows = {v["version"]: v for v in log["versions"]}
    assert rows[cid_str(v2.cid)]["canonical"] and rows[cid_str(v3.cid)]["canonical"]
    assert rows[cid_str(v4.cid)]["canonical"] is False                     # bob had been removed
    assert rows[cid_str(v5.cid)]["canonical"] is False and rows[cid_str(v5.cid)]["mark"] == DOUBTFUL
    assert rows[cid_str(v2.cid)]["retracted"]["reason"] == "bad seal"       # by the recovered key: it counts
    assert log["heads"] == [cid_str(v3.cid)]
    assert rows[cid_str(v3.cid)]["signed_as"] == "member" and rows[cid_str(v2.cid)]["signed_as"] == "rotated"
    rep = score(records, me.did, cid_str(v3.cid))
    by_mark = {r.get("mark"): r for r in rep["reasons"]}
    assert by_mark["doubtful"]["weight"] == 0.0 and by_mark["doubtful"]["status"] == DOUBTFUL
    assert rep["verdict"] == "recommended"   # x's pass; the doubtful defect is only shown
    assert any("doubtful: signed by a revoked key" in line for line in rep["explanation"])
    blocks.db.close()


# ---------------------------------------------------------------- the story: two daemons, the web page


def test_trust_given_to_a_labs_old_key_carries_to_its_new_key_on_another_daemon(tmp_path, daemons):
    import json
    import urllib.request

    from fabnode.node.home import Home
    from fabnode.node.local.keys import rotate_key

    from daemons import connect_line, has_record, make_labs, wait_until
    from test_sneakernet import EXAMPLE

    a, b = make_labs(tmp_path, 2)
    old_key = Home(a.home).identity().did
    v1 = a.json("publish", str(EXAMPLE), "-m", "first design")
    design = v1["design"]
    b.out("vouch", old_key)   # B trusts A's first key
    connect_line(daemons, [a, b])
    rotated = rotate_key(Home(a.home))   # (the `key rotate` command is branch keycli's)
    new_key = rotated["new"]
    assert rotated["old"] == old_key and new_key != old_key
    v2 = a.json("publish", str(EXAMPLE), "-m", "same files, the new key", "--design", design,
                "--same-files", "signed again by the new key")["version"]
    att = a.out("attest", v2, "--result", "passed", "-m", "built it")
    wait_until(lambda: all(has_record(b.home, cid) for cid in (rotated["succession"], v2, att)),
               timeout=60, what="the succession, v2 and its attestation at lab B")
    trust = b.json("trust")
    lab_a = next(t for t in trust["trusted"] if t["did"] == old_key)
    assert lab_a["weight"] == 0.5 and lab_a["current_key"] == new_key and lab_a["keys"] == [old_key, new_key]
    assert f"now signing with key {new_key}" in b.out("trust")
    rep = b.json("reputation", design)   # v2, by the new key, is the design's head: maintainership carried over
    assert rep["version"] == v2 and rep["verdict"] == "recommended"
    [reason] = rep["reasons"]
    assert (reason["author"], reason["signed_for"], reason["signed_as"], reason["weight"]) == (
        new_key, old_key, "rotated", 0.5)
    assert "rotated into Lab 0" in b.out("reputation", v2)
    log = b.json("log", design)
    row = next(v for v in log["versions"] if v["version"] == v2)
    assert row["head"] and row["author_trusted"] and row["signed_as"] == "rotated"
    line = next(line for line in b.out("log", design).splitlines() if line.startswith(v2))
    shown = "Lab 0 (unverified)"   # the name A's lab record declares
    assert line.endswith(f"by {shown} (signed by key {new_key[:12]}…{new_key[-4:]}, rotated into {shown})")
    base = "http://" + json.loads((b.home / "daemon.json").read_text())["http"]
    with urllib.request.urlopen(f"{base}/design/{design}", timeout=10) as response:
        page = response.read().decode()
    assert 'class="signer rotated"' in page and "rotated into" in page and page.count('class="signer') == 1
    with urllib.request.urlopen(f"{base}/version/{v2}", timeout=10) as response:
        version_page = response.read().decode()
    assert version_page.count('class="signer rotated"') == 2   # the author and the attestation

    # a third lab X's key is stolen: two USB sticks reach B, the second after X's recovery key
    # revoked it; what came before is "signed by a key later revoked", the backdated rest doubtful
    import time

    from fabnode.protocol.cid import DAG_PB, make_cid, parse_cid
    from fabnode.protocol.dagcbor import Link
    from fabnode.protocol.records import make_record

    from test_import_hostile import export_file

    x, recovery, fresh = Key(701), Key(702), Key(703)
    t = int(time.time() * 1000) - 60 * MIN
    att_before = make_record("attestation", {"subject": Link(parse_cid(v2)), "predicate": "built", "result": "passed"},
                             author=x.did, ts=t, sign=x.sign)
    v3 = make_record("version", {"bundle": Link(make_cid(DAG_PB, b"x files")), "parents": [Link(parse_cid(v2))],
                                 "design": Link(parse_cid(design)), "title": "Pump", "message": "X's proposal",
                                 "license": "MIT"}, author=x.did, ts=t + MIN, sign=x.sign)
    att_late = make_record("attestation", {"subject": Link(parse_cid(v2)), "predicate": "defect", "result": "failed"},
                           author=x.did, ts=t + 2 * MIN, sign=x.sign)
    first, second = tmp_path / "first.car", tmp_path / "second.car"
    first.write_bytes(export_file([lab(x, t - MIN, recovery=recovery, name="Lab X"), att_before, v3]))
    second.write_bytes(export_file([revocation(recovery, x, x, fresh, cutoff=t + 5 * MIN, ts=t + 6 * MIN), att_late]))
    b.out("import", str(first))
    b.out("import", str(second))
    marks = {r["attestation"]: (r.get("mark"), r["status"]) for r in b.json("reputation", v2)["reasons"]}
    assert marks[att_before.id] == ("revoked-later", "untrusted") and marks[att_late.id] == ("doubtful", "doubtful")
    with urllib.request.urlopen(f"{base}/design/{design}", timeout=10) as response:
        page = response.read().decode()
    assert 'class="badge mark revoked-later">signed by a key later revoked<' in page
    with urllib.request.urlopen(f"{base}/version/{v2}", timeout=10) as response:
        version_page = response.read().decode()
    assert 'class="badge mark doubtful">doubtful: signed by a revoked key, dated before its cut-off but received' \
        in version_page and 'class="badge mark revoked-later"' in version_page
    assert "[doubtful: signed by a revoked key" in b.out("show", att_late.id)
