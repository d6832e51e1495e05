"""Signed statements about designs: publish, attest, vouch, and reading them back.

Each command here is one function the CLI calls. Writing commands build a record with the lab's
author key, check it with the same rules a peer would apply, and store it in one transaction
with anything it refers to (the bundle of a version, the evidence of an attestation), marked for
the outbox so the daemon announces it. Reading commands only query the record index.
"""

from __future__ import annotations

import time
from pathlib import Path

from fabnode.protocol.cid import cid_str, parse_cid
from typing import TYPE_CHECKING, NamedTuple

from fabnode.protocol.errors import FabnodeError
from fabnode.protocol.lineage import VersionNode, canonical_and_heads
from fabnode.storage.records import RecordStore, VersionRow

if TYPE_CHECKING:
    from fabnode.protocol.records import Record

# protocol.records (signing, verification) and protocol.dagcbor are imported by the commands
# that write or check records: the reading commands must start fast.

from fabnode.node.home import Home


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _signer(home: Home):
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key((home.path / "author.key").read_bytes(), password=None)
    return key.sign


def _open(home: Home):
    stores = home.open_stores()
    return stores.blocks, stores.records


def _announce(home: Home) -> None:
    """Tell a running daemon that the outbox has news (it also looks every second)."""
    from fabnode.node.runtime.control import poke_daemon

    poke_daemon(home.path)


def _record(home: Home, rtype: str, body: dict, ts: int) -> "Record":
    from fabnode.protocol.records import make_record, verify_record

    identity = home.identity()
    record = make_record(rtype, body, author=identity.did, ts=ts, sign=_signer(home))
    return verify_record(record.raw, now_ms=ts)  # the same rules a peer applies


# ------------------------------------------------------------------ lineage


class DesignState(NamedTuple):
    design: bytes
    versions: list[VersionRow]
    maintainers: tuple[str, ...] | None
    canonical: set[bytes]
    heads: list[bytes]


def design_state(records: RecordStore, design: bytes) -> DesignState:
    versions = records.versions_of(design)
    row = records.design(design)
    maintainers = row.maintainers if row else None
    canonical, heads = canonical_and_heads(
        (VersionNode(v.cid, v.author, v.ts, v.parents) for v in versions), maintainers)
    return DesignState(design, versions, maintainers, canonical, heads)


def _resolve_design(records: RecordStore, text: str) -> tuple[bytes, bytes | None]:
    """A design or version CID given by the user -> (design, the version if one was named).

    A design's id is its first version's CID; given that, the design is meant (None returned).
    """
    cid = parse_cid(text)
    version = records.version(cid)
    if version is not None:
        return version.design, (None if version.is_first else cid)
    if records.design(cid) is not None:
        return cid, None
    raise FabnodeError(f"no design or version {cid_str(cid)} is known here (fetch, import or sync it first)")


# ------------------------------------------------------------------ publish


class Published(NamedTuple):
    version: str
    design: str
    bundle: str
    warnings: list[str]

    def as_json(self) -> dict:
        return {"version": self.version, "design": self.design, "bundle": self.bundle, "warnings": self.warnings}


