"""What the version page shows of each attestation besides its result: notes, tests and
evidence (issue 15), and the marks that keep results apart wherever they are drawn.

An attestation's body (protocol/records.py) may carry ``notes`` (text), ``tests`` (names) and
``evidence`` (links to files the attesting lab stored: photos, logs, measurements). The record
holds links only, no file names, so a piece of evidence is shown as a picture when this node
holds it and its first bytes are a PNG, JPEG, GIF or WebP signature, else as a named link
("evidence 2, 14.2 KiB"). Pictures are read only for attestations by keys this node trusts,
and at most :data:`MAX_PICTURES_CHECKED` per page: a flood of strangers' attestations, each
linking 256 files, costs the page neither reads nor space.
"""

from __future__ import annotations

from fabnode.protocol.cid import cid_str
from fabnode.protocol.dagcbor import Link, decode as decode_cbor
from fabnode.protocol.errors import FabnodeError, human_size
from fabnode.protocol.unixfs import decode as decode_unixfs, iter_file

RESULT_MARKS = {"passed": "✓", "warned": "⚠", "failed": "✗"}
"""A result's sign, shown with its word: results are told apart by text, not colour alone."""
RESULT_COLOURS = {"passed": "#1c7c3c", "warned": "#7a5300", "failed": "#8a1f1f"}
PREDICATE_ORDER = ("built", "tested", "reviewed", "defect")
RESULT_ORDER = ("passed", "warned", "failed")
MAX_PICTURES_CHECKED = 48
"""Evidence files whose first block a page reads to tell whether they are pictures."""
MAX_EVIDENCE_LISTED = 24
"""Evidence links listed per attestation; the rest are counted."""

_PICTURE_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
                       (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"))


def picture_type(first_bytes: bytes) -> str | None:
    """The raster picture type these leading bytes announce, or None (never SVG: it can script)."""
    for signature, media in _PICTURE_SIGNATURES:
        if first_bytes.startswith(signature):
            return media
    if first_bytes[:4] == b"RIFF" and first_bytes[8:12] == b"WEBP":
        return "image/webp"
    return None


def claim_order(key: str) -> tuple[int, int, str]:
    """Sort key of ``predicate/result``: built before tested, passed before warned before failed."""
    predicate, _, result = key.partition("/")
    return (PREDICATE_ORDER.index(predicate) if predicate in PREDICATE_ORDER else len(PREDICATE_ORDER),
            RESULT_ORDER.index(result) if result in RESULT_ORDER else len(RESULT_ORDER), key)


def attestation_body(records, cid: bytes) -> dict:
    """The stored attestation's body (it was verified when it arrived), or {} if unreadable."""
    from fabnode.protocol.records import check_body

    raw = records.raw(cid)
    try:
        value = decode_cbor(raw) if raw is not None else None
        return check_body("attestation", value["author"], value["body"]) if isinstance(value, dict) else {}
    except (FabnodeError, KeyError, TypeError):
        return {}


class EvidenceReader:
    """Describes evidence links for one page, within the page's budget of picture checks."""

    def __init__(self, store) -> None:
        self.store = store
        self.checks_left = MAX_PICTURES_CHECKED

    def describe(self, number: int, cid: bytes, look: bool) -> dict:
        """``{"cid", "name", "held", "picture", "size"}`` for the ``number``-th piece of evidence;
        ``look``: whether its bytes may be read to find a picture (trusted authors only)."""
        text = cid_str(cid)
        out = {"cid": text, "name": f"evidence {number}", "held": False, "picture": False, "size": "",
               "number": number, "folder": False, "bytes": None}
        try:
            if not self.store.has(cid):
                return out
            out["held"] = True
            node = decode_unixfs(cid, self.store.get(cid))
            if node.kind != "file":
                out["name"] += " (a folder)"
                out["folder"] = True
                return out
            out["size"], out["bytes"] = human_size(node.filesize), node.filesize
            if look and self.checks_left > 0 and node.filesize > 0:
                self.checks_left -= 1
                first = next(iter_file(self.store.get, cid), b"")
                out["picture"] = picture_type(first[:16]) is not None
        except FabnodeError:  # a leaf not held, a damaged block: a plain link, the gateway says why
            pass
        return out


def attestation_details(records, evidence: EvidenceReader, cid: bytes, trusted: bool) -> dict:
    """Notes, tests and described evidence of the attestation ``cid``."""
    body = attestation_body(records, cid)
    notes = body.get("notes") if isinstance(body.get("notes"), str) else ""
    tests = [t for t in body.get("tests", []) if isinstance(t, str)] if isinstance(body.get("tests"), list) else []
    links = [x.cid for x in body.get("evidence", []) if isinstance(x, Link)] if isinstance(body.get("evidence"), list) else []
    shown = [evidence.describe(i + 1, link, trusted) for i, link in enumerate(links[:MAX_EVIDENCE_LISTED])]
    return {"notes": notes, "tests": tests, "evidence": shown, "evidence_more": max(0, len(links) - MAX_EVIDENCE_LISTED)}
