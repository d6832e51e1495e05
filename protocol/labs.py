"""Labs by name: the ``lab`` record's rules and the one way a lab is shown (issue 15).

A ``lab`` record (docs/protocol.md §4.4) is what a lab says about itself: its ``name`` and the
``nodes`` (libp2p peer IDs) that run for it. The newest one by its author's key wins (by ``ts``,
ties by record id). Each node entry carries a signature by that node's own key over
:func:`node_tie_statement` (which names the lab's did:key), so a lab cannot claim another lab's
node, and a node's signature made for one lab cannot be copied into another lab's record.

Every command and page shows a lab with :func:`lab_label`: the operator's own local name for the
key as is, else the name the lab declares with :data:`UNVERIFIED` after it, else the key
abbreviated by :func:`short_key` (the only abbreviation of a did:key or peer ID anywhere).

A lab record may also carry the lab's *profile* (issue 18; schema in docs/protocol.md §4.4):
where it is (free text, and coordinates rounded to a precision it chose), its bioregion, the
processes (a controlled vocabulary, protocol/processes.py), machines and materials it has, the
languages it works in, a contact line and whether it takes requests. :func:`check_profile_field`
holds the bounds every node applies; :func:`profile_body` builds the fields from what an operator
typed; :func:`profile_from_record` reads them back as a :class:`LabProfile`.

Pure: no storage, clock or network.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from .errors import FabnodeError
from .identity import _b58decode, peer_id_from_ed25519

NODE_TIE_DOMAIN = b"fabnode-lab-node-v1\x00"
MAX_NAME = 100
"""Characters in a lab's name, declared or local: a name, not a description."""
MAX_NODES = 32
"""Node entries in one lab record."""
UNVERIFIED = " (unverified)"
"""After a name a lab declares about itself: nobody here checked it."""


class NameRefused(FabnodeError):
    """A lab name that cannot be shown safely; the message says why (one line)."""


def short_key(key: str) -> str:
    """``did:key:z6Mk…Ycxi`` or ``12D3KooWAbCd…wXyZ``: the one abbreviation of a key or peer ID."""
    return key if len(key) <= 20 else f"{key[:12]}…{key[-4:]}"


def check_name(name: object, what: str = "name", max_chars: int = MAX_NAME) -> str:
    """The name if it is safe to print in a terminal line or a page, else :class:`NameRefused`.

    Refused rather than cleaned: control characters (newlines, escapes), bidi overrides and
    other invisible format characters, line separators, leading or trailing spaces, empty names
    and names over ``max_chars`` (:data:`MAX_NAME`) characters. A signed name that would need
    cleaning would show differently from what was signed."""
    if not isinstance(name, str):
        raise NameRefused(f"{what} must be text, not {type(name).__name__}")
    if not name.strip():
        raise NameRefused(f"{what} is empty")
    if len(name) > max_chars:
        raise NameRefused(f"{what} is {len(name)} characters long (at most {max_chars})")
    for ch in name:
        category = unicodedata.category(ch)
        if category in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"):
            raise NameRefused(f"{what} holds the invisible or control character U+{ord(ch):04X} "
                              f"({unicodedata.name(ch, 'unnamed')}): names are shown in terminals and pages")
    if name != name.strip():
        raise NameRefused(f"{what} starts or ends with a space")
    return name


def node_tie_statement(lab_did: str) -> bytes:
    """What a node signs with its libp2p key to say it runs for lab ``lab_did``."""
    return NODE_TIE_DOMAIN + lab_did.encode("utf-8")


def ed25519_from_peer_id(peer_id: str) -> bytes:
    """The Ed25519 public key inside a libp2p peer ID (identity multihash); others are refused."""
    if not isinstance(peer_id, str) or not 40 <= len(peer_id) <= 60:
        raise FabnodeError(f"not an Ed25519 peer ID: {str(peer_id)[:60]!r}")
    try:
        raw = _b58decode(peer_id)
    except Exception:
        raise FabnodeError(f"not a peer ID: {peer_id[:60]!r} is not valid base58btc") from None
    if len(raw) != 38 or raw[:6] != b"\x00\x24\x08\x01\x12\x20":
        raise FabnodeError(f"not an Ed25519 peer ID: {peer_id[:60]!r} (fabnode nodes have Ed25519 keys)")
    key = raw[6:]
    if peer_id_from_ed25519(key) != peer_id:
        raise FabnodeError(f"not a canonical peer ID: {peer_id[:60]!r}")
    return key


