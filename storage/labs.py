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

from fabnode.protocol.geo import bounding_box, distance_km
from fabnode.protocol.labs import LabProfile, Machine, profile_from_record


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
    profile = profile_from_record(record)
    conn.execute("INSERT OR REPLACE INTO lab_profiles (author, cid, ts, lat, lon, profile) VALUES (?, ?, ?, ?, ?, ?)",
                 (record.author, record.cid, record.ts, profile.lat, profile.lon, _to_json(profile)))
    conn.execute("DELETE FROM lab_processes WHERE author = ?", (record.author,))
    conn.executemany("INSERT OR IGNORE INTO lab_processes (process, author) VALUES (?, ?)",
                     [(p, record.author) for p in (*profile.processes, *profile.unknown_processes)])


def drop_profile(db, author: str) -> None:
    conn = _conn(db)
    conn.execute("DELETE FROM lab_profiles WHERE author = ?", (author,))
    conn.execute("DELETE FROM lab_processes WHERE author = ?", (author,))


def reindex_all(db) -> None:
    """Index every lab record held (the migration; ``fsck --repair``). A record that today's
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
    sql = "SELECT profile, lat, lon FROM lab_profiles" + (" WHERE " + " AND ".join(where) if where else "")
    rows = conn.execute(sql, args).fetchall()
    if near is None:
        profiles = [_from_json(r[0]) for r in rows]
        return sorted(profiles, key=lambda p: (p.name.casefold(), p.author))
    located = []
    for text, lat, lon in rows:
        d = distance_km(near[0], near[1], lat, lon)
        if radius_km is None or d <= radius_km:
            located.append((d, text))
    located.sort(key=lambda dt: dt[0])
    return [_from_json(text) for _, text in located]


def name_clashes(db) -> dict[str, int]:
    """Declared names held by more than one lab key (folded), with how many keys claim each."""
    from fabnode.protocol.processes import fold_term

    counts: dict[str, int] = {}
    for (name,) in _conn(db).execute("SELECT name FROM labs"):
        key = fold_term(name)
        counts[key] = counts.get(key, 0) + 1
    return {k: n for k, n in counts.items() if n > 1}


__all__ = ["drop_profile", "index_profile", "lab_profile", "lab_profiles", "name_clashes", "reindex_all"]