def publish(home: Home, path: Path, *, message: str, design: str | None = None, parents: list[str] = (),
            title: str | None = None, label: str | None = None, license_: str | None = None,
            include_hidden: bool = False, same_files: str | None = None, progress=lambda n: None) -> Published:
    """Store a bundle and a signed version of it (``fabnode publish``; docs/protocol.md §4.2).

    A version whose files are exactly those of the design's current head is refused unless
    ``same_files`` says why it is wanted: it would move the head (and with it what `reputation`
    judges) away from the attested version while changing nothing. The reason is kept in the
    version's message."""
    from fabnode.protocol.licenses import check_spdx, share_alike_problem
    from fabnode.protocol.okh import lint_manifest, manifest_summary, parse_manifest

    from fabnode.protocol.dagcbor import Link
    from fabnode.storage.db import room_for

    from fabnode.node.local.files import plan_add, planned_paths, store_planned

    if path.is_file():  # before the manifest and licence checks, which would only confuse
        raise FabnodeError(f"cannot publish {path}: it is a file, and a design is a folder: put it in a folder "
                           "(with an okh.toml) and publish the folder, or store it alone with 'fabnode add'")
    if same_files is not None and not same_files.strip():
        raise FabnodeError("--same-files needs a reason: say why these unchanged files deserve a new version")
    store, records = _open(home)
    warnings: list[str] = []
    identity = home.identity()
    parent_rows = []
    state = None
    for text in parents:
        row = records.version(parse_cid(text))
        if row is None:
            raise FabnodeError(f"unknown parent version {text}: fetch, import or sync it first")
        parent_rows.append(row)
    design_cid = None
    if design is not None:
        design_cid, _ = _resolve_design(records, design)
        state = design_state(records, design_cid)
        if not parent_rows:
            if not state.heads:
                raise FabnodeError(f"design {cid_str(design_cid)} has no known canonical version to build on: give --parent")
            parent_rows = [records.version(h) for h in state.heads]
        if state.maintainers is not None and identity.did not in state.maintainers:
            warnings.append(f"you are not a maintainer of {cid_str(design_cid)}: this version is a proposal")

    plan = plan_add(path, include_hidden)
    manifest: dict = {}
    manifest_path = path / "okh.toml"
    if path.is_dir() and manifest_path.is_file():
        manifest = parse_manifest(manifest_path.read_text(encoding="utf-8"))
        warnings.extend(f"okh.toml: {w}" for w in lint_manifest(manifest, planned_paths(plan)))
    elif path.is_dir():
        warnings.append("the bundle has no okh.toml (Open Know-How manifest): add one so others can find and build it")
    summary = manifest_summary(manifest) if manifest else {}
    chosen = license_ or summary.get("license")
    if not chosen:
        raise FabnodeError("no licence: give --license SPDX-ID or set license in okh.toml (the commons needs to know what others may do)")
    licence = check_spdx(chosen)
    for parent in parent_rows:
        problem = share_alike_problem(parent.license, licence)
        if problem:
            warnings.append(problem)
    previous = parent_rows[0] if parent_rows and design_cid is not None else None
    body = {
        "bundle": None,
        "parents": [Link(p.cid) for p in parent_rows],
        "title": title or summary.get("name") or (previous.title if previous else path.resolve().name),
        "message": message,
        "license": licence,
    }
    if label or summary.get("version"):
        body["label"] = label or summary["version"]
    if design_cid is not None:
        body["design"] = Link(design_cid)
    else:
        body["maintainers"] = [identity.did]
    manifest_text = " ".join(str(summary.get(k, "")) for k in ("name", "function")) + " " + " ".join(summary.get("keywords", []))
    ts = now_ms()
    with room_for(store.db.path, f"publishing {path.name or path}", plan[0].bytes), \
            store.write_transaction(final=True):
        added = store_planned(store, path, plan, now_ms=ts, progress=progress)
        bundle = parse_cid(added.cid)
        same = _head_with_bundle(records, state, bundle) if state is not None else None
        if same is not None and same_files is None:
            raise FabnodeError(
                f"nothing changed: {path} holds exactly the files of the design's current head {cid_str(same)}; "
                "nothing was published (to sign these same files again, say why with --same-files \"REASON\")")
        if same is not None:
            body["message"] = f"{message} (same files as {cid_str(same)}: {same_files.strip()})"
            warnings.append("these are the same files as the head it replaces: attestations of that version do "
                            "not carry over to this one")
        body["bundle"] = Link(bundle)
        record = _record(home, "version", body, ts)
        records.ingest(record, received_ms=ts, outbox=True, manifest=manifest_text.strip())
    _announce(home)
    design_out = cid_str(design_cid) if design_cid is not None else record.id
    return Published(record.id, design_out, added.cid, warnings)


