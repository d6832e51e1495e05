"""Personal reputation: how much *I* trust each key, and what that says about a version
(docs/protocol.md §4.6).

Theory of operation
===================

Trust (:func:`compute_trust`)
-----------------------------
Trust is personal, never global: it is computed from one node's point of view (``me``, its author
key), so there is no single score for an attacker to capture. Vouch records form a directed graph;
only the newest vouch from an author about a subject counts (a later distrust replaces an earlier
trust; at the very same ``ts`` distrust wins, so the answer never depends on input order).

* I have trust 1.0. Keys I vouch for as trusted, and keys my operator lists in ``operator_trusted``,
  are *direct* and get ``decay`` (0.5 by default) each. My own word is not divided: it is the very
  thing being personalised, and the operator is not a Sybil against themselves. My own newest
  vouch saying "distrusted" overrides ``operator_trusted``: the safer reading of a contradiction.
* Any other key with trust ``t`` that currently vouches "trusted" for ``n`` keys gives each of them
  ``t * decay / n``. The share is *divided*, not copied: vouching for a thousand keys gives each a
  thousandth, so vouching more widely never multiplies a key's influence.
* A key's trust is that of its *strongest path*: the largest such product over paths of at most
  ``max_depth`` hops from me. Paths are not summed, so extra paths never add up to more than the
  best one, and every score is explained by one path (:class:`TrustPath`).
* A key is *cut off* (no trust, and no trust flows through it) when I distrust it, or when a key
  with strictly more trust than it distrusts it. A less trusted key cannot cut off a more trusted
  one, so a key let in later cannot knock out the keys that let it in, and a cut-off key's own
  vouches and distrusts count for nothing.

Every hop multiplies by less than 1, so trust strictly falls along a path. The computation is
therefore Dijkstra over products with a max-heap: keys are settled strongest first, and when a key
is settled every key more trusted than it is settled already, so the cut-off rule is decided once,
in order, and the answer is well defined. To honour ``max_depth`` a key that is reached again by
a weaker but *shorter* path is expanded again (at most ``max_depth`` times), so a strong path that
is too long to continue never hides a weaker one that can. Cost: O(max_depth * E log E) for E
vouches at worst, far less in practice (about 60 ms of CPU for 50,000 vouches at max_depth 4).

Why a Sybil cluster gets nothing, and at most a bounded share
-------------------------------------------------------------
Trust only flows out of me, along vouches. A thousand fresh keys vouching for one another, however
densely, have no edge into them from anything I trust: they are unreachable and get exactly zero.

If one trusted key ``T`` vouches for one of them, ``S``, then ``S`` gets at most
``decay * trust(T)``. Each key hands on at most ``decay`` times its own trust *in total* (it is
divided among its vouchees), and a key's trust is the maximum over its incoming shares, which is
at most their sum. Summing over the cluster ``C`` (reachable only through ``S``):
``C <= trust(S) + decay * C``, so ``C <= trust(S) / (1 - decay) <= trust(T) * decay / (1 - decay)``.
At the default decay 0.5 the whole cluster together gets no more trust than ``T`` has itself, and
``max_depth`` cuts it further. The same bound holds for everything downstream of any key.

Scoring (:func:`score_version`)
-------------------------------
Each attestation on the version gives *evidence* in [-1, 1]: passed +1, warned -0.25 (a little
against: something needed care), failed -1, and a ``defect`` report -1 whatever its result field.
Its *weight* is its author's trust times the strength of the predicate (built and tested 1,
reviewed 0.5: reading is weaker evidence than making; defect 1), doubled when the evidence is
against (``NEGATIVE_EMPHASIS``): for hardware a reported defect should outweigh a pass of equal
trust, and a handful of passes from equally trusted labs must not quietly bury it. Only each
author's newest attestation counts (at the same ``ts`` the worse news); the rest, and those of
untrusted authors, weigh 0 but are still listed as reasons, heaviest first, worse news first at
equal weight, so a trusted lab's defect heads the list of what counts against.

An attestation its author withdrew (issue 17: a ``withdrawal`` that counts, protocol/retractions.py)
weighs 0 and is listed as "withdrawn by its author: REASON". It takes no part in choosing each
author's newest either: the newest word an author still stands by is the one that counts.

``value`` is the weighted mean of the evidence, in [-1, 1]. ``verdict`` is "unknown" when nothing
trusted was said (total weight 0), "recommended" at value >= 0.5, "not recommended" at value <= -0.5,
and "mixed" in between. One trusted defect against one equally trusted pass gives -1/3 (mixed);
it takes six such passes to outweigh it back to "recommended".
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

TRUSTED = "trusted"
DISTRUSTED = "distrusted"
TRUST_VALUES = frozenset({TRUSTED, DISTRUSTED})

PREDICATES = frozenset({"built", "tested", "reviewed", "defect"})
RESULTS = frozenset({"passed", "warned", "failed"})

# How strong each kind of attestation is as evidence; reading a design is weaker than making it.
PREDICATE_STRENGTH: Mapping[str, float] = {"built": 1.0, "tested": 1.0, "reviewed": 0.5, "defect": 1.0}
# For or against: a warning counts a little against, a failure or a defect report fully against.
RESULT_EVIDENCE: Mapping[str, float] = {"passed": 1.0, "warned": -0.25, "failed": -1.0}
DEFECT_EVIDENCE = -1.0
# Evidence against weighs double: one defect must not be buried by a pass of equal trust.
NEGATIVE_EMPHASIS = 2.0

RECOMMENDED_AT = 0.5
NOT_RECOMMENDED_AT = -0.5

RECOMMENDED = "recommended"
MIXED = "mixed"
NOT_RECOMMENDED = "not recommended"
UNKNOWN = "unknown"

# Why an attestation does or does not count.
COUNTED = "counted"
UNTRUSTED = "untrusted"
SUPERSEDED = "superseded"
WITHDRAWN = "withdrawn"
UNSTANDING = frozenset({"doubtful", "conflict", "refused"})
"""Marks (protocol/key_views.py) under which an attestation counts nothing; the mark is its status."""


@dataclass(frozen=True, slots=True)
class Vouch:
    """``author`` says of ``subject`` (both did:key) that it is trusted or distrusted, at ``ts`` ms."""

    author: str
    subject: str
    trust: str
    ts: int

    def __post_init__(self) -> None:
        if self.trust not in TRUST_VALUES:
            raise ValueError(f"a vouch's trust is 'trusted' or 'distrusted', not {self.trust!r}")


@dataclass(frozen=True, slots=True)
class Attestation:
    """One signed attestation on the version being scored; ``cid`` is the attestation record's own CID."""

    cid: str
    author: str
    predicate: str
    result: str
    lab: str
    ts: int
    withdrawn: str | None = None
    """The reason its author gave for withdrawing it, when a withdrawal by its author is known."""
    identity: str | None = None
    """The identity its author spoke for when signing (issue 17, protocol/key_views.py); None:
    the author key itself (no chains known), or no one when ``mark`` says it counts nothing."""
    mark: str | None = None
    """None, or protocol/key_views.py's revoked-later, doubtful, conflict or refused."""
    mark_reason: str = ""

    @property
    def speaker(self) -> str:
        """Whose word this is: the identity it counts for, else its key."""
        return self.identity if self.identity is not None else self.author

    def __post_init__(self) -> None:
        if self.predicate not in PREDICATES:
            raise ValueError(f"an attestation's predicate is one of {sorted(PREDICATES)}, not {self.predicate!r}")
        if self.result not in RESULTS:
            raise ValueError(f"an attestation's result is one of {sorted(RESULTS)}, not {self.result!r}")


