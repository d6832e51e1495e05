"""Range-based set reconciliation (protocol/reconcile.py): a property-based state machine,
golden message vectors, hostile messages, and the cost for 100,000 items."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from fabnode.protocol.reconcile import (
    FINGERPRINT,
    INFINITY,
    SKIP,
    Bound,
    ItemSet,
    Range,
    Reconciler,
    ReconcileError,
    decode_message,
    encode_message,
    short_id,
)


def item(n: int, ts: int | None = None) -> tuple[int, bytes]:
    return (1_764_000_000_000 + n % 1000 if ts is None else ts, hashlib.sha256(b"record %d" % n).digest())


def reconcile(a: set, b: set, **params) -> dict:
    """Run the protocol between two sides until done; what each learned and what it cost."""
    sides = [Reconciler(ItemSet(a), **params), Reconciler(ItemSet(b), **params)]
    message = sides[0].initiate()
    sizes = [len(message)]
    send = {0: [], 1: []}
    ask = {0: [], 1: []}
    turn = 1
    while message is not None:
        outcome = sides[turn].respond(message)
        send[turn] += outcome.send
        ask[turn] += outcome.ask
        message = outcome.reply
        if message is not None:
            sizes.append(len(message))
        turn = 1 - turn
        assert len(sizes) < 200, "no convergence"
    return {"send": send, "ask": ask, "messages": len(sizes), "bytes": sum(sizes), "sizes": sizes, "sides": sides}


def apply(result: dict, a: set, b: set) -> tuple[set, set]:
    """Move records as the sync layer would: sent ones, and asked-for ones (by short id)."""
    a, b = set(a), set(b)
    for side, mine, other in ((0, a, b), (1, b, a)):
        by_id = {i: (t, i) for t, i in mine}
        other |= {by_id[i] for i in result["send"][side]}
        peer_items = result["sides"][1 - side].items
        for short in result["ask"][side]:
            for full in peer_items.ids_for_short(short):
                mine.add(next(x for x in peer_items.items if x[1] == full))
    return a, b


class Replicas(RuleBasedStateMachine):
    """Random adds on both sides, then reconcile: both must equal the union, and exactly the
    differences must have been named (nothing sent that the other had)."""

    def __init__(self) -> None:
        super().__init__()
        self.a: set = set()
        self.b: set = set()
        self.counter = 0

    def _new(self, ts_choice: int) -> tuple[int, bytes]:
        self.counter += 1
        return item(self.counter, 1_764_000_000_000 + ts_choice)

    @rule(ts=st.integers(0, 20))
    def add_to_a(self, ts):
        self.a.add(self._new(ts))

    @rule(ts=st.integers(0, 20))
    def add_to_b(self, ts):
        self.b.add(self._new(ts))

    @rule(ts=st.integers(0, 20), n=st.integers(1, 30))
    def add_to_both(self, ts, n):
        for _ in range(n):
            new = self._new(ts)
            self.a.add(new)
            self.b.add(new)

    @rule(branches=st.integers(2, 5), initial=st.integers(1, 8), threshold=st.integers(1, 6),
          frame_limit=st.sampled_from([40, 200, 1 << 20]))
    def reconcile(self, branches, initial, threshold, frame_limit):
        result = reconcile(self.a, self.b, branches=branches, initial_branches=initial,
                           idlist_threshold=threshold, frame_limit=frame_limit)
        only_a, only_b = self.a - self.b, self.b - self.a
        named_a = set(result["send"][0]) | {i for t, i in only_a if short_id(i) in set(result["ask"][1])}
        named_b = set(result["send"][1]) | {i for t, i in only_b if short_id(i) in set(result["ask"][0])}
        assert named_a == {i for _, i in only_a}
        assert named_b == {i for _, i in only_b}
        self.a, self.b = apply(result, self.a, self.b)


TestReplicas = Replicas.TestCase
TestReplicas.settings = settings(max_examples=60, stateful_step_count=30, deadline=None, derandomize=True)


def test_identical_sets_finish_in_one_message_pair():
    items = {item(n) for n in range(500)}
    result = reconcile(items, set(items))
    assert result["messages"] == 1 and result["send"] == {0: [], 1: []}


def test_an_empty_side_learns_everything():
    items = {item(n) for n in range(300)}
    result = reconcile(set(), items)
    a, b = apply(result, set(), items)
    assert a == b == items


# ------------------------------------------------------------------ golden vectors

GOLDEN_ITEMS = [item(n, 1_764_000_000_000 + n // 3) for n in range(20)]


def test_golden_message_vectors():
    """The exact bytes of the first two messages for a fixed set: a change to the wire format
    or the fingerprint shows up here (and must be a new version)."""
    a = Reconciler(ItemSet(GOLDEN_ITEMS), initial_branches=4, branches=2, idlist_threshold=2)
    b = Reconciler(ItemSet(GOLDEN_ITEMS[:-1] + [item(99, 1_764_000_000_000 + 2)]), initial_branches=4,
                   branches=2, idlist_threshold=2)
    first = a.initiate()
    assert first.hex() == GOLDEN_FIRST
    second = b.respond(first).reply
    assert second.hex() == GOLDEN_SECOND
    assert decode_message(first)[0].upper == Bound(1_764_000_000_001, b"\xa2")  # same ts: an id prefix separates


GOLDEN_FIRST = "6182d0dfb4ab3301a2013fe8e02b53ca44cb0301c501425ce96615bb9edb0300010dbe5271a27f340c00000187611aa98fa0ead8"
GOLDEN_SECOND = "6182d0dfb4ab3301a2000201fe01927c603def3fbe2b0201c50112a37bbaadd7a17903000001016901b79bafc8ca909a7b000001768e87804fcfb9e3"


# ------------------------------------------------------------------ hostile messages


def _fp_range(upper=INFINITY):
    return Range(upper, FINGERPRINT, b"\0" * 8)


@pytest.mark.parametrize("message, reason", [
    (b"", "unsupported version"),
    (b"\x60" + encode_message([_fp_range()])[1:], "unsupported version"),
    (encode_message([Range(Bound(5, b"\x09"), SKIP), Range(Bound(5, b"\x01"), SKIP), _fp_range()]),
     "bounds must increase"),
    (encode_message([Range(Bound(5), SKIP)]), "must end with the infinite bound"),
    (encode_message([_fp_range(), Range(Bound(5), SKIP)]), "bounds must increase"),
    (encode_message([_fp_range()])[:-3], "truncated fingerprint"),
    (bytes([0x61, 0, 0, 7]), "unknown mode 7"),
    (bytes([0x61, 0, 40]) + b"\0" * 40 + bytes([0]), "bad bound prefix"),
    (bytes([0x61, 0, 0, 2]) + bytes([0xff, 0xff, 0x01]), "bad id list"),
    (bytes([0x61, 0x80]), "truncated varint"),
])
def test_hostile_messages_are_refused_with_a_reason(message, reason):
    side = Reconciler(ItemSet([item(n) for n in range(50)]))
    with pytest.raises(ReconcileError, match=reason):
        side.respond(message)


def test_a_frame_limit_defers_the_rest_to_later_rounds():
    a = {item(n) for n in range(2000)}
    b = {item(n) for n in range(0, 2000, 2)}
    limited = reconcile(a, b, frame_limit=300)
    unlimited = reconcile(a, b)
    assert max(unlimited["sizes"]) > 1000
    # a frame stops growing once over the limit: at most one more range's worth past it
    assert max(limited["sizes"]) <= 300 + 16 * 8 + 64
    assert limited["messages"] > unlimited["messages"]
    x, y = apply(limited, a, b)
    assert x == y == a


# ------------------------------------------------------------------ cost


@pytest.mark.parametrize("differences, max_messages, max_bytes", [(1, 4, 2048), (100, 8, 64 * 1024)])
def test_cost_grows_with_the_difference_not_the_store(differences, max_messages, max_bytes):
    """100,000 records on each side, differing by 1 or by 100 (half on each side): at most four
    round trips (eight messages) and 64 KiB of reconciliation traffic for 100 differences."""
    rng = random.Random(7)
    common = [(1_764_000_000_000 + rng.randrange(10**9), hashlib.sha256(b"c%d" % i).digest())
              for i in range(100_000 - differences // 2)]
    only_a = [(1_764_000_000_000 + rng.randrange(10**9), hashlib.sha256(b"a%d" % i).digest())
              for i in range(differences // 2)]
    only_b = [(1_764_000_000_000 + rng.randrange(10**9), hashlib.sha256(b"b%d" % i).digest())
              for i in range(differences - differences // 2)]
    result = reconcile(set(common + only_a), set(common + only_b))
    assert result["messages"] <= max_messages and result["bytes"] <= max_bytes, result["bytes"]
    named = len(result["send"][0]) + len(result["send"][1]) + len(result["ask"][0]) + len(result["ask"][1])
    assert named == differences