def _head_with_bundle(records: RecordStore, state: DesignState, bundle: bytes) -> bytes | None:
    """The design's head whose files are ``bundle``, if one is."""
    for head in state.heads:
        row = records.version(head)
        if row is not None and row.bundle == bundle:
            return head
    return None


# ------------------------------------------------------------------ attest, vouch


def attest(home: Home, version: str, *, result: str, predicate: str = "built", notes: str = "",
           lab: str | None = None, tests: list[str] = (), evidence: list[Path] = ()) -> str:
    from fabnode.protocol.dagcbor import Link

    from fabnode.node.local.files import plan_add, store_planned

    store, records = _open(home)
    subject = parse_cid(version)
    if records.version(subject) is None:
        raise FabnodeError(f"unknown version {cid_str(subject)}: only versions this node knows can be attested")
    plans = [(p, plan_add(p)) for p in evidence]
    ts = now_ms()
    with store.write_transaction(final=True):
        links = [Link(parse_cid(store_planned(store, p, plan, now_ms=ts).cid)) for p, plan in plans]
        body = {"subject": Link(subject), "predicate": predicate, "result": result,
                "lab": lab if lab is not None else home.identity().name}
        if notes:
            body["notes"] = notes
        if tests:
            body["tests"] = list(tests)
        if links:
            body["evidence"] = links
        if not body["lab"]:
            del body["lab"]
        record = _record(home, "attestation", body, ts)
        records.ingest(record, received_ms=ts, outbox=True)
    _announce(home)
    return record.id


def vouch(home: Home, did: str, *, distrust: bool = False, note: str = "") -> str:
    from fabnode.protocol.identity import ed25519_from_did

    ed25519_from_did(did)  # a clear error for a malformed did:key before anything else
    me = home.identity().did
    if did == me:
        raise FabnodeError("that is this lab's own key: it is always trusted")
    store, records = _open(home)
    body = {"subject": did, "trust": "distrusted" if distrust else "trusted"}
    if note:
        body["note"] = note
    ts = now_ms()
    with store.write_transaction(final=True):
        record = _record(home, "vouch", body, ts)
        records.ingest(record, received_ms=ts, outbox=True)
    _announce(home)
    return record.id


# ------------------------------------------------------------------ reading


def _link_json(value):
    from fabnode.protocol.dagcbor import Link

    if isinstance(value, Link):
        return {"/": cid_str(value.cid)}
    if isinstance(value, list):
        return [_link_json(v) for v in value]
    if isinstance(value, dict):  # a lab's node entries
        return {k: _link_json(v) for k, v in value.items()}
    if isinstance(value, bytes):  # DAG-JSON's form for bytes (a node's signature)
        import base64

        return {"/": {"bytes": base64.b64encode(value).decode().rstrip("=")}}
    return value


def show(home: Home, text: str) -> dict:
    """Decode and re-check any stored record; ``valid`` is False with the reason if it fails.

    ``trusted`` says whether this node trusts the record's author (its own key, or one its trust
    reaches), ``trust`` how much: a lab name in the body is only what that key claims."""
    from fabnode.protocol.records import RecordRejected, verify_record

    _, records = _open(home)
    cid = parse_cid(text)
    raw = records.raw(cid)
    if raw is None:
        raise FabnodeError(f"no record {cid_str(cid)} here (records are DAG-CBOR blocks: bafyrei…)")
    _, trust_map = trust_map_for(home.identity().did, records)
    try:
        record = verify_record(raw, now_ms=now_ms(), cid=cid)
    except RecordRejected as exc:
        from fabnode.protocol.dagcbor import decode

        value = decode(raw)
        author = value.get("author")
        return {"cid": cid_str(cid), "type": value.get("type"), "author": author, "ts": value.get("ts"),
                "body": None, "valid": False, "reason": str(exc), **_trust_fields(trust_map, author)}
    return {"cid": record.id, "type": record.type, "author": record.author, "ts": record.ts,
            "body": {k: _link_json(v) for k, v in record.body.items()}, "valid": True,
            **_trust_fields(trust_map, record.author)}