@dataclass(frozen=True, slots=True)
class TrustPath:
    """How much I trust a key, and the strongest chain of vouches that earns it: ``path[0]`` is me."""

    weight: float
    path: tuple[str, ...]

    @property
    def hops(self) -> int:
        return len(self.path) - 1


@dataclass(frozen=True, slots=True)
class Reason:
    """One attestation and how much it counted, so that every score can explain itself.

    ``weight`` is its share in the score (0 when it does not count), ``trust`` its author's trust,
    ``evidence`` its signed direction (+ for, - against), ``status`` one of counted, untrusted
    (no path from me: ``path`` is empty), superseded (the same author said something newer) or
    withdrawn (its author took it back: ``withdrawn`` is the reason given).
    """

    cid: str
    lab: str
    author: str
    predicate: str
    result: str
    weight: float
    path: tuple[str, ...]
    trust: float
    evidence: float
    status: str
    withdrawn: str | None = None
    identity: str | None = None
    """The identity the author key spoke for (issue 17), when it is not the key itself."""
    mark: str | None = None
    mark_reason: str = ""


@dataclass(frozen=True, slots=True)
class Score:
    """``value`` in [-1, 1] (weighted mean of evidence), a ``verdict``, and every reason, heaviest first."""

    value: float
    verdict: str
    reasons: tuple[Reason, ...]


# ---------------------------------------------------------------------------------------------
# Trust


