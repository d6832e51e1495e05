"""What designs need and who asked for what (issue 18): the tables of migrations 012 and 013.

Requirements are indexed per version, from that version's okh.toml, when its bundle is here:
at publish, and for a version received from a peer once its files are fetched or imported
(:func:`versions_to_read` lists those not read yet; node/local/making.py reads them). A design's
requirements are those of its newest version that was read (translations aside): until one is,
they are unknown, and every listing says so rather than guessing.

Requests, offers and closings are indexed as their records arrive, in any order; what they
mean together is computed by protocol/requests.py when asked.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from fabnode.protocol.records import Record
    from fabnode.protocol.requirements import Requirements


# ------------------------------------------------------------------ requirements


def index_requirements(conn: sqlite3.Connection, version: bytes, design: bytes, ts: int,
                       requirements: "Requirements | None") -> None:
    """Remember what ``version`` needs (None: its bundle has no okh.toml to read), and make it
    its design's requirements if it is the design's newest version read."""
    if conn.execute("SELECT 1 FROM requirements_read WHERE version = ?", (version,)).fetchone():
        return
    if requirements is None:
        conn.execute("INSERT INTO requirements_read (version, design, ts, has_manifest, parts, tools, bom_items)"
                     " VALUES (?, ?, ?, 0, 0, '[]', '[]')", (version, design, ts))
        return
    conn.execute("INSERT INTO requirements_read (version, design, ts, has_manifest, parts, tools, bom_items)"
                 " VALUES (?, ?, ?, 1, ?, ?, ?)",
                 (version, design, ts, requirements.parts, json.dumps(list(requirements.tools)),
                  json.dumps(list(requirements.bom_items))))
    rows = [(version, "process", p, 1) for p in requirements.processes]
    rows += [(version, "process", p, 0) for p in requirements.unknown_processes]
    rows += [(version, "material", m, 1) for m in requirements.materials]
    conn.executemany("INSERT OR IGNORE INTO version_requirements (version, kind, term, known) VALUES (?, ?, ?, ?)", rows)
    conn.execute(
        "INSERT INTO design_requirements (design, version, ts, needs) VALUES (?, ?, ?, ?) ON CONFLICT (design)"
        " DO UPDATE SET version = excluded.version, ts = excluded.ts, needs = excluded.needs"
        " WHERE excluded.ts > design_requirements.ts"
        " OR (excluded.ts = design_requirements.ts AND excluded.version > design_requirements.version)",
        (design, version, ts, len(rows)))


def versions_to_read(conn: sqlite3.Connection, limit: int = 200) -> list[tuple[bytes, bytes, int, bytes]]:
    """(version, design, ts, bundle) of versions whose bundle is pinned here but whose okh.toml
    was not read yet (translations aside: they share their original's requirements), newest first."""
    return conn.execute(
        "SELECT v.cid, v.design, v.ts, v.bundle FROM pins p JOIN versions v ON v.bundle = p.cid"
        " LEFT JOIN requirements_read r ON r.version = v.cid"
        " WHERE r.version IS NULL AND v.translation_of IS NULL ORDER BY v.ts DESC LIMIT ?", (limit,)).fetchall()


class DesignNeeds(NamedTuple):
    design: bytes
    version: bytes
    """The version whose okh.toml these come from."""
    processes: tuple[str, ...]
    unknown_processes: tuple[str, ...]
    materials: tuple[str, ...]
    tools: tuple[str, ...] = ()
    bom_items: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.processes or self.unknown_processes or self.materials)


def _terms(conn: sqlite3.Connection, version: bytes) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    processes, unknown, materials = [], [], []
    for kind, term, known in conn.execute("SELECT kind, term, known FROM version_requirements WHERE version = ?"
                                          " ORDER BY kind, term", (version,)):
        (materials if kind == "material" else processes if known else unknown).append(term)
    return tuple(processes), tuple(unknown), tuple(materials)


def design_needs(conn: sqlite3.Connection, design: bytes) -> DesignNeeds | None:
    """What ``design`` needs, from its newest version read; None: unknown (no version's files here)."""
    row = conn.execute("SELECT d.version, r.tools, r.bom_items FROM design_requirements d"
                       " JOIN requirements_read r ON r.version = d.version WHERE d.design = ?", (design,)).fetchone()
    if row is None:
        return None
    return DesignNeeds(design, row[0], *_terms(conn, row[0]), tuple(json.loads(row[1])), tuple(json.loads(row[2])))


