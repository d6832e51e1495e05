"""The chain of keys, pure (issue 17): record checks at verify time and the resolver's rules.

Every hostile case of the issue is one test here; the property test shuffles arrival orders of a
generated history (protocol/keys.py promises the result depends on the set, not the order).
"""

from __future__ import annotations

import functools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabnode.protocol.keys import resolve, succession_statement
from fabnode.protocol.records import RecordRejected, make_record, verify_record

from keychains import T0, Key, key_records, lab, member, revocation, succession

MIN = 60_000
NOW = T0 + 10_000 * MIN


def resolved(*records, first_signed=None):
    return resolve(key_records(records), first_signed)


@pytest.fixture(scope="module")
def keys():
    return {name: Key(seed) for seed, name in enumerate(
        ("root", "next", "third", "thief", "recovery", "other", "alice", "bob", "carol", "fresh", "recovery2"), start=1)}


# ---------------------------------------------------------------- verify time: what a record proves alone


def test_a_succession_signed_by_only_one_of_the_two_keys_is_refused(keys):
    root, nxt, thief = keys["root"], keys["next"], keys["thief"]
    good = succession(root, nxt, T0)
    assert verify_record(good.raw, NOW).body["next"] == nxt.did
    # the old key signs, but next_sig is by another key (the old key itself, or a thief)
    for signer in (root, thief):
        body = {"next": nxt.did, "next_sig": signer.sign(succession_statement(root.did, nxt.did, T0))}
        with pytest.raises(RecordRejected, match=r"^record rejected: body.next_sig is not .* signature of this succession"):
            make_record("succession", body, author=root.did, ts=T0, sign=root.sign)
    # next_sig over another ts (a replayed acceptance) does not verify either
    body = {"next": nxt.did, "next_sig": nxt.sign(succession_statement(root.did, nxt.did, T0 - 1))}
    with pytest.raises(RecordRejected, match="next_sig"):
        make_record("succession", body, author=root.did, ts=T0, sign=root.sign)


def test_a_tampered_next_sig_is_refused_on_arrival_in_one_line(keys):
    good = succession(keys["root"], keys["next"], T0)
    sig = good.body["next_sig"]
    tampered = good.raw.replace(sig, bytes([sig[0] ^ 1]) + sig[1:])
    with pytest.raises(RecordRejected) as caught:
        verify_record(tampered, NOW)
    # the record's own signature (over the body) fails first: the cheaper check
    assert "\n" not in str(caught.value) and "signature does not verify" in str(caught.value)


def test_key_record_bodies_are_checked_before_any_signature(keys):
    root, nxt, rec = keys["root"], keys["next"], keys["recovery"]
    cases = [
        ("succession", {"next": root.did, "next_sig": b"\0" * 64}, root, "next key other than its author"),
        ("succession", {"next": nxt.did, "next_sig": b"\0" * 63}, root, "next_sig must be 64 bytes"),
        ("revocation", {"identity": root.did, "revoked": root.did, "cutoff": T0, "next": root.did,
                        "next_sig": b"\0" * 64}, rec, "other than the revoked one"),
        ("revocation", {"identity": root.did, "revoked": root.did, "cutoff": -1, "next": nxt.did,
                        "next_sig": b"\0" * 64}, rec, "cutoff must be a non-negative"),
        ("revocation", {"identity": root.did, "revoked": root.did, "cutoff": T0, "next": nxt.did,
                        "next_sig": b"\0" * 64, "recovery": b"x"}, rec, "recovery must be 32 bytes"),
        ("member", {"lab": root.did, "member": nxt.did, "role": "owner"}, root, "role must be one of"),
        ("member", {"lab": root.did, "member": root.did, "role": "member"}, root, "own key is not one of its members"),
        ("member", {"lab": root.did, "member": nxt.did, "role": "member", "note": "x" * 501}, root, "longer than 500"),
    ]
    for rtype, body, author, reason in cases:
        with pytest.raises(RecordRejected, match=reason):
            make_record(rtype, body, author=author.did, ts=T0, sign=author.sign)


def test_a_revocation_with_a_cutoff_after_its_own_time_is_refused(keys):
    with pytest.raises(RecordRejected, match="cutoff .* is after its own time"):
        revocation(keys["recovery"], keys["root"], keys["root"], keys["next"], cutoff=T0 + 1, ts=T0)


# ---------------------------------------------------------------- the resolver


