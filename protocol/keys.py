"""Chains of keys (issue 17): which keys are one identity, since when, and what their records count for.

Pure: no storage, clock or randomness. :func:`resolve` takes the key records (lab records'
recovery commitments, successions, revocations, members) as a set and returns
:class:`Identities`; the record bodies are in protocol/records.py and docs/protocol.md §18.

Theory of operation
===================

Everything is computed from the *set* of records, each step walking them sorted by (ts, CID),
never by arrival: the same set gives the same Identities on every node, whatever came first.

1. **Commitments.** An identity's root key commits to its recovery key in its earliest-ts lab
   record that carries ``recovery`` (ties: the smallest CID). Later different values are ignored.

2. **Successions, on their own.** A succession ``old -> next`` at ``ts`` is refused when ``next``
   is already someone's key: it signed a record dated before ``ts`` (``first_signed``: the
   earliest ts each author signed, from storage, merged with the key records' own authors).
   This also makes cycles impossible (the old key signed the succession itself).

3. **Revocations, in (ts, CID) order.** A revocation by the recovery key names ``identity`` (the
   chain's root), ``revoked``, ``cutoff`` and ``next``. It stands only if SHA-256 of its author's
   public key equals the identity's commitment *at that point* (the root's lab commitment,
   replaced by each earlier standing revocation's optional ``recovery``), ``revoked`` is
   reachable from ``identity`` (along successions and earlier standing revocations), ``revoked``
   was not revoked before, and ``next`` is fresh or already a key of that chain (settling a fork
   by choosing one branch). The recovery key is the authority above every author key.
   ``identity`` must be a root: a key rotated or recovered *to* is never one, and its own lab
   records commit no recovery key (else a thief holding it could name their own).

4. **Edges.** A revoked key's only successor is its revocation's ``next`` ("recovered", from the
   cutoff): its successions are set aside (refused if dated after the cutoff — a revoked key
   cannot rotate after its cutoff — and "superseded" otherwise). A key with one succession has
   that successor ("rotated", from its ts). A key with two or more is a **fork**: every branch
   is kept but the identity is in **conflict**, trusted nowhere, until a revocation of the forked
   key settles it. Each key is entered at most once: a later edge into an entered key is refused
   ("rotates to a key another identity already uses").

5. **Chains.** Roots are keys that no standing edge enters; each chain is walked from its root,
   and every key on it has ``identity_of`` = the root. A key no chain reaches is its own identity.

6. **Standing** of a record by ``author`` at ``ts``, first match: *refused* if dated after its
   key's revocation cutoff; *revoked* if dated at or before it (storage tells "signed by a key
   later revoked" from "doubtful" by arrival time); *refused* if dated after the key's rotation
   time (a forked key's earliest branch); *conflict* if the author's identity is forked and not
   settled; else *ok*. Refusals come first and only grow as records arrive (a second succession
   can only move a rotation time earlier), so storage may drop refused records on arrival.

7. **Members**, per lab in (ts, CID) order: a member record stands if, at its ts, its author is a
   key of the lab's chain in good standing, or holds the role ``maintainer`` there. A delegation
   holds from its ts until a later record for the same member (``removed`` or another role).
   Memberships attach to the member's identity, so they follow the member's own rotations.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from .errors import FabnodeError
from .identity import ed25519_from_did
from .recovery import recovery_commitment  # noqa: F401  (one definition, re-exported for the resolver's callers)

SUCCESSION_DOMAIN = b"fabnode-succession-v1\x00"
REVOCATION_DOMAIN = b"fabnode-revocation-v1\x00"
KEY_RECORD_TYPES = ("lab", "succession", "revocation", "member")
NEVER = 1 << 62
"""A ts after every real one."""


def succession_statement(old: str, next_: str, ts: int) -> bytes:
    """What the next key signs (``next_sig``) to accept a succession from ``old`` at ``ts``."""
    return SUCCESSION_DOMAIN + old.encode() + b"\x00" + next_.encode() + b"\x00" + str(ts).encode()


def revocation_statement(identity: str, revoked: str, next_: str, cutoff: int) -> bytes:
    """What the next key signs (``next_sig``) to take over ``identity`` after ``revoked``'s cutoff."""
    return (REVOCATION_DOMAIN + identity.encode() + b"\x00" + revoked.encode() + b"\x00" + next_.encode()
            + b"\x00" + str(cutoff).encode())