def designs_short_of(conn: sqlite3.Connection, have: Iterable[tuple[str, str]], max_missing: int = 1
                     ) -> list[DesignNeeds]:
    """Every design (with known requirements) missing at most ``max_missing`` of its (kind, term)
    needs from ``have``: the candidates, found in SQL from the rows naming what the lab has (the
    ``(kind, term)`` index) plus the designs needing at most ``max_missing`` things at all, so
    20,000 designs are not scanned; protocol/canmake.py then names what is missing and orders them."""
    have_json = json.dumps([[k, t] for k, t in have])
    rows = conn.execute(
        "WITH have (kind, term) AS (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]')"
        "   FROM json_each(?)),"
        " hits AS (SELECT r.version, count(*) AS n FROM have h JOIN version_requirements r"
        "   ON r.kind = h.kind AND r.term = h.term GROUP BY r.version),"
        " short AS (SELECT d.design, d.version FROM hits JOIN design_requirements d ON d.version = hits.version"
        "   WHERE d.needs - hits.n <= ?2"
        "   UNION SELECT design, version FROM design_requirements WHERE needs <= ?2 AND needs > 0)"
        " SELECT s.design, s.version, r.kind, r.term, r.known FROM short s"
        " JOIN version_requirements r ON r.version = s.version ORDER BY s.design, r.kind, r.term",
        (have_json, max_missing)).fetchall()
    grouped: dict[bytes, tuple[bytes, list, list, list]] = {}
    for design, version, kind, term, known in rows:
        entry = grouped.setdefault(design, (version, [], [], []))
        (entry[3] if kind == "material" else entry[1] if known else entry[2]).append(term)
    return [DesignNeeds(d, v, tuple(p), tuple(u), tuple(m)) for d, (v, p, u, m) in grouped.items()]


def titles(conn: sqlite3.Connection, designs: Iterable[bytes]) -> dict[bytes, str]:
    """design -> title, in one query."""
    keys = list(designs)
    out: dict[bytes, str] = {}
    for i in range(0, len(keys), 500):
        chunk = keys[i:i + 500]
        out.update(conn.execute(f"SELECT design, title FROM designs WHERE design IN ({','.join('?' * len(chunk))})",
                                chunk).fetchall())
    return out


def forget_version_requirements(conn: sqlite3.Connection, versions: Iterable[bytes]) -> None:
    """A version went (evicted): its requirements go, and its design falls back to the newest
    version still read."""
    for version in versions:
        row = conn.execute("SELECT design FROM requirements_read WHERE version = ?", (version,)).fetchone()
        if row is None:
            continue
        conn.execute("DELETE FROM version_requirements WHERE version = ?", (version,))
        conn.execute("DELETE FROM requirements_read WHERE version = ?", (version,))
        conn.execute("DELETE FROM design_requirements WHERE design = ? AND version = ?", (row[0], version))
        newest = conn.execute("SELECT r.version, r.ts, (SELECT count(*) FROM version_requirements x WHERE"
                              " x.version = r.version) FROM requirements_read r WHERE r.design = ? AND r.has_manifest"
                              " ORDER BY r.ts DESC, r.version DESC LIMIT 1", (row[0],)).fetchone()
        if newest is not None:
            conn.execute("INSERT OR REPLACE INTO design_requirements (design, version, ts, needs) VALUES (?, ?, ?, ?)",
                         (row[0], *newest))


# ------------------------------------------------------------------ requests and offers


def index_request(conn: sqlite3.Connection, record: "Record") -> None:
    body = record.body
    if "closes" in body:
        conn.execute("INSERT OR IGNORE INTO request_closes (cid, request, author, ts) VALUES (?, ?, ?, ?)",
                     (record.cid, body["closes"].cid, record.author, record.ts))
        return
    conn.execute("INSERT OR IGNORE INTO requests (cid, author, ts, design, quantity, needed_by, note)"
                 " VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (record.cid, record.author, record.ts, body["design"].cid, body["quantity"], body["needed_by"],
                  body.get("note", "")))


def index_offer(conn: sqlite3.Connection, record: "Record") -> None:
    body = record.body
    conn.execute("INSERT OR IGNORE INTO offers (cid, request, author, ts, quantity, note) VALUES (?, ?, ?, ?, ?, ?)",
                 (record.cid, body["request"].cid, record.author, record.ts, body["quantity"], body.get("note", "")))


def forget_request_records(conn: sqlite3.Connection, cid: bytes) -> None:
    """An evicted request, offer or closing record leaves the index (the records table is the
    caller's)."""
    for table in ("requests", "offers", "request_closes"):
        conn.execute(f"DELETE FROM {table} WHERE cid = ?", (cid,))


class RequestRow(NamedTuple):
    cid: bytes
    author: str
    ts: int
    design: bytes
    quantity: int
    needed_by: str
    note: str


def request_rows(conn: sqlite3.Connection, *, cid: bytes | None = None, design: bytes | None = None,
                 authors: Iterable[str] | None = None, limit: int = 1000) -> list[RequestRow]:
    """Requests, newest first: one, those about a design (or its versions), or those by some labs."""
    where, args = [], []
    if cid is not None:
        where.append("cid = ?")
        args.append(cid)
    if design is not None:
        where.append("(design = ? OR design IN (SELECT cid FROM versions WHERE design = ?))")
        args += [design, design]
    if authors is not None:
        where.append("author IN (SELECT value FROM json_each(?))")
        args.append(json.dumps(sorted(set(authors))))
    sql = "SELECT cid, author, ts, design, quantity, needed_by, note FROM requests"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return [RequestRow(*r) for r in conn.execute(sql + " ORDER BY ts DESC, cid LIMIT ?", (*args, limit))]