def test_a_rotation_makes_one_identity_and_refuses_the_old_key_afterwards(keys):
    root, nxt, third = keys["root"], keys["next"], keys["third"]
    ids = resolved(lab(root, T0), succession(root, nxt, T0 + MIN), succession(nxt, third, T0 + 2 * MIN))
    assert ids.identity_of(third.did) == ids.identity_of(nxt.did) == root.did
    assert [(link.key, link.how) for link in ids.chain(third.did)] == [
        (root.did, "root"), (nxt.did, "rotated"), (third.did, "rotated")]
    assert ids.current_key(root.did) == third.did
    assert ids.standing(root.did, T0 + MIN).kind == "ok"  # the rotation's own time
    refused = ids.standing(root.did, T0 + MIN + 1)
    assert refused.kind == "refused" and "after it was rotated to" in refused.reason
    assert ids.standing(third.did, NOW).kind == "ok"
    assert ids.speaks_for(nxt.did, T0 + MIN + 5) == root.did
    assert ids.speaks_for(root.did, T0 + 3 * MIN) is None


def test_a_key_cannot_rotate_to_a_key_another_identity_already_uses(keys):
    root, other, nxt = keys["root"], keys["other"], keys["next"]
    # `other` signed its own lab record before the rotation: it is someone else's key
    rotate = succession(root, other, T0 + MIN)
    ids = resolved(lab(other, T0), rotate)
    assert "a key already in use" in ids.refused_records()[rotate.cid]
    assert ids.identity_of(other.did) == other.did and ids.current_key(root.did) == root.did
    # the same when storage says it signed anything (a vouch) before
    ids = resolved(rotate, first_signed={other.did: T0})
    assert rotate.cid in ids.refused_records()
    # two chains rotating into one fresh key: the first (by ts) enters it, the second is refused
    first, second = succession(root, nxt, T0 + MIN), succession(other, nxt, T0 + 2 * MIN)
    ids = resolved(first, second)
    assert ids.identity_of(nxt.did) == root.did
    assert "another identity already uses" in ids.refused_records()[second.cid]


def test_a_revocation_without_a_committed_recovery_is_refused(keys):
    root, nxt, rec = keys["root"], keys["next"], keys["recovery"]
    revoke = revocation(rec, root, root, nxt, cutoff=T0 + MIN, ts=T0 + 2 * MIN)
    ids = resolved(lab(root, T0), revoke)
    assert ids.refused_records()[revoke.cid] == f"no recovery key was committed for {root.did}"
    assert ids.standing(root.did, NOW).kind == "ok"
    # committed, but to another recovery key
    ids = resolved(lab(root, T0, recovery=keys["other"]), revoke)
    assert ids.refused_records()[revoke.cid] == f"not the recovery key committed for {root.did}"
    # a later lab record changing the commitment does not count: the earliest one does (flagged)
    change = lab(root, T0 + 1, recovery=rec)
    ids = resolved(lab(root, T0, recovery=keys["other"]), change, revoke)
    assert revoke.cid in ids.refused_records()
    assert "committed to another recovery key first" in ids.ignored_recoveries()[change.cid]


def test_a_revocation_cuts_off_the_key_and_its_next_takes_over(keys):
    root, nxt, rec = keys["root"], keys["next"], keys["recovery"]
    cutoff = T0 + 5 * MIN
    revoke = revocation(rec, root, root, nxt, cutoff=cutoff, ts=T0 + 9 * MIN)
    ids = resolved(lab(root, T0, recovery=rec), revoke)
    assert revoke.cid not in ids.refused_records()
    assert ids.current_key(root.did) == nxt.did
    assert ids.chain(root.did)[-1].how == "recovered" and ids.chain(root.did)[0].revoked_cutoff == cutoff
    before = ids.standing(root.did, cutoff)
    assert before.kind == "revoked" and before.revocation == revoke.cid
    assert ids.standing(root.did, cutoff + 1).kind == "refused"
    assert "revocation cutoff" in ids.standing(root.did, cutoff + 1).reason


def test_a_revoked_key_cannot_rotate_after_its_cutoff_nor_revoke_its_successor(keys):
    root, nxt, thief, rec = keys["root"], keys["next"], keys["thief"], keys["recovery"]
    cutoff = T0 + 5 * MIN
    # the thief, holding root, rotates it to its own key after the theft...
    stolen = succession(root, thief, T0 + 6 * MIN)
    revoke = revocation(rec, root, root, nxt, cutoff=cutoff, ts=T0 + 9 * MIN)
    # ...and signs a "revocation" of the successor with the stolen key: it is not the recovery key
    counter = revocation(root, root, nxt, thief, cutoff=T0 + 9 * MIN, ts=T0 + 10 * MIN)
    ids = resolved(lab(root, T0, recovery=rec), stolen, revoke, counter)
    refused = ids.refused_records()
    assert "cannot rotate after" in refused[stolen.cid]
    assert refused[counter.cid] == f"not the recovery key committed for {root.did}"
    assert ids.current_key(root.did) == nxt.did
    assert ids.identity_of(thief.did) == thief.did


