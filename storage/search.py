"""Search across languages and scripts (issue 19): the text folding and the two FTS5 indexes.

Theory of operation. Every design has one row in each of two FTS5 tables, holding the same
*folded* text (:func:`fold`) of every version of the design (titles, labels, messages, and the
manifest's name, function and keywords when the bundle was here at publish time). A translation
is a version of the same design, so its words find the design too.

- ``design_search`` (tokenizer ``unicode61 remove_diacritics 2``) matches whole words: the words
  of Latin, Cyrillic, Greek, Devanagari or Arabic text written with spaces between them.
- ``design_trigram`` (tokenizer ``trigram``) matches any substring of three characters or more:
  Chinese or Japanese written without spaces, parts of words (``pump`` in ``pumps``).
- A query term shorter than three characters (``水泵``, two-character Chinese words are common)
  cannot use the trigram index (FTS5 returns nothing for it), so it is looked for with
  ``instr()`` over the trigram table's stored text: a linear scan of one row per design.

Word matches come first, ranked by bm25 (title counts most); substring matches follow, ranked
by bm25 of the trigram index when a term could use it, else newest design (by first indexing)
first, which lets a scan stop at the ``limit``-th hit. Query terms are whitespace-separated
and all must match; each is quoted for FTS5, so a query's quotes, ``NEAR``,
``*``, ``^``, ``-`` or parentheses are text, never syntax. Punctuation at a term's ends is
trimmed (``(pump`` and ``pump*`` look for ``pump``), and a term of punctuation alone is dropped.

Folding is ours, the same for indexed text and queries, because SQLite 3.40 (Python 3.11's)
has no ``remove_diacritics`` for the trigram tokenizer (3.45 added it): NFKD, then the
combining marks of Latin, Greek, Cyrillic, Hebrew and Arabic (:data:`_STRIPPED_MARKS`) are
removed, then NFC and ``casefold()``. The marks of Indic scripts are *not* removed: Devanagari's
vowel signs and virama are part of how a word is spelled, not accents.
"""

from __future__ import annotations

import sqlite3
import unicodedata

MAX_QUERY_CHARS = 200
"""A longer search is refused in one line (the web UI's own limit is the same)."""
MAX_TERMS = 32
"""Terms beyond this many are ignored: every term must match, so more would find nothing new."""
MIN_TRIGRAM = 3
"""FTS5's trigram tokenizer finds nothing for a shorter substring."""

_STRIPPED_MARKS = (
    (0x0300, 0x036F),  # combining diacritical marks: the accents of Latin, Greek, Cyrillic
    (0x1AB0, 0x1AFF), (0x1DC0, 0x1DFF), (0x20D0, 0x20FF), (0xFE20, 0xFE2F),  # their extensions
    (0x0591, 0x05C7),  # Hebrew points and cantillation
    (0x0610, 0x061A), (0x064B, 0x065F), (0x0670, 0x0670), (0x06D6, 0x06ED),  # Arabic harakat
)
_TATWEEL = "\u0640"  # Arabic stretching, not a letter


def _stripped(ch: str) -> bool:
    o = ord(ch)
    return any(lo <= o <= hi for lo, hi in _STRIPPED_MARKS) and unicodedata.category(ch).startswith("M")


def fold(text: str) -> str:
    """Text as it is indexed and searched: accents off, case folded, compatibility forms
    (full-width letters, ligatures) unified. ``fold("Irrigação")`` is ``"irrigacao"``."""
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(ch for ch in decomposed if ch != _TATWEEL and not _stripped(ch))
    return unicodedata.normalize("NFC", kept).casefold()


def _has(term: str, classes: str) -> bool:
    return any(unicodedata.category(ch)[0] in classes for ch in term)


def _trim(term: str) -> str:
    """The term without punctuation at its ends: ``"pump``, ``(pump`` and ``pump*`` are ``pump``."""
    start, end = 0, len(term)
    while start < end and unicodedata.category(term[start])[0] == "P":
        start += 1
    while end > start and unicodedata.category(term[end - 1])[0] == "P":
        end -= 1
    return term[start:end]


def terms(text: str) -> list[str]:
    """The folded terms of a query, split at spaces and control characters, trimmed of
    punctuation at their ends, each at most once; terms with nothing but punctuation are dropped."""
    out: list[str] = []
    spaced = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in fold(text))  # NUL ends FTS5's strings
    for term in spaced.split():
        term = _trim(term)
        if _has(term, "LNS") and term not in out:
            out.append(term)
    return out[:MAX_TERMS]


