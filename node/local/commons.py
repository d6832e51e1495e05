"""Signed statements about designs: publish, attest, vouch, and reading them back.

Each command here is one function the CLI calls. Writing commands build a record with the lab's
author key, check it with the same rules a peer would apply, and store it in one transaction
with anything it refers to (the bundle of a version, the evidence of an attestation), marked for
the outbox so the daemon announces it. Reading commands only query the record index.
"""

from __future__ import annotations

import time
from pathlib import Path

from fabnode.protocol.cid import RAW, cid_codec, cid_str, parse_cid
from typing import TYPE_CHECKING, NamedTuple

from fabnode.protocol.errors import FabnodeError
from fabnode.protocol.lineage import VersionNode, canonical_and_heads
from fabnode.storage.records import RecordStore, VersionRow
from fabnode.storage.profiles import set_design_profile

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
    retractions: dict = {}
    """version -> (the retraction that counts or None, those ignored), for versions with any
    (issue 17, protocol/retractions.py)."""


def speaker(ids, key: str, ts: int) -> str:
    """The identity a record by ``key`` at ``ts`` counts for (issue 17: a lab's rotated key, or a
    member while its delegation stood, counts as the lab); "" when it counts for no one."""
    return ids.speaks_for(key, ts) or ""


def takeback_speaker(ids, key: str, ts: int) -> str:
    """:func:`speaker` for the author of a retraction or withdrawal: one that counts for no one
    gets a name no version or attestation author can have, so it never matches one that also
    counts for no one."""
    return ids.speaks_for(key, ts) or "\x00no one: " + key


def maintainer_identities(ids, maintainers) -> tuple[str, ...] | None:
    """The identities a design's first version names as maintainers (keys they had then)."""
    return None if maintainers is None else tuple(ids.identity_of(m) for m in maintainers)


def _judged_through(ids, found, judge, *args) -> tuple:
    """Judge take-backs with their authors seen as identities, and give back the records as signed."""
    by_cid = {t.cid: t for t in found}
    counted, ignored = judge([t._replace(author=takeback_speaker(ids, t.author, t.ts)) for t in found], *args)
    return (by_cid[counted.cid] if counted is not None else None), [by_cid[t.cid] for t in ignored]


def judged_retractions(records: RecordStore, versions: list[VersionRow], maintainers) -> dict:
    """version -> (the retraction that counts or None, those ignored) for the given versions.
    Authors, the versions' and the retractions', and maintainers are compared as identities."""
    from fabnode.protocol.retractions import judge_retractions

    ids = records.keys.identities()
    authors = {v.cid: speaker(ids, v.author, v.ts) for v in versions}
    maintainers = maintainer_identities(ids, maintainers)
    return {subject: _judged_through(ids, found, judge_retractions, authors[subject], maintainers)
            for subject, found in records.takebacks_of(authors, "retraction").items()}


def judged_withdrawals(records: RecordStore, attestations) -> dict:
    """attestation -> (the withdrawal that counts or None, those ignored) for the given rows;
    authors compared as identities (a lab's new key may withdraw what its old key attested)."""
    from fabnode.protocol.retractions import judge_withdrawals

    ids = records.keys.identities()
    authors = {a.cid: speaker(ids, a.author, a.ts) for a in attestations}
    return {subject: _judged_through(ids, found, judge_withdrawals, authors[subject])
            for subject, found in records.takebacks_of(authors, "withdrawal").items()}


def design_state(records: RecordStore, design: bytes) -> DesignState:
    """The design's versions and lineage. Translations (issue 19) are listed among ``versions``
    but take no part in the lineage: never canonical, never a head, whoever signed them.
    Retracted versions (issue 17) stay listed and canonical, never heads."""
    versions = records.versions_of(design)
    row = records.design(design)
    maintainers = row.maintainers if row else None
    retractions = judged_retractions(records, versions, maintainers)
    ids = records.keys.identities()  # issue 17: a maintainer's new key, or a member, counts as the maintainer
    doubtful = _doubtful(records, ids, versions)
    canonical, heads = canonical_and_heads(
        (VersionNode(v.cid, "" if v.cid in doubtful else speaker(ids, v.author, v.ts), v.ts, v.parents)
         for v in versions if not v.is_translation),
        maintainer_identities(ids, maintainers),
        [cid for cid, (counted, _) in retractions.items() if counted is not None])
    return DesignState(design, versions, maintainers, canonical, heads, retractions)


def _doubtful(records: RecordStore, ids, rows) -> set[bytes]:
    """The rows (versions, attestations: anything with cid, author, ts) that are doubtful here:
    by a revoked key, dated before its cut-off, received after the revocation (issue 17). They
    are never canonical: a thief's backdated version must not become a head."""
    from fabnode.protocol.key_views import DOUBTFUL, signer_of

    revoked = [r for r in rows if not ids.is_plain(r.author) and ids.standing(r.author, r.ts).kind == "revoked"]
    if not revoked:
        return set()
    received, learned = records.received_at([r.cid for r in revoked]), records.revocations_learned()
    return {r.cid for r in revoked if signer_of(ids, r.author, r.ts, received.get(r.cid), learned).mark == DOUBTFUL}


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