def offers_on(conn: sqlite3.Connection, requests: Iterable[bytes]) -> dict[bytes, list[tuple[bytes, str, int, int, str]]]:
    """request -> [(offer id, author, ts, quantity, note)] oldest first."""
    out: dict[bytes, list] = {}
    keys = [r for r in requests]
    for i in range(0, len(keys), 500):
        chunk = keys[i:i + 500]
        marks = ",".join("?" * len(chunk))
        for cid, request, author, ts, quantity, note in conn.execute(
                f"SELECT cid, request, author, ts, quantity, note FROM offers WHERE request IN ({marks})"
                " ORDER BY ts, cid", chunk):
            out.setdefault(request, []).append((cid, author, ts, quantity, note))
    return out


def closes_of(conn: sqlite3.Connection, requests: Iterable[bytes]) -> dict[bytes, list[tuple[bytes, str]]]:
    """request -> [(closing record id, its author)]."""
    out: dict[bytes, list] = {}
    keys = list(requests)
    for i in range(0, len(keys), 500):
        chunk = keys[i:i + 500]
        marks = ",".join("?" * len(chunk))
        for cid, request, author in conn.execute(
                f"SELECT cid, request, author FROM request_closes WHERE request IN ({marks})", chunk):
            out.setdefault(request, []).append((cid, author))
    return out


# ------------------------------------------------------------------ labs that may make a design


def index_lab_materials(conn: sqlite3.Connection, author: str) -> None:
    """Copy a lab's materials from its newest profile (storage/labs.py) into ``lab_materials``,
    so "who stocks plywood" is an index lookup like "who can laser-cut" (``lab_processes``)."""
    conn.execute("DELETE FROM lab_materials WHERE author = ?", (author,))
    conn.execute("INSERT OR IGNORE INTO lab_materials (material, author) SELECT m.value, p.author FROM lab_profiles p,"
                 " json_each(p.profile, '$.materials') m WHERE p.author = ?", (author,))


def reindex_lab_materials(conn: sqlite3.Connection) -> None:
    """Every lab's materials again, from the profiles held (migration 012)."""
    conn.execute("DELETE FROM lab_materials")
    conn.execute("INSERT OR IGNORE INTO lab_materials (material, author) SELECT m.value, p.author FROM lab_profiles p,"
                 " json_each(p.profile, '$.materials') m")


class LabCapabilities(NamedTuple):
    """What can-make needs of a lab profile, without decoding the whole profile."""

    author: str
    name: str
    lat: float | None
    lon: float | None
    processes: tuple[str, ...]
    """Every process term it declared (canonical ids and unknown terms alike)."""
    materials: tuple[str, ...]
    unknown_processes: tuple[str, ...] = ()


def lab_candidates(conn: sqlite3.Connection, needs: list[tuple[str, str]], *,
                   near: tuple[float, float] | None = None, radius_km: float | None = None) -> list[LabCapabilities]:
    """Labs (storage/labs.py's index, migration 011) that have all but at most one of ``needs``.

    Three cheap queries instead of decoding 5,000 profiles: which labs declare which of the
    needed processes (the ``lab_processes`` index), which declare which of the needed materials
    (``lab_materials``, migration 012), and every lab's name and rounded place (within
    the box around ``near`` when a radius is given). Each lab comes back with only those of its
    terms that the design needs, all that matching looks at: protocol/canmake.py names what is
    missing, measures and ranks, and only the labs shown are decoded whole."""
    from fabnode.protocol.geo import bounding_box

    has: dict[str, list[tuple[str, str]]] = {}
    processes = [t for k, t in needs if k == "process"]
    materials = [t for k, t in needs if k == "material"]
    if processes:
        for author, term in conn.execute("SELECT author, process FROM lab_processes WHERE process IN"
                                         " (SELECT value FROM json_each(?))", (json.dumps(processes),)):
            has.setdefault(author, []).append(("process", term))
    if materials:
        for author, term in conn.execute("SELECT author, material FROM lab_materials WHERE material IN"
                                         " (SELECT value FROM json_each(?))", (json.dumps(materials),)):
            has.setdefault(author, []).append(("material", term))
    sql = "SELECT p.author, l.name, p.lat, p.lon FROM lab_profiles p LEFT JOIN labs l ON l.author = p.author"
    args: list = []
    if near is not None and radius_km is not None:
        box = bounding_box(near[0], near[1], radius_km)
        sql += " WHERE p.lat IS NOT NULL"
        if box is not None:
            sql += " AND p.lat BETWEEN ? AND ? AND p.lon BETWEEN ? AND ?"
            args.extend(box)
    out = []
    least = len(needs) - 1
    for author, name, lat, lon in conn.execute(sql, args):
        found = has.get(author, ())
        if len(found) >= least:
            out.append(LabCapabilities(author, name or "", lat, lon, tuple(t for k, t in found if k == "process"),
                                       tuple(t for k, t in found if k == "material")))
    return out
