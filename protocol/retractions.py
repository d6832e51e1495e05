"""Taking back what was said (issue 17): which retractions and withdrawals count.

A ``retraction`` (body: subject = a version, reason) says "do not build this version"; a
``withdrawal`` (body: subject = an attestation, reason) says "I no longer stand by this
attestation". Neither deletes anything: the version stays in the lineage, struck through, and
the attestation stays listed, weighing nothing. Anyone can sign such a record, so whether it
*counts* depends on who signed it, which is decided here and only here:

* a retraction counts when its author is the version's author, or a maintainer named on the
  version's design's first version (while that first version is unknown, only the author);
* a withdrawal counts when its author is the attestation's author.

In this first wave authors are compared as did:keys. The chain of keys (rotations, members of a
lab, in the keys module of the second wave) will map each did:key to the identity it speaks for before calling these
functions, so they take plain strings: identities or keys, whichever the caller compares.

Everything is computed from the set of records known, never from arrival order: a retraction
that arrived before its version takes effect the moment the version arrives.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

MAX_REASON = 500
"""Characters in a retraction's or withdrawal's reason: a sentence or two, as the contract says."""


class TakeBack(NamedTuple):
    """One retraction or withdrawal record, as the rules need it."""

    cid: bytes
    author: str
    ts: int
    reason: str


def retraction_counts(retraction_author: str, version_author: str, maintainers: Iterable[str] | None) -> bool:
    """May ``retraction_author`` retract a version by ``version_author`` in a design maintained
    by ``maintainers`` (None: the design's first version is not known yet)?"""
    return retraction_author == version_author or retraction_author in set(maintainers or ())


def withdrawal_counts(withdrawal_author: str, attestation_author: str) -> bool:
    """May ``withdrawal_author`` withdraw an attestation by ``attestation_author``? Only its author."""
    return withdrawal_author == attestation_author


def _first(records: list[TakeBack]) -> TakeBack | None:
    """The earliest (ties: smallest id): the same one on every node, whatever the arrival order."""
    return min(records, key=lambda r: (r.ts, r.cid)) if records else None


def judge_retractions(retractions: Iterable[TakeBack], version_author: str,
                      maintainers: Iterable[str] | None) -> tuple[TakeBack | None, list[TakeBack]]:
    """(the retraction that counts, or None; those that do not, oldest first).

    Several that count (the author and a maintainer both retracted) are one retraction: the
    earliest is shown, so every node shows the same reason."""
    maintainers = tuple(maintainers) if maintainers is not None else None
    counted, ignored = [], []
    for r in retractions:
        (counted if retraction_counts(r.author, version_author, maintainers) else ignored).append(r)
    return _first(counted), sorted(ignored, key=lambda r: (r.ts, r.cid))


def judge_withdrawals(withdrawals: Iterable[TakeBack], attestation_author: str
                      ) -> tuple[TakeBack | None, list[TakeBack]]:
    """(the withdrawal that counts, or None; those by other keys, ignored, oldest first)."""
    counted, ignored = [], []
    for w in withdrawals:
        (counted if withdrawal_counts(w.author, attestation_author) else ignored).append(w)
    return _first(counted), sorted(ignored, key=lambda r: (r.ts, r.cid))


def check_reason(reason: str | None) -> str:
    """The reason, stripped; raises ValueError with one line when it is missing or too long."""
    text = (reason or "").strip()
    if not text:
        raise ValueError("a reason is required (--reason \"…\"): say why, for those who built on it")
    if len(text) > MAX_REASON:
        raise ValueError(f"the reason is {len(text)} characters; at most {MAX_REASON}")
    return text