def is_trusted(trust_map, did) -> bool:
    """Does this node trust ``did`` at all (weight above 0 in its own trust graph)?"""
    held = trust_map.get(did) if isinstance(did, str) else None
    return held is not None and held.weight > 0


def _trust_fields(trust_map, did) -> dict:
    return {"trusted": is_trusted(trust_map, did),
            "trust": round(trust_map[did].weight, 6) if is_trusted(trust_map, did) else 0.0}


def _attestation_summary(rows) -> dict[str, int]:
    summary: dict[str, int] = {}
    for a in rows:
        key = f"{a.predicate}/{a.result}"
        summary[key] = summary.get(key, 0) + 1
    return dict(sorted(summary.items()))


def _claims_by_trust(rows, trust_map) -> dict[str, dict[str, int]]:
    """Attestation counts per predicate/result, by trusted keys and by keys this node does not trust."""
    rows = list(rows)
    return {"trusted": _attestation_summary(a for a in rows if is_trusted(trust_map, a.author)),
            "untrusted": _attestation_summary(a for a in rows if not is_trusted(trust_map, a.author))}


def log(home: Home, target: str | None, limit: int = 50, trust_map=None) -> dict:
    """A design's history: versions (canonical or proposal, heads marked), attestation summaries,
    where it came from and which designs adapted it. Without a target: the latest versions.

    Each version says whether its author is trusted here (``author_trusted``) and counts its
    attestations apart by trusted and untrusted keys (``attestations_by_trust``); ``attestations``
    counts every one, whoever signed it. The trust graph is computed once (or given)."""
    _, records = _open(home)
    return history(records, home.identity().did, target, limit, trust_map)


def history(records: RecordStore, me: str, target: str | None, limit: int = 50, trust_map=None) -> dict:
    """:func:`log` over a record store, for lab ``me`` (the web pages use their own store)."""
    if trust_map is None:
        _, trust_map = trust_map_for(me, records)
    if target is None:
        versions = records.recent_versions(limit)
        return {"versions": [version_json(v, None, records, trust_map) for v in versions]}
    design, _ = _resolve_design(records, target)
    state = design_state(records, design)
    row = records.design(design)
    own = {v.cid for v in state.versions}
    upstream = sorted({p for v in state.versions for p in v.parents if p not in own})
    return {
        "design": cid_str(design),
        "title": row.title if row else "",
        "maintainers": list(state.maintainers) if state.maintainers is not None else None,
        "heads": [cid_str(h) for h in state.heads],
        "versions": [version_json(v, state, records, trust_map) for v in reversed(state.versions)],
        "upstream": [cid_str(u) for u in upstream],
        "adaptations": [{"design": cid_str(a.cid), "title": a.title, "author": a.author,
                         "author_trusted": is_trusted(trust_map, a.author), "from": [cid_str(p) for p in a.parents if p in own]}
                        for a in records.adaptations_of(own)],
    }


def version_json(v: VersionRow, state: DesignState | None, records: RecordStore, trust_map=None) -> dict:
    """One version as ``log`` and the web page show it; with ``trust_map`` (see
    :func:`trust_map_for`) also whether its author and attesters are trusted."""
    attestations = records.attestations_on([v.cid])
    out = {"version": cid_str(v.cid), "design": cid_str(v.design), "author": v.author, "ts": v.ts,
           "title": v.title, "label": v.label, "message": v.message, "license": v.license,
           "bundle": cid_str(v.bundle), "parents": [cid_str(p) for p in v.parents],
           "attestations": _attestation_summary(attestations)}
    if trust_map is not None:
        out["author_trusted"] = is_trusted(trust_map, v.author)
        out["attestations_by_trust"] = _claims_by_trust(attestations, trust_map)
    if state is not None:
        out["canonical"] = v.cid in state.canonical if state.maintainers is not None else None
        out["head"] = v.cid in state.heads
    return out