def publish(home: Home, path: Path | None, *, message: str, design: str | None = None, parents: list[str] = (),
            title: str | None = None, label: str | None = None, license_: str | None = None,
            include_hidden: bool = False, same_files: str | None = None, progress=lambda n: None,
            language: str | None = None, translation_of: str | None = None, bundle: str | None = None,
            force: bool = False, profile: str | None = None) -> Published:
    """Store a bundle and a signed version of it (``fabnode publish``; docs/protocol.md §4.2).

    A version whose files are exactly those of the design's current head is refused unless
    ``same_files`` says why it is wanted: it would move the head (and with it what `reputation`
    judges) away from the attested version while changing nothing. The reason is kept in the
    version's message.

    ``translation_of`` (with ``language``) publishes a translation of that version's
    documentation: a version of the same design that never becomes a head (issue 19). Without
    it, ``language`` (else okh.toml's ``documentation-language``) declares the language the
    version is written in.

    ``bundle`` (a CID, with ``path`` None) publishes files already in the store instead of a
    folder (issue 16): the same checks, its okh.toml read from the stored bundle. An okh.toml the
    official OKH-LOSH schema rejects refuses the publish unless ``force`` (then each violation is a
    warning); fabnode's own advice (protocol/okh.py ``lint_manifest``) only ever warns."""
    from fabnode.protocol.licenses import check_spdx, share_alike_problem
    from fabnode.protocol.okh import lint_manifest, manifest_summary, parse_manifest, schema_refusal, schema_violations

    from fabnode.protocol.dagcbor import Link
    from fabnode.storage.db import room_for

    from fabnode.node.local.files import plan_add, planned_paths, store_planned

    if path is not None and path.is_file():  # before the manifest and licence checks, which would only confuse
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
    target = None
    if language is not None:
        from fabnode.protocol.translations import normalize_tag

        language = normalize_tag(language)
    if translation_of is not None:
        target, design_cid = _translation_target(records, translation_of, language, design)
        if not parent_rows:
            parent_rows = [target]
    elif design is not None:
        design_cid, _ = _resolve_design(records, design)
        state = design_state(records, design_cid)
        if not parent_rows:
            if not state.heads:
                raise FabnodeError(f"design {cid_str(design_cid)} has no known canonical version to build on: give --parent")
            parent_rows = [records.version(h) for h in state.heads]
        if state.maintainers is not None and identity.did not in state.maintainers:
            warnings.append(f"you are not a maintainer of {cid_str(design_cid)}: this version is a proposal")

    profile = chosen_profile(home, store, profile, design_cid or (parent_rows[0].design if parent_rows else None))
    if path is not None:
        plan = plan_add(path, include_hidden)
        where, size, bundle_paths = str(path), plan[0].bytes, planned_paths(plan)
        manifest_text = _folder_manifest(path)
    else:
        stored, manifest_text, bundle_paths = stored_bundle(store, bundle)
        where, size = cid_str(stored), 0
    manifest: dict = {}
    requirements = None
    if manifest_text is not None:
        manifest = parse_manifest(manifest_text)
        violations = schema_violations(manifest)
        if violations and not force:
            raise FabnodeError(schema_refusal(violations))
        warnings.extend(str(v) for v in violations)
        warnings.extend(lint_manifest(manifest, bundle_paths))
        if translation_of is None:  # a translation shares the requirements of what it translates
            from fabnode.node.local.making import bundle_requirements, folder_requirements

            if path is not None:
                requirements, requirement_warnings = folder_requirements(path, manifest)
            else:
                requirements, requirement_warnings = bundle_requirements(store, stored, manifest)
            warnings.extend(requirement_warnings)
    else:
        warnings.append("the bundle has no okh.toml (Open Know-How manifest): add one so others can find and build it")
    summary = manifest_summary(manifest) if manifest else {}
    language = _declared_language(manifest, language, warnings)
    chosen = license_ or summary.get("license") or (target.license if target is not None else None)
    if not chosen:
        raise FabnodeError("no licence: give --license SPDX-ID or set license in okh.toml (the commons needs to know what others may do)")
    licence = check_spdx(chosen)
    for parent in parent_rows:
        problem = share_alike_problem(parent.license, licence)
        if problem:
            warnings.append(problem)
    previous = target or (parent_rows[0] if parent_rows and design_cid is not None else None)
    body = {
        "bundle": None,
        "parents": [Link(p.cid) for p in parent_rows],
        "title": title or summary.get("name") or (previous.title if previous else (path.resolve().name if path is not None else where)),
        "message": message,
        "license": licence,
    }
    # a translation is labelled as the version it translates (its folder's okh.toml may still
    # carry the version it was copied from), unless --label says otherwise
    inherited = target.label if target is not None else None
    if label or inherited or summary.get("version"):
        body["label"] = label or inherited or summary.get("version")
    if design_cid is not None:
        body["design"] = Link(design_cid)
    else:
        body["maintainers"] = [identity.did]
    if language is not None:
        body["language"] = language
    if target is not None:
        body["translation_of"] = Link(target.cid)
    index_text = " ".join(str(summary.get(k, "")) for k in ("name", "function")) + " " + " ".join(summary.get("keywords", []))
    ts = now_ms()
    shown = (path.name or str(path)) if path is not None else where
    with room_for(store.db.path, f"publishing {shown}", size), \
            store.write_transaction(final=True):
        if path is not None:
            root = parse_cid(store_planned(store, path, plan, now_ms=ts, progress=progress, profile=profile).cid)
        else:
            root = stored
        same = _head_with_bundle(records, state, root) if state is not None else None
        if same is not None and same_files is None:
            raise FabnodeError(
                f"nothing changed: {where} holds exactly the files of the design's current head {cid_str(same)}; "
                "nothing was published (to sign these same files again, say why with --same-files \"REASON\")")
        if same is not None:
            body["message"] = f"{message} (same files as {cid_str(same)}: {same_files.strip()})"
            warnings.append("these are the same files as the head it replaces: attestations of that version do "
                            "not carry over to this one")
        body["bundle"] = Link(root)
        record = _record(home, "version", body, ts)
        records.ingest(record, received_ms=ts, outbox=True, manifest=index_text.strip())
        if translation_of is None:
            from fabnode.storage.making import index_requirements

            index_requirements(store.db.conn, record.cid, design_cid or record.cid, ts, requirements)
        if path is not None:
            set_design_profile(store.db.conn, design_cid or parse_cid(record.id), profile)
    _announce(home)
    design_out = cid_str(design_cid) if design_cid is not None else record.id
    return Published(record.id, design_out, cid_str(root), warnings)


