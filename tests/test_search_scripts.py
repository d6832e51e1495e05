"""Search across languages and scripts (issue 19): the real `fabnode search` over a real home
whose designs have versions (translations) in Swahili, Hindi, Chinese and Portuguese; hostile
queries; a home indexed before the migration; and the pure folding and query planning."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabnode.storage import search

from conftest import Cli

LICENCE = "CERN-OHL-S-2.0"


def _design(folder: Path, name: str, function: str, keywords: list[str], readme: str) -> Path:
    folder.mkdir(parents=True)
    quoted = ", ".join(f'"{k}"' for k in keywords)
    (folder / "okh.toml").write_text(f'okhv = "OKH-LOSHv1.0"\nname = "{name}"\nlicense = "{LICENCE}"\n'
                                     'repo = "https://example.org/design"\nversion = "1.0"\nlicensor = "A lab"\n'
                                     f'function = "{function}"\nkeywords = [{quoted}]\nreadme = "README.md"\n',
                                     encoding="utf-8")
    (folder / "README.md").write_text(readme, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> dict:
    """One lab's home: a hand pump in English with Swahili, Hindi and Chinese versions of the same
    design (as translations are), an irrigation pump in Portuguese, and an unrelated grain mill."""
    tmp = tmp_path_factory.mktemp("search")
    lab = Cli(tmp / "home")
    lab.run("init", "--name", "Lab")
    pump = lab.json("publish", str(_design(tmp / "en", "Hand water pump", "Lifts water from a well",
                                           ["pump", "well"], "# Hand pump\n")), "-m", "first version")["design"]
    for lang, title, function, keywords, message in [
        ("sw", "Pampu ya maji ya mkono", "Huinua maji kutoka kisimani", ["pampu", "kisima"], "tafsiri ya Kiswahili"),
        ("hi", "हाथ से चलने वाला पानी का पंप", "कुएँ से पानी निकालता है", ["पंप", "कुआँ"], "हिंदी अनुवाद"),
        ("zh", "手动水泵", "用于从井中抽水的手动水泵装置", ["水泵", "水井"], "中文翻译"),
    ]:
        lab.json("publish", str(_design(tmp / lang, title, function, keywords, f"# {title}\n")),
                 "--design", pump, "--title", title, "-m", message)
    irrigation = lab.json("publish", str(_design(
        tmp / "pt", "Bomba de água para irrigação", "Bombeia água para a irrigação de hortas", ["bomba", "irrigação"],
        "# Bomba\n")), "-m", "primeira versão")["design"]
    mill = lab.json("publish", str(_design(tmp / "mill", "Grain mill", "Grinds maize into flour", ["mill"],
                                           "# Mill\n")), "-m", "pumps nothing")["design"]
    return {"lab": lab, "pump": pump, "irrigation": irrigation, "mill": mill}


def _found(home: dict, text: str) -> list[str]:
    result = home["lab"].run("search", "--json", "--", text)  # "--": "-pump" is text, not an option
    return [d["design"] for d in json.loads(result.stdout)]


@pytest.mark.parametrize("text", [
    "pampu ya maji",  # Swahili, words of a translation's title
    "kisima",  # Swahili, a translation's manifest keyword
    "पानी",  # Hindi (Devanagari), a word
    "पंप",  # Hindi, a manifest keyword
    "水泵",  # Chinese, two characters inside a longer title without spaces
    "抽水",  # Chinese, two characters inside a manifest's function
    "从井中抽水",  # Chinese, five characters: the trigram index
    "HAND Water PUMP",  # the English original, case aside
])
def test_a_design_is_found_by_words_of_any_of_its_translations(home, text):
    assert _found(home, text) == [home["pump"]]


@pytest.mark.parametrize("text", ["irrigacao", "IRRIGAÇÃO", "agua para irrigacao", "Ａｇｕａ"])
def test_accents_case_and_width_do_not_matter(home, text):
    assert _found(home, text) == [home["irrigation"]]


def test_word_matches_come_before_substring_matches(home):
    # "pump" is a word of the hand pump's title; the mill only has it inside "pumps"
    assert _found(home, "pump") == [home["pump"], home["mill"]]
    assert _found(home, "umps") == [home["mill"]]  # a part of a word, found by the trigram index


def test_text_output_lists_the_design_and_no_hit_says_so(home):
    lab = home["lab"]
    assert "Bomba de água para irrigação" in lab.out("search", "irrigacao")
    assert lab.out("search", "nyumba") == ("no design known here matches 'nyumba' (try other words; "
                                           "'fabnode designs' lists them all)")


@pytest.mark.parametrize("text", [
    '"', '""', 'pump"', '"pump', "NEAR(pump well)", "pump NEAR well", "pump*", "*", "^pump", "-pump", "(pump",
    "pump)", "title:pump", "AND OR NOT", "pump AND", "'); DROP TABLE designs; --", "\\", "%", "_", "🚰", "👩🏽‍🔧 pump",
    "e\u0301", "\u0301\u0301\u0301", "\u0915\u094d", "\u200d", "水", "﻿",
])
def test_hostile_queries_never_fail(home, text):
    result = home["lab"].run("search", "--json", "--", text, check=False)  # "--": "-pump" is not an option
    assert result.returncode == 0 and result.stderr == b"", (text, result.stderr)


def test_syntax_characters_are_text_and_punctuation_alone_finds_nothing(home):
    for text in ("pump*", "(pump", '"pump', "-pump", "pump)"):  # the word "pump", then "pump" inside a word
        assert _found(home, text) == [home["pump"], home["mill"]], text
    for text in ('"', "*", "-", "(", ")"):
        assert _found(home, text) == []
    assert _found(home, "") == [] and _found(home, "   ") == []


def test_a_long_query_is_refused_in_one_line(home):
    line = home["lab"].fails("search", "pump " * 2048)  # 10 KB
    assert line == "error: the search is longer than 200 characters (10240): a few words find more"


def test_bytes_that_are_not_utf8_are_refused_in_one_line(home):
    line = home["lab"].fails("search", b"pu\xffmp")
    assert line == "error: the search is not valid UTF-8: check the terminal's encoding (LANG)"


def test_a_home_indexed_before_the_migration_is_reindexed(home, tmp_path):
    """A home from before 010_search_scripts (words as typed, no trigram table) finds Chinese and
    unaccented words once it is opened."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(home["lab"].home, old)
    conn = sqlite3.connect(old / "fabnode.db", isolation_level=None)
    conn.executescript("""
        DROP TABLE design_trigram; DROP TABLE version_manifests; DROP TABLE search_rows;
        DELETE FROM _sqlite_migrations WHERE name = '010_search_scripts';
        DELETE FROM design_search;
        INSERT INTO design_search (design, title, manifest, messages)
            SELECT design, title, manifest, '' FROM designs;
        PRAGMA user_version = 8;
    """)
    conn.close()
    lab = Cli(old)
    assert [d["design"] for d in lab.json("search", "水泵")] == [home["pump"]]
    assert [d["design"] for d in lab.json("search", "pampu ya maji")] == [home["pump"]]  # a translation's title


