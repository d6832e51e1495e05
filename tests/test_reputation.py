"""Personal trust and version scores (protocol/reputation.py): Sybil resistance, decay, distrust, reasons."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabnode.protocol.reputation import (
    COUNTED,
    MIXED,
    NOT_RECOMMENDED,
    RECOMMENDED,
    SUPERSEDED,
    UNKNOWN,
    UNTRUSTED,
    Attestation,
    TrustPath,
    Vouch,
    compute_trust,
    explain,
    score_version,
)


def did(name: str) -> str:
    """A did:key-looking name that stays readable in failures."""
    return "did:key:z6Mk" + name.rjust(8, "x")


ME = did("me")
HONEST = did("honest")      # a lab my operator trusts; it found a defect
VOUCHER = did("voucher")    # another lab my operator trusts
BAD_VERSION_ATTESTATIONS = [Attestation("bafy-honest-defect", HONEST, "defect", "failed", "Fab Lab Nairobi", 10)]


def trusted(author: str, subject: str, ts: int = 1) -> Vouch:
    return Vouch(author, subject, "trusted", ts)


def distrusted(author: str, subject: str, ts: int = 1) -> Vouch:
    return Vouch(author, subject, "distrusted", ts)


def sybil_cluster(size: int = 1000, extra_edges: int = 5, seed: int = 7) -> tuple[list[str], list[Vouch], list[Attestation]]:
    """Fresh keys in a ring plus random chords, all vouching for each other and all praising the version."""
    rng = random.Random(seed)
    keys = [did(f"sybil{i}") for i in range(size)]
    vouches = []
    for i, key in enumerate(keys):
        vouches.append(trusted(key, keys[(i + 1) % size]))
        for other in rng.sample(keys, extra_edges):
            if other != key:
                vouches.append(trusted(key, other, ts=rng.randrange(1, 100)))
    attestations = [Attestation(f"bafy-sybil-{i}", key, "built", "passed", f"Totally Real Lab {i}", 20)
                    for i, key in enumerate(keys)]
    return keys, vouches, attestations


def negative_reasons(score):
    return [r for r in score.reasons if r.evidence < 0 and r.weight > 0]


# --- Sybils -----------------------------------------------------------------------------------


def test_unreachable_sybil_cluster_changes_nothing():
    operator_trusted = {HONEST, VOUCHER}
    honest_trust = compute_trust(ME, operator_trusted, [])
    honest_score = score_version(BAD_VERSION_ATTESTATIONS, honest_trust)

    keys, sybil_vouches, sybil_attestations = sybil_cluster()
    # The Sybils also vouch for the honest labs and distrust them: none of it may matter.
    sybil_vouches += [trusted(keys[0], VOUCHER), distrusted(keys[1], HONEST, ts=99)]
    trust = compute_trust(ME, operator_trusted, sybil_vouches)
    score = score_version(BAD_VERSION_ATTESTATIONS + sybil_attestations, trust)

    assert trust == honest_trust
    assert (score.value, score.verdict) == (honest_score.value, honest_score.verdict) == (-1.0, NOT_RECOMMENDED)
    assert len(score.reasons) == 1 + len(keys)
    assert score.reasons[0].cid == "bafy-honest-defect"
    assert score.reasons[0].path == (ME, HONEST)
    sybil_reasons = score.reasons[1:]
    assert {r.author for r in sybil_reasons} == set(keys)
    assert all(r.weight == 0.0 and r.path == () and r.trust == 0.0 and r.status == UNTRUSTED for r in sybil_reasons)


@pytest.mark.parametrize("decay, max_depth", [(0.5, 4), (0.5, 12), (0.3, 8), (0.8, 10)])
def test_one_attack_edge_gives_the_cluster_bounded_trust(decay, max_depth):
    keys, sybil_vouches, sybil_attestations = sybil_cluster()
    honest_labs = [did(f"lab{i}") for i in range(3)]
    vouches = sybil_vouches + [trusted(VOUCHER, lab) for lab in honest_labs] + [trusted(VOUCHER, keys[0])]
    trust = compute_trust(ME, {HONEST, VOUCHER}, vouches, decay=decay, max_depth=max_depth)

    sybil_trust = [trust[k].weight for k in keys if k in trust]
    assert sybil_trust and all(w > 0 for w in sybil_trust)
    # The voucher's share is divided among its four vouchees: the gateway Sybil gets a quarter of it.
    assert trust[keys[0]].weight == trust[VOUCHER].weight * decay / 4
    # The whole cluster together: at most what the gateway could hand on, and at default decay no
    # more than the voucher's own trust, however many Sybils and however densely they vouch.
    assert sum(sybil_trust) <= trust[keys[0]].weight / (1 - decay) + 1e-12
    assert sum(sybil_trust) <= trust[VOUCHER].weight * decay / (1 - decay) + 1e-12
    assert max(sybil_trust) == trust[keys[0]].weight
    assert all(trust[k].path[:3] == (ME, VOUCHER, keys[0]) for k in keys if k in trust)
    # Honest labs vouched for by the same voucher are unaffected by how many Sybils there are.
    assert all(trust[lab].weight == trust[keys[0]].weight for lab in honest_labs)

    score = score_version(BAD_VERSION_ATTESTATIONS + sybil_attestations, trust)
    assert score.verdict != RECOMMENDED
    assert negative_reasons(score)[0].cid == "bafy-honest-defect"
    sybil_weight = sum(r.weight for r in score.reasons if r.author in set(keys))
    assert 0 < sybil_weight <= trust[VOUCHER].weight * decay / (1 - decay) + 1e-12


def test_admitted_sybils_cannot_cut_off_the_keys_that_let_them_in():
    keys, sybil_vouches, _ = sybil_cluster(size=50)
    vouches = sybil_vouches + [trusted(VOUCHER, keys[0])]
    vouches += [distrusted(k, target, ts=50) for k in keys for target in (HONEST, VOUCHER)]
    trust = compute_trust(ME, {HONEST, VOUCHER}, vouches)
    assert trust[HONEST] == TrustPath(0.5, (ME, HONEST))
    assert trust[VOUCHER] == TrustPath(0.5, (ME, VOUCHER))
    assert keys[0] in trust


# --- Scores and reasons -----------------------------------------------------------------------


def test_a_trusted_defect_is_visible_and_blocks_recommendation():
    fan = did("fan")
    untrusted = [did(f"stranger{i}") for i in range(5)]
    attestations = [Attestation(f"bafy-stranger-{i}", k, "built", "passed", f"Stranger {i}", 5)
                    for i, k in enumerate(untrusted)]
    attestations += [Attestation("bafy-fan", fan, "built", "passed", "Fan Lab", 5)]
    attestations += BAD_VERSION_ATTESTATIONS
    trust = compute_trust(ME, {HONEST, fan}, [])
    score = score_version(attestations, trust)

    # Equal trust 0.5 each; the defect weighs double: (-1 * 1.0 + 1 * 0.5) / 1.5.
    assert score.value == pytest.approx(-1 / 3)
    assert score.verdict == MIXED
    defect = negative_reasons(score)[0]
    assert (defect.cid, defect.author, defect.lab, defect.path) == ("bafy-honest-defect", HONEST, "Fab Lab Nairobi", (ME, HONEST))
    assert score.reasons[0] is defect
    assert [r.cid for r in score.reasons[:2]] == ["bafy-honest-defect", "bafy-fan"]
    assert len(score.reasons) == 7
    assert all(r.weight == 0 and r.path == () for r in score.reasons[2:])
    # Without the defect the same evidence is a clear recommendation.
    without = score_version([a for a in attestations if a.predicate != "defect"], trust)
    assert (without.value, without.verdict) == (1.0, RECOMMENDED)


def test_six_equally_trusted_passes_outweigh_one_defect_but_five_do_not():
    labs = [did(f"lab{i}") for i in range(6)]
    trust = compute_trust(ME, {HONEST, *labs}, [])
    passes = [Attestation(f"bafy-pass-{i}", lab, "tested", "passed", "", 3) for i, lab in enumerate(labs)]
    assert score_version(BAD_VERSION_ATTESTATIONS + passes[:5], trust).verdict == MIXED
    six = score_version(BAD_VERSION_ATTESTATIONS + passes, trust)
    assert six.verdict == RECOMMENDED and six.value == pytest.approx(0.5)


def test_a_single_trusted_failure_is_not_recommended_and_reviews_count_less():
    lab, reviewer = did("lab"), did("reviewer")
    trust = compute_trust(ME, {lab, reviewer}, [])
    failed = Attestation("bafy-failed", lab, "built", "failed", "", 1)
    assert score_version([failed], trust).verdict == NOT_RECOMMENDED

    built_pass = Attestation("bafy-built", reviewer, "built", "passed", "", 1)
    review_pass = Attestation("bafy-review", reviewer, "reviewed", "passed", "", 1)
    with_build = score_version([failed, built_pass], trust)
    with_review = score_version([failed, review_pass], trust)
    assert with_review.value < with_build.value
    assert with_review.value == pytest.approx((0.25 - 1.0) / 1.25)
    review = next(r for r in with_review.reasons if r.cid == "bafy-review")
    assert review.weight == pytest.approx(0.25)


def test_a_warning_counts_a_little_against():
    lab = did("lab")
    trust = compute_trust(ME, {lab}, [])
    warned = score_version([Attestation("bafy-w", lab, "built", "warned", "", 1)], trust)
    assert warned.value == pytest.approx(-0.25) and warned.verdict == MIXED


def test_one_author_counts_once_with_their_newest_attestation():
    trust = compute_trust(ME, {HONEST}, [])
    older_pass = Attestation("bafy-old", HONEST, "built", "passed", "Fab Lab Nairobi", 1)
    newer_defect = Attestation("bafy-new", HONEST, "defect", "failed", "Fab Lab Nairobi", 2)
    for order in ([older_pass, newer_defect], [newer_defect, older_pass]):
        score = score_version(order, trust)
        assert (score.value, score.verdict) == (-1.0, NOT_RECOMMENDED)
        assert [(r.cid, r.status) for r in score.reasons] == [("bafy-new", COUNTED), ("bafy-old", SUPERSEDED)]
        assert score.reasons[1].weight == 0.0 and score.reasons[1].path == (ME, HONEST)
    # The same author repeating "passed" a hundred times still counts once against one defect.
    repeats = [Attestation(f"bafy-r{i}", did("fan"), "built", "passed", "", 100 + i) for i in range(100)]
    both = score_version(repeats + [newer_defect], compute_trust(ME, {HONEST, did("fan")}, []))
    assert both.value == pytest.approx(-1 / 3)
    assert sum(r.status == COUNTED for r in both.reasons) == 2


def test_the_same_record_seen_twice_is_one_reason():
    trust = compute_trust(ME, {HONEST}, [])
    copies = [Attestation(**{f: getattr(a, f) for f in a.__slots__}) for a in BAD_VERSION_ATTESTATIONS * 3]
    score = score_version(copies, trust)
    assert [r.cid for r in score.reasons] == ["bafy-honest-defect"]


def test_nothing_trusted_said_means_unknown():
    stranger = Attestation("bafy-s", did("stranger"), "built", "passed", "", 1)
    score = score_version([stranger], compute_trust(ME, set(), []))
    assert (score.value, score.verdict) == (0.0, UNKNOWN)
    assert score_version([], {}).verdict == UNKNOWN


def test_explain_gives_one_line_per_reason_with_its_path():
    # Real-length did:keys, which explain() shortens to a recognisable prefix and suffix.
    me = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
    voucher = "did:key:z6MkpTHR8VNsBxYAAWHut2Geadd9jSwuBV8xRoAnwWsdvktH"
    lab = "did:key:z6MknGc3ocHs3zdPiJbnaaqDi58NGb4pk1Sp9WxWufuXSdxf"
    stranger = "did:key:z6MkjchhfUsD6mmvni8mCdXHw216Xrm9bQe2mBH1P5RDjVJG"
    trust = compute_trust(me, {voucher}, [trusted(voucher, lab)])
    attestations = [Attestation("bafy-defect", lab, "defect", "failed", "Fab Lab Nairobi", 1),
                    Attestation("bafy-stranger", stranger, "built", "passed", "", 1),
                    Attestation("bafy-mine", me, "tested", "passed", "Home Lab", 1)]
    lines = explain(score_version(attestations, trust))
    assert lines == [
        "Home Lab (did:key:z6Mk…2doK) tested it: passed — trust 1.00 (your own key)",
        "Fab Lab Nairobi (did:key:z6Mk…Sdxf) reported a defect: failed — trust 0.25 "
        "via you → did:key:z6Mk…vktH → did:key:z6Mk…Sdxf",
        "did:key:z6Mk…jVJG built it: passed — not counted: no trust path from you to this key",
    ]


# --- Trust: decay, depth, division, distrust, personal ----------------------------------------


def test_trust_decays_per_hop_and_stops_beyond_max_depth():
    chain = [did(c) for c in "abcde"]
    vouches = [trusted(a, b) for a, b in zip(chain, chain[1:])]
    trust = compute_trust(ME, {chain[0]}, vouches)  # default decay 0.5, max_depth 4
    assert [trust[k].weight for k in chain[:4]] == [0.5, 0.25, 0.125, 0.0625]
    assert trust[chain[3]].path == (ME, *chain[:4])
    assert chain[4] not in trust
    deeper = compute_trust(ME, {chain[0]}, vouches, max_depth=5)
    assert deeper[chain[4]] == TrustPath(0.03125, (ME, *chain))
    assert set(compute_trust(ME, {chain[0]}, vouches, max_depth=0)) == {ME}


def test_a_vouchers_share_is_divided_among_its_vouchees():
    hub, spoke_count = did("hub"), 10
    spokes = [did(f"spoke{i}") for i in range(spoke_count)]
    trust = compute_trust(ME, {hub}, [trusted(hub, s) for s in spokes])
    assert all(trust[s].weight == 0.5 * 0.5 / spoke_count for s in spokes)
    # My own word is not divided: each direct key gets the full decay.
    assert all(w.weight == 0.5 for k, w in compute_trust(ME, set(spokes), [trusted(ME, hub)]).items() if k != ME)


def test_a_weaker_shorter_path_still_reaches_past_a_stronger_path_that_is_too_long():
    a, b, c, d, x, z = (did(n) for n in "abcdxz")
    fillers = [did(f"fill{i}") for i in range(9)]
    vouches = [trusted(a, x)] + [trusted(a, f) for f in fillers]        # me → a → x: 0.5 * 0.05
    vouches += [trusted(b, c), trusted(c, d), trusted(d, x)]            # me → b → c → d → x: 0.0625
    vouches += [trusted(x, z)]
    trust = compute_trust(ME, {a, b}, vouches, max_depth=4)
    assert trust[x] == TrustPath(0.0625, (ME, b, c, d, x))
    assert trust[z] == TrustPath(0.025 * 0.5, (ME, a, x, z))

    # Again, but with the strong long path found first and the weak short one only afterwards.
    e = did("e")
    vouches = [trusted(a, e)] + [trusted(a, f) for f in fillers] + [trusted(e, x)]   # me → a → e → x: 0.0125
    vouches += [trusted(b, c), trusted(c, d), trusted(d, x), trusted(x, z)]
    trust = compute_trust(ME, {a, b}, vouches, max_depth=4)
    assert trust[x] == TrustPath(0.0625, (ME, b, c, d, x))
    assert trust[z] == TrustPath(0.0125 * 0.5, (ME, a, e, x, z))


def test_a_trusted_keys_distrust_cuts_a_key_off_and_everything_behind_it():
    a, b, x, y = did("a"), did("b"), did("x"), did("y")
    vouches = [trusted(a, x), trusted(x, y)]
    assert {x, y} <= set(compute_trust(ME, {a, b}, vouches))
    cut = compute_trust(ME, {a, b}, vouches + [distrusted(b, x)])
    assert x not in cut and y not in cut and a in cut and b in cut
    # A less trusted key cannot cut off a more trusted one, nor can an equal one.
    assert a in compute_trust(ME, {a, b}, vouches + [distrusted(x, a)])
    mutual = compute_trust(ME, {a, b}, [distrusted(a, b), distrusted(b, a)])
    assert a in mutual and b in mutual
    # My own distrust beats my operator's list.
    assert a not in compute_trust(ME, {a, b}, [distrusted(ME, a)])


def test_the_newest_vouch_between_a_pair_wins_in_any_order():
    a, x = did("a"), did("x")
    later_distrust = [trusted(a, x, ts=1), distrusted(a, x, ts=2)]
    later_trust = [distrusted(a, x, ts=1), trusted(a, x, ts=2)]
    for order in (later_distrust, list(reversed(later_distrust))):
        assert x not in compute_trust(ME, {a}, order)
    for order in (later_trust, list(reversed(later_trust))):
        assert compute_trust(ME, {a}, order)[x] == TrustPath(0.25, (ME, a, x))
    # A tie at the same ts is read the safe way.
    assert x not in compute_trust(ME, {a}, [trusted(a, x, ts=5), distrusted(a, x, ts=5)])
    assert x not in compute_trust(ME, {a}, [distrusted(a, x, ts=5), trusted(a, x, ts=5)])


def test_trust_is_personal():
    alice, bob, carol = did("alice"), did("bob"), did("carol")
    vouches = [trusted(alice, bob), trusted(bob, carol), distrusted(carol, alice)]
    from_alice = compute_trust(alice, set(), vouches)
    from_bob = compute_trust(bob, set(), vouches)
    assert from_alice != from_bob
    assert from_alice[alice].weight == 1.0 and from_bob[bob].weight == 1.0
    assert from_alice[bob].weight == 0.5 and from_alice[carol].weight == 0.25
    assert alice not in from_bob   # bob never vouched for alice, and carol distrusts her anyway
    assert from_bob[carol] == TrustPath(0.5, (bob, carol))


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError):
        Vouch(ME, HONEST, "maybe", 1)
    with pytest.raises(ValueError):
        Attestation("bafy", ME, "liked", "passed", "", 1)
    with pytest.raises(ValueError):
        Attestation("bafy", ME, "built", "great", "", 1)
    with pytest.raises(ValueError):
        compute_trust(ME, set(), [], decay=1.0)


# --- Properties against a slow, separately written reference --------------------------------------

NAMES = [did(f"k{i}") for i in range(7)]


def reference_trust(me, operator_trusted, vouches, decay, max_depth):
    """The rules read literally: settle keys strongest first by enumerating every simple path."""
    newest = {}
    for v in sorted(vouches, key=lambda v: (v.ts, v.trust == "distrusted")):
        if v.author != v.subject:
            newest[(v.author, v.subject)] = v.trust
    out: dict[str, set[str]] = {}
    for (author, subject), value in newest.items():
        if value == "trusted":
            out.setdefault(author, set()).add(subject)
    direct = (out.get(me, set()) | set(operator_trusted)) - {me}

    def successors(u):
        return direct if u == me else out.get(u, set())

    def factor(u):
        return decay if u == me else decay / len(out[u])

    decided, cut = {me: 1.0}, set()
    while True:
        candidates: dict[str, float] = {}

        def walk(u, t, hops, seen):
            if hops == max_depth:
                return
            for c in successors(u):
                if c in seen or c in cut:
                    continue
                ct = t * factor(u)
                if c in decided:
                    walk(c, ct, hops + 1, seen | {c})
                else:
                    candidates[c] = max(candidates.get(c, 0.0), ct)

        walk(me, 1.0, 0, {me})
        if not candidates:
            return decided
        strongest = max(candidates.values())
        for key in [k for k, t in candidates.items() if t == strongest]:
            distrusters = [a for (a, s), value in newest.items() if s == key and value == "distrusted"]
            if any(a == me or decided.get(a, 0.0) > strongest for a in distrusters):
                cut.add(key)
            else:
                decided[key] = strongest


graphs = st.lists(
    st.builds(Vouch, st.sampled_from(NAMES), st.sampled_from(NAMES),
              st.sampled_from(["trusted", "trusted", "trusted", "distrusted"]), st.integers(0, 3)),
    max_size=30)


@settings(max_examples=300, deadline=None)
@given(graphs, st.sets(st.sampled_from(NAMES[1:]), max_size=3),
       st.floats(0.05, 0.95), st.integers(0, 5))
def test_trust_matches_the_reference_and_explains_itself(vouches, operator_trusted, decay, max_depth):
    me = NAMES[0]
    trust = compute_trust(me, operator_trusted, vouches, decay=decay, max_depth=max_depth)
    expected = reference_trust(me, operator_trusted, vouches, decay, max_depth)
    assert {k: t.weight for k, t in trust.items()} == expected
    assert trust == compute_trust(me, operator_trusted, list(reversed(vouches)), decay=decay, max_depth=max_depth)

    newest = {}
    for v in sorted(vouches, key=lambda v: (v.ts, v.trust == "distrusted")):
        newest[(v.author, v.subject)] = v.trust
    out_degree: dict[str, int] = {}
    for (author, subject), value in newest.items():
        if value == "trusted" and author != subject:
            out_degree[author] = out_degree.get(author, 0) + 1
    for key, held in trust.items():
        assert held.path[0] == me and held.path[-1] == key and held.hops <= max_depth
        assert len(set(held.path)) == len(held.path)
        weight = 1.0
        for u, v in zip(held.path, held.path[1:]):
            if u == me:
                assert v in operator_trusted or newest.get((me, v)) == "trusted"
                weight *= decay
            else:
                assert newest.get((u, v)) == "trusted" and u in trust
                weight *= decay / out_degree[u]
        assert weight == held.weight
    # Conservation: all keys but me together hold at most what my direct keys can hand on.
    direct = ({s for (a, s), value in newest.items() if a == me and value == "trusted"} | operator_trusted) - {me}
    assert sum(t.weight for k, t in trust.items() if k != me) <= len(direct) * decay / (1 - decay) + 1e-9