def chosen_profile(home: Home, store, explicit: str | None, design: bytes | None) -> str:
    """The chunking profile an add or publish uses: ``explicit``, else the one recorded for
    ``design``, else the home's ``add.profile``; an unknown name is refused in one line."""
    from fabnode.protocol.chunker import check_profile
    from fabnode.storage.profiles import design_profile

    name = explicit or (design_profile(store.db.conn, design) if design is not None else None) \
        or home.setting("add.profile")
    try:
        return check_profile(name)
    except ValueError as exc:
        source = "--profile" if explicit else ("config.toml add.profile" if name == home.setting("add.profile") else "")
        raise FabnodeError(f"{exc}{' in ' + source if source else ''}") from None


def _folder_manifest(path: Path) -> str | None:
    """The text of ``path``'s okh.toml, or None when it has none."""
    from fabnode.protocol.okh import MAX_MANIFEST_BYTES

    manifest_path = path / "okh.toml"
    if not manifest_path.is_file():
        return None
    if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
        raise FabnodeError(f"{manifest_path} is {manifest_path.stat().st_size} bytes: an okh.toml is at most "
                           f"{MAX_MANIFEST_BYTES >> 10} KiB")
    return manifest_path.read_text(encoding="utf-8")


def stored_bundle(store, text: str) -> tuple[bytes, str | None, set[str]]:
    """(root, okh.toml text, file paths) of a folder held whole in the store, for ``publish CID``.

    Refused in one line: not a CID, not held (or not whole), not a folder, no okh.toml, an
    okh.toml over the size bound or not UTF-8. Cheap checks come first: the manifest's size is
    read from its UnixFS node before its bytes are."""
    from fabnode.node.local.files import cat_path
    from fabnode.node.local.sneakernet import dag_cids
    from fabnode.protocol.errors import InvalidBlock, InvalidCID
    from fabnode.protocol.okh import MAX_MANIFEST_BYTES
    from fabnode.protocol.unixfs import decode as decode_unixfs

    try:
        root = parse_cid(text)
    except (InvalidCID, FabnodeError):
        raise FabnodeError(f"cannot publish {text}: it is neither a folder nor a CID") from None
    shown = cid_str(root)
    if not store.has(root):
        raise FabnodeError(f"cannot publish {shown}: it is not held here (add the folder, import a CAR "
                           f"or 'fabnode get {shown}' first)")
    if cid_codec(root) == RAW:
        raise FabnodeError(f"cannot publish {shown}: it is a file, and a design is a folder (with an okh.toml)")
    try:
        node = decode_unixfs(root, store.get(root))
    except InvalidBlock as exc:
        raise FabnodeError(f"cannot publish {shown}: {exc}") from None
    if node.kind != "directory":
        raise FabnodeError(f"cannot publish {shown}: it is a {node.kind}, and a design is a folder (with an okh.toml)")
    if not dag_cids(store, root)[1]:
        raise FabnodeError(f"cannot publish {shown}: not all of its blocks are held here "
                           f"('fabnode get {shown}' fetches the rest)")
    tree = file_tree(store, root)
    if tree is None:
        raise FabnodeError(f"cannot publish {shown}: its file tree cannot be read (over {MAX_TREE_FILES} files?)")
    if "okh.toml" not in tree:
        raise FabnodeError(f"cannot publish {shown}: the folder has no okh.toml at its top (a published design "
                           "carries its Open Know-How manifest)")
    manifest_cid = tree["okh.toml"]
    size = len(store.get(manifest_cid)) if cid_codec(manifest_cid) == RAW else \
        decode_unixfs(manifest_cid, store.get(manifest_cid)).filesize
    if size > MAX_MANIFEST_BYTES:
        raise FabnodeError(f"cannot publish {shown}: its okh.toml is {size} bytes (at most {MAX_MANIFEST_BYTES >> 10} KiB)")
    try:
        manifest_text = b"".join(cat_path(store, root, ["okh.toml"])).decode("utf-8")
    except UnicodeDecodeError:
        raise FabnodeError(f"cannot publish {shown}: its okh.toml is not UTF-8 text") from None
    return root, manifest_text, set(tree)


def _translation_target(records: RecordStore, text: str, language: str | None,
                        design: str | None) -> tuple[VersionRow, bytes]:
    """The version ``--translation-of`` names, and its design; one line if it cannot be translated."""
    if language is None:
        raise FabnodeError("--translation-of needs --language: say which language the translation is in "
                           "(a BCP 47 tag such as sw, pt-BR or zh-Hant)")
    cid = parse_cid(text)
    target = records.version(cid)
    if target is None:
        kind = records.record_kind(cid)
        if kind is not None:
            raise FabnodeError(f"{cid_str(cid)} is a {kind} record, not a version: --translation-of names the version "
                               "whose documentation you translated (see 'fabnode log')")
        raise FabnodeError(f"unknown version {cid_str(cid)}: fetch, import or sync it first")
    if target.is_translation:
        raise FabnodeError(f"{cid_str(cid)} is itself a translation ({target.language}): translate the version it "
                           f"translates, {cid_str(target.translation_of)}")
    if design is not None and _resolve_design(records, design)[0] != target.design:
        raise FabnodeError(f"version {cid_str(cid)} belongs to design {cid_str(target.design)}, not {design}: "
                           "a translation is a version of the design it translates (leave out --design)")
    return target, target.design