def _current_vouches(vouches: Iterable[Vouch]) -> dict[tuple[str, str], Vouch]:
    """The newest vouch per (author, subject); at equal ts distrust wins, whatever the input order."""
    newest: dict[tuple[str, str], Vouch] = {}
    for vouch in vouches:
        if vouch.author == vouch.subject:
            continue  # vouching for oneself says nothing
        pair = (vouch.author, vouch.subject)
        held = newest.get(pair)
        if (held is None or vouch.ts > held.ts
                or (vouch.ts == held.ts and vouch.trust == DISTRUSTED)):
            newest[pair] = vouch
    return newest


def compute_trust(me: str, operator_trusted: Iterable[str], vouches: Iterable[Vouch], *,
                  decay: float = 0.5, max_depth: int = 4) -> dict[str, TrustPath]:
    """My personal trust in every key I can reach: its weight and strongest path (see module docstring).

    Keys that are unreachable, further than ``max_depth`` hops, or cut off by a distrust are absent.
    """
    if not 0.0 < decay < 1.0:
        raise ValueError(f"decay must be between 0 and 1 (exclusive), not {decay!r}")
    if max_depth < 0:
        raise ValueError(f"max_depth must be >= 0, not {max_depth!r}")

    trusts: dict[str, list[str]] = {}
    distrusted_by: dict[str, list[str]] = {}
    for (author, subject), vouch in _current_vouches(vouches).items():
        if vouch.trust == TRUSTED:
            trusts.setdefault(author, []).append(subject)
        else:
            distrusted_by.setdefault(subject, []).append(author)

    direct = set(trusts.pop(me, ()))
    direct.update(operator_trusted)
    direct.discard(me)
    # Sorted so that ties between equally strong paths resolve the same way for any input order.
    children: dict[str, list[str]] = {author: sorted(subjects) for author, subjects in trusts.items()}
    children[me] = sorted(direct)
    # My word is not divided; everyone else's share is.
    share = {author: decay / len(subjects) for author, subjects in children.items() if subjects}
    share[me] = decay

    settled: dict[str, TrustPath] = {}
    shortest_expanded: dict[str, int] = {}   # fewest hops at which a key has been expanded so far
    cut_off: set[str] = set()
    # (trust, hops) pairs already queued per key; me is never worth reaching again.
    offers: dict[str, list[tuple[float, int]]] = {me: [(1.0, 0)]}
    push = heapq.heappush

    heap: list[tuple[float, int, str, tuple[str, ...]]] = [(-1.0, 0, me, (me,))]
    while heap:
        negative_trust, hops, key, path = heapq.heappop(heap)
        if key in cut_off:
            continue
        trust = -negative_trust
        if key not in settled:
            # First time popped: this is its strongest path, and every more trusted key is settled.
            if _is_cut_off(trust, distrusted_by.get(key, ()), settled):
                cut_off.add(key)
                continue
            settled[key] = TrustPath(trust, path)
        elif hops >= shortest_expanded[key]:
            continue  # weaker and no shorter: nothing new to reach through it
        shortest_expanded[key] = hops
        if hops >= max_depth or key not in share:
            continue
        child_trust = trust * share[key]
        child_hops = hops + 1
        for child in children[key]:
            queued = offers.get(child)
            if queued is None:
                offers[child] = [(child_trust, child_hops)]
            elif child in cut_off or _dominated(child_trust, child_hops, queued):
                continue
            else:
                queued.append((child_trust, child_hops))
            push(heap, (-child_trust, child_hops, child, path + (child,)))
    return settled


def _dominated(trust: float, hops: int, queued: list[tuple[float, int]]) -> bool:
    """An offer no stronger and no shorter than one already queued can reach nothing new."""
    for queued_trust, queued_hops in queued:
        if queued_trust >= trust and queued_hops <= hops:
            return True
    return False


def distrusted_keys(me: str, trust: Mapping[str, TrustPath], vouches: Iterable[Vouch]) -> dict[str, tuple[str, ...]]:
    """Keys without trust because a key I trust distrusts them: {key: the distruster's trust
    path} (``(me,)`` when I distrust it myself, else the most trusted distruster's path). For
    saying "you distrust this key" rather than "no trust path" (issue 15); trust is unchanged."""
    out: dict[str, tuple[str, ...]] = {}
    for (author, subject), vouch in sorted(_current_vouches(vouches).items()):
        if vouch.trust != DISTRUSTED or subject in trust or author not in trust:
            continue
        held = out.get(subject)
        if held is None or author == me or (held[-1] != me and trust[author].weight > trust[held[-1]].weight):
            out[subject] = trust[author].path
    return out