class ChainRefused(FabnodeError):
    """A record its author's chain of keys refuses (signed after the key's rotation or revocation
    cutoff). Not a peer's offence: the peer may not know that chain yet (docs/design.md)."""


class KeyRecord(NamedTuple):
    cid: bytes
    type: str
    author: str
    ts: int
    body: dict


class Standing(NamedTuple):
    kind: str
    """"ok" | "refused" | "revoked" | "conflict"."""
    reason: str = ""
    revocation: bytes | None = None
    """For "revoked": the CID of the revocation that covers the record."""


OK = Standing("ok")


class ChainLink(NamedTuple):
    key: str
    since_ts: int
    until_ts: int | None
    how: str
    """"root" | "rotated" | "recovered"."""
    revoked_cutoff: int | None


class Membership(NamedTuple):
    did: str
    role: str
    since_ts: int
    until_ts: int | None


@dataclass
class Identities:
    """What the key records mean together (see the module's theory). Built by :func:`resolve`."""

    _identity: dict[str, str] = field(default_factory=dict)
    _chains: dict[str, list[ChainLink]] = field(default_factory=dict)
    _conflicts: dict[str, str] = field(default_factory=dict)
    _rotated: dict[str, tuple[int, str]] = field(default_factory=dict)
    """key -> (rotation ts, next key) for a key with standing successions (the earliest)."""
    _revoked: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    """key -> (cutoff, revocation CID)."""
    _members: dict[str, dict[str, list[tuple[int, str]]]] = field(default_factory=dict)
    """lab -> member identity -> [(ts, role)] sorted by ts."""
    _refused: dict[bytes, str] = field(default_factory=dict)
    _labs_of_member: dict[str, list[str]] = field(default_factory=dict)
    _ignored_recoveries: dict[bytes, str] = field(default_factory=dict)

    def identity_of(self, did: str) -> str:
        return self._identity.get(did, did)

    def is_plain(self, did: str) -> bool:
        """True when ``did`` is in no chain, was never rotated or revoked and no lab delegated to
        it: its records count for itself whatever their ts. The fast path for readers of many
        records (protocol/key_views.py); False only means "ask standing and speaks_for"."""
        return not (did in self._identity or did in self._revoked or did in self._rotated
                    or did in self._labs_of_member or did in self._conflicts)

    def standing(self, author: str, ts: int) -> Standing:
        """Whether a record by ``author`` dated ``ts`` stands (see the module's theory, 6)."""
        revoked = self._revoked.get(author)
        if revoked is not None:
            cutoff, cid = revoked
            if ts > cutoff:
                return Standing("refused", f"signed by {author} after its revocation cutoff {cutoff}")
            return Standing("revoked", f"signed by {author}, revoked from {cutoff}", cid)
        rotated = self._rotated.get(author)
        if rotated is not None and ts > rotated[0]:
            return Standing("refused", f"signed by {author} after it was rotated to {rotated[1]} at {rotated[0]}")
        identity = self.identity_of(author)
        if identity in self._conflicts:
            return Standing("conflict", self._conflicts[identity])
        return OK

    def rotation_only(self, did: str) -> tuple[str, int] | None:
        """(identity, the ts after which its records are refused) for a key whose records' fate
        depends on their ts only through its rotation time: not revoked, not in a conflict, its
        identity a member of no lab. None: ask :meth:`standing` and :meth:`speaks_for` per record.
        A fast path for readers of many records by few keys (protocol/key_views.py)."""
        identity = self.identity_of(did)
        if did in self._revoked or identity in self._conflicts or identity in self._labs_of_member:
            return None
        rotated = self._rotated.get(did)
        return identity, (rotated[0] if rotated is not None else NEVER)

    def revoked_keys(self) -> dict[str, int]:
        """key -> its revocation cutoff, for every revoked key: a record by one of them dated at or
        before the cutoff is "revoked" (marked by arrival), after it refused."""
        return {key: cutoff for key, (cutoff, _) in self._revoked.items()}

    def refusal_limits(self) -> dict[str, int]:
        """key -> the ts after which its records are refused (its rotation time or revocation
        cutoff): what storage needs to find the records a chain refuses."""
        limits = {key: cutoff for key, (cutoff, _) in self._revoked.items()}
        for key, (ts, _) in self._rotated.items():
            limits.setdefault(key, ts)
        return limits

    def _role_of_identity(self, identity: str, lab: str, ts: int) -> str | None:
        history = self._members.get(lab, {}).get(identity)
        if not history:
            return None
        at = bisect.bisect_right(history, ts, key=lambda entry: entry[0])
        if at == 0:
            return None
        role = history[at - 1][1]
        return None if role == "removed" else role

    def role(self, did: str, lab: str, ts: int) -> str | None:
        """"key" (a key of the lab's own chain), "maintainer", "member", or None, at ``ts``."""
        if self.standing(did, ts).kind in ("refused", "conflict"):
            return None
        identity = self.identity_of(did)
        lab = self.identity_of(lab)
        if identity == lab:
            return "key"
        return self._role_of_identity(identity, lab, ts)

    def speaks_for(self, did: str, ts: int, standing: Standing | None = None) -> str | None:
        """The identity a record by ``did`` at ``ts`` counts for (None: it counts for no one).
        ``standing``: ``self.standing(did, ts)`` when the caller has it already."""
        if (standing or self.standing(did, ts)).kind in ("refused", "conflict"):
            return None
        identity = self.identity_of(did)
        for lab in self._labs_of_member.get(identity, ()):
            if self._role_of_identity(identity, lab, ts) is not None:
                return lab
        return identity

    def chain(self, identity: str) -> list[ChainLink]:
        identity = self.identity_of(identity)
        return list(self._chains.get(identity, [ChainLink(identity, 0, None, "root", None)]))

    def current_key(self, identity: str) -> str | None:
        """The key that signs for ``identity`` now (None while its chain is forked)."""
        identity = self.identity_of(identity)
        if identity in self._conflicts:
            return None
        return self.chain(identity)[-1].key

    def conflicts(self) -> dict[str, str]:
        return dict(self._conflicts)

    def members(self, identity: str) -> list[Membership]:
        """Every delegation the lab ever made, by member and time (until_ts None: still stands)."""
        out = []
        for member, history in sorted(self._members.get(self.identity_of(identity), {}).items()):
            for i, (ts, role) in enumerate(history):
                if role != "removed":
                    out.append(Membership(member, role, ts, history[i + 1][0] if i + 1 < len(history) else None))
        return out

    def ignored_recoveries(self) -> dict[bytes, str]:
        """Lab records whose ``recovery`` differs from the one committed first (CID -> one line):
        ignored, and worth showing (who tried to change the recovery key?)."""
        return dict(self._ignored_recoveries)

    def refused_records(self) -> dict[bytes, str]:
        """Key records the rules set aside (CID -> one-line reason): they count for nothing."""
        return dict(self._refused)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Identities) and self._signature() == other._signature()

    def _signature(self) -> tuple:
        return (self._identity, self._chains, self._conflicts, self._rotated, self._revoked, self._members,
                self._refused, self._ignored_recoveries)