def _declared_language(manifest: dict, language: str | None, warnings: list[str]) -> str | None:
    """The language to declare: ``--language``, else okh.toml's ``documentation-language``; a
    manifest that says otherwise than ``--language`` is warned about."""
    from fabnode.protocol.translations import BadLanguage, normalize_tag

    said = manifest.get("documentation-language")
    if isinstance(said, list):  # the schema allows several: the version declares the first
        said = next((tag for tag in said if isinstance(tag, str)), None)
    if not isinstance(said, str) or not said.strip():
        return language
    try:
        from_manifest = normalize_tag(said)
    except BadLanguage as exc:
        warnings.append(f"okh.toml: documentation-language: {exc}; not declared")
        return language
    if language is None:
        return from_manifest
    if from_manifest != language:
        warnings.append(f"okh.toml says documentation-language = {said!r} but --language is {language!r}: "
                        "the version declares " + repr(language) + " (fix one of them)")
    return language


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


def _reason(reason: str | None) -> str:
    from fabnode.protocol.retractions import check_reason

    try:
        return check_reason(reason)
    except ValueError as exc:
        raise FabnodeError(str(exc)) from None


def _not_a(records: RecordStore, subject: bytes, wanted: str, verb: str) -> FabnodeError:
    kind = records.record_kind(subject)
    if kind is not None:
        return FabnodeError(f"{cid_str(subject)} is a {kind}, not a{'n' if wanted[0] in 'aeiou' else ''} {wanted}: "
                            f"only a{'n' if wanted[0] in 'aeiou' else ''} {wanted} can be {verb}")
    return FabnodeError(f"no {wanted} {cid_str(subject)} is known here: only {wanted}s this node holds can be {verb}")


def retract(home: Home, version: str, *, reason: str | None) -> str:
    """Retract a version (issue 17): by its author or a maintainer of its design, with a reason.
    The version stays in the lineage, struck through, and is never a head again."""
    from fabnode.protocol.dagcbor import Link
    from fabnode.protocol.retractions import retraction_counts

    reason = _reason(reason)
    store, records = _open(home)
    subject = parse_cid(version)
    row = records.version(subject)
    if row is None:
        raise _not_a(records, subject, "version", "retracted")
    design = records.design(row.design)
    maintainers = design.maintainers if design else None
    me = home.identity().did
    ids = records.keys.identities()
    ts = now_ms()
    if not retraction_counts(takeback_speaker(ids, me, ts), speaker(ids, row.author, row.ts),
                             maintainer_identities(ids, maintainers)):
        raise FabnodeError(f"this lab ({me}) is neither the author of version {cid_str(subject)} nor a maintainer of"
                           " its design: a retraction by it would count nowhere")
    with store.write_transaction(final=True):
        record = _record(home, "retraction", {"subject": Link(subject), "reason": reason}, ts)
        records.ingest(record, received_ms=ts, outbox=True)
    _announce(home)
    return record.id


def withdraw(home: Home, attestation: str, *, reason: str | None) -> str:
    """Withdraw an attestation (issue 17): by its author only, with a reason. It stays listed,
    marked withdrawn, and reputation stops counting it."""
    from fabnode.protocol.dagcbor import Link
    from fabnode.protocol.retractions import withdrawal_counts

    reason = _reason(reason)
    store, records = _open(home)
    subject = parse_cid(attestation)
    row = records.attestation(subject)
    if row is None:
        raise _not_a(records, subject, "attestation", "withdrawn")
    me = home.identity().did
    ids = records.keys.identities()
    if not withdrawal_counts(takeback_speaker(ids, me, now_ms()), speaker(ids, row.author, row.ts)):
        raise FabnodeError(f"attestation {cid_str(subject)} was signed by {row.author}, not by this lab ({me}):"
                           " only its author can withdraw it")
    ts = now_ms()
    with store.write_transaction(final=True):
        record = _record(home, "withdrawal", {"subject": Link(subject), "reason": reason}, ts)
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
    signer = record_signer(records, record.cid, record.author, record.ts)
    trusted_as = signer.get("signed_for", record.author) if signer.get("mark") not in COUNTS_NOTHING else None
    return {"cid": record.id, "type": record.type, "author": record.author, "ts": record.ts,
            "body": {k: _link_json(v) for k, v in record.body.items()}, "valid": True,
            **_trust_fields(trust_map, trusted_as), **signer, **takeback_fields(records, record)}


def _takeback_json(t) -> dict:
    return {"record": cid_str(t.cid), "by": t.author, "ts": t.ts, "reason": t.reason}


def takeback_fields(records: RecordStore, record: "Record") -> dict:
    """What ``show`` adds about taking back (issue 17): for a version, ``retracted`` (the
    retraction that counts, or None) and ``retractions_ignored``; for an attestation,
    ``withdrawn`` and ``withdrawals_ignored``; for a retraction or withdrawal, ``counts`` (None
    while its subject is not here) and ``why``."""
    if record.type == "version":
        row = records.version(record.cid)
        design = records.design(row.design)
        counted, ignored = judged_retractions(records, [row], design.maintainers if design else None).get(
            record.cid, (None, []))
        return {"retracted": _takeback_json(counted) if counted else None,
                "retractions_ignored": [_takeback_json(t) for t in ignored]}
    if record.type == "attestation":
        row = records.attestation(record.cid)
        counted, ignored = judged_withdrawals(records, [row]).get(record.cid, (None, []))
        return {"withdrawn": _takeback_json(counted) if counted else None,
                "withdrawals_ignored": [_takeback_json(t) for t in ignored]}
    if record.type not in ("retraction", "withdrawal"):
        return {}
    from fabnode.protocol.retractions import retraction_counts, withdrawal_counts

    subject = record.body["subject"].cid
    if record.type == "retraction":
        row = records.version(subject)
        if row is None:
            return {"counts": None, "why": "its version is not here yet: it counts once the version arrives, "
                                          "if signed by its author or a maintainer"}
        design = records.design(row.design)
        ids = records.keys.identities()
        if retraction_counts(takeback_speaker(ids, record.author, record.ts), speaker(ids, row.author, row.ts),
                             maintainer_identities(ids, design.maintainers if design else None)):
            return {"counts": True, "why": "signed by the version's author or a maintainer of its design"}
        return {"counts": False, "why": "ignored: its author is not the version's author or a maintainer of its design"}
    row = records.attestation(subject)
    if row is None:
        return {"counts": None, "why": "its attestation is not here yet: it counts once the attestation arrives, "
                                      "if signed by its author"}
    ids = records.keys.identities()
    if withdrawal_counts(takeback_speaker(ids, record.author, record.ts), speaker(ids, row.author, row.ts)):
        return {"counts": True, "why": "signed by the attestation's author"}
    return {"counts": False, "why": "ignored: its author is not the attestation's author"}


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