def lab_label(key: str, *, local: str | None = None, declared: str | None = None) -> str:
    """How a lab (or a node) is shown: local name, else declared name marked, else the key."""
    if local:
        return local
    if declared:
        return declared + UNVERIFIED
    return short_key(key)


# ------------------------------------------------------------------ profiles (issue 18)

MAX_PLACE = 200
"""Characters of a lab's place ("Nakuru, Kenya" or "behind the market, Pune")."""
MAX_BIOREGION = 100
MAX_CONTACT = 300
MAX_PROCESSES = 64
MAX_MACHINES = 64
MAX_MATERIALS = 128
MAX_LANGUAGES = 16
MAX_MACHINE_SIZE = 100
MAX_MACHINE_NOTES = 500
MIN_PRECISION_M = 100
MAX_PRECISION_M = 500_000
MIN_LAB_TS = 1_577_836_800_000
"""2020-01-01 UTC: a lab record dated before fabnode existed is past-dated nonsense (and would
only ever lose to the lab's real records), so it is refused."""

PROFILE_FIELDS = ("place", "location", "bioregion", "processes", "machines", "materials", "languages", "contact",
                  "taking_requests")
"""The optional profile fields of a ``lab`` body, beside ``name`` and ``nodes``."""


class ProfileRefused(FabnodeError):
    """A profile field outside its bounds; the message names the field and the bound (one line)."""


@dataclass(frozen=True, slots=True)
class Machine:
    kind: str
    """What it is ("laser cutter", "Prusa MK4"): free text, folded like a term."""
    size: str | None = None
    """Working volume or bed size as the lab writes it ("600x400 mm")."""
    notes: str | None = None


@dataclass(frozen=True, slots=True)
class LabProfile:
    """A lab as its newest ``lab`` record describes it (the shared contract of issue 18)."""

    author: str
    """The lab's did:key."""
    cid: str
    """The record's id (base32)."""
    ts: int
    name: str
    place: str | None
    lat: float | None
    """Already rounded to the lab's precision before it was signed."""
    lon: float | None
    precision_km: float | None
    bioregion: str | None
    processes: tuple[str, ...]
    """Canonical process ids (protocol/processes.py)."""
    unknown_processes: tuple[str, ...]
    """Terms the vocabulary does not know, folded: kept and shown as unknown."""
    machines: tuple[Machine, ...]
    materials: tuple[str, ...]
    """Folded (protocol.processes.fold_material)."""
    languages: tuple[str, ...]
    """BCP 47 tags."""
    contact: str | None
    taking_requests: bool
    nodes: tuple[str, ...]
    """Peer IDs whose ties to this lab verified (every node a valid record lists)."""


def _line(value, what: str, max_chars: int) -> str:
    try:
        return check_name(value, what, max_chars)
    except NameRefused as exc:
        raise ProfileRefused(str(exc)) from None


