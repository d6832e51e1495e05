"""CIDs as fabnode uses them: CIDv1, sha2-256, printed in lower-case base32.

Internally a CID is its binary form (``bytes``), which is what the store keys on and what
dag-pb links carry; :func:`cid_str` and :func:`parse_cid` convert at the edges. Parsing user or
peer input goes through the ``multiformats`` library so every multibase and CIDv0 is understood,
then is narrowed to what fabnode accepts.
"""

from __future__ import annotations

import base64
import hashlib

from .errors import InvalidCID

RAW = 0x55
DAG_PB = 0x70
DAG_CBOR = 0x71
SHA2_256 = 0x12

CODEC_NAMES = {RAW: "raw", DAG_PB: "dag-pb", DAG_CBOR: "dag-cbor"}

_PREFIX = {codec: bytes([0x01, codec, SHA2_256, 32]) for codec in CODEC_NAMES}
# Every accepted CID is 1 (version) + 1 (codec < 0x80) + 1 (sha2-256) + 1 (32) + 32 bytes.
CID_LENGTH = 36


def make_cid(codec: int, data: bytes | memoryview) -> bytes:
    """The binary CIDv1 of ``data`` under ``codec`` with a sha2-256 multihash."""
    return _PREFIX[codec] + hashlib.sha256(data).digest()


def cid_codec(cid: bytes) -> int:
    """The codec of a binary CID that :func:`check_cid_bytes` accepted."""
    return cid[1]


def block_matches(cid: bytes, data: bytes | memoryview) -> bool:
    """Whether ``data`` hashes to ``cid``: the only way a block becomes trusted."""
    return hashlib.sha256(data).digest() == cid[4:]


def cid_str(cid: bytes) -> str:
    """The canonical text form: multibase ``b`` + lower-case unpadded base32."""
    return "b" + base64.b32encode(cid).decode("ascii").lower().rstrip("=")


def check_cid_bytes(cid: bytes) -> bytes:
    """Accept a binary CID only if it is a CIDv1 fabnode can verify (sha2-256, known codec)."""
    if len(cid) != CID_LENGTH or cid[0] != 0x01:
        raise InvalidCID(f"unsupported CID bytes {cid[:8].hex()}…: only CIDv1 with sha2-256 is accepted")
    if cid[1] not in CODEC_NAMES:
        raise InvalidCID(f"CID {cid_str(cid)} uses codec 0x{cid[1]:x}; fabnode stores only raw, dag-pb and dag-cbor")
    if cid[2] != SHA2_256 or cid[3] != 32:
        raise InvalidCID(f"CID {cid_str(cid)} does not use a sha2-256 multihash")
    return cid


MAX_CID_TEXT = 320
"""Longest CID text accepted: a 36-byte CID is 59 characters in base32 and 289 even in base2."""


def parse_cid(text: str) -> bytes:
    """Parse a CID in any multibase (or CIDv0 ``Qm…``) into fabnode's binary CIDv1.

    Raises :class:`InvalidCID` with a one-line reason for anything else.
    """
    shown = text if len(text) <= 80 else text[:77] + "..."
    if len(text) > MAX_CID_TEXT:  # before any decoding: base58 decoding is quadratic in its length
        raise InvalidCID(f"not a valid CID: {shown!r} is {len(text)} characters long (at most {MAX_CID_TEXT})")
    if text.startswith("b") and text == text.lower() and len(text) == 59:
        # fabnode's own form (CIDv1, 36 bytes, base32): decoded here without importing the
        # multiformats tables (~80 ms), since every command line call parses one.
        try:
            raw = base64.b32decode(text[1:].upper() + "=" * (-(len(text) - 1) % 8))
        except ValueError:
            raw = b""
        if raw and cid_str(raw) == text and raw[0] == 0x01 and raw[1] < 0x80 and raw[2:4] == b"\x12\x20":
            if raw[1] not in CODEC_NAMES:
                raise InvalidCID(f"CID {shown} uses codec 0x{raw[1]:x}; fabnode stores only raw, dag-pb and dag-cbor")
            return raw
    from multiformats import CID  # any other multibase, CIDv0, or an error worth explaining

    try:
        cid = CID.decode(text)
    except Exception as exc:  # the library raises many kinds; all mean "not a CID"
        raise InvalidCID(f"not a valid CID: {shown!r} ({exc})") from None
    if cid.hashfun.code != SHA2_256 or len(cid.raw_digest) != 32:
        raise InvalidCID(f"CID {shown} uses hash {cid.hashfun.name}; fabnode verifies only sha2-256")
    if cid.codec.code not in CODEC_NAMES:
        raise InvalidCID(f"CID {shown} uses codec {cid.codec.name}; fabnode stores only raw, dag-pb and dag-cbor")
    return _PREFIX[cid.codec.code] + bytes(cid.raw_digest)


def parse_cid_path(text: str) -> tuple[bytes, list[str]]:
    """Split ``CID[/a/b]`` (optionally prefixed ``/ipfs/``) into the CID and path segments.

    Empty segments from doubled or trailing slashes are dropped; ``.``/``..`` are refused
    because a content path never climbs.
    """
    rest = text
    if rest.startswith("/ipfs/"):
        rest = rest[len("/ipfs/"):]
    head, _, tail = rest.partition("/")
    if not head:
        raise InvalidCID(f"not a valid CID: {text!r} (empty)")
    segments = [s for s in tail.split("/") if s]
    for seg in segments:
        if seg in (".", ".."):
            raise InvalidCID(f"path {text!r} contains {seg!r}; content paths never climb")
    return parse_cid(head), segments