def test_the_search_page_finds_the_same(home):
    """The web UI's search (the daemon's own page code, over the same home) crosses scripts too."""
    from fabnode.node.home import Home
    from fabnode.node.http.pages import Pages

    h = Home(home["lab"].home)
    pages = Pages(h, h.open_store())
    for text in ("水泵", "पानी", "pampu ya maji", "irrigacao"):
        page = pages.designs_page(text)
        shown = {d for d in (home["pump"], home["irrigation"], home["mill"]) if d in page}
        assert shown == {home["irrigation"] if text == "irrigacao" else home["pump"]}, text


def _memory_store():
    """A real RecordStore in an in-memory database, and a function that signs and ingests a version."""
    from nacl.signing import SigningKey

    from fabnode.protocol.cid import RAW, make_cid
    from fabnode.protocol.dagcbor import Link
    from fabnode.protocol.identity import did_from_ed25519
    from fabnode.protocol.records import make_record
    from fabnode.storage import open_db
    from fabnode.storage.records import RecordStore

    key = SigningKey(bytes(range(32)))
    did = did_from_ed25519(bytes(key.verify_key))
    db = open_db(memory=True)
    records = RecordStore(db.conn)

    def version(title: str, ts: int, design=None, manifest: str = ""):
        body = {"bundle": Link(make_cid(RAW, title.encode())), "parents": [Link(design)] if design else [],
                "title": title, "message": "", "license": LICENCE}
        if design:
            body["design"] = Link(design)
        else:
            body["maintainers"] = [did]
        record = make_record("version", body, author=did, ts=ts, sign=lambda m: key.sign(m).signature)
        records.ingest(record, received_ms=ts, manifest=manifest)
        return record.cid

    return db, records, version


