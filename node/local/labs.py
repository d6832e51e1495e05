"""Lab profiles (issue 18): this lab's own profile (``lab``, ``lab set``) and the labs it knows
(``labs``), as the command line and the web pages show them.

``lab set`` merges: each option given replaces that field of the newest profile, the others are
kept (``--clear FIELD`` removes one). The coordinates are rounded to the chosen precision in
:func:`fabnode.protocol.labs.profile_body` before the record is signed, so the precise spot never
leaves this machine; nothing about the place is shared until the operator sets it. A place name
without coordinates is looked up in the offline gazetteer (node/local/places.py) and shown for
the operator to confirm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from fabnode.protocol.errors import FabnodeError
from fabnode.protocol.labs import PROFILE_FIELDS, LabProfile, ProfileRefused

if TYPE_CHECKING:
    from fabnode.node.home import Home

LIST_FIELDS = ("processes", "machines", "materials", "languages")
CLEARABLE = ("place", "coordinates", "bioregion", "processes", "machines", "materials", "languages", "contact")


def profile_json(profile: LabProfile) -> dict:
    from dataclasses import asdict

    from fabnode.protocol.processes import PROCESSES

    out = asdict(profile)
    out["process_labels"] = {p: PROCESSES[p].label for p in profile.processes}
    return out


def _fields_of(profile: LabProfile | None, raw_body: dict) -> dict:
    """The profile fields of the newest record, as they were signed."""
    return {k: raw_body[k] for k in PROFILE_FIELDS if k in raw_body} if profile is not None else {}


def my_profile(home: "Home") -> dict:
    """``fabnode lab``: this lab's newest profile, with its own label."""
    from fabnode.storage.labs import lab_profile

    identity = home.identity()
    stores = home.open_stores()
    profile = lab_profile(stores.db.conn, identity.did)
    if profile is None:
        raise FabnodeError("this lab has no lab record yet: run 'fabnode init' or 'fabnode lab set'")
    return {**profile_json(profile), "shown": identity.name or profile.name}


def set_profile(home: "Home", *, name: str | None = None, place: str | None = None, lat: float | None = None,
                lon: float | None = None, precision_km: float | None = None, bioregion: str | None = None,
                processes=(), machines=(), materials=(), languages=(), contact: str | None = None,
                taking_requests: bool | None = None, clear=(), confirm_place: Callable | None = None,
                warn: Callable[[str], None] = lambda line: None) -> dict:
    """``fabnode lab set``: sign and queue a new ``lab`` record with the profile changed as asked.

    ``confirm_place(place) -> bool`` is asked when ``place`` was resolved from the gazetteer;
    ``warn`` gets one line per unknown process (with the nearest known terms) or unfound place."""
    from fabnode.node.local.commons import _announce, _open, _record, now_ms
    from fabnode.node.local.names import sign_lab_body
    from fabnode.protocol.dagcbor import decode
    from fabnode.protocol.labs import check_name, profile_body
    from fabnode.protocol.processes import canonical_process, nearest_processes

    for field in clear:
        if field not in CLEARABLE:
            raise FabnodeError(f"--clear {field}: not a profile field (one of {', '.join(CLEARABLE)})")
    if name is not None:
        check_name(name, "--name")
    resolved = None
    if place and lat is None and lon is None and "coordinates" not in clear:
        from fabnode.node.local.places import resolve_place

        resolved = resolve_place(place)
        if resolved is None:
            warn(f"warning: {place!r} is not in the offline gazetteer (GeoNames places of 5,000 people or more): "
                 "no coordinates shared; give --lat and --lon to share some")
        elif confirm_place is not None and not confirm_place(resolved):
            raise FabnodeError(f"place {resolved.describe()} not confirmed: nothing published")
        else:
            lat, lon = resolved.lat, resolved.lon
    if precision_km is not None and lat is None:
        raise ProfileRefused("--precision-km needs the coordinates again (--lat and --lon, or --place): "
                             "the precise spot is never stored, only the rounded one")
    given = profile_body(place=place, lat=lat, lon=lon, precision_km=precision_km, bioregion=bioregion,
                         processes=list(processes), machines=list(machines), materials=list(materials),
                         languages=list(languages), contact=contact, taking_requests=taking_requests)
    for term in given.get("processes", ()):
        if canonical_process(term) is None:
            near = nearest_processes(term)
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            warn(f"warning: {term!r} is not in the process vocabulary: kept, shown as an unknown process{hint}")

    identity = home.identity()
    store, records = _open(home)
    latest = records.lab(identity.did)
    old_body: dict = {}
    if latest is not None and (raw := records.raw(latest[2])) is not None:
        old_body = decode(raw)["body"]
    fields = {k: old_body[k] for k in PROFILE_FIELDS if k in old_body}
    for field in clear:
        fields.pop("location" if field == "coordinates" else field, None)
    if place is not None and lat is None and "location" in fields and resolved is None:
        fields.pop("location")  # a new place that could not be located: the old spot would lie
    fields.update(given)
    if name is not None and name != identity.name:
        from fabnode.node.home import set_config_name

        set_config_name(home.path, name)
        identity = home.identity()
    body = sign_lab_body(home, records, name=check_name(identity.name, "the lab's name in config.toml"),
                         profile=fields)
    ts = now_ms()
    if latest is not None and ts <= latest[1]:
        ts = latest[1] + 1
    with store.write_transaction(final=True):
        record = _record(home, "lab", body, ts)
        records.ingest(record, received_ms=ts, outbox=True)
    _announce(home)
    out = my_profile(home)
    if resolved is not None:
        out["resolved_place"] = resolved.describe()
    return out


