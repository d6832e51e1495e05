"""Seeing records through chains of keys (issue 17): who a signature speaks for, and how it is marked.

Pure: no storage, clock or randomness. The resolver (protocol/keys.py) says which keys are one
identity and which records stand; this module turns that into what trust, reputation, lineage and
the pages need, so that every one of them reads a signature the same way.

Theory of operation
===================

A record's *signer* is its did:key; what it *speaks for* is the identity it counts as
(:meth:`Identities.speaks_for`: the key's own identity, or the lab whose delegation to it stood at
the record's ts). Trust and reputation are computed over identities, not keys:

* every vouch's author is mapped with ``speaks_for(author, ts)`` and its subject with
  ``identity_of`` (a vouch for a lab's old key is a vouch for the lab, and still holds after the
  lab rotates or recovers); ``me`` and the operator's trusted keys with ``identity_of``;
* an attestation counts for the identity its author spoke for when it was signed, so a member's
  attestation weighs what the lab is trusted, and only the lab's newest word counts;
* a record whose standing is *refused* or *conflict*, or a *doubtful* one (covered by a revocation,
  old-dated, and received after this node learned of the revocation) counts for nothing but is
  listed with its mark; a *revoked-later* one (received before the revocation was learned) keeps
  its weight and is marked;
* an identity whose chain is forked (a conflict) is trusted nowhere: it is dropped from the trust
  map, passes no trust on, and the explanation says why.

Sybil bounds (protocol/reputation.py) hold unchanged, because the trust graph merely has fewer
nodes: a thousand keys of one chain are one identity, and a member adds no node of its own; its
records weigh what its lab is trusted, which is nothing for an untrusted lab.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

from .keys import Identities
from .reputation import TrustPath, Vouch, compute_trust

REVOKED_LATER = "revoked-later"
"""Signed by a key later revoked, and held here before the revocation was learned: it counts."""
DOUBTFUL = "doubtful"
"""Signed by a revoked key, dated before its cut-off, but received after the revocation: counts nothing."""
CONFLICT = "conflict"
"""Signed by a key whose identity's chain is forked and not settled: counts nothing."""
REFUSED = "refused"
"""Signed by a key after its rotation or revocation cut-off (normally never stored): counts nothing."""
COUNTS_NOTHING = frozenset({DOUBTFUL, CONFLICT, REFUSED})


class Signer(NamedTuple):
    """Who signed a record and what it counts for."""

    key: str
    identity: str | None
    """The identity the record speaks for; None when it counts for no one (see ``mark``)."""
    mark: str | None = None
    """None, or one of REVOKED_LATER, DOUBTFUL, CONFLICT, REFUSED."""
    reason: str = ""
    """One line, for a mark."""


def signer_of(ids: Identities, key: str, ts: int, received_ms: int | None = None,
              learned: Mapping[bytes, int] | None = None) -> Signer:
    """What a record by ``key`` dated ``ts`` counts for. ``received_ms``: when this node got it;
    ``learned``: revocation CID -> when this node got the revocation (for revoked keys)."""
    standing = ids.standing(key, ts)
    if standing.kind == "refused":
        return Signer(key, None, REFUSED, standing.reason)
    if standing.kind == "conflict":
        return Signer(key, None, CONFLICT, standing.reason)
    identity = ids.speaks_for(key, ts, standing)
    if standing.kind == "revoked":
        known = (learned or {}).get(standing.revocation)
        if known is not None and received_ms is not None and received_ms < known:
            return Signer(key, identity, REVOKED_LATER, standing.reason)
        return Signer(key, None, DOUBTFUL, standing.reason)
    return Signer(key, identity)


class SaidVouch(NamedTuple):
    """A vouch as its identities said it: Vouch's fields, already checked when the vouch was
    (a plain tuple: thousands are made per command)."""

    author: str
    subject: str
    trust: str
    ts: int


class IdentityTrust(dict):
    """My trust per identity (identity root did -> TrustPath), looked up by *any* key of the
    identity: ``trust.get(old_key)`` and ``trust.get(new_key)`` answer the same. Paths name
    identities. ``conflicts``: identities trusted nowhere because their chain is forked (-> why)."""

    def __init__(self, paths: Mapping[str, TrustPath], ids: Identities, conflicts: Mapping[str, str],
                 vouches: list[Vouch] | None = None) -> None:
        super().__init__(paths)
        self.identities = ids
        self.conflicts = dict(conflicts)
        self.vouches = vouches or []
        """The vouches as identities said them (what the trust was computed from)."""

    def _key(self, did):
        return self.identities.identity_of(did) if isinstance(did, str) else did

    def __getitem__(self, did):
        return super().__getitem__(self._key(did))

    def __contains__(self, did) -> bool:
        return super().__contains__(self._key(did))

    def get(self, did, default=None):
        return super().get(self._key(did), default)

    def conflict_of(self, did: str) -> str | None:
        """Why ``did``'s identity is trusted nowhere (its chain is forked), or None."""
        return self.conflicts.get(self._key(did))


def vouches_through(ids: Identities, vouches: Iterable[tuple[Vouch, int | None]],
                    learned: Mapping[bytes, int] | None = None) -> list[Vouch]:
    """The vouches (each with the ms this node received it) as identities say them: author
    mapped by what it spoke for, subject by identity; those that count for no one dropped. A
    vouch may be any object with Vouch's fields (storage's rows are); mapped ones are SaidVouches."""
    out = []
    plain, identity_of = ids.is_plain, ids.identity_of
    rotation_only: dict[str, tuple[str, int] | None] = {}
    for vouch, received_ms in vouches:
        if plain(vouch.author):  # most keys: no chain, no delegation, nothing to look up
            author = vouch.author
        else:
            if vouch.author not in rotation_only:
                rotation_only[vouch.author] = ids.rotation_only(vouch.author)
            known = rotation_only[vouch.author]
            if known is not None:  # a key of a chain: its identity, until its rotation time
                if vouch.ts > known[1]:
                    continue
                author = known[0]
            else:
                author = signer_of(ids, vouch.author, vouch.ts, received_ms, learned).identity
                if author is None:
                    continue
        subject = identity_of(vouch.subject)
        out.append(vouch if author == vouch.author and subject == vouch.subject
                   else SaidVouch(author, subject, vouch.trust, vouch.ts))
    return out


def trust_through(ids: Identities, me: str, operator_trusted: Iterable[str],
                  vouches: Iterable[tuple[Vouch, int | None]], learned: Mapping[bytes, int] | None = None,
                  **options) -> tuple[IdentityTrust, list[Vouch]]:
    """(my trust per identity, the vouches it was computed from) — see the module's theory.
    ``options``: compute_trust's ``decay`` and ``max_depth``."""
    conflicts = ids.conflicts()
    me_identity = ids.identity_of(me)
    mapped = [v for v in vouches_through(ids, vouches, learned) if v.subject not in conflicts]
    direct = [ids.identity_of(d) for d in operator_trusted]
    paths = compute_trust(me_identity, [d for d in direct if d not in conflicts], mapped, **options)
    for identity in conflicts:
        if identity != me_identity:
            paths.pop(identity, None)
    return IdentityTrust(paths, ids, conflicts, mapped), mapped
