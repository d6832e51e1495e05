"""What a person may name when asking for files, and which DAG that means (issue 15).

People see version CIDs (``publish`` prints one, ``log`` lists them) and design ids (a design is
named by its first version's CID), not the bundle CIDs inside version records. So ``get``, ``ls``,
``cat``, ``export --bundle`` and the gateway take any of:

* a **design id** — the files of the design's newest canonical head (the version ``log`` marks
  ``head`` and ``reputation`` judges). A design id is also its first version's CID: the design
  wins, since that is what ``publish`` printed and what the design is known by; the first
  version's own files stay reachable by the files CID ``log`` prints;
* a **version CID** — that version's files (its bundle);
* a **files CID** (a bundle, or any UnixFS file or folder) — itself, as before;

each optionally followed by ``/a/path`` inside the files. A DAG-CBOR CID that is no record known
here cannot be files either: the answer says so and what to do (sync or import the records),
rather than "no peer has it". Only records decide; no block is read here.
"""

from __future__ import annotations

from typing import NamedTuple

from fabnode.protocol.cid import DAG_CBOR, cid_codec, cid_str, parse_cid_path
from fabnode.protocol.errors import FabnodeError
from fabnode.storage.records import RecordStore

DESIGN = "design"
VERSION = "version"
FILES = "files"


class Resolved(NamedTuple):
    """The files a user's ``CID[/PATH]`` names."""

    root: bytes
    """The root of the files' DAG (a bundle, or the files CID given)."""
    segments: list[str]
    """The path inside it."""
    named: str
    """What the CID given was: :data:`DESIGN`, :data:`VERSION` or :data:`FILES`."""
    given: bytes
    """The CID as given (a design id, a version CID, or ``root`` itself)."""
    version: bytes | None
    """The version whose files these are (None for a files CID)."""

    @property
    def path_text(self) -> str:
        """``BUNDLE[/PATH]``: what the block-level commands and the daemon are handed."""
        return cid_str(self.root) + "".join("/" + s for s in self.segments)


class NotFiles(FabnodeError):
    """A CID that names records, not files, or a version or design this node does not know."""


def resolve_files(records: RecordStore, text: str, *, held=lambda cid: False, language: str | None = None,
                  strict_language: bool = True) -> Resolved:
    """Which files ``text`` (``CID[/PATH]``) means; ``held(cid)``: is that block in the store
    (a DAG-CBOR block held as a block is taken as it is).

    ``language`` (a BCP 47 tag) asks, for a design id, for the newest translation into it
    (issue 19); when there is none, ``strict_language`` refuses in one line naming the languages
    that exist, else the design's head is meant (a ``LANG`` preference, not a demand). A version
    or files CID names exact files: the language does not change them."""
    cid, segments = parse_cid_path(text)
    version = records.version(cid)
    if version is not None and not version.is_first:
        return Resolved(version.bundle, segments, VERSION, cid, cid)
    if version is not None or records.design(cid) is not None:
        if language is not None:
            chosen = translation_for(records, cid, language, strict_language)
            if chosen is not None:
                return Resolved(chosen.bundle, segments, DESIGN, cid, chosen.cid)
        head = newest_head(records, cid)
        return Resolved(records.version(head).bundle, segments, DESIGN, cid, head)
    if cid_codec(cid) != DAG_CBOR or held(cid):
        return Resolved(cid, segments, FILES, cid, None)
    kind = record_type(records, cid)
    if kind is not None:
        article = "an" if kind[0] in "aeiou" else "a"
        raise NotFiles(f"{cid_str(cid)} is {article} {kind} record, not files: name a version, a design or a "
                       "files CID (see 'fabnode log')")
    raise NotFiles(f"no version or design {cid_str(cid)} is known here: sync with a peer that has it "
                   "('fabnode run'), or import an export that holds its records, then try again")


def translation_for(records: RecordStore, design: bytes, language: str, strict: bool = True):
    """The newest translation of ``design`` into ``language`` (a VersionRow), or None when the
    design's head is already in that language; with none and ``strict``, one line naming the
    languages the design exists in."""
    from fabnode.node.local.commons import design_state, languages_of, pick_translation
    from fabnode.protocol.translations import matches

    state = design_state(records, design)
    chosen = pick_translation(records, state, language)
    if chosen is not None or not strict:
        return chosen
    head = records.version(state.heads[0]) if state.heads else None
    if head is not None and matches(language, head.language):
        return None
    known = languages_of(records, state)
    undeclared = "" if head is None or head.language else " (the design's own language is not declared)"
    raise NotFiles(f"design {cid_str(design)} has no translation into {language}: it exists in "
                   f"{', '.join(known) if known else 'no declared language'}{undeclared}")


def newest_head(records: RecordStore, design: bytes) -> bytes:
    """The design's newest canonical head (what ``log`` marks ``head`` first)."""
    from fabnode.node.local.commons import design_state

    state = design_state(records, design)
    if not state.heads:
        raise NotFiles(f"design {cid_str(design)} has no canonical version known here (its first version, which "
                       "names its maintainers, has not arrived): sync or import it, or name a version CID")
    return state.heads[0]


def record_type(records: RecordStore, cid: bytes) -> str | None:
    """The type of a stored record that is not a version (attestation, vouch…), or None."""
    raw = records.raw(cid)
    if raw is None:
        return None
    from fabnode.protocol.dagcbor import decode

    try:
        value = decode(raw)
    except FabnodeError:
        return "unreadable"
    kind = value.get("type") if isinstance(value, dict) else None
    return kind if isinstance(kind, str) and kind.isalpha() else "unknown"


def require_held(files: Resolved, text: str, has) -> None:
    """For reading commands (``ls``, ``cat``): a version's or design's files that are not here at
    all are said to be so, with how to get them, rather than as a missing block."""
    if files.named != FILES and not has(files.root):
        raise FabnodeError(f"the files of {cid_str(files.given)} ({cid_str(files.root)}) are not held here: "
                           f"fetch them with 'fabnode get {text}' (through the daemon or --peer)")