def _not_withdrawn(records: RecordStore, rows) -> tuple[list, int]:
    """(the attestations still standing, how many were withdrawn by their authors)."""
    rows = list(rows)
    gone = {cid for cid, (counted, _) in judged_withdrawals(records, rows).items() if counted is not None}
    return [a for a in rows if a.cid not in gone], len(gone)


def _claims_by_trust(rows, trust_map) -> dict[str, dict[str, int]]:
    """Attestation counts per predicate/result, by trusted keys and by keys this node does not trust."""
    rows = list(rows)
    return {"trusted": _attestation_summary(a for a in rows if is_trusted(trust_map, a.author)),
            "untrusted": _attestation_summary(a for a in rows if not is_trusted(trust_map, a.author))}


def log(home: Home, target: str | None, limit: int = 50, trust_map=None, language: str | None = None) -> dict:
    """A design's history: versions (canonical or proposal, heads marked), attestation summaries,
    where it came from and which designs adapted it. Without a target: the latest versions.

    Each version says whether its author is trusted here (``author_trusted``) and counts its
    attestations apart by trusted and untrusted keys (``attestations_by_trust``); ``attestations``
    counts every one, whoever signed it. The trust graph is computed once (or given)."""
    store, records = _open(home)
    return history(records, home.identity().did, target, limit, trust_map, store=store, language=language)


def history(records: RecordStore, me: str, target: str | None, limit: int = 50, trust_map=None,
            store=None, language: str | None = None) -> dict:
    """:func:`log` over a record store, for lab ``me`` (the web pages use their own store).

    ``store`` (the block store) lets a stale translation say how many files changed since;
    ``language`` adds ``title_translated``: the design's title in that language, if a
    translation into it exists."""
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
    translations = translations_json(records, state, store)
    extra = {}
    if language is not None:
        chosen = pick_translation(records, state, language)
        if chosen is not None:
            extra["title_translated"] = chosen.title
    return {
        **extra,
        "design": cid_str(design),
        "title": row.title if row else "",
        "languages": languages_of(records, state),
        "translations": translations,
        "maintainers": list(state.maintainers) if state.maintainers is not None else None,
        "heads": [cid_str(h) for h in state.heads],
        "versions": [version_json(v, state, records, trust_map) for v in reversed(state.versions)],
        "upstream": [cid_str(u) for u in upstream],
        "adaptations": [{"design": cid_str(a.cid), "title": a.title, "author": a.author,
                         "author_trusted": is_trusted(trust_map, a.author), "from": [cid_str(p) for p in a.parents if p in own]}
                        for a in records.adaptations_of(own)],
    }


from fabnode.protocol.key_views import COUNTS_NOTHING  # noqa: E402  (beside the reading that uses it)


def version_json(v: VersionRow, state: DesignState | None, records: RecordStore, trust_map=None) -> dict:
    """One version as ``log`` and the web page show it; with ``trust_map`` (see
    :func:`trust_map_for`) also whether its author and attesters are trusted."""
    attestations, withdrawn = _not_withdrawn(records, records.attestations_on([v.cid]))
    if state is not None:
        counted, ignored = state.retractions.get(v.cid, (None, []))
    else:
        design = records.design(v.design)
        counted, ignored = judged_retractions(records, [v], design.maintainers if design else None).get(
            v.cid, (None, []))
    out = {"version": cid_str(v.cid), "design": cid_str(v.design), "author": v.author, "ts": v.ts,
           "title": v.title, "label": v.label, "message": v.message, "license": v.license,
           "bundle": cid_str(v.bundle), "parents": [cid_str(p) for p in v.parents],
           "attestations": _attestation_summary(attestations), "withdrawn_attestations": withdrawn,
           "retracted": _takeback_json(counted) if counted else None,
           "retractions_ignored": [_takeback_json(t) for t in ignored]}
    signer = record_signer(records, v.cid, v.author, v.ts)
    out.update(signer)
    if trust_map is not None:
        out["author_trusted"] = signer.get("mark") not in COUNTS_NOTHING and \
            is_trusted(trust_map, signer.get("signed_for", v.author))
        out["attestations_by_trust"] = _claims_by_trust(attestations, trust_map)
    if v.language is not None:
        out["language"] = v.language
    if v.translation_of is not None:
        out["translation_of"] = cid_str(v.translation_of)
    if state is not None:
        out["canonical"] = (v.cid in state.canonical if state.maintainers is not None else None) \
            if not v.is_translation else False
        out["head"] = v.cid in state.heads
    return out


# ------------------------------------------------------------------ translations (issue 19)


MAX_TREE_FILES = 20_000
"""A file tree larger than this is not compared (a stale translation says so instead)."""


