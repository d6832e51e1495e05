"""Names for Ed25519 public keys: did:key for authors, libp2p peer IDs for nodes.

Pure encodings, so the command line can show identities without importing libp2p. A test checks
:func:`peer_id_from_ed25519` against libp2p's own ``ID.from_pubkey``.
"""

from __future__ import annotations

from functools import lru_cache

from .errors import FabnodeError

_ED25519_MULTICODEC = b"\xed\x01"
DID_KEY_PREFIX = "did:key:z"
ED25519_DID_LENGTH = 56
"""Every Ed25519 did:key is exactly this long ("did:key:z6Mk" and 44 more characters): checked
before any decoding, since base58 decoding is quadratic in its length (issue 12: a 60,000-character
author took 0.73 s to decode)."""
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {ch: i for i, ch in enumerate(_B58)}


def _b58encode(data: bytes) -> str:
    """Bitcoin base58 (the multibase ``z`` alphabet); small and hot enough to write here."""
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58[r])
    leading = len(data) - len(data.lstrip(b"\0"))
    return "1" * leading + "".join(reversed(out))


def _b58decode(text: str) -> bytes:
    n = 0
    for ch in text:
        digit = _B58_INDEX.get(ch)
        if digit is None:
            raise ValueError(f"{ch!r} is not a base58 character")
        n = n * 58 + digit
    leading = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * leading + body


def did_from_ed25519(public_key: bytes) -> str:
    """``did:key:z6Mk…``: base58btc of the ed25519-pub multicodec and the 32-byte key."""
    if len(public_key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return DID_KEY_PREFIX + _b58encode(_ED25519_MULTICODEC + public_key)


@lru_cache(maxsize=65536)
def ed25519_from_did(did: str) -> bytes:
    """The public key inside a did:key, with the prefix and length checks of the spec."""
    if not did.startswith(DID_KEY_PREFIX):
        raise FabnodeError(f"not an Ed25519 did:key: {did[:60]!r} (it must start with 'did:key:z6Mk')")
    if len(did) != ED25519_DID_LENGTH:
        raise FabnodeError(f"not an Ed25519 did:key: it is {len(did)} characters long, not {ED25519_DID_LENGTH}")
    try:
        raw = _b58decode(did[len(DID_KEY_PREFIX):])
    except Exception:
        raise FabnodeError(f"not a did:key: {did[:60]!r} is not valid base58btc") from None
    if len(raw) != 34 or raw[:2] != _ED25519_MULTICODEC:
        raise FabnodeError(f"not an Ed25519 did:key: {did[:60]!r} does not hold 0xed01 + 32 bytes")
    return raw[2:]


def peer_id_from_ed25519(public_key: bytes) -> str:
    """The libp2p peer ID: identity multihash of the protobuf PublicKey {Type: Ed25519, Data}."""
    if len(public_key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    protobuf = b"\x08\x01\x12\x20" + public_key
    return _b58encode(b"\x00" + bytes([len(protobuf)]) + protobuf)