def _design_json(d) -> dict:
    return {"design": cid_str(d.design), "title": d.title, "author": d.author, "license": d.license,
            "versions": d.versions, "updated_ts": d.updated_ts}


def list_designs(records: RecordStore, limit: int = 100) -> list[dict]:
    """The designs known here, most recently updated first."""
    return [_design_json(d) for d in records.designs(limit)]


def search_designs(records: RecordStore, text: str, limit: int = 50) -> list[dict]:
    """The designs whose titles, messages or manifests, in any version or translation, match
    ``text``, accents and case aside (storage/search.py)."""
    from fabnode.storage.search import MAX_QUERY_CHARS

    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8 on the command line arrive as lone surrogates
        raise FabnodeError("the search is not valid UTF-8: check the terminal's encoding (LANG)") from None
    if len(text) > MAX_QUERY_CHARS:
        raise FabnodeError(f"the search is longer than {MAX_QUERY_CHARS} characters ({len(text)}): "
                           "a few words find more")
    return [_design_json(d) for d in records.search(text, limit)]


# ------------------------------------------------------------------ following designs


def follow(home: Home, design_text: str | None) -> list[dict]:
    """Follow a design (its bundles are then fetched by the daemon on its own); list followed."""
    store, records = _open(home)
    if design_text is not None:
        design, _ = _resolve_design(records, design_text)
        with store.write_transaction():
            records.follow(design, now_ms())
    out = []
    for design in records.follows():
        row = records.design(design)
        out.append({"design": cid_str(design), "title": row.title if row else "",
                    "versions": row.versions if row else 0})
    return out


def unfollow(home: Home, design_text: str) -> bool:
    store, records = _open(home)
    design, _ = _resolve_design(records, design_text)
    with store.write_transaction():
        return records.unfollow(design)


# ------------------------------------------------------------------ trust and reputation


def trust_map_for(me: str, records: RecordStore):
    """(``me``, the trust lab ``me``'s vouches and those it trusts reach): computed once per
    command or page and handed to :func:`version_json` and the rows."""
    from fabnode.protocol.reputation import Vouch, compute_trust

    vouches = [Vouch(v.author, v.subject, v.trust, v.ts) for v in records.vouches()]
    return me, compute_trust(me, (), vouches)


def trust(home: Home) -> dict:
    """Whom this lab trusts: its own vouches, and every key trust reaches, strongest first."""
    _, records = _open(home)
    me, trust_map = trust_map_for(home.identity().did, records)
    mine = {}
    for v in records.vouches():
        if v.author == me and (v.subject not in mine or v.ts >= mine[v.subject]["ts"]):
            mine[v.subject] = {"subject": v.subject, "trust": v.trust, "ts": v.ts, "vouch": cid_str(v.cid)}
    keys = sorted(trust_map.items(), key=lambda kv: (-kv[1].weight, kv[0]))
    return {
        "me": me,
        "vouches": sorted(mine.values(), key=lambda v: v["subject"]),
        "trusted": [{"did": did, "weight": round(p.weight, 6), "path": list(p.path)} for did, p in keys],
    }


def reputation(home: Home, target: str, trust_map=None) -> dict:
    """Should we build this? The personal score of a version (for a design: its newest head).
    Labs are shown by name (node/local/names.py); each reason's ``author_name`` says which."""
    from fabnode.node.local.names import names_for

    _, records = _open(home)
    names = names_for(home, records)
    result = score(records, home.identity().did, target, trust_map, label=names.label,
                   declared=lambda key: (records.lab(key) or (None,))[0])
    for reason in result["reasons"]:
        reason.update(names.json_fields(reason["author"], "author_"))
        reason["path_shown"] = [names.label(k) for k in reason["path"]]
    return result


