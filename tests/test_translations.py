"""Translations as first-class versions (issue 19): publishing, the lineage, staleness, getting a
design in a language, hostile translation records, and the round trips through a USB stick and
between two daemons. The command line is run as an operator runs it."""

from __future__ import annotations

import os
import shutil

import pytest

from fabnode.protocol.dagcbor import Link, encode
from fabnode.protocol.records import RecordRejected, make_record, signing_bytes
from fabnode.protocol.translations import (BadLanguage, check_tag, files_changed, matches, normalize_tag,
                                           tag_from_env, translation_problem)

from conftest import Cli
from daemons import connect_line, has_record, make_labs, wait_until
from test_import_hostile import DID, _version, export_file, sign
from test_sneakernet import EXAMPLE, state

SWAHILI_README = "# Pampu ya mkono\n\nPampu ya maji ya mkono kwa visima vilivyochimbwa kwa mkono.\n"


# ------------------------------------------------------------------ the pure core


@pytest.mark.parametrize("typed, canonical", [
    ("sw", "sw"), ("SW", "sw"), ("pt_BR", "pt-BR"), ("zh-hant-tw", "zh-Hant-TW"), ("sr-latn-rs", "sr-Latn-RS"),
    ("de-CH-1996", "de-CH-1996"), ("es-419", "es-419"), ("x-Klingon", "x-klingon"), ("en-a-bbb-x-a-ccc", "en-a-bbb-x-a-ccc"),
    ("zh-yue", "zh-yue"), ("hi", "hi"),
])
def test_well_formed_tags_are_put_in_canonical_case(typed, canonical):
    assert normalize_tag(typed) == canonical
    assert check_tag(canonical) == canonical


@pytest.mark.parametrize("bad", ["", "english", "kiswahili", "e", "sw-", "-sw", "a1", "i-klingon", "sw--TZ", "de-1996-1996",
                                 "en-a-bb-a-cc", "sw TZ", "x" * 80, "sw-TZ-", "12"])
def test_malformed_tags_are_refused_in_one_line(bad):
    with pytest.raises(BadLanguage) as caught:
        normalize_tag(bad)
    assert "\n" not in str(caught.value)


def test_a_record_holds_one_spelling_of_a_tag():
    with pytest.raises(BadLanguage, match="canonical case"):
        check_tag("pt-br")


def test_lang_matching_and_the_environment():
    assert tag_from_env("sw_TZ.UTF-8") == "sw-TZ" and tag_from_env("C.UTF-8") is None
    assert tag_from_env("POSIX") is None and tag_from_env("") is None and tag_from_env("fr_FR@euro") == "fr-FR"
    assert matches("sw", "sw") == 2 and matches("sw-TZ", "sw") == 1 and matches("sw", "en") == 0
    assert matches("sw", None) == 0


def test_files_changed_counts_added_removed_and_changed():
    assert files_changed({"a": b"1", "b": b"2", "c": b"3"}, {"a": b"1", "b": b"9", "d": b"4"}) == 3
    assert files_changed({"a": b"1"}, {"a": b"1"}) == 0


def test_translation_problems_name_what_the_link_points_at():
    d, other = b"design", b"other"
    assert translation_problem(d, None, None, False) is None  # not here yet: waits
    assert translation_problem(d, "version", d, False) is None
    assert "attestation record, not a version" in translation_problem(d, "attestation", None, False)
    assert "another design" in translation_problem(d, "version", other, False)
    assert "names a translation" in translation_problem(d, "version", d, True)


def _translation(design, of, ts=1764081700000, **body):
    base = {"bundle": Link(design), "parents": [Link(of)], "title": "Pampu", "message": "tafsiri", "license": "MIT",
            "design": Link(design), "translation_of": Link(of), "language": "sw"}
    return make_record("version", base | body, author=DID, ts=ts, sign=sign)


def _forged(body: dict, ts=1764081800000):
    """A version record signed as it is, whatever its body (make_record would refuse it)."""
    from fabnode.protocol.cid import DAG_CBOR, make_cid

    sig = sign(signing_bytes("version", DID, ts, body))
    raw = encode({"fabnode": 1, "type": "version", "author": DID, "ts": ts, "body": body, "sig": sig})

    class Forged:
        pass

    f = Forged()
    f.raw, f.cid = raw, make_cid(DAG_CBOR, raw)
    return f