def _quoted(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def word_query(query_terms: list[str]) -> str:
    """The ``design_search`` MATCH expression: every term with a letter or digit, as a phrase."""
    return " AND ".join(_quoted(t) for t in query_terms if _has(t, "LN"))


def substring_query(query_terms: list[str]) -> tuple[str, list[str]]:
    """(``design_trigram`` MATCH expression or "", terms too short for it)."""
    long_terms = [t for t in query_terms if len(t) >= MIN_TRIGRAM]
    return " AND ".join(_quoted(t) for t in long_terms), [t for t in query_terms if len(t) < MIN_TRIGRAM]


def index_text(texts: list[str]) -> str:
    """One design's searchable text: the distinct non-empty pieces, folded, one per line."""
    seen: list[str] = []
    for t in texts:
        t = t.strip()
        if t and t not in seen:
            seen.append(t)
    return fold("\n".join(seen))


def _row_id(conn: sqlite3.Connection, design: bytes) -> int:
    """The rowid of ``design``'s rows in both FTS5 tables. FTS5 can only find a row quickly by
    its rowid (``WHERE design = ?`` reads every row: ~10 ms at 10,000 designs, on every version
    ingested), so ``search_rows`` keeps one, an INTEGER PRIMARY KEY that VACUUM does not renumber."""
    row = conn.execute("SELECT id FROM search_rows WHERE design = ?", (design,)).fetchone()
    if row is not None:
        return row[0]
    return conn.execute("INSERT INTO search_rows (design) VALUES (?)", (design,)).lastrowid


def reindex(conn: sqlite3.Connection, design: bytes) -> None:
    """Rewrite ``design``'s rows in both indexes from the versions and manifests held now."""
    row = conn.execute("SELECT title, manifest FROM designs WHERE design = ?", (design,)).fetchone()
    drop(conn, design)
    if row is None:
        return
    row_id = _row_id(conn, design)
    title, manifest = row
    versions = conn.execute("SELECT v.title, v.label, v.message, coalesce(m.manifest, '') FROM versions v"
                            " LEFT JOIN version_manifests m ON m.cid = v.cid WHERE v.design = ? ORDER BY v.ts, v.cid",
                            (design,)).fetchall()
    titles = index_text([title] + [v[0] for v in versions])
    # designs.manifest (the newest manifest given) only for designs indexed before
    # version_manifests existed: it may be an evicted version's
    manifests = index_text([v[3] for v in versions] if any(v[3] for v in versions) else [manifest])
    messages = index_text([f"{v[1]} {v[2]}" for v in versions])
    conn.execute("INSERT INTO design_search (rowid, design, title, manifest, messages) VALUES (?, ?, ?, ?, ?)",
                 (row_id, design, titles, manifests, messages))
    conn.execute("INSERT INTO design_trigram (rowid, design, text) VALUES (?, ?, ?)",
                 (row_id, design, "\n".join(t for t in (titles, manifests, messages) if t)))


def drop(conn: sqlite3.Connection, design: bytes) -> None:
    """Take ``design`` out of both indexes."""
    row = conn.execute("SELECT id FROM search_rows WHERE design = ?", (design,)).fetchone()
    if row is not None:
        conn.execute("DELETE FROM design_search WHERE rowid = ?", row)
        conn.execute("DELETE FROM design_trigram WHERE rowid = ?", row)


def find(conn: sqlite3.Connection, text: str, limit: int) -> list[bytes]:
    """Design ids matching ``text``: word matches first, then substring matches."""
    query_terms = terms(text)
    if not query_terms or limit <= 0:
        return []
    found: list[bytes] = []
    words = word_query(query_terms)
    if words:
        found = [r[0] for r in conn.execute(
            "SELECT design FROM design_search WHERE design_search MATCH ?"
            " ORDER BY bm25(design_search, 10.0, 5.0, 1.0) LIMIT ?", (words, limit))]
    if len(found) >= limit:
        return found
    match, short = substring_query(query_terms)
    where = " AND ".join(["design_trigram MATCH ?"] * bool(match) + ["instr(text, ?) > 0"] * len(short))
    order = "bm25(design_trigram)" if match else "rowid DESC"  # rowid: the order designs were first indexed
    params = [match] * bool(match) + short + [limit + len(found)]
    seen = set(found)
    for (design,) in conn.execute(f"SELECT design FROM design_trigram WHERE {where} ORDER BY {order} LIMIT ?", params):
        if design not in seen:
            found.append(design)
            seen.add(design)
            if len(found) >= limit:
                break
    return found