def score(records: RecordStore, me: str, target: str, trust_map=None, label=None, declared=None) -> dict:
    """:func:`reputation` over a record store, for lab ``me`` (the web pages use their own store)."""
    from fabnode.protocol.reputation import Attestation, Vouch, distrusted_keys, explain, score_version

    design, version = _resolve_design(records, target)
    state = design_state(records, design)
    if version is None:
        if not state.heads:
            raise FabnodeError(f"design {cid_str(design)} has no known canonical version to judge")
        version = state.heads[0]
    if trust_map is None:
        _, trust_map = trust_map_for(me, records)
    rows = records.attestations_on([version])
    result = score_version((Attestation(cid_str(a.cid), a.author, a.predicate, a.result, a.lab, a.ts) for a in rows),
                           trust_map)
    return {
        "version": cid_str(version),
        "design": cid_str(design),
        "value": round(result.value, 6),
        "verdict": result.verdict,
        "reasons": [{"attestation": r.cid, "lab": r.lab, "author": r.author, "predicate": r.predicate,
                     "result": r.result, "weight": round(r.weight, 6), "trust": round(r.trust, 6),
                     "path": list(r.path), "status": r.status} for r in result.reasons],
        "explanation": explain(result, distrusted_keys(me, trust_map, (Vouch(v.author, v.subject, v.trust, v.ts)
                                                                       for v in records.vouches())),
                               **({"label": label, "declared": declared} if label else {})),
    }


# ------------------------------------------------------------------ records from elsewhere


class Received:
    """What became of records from elsewhere: new, already known, or rejected (with why)."""

    def __init__(self) -> None:
        self.new: list[str] = []
        self.known: list[str] = []
        self.rejected: list[tuple[str, str]] = []
        """(cid or position, one-line reason)"""
        self.over_quota: list[tuple[str, str]] = []
        """Valid records by strangers not stored (protocol/quota.py): not the sender's fault."""

    def as_json(self) -> dict:
        return {"new": self.new, "known": self.known,
                "rejected": [{"record": r, "reason": why} for r, why in self.rejected]}


def receive_records(records: RecordStore, blocks: list[tuple[bytes | None, bytes]], *, now: int,
                    all_or_nothing: bool = True, quota=None, peer: str | None = None,
                    verified: list | None = None) -> Received:
    """Check records that came from a peer or a file, then store the valid ones.

    Every record is verified before anything is written. With ``all_or_nothing`` (a file), one
    bad record stores nothing; otherwise (gossip, sync) the valid ones are kept. The caller holds
    the write transaction. Records may refer to versions or bundles not (yet) here: records travel
    without bundles, and lineage links up when the rest arrives. ``verified``: the blocks' Records,
    already verified by the caller (the node service checks every record it receives), so the
    signatures are not checked twice.
    """
    from fabnode.node.local.verify import verify_blocks

    result = Received()
    valid = []
    outcomes = verified if verified is not None and len(verified) == len(blocks) else verify_blocks(blocks, now)
    for position, ((cid, _), outcome) in enumerate(zip(blocks, outcomes)):
        if isinstance(outcome, str):
            result.rejected.append((cid_str(cid) if cid is not None else f"record #{position + 1}", outcome))
        else:
            valid.append(outcome)
    if result.rejected and all_or_nothing:
        return result
    for record in valid:
        if records.is_evicted(record.cid):  # evicted over the strangers' quota: not again
            result.known.append(record.id)
            continue
        if quota is not None and not records.has(record.cid):
            reason = quota.admit(record.author, peer, now, len(record.raw))
            if reason is not None:
                result.over_quota.append((record.id, reason))
                continue
        if records.ingest(record, received_ms=now):
            result.new.append(record.id)
        else:
            result.known.append(record.id)
    if quota is not None and result.new:
        quota.enforce_storage(now)
    return result