def test_records_refuse_translations_that_break_the_schema():
    v = _version()
    with pytest.raises(RecordRejected, match="needs body.language"):
        make_record(
            "version", {"bundle": Link(v.cid), "parents": [], "title": "t", "message": "m", "license": "MIT",
                        "design": Link(v.cid), "translation_of": Link(v.cid)}, author=DID, ts=1, sign=sign)
    with pytest.raises(RecordRejected, match="first version"):
        make_record("version", {"bundle": Link(v.cid), "parents": [], "title": "t", "message": "m", "license": "MIT",
                                "maintainers": [DID], "translation_of": Link(v.cid), "language": "sw"},
                    author=DID, ts=1, sign=sign)
    with pytest.raises(RecordRejected, match="not a well-formed language tag"):
        _translation(v.cid, v.cid, language="Kiswahili!")


# ------------------------------------------------------------------ hostile records from a file


@pytest.fixture(scope="module")
def hostile_home(tmp_path_factory):
    """A home holding a stranger's design D (with an attestation), another design, and a valid
    Swahili translation of D's first version, imported from a file."""
    root = tmp_path_factory.mktemp("translations-hostile")
    cli = Cli(root / "home")
    cli.run("init", "--name", "Careful Lab")
    v = _version()
    other = _version(title="other", ts=1764081600500)
    att = make_record("attestation", {"subject": Link(v.cid), "predicate": "built", "result": "passed"},
                      author=DID, ts=1764081650000, sign=sign)
    tr = _translation(v.cid, v.cid)
    good = root / "good.car"
    good.write_bytes(export_file([v, other, att, tr]))
    cli.out("import", str(good))
    return cli, v, other, att, tr


def _hostile_cases(v, other, att, tr):
    base = {"bundle": Link(v.cid), "parents": [], "title": "x", "message": "m", "license": "MIT", "design": Link(v.cid)}
    chained_ok = _translation(v.cid, v.cid, ts=1764081900000, language="fr")
    return [
        ("a bad language tag", [_forged(base | {"language": "Kiswahili!"})], "not a well-formed language tag"),
        ("a tag in another case", [_forged(base | {"language": "SW"})], "canonical case"),
        ("translation_of an attestation", [_translation(v.cid, att.cid)], "attestation record, not a version"),
        ("translation_of another design's version", [_translation(v.cid, other.cid)], "another design"),
        ("translation_of a translation", [_translation(v.cid, tr.cid, language="fr")], "names a translation"),
        ("a chain inside one file", [chained_ok, _translation(v.cid, chained_ok.cid, ts=1764081950000, language="de")],
         "names a translation"),
        ("a translation without its language", [_forged(base | {"translation_of": Link(v.cid)})], "needs body.language"),
        ("a translation as a first version",
         [_forged({"bundle": Link(v.cid), "parents": [], "title": "x", "message": "m", "license": "MIT",
                   "maintainers": [DID], "translation_of": Link(v.cid), "language": "sw"})],
         "cannot be a design's first version"),
    ]


def test_hostile_translations_are_refused_in_one_line_and_change_nothing(hostile_home, tmp_path):
    cli, v, other, att, tr = hostile_home
    for name, records, reason in _hostile_cases(v, other, att, tr):
        path = tmp_path / "hostile.car"
        path.write_bytes(export_file(records))
        before = state(cli)
        line = cli.fails("import", str(path))
        assert reason in line, (name, line)
        assert state(cli) == before, name
    log = cli.json("log", v.id)
    assert log["languages"] == ["sw"] and [t["version"] for t in log["translations"]] == [tr.id]
    assert log["heads"] == [v.id]  # the translation, by a maintainer, is no head


# ------------------------------------------------------------------ the command line, a USB stick


def _translated_copy(src, dst):
    shutil.copytree(src, dst)
    (dst / "README.md").write_text(SWAHILI_README, encoding="utf-8")
    toml = (dst / "okh.toml").read_text(encoding="utf-8")
    (dst / "okh.toml").write_text(toml.replace('name = "Direct-action PVC hand pump"', 'name = "Pampu ya mkono"'),
                                  encoding="utf-8")
    return dst


