"""Labs by name: the ``lab`` record's rules and the one way a lab is shown (issue 15).

A ``lab`` record (docs/protocol.md §4.4) is what a lab says about itself: its ``name`` and the
``nodes`` (libp2p peer IDs) that run for it. The newest one by its author's key wins (by ``ts``,
ties by record id). Each node entry carries a signature by that node's own key over
:func:`node_tie_statement` (which names the lab's did:key), so a lab cannot claim another lab's
node, and a node's signature made for one lab cannot be copied into another lab's record.

Every command and page shows a lab with :func:`lab_label`: the operator's own local name for the
key as is, else the name the lab declares with :data:`UNVERIFIED` after it, else the key
abbreviated by :func:`short_key` (the only abbreviation of a did:key or peer ID anywhere).

Pure: no storage, clock or network.
"""

from __future__ import annotations

import unicodedata

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


def check_name(name: object, what: str = "name") -> str:
    """The name if it is safe to print in a terminal line or a page, else :class:`NameRefused`.

    Refused rather than cleaned: control characters (newlines, escapes), bidi overrides and
    other invisible format characters, line separators, leading or trailing spaces, empty names
    and names over :data:`MAX_NAME` characters. A signed name that would need cleaning would show
    differently from what was signed."""
    if not isinstance(name, str):
        raise NameRefused(f"{what} must be text, not {type(name).__name__}")
    if not name.strip():
        raise NameRefused(f"{what} is empty")
    if len(name) > MAX_NAME:
        raise NameRefused(f"{what} is {len(name)} characters long (at most {MAX_NAME})")
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
