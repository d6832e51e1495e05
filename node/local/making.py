"""Making things nearby (issue 18): what designs need, who can make them, requests and offers.

The use cases behind ``can-make``, ``request``, ``offer`` and ``requests`` (and the web pages
that show the same): each reads the indexes of storage/making.py and storage/labs.py and hands
the rows to the pure cores, protocol/canmake.py and protocol/requests.py.

Requirements of versions received from peers are read from their okh.toml once their files are
here (:func:`read_held_requirements`, run by every command and page that shows requirements,
a bounded batch each time): before that a design's requirements are *unknown until fetched*.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from fabnode.protocol.cid import cid_str, parse_cid
from fabnode.protocol.errors import FabnodeError
from fabnode.storage import making

if TYPE_CHECKING:
    from fabnode.node.home import Home
    from fabnode.protocol.requirements import Requirements

MAX_MANIFEST_BYTES = 256 * 1024
"""An okh.toml or BOM larger than this is not read for requirements (a manifest is a page)."""
READ_BATCH = 200
"""Versions whose okh.toml is read per command or page; the rest wait for the next."""
DEFAULT_LIMIT = 50


def today() -> datetime.date:
    """Today's date in UTC: needed-by dates are calendar dates, compared in one zone everywhere."""
    return datetime.datetime.now(datetime.timezone.utc).date()


# ------------------------------------------------------------------ requirements


def folder_requirements(folder: Path, manifest: dict) -> tuple["Requirements", list[str]]:
    """What a design folder's okh.toml (already parsed) says it needs, with lint warnings; the
    BOM CSV it points at is read from the folder when it is there and small."""
    from fabnode.protocol.requirements import bom_path, read_requirements

    bom_text = None
    relative = bom_path(manifest)
    if relative is not None:
        bom_file = folder / relative
        try:
            if bom_file.is_file() and bom_file.stat().st_size <= MAX_MANIFEST_BYTES:
                bom_text = bom_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            bom_text = None
    return read_requirements(manifest, bom_text)


def bundle_requirements(blocks, root: bytes, manifest: dict) -> tuple["Requirements", list[str]]:
    """As :func:`folder_requirements`, for a bundle held in the store (``publish CID``)."""
    from fabnode.protocol.requirements import bom_path, read_requirements

    relative = bom_path(manifest)
    return read_requirements(manifest, _small_file(blocks, root, relative) if relative else None)


def _small_file(blocks, root: bytes, path: str) -> str | None:
    """A small file of a bundle held here, as text; None when absent, too big or not held."""
    from fabnode.node.local.files import cat_path
    from fabnode.protocol.errors import MissingBlock

    pieces, size = [], 0
    try:
        for piece in cat_path(blocks, root, [s for s in path.split("/") if s]):
            size += len(piece)
            if size > MAX_MANIFEST_BYTES:
                return None
            pieces.append(piece)
    except (FabnodeError, MissingBlock, KeyError):
        return None
    return b"".join(pieces).decode("utf-8", errors="replace")


def read_held_requirements(stores, limit: int = READ_BATCH) -> int:
    """Read the okh.toml of versions whose files are here but were never read (fetched, imported,
    or stored before migration 012); returns how many were read. A bundle without a readable
    okh.toml is remembered as such, so it is not opened again."""
    from fabnode.protocol.okh import parse_manifest
    from fabnode.protocol.requirements import bom_path, read_requirements

    conn = stores.db.conn
    if conn.in_transaction:
        return 0  # Nb. the daemon's connection, mid-write for another task: read them next time
    pending = making.versions_to_read(conn, limit)
    if not pending:
        return 0
    found = []
    for version, design, ts, bundle in pending:
        text = _small_file(stores.blocks, bundle, "okh.toml")
        requirements = None
        if text is not None:
            try:
                manifest = parse_manifest(text)
            except FabnodeError:
                manifest = None
            if manifest is not None:
                relative = bom_path(manifest)
                bom = _small_file(stores.blocks, bundle, relative) if relative else None
                requirements = read_requirements(manifest, bom)[0]
        found.append((version, design, ts, requirements))
    with stores.blocks.write_transaction():
        for version, design, ts, requirements in found:
            making.index_requirements(conn, version, design, ts, requirements)
    return len(found)


def _needs_of(requirements_row):
    from fabnode.protocol.canmake import Needs

    return Needs(requirements_row.processes, requirements_row.unknown_processes, requirements_row.materials)