def _int_in(value, what: str, lo: int, hi: int) -> int:
    if type(value) is not int:
        raise ProfileRefused(f"{what} must be an integer, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise ProfileRefused(f"{what} {value} is out of range ({lo} to {hi})")
    return value


def _list(value, what: str, most: int) -> list:
    if not isinstance(value, list):
        raise ProfileRefused(f"{what} must be a list, not {type(value).__name__}")
    if len(value) > most:
        raise ProfileRefused(f"{what} has {len(value)} entries (at most {most})")
    return value


def _terms(value, what: str, most: int) -> list[str]:
    from .processes import MAX_TERM, fold_term

    seen = set()
    for i, item in enumerate(_list(value, what, most)):
        _line(item, f"{what}[{i}]", MAX_TERM)
        folded = fold_term(item)
        if folded in seen:
            raise ProfileRefused(f"{what} lists {item!r} twice")
        seen.add(folded)
    return value


def check_profile_field(field: str, value, where: str = "body."):
    """A profile field's value if it is within its bounds, else :class:`ProfileRefused`.

    Every node applies these (a peer's profile as much as our own); the cheap checks (types,
    counts) come before any per-entry work."""
    what = where + field
    if field == "place":
        return _line(value, what, MAX_PLACE)
    if field == "bioregion":
        return _line(value, what, MAX_BIOREGION)
    if field == "contact":
        return _line(value, what, MAX_CONTACT)
    if field == "taking_requests":
        if not isinstance(value, bool):
            raise ProfileRefused(f"{what} must be true or false, not {type(value).__name__}")
        return value
    if field == "location":
        if not isinstance(value, dict) or set(value) != {"lat", "lon", "precision_m"}:
            raise ProfileRefused(f"{what} must be a map of exactly lat, lon and precision_m")
        _int_in(value["lat"], f"{what}.lat (microdegrees)", -90_000_000, 90_000_000)
        _int_in(value["lon"], f"{what}.lon (microdegrees)", -180_000_000, 180_000_000)
        _int_in(value["precision_m"], f"{what}.precision_m", MIN_PRECISION_M, MAX_PRECISION_M)
        return value
    if field == "processes":
        return _terms(value, what, MAX_PROCESSES)
    if field == "materials":
        return _terms(value, what, MAX_MATERIALS)
    if field == "languages":
        from .translations import BadLanguage, check_tag

        seen = set()
        for i, tag in enumerate(_list(value, what, MAX_LANGUAGES)):
            try:
                check_tag(tag)
            except BadLanguage as exc:
                raise ProfileRefused(f"{what}[{i}]: {exc}") from None
            if tag in seen:
                raise ProfileRefused(f"{what} lists {tag!r} twice")
            seen.add(tag)
        return value
    if field == "machines":
        from .processes import MAX_TERM

        for i, m in enumerate(_list(value, what, MAX_MACHINES)):
            if not isinstance(m, dict) or "kind" not in m or not set(m) <= {"kind", "size", "notes"}:
                raise ProfileRefused(f"{what}[{i}] must be a map of kind and optionally size and notes")
            _line(m["kind"], f"{what}[{i}].kind", MAX_TERM)
            if "size" in m:
                _line(m["size"], f"{what}[{i}].size", MAX_MACHINE_SIZE)
            if "notes" in m:
                _line(m["notes"], f"{what}[{i}].notes", MAX_MACHINE_NOTES)
        return value
    if field == "recovery":  # issue 17: SHA-256 of the recovery public key (protocol/recovery.py)
        from .recovery import check_commitment

        try:
            return check_commitment(value, what)
        except FabnodeError as exc:
            raise ProfileRefused(str(exc)) from None
    raise ProfileRefused(f"{what} is not a profile field")


def parse_machine(text: str) -> dict:
    """``--machine "laser cutter; 600x400 mm; CO2 60 W"``: kind, then optional size and notes."""
    parts = [p.strip() for p in text.split(";", 2)]
    machine = {"kind": parts[0]}
    if len(parts) > 1 and parts[1]:
        machine["size"] = parts[1]
    if len(parts) > 2 and parts[2]:
        machine["notes"] = parts[2]
    return machine


def profile_body(*, place: str | None = None, lat: float | None = None, lon: float | None = None,
                 precision_km: float | None = None, bioregion: str | None = None,
                 processes=(), machines=(), materials=(), languages=(), contact: str | None = None,
                 taking_requests: bool | None = None) -> dict:
    """The profile fields of a ``lab`` body from what an operator typed, checked.

    Processes become canonical ids where the vocabulary knows them (else are kept, folded);
    materials are folded; coordinates are rounded to ``precision_km`` (default 10 km) here,
    before anything is signed. Empty values are left out rather than sent empty."""
    from .geo import DEFAULT_PRECISION_KM, check_coordinates, check_precision, rounded_micro
    from .processes import canonical_process, fold_material, fold_term
    from .translations import BadLanguage, normalize_tag

    body: dict = {}
    for field, value in (("place", place), ("bioregion", bioregion), ("contact", contact)):
        if isinstance(value, str):
            value = value.strip()  # what an operator typed: spaces around it are not part of it
        if value is not None and value != "":
            body[field] = check_profile_field(field, value, "")
    if (lat is None) != (lon is None):
        raise ProfileRefused("give both --lat and --lon (or neither)")
    if lat is not None:
        try:
            check_coordinates(lat, lon)
            precision = DEFAULT_PRECISION_KM if precision_km is None else precision_km
            check_precision(precision)
        except ValueError as exc:
            raise ProfileRefused(str(exc)) from None
        rlat, rlon = rounded_micro(lat, lon, precision)
        body["location"] = {"lat": rlat, "lon": rlon, "precision_m": round(precision * 1000)}
    elif precision_km is not None:
        raise ProfileRefused("--precision-km needs coordinates (--lat and --lon, or --place)")
    if processes:
        if len(processes) > MAX_PROCESSES:
            raise ProfileRefused(f"processes has {len(processes)} entries (at most {MAX_PROCESSES})")
        terms = []
        for text in processes:
            text = _line(text.strip() if isinstance(text, str) else text, "a process", 64)
            term = canonical_process(text) or fold_term(text)
            if term not in terms:
                terms.append(term)
        body["processes"] = check_profile_field("processes", terms, "")
    if materials:
        if len(materials) > MAX_MATERIALS:
            raise ProfileRefused(f"materials has {len(materials)} entries (at most {MAX_MATERIALS})")
        folded = []
        for text in materials:
            text = _line(text.strip() if isinstance(text, str) else text, "a material", 64)
            if fold_material(text) not in folded:
                folded.append(fold_material(text))
        body["materials"] = check_profile_field("materials", folded, "")
    if machines:
        body["machines"] = check_profile_field(
            "machines", [parse_machine(m) if isinstance(m, str) else m for m in machines], "")
    if languages:
        tags = []
        for text in languages:
            try:
                tag = normalize_tag(text)
            except BadLanguage as exc:
                raise ProfileRefused(f"languages: {exc}") from None
            if tag not in tags:
                tags.append(tag)
        body["languages"] = check_profile_field("languages", tags, "")
    if taking_requests is not None:
        body["taking_requests"] = bool(taking_requests)
    return body


def profile_from_record(record) -> LabProfile:
    """The profile a verified ``lab`` record states (fields it lacks are None or empty)."""
    from .cid import cid_str
    from .geo import MICRO
    from .processes import canonical_process, fold_material, fold_term

    body = record.body
    known: list[str] = []
    unknown: list[str] = []
    for term in body.get("processes", ()):
        pid = canonical_process(term)
        if pid is not None:
            if pid not in known:
                known.append(pid)
        elif fold_term(term) not in unknown:
            unknown.append(fold_term(term))
    location = body.get("location")
    return LabProfile(
        author=record.author, cid=cid_str(record.cid), ts=record.ts, name=body["name"],
        place=body.get("place"),
        lat=location["lat"] / MICRO if location else None,
        lon=location["lon"] / MICRO if location else None,
        precision_km=location["precision_m"] / 1000 if location else None,
        bioregion=body.get("bioregion"),
        processes=tuple(known), unknown_processes=tuple(unknown),
        machines=tuple(Machine(m["kind"], m.get("size"), m.get("notes")) for m in body.get("machines", ())),
        materials=tuple(dict.fromkeys(fold_material(m) for m in body.get("materials", ()))),
        languages=tuple(body.get("languages", ())),
        contact=body.get("contact"),
        taking_requests=bool(body.get("taking_requests", False)),
        nodes=tuple(n["peer"] for n in body.get("nodes", ())),
    )