def labs(home: "Home", *, near: tuple[float, float] | None = None, near_me: bool = False,
         radius_km: float | None = None, process: str | None = None) -> dict:
    """``fabnode labs``: every lab known here (newest profile each), nearest first when asked,
    each with how it is shown (names layer), its distance, whether this lab trusts its key, and
    whether another key declares the same name."""
    stores = home.open_stores()
    return labs_over(stores.db.conn, stores.records, home.identity(),
                     near=near, near_me=near_me, radius_km=radius_km, process=process)


def labs_over(conn, records, identity, *, near: tuple[float, float] | None = None, near_me: bool = False,
              radius_km: float | None = None, process: str | None = None, nearest_from_here: bool = False,
              detailed: int | None = None) -> dict:
    """:func:`labs` over an open connection (the CLI's, or the daemon's for the labs page).

    ``nearest_from_here``: every lab (none filtered out by distance), nearest to this lab first,
    those without coordinates last (the labs page). ``detailed``: only the first so many labs
    carry the whole profile; the others only what a map dot needs (author, name, shown,
    coordinates, own, trusted): a page of thousands of labs decodes only the rows it lists."""
    from fabnode.node.local.commons import is_trusted, trust_map_for
    from fabnode.protocol.geo import check_coordinates, distance_km
    from fabnode.protocol.labs import lab_label
    from fabnode.protocol.processes import PROCESSES, canonical_process, fold_term
    from fabnode.storage.labs import decode_profile, lab_profile, profile_rows, profile_texts

    if radius_km is not None and not (0 < radius_km <= 20_040):
        raise FabnodeError(f"--radius {radius_km:g} km: give a distance above 0 and at most 20040 km (half the Earth)")
    if near is not None and near_me:
        raise FabnodeError("give --near LAT,LON or --near-me, not both")
    mine = lab_profile(conn, identity.did)
    if near_me:
        if mine is None or mine.lat is None:
            raise FabnodeError("--near-me: this lab has not shared coordinates yet "
                               "(fabnode lab set --place TOWN, or --lat and --lon)")
        near = (mine.lat, mine.lon)
    if near is not None:
        try:
            check_coordinates(*near)
        except ValueError as exc:
            raise FabnodeError(f"--near: {exc}") from None
    elif radius_km is not None:
        raise FabnodeError("--radius needs --near LAT,LON or --near-me")
    rows = profile_rows(conn, near=near, radius_km=radius_km, process=process)
    here = near or ((mine.lat, mine.lon) if mine is not None and mine.lat is not None else None)
    if here is not None and near is None:
        rows = [row._replace(distance_km=distance_km(here[0], here[1], row.lat, row.lon) if row.lat is not None else None)
                for row in rows]
        if nearest_from_here:
            rows.sort(key=lambda row: (row.distance_km is None, row.distance_km or 0.0))
    wanted = rows if detailed is None else rows[:detailed]
    texts = profile_texts(conn, [row.author for row in wanted if row.profile is None])
    _, trust_map = trust_map_for(identity.did, records)
    clashes, rows = _one_row_per_identity(conn, records.keys.identities(), rows)
    local = {key: name for key, name, _ in records.local_names() if key.startswith("did:")}
    out = []
    for i, row in enumerate(rows):
        author = row.author
        own = author == identity.did
        # the names layer's rule (node/local/names.py), without a query per lab: local, own, declared
        if author in local:
            source, shown = "local", local[author]
        elif own and identity.name:
            source, shown = "own", identity.name
        else:
            source, shown = "declared", lab_label(author, declared=row.name)
        if detailed is None or i < detailed:
            entry = decode_profile(row.profile or texts[author])  # LabProfile's fields, as storage/labs.py stored them
            entry["process_labels"] = {p: PROCESSES[p].label for p in entry["processes"] if p in PROCESSES}
        else:
            entry = {"author": author, "name": row.name, "lat": row.lat, "lon": row.lon}
        entry.update(name_source=source, shown=shown, own=own, trusted=own or is_trusted(trust_map, author),
                     distance_km=round(row.distance_km, 1) if row.distance_km is not None else None,
                     name_clash=clashes.get(row.name_key, 1) - 1)
        out.append(entry)
    return {"near": list(near) if near else None, "radius_km": radius_km,
            "process": (canonical_process(process) or fold_term(process)) if process else None,
            "here": list(here) if here else None, "labs": out}


__all__ = ["labs", "labs_over", "my_profile", "profile_json", "set_profile"]


def _one_row_per_identity(conn, ids, rows) -> tuple[dict[str, int], list]:
    """Issue 17: a lab that rotated its key has a profile under each key; it is one lab. Keep the
    row of each identity's current key (else its newest-listed one), and count a name clash
    between identities, not keys: (name_key -> identities declaring it, the rows kept)."""
    declaring: dict[str, set[str]] = {}
    for name_key, author in conn.execute("SELECT name_key, author FROM lab_profiles"):
        declaring.setdefault(name_key, set()).add(ids.identity_of(author))
    clashes = {name_key: len(found) for name_key, found in declaring.items() if len(found) > 1}
    chosen: dict[str, object] = {}
    for row in rows:
        identity = ids.identity_of(row.author)
        held = chosen.get(identity)
        if held is None or row.author == ids.current_key(identity):
            chosen[identity] = row
    kept = {id(row) for row in chosen.values()}
    return clashes, [row for row in rows if id(row) in kept]