def _needs_json(row) -> dict:
    return {"processes": list(row.processes), "unknown_processes": list(row.unknown_processes),
            "materials": list(row.materials), "tools": list(row.tools), "bom_items": list(row.bom_items)}


# ------------------------------------------------------------------ places and trust


def my_place(stores, me: str) -> tuple[float, float]:
    """This lab's own coordinates, for ``--near-me``; one line when it has set none."""
    from fabnode.storage.labs import lab_profile

    profile = lab_profile(stores.db.conn, me)
    if profile is None or profile.lat is None or profile.lon is None:
        raise FabnodeError("--near-me needs this lab's coordinates: set them with "
                           "'fabnode lab set --place … --lat … --lon …' (or give --near LAT,LON)")
    return profile.lat, profile.lon


def _trust_weights(stores, me: str) -> dict[str, float]:
    from fabnode.node.local.commons import trust_map_for

    _, trust_map = trust_map_for(me, stores.records)
    weights = {did: float(path.weight) for did, path in trust_map.items()}
    weights[me] = max(weights.get(me, 1.0), 1.0)
    return weights


def _lab_json(names, profile, weights: dict[str, float], distance: float | None) -> dict:
    return {"lab": profile.author, **names.json_fields(profile.author, "lab_"), "label": names.label(profile.author),
            "trusted": profile.author in weights, "trust": round(weights.get(profile.author, 0.0), 6),
            "distance_km": None if distance is None else round(distance, 1), "place": profile.place,
            "bioregion": profile.bioregion, "taking_requests": profile.taking_requests, "contact": profile.contact}


def _resolve_design(records, text: str) -> tuple[bytes, bytes | None]:
    """(design, version named or None) for a design id or a version CID known here."""
    cid = parse_cid(text)
    version = records.version(cid)
    if version is not None:
        return version.design, (None if version.cid == version.design else version.cid)
    if records.design(cid) is not None:
        return cid, None
    kind = records.record_kind(cid)
    if kind is not None:
        raise FabnodeError(f"{cid_str(cid)} is a {kind} record, not a design or version (see 'fabnode designs')")
    raise FabnodeError(f"unknown design {cid_str(cid)}: sync, import or fetch it first ('fabnode designs' lists those known)")


# ------------------------------------------------------------------ can-make


def can_make_design(home: "Home", design_text: str, *, near: tuple[float, float] | None = None,
                    near_me: bool = False, radius_km: float | None = None, limit: int = DEFAULT_LIMIT,
                    stores=None) -> dict:
    """Labs that can make a design (every process and material), then those one short, nearest
    and most trusted first; the design's needs; or why they are unknown."""
    from fabnode.node.local.names import names_for
    from fabnode.protocol.canmake import match_labs
    from fabnode.storage.labs import lab_profile

    stores = stores or home.open_stores()
    records = stores.records
    me = home.identity().did
    design, version = _resolve_design(records, design_text)
    read_held_requirements(stores)
    if radius_km is not None and radius_km <= 0:
        raise FabnodeError(f"--radius must be a positive number of kilometres, not {radius_km:g}")
    here = my_place(stores, me) if near_me else near
    if radius_km is not None and here is None:
        raise FabnodeError("--radius needs a place to measure from: add --near-me or --near LAT,LON")
    row = making.design_needs(stores.db.conn, design)
    title = (records.design(design) or records.version(design))
    out = {"design": cid_str(design), "title": title.title if title else None, "near": list(here) if here else None,
           "radius_km": radius_km, "needs": None, "needs_from": None, "labs": [], "more": 0}
    if row is None:
        out["unknown"] = ("requirements unknown until its files are fetched here "
                          f"('fabnode get {cid_str(design)}')")
        return out
    out["needs"], out["needs_from"] = _needs_json(row), cid_str(row.version)
    if row.empty:
        out["unknown"] = "its okh.toml names no process or material: any lab may be able to make it"
        return out
    weights = _trust_weights(stores, me)
    candidates = making.lab_candidates(stores.db.conn, _needs_of(row).pairs(), near=here, radius_km=radius_km)
    matches = match_labs(_needs_of(row), candidates, here=here, trust=weights, radius_km=radius_km)
    names = names_for(home, records)
    out["labs"] = [{**_lab_json(names, lab_profile(stores.db.conn, m.profile.author), weights, m.distance_km),
                    "missing": [{"kind": k, "term": t} for k, t in m.missing]} for m in matches[:limit]]
    out["more"] = max(0, len(matches) - limit)
    return out


