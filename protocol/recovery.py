"""Recovery keys (issue 17): the printable form of a lab's recovery key, and its commitment.

A recovery key is an Ed25519 key distinct from the author key, kept on paper rather than on the
node, so that a lab whose laptop is stolen can still say which new key speaks for it
(its revocation records, issue 17). Its 32-byte seed is written as 24 BIP39 English words (the
Trezor reference implementation, the ``mnemonic`` package): 256 bits of seed plus an 8-bit
checksum, so a mistyped word is caught before anything is signed. The lab's ``lab`` record
carries ``recovery`` = SHA-256 of the recovery key's raw public key (:func:`recovery_commitment`):
it commits to the key without revealing it until it is needed.

Pure: the seed comes in as an argument (node/local/recovery.py draws it from ``secrets``); nothing
here touches files, the clock or randomness.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from .errors import FabnodeError

WORD_COUNT = 24
"""BIP39 words for a 32-byte seed (256 bits + an 8-bit checksum, 11 bits a word)."""
SEED_BYTES = 32
COMMITMENT_BYTES = 32


class BadRecoveryWords(FabnodeError):
    """Words that are not a recovery key; the message names the word at fault (one line)."""


@lru_cache(maxsize=1)
def _bip39():
    from mnemonic import Mnemonic

    return Mnemonic("english")


@lru_cache(maxsize=1)
def _wordlist() -> tuple[tuple[str, ...], dict[str, int]]:
    words = tuple(_bip39().wordlist)
    return words, {w: i for i, w in enumerate(words)}


def recovery_commitment(public_key: bytes) -> bytes:
    """What a ``lab`` record's ``recovery`` holds: SHA-256 of the raw 32-byte Ed25519 public key."""
    if len(public_key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return hashlib.sha256(public_key).digest()


def public_key_of_seed(seed: bytes) -> bytes:
    """The raw Ed25519 public key of a 32-byte seed (RFC 8032)."""
    from nacl.signing import SigningKey

    return bytes(SigningKey(seed).verify_key)


def words_of_seed(seed: bytes) -> list[str]:
    """The 24 BIP39 English words of a 32-byte seed (checksum included)."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a recovery seed is {SEED_BYTES} bytes")
    return _bip39().to_mnemonic(seed).split()


@dataclass(frozen=True, slots=True)
class RecoveryKey:
    """A recovery key as its seed; everything printable or public is derived from it."""

    seed: bytes
    """The 32-byte Ed25519 seed: the secret itself."""

    @property
    def words(self) -> list[str]:
        return words_of_seed(self.seed)

    @property
    def public_key(self) -> bytes:
        return public_key_of_seed(self.seed)

    @property
    def did(self) -> str:
        """The recovery key's did:key: the author of the revocations it signs."""
        from .identity import did_from_ed25519

        return did_from_ed25519(self.public_key)

    @property
    def commitment(self) -> bytes:
        return recovery_commitment(self.public_key)


_NUMBERED_LINE = re.compile(r"^\s*(?:\d{1,2}[.):]?\s+[^\W\d_]+\s*)+$")
_NUMBERED_WORD = re.compile(r"(\d{1,2})[.):]?\s+([^\W\d_]+)")
_WORD = re.compile(r"[^\W\d_]+")


def split_words(text: str) -> list[str]:
    """The words of a recovery key as an operator kept them: typed in any case, separated by
    spaces, commas or lines, or numbered ("1. abandon  2 ability", as ``init`` prints them and the
    backup file holds them). When some lines consist only of numbered words, only those count, in
    their numbers' order, so the text around them (a heading, the lab's did) is ignored."""
    text = unicodedata.normalize("NFKD", text).casefold()
    numbered = [line for line in text.splitlines() if _NUMBERED_LINE.match(line)]
    if numbered:
        pairs: dict[int, str] = {}
        for line in numbered:
            for number, word in _NUMBERED_WORD.findall(line):
                if int(number) in pairs:
                    raise BadRecoveryWords(f"word number {int(number)} appears twice")
                pairs[int(number)] = word
        missing = [n for n in range(1, len(pairs) + 1) if n not in pairs]
        if missing:
            raise BadRecoveryWords(f"word number {missing[0]} is missing")
        return [pairs[n] for n in sorted(pairs)]
    return _WORD.findall(text)


def _expand(word: str, index: dict[str, int], words: tuple[str, ...]) -> str | None:
    """``word`` if BIP39 knows it, else the one word it is the 4+-letter start of (the first four
    letters identify every BIP39 word: backups on metal plates often keep only those)."""
    if word in index:
        return word
    if len(word) >= 4:
        starting = [w for w in words if w.startswith(word)]
        if len(starting) == 1:
            return starting[0]
    return None


def _checksum_ok(indices: list[int]) -> bool:
    bits = "".join(f"{i:011b}" for i in indices)
    entropy = int(bits[:256], 2).to_bytes(32, "big")
    return f"{hashlib.sha256(entropy).digest()[0]:08b}" == bits[256:]


def _suspects(indices: list[int], words: tuple[str, ...], index: dict[str, int]) -> list[str]:
    """When every word is known but the checksum fails: the single changes that would make it
    pass and look like a slip of the pen (a similarly spelled word, or two neighbours swapped).
    The checksum is 8 bits, so a guess is a hint, never a certainty."""
    found: list[str] = []
    for i, at in enumerate(indices):
        for near in difflib.get_close_matches(words[at], words, n=6, cutoff=0.7):
            if near != words[at] and _checksum_ok(indices[:i] + [index[near]] + indices[i + 1:]):
                found.append(f"word {i + 1}, {words[at]!r} ({near!r} would fit)")
    for i in range(len(indices) - 1):
        swapped = indices[:i] + [indices[i + 1], indices[i]] + indices[i + 2:]
        if indices[i] != indices[i + 1] and _checksum_ok(swapped):
            found.append(f"words {i + 1} and {i + 2} swapped")
    return found


def seed_of_words(text: str) -> bytes:
    """The 32-byte seed that 24 recovery words spell (see :func:`split_words` for the forms
    accepted), else :class:`BadRecoveryWords` naming the word at fault: a count other than 24,
    a word BIP39 does not know (with the nearest ones it does), or a checksum that fails (with
    the likeliest slips)."""
    words, index = _wordlist()
    given = split_words(text)
    if len(given) != WORD_COUNT:
        raise BadRecoveryWords(f"a recovery key is {WORD_COUNT} words, not {len(given)}")
    indices = []
    for n, word in enumerate(given, 1):
        known = _expand(word, index, words)
        if known is None:
            near = difflib.get_close_matches(word, words, n=3, cutoff=0.6)
            hint = f" (did you mean {' or '.join(repr(w) for w in near)}?)" if near else ""
            raise BadRecoveryWords(f"word {n}, {word[:40]!r}, is not a BIP39 English word{hint}")
        indices.append(index[known])
    if not _checksum_ok(indices):
        suspects = _suspects(indices, words, index)
        where = ("; likeliest: " + "; ".join(suspects[:3])) if suspects else \
            "; every word is a BIP39 word, so one was miscopied as another: check each against the backup"
        raise BadRecoveryWords(f"the recovery words' checksum does not match{where}")
    bits = "".join(f"{i:011b}" for i in indices)
    return int(bits[:256], 2).to_bytes(SEED_BYTES, "big")


def check_commitment(value: object, what: str = "recovery") -> bytes:
    """A ``recovery`` commitment's bounds: exactly 32 bytes (a SHA-256 digest)."""
    if not isinstance(value, bytes) or len(value) != COMMITMENT_BYTES:
        kind = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
        raise FabnodeError(f"{what} must be {COMMITMENT_BYTES} bytes (SHA-256 of the recovery public key), not {kind}")
    return value


__all__ = ["BadRecoveryWords", "RecoveryKey", "WORD_COUNT", "check_commitment", "public_key_of_seed",
           "recovery_commitment", "seed_of_words", "split_words", "words_of_seed"]