def _is_cut_off(trust: float, distrusters: Iterable[str], settled: Mapping[str, TrustPath]) -> bool:
    """Distrust counts only from a settled key trusted strictly more (me, at 1.0, always is)."""
    return any(distruster in settled and settled[distruster].weight > trust for distruster in distrusters)


# ---------------------------------------------------------------------------------------------
# Scoring


def evidence_of(predicate: str, result: str) -> float:
    """Signed evidence in [-1, 1]: a defect report is against whatever its result field says."""
    if predicate == "defect":
        return DEFECT_EVIDENCE
    return RESULT_EVIDENCE[result]


def _newest_per_author(attestations: Iterable[Attestation]) -> tuple[list[Attestation], set[str]]:
    """All distinct attestations, and the cids of each author's newest (worst news wins a ts tie)."""
    unique: dict[str, Attestation] = {}
    for attestation in attestations:
        unique.setdefault(attestation.cid, attestation)  # the same record seen twice is one record
    newest: dict[str, Attestation] = {}
    for attestation in unique.values():
        if attestation.withdrawn is not None or attestation.mark in UNSTANDING:
            continue  # taken back, or counting for no one: the newest word still standing counts
        held = newest.get(attestation.speaker)
        if held is None or _recency(attestation) > _recency(held):
            newest[attestation.speaker] = attestation
    return list(unique.values()), {a.cid for a in newest.values()}


def _recency(attestation: Attestation) -> tuple[int, float, str]:
    return (attestation.ts, -evidence_of(attestation.predicate, attestation.result), attestation.cid)


def score_version(attestations: Iterable[Attestation], trust: Mapping[str, TrustPath]) -> Score:
    """Judge one version by its attestations, each weighted by how much I trust its author."""
    distinct, counted_cids = _newest_per_author(attestations)
    reasons = []
    for attestation in distinct:
        evidence = evidence_of(attestation.predicate, attestation.result)
        held = trust.get(attestation.speaker)
        if attestation.mark in UNSTANDING:
            status, author_trust, path, weight = attestation.mark, 0.0, (), 0.0
        elif attestation.withdrawn is not None:
            status, weight = WITHDRAWN, 0.0
            author_trust, path = (held.weight, held.path) if held is not None else (0.0, ())
        elif held is None:
            status, author_trust, path, weight = UNTRUSTED, 0.0, (), 0.0
        else:
            author_trust, path = held.weight, held.path
            if attestation.cid in counted_cids:
                status = COUNTED
                weight = author_trust * PREDICATE_STRENGTH[attestation.predicate]
                if evidence < 0:
                    weight *= NEGATIVE_EMPHASIS
            else:
                status, weight = SUPERSEDED, 0.0
        reasons.append(Reason(cid=attestation.cid, lab=attestation.lab, author=attestation.author,
                              predicate=attestation.predicate, result=attestation.result,
                              weight=weight, path=path, trust=author_trust, evidence=evidence,
                              status=status, withdrawn=attestation.withdrawn,
                              identity=attestation.identity if attestation.identity != attestation.author else None,
                              mark=attestation.mark, mark_reason=attestation.mark_reason))
    # Heaviest first; at equal weight the worse news first, then a stable order by author and cid.
    reasons.sort(key=lambda r: (-r.weight, r.evidence, -r.trust, r.author, r.cid))

    total_weight = 0.0
    weighted_evidence = 0.0
    for reason in reasons:
        if reason.weight > 0.0:
            total_weight += reason.weight
            weighted_evidence += reason.weight * reason.evidence
    if total_weight == 0.0:
        return Score(0.0, UNKNOWN, tuple(reasons))
    value = max(-1.0, min(1.0, weighted_evidence / total_weight))
    if value >= RECOMMENDED_AT:
        verdict = RECOMMENDED
    elif value <= NOT_RECOMMENDED_AT:
        verdict = NOT_RECOMMENDED
    else:
        verdict = MIXED
    return Score(value, verdict, tuple(reasons))


# ---------------------------------------------------------------------------------------------
# Explaining

from .labs import UNVERIFIED  # noqa: E402  (beside the explaining it serves)


def short_did(did: str) -> str:
    """``did:key:z6Mk…abcd``: enough to recognise a key in a line of text (protocol/labs.py)."""
    from .labs import short_key

    return short_key(did)


def _same(message: str) -> str:
    return message