def test_translation_round_trip_staleness_and_languages_through_a_usb_stick(tmp_path):
    a, b = Cli(tmp_path / "lab-a"), Cli(tmp_path / "lab-b")
    a.run("init", "--name", "Lab A")
    b.run("init", "--name", "Lab B")
    design_dir = tmp_path / "pump"
    shutil.copytree(EXAMPLE, design_dir)
    first = a.json("publish", str(design_dir), "-m", "first design")
    design = first["design"]
    sw_dir = _translated_copy(design_dir, tmp_path / "pump-sw")
    tr = a.run("publish", str(sw_dir), "-m", "Swahili documentation", "--translation-of", first["version"],
               "--language", "SW", "--json")
    assert "okh.toml says documentation-language = 'en' but --language is 'sw'" in tr.stderr.decode()
    import json

    tr = json.loads(tr.stdout)
    assert tr["design"] == design
    a.out("attest", first["version"], "--result", "passed")

    # refused in one line: no language, a translation of a translation, of a record, a bad tag
    assert "needs --language" in a.fails("publish", str(sw_dir), "-m", "x", "--translation-of", first["version"])
    assert "is itself a translation" in a.fails("publish", str(sw_dir), "-m", "x", "--translation-of", tr["version"],
                                                "--language", "fr")
    assert "not a well-formed language tag" in a.fails("publish", str(sw_dir), "-m", "x", "--translation-of",
                                                       first["version"], "--language", "Kiswahili!")

    log = a.json("log", design)
    assert log["languages"] == ["en", "sw"] and log["heads"] == [first["version"]]
    by_id = {v["version"]: v for v in log["versions"]}
    assert by_id[tr["version"]]["translation_of"] == first["version"] and not by_id[tr["version"]]["head"]
    assert by_id[tr["version"]]["canonical"] is False and by_id[first["version"]]["head"]
    assert log["title"] == "Direct-action PVC hand pump" and log["translations"][0]["stale"] is None
    assert a.json("reputation", design)["version"] == first["version"]  # the attested head, not the translation
    assert a.json("designs")[0]["title"] == "Direct-action PVC hand pump"

    # titles and READMEs in the language asked for; English otherwise
    assert a.json("designs", "--language", "sw")[0]["title"] == "Pampu ya mkono"
    assert "design " + design + "  Pampu ya mkono" in a.out("log", design, "--language", "sw")
    assert a.out("cat", f"{design}/README.md", "--language", "sw") == SWAHILI_README.strip()
    assert a.out("cat", f"{design}/README.md").startswith("# ")
    assert SWAHILI_README.strip() != a.out("cat", f"{design}/README.md")
    env_sw = {**os.environ, "FABNODE_HOME": str(a.home), "LANG": "sw_TZ.UTF-8"}
    from conftest import FABNODE
    import subprocess

    by_lang = subprocess.run([str(FABNODE), "cat", f"{design}/README.md"], env=env_sw, capture_output=True, timeout=60)
    assert by_lang.stdout.decode().strip() == SWAHILI_README.strip()
    bom = subprocess.run([str(FABNODE), "cat", f"{design}/bom.csv"], env=env_sw, capture_output=True, timeout=60)
    assert bom.stdout == (EXAMPLE / "bom.csv").read_bytes()  # the same file in both: no note needed
    line = a.fails("get", design, "--language", "fr", "-o", str(tmp_path / "fr"))
    assert line == f"error: design {design} has no translation into fr: it exists in en, sw"
    a.out("get", design, "--language", "sw", "-o", str(tmp_path / "got-sw"))
    assert (tmp_path / "got-sw" / "README.md").read_text(encoding="utf-8") == SWAHILI_README

    # a new version: the translation is now stale, and says by how much
    (design_dir / "README.md").write_text("# Hand pump\n\nVersion two.\n", encoding="utf-8")
    (design_dir / "NOTES.md").write_text("new file\n", encoding="utf-8")
    second = a.json("publish", str(design_dir), "-m", "second", "--design", design, "--label", "2.0.0")
    log = a.json("log", design)
    assert log["heads"] == [second["version"]]
    assert {v["version"]: v for v in log["versions"]}[second["version"]]["parents"] == [first["version"]]
    stale = "translated from 1.0.0 — the design is now at 2.0.0, 2 file(s) changed since"
    assert log["translations"][0]["stale"] == stale
    assert stale in a.out("log", design)
    assert a.out("cat", f"{design}/README.md", "--language", "sw") == SWAHILI_README.strip()

    # through a USB stick: the same lineage, languages and staleness on the other side
    car = tmp_path / "stick.car"
    a.json("export", str(car))
    b.json("import", str(car))
    log_b = b.json("log", design)
    assert log_b["languages"] == ["en", "sw"] and log_b["heads"] == [second["version"]]
    assert log_b["translations"][0]["stale"] == stale
    assert b.out("cat", f"{design}/README.md", "--language", "sw") == SWAHILI_README.strip()
    assert b.json("designs", "--language", "sw")[0]["title"] == "Pampu ya mkono"

    # the design page: its languages, the translation beside the version it translates, stale
    page = _design_page(b, design)
    assert '<p id="languages">Languages: <span lang="en">en</span>, <span lang="sw">sw</span></p>' in page
    assert "translated from 1.0.0 — the design is now at 2.0.0, files changed since: 2" in page
    xs = _lineage_x(page)
    assert xs[tr["version"]] > xs[first["version"]] == xs[second["version"]]  # its own column, beside
    assert 'class="version translation stale"' in page and 'class="edge translation"' in page

    # a translation of 2.0.0 made from a folder whose okh.toml still says 1.0.0 is labelled 2.0.0
    newer = a.json("publish", str(sw_dir), "-m", "Swahili, again", "--translation-of", second["version"],
                   "--language", "sw")
    assert a.json("show", newer["version"])["body"]["label"] == "2.0.0"