def can_make_here(home: "Home", *, limit: int = 200) -> dict:
    """Designs this lab can make with its own profile, then those one process or material short."""
    from fabnode.protocol.canmake import Needs, capabilities, match_designs
    from fabnode.storage.labs import lab_profile

    stores = home.open_stores()
    me = home.identity().did
    profile = lab_profile(stores.db.conn, me)
    if profile is None or not (profile.processes or profile.unknown_processes or profile.materials):
        raise FabnodeError("this lab's profile names no process or material yet: say what it can do with "
                           "'fabnode lab set --process … --material …'")
    read_held_requirements(stores)
    have = capabilities(profile)
    rows = making.designs_short_of(stores.db.conn, have)
    titles = making.titles(stores.db.conn, [r.design for r in rows])
    matches = match_designs(((r.design, titles.get(r.design, ""), Needs(r.processes, r.unknown_processes, r.materials))
                             for r in rows), have)
    unknown = stores.db.conn.execute("SELECT count(*) FROM designs WHERE design NOT IN "
                                     "(SELECT design FROM design_requirements)").fetchone()[0]
    return {"lab": me, "designs": [{"design": cid_str(m.design), "title": m.title,
                                    "missing": [{"kind": k, "term": t} for k, t in m.missing],
                                    "processes": list(m.needs.processes + m.needs.unknown_processes),
                                    "materials": list(m.needs.materials)} for m in matches[:limit]],
            "more": max(0, len(matches) - limit), "requirements_unknown": unknown}


# ------------------------------------------------------------------ requests and offers


def _sign_and_store(home: "Home", rtype: str, body: dict) -> str:
    from fabnode.node.local.commons import _announce, _record, now_ms

    stores = home.open_stores()
    ts = now_ms()
    with stores.blocks.write_transaction(final=True):
        record = _record(home, rtype, body, ts)
        stores.records.ingest(record, received_ms=ts, outbox=True)
    _announce(home)
    return record.id


def make_request(home: "Home", design_text: str, *, quantity: int, needed_by: str, note: str = "") -> str:
    """Sign a request for ``quantity`` things made from a design (or one version of it)."""
    from fabnode.protocol.dagcbor import Link
    from fabnode.protocol.requests import check_new_request

    records = home.open_stores().records
    cid = parse_cid(design_text)
    _resolve_design(records, design_text)  # known here, and a design or version
    check_new_request(quantity, needed_by, note, today())
    body = {"design": Link(cid), "quantity": quantity, "needed_by": needed_by}
    if note:
        body["note"] = note
    return _sign_and_store(home, "request", body)


def _request_view(stores, me: str, request: bytes, weights=None):
    rows = making.request_rows(stores.db.conn, cid=request)
    if not rows:
        kind = stores.records.record_kind(request)
        if kind is not None:
            raise FabnodeError(f"{cid_str(request)} is a {kind} record, not a request (see 'fabnode requests')")
        raise FabnodeError(f"unknown request {cid_str(request)}: sync or import it first ('fabnode requests' lists those known)")
    return _views(stores, me, rows, weights)[0]


def _views(stores, me: str, rows, weights=None):
    from fabnode.protocol.requests import Offer, request_state

    weights = weights if weights is not None else _trust_weights(stores, me)
    conn = stores.db.conn
    offers = making.offers_on(conn, [r.cid for r in rows])
    closes = making.closes_of(conn, [r.cid for r in rows])
    day = today()
    return [request_state(cid=r.cid, author=r.author, ts=r.ts, design=r.design, quantity=r.quantity,
                          needed_by=r.needed_by, note=r.note,
                          offers=[Offer(*o) for o in offers.get(r.cid, [])], closes=closes.get(r.cid, []),
                          trusted=weights, today=day) for r in rows]