_HEADS = {"built": lambda _: _("%(who)s built it: %(result)s"), "tested": lambda _: _("%(who)s tested it: %(result)s"),
          "reviewed": lambda _: _("%(who)s reviewed it: %(result)s"),
          "defect": lambda _: _("%(who)s reported a defect: %(result)s")}
"""A reason's first half per predicate (the web pages translate it: node/http/i18n.py)."""


def _describe_path(path: tuple[str, ...], label=short_did, _=_same) -> str:
    if len(path) == 1:
        return _("(your own key)")
    return _("via %(path)s") % {"path": " → ".join([_("you"), *(label(did) for did in path[1:])])}


def _signed_by(reason: Reason, label, signed_as, _) -> str:
    """Issue 17: "LAB (signed by key K, rotated into LAB)" or "(signed by member K for LAB)"."""
    if reason.identity is None:
        return ""
    values = {"key": short_did(reason.author), "lab": label(reason.identity)}
    if signed_as is not None and signed_as(reason.author, reason.identity) == "member":
        return " " + _("(signed by member %(key)s for %(lab)s)") % values
    return " " + _("(signed by key %(key)s, rotated into %(lab)s)") % values


def _mark_note(reason: Reason, _) -> str:
    """What a counted attestation's mark adds (the marks that count nothing have their own line)."""
    if reason.mark == "revoked-later":
        return " " + _("[signed by a key later revoked]")
    return ""


def explain(score: Score, distrusted: Mapping[str, tuple[str, ...]] | None = None, label=short_did,
            declared=None, gettext=None, word=None, trust_text=None, signed_as=None) -> list[str]:
    """One human line per reason, in the score's order; ``distrusted`` (:func:`distrusted_keys`)
    says which untrusted keys are distrusted, and by whom; ``label`` shows a key as its lab
    (node/local/names.py), else abbreviated; ``declared(key)``, the name a lab declares: an
    attestation's ``lab`` text that only repeats it is not shown twice. ``gettext``, ``word``
    (a result) and ``trust_text`` (a trust value) put the lines in a web page's language; the
    command line leaves them out and gets English. ``signed_as(key, identity)``: "rotated" or
    "member", how a key signed for the identity it counts as (issue 17, protocol/key_views.py)."""
    _ = gettext or _same
    word = word or _same
    trust_text = trust_text or (lambda value: f"{value:.2f}")
    distrusted = distrusted or {}
    lines = []
    for reason in score.reasons:
        speaker = reason.identity if reason.identity is not None else reason.author
        shown = label(speaker)
        same = (not reason.lab or shown in (reason.lab, reason.lab + UNVERIFIED)  # the lab's own name
                or (declared is not None and declared(speaker) == reason.lab))
        who = (shown if same else f"{reason.lab} ({shown})") + _signed_by(reason, label, signed_as, _)
        head = {"head": _HEADS[reason.predicate](_) % {"who": who, "result": word(reason.result)}}
        if reason.status == "doubtful":
            lines.append(_("%(head)s — not counted: doubtful: signed by a revoked key, dated before its cut-off "
                           "but received after the revocation") % head)
        elif reason.status == "conflict":
            lines.append(_("%(head)s — not counted: trusted nowhere: this lab's chain of keys is forked "
                           "(two successions from one key) until its recovery key settles it") % head)
        elif reason.status == "refused":
            lines.append(_("%(head)s — not counted: signed by a key after it was rotated or revoked") % head)
        elif reason.status == WITHDRAWN:
            lines.append(_("%(head)s — not counted: withdrawn by its author: %(reason)s")
                         % {**head, "reason": reason.withdrawn})
        elif reason.status == UNTRUSTED and speaker in distrusted:
            by = distrusted[speaker]
            lines.append(_("%(head)s — not counted: you distrust this key") % head if len(by) <= 1
                         else _("%(head)s — not counted: %(lab)s, whom you trust, distrusts this key")
                         % {**head, "lab": label(by[-1])})
        elif reason.status == UNTRUSTED:
            lines.append(_("%(head)s — not counted: no trust path from you to this key") % head)
        elif reason.status == SUPERSEDED:
            lines.append(_("%(head)s — not counted: superseded by a newer attestation from the same key "
                           "(trust %(trust)s %(path)s)")
                         % {**head, "trust": trust_text(reason.trust), "path": _describe_path(reason.path, label, _)})
        else:
            lines.append(_("%(head)s — trust %(trust)s %(path)s")
                         % {**head, "trust": trust_text(reason.trust), "path": _describe_path(reason.path, label, _)}
                         + _mark_note(reason, _))
    return lines