def _design_page(cli: Cli, design: str) -> str:
    from fabnode.node.home import Home
    from fabnode.node.http.pages import Pages

    home = Home(cli.home)
    store = home.open_store()
    try:
        return Pages(home, store).design_page(design)
    finally:
        store.db.conn.close()


def _lineage_x(page: str) -> dict[str, float]:
    """version id -> x of its mark in the lineage drawing."""
    import re

    out = {}
    for vid, x in re.findall(r'data-version="([^"]+)"[^>]*>(?:<circle cx="|<rect x=")([0-9.]+)', page):
        out[vid] = float(x)
    return out


# ------------------------------------------------------------------ two daemons


def test_a_translation_published_on_one_node_is_got_in_its_language_on_another(tmp_path, daemons):
    a, b = make_labs(tmp_path, 2)
    first = a.json("publish", str(EXAMPLE), "-m", "first design")
    sw_dir = _translated_copy(EXAMPLE, tmp_path / "pump-sw")
    tr = a.json("publish", str(sw_dir), "-m", "Swahili", "--translation-of", first["version"], "--language", "sw")
    connect_line(daemons, [a, b])
    wait_until(lambda: has_record(b.home, tr["version"]) and has_record(b.home, first["version"]), timeout=60,
               what="the design and its translation at lab 1")
    assert b.json("log", first["design"])["languages"] == ["en", "sw"]
    b.out("get", first["design"], "--language", "sw", "-o", str(tmp_path / "got"), "--timeout", "60s")
    assert (tmp_path / "got" / "README.md").read_text(encoding="utf-8") == SWAHILI_README
    assert b.json("log", first["design"])["heads"] == [first["version"]]


def test_a_translation_that_arrives_before_its_target_waits_and_shows_only_if_the_target_fits(tmp_path):
    cli = Cli(tmp_path / "home")
    cli.run("init", "--name", "Patient Lab")
    v = _version()
    att = make_record("attestation", {"subject": Link(v.cid), "predicate": "built", "result": "passed"},
                      author=DID, ts=1764081650000, sign=sign)
    early = _translation(v.cid, v.cid)
    misdirected = _translation(v.cid, att.cid, ts=1764081750000, language="fr")
    for i, records in enumerate(([early, misdirected], [v, att])):
        path = tmp_path / f"part{i}.car"
        path.write_bytes(export_file(records))
        cli.out("import", str(path))  # neither target is here at first: both wait
    log = cli.json("log", v.id)
    assert [t["version"] for t in log["translations"]] == [early.id]  # the one aimed at a record is never shown
    assert log["languages"] == ["sw"] and log["heads"] == [v.id]
    assert "no translation into fr: it exists in sw" in cli.fails("get", v.id, "--language", "fr")
