"""Say who says it (issue 12): a lab name in a record is a claim, not an identity.

Thirty Sybil keys attest a version as built and passed, all claiming to be "Fab Lab Nairobi"; the real
Nairobi (a key this node vouched for) and this node itself attest it too, and a Sybil signs a version
of our design. Every page served by a real daemon on 127.0.0.1, and ``fabnode log`` and ``show``,
must count the trusted and the untrusted claims apart, never show the claimed name without the key
that claims it, and mark what keys this node does not trust have signed.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request

import pytest

from conftest import ROOT, Cli
from daemons import Daemon, signing_key

EXAMPLE = ROOT / "examples" / "hand-pump"
CLAIMED = "Fab Lab Nairobi"
SYBILS = 30


def _ingest(cli: Cli, records) -> None:
    from fabnode.node.home import Home
    from fabnode.storage import open_db
    from fabnode.storage.records import RecordStore

    db = open_db(Home(cli.home).db_path)
    db.conn.execute("BEGIN IMMEDIATE")
    store = RecordStore(db.conn)
    for record in records:
        store.ingest(record, received_ms=0)
    db.conn.execute("COMMIT")
    db.close()


def _attestation(seed: int, subject: str, ts: int, lab: str = CLAIMED):
    from fabnode.protocol.cid import parse_cid
    from fabnode.protocol.dagcbor import Link
    from fabnode.protocol.records import make_record

    key, did = signing_key(seed)
    return make_record("attestation", {"subject": Link(parse_cid(subject)), "predicate": "built", "result": "passed",
                                       "lab": lab}, author=did, ts=ts, sign=key.sign)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from fabnode.protocol.cid import cid_str, parse_cid
    from fabnode.protocol.dagcbor import Link
    from fabnode.protocol.records import make_record

    tmp = tmp_path_factory.mktemp("claims")
    me = Cli(tmp / "kampala")
    me.run("init", "--name", "Fab Lab Kampala")
    first = me.json("publish", str(EXAMPLE), "-m", "first pump")
    me.run("attest", first["version"], "--result", "passed", "-m", "pumps 20 l/min")
    _, nairobi = signing_key(40)
    me.run("vouch", nairobi, "-m", "we built their jig together")
    sybils = [signing_key(100 + i)[1] for i in range(SYBILS)]
    now = int(time.time() * 1000)
    sybil_key, sybil_author = signing_key(99)
    sybil_version = make_record(
        "version", {"bundle": Link(parse_cid(first["bundle"])), "parents": [Link(parse_cid(first["version"]))],
                    "design": Link(parse_cid(first["design"])), "title": "Direct-action PVC hand pump",
                    "label": "6.6.6", "message": "certified, trust us", "license": "CERN-OHL-S-2.0"},
        author=sybil_author, ts=now + 1, sign=sybil_key.sign)
    records = [_attestation(40, first["version"], now - 1000), sybil_version]
    # the Sybils speak last, so that a page showing "the latest N" would show only them
    records += [_attestation(100 + i, first["version"], now + 10 + i) for i in range(SYBILS)]
    records += [_attestation(100 + i, cid_str(sybil_version.cid), now + 100 + i) for i in range(SYBILS)]
    _ingest(me, records)
    daemon = Daemon(me)
    base = "http://" + json.loads((me.home / "daemon.json").read_text())["http"]
    yield {"cli": me, "first": first, "base": base, "nairobi": nairobi, "sybils": sybils,
           "sybil_version": cid_str(sybil_version.cid), "sybil_author": sybil_author,
           "me": me.json("id")["did"], "records": records}
    daemon.stop()


def page(world, path: str) -> str:
    with urllib.request.urlopen(world["base"] + path, timeout=10) as r:
        assert r.status == 200
        assert "default-src 'none'" in r.headers["content-security-policy"]
        body = r.read().decode()
    assert "<script" not in body.lower()
    return body


def text_of(html: str) -> str:
    """What a reader sees: tags dropped, entities of interest undone, spaces squeezed."""
    text = re.sub(r"<[^>]+>", " ", html).replace("&amp;", "&").replace("&#39;", "'").replace("&quot;", '"')
    return re.sub(r"\s+", " ", text)


def named_with_keys(world, text: str) -> list[tuple[str, str]]:
    """Every place the claimed lab name is shown, as (short key, trust word); fails on a bare name."""
    from fabnode.protocol.reputation import short_did

    known = {short_did(d): d for d in [world["nairobi"], *world["sybils"]]}
    found = []
    for match in re.finditer(re.escape(CLAIMED), text):
        after = re.match(r" \((did:key:\S+?), (trusted|not trusted)\)", text[match.end():])
        assert after, f"{CLAIMED!r} shown without its key: …{text[max(0, match.start() - 60):match.end() + 60]}…"
        assert after.group(1) in known, after.group(1)
        found.append((after.group(1), after.group(2)))
    return found


def _row(html: str, table_id: str, needle: str) -> str:
    table = re.search(rf'<table id="{table_id}">(.*?)</table>', html, re.S)
    assert table, table_id
    rows = [r for r in re.split(r"<tr>", table.group(1)) if needle in r]
    assert len(rows) == 1, (needle, rows)
    return rows[0]


def test_home_page_counts_trusted_and_unknown_claims_apart(world):
    from fabnode.protocol.reputation import short_did

    html = page(world, "/")
    text = text_of(html)
    shown = named_with_keys(world, text)
    # the real Nairobi's attestation is listed even though thirty Sybil ones are newer
    assert (short_did(world["nairobi"]), "trusted") in shown
    assert all(word == "not trusted" for key, word in shown if key != short_did(world["nairobi"]))
    assert f'title="{world["nairobi"]}"' in html  # the full key is there for whoever hovers
    # the first version: two trusted claims (this lab, Nairobi) and thirty unknown ones, apart
    first = text_of(_row(html, "latest-versions", f'/version/{world["first"]["version"]}"'))
    assert "×2 by trusted labs" in first and "30 by unknown keys" in first and "×32" not in first
    # the Sybil's version is marked as signed by a key this node does not trust; ours is not
    sybil = text_of(_row(html, "latest-versions", f'/version/{world["sybil_version"]}"'))
    assert "not trusted" in sybil and short_did(world["sybil_author"]) in sybil
    assert "not trusted" not in first
    # unknown keys' attestations are summed up, not listed one name per row
    unknown = text_of(_row(html, "unknown-attestations", f'/version/{world["first"]["version"]}"'))
    assert re.search(r"built · passed .* 30 by unknown keys [A-Z][a-z]{2} \d{1,2}, \d{4}, \d\d:\d\d $", unknown), unknown  # and no stray text
    assert html.count(f'title="{world["sybils"][0]}"') <= 1 and "×30" not in text.split("Latest versions")[0]


def test_design_page_lineage_ticks_only_trusted_passes(world):
    html = page(world, f"/design/{world['first']['design']}")
    svg = re.search(r"<svg .*?</svg>", html, re.S).group(0)
    node = re.search(rf'data-version="{world["first"]["version"]}".*?</g>', svg, re.S).group(0)
    assert re.search(r'data-claim="built/passed"[^>]*>✓ built · passed ×2 by trusted labs<', node), node
    assert re.search(r'class="badge-untrusted"[^>]*>30 by unknown keys \(not counted\)<', node), node
    sybil_node = re.search(rf'data-version="{world["sybil_version"]}".*?</g>', svg, re.S).group(0)
    assert "✓" not in sybil_node and "data-claim=" not in sybil_node  # thirty Sybil passes earn no tick
    assert "30 by unknown keys" in sybil_node
    assert "×32" not in svg and "×30" not in svg
    # what records say (not the bundle's own okh.toml and README, which name their licensor)
    said = re.sub(r'<table id="manifest">.*?</table>|<div class="readme".*?</div>', "", html, flags=re.S)
    named_with_keys(world, text_of(said))  # fails on any bare claimed name
    row = text_of(_row(html, "versions", f'/version/{world["first"]["version"]}"'))
    assert "×2 by trusted labs" in row and "30 by unknown keys" in row
    sybil_row = text_of(_row(html, "versions", f'/version/{world["sybil_version"]}"'))
    assert "not trusted" in sybil_row and "by trusted labs" not in sybil_row


def test_version_page_names_every_claimed_lab_with_its_key(world):
    from fabnode.protocol.reputation import short_did

    html = page(world, f"/version/{world['first']['version']}")
    text = text_of(html)
    shown = named_with_keys(world, text.split("Reputation")[0])
    assert sorted(shown) == sorted([(short_did(world["nairobi"]), "trusted")]
                                   + [(short_did(d), "not trusted") for d in world["sybils"]])
    for did in [world["nairobi"], *world["sybils"]]:
        assert f'title="{did}"' in html
    summary = text_of(re.search(r'<p id="claims">.*?</p>', html, re.S).group(0))
    assert "×2 by trusted labs" in summary and "30 by unknown keys" in summary
    # the Sybil's own version: its author is marked
    html = page(world, f"/version/{world['sybil_version']}")
    author = text_of(re.search(r"<tr><th>Author</th>.*?</tr>", html, re.S).group(0))
    assert world["sybil_author"] in author and "not trusted" in author
    assert "×0 by trusted labs" not in html and "30 by unknown keys" in text_of(html)


def test_cli_log_counts_trusted_and_untrusted_apart(world):
    from fabnode.protocol.reputation import short_did

    me = world["cli"]
    history = me.json("log", world["first"]["design"])
    by_id = {v["version"]: v for v in history["versions"]}
    first, sybil = by_id[world["first"]["version"]], by_id[world["sybil_version"]]
    assert first["attestations_by_trust"] == {"trusted": {"built/passed": 2}, "untrusted": {"built/passed": 30}}
    assert sybil["attestations_by_trust"] == {"trusted": {}, "untrusted": {"built/passed": 30}}
    assert first["author_trusted"] is True and sybil["author_trusted"] is False
    latest = {v["version"]: v for v in me.json("log")["versions"]}
    assert latest[world["sybil_version"]]["author_trusted"] is False
    assert latest[world["first"]["version"]]["attestations_by_trust"]["untrusted"] == {"built/passed": 30}
    lines = me.out("log", world["first"]["design"]).splitlines()
    first_line = next(line for line in lines if line.startswith(world["first"]["version"]))
    sybil_line = next(line for line in lines if line.startswith(world["sybil_version"]))
    assert "built/passed x2 by trusted keys" in first_line and "x30 by untrusted keys" in first_line
    assert "x32" not in first_line and "not trusted" not in first_line
    assert "x30 by untrusted keys" in sybil_line and "by trusted keys" not in sybil_line
    assert f"by {short_did(world['sybil_author'])} (not trusted)" in sybil_line
    plain_latest = me.out("log")
    assert f"{short_did(world['sybil_author'])} (not trusted)" in plain_latest and "x32" not in plain_latest


def test_cli_show_says_whether_the_author_is_trusted(world):
    from fabnode.protocol.cid import cid_str
    from fabnode.protocol.reputation import short_did

    me = world["cli"]
    trusted_cid = cid_str(world["records"][0].cid)
    sybil_cid = cid_str(world["records"][2].cid)
    sybil_did = world["records"][2].author
    assert me.json("show", trusted_cid)["trusted"] is True
    shown = me.json("show", sybil_cid)
    assert shown["trusted"] is False and shown["author"] == sybil_did and shown["body"]["lab"] == CLAIMED
    assert me.json("show", world["first"]["version"])["trusted"] is True  # our own key
    assert me.json("show", world["sybil_version"])["trusted"] is False
    plain = me.out("show", sybil_cid)
    assert f"author  {sybil_did} (not trusted by this node)" in plain
    lab_line = next(line for line in plain.splitlines() if CLAIMED in line)
    assert f"{CLAIMED}" in lab_line and f"({short_did(sybil_did)}, not trusted)" in lab_line
    plain = me.out("show", trusted_cid)
    assert f"({short_did(world['nairobi'])}, trusted)" in plain and "not trusted" not in plain