def test_only_a_chains_root_commits_a_recovery_key_that_can_revoke(keys):
    """A thief holding a key the lab rotated *to* back-dates a lab record naming their own recovery
    key and signs a revocation of the chain under it, as if the stolen key were an identity."""
    root, nxt, thief, rec = keys["root"], keys["next"], keys["thief"], keys["recovery"]
    rotate = succession(root, nxt, T0 + 2 * MIN)
    backdated = lab(nxt, T0 + 2 * MIN + 1, recovery=thief)  # before the lab re-signs with its new key
    takeover = revocation(thief, nxt, nxt, keys["other"], cutoff=T0 + 3 * MIN, ts=T0 + 4 * MIN)
    ids = resolved(lab(root, T0, recovery=rec), rotate, backdated, takeover)
    assert ids.refused_records()[takeover.cid] == (f"{nxt.did} is not the root of its chain of keys: "
                                                  "only the root's recovery key revokes")
    assert ids.current_key(root.did) == nxt.did and ids.standing(nxt.did, NOW).kind == "ok"
    # the root's own recovery key still can
    settle = revocation(rec, root, nxt, keys["fresh"], cutoff=T0 + 3 * MIN, ts=T0 + 5 * MIN)
    ids = resolved(lab(root, T0, recovery=rec), rotate, backdated, takeover, settle)
    assert settle.cid not in ids.refused_records() and ids.current_key(root.did) == keys["fresh"].did


def test_a_fresh_recovery_key_replaces_the_committed_one(keys):
    root, nxt, third, rec, rec2 = (keys[k] for k in ("root", "next", "third", "recovery", "recovery2"))
    first = revocation(rec, root, root, nxt, cutoff=T0 + MIN, ts=T0 + 2 * MIN, fresh_recovery=rec2)
    old_again = revocation(rec, root, nxt, third, cutoff=T0 + 3 * MIN, ts=T0 + 4 * MIN)
    new_again = revocation(rec2, root, nxt, third, cutoff=T0 + 3 * MIN, ts=T0 + 5 * MIN)
    ids = resolved(lab(root, T0, recovery=rec), first, old_again, new_again)
    assert ids.refused_records() == {old_again.cid: f"not the recovery key committed for {root.did}"}
    assert ids.current_key(root.did) == third.did


def test_a_fork_is_a_conflict_trusted_nowhere_until_the_recovery_key_settles_it(keys):
    root, nxt, thief, rec = keys["root"], keys["next"], keys["thief"], keys["recovery"]
    mine, theirs = succession(root, nxt, T0 + 2 * MIN), succession(root, thief, T0 + 3 * MIN)
    records = [lab(root, T0, recovery=rec), mine, theirs]
    ids = resolved(*records)
    assert "rotated twice" in ids.conflicts()[root.did]
    assert ids.current_key(root.did) is None
    for key, ts in ((root, T0 + MIN), (nxt, T0 + 4 * MIN), (thief, T0 + 4 * MIN)):
        assert ids.standing(key.did, ts).kind == "conflict"
        assert ids.speaks_for(key.did, ts) is None
    # the forked key is retired at its earliest branch all the same
    assert ids.standing(root.did, T0 + 4 * MIN).kind == "refused"
    # the recovery key chooses `next`: the fork is settled, the thief's branch counts for no one
    settle = revocation(rec, root, root, nxt, cutoff=T0 + MIN, ts=T0 + 5 * MIN)
    ids = resolved(*records, settle)
    assert ids.conflicts() == {}
    assert ids.current_key(root.did) == nxt.did
    assert ids.identity_of(thief.did) == thief.did
    assert ids.standing(nxt.did, T0 + 6 * MIN).kind == "ok"
    assert "cannot rotate after" in ids.refused_records()[theirs.cid]