def _committed_recoveries(labs: list[KeyRecord], ignored: dict[bytes, str]) -> dict[str, bytes]:
    commitments: dict[str, bytes] = {}
    for record in labs:  # sorted by (ts, cid): the earliest commitment wins
        recovery = record.body.get("recovery")
        if isinstance(recovery, bytes) and len(recovery) == 32:
            first = commitments.setdefault(record.author, recovery)
            if first != recovery:
                ignored[record.cid] = (f"{record.author} committed to another recovery key first: "
                                       "a later lab record cannot change it (a revocation can)")
    return commitments


def _reach(start: str, edges: Mapping[str, list[str]]) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def resolve(records: Iterable[KeyRecord], first_signed: Mapping[str, int] | None = None) -> Identities:
    """Identities from a set of key records (order-independent; see the module's theory).

    ``first_signed``: the earliest ts each author signed any record (storage knows it), for the
    rule that a key cannot rotate *to* a key that was already in use."""
    ordered = sorted(records, key=lambda r: (r.ts, r.cid))
    first: dict[str, int] = dict(first_signed or {})
    for r in ordered:
        if r.ts < first.get(r.author, NEVER):
            first[r.author] = r.ts
    by_type: dict[str, list[KeyRecord]] = defaultdict(list)
    for r in ordered:
        by_type[r.type].append(r)
    out = Identities()
    refused = out._refused

    # 1. commitments
    commitments = _committed_recoveries(by_type["lab"], out._ignored_recoveries)

    # 2. successions on their own
    successions: list[KeyRecord] = []
    raw_edges: dict[str, list[str]] = defaultdict(list)
    for s in by_type["succession"]:
        nxt = s.body["next"]
        if first.get(nxt, NEVER) < s.ts:
            refused[s.cid] = f"rotates to {nxt}, a key already in use (it signed records before {s.ts})"
            continue
        successions.append(s)
        raw_edges[s.author].append(nxt)

    # 3. revocations, in (ts, cid) order. Only a chain's root is an identity: a key that was
    # rotated or recovered *to* commits no recovery key of its own (its lab records' `recovery`
    # is ignored), else a thief holding a successor key could back-date a lab record naming
    # their own recovery key and "revoke" the chain under it.
    entered_keys = {s.body["next"] for s in successions}
    for key in entered_keys:
        commitments.pop(key, None)
    revocations: dict[str, KeyRecord] = {}
    reaches: dict[str, set[str]] = {}  # identity -> keys reachable from it so far (grown, never shrunk)
    for v in by_type["revocation"]:
        identity, revoked, nxt = v.body["identity"], v.body["revoked"], v.body["next"]
        committed = commitments.get(identity)
        reach = reaches.get(identity)
        if reach is None:
            reach = reaches[identity] = _reach(identity, raw_edges)
        if identity in entered_keys:
            refused[v.cid] = f"{identity} is not the root of its chain of keys: only the root's recovery key revokes"
        elif committed is None:
            refused[v.cid] = f"no recovery key was committed for {identity}"
        elif recovery_commitment(ed25519_from_did(v.author)) != committed:
            refused[v.cid] = f"not the recovery key committed for {identity}"
        elif revoked not in reach:
            refused[v.cid] = f"{revoked} is not a key of {identity}'s chain"
        elif revoked in revocations:
            refused[v.cid] = f"{revoked} was already revoked"
        elif nxt not in reach and first.get(nxt, NEVER) < v.ts:
            refused[v.cid] = f"recovers to {nxt}, a key already in use (it signed records before {v.ts})"
        else:
            revocations[revoked] = v
            raw_edges[revoked].append(nxt)
            entered_keys.add(nxt)
            commitments.pop(nxt, None)
            grown = None
            for keys_reached in reaches.values():
                if revoked in keys_reached and nxt not in keys_reached:
                    grown = grown or _reach(nxt, raw_edges)
                    keys_reached |= grown
            if "recovery" in v.body:
                commitments[identity] = v.body["recovery"]

    # 4. edges: (ts, cid, old, next, how, record)
    by_old: dict[str, list[KeyRecord]] = defaultdict(list)
    for s in successions:
        by_old[s.author].append(s)
    candidates = []
    forks: dict[str, list[KeyRecord]] = {}
    for old, group in by_old.items():
        revocation = revocations.get(old)
        if revocation is not None:
            cutoff = revocation.body["cutoff"]
            for s in group:
                refused[s.cid] = (f"{old} was revoked from {cutoff}: it cannot rotate after" if s.ts > cutoff
                                  else f"superseded by the recovery key's revocation of {old}")
            continue
        if len(group) > 1:
            forks[old] = group
        for s in group:
            candidates.append((s.ts, s.cid, old, s.body["next"], "rotated", s))
    for old, v in revocations.items():
        candidates.append((v.body["cutoff"], v.cid, old, v.body["next"], "recovered", v))
    candidates.sort(key=lambda c: (c[0], c[1]))
    entered: dict[str, tuple] = {}
    edges: dict[str, list[tuple]] = defaultdict(list)
    for edge in candidates:
        _ts, _cid, old, nxt, how, record = edge
        if nxt in entered:
            if how == "recovered":  # the recovery key chose an existing branch: it now enters there
                previous = entered[nxt]
                edges[previous[2]].remove(previous)
                if previous[4] == "rotated":
                    refused[previous[1]] = f"superseded by the recovery key's choice of {nxt}"
                entered[nxt] = edge
                edges[old].append(edge)
                continue
            refused[record.cid] = f"rotates to {nxt}, a key another identity already uses"
            if old in forks and record in forks[old]:
                forks[old].remove(record)
            continue
        entered[nxt] = edge
        edges[old].append(edge)

    # 5. chains from the roots
    keys = set(entered) | set(edges) | set(commitments)
    for root in sorted(k for k in keys if k not in entered):
        order, since, until = [root], {root: (first.get(root, 0), "root")}, {}
        at = 0
        while at < len(order):
            key = order[at]
            at += 1
            out._identity[key] = root
            revocation = revocations.get(key)
            if revocation is not None:
                out._revoked[key] = (revocation.body["cutoff"], revocation.cid)
            outgoing = edges.get(key)
            if not outgoing:
                continue
            outgoing.sort(key=lambda e: (e[0], e[1]))
            until[key] = outgoing[0][0]
            live = [e for e in outgoing if e[4] == "rotated"]
            if live and revocation is None:  # a fork rotates the key too, at its earliest branch
                out._rotated[key] = (live[0][0], live[0][3] if len(live) == 1 else "several keys (a fork)")
            for edge in outgoing:
                since[edge[3]] = (edge[0], edge[4])
                order.append(edge[3])
        if len(order) > 1 or root in commitments:
            out._chains[root] = [ChainLink(key, since[key][0], until.get(key), since[key][1],
                                           out._revoked[key][0] if key in out._revoked else None) for key in order]
    for old, group in sorted(forks.items()):
        if len(group) > 1:
            identity = out.identity_of(old)
            nexts = ", ".join(sorted(s.body["next"] for s in group))
            out._conflicts.setdefault(identity, f"{old} rotated twice (to {nexts}): a forked chain, trusted "
                                                "nowhere until the recovery key settles it")

    # 6. members, per lab in (ts, cid) order
    history: dict[str, dict[str, list[tuple[int, str]]]] = defaultdict(lambda: defaultdict(list))
    for m in by_type["member"]:
        lab = out.identity_of(m.body["lab"])
        member = out.identity_of(m.body["member"])
        if member == lab:
            refused[m.cid] = f"{m.body['member']} is a key of {lab} itself, not a member"
            continue
        author_standing = out.standing(m.author, m.ts)
        if author_standing.kind in ("refused", "conflict"):
            refused[m.cid] = author_standing.reason
            continue
        author = out.identity_of(m.author)
        if author != lab:
            role = _role_in(history[lab].get(author), m.ts)
            if role != "maintainer":
                refused[m.cid] = (f"{m.author} is a member, not a maintainer, of {lab}: it cannot add or remove members"
                                  if role == "member" else f"{m.author} is neither {lab}'s key nor one of its maintainers")
                continue
        history[lab][member].append((m.ts, m.body["role"]))
    for lab, members in history.items():
        out._members[lab] = {member: entries for member, entries in members.items()}
        for member in members:
            out._labs_of_member.setdefault(member, []).append(lab)
    for labs in out._labs_of_member.values():
        labs.sort()
    return out


def _role_in(history: list[tuple[int, str]] | None, ts: int) -> str | None:
    """The role a history of (ts, role) gives at ``ts`` (records at the same ts count as before)."""
    role = None
    for at, what in history or ():
        if at > ts:
            break
        role = None if what == "removed" else what
    return role