def file_tree(store, root: bytes) -> dict[str, bytes] | None:
    """path -> CID of every file in a bundle held here whole, else None."""
    from fabnode.protocol.errors import MissingBlock
    from fabnode.protocol.unixfs import decode as decode_unixfs, directory_entries

    out: dict[str, bytes] = {}
    stack = [("", root)]
    try:
        while stack:
            prefix, cid = stack.pop()
            node = decode_unixfs(cid, store.get(cid))
            if node.kind == "directory":
                stack.extend((f"{prefix}{link.name}/", link.cid) for link in directory_entries(store.get, cid, node))
            else:
                out[prefix.rstrip("/")] = cid
            if len(out) > MAX_TREE_FILES:
                return None
    except (MissingBlock, FabnodeError):
        return None
    return out


def _version_name(row: VersionRow) -> str:
    return row.label or cid_str(row.cid)[-10:]


def staleness(records: RecordStore, state: DesignState, translation: VersionRow, store=None,
              trees: dict | None = None) -> dict | None:
    """How far the design moved since the version a translation translates: ``from`` and ``now``
    (labels, else short ids), ``changed`` (files added, removed or changed between the two
    bundles; None when either is not held here whole) and ``line``, the English sentence; None
    while the translated version is still a head (or no head is known)."""
    from fabnode.protocol.translations import files_changed

    if not state.heads or translation.translation_of in state.heads:
        return None
    original, head = records.version(translation.translation_of), records.version(state.heads[0])
    if original is None or head is None:
        return None
    line = f"translated from {_version_name(original)} — the design is now at {_version_name(head)}"
    trees = {} if trees is None else trees  # bundle -> file tree, shared by a design's translations

    def tree(bundle: bytes):
        if bundle not in trees:
            trees[bundle] = file_tree(store, bundle)
        return trees[bundle]

    before = tree(original.bundle) if store is not None else None
    after = tree(head.bundle) if store is not None and before is not None else None
    out = {"from": _version_name(original), "now": _version_name(head), "now_version": cid_str(head.cid),
           "changed": None}
    if before is None or after is None:
        missing = "the older" if before is None else "the newer"
        out["line"] = f"{line} (how many files changed is unknown: {missing} version's files are not held here)"
        return out
    out["changed"] = files_changed(before, after)
    out["line"] = f"{line}, {out['changed']} file(s) changed since"
    return out


def translations_json(records: RecordStore, state: DesignState, store=None) -> list[dict]:
    """The design's translations (those whose target fits), newest first, with staleness."""
    out, trees = [], {}
    for t in reversed(records.translations_of_design(state.design)):
        original = records.version(t.translation_of)
        out.append({"version": cid_str(t.cid), "language": t.language, "translation_of": cid_str(t.translation_of),
                    "of_label": original.label if original else "", "title": t.title, "author": t.author, "ts": t.ts,
                    "bundle": cid_str(t.bundle), **_stale_fields(staleness(records, state, t, store, trees))})
    return out


def _stale_fields(stale: dict | None) -> dict:
    """``stale``: the English line (None: up to date); ``staleness``: its parts, for pages."""
    return {"stale": stale["line"] if stale else None, "staleness": stale}


def languages_of(records: RecordStore, state: DesignState) -> list[str]:
    """The languages a design is available in: its newest head's declared language, then those
    of its translations, each once, sorted."""
    found = set()
    if state.heads:
        head = records.version(state.heads[0])
        if head is not None and head.language:
            found.add(head.language)
    found.update(t.language for t in records.translations_of_design(state.design) if t.language)
    return sorted(found)


def pick_translation(records: RecordStore, state: DesignState, asked: str) -> VersionRow | None:
    """The newest translation of the design into ``asked`` (the same tag preferred to the same
    language), or None: none exists, or the design's head is already in that language."""
    from fabnode.protocol.translations import matches

    if state.heads:
        head = records.version(state.heads[0])
        if head is not None and matches(asked, head.language) == 2:
            return None
    best = None
    for t in records.translations_of_design(state.design):  # oldest first: later ones win ties
        score = matches(asked, t.language)
        if score and (best is None or score >= best[0]):
            best = (score, t)
    if best is None and state.heads:
        head = records.version(state.heads[0])
        if head is not None and matches(asked, head.language):
            return None
    return best[1] if best else None


def _design_json(d) -> dict:
    return {"design": cid_str(d.design), "title": d.title, "author": d.author, "license": d.license,
            "versions": d.versions, "updated_ts": d.updated_ts}