def test_members_and_maintainers_over_time(keys):
    root, alice, bob, carol, nxt = (keys[k] for k in ("root", "alice", "bob", "carol", "next"))
    add_alice = member(root, root, alice, "maintainer", T0 + MIN)
    add_bob = member(alice, root, bob, "member", T0 + 2 * MIN)
    bob_adds = member(bob, root, carol, "member", T0 + 3 * MIN)
    remove_bob = member(alice, root, bob, "removed", T0 + 4 * MIN)
    # after a rotation of the lab, the new key (and alice, still maintainer) keep authority
    rotate = succession(root, nxt, T0 + 5 * MIN)
    carol_by_new_key = member(nxt, root, carol, "member", T0 + 6 * MIN)
    old_key_late = member(root, root, carol, "maintainer", T0 + 7 * MIN)
    ids = resolved(lab(root, T0), add_alice, add_bob, bob_adds, remove_bob, rotate, carol_by_new_key, old_key_late)
    refused = ids.refused_records()
    assert "is a member, not a maintainer" in refused[bob_adds.cid]
    assert "after it was rotated" in refused[old_key_late.cid]
    assert set(refused) == {bob_adds.cid, old_key_late.cid}
    assert ids.role(alice.did, root.did, T0 + MIN) == "maintainer"
    assert ids.role(alice.did, nxt.did, NOW) == "maintainer"
    assert ids.role(bob.did, root.did, T0 + 3 * MIN) == "member"
    assert ids.role(bob.did, root.did, T0 + 4 * MIN) is None  # removal stops future records...
    assert ids.speaks_for(bob.did, T0 + 3 * MIN) == root.did  # ...and keeps past ones
    assert ids.speaks_for(bob.did, T0 + 5 * MIN) == bob.did
    assert ids.role(nxt.did, root.did, NOW) == "key"
    assert ids.members(root.did) == [
        (alice.did, "maintainer", T0 + MIN, None), (bob.did, "member", T0 + 2 * MIN, T0 + 4 * MIN),
        (carol.did, "member", T0 + 6 * MIN, None)]
    # a stranger cannot add members
    stranger = member(keys["thief"], root, keys["thief"], "maintainer", T0 + MIN)
    assert "neither" in resolved(stranger).refused_records()[stranger.cid]


# ---------------------------------------------------------------- order independence


@functools.cache
def _history(seed: int) -> tuple:
    """A realistic history of a few labs: rotations, a theft and its revocation, a fork settled,
    members added and removed, and hostile records (a thief's rotation, a member adding)."""
    rng = random.Random(seed)
    base = 1000 + seed * 100
    k = [Key(base + i) for i in range(40)]
    out = []
    for lab_index in range(3):
        root, rec = k[lab_index * 12], k[lab_index * 12 + 1]
        chain = [root] + k[lab_index * 12 + 2: lab_index * 12 + 2 + rng.randint(1, 3)]
        ts = T0 + lab_index
        out.append(lab(root, ts, recovery=rec))
        for old, new in zip(chain, chain[1:]):
            ts += rng.randint(1, 5) * MIN
            out.append(succession(old, new, ts))
        thief, fresh = k[lab_index * 12 + 7], k[lab_index * 12 + 8]
        current = chain[-1]
        signer = current
        if rng.random() < 0.7:
            signer = fresh
            out.append(succession(current, thief, ts + 3 * MIN))
            if rng.random() < 0.5:
                out.append(succession(current, k[lab_index * 12 + 9], ts + 4 * MIN))  # a fork
            out.append(revocation(rec, root, current, fresh, cutoff=ts + 2 * MIN, ts=ts + 6 * MIN))
        alice, bob = k[lab_index * 12 + 10], k[lab_index * 12 + 11]
        out.append(member(signer, root, alice, "maintainer", T0 + 30 * MIN))
        out.append(member(alice, root, bob, "member", T0 + 31 * MIN))
        out.append(member(bob, root, k[(lab_index * 12 + 13) % 40], "member", T0 + 32 * MIN))
        out.append(member(root, root, bob, "maintainer", T0 + 32 * MIN))  # the retired root key: refused
        if rng.random() < 0.5:
            out.append(member(alice, root, bob, "removed", T0 + 33 * MIN))
    return tuple(out)


def test_the_history_exercises_every_rule():
    ids = resolved(*_history(0))
    reasons = " | ".join(ids.refused_records().values())
    assert "cannot rotate after" in reasons and "not a maintainer" in reasons
    assert any(link.how == "recovered" for root in {ids.identity_of(r.author) for r in _history(0)}
               for link in ids.chain(root))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(seed=st.integers(0, 3), order=st.randoms(use_true_random=False))
def test_any_arrival_order_gives_the_same_identities(seed, order):
    history = _history(seed)
    expected = resolved(*history)
    shuffled = list(history)
    order.shuffle(shuffled)
    got = resolved(*shuffled)
    assert got == expected
    authors = {r.author for r in history}
    for author in authors:
        for ts in (T0, T0 + 10 * MIN, T0 + 40 * MIN):
            assert got.standing(author, ts) == expected.standing(author, ts)
            assert got.speaks_for(author, ts) == expected.speaks_for(author, ts)


def test_key_records_read_as_one_log_line(keys):
    from fabnode.node.service.service import describe_record

    root, nxt, rec = keys["root"], keys["next"], keys["recovery"]
    lines = [describe_record(succession(root, nxt, T0)),
             describe_record(revocation(rec, root, root, nxt, cutoff=T0, ts=T0 + 1)),
             describe_record(member(root, root, keys["alice"], "maintainer", T0))]
    assert lines[0].startswith("succession ") and "rotates to" in lines[0]
    assert lines[1].startswith("revocation ") and f"revoked from {T0}" in lines[1]
    assert lines[2].startswith("member ") and "maintainer" in lines[2]
    assert all("\n" not in line for line in lines)