def test_each_design_has_one_row_per_index_through_versions_and_evictions():
    """Versions arriving and versions evicted rewrite a design's rows in place; evicting the last
    version takes the design out of search; a translation's manifest is kept beside the first's."""
    db, records, version = _memory_store()
    pump = version("Hand pump", 1, manifest="hand pump well")
    sw = version("Pampu ya mkono", 2, pump, manifest="pampu kisima")
    mill = version("Grain mill", 3)
    counts = "SELECT (SELECT count(*) FROM design_search), (SELECT count(*) FROM design_trigram)"
    assert db.conn.execute(counts).fetchone() == (2, 2)
    assert [r.design for r in records.search("kisima well")] == [pump]  # both versions' manifests
    records.evict([sw], now_ms=10)
    assert db.conn.execute(counts).fetchone() == (2, 2)
    assert records.search("pampu") == [] and [r.design for r in records.search("pump")] == [pump]
    records.evict([mill], now_ms=11)
    assert db.conn.execute(counts).fetchone() == (1, 1) and records.search("mill") == []


_STORE = None


@settings(max_examples=400, derandomize=True, deadline=None)
@given(st.text(max_size=40) | st.text(alphabet='"*^-()NEAR:%_\\ \u0301水泵पानी🚰', max_size=40))
def test_any_text_searches_without_error(text):
    global _STORE
    if _STORE is None:
        _STORE = _memory_store()
        _STORE[2]("Pampu ya maji 水泵 पानी", 1)
    _STORE[1].search(text)


# ------------------------------------------------------------------ the pure parts


@pytest.mark.parametrize("text, folded", [
    ("Irrigação", "irrigacao"), ("ＰＵＭＰ", "pump"), ("ﬁlter", "filter"), ("Straße", "strasse"),
    ("e\u0301", "e"), ("كِتَاب", "كتاب"), ("كتـــاب", "كتاب"), ("पानी", "पानी"), ("क्या", "क्या"), ("水泵", "水泵"),
    ("Ελληνικά", "ελληνικα"), ("ПРИВЕТ", "привет"), ("İzmir", "izmir"), ("ｶﾞｽ", "ガス"), ("한국어", "한국어"),
])
def test_fold(text, folded):
    assert search.fold(text) == folded


def test_terms_and_queries():
    assert search.terms('Pump "pump" * - NEAR( 水泵 🚰 c++ a"b') == ["pump", "near", "水泵", "🚰", "c++", 'a"b']
    terms = search.terms('irrigação a"b 水泵 🚰')
    assert search.word_query(terms) == '"irrigacao" AND "a""b" AND "水泵"'
    assert search.substring_query(terms) == ('"irrigacao" AND "a""b"', ["水泵", "🚰"])
    assert len(search.terms(" ".join(f"w{i}" for i in range(100)))) == search.MAX_TERMS