def make_offer(home: "Home", request_text: str, *, quantity: int, note: str = "") -> str:
    """Sign an offer to make ``quantity`` of what a request asks for."""
    from fabnode.protocol.dagcbor import Link
    from fabnode.protocol.records import MAX_NOTE, MAX_QUANTITY
    from fabnode.protocol.requests import RequestState

    stores = home.open_stores()
    me = home.identity().did
    request = parse_cid(request_text)
    view = _request_view(stores, me, request)
    if not 1 <= quantity <= MAX_QUANTITY:
        raise FabnodeError(f"--quantity must be between 1 and {MAX_QUANTITY:,}, not {quantity}")
    if len(note) > MAX_NOTE:
        raise FabnodeError(f"--note is {len(note)} characters long; at most {MAX_NOTE}")
    if view.author == me:
        raise FabnodeError("that is this lab's own request: close it with 'fabnode request --close' instead")
    if view.state in (RequestState.CLOSED, RequestState.EXPIRED):
        raise FabnodeError(f"request {cid_str(request)} is {view.state.value}: nothing to offer for")
    body = {"request": Link(request), "quantity": quantity}
    if note:
        body["note"] = note
    return _sign_and_store(home, "offer", body)


def close_request(home: "Home", request_text: str) -> str:
    """Sign that this lab's own request is closed (met, or no longer needed)."""
    from fabnode.protocol.dagcbor import Link
    from fabnode.protocol.requests import RequestState

    stores = home.open_stores()
    me = home.identity().did
    request = parse_cid(request_text)
    view = _request_view(stores, me, request)
    if view.author != me:
        raise FabnodeError(f"request {cid_str(request)} was made by another lab: only its author can close it")
    if view.state is RequestState.CLOSED:
        raise FabnodeError(f"request {cid_str(request)} is already closed")
    return _sign_and_store(home, "request", {"closes": Link(request)})


def request_json(view, records, names, weights, distance: float | None) -> dict:
    design_row = records.design(view.design) or records.version(view.design)
    return {
        "request": cid_str(view.cid), "author": view.author, **names.json_fields(view.author, "author_"),
        "label": names.label(view.author), "trusted": view.author in weights, "ts": view.ts,
        "design": cid_str(view.design), "title": design_row.title if design_row else None,
        "quantity": view.quantity, "needed_by": view.needed_by, "note": view.note, "state": view.state.value,
        "offered": view.offered_trusted, "offered_untrusted": view.offered_untrusted,
        "distance_km": None if distance is None else round(distance, 1),
        "offers": [{"offer": cid_str(o.cid), "author": o.author, "label": names.label(o.author),
                    "trusted": o.author in weights, "quantity": o.quantity, "note": o.note, "ts": o.ts}
                   for o in view.offers],
        "closed_by": cid_str(view.closed_by) if view.closed_by else None,
    }


def list_requests(home: "Home", *, near: tuple[float, float] | None = None, near_me: bool = False,
                  radius_km: float | None = None, design_text: str | None = None, include_done: bool = True,
                  limit: int = 200, stores=None) -> list[dict]:
    """Requests known here with their computed state: open first, nearest first (by the
    requesting lab's profile), soonest needed first."""
    from fabnode.node.local.names import names_for
    from fabnode.protocol.geo import distance_km
    from fabnode.protocol.requests import RequestState, order_requests
    from fabnode.storage.labs import lab_profile

    stores = stores or home.open_stores()
    me = home.identity().did
    if radius_km is not None and radius_km <= 0:
        raise FabnodeError(f"--radius must be a positive number of kilometres, not {radius_km:g}")
    here = my_place(stores, me) if near_me else near
    if radius_km is not None and here is None:
        raise FabnodeError("--radius needs a place to measure from: add --near-me or --near LAT,LON")
    design = _resolve_design(stores.records, design_text)[0] if design_text else None
    rows = making.request_rows(stores.db.conn, design=design, limit=5000)
    weights = _trust_weights(stores, me)
    views = _views(stores, me, rows, weights)
    distances: dict[str, float | None] = {}
    for author in {v.author for v in views}:
        profile = lab_profile(stores.db.conn, author)
        if here is not None and profile is not None and profile.lat is not None and profile.lon is not None:
            distances[author] = distance_km(here[0], here[1], profile.lat, profile.lon)
        else:
            distances[author] = None
    if radius_km is not None:
        views = [v for v in views if distances[v.author] is not None and distances[v.author] <= radius_km]
    if not include_done:
        views = [v for v in views if v.state is RequestState.OPEN]
    names = names_for(home, stores.records)
    return [request_json(v, stores.records, names, weights, distances[v.author])
            for v in order_requests(views, distances)[:limit]]