def list_designs(records: RecordStore, limit: int = 100, language: str | None = None) -> list[dict]:
    """The designs known here, most recently updated first; with ``language``, each title in
    that language where a translation into it exists (``title_original`` keeps the design's)."""
    out = [_design_json(d) for d in records.designs(limit)]
    if language is not None:
        for d in out:
            chosen = pick_translation(records, design_state(records, parse_cid(d["design"])), language)
            if chosen is not None:
                d["title_original"], d["title"] = d["title"], chosen.title
    return out


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
    command or page and handed to :func:`version_json` and the rows. Issue 17: computed over
    identities (protocol/key_views.py), and looked up by any key of one: the map is an
    IdentityTrust, whose ``conflicts`` are the identities trusted nowhere."""
    trust_map, _ = _trust_and_vouches(me, records)
    return me, trust_map


def _trust_and_vouches(me: str, records: RecordStore):
    """(the IdentityTrust, the vouches as identities said them)."""
    from fabnode.protocol.key_views import trust_through

    ids = records.keys.identities()
    return trust_through(ids, me, (), _vouches_with_arrival(records, ids), records.revocations_learned())


def _vouches_with_arrival(records: RecordStore, ids) -> list:
    """(vouch, when this node got it) for every vouch (the rows serve as Vouches: same fields);
    the arrival time is looked up only for vouches by a revoked key dated before its cutoff, the
    only ones it matters for (revoked-later or doubtful)."""
    rows = records.vouches()
    cutoffs = ids.revoked_keys()
    if not cutoffs:
        return [(v, None) for v in rows]
    revoked = [v.cid for v in rows if v.ts <= cutoffs.get(v.author, -1)]
    received = records.received_at(revoked) if revoked else {}
    return [(v, received.get(v.cid)) for v in rows]


def signer_json(records: RecordStore, key: str, ts: int, received_ms: int | None, learned=None) -> dict:
    """Who signed for which identity (issue 17), as the pages and ``log``/``show`` say it:
    ``signed_for`` (the identity, when not the key itself), ``signed_as`` ("rotated": a later or
    earlier key of the identity's chain; "member": a person the lab delegated to), ``mark`` and
    ``mark_reason`` (protocol/key_views.py: revoked-later, doubtful, conflict, refused)."""
    from fabnode.protocol.key_views import signer_of

    ids = records.keys.identities()
    signer = signer_of(ids, key, ts, received_ms, records.revocations_learned() if learned is None else learned)
    out: dict = {}
    identity = signer.identity if signer.identity is not None else ids.identity_of(key)
    if identity != key:
        out["signed_for"] = identity
        out["signed_as"] = "rotated" if ids.identity_of(key) == identity else "member"
    if signer.mark is not None:
        out["mark"] = signer.mark
        out["mark_reason"] = signer.reason
    return out


def record_signer(records: RecordStore, cid: bytes, key: str, ts: int) -> dict:
    """:func:`signer_json` for a stored record (its arrival time looked up only when it matters)."""
    ids = records.keys.identities()
    if ids.standing(key, ts).kind == "ok" and ids.speaks_for(key, ts) == key:
        return {}  # the common case: a key that is its own identity, in good standing
    return signer_json(records, key, ts, records.received_at([cid]).get(cid))


def trust(home: Home) -> dict:
    """Whom this lab trusts: its own vouches, and every identity trust reaches, strongest first.
    Issue 17: each identity with its current key; identities trusted nowhere (a forked chain)
    in ``conflicts`` with why."""
    _, records = _open(home)
    me = home.identity().did
    ids = records.keys.identities()
    trust_map, _ = _trust_and_vouches(me, records)
    me_identity = ids.identity_of(me)
    mine = {}
    for v in records.vouches():
        if ids.speaks_for(v.author, v.ts) == me_identity and (v.subject not in mine or v.ts >= mine[v.subject]["ts"]):
            mine[v.subject] = {"subject": v.subject, "trust": v.trust, "ts": v.ts, "vouch": cid_str(v.cid),
                               **({"subject_identity": ids.identity_of(v.subject)}
                                  if ids.identity_of(v.subject) != v.subject else {})}
    keys = sorted(dict.items(trust_map), key=lambda kv: (-kv[1].weight, kv[0]))
    trusted = []
    for did, p in keys:
        entry = {"did": did, "weight": round(p.weight, 6), "path": list(p.path)}
        current = ids.current_key(did)
        if current is not None and current != did:
            entry["current_key"] = current
            entry["keys"] = [link.key for link in ids.chain(did)]
        trusted.append(entry)
    return {
        "me": me,
        **({"me_identity": me_identity} if me_identity != me else {}),
        "vouches": sorted(mine.values(), key=lambda v: v["subject"]),
        "trusted": trusted,
        "conflicts": [{"identity": i, "reason": why} for i, why in sorted(trust_map.conflicts.items())],
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


def score(records: RecordStore, me: str, target: str, trust_map=None, label=None, declared=None, **language) -> dict:
    """:func:`reputation` over a record store, for lab ``me`` (the web pages use their own store,
    and ``language``: explain's ``gettext``, ``word`` and ``trust_text`` for the page's language)."""
    from fabnode.protocol.key_views import signer_of
    from fabnode.protocol.reputation import Attestation, distrusted_keys, explain, score_version

    design, version = _resolve_design(records, target)
    state = design_state(records, design)
    if version is None:
        if not state.heads:
            if any(counted is not None for counted, _ in state.retractions.values()):
                raise FabnodeError(f"design {cid_str(design)} has no canonical version left to judge: "
                                   "its maintainers retracted every one ('fabnode log' shows why)")
            raise FabnodeError(f"design {cid_str(design)} has no known canonical version to judge")
        version = state.heads[0]
    if trust_map is None:
        _, trust_map = trust_map_for(me, records)
    rows = records.attestations_on([version])
    withdrawals = judged_withdrawals(records, rows)
    ids = records.keys.identities()
    learned = records.revocations_learned()
    revoked = [a.cid for a in rows if ids.standing(a.author, a.ts).kind == "revoked"]
    received = records.received_at(revoked) if revoked else {}

    def withdrawn(a) -> str | None:
        counted = withdrawals.get(a.cid, (None, []))[0]
        return counted.reason if counted is not None else None

    def attestation(a) -> Attestation:
        signer = signer_of(ids, a.author, a.ts, received.get(a.cid), learned)
        return Attestation(cid_str(a.cid), a.author, a.predicate, a.result, a.lab, a.ts, withdrawn(a),
                           identity=signer.identity, mark=signer.mark, mark_reason=signer.reason)

    result = score_version((attestation(a) for a in rows), trust_map)
    row = records.version(version)
    retracted = state.retractions.get(version, (None, []))[0] if row is not None and row.design == design else None
    return {
        "version": cid_str(version),
        "design": cid_str(design),
        "retracted": _takeback_json(retracted) if retracted else None,
        "value": round(result.value, 6),
        "verdict": result.verdict,
        "reasons": [{"attestation": r.cid, "lab": r.lab, "author": r.author, "predicate": r.predicate,
                     "result": r.result, "weight": round(r.weight, 6), "trust": round(r.trust, 6),
                     "path": list(r.path), "status": r.status,
                     **({"withdrawn": r.withdrawn} if r.withdrawn is not None else {}),
                     **({"signed_for": r.identity, "signed_as": "rotated" if ids.identity_of(r.author) == r.identity
                         else "member"} if r.identity is not None else {}),
                     **({"mark": r.mark, "mark_reason": r.mark_reason} if r.mark is not None else {})}
                    for r in result.reasons],
        # the vouches are mapped to identities already: a plain dict's lookups will do (and are faster)
        "explanation": explain(result, distrusted_keys(ids.identity_of(me), dict(trust_map),
                                                       _mapped_vouches(records, ids, learned, trust_map)),
                               **({"label": label, "declared": declared} if label else {}),
                               signed_as=lambda key, identity: ("rotated" if ids.identity_of(key) == identity
                                                                else "member"),
                               **language),
    }


def _mapped_vouches(records: RecordStore, ids, learned, trust_map=None):
    """The vouches as identities said them: those the trust map was computed from, if it kept them."""
    from fabnode.protocol.key_views import vouches_through

    kept = getattr(trust_map, "vouches", None)
    if kept is not None and getattr(trust_map, "identities", None) is ids:
        return kept
    return vouches_through(ids, _vouches_with_arrival(records, ids), learned)


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
        self.refused_by_chain: list[tuple[str, str]] = []
        """Valid records their author's chain of keys refuses (protocol/keys.py): not stored, and
        not the sender's fault either (it may not know the chain yet)."""

    def as_json(self) -> dict:
        return {"new": self.new, "known": self.known,
                "rejected": [{"record": r, "reason": why} for r, why in self.rejected],
                **({"refused_by_chain": [{"record": r, "reason": why} for r, why in self.refused_by_chain]}
                   if self.refused_by_chain else {})}


def translation_problem_in(records: RecordStore, record: "Record", batch: dict | None = None) -> str | None:
    """Why a version record's ``translation_of`` cannot stand, given what is held here (and in
    the same ``batch``, cid -> Record), or None (no link, a fitting target, or none held yet)."""
    from fabnode.protocol.translations import translation_problem

    if record.type != "version" or "translation_of" not in record.body:
        return None
    target = record.body["translation_of"].cid
    design = record.body["design"].cid
    row = records.version(target)
    if row is not None:
        return translation_problem(design, "version", row.design, row.is_translation)
    other = (batch or {}).get(target)
    if other is not None:
        if other.type != "version":
            return translation_problem(design, other.type, None, False)
        return translation_problem(design, "version", other.body["design"].cid if "design" in other.body else other.cid,
                                   "translation_of" in other.body)
    return translation_problem(design, records.record_kind(target), None, False)


def _refuse_misplaced_translations(records: RecordStore, valid: list, result: "Received") -> None:
    """Move translations whose target is held and does not fit from ``valid`` to the rejected."""
    batch = {r.cid: r for r in valid}
    keep = []
    for record in valid:
        problem = translation_problem_in(records, record, batch)
        if problem is None:
            keep.append(record)
        else:
            result.rejected.append((record.id, f"record rejected: {problem}"))
    valid[:] = keep


TAKEBACK_SUBJECTS = {"retraction": "version", "withdrawal": "attestation"}
"""What each kind of taking back may name as its subject (issue 17)."""


def _refuse_misaimed_takebacks(records: RecordStore, valid: list, result: "Received") -> None:
    """Move retractions whose subject is held (here or in the batch) and is not a version, and
    withdrawals whose subject is not an attestation, from ``valid`` to the rejected. A subject
    not held yet is no reason: it may arrive later (and if it is not a version then, the
    retraction simply takes no effect)."""
    batch = {r.cid: r.type for r in valid}
    keep = []
    for record in valid:
        wanted = TAKEBACK_SUBJECTS.get(record.type)
        if wanted is not None:
            subject = record.body["subject"].cid
            kind = batch.get(subject) or records.record_kind(subject)
            if kind is not None and kind != wanted:
                result.rejected.append((record.id, f"record rejected: a {record.type}'s subject must be a{'n' if wanted[0] in 'aeiou' else ''}"
                                                   f" {wanted}, and {cid_str(subject)} is a {kind}"))
                continue
        keep.append(record)
    valid[:] = keep


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
    from fabnode.protocol.keys import KEY_RECORD_TYPES, ChainRefused

    result = Received()
    valid = []
    outcomes = verified if verified is not None and len(verified) == len(blocks) else verify_blocks(blocks, now)
    for position, ((cid, _), outcome) in enumerate(zip(blocks, outcomes)):
        if isinstance(outcome, str):
            result.rejected.append((cid_str(cid) if cid is not None else f"record #{position + 1}", outcome))
        else:
            valid.append(outcome)
    _refuse_misplaced_translations(records, valid, result)
    _refuse_misaimed_takebacks(records, valid, result)
    if result.rejected and all_or_nothing:
        return result
    # key records first: a succession in the batch refuses its old key's later records before
    # they are stored, and the chains are settled once, at the end (storage/keys.py)
    valid.sort(key=lambda r: r.type not in KEY_RECORD_TYPES)
    with records.batch():
        for record in valid:
            if records.is_evicted(record.cid):  # evicted over the strangers' quota: not again
                result.known.append(record.id)
                continue
            if quota is not None and not records.has(record.cid):
                reason = quota.admit(record.author, peer, now, len(record.raw))
                if reason is not None:
                    result.over_quota.append((record.id, reason))
                    continue
            try:
                stored = records.ingest(record, received_ms=now)
            except ChainRefused as exc:
                result.refused_by_chain.append((record.id, str(exc)))
                continue
            if stored:
                result.new.append(record.id)
            else:
                result.known.append(record.id)
    if quota is not None and result.new:
        quota.enforce_storage(now)
    return result
