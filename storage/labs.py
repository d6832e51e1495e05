"""Lab profiles (issue 18): the newest ``lab`` record of each lab, indexed for "near" and "can".

Theory of operation. Every ``lab`` record is stored in ``records`` like any other; beside the
``labs`` name index (migration 008) each author's *newest* record (by ts, then record id, the
same rule as ``labs``) is kept in ``lab_profiles`` as the JSON of its
:class:`fabnode.protocol.labs.LabProfile`, with its rounded coordinates as columns, and its
process terms in ``lab_processes``. A profile arriving late loses to a newer one already here; an
evicted record (the strangers' quota) makes the author's remaining records be indexed again.

A query near a point first takes the rows inside a latitude/longitude box around it (an index
range scan on ``lat``; no box across a pole or the antimeridian, then every located row), then
keeps those within the radius by the haversine distance; a process filter is a join on
``lab_processes``. Everything is answered from these rows: no record is decoded to list labs.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict
from typing import NamedTuple

from fabnode.protocol.geo import bounding_box, distance_km
from fabnode.protocol.labs import LabProfile, Machine, profile_from_record


class ProfileRow(NamedTuple):
    author: str
    name: str
    lat: float | None
    lon: float | None
    name_key: str
    """The name folded (protocol.processes.fold_term): equal keys are a name clash."""
    profile: str | None
    """The JSON of the LabProfile: decoded (:func:`decode_profile`) only where needed; None when
    the query read every lab (then :func:`profile_texts` reads the ones wanted)."""
    distance_km: float | None


def decode_profile(text: str) -> dict:
    return json.loads(text)


def profile_texts(db, authors: list[str]) -> dict[str, str]:
    """author -> profile JSON, for the rows a listing shows in full."""
    conn = _conn(db)
    out: dict[str, str] = {}
    for i in range(0, len(authors), 500):
        chunk = authors[i:i + 500]
        marks = ",".join("?" * len(chunk))
        out.update(conn.execute(f"SELECT author, profile FROM lab_profiles WHERE author IN ({marks})", chunk).fetchall())
    return out


def _conn(db) -> sqlite3.Connection:
    return getattr(db, "conn", db)


def _to_json(profile: LabProfile) -> str:
    return json.dumps(asdict(profile), ensure_ascii=False, separators=(",", ":"))


def _from_json(text: str) -> LabProfile:
    d = json.loads(text)
    for key in ("processes", "unknown_processes", "materials", "languages", "nodes"):
        d[key] = tuple(d[key])
    d["machines"] = tuple(Machine(**m) for m in d["machines"])
    return LabProfile(**d)


def index_profile(db, record) -> None:
    """Index a verified ``lab`` record if it is its author's newest. Inside the caller's transaction."""
    conn = _conn(db)
    row = conn.execute("SELECT ts, cid FROM lab_profiles WHERE author = ?", (record.author,)).fetchone()
    if row is not None and (row[0], row[1]) >= (record.ts, record.cid):
        return
    from fabnode.protocol.processes import fold_term

    profile = profile_from_record(record)
    conn.execute("INSERT OR REPLACE INTO lab_profiles (author, cid, ts, lat, lon, name_key, profile)"
                 " VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (record.author, record.cid, record.ts, profile.lat, profile.lon, fold_term(profile.name),
                  _to_json(profile)))
    conn.execute("DELETE FROM lab_processes WHERE author = ?", (record.author,))
    conn.executemany("INSERT OR IGNORE INTO lab_processes (process, author) VALUES (?, ?)",
                     [(p, record.author) for p in (*profile.processes, *profile.unknown_processes)])


def drop_profile(db, author: str) -> None:
    conn = _conn(db)
    conn.execute("DELETE FROM lab_profiles WHERE author = ?", (author,))
    conn.execute("DELETE FROM lab_processes WHERE author = ?", (author,))


def reindex_all(db) -> None:
    """Index every lab record held (migration 011). A record that today's
    rules refuse (an old node kept an unknown field that is now a bounded profile field) is
    left out of the profiles: it stays in ``records``, as every record does."""
    from fabnode.protocol.errors import FabnodeError
    from fabnode.protocol.records import verify_record

    conn = _conn(db)
    conn.execute("DELETE FROM lab_profiles")
    conn.execute("DELETE FROM lab_processes")
    for (data,) in conn.execute("SELECT data FROM records WHERE type = 'lab'").fetchall():
        try:
            record = verify_record(data, now_ms=1 << 62)
        except FabnodeError:
            continue
        index_profile(conn, record)


def lab_profile(db, author: str) -> LabProfile | None:
    """The newest profile of lab ``author``, None when no lab record of it is here."""
    row = _conn(db).execute("SELECT profile FROM lab_profiles WHERE author = ?", (author,)).fetchone()
    return _from_json(row[0]) if row else None


def lab_profiles(db, *, near: tuple[float, float] | None = None, radius_km: float | None = None,
                 process: str | None = None) -> list[LabProfile]:
    """The newest profile of every lab, nearest first when ``near`` is given (then only labs with
    coordinates, and within ``radius_km`` if given), else by name. ``process``: a canonical id or
    a term (folded and looked up in the vocabulary first)."""
    rows = profile_rows(db, near=near, radius_km=radius_km, process=process)
    texts = profile_texts(db, [r.author for r in rows if r.profile is None])
    return [_from_json(row.profile if row.profile is not None else texts[row.author]) for row in rows]


def profile_rows(db, *, near: tuple[float, float] | None = None, radius_km: float | None = None,
                 process: str | None = None) -> list[ProfileRow]:
    """:func:`lab_profiles` as :class:`ProfileRow` (the JSON still text), in the same order: a
    listing of thousands of labs decodes only the rows it shows in full."""
    from fabnode.protocol.processes import canonical_process, fold_term

    conn = _conn(db)
    where, args = [], []
    if process is not None:
        term = canonical_process(process) or fold_term(process)
        where.append("author IN (SELECT author FROM lab_processes WHERE process = ?)")
        args.append(term)
    if near is not None:
        where.append("lat IS NOT NULL")
        box = bounding_box(near[0], near[1], radius_km) if radius_km is not None else None
        if box is not None:
            where.append("lat BETWEEN ? AND ? AND lon BETWEEN ? AND ?")
            args.extend(box)
    # without a filter (the labs page: thousands of rows) the JSON is read later, for the rows shown
    column = "p.profile" if where else "NULL"
    sql = (f"SELECT p.author, l.name, p.lat, p.lon, p.name_key, {column} FROM lab_profiles p JOIN labs l USING (author)"
           + (" WHERE " + " AND ".join(where) if where else ""))
    rows = conn.execute(sql, args).fetchall()
    if near is None:
        rows.sort(key=lambda r: (r[1].casefold(), r[0]))
        return [ProfileRow(author, name, lat, lon, key, text, None) for author, name, lat, lon, key, text in rows]
    located = []
    for author, name, lat, lon, key, text in rows:
        d = distance_km(near[0], near[1], lat, lon)
        if radius_km is None or d <= radius_km:
            located.append(ProfileRow(author, name, lat, lon, key, text, d))
    located.sort(key=lambda row: row.distance_km)
    return located


def name_clashes(db) -> dict[str, int]:
    """Folded names declared by more than one lab key, with how many keys declare each."""
    rows = _conn(db).execute("SELECT name_key, count(*) FROM lab_profiles GROUP BY name_key HAVING count(*) > 1")
    return dict(rows.fetchall())


__all__ = ["ProfileRow", "decode_profile", "profile_texts", "drop_profile", "index_profile", "lab_profile", "lab_profiles", "name_clashes",
           "profile_rows", "reindex_all"]
