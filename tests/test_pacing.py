"""The priority pacer (node/service/pacing.py): one upload cap for every protocol, records first.

Pure bookkeeping, fed times by hand: what a broken pacer gets wrong is which request goes when.
"""

from __future__ import annotations

from fabnode.node.service.pacing import BUNDLES, BURST_MS, OWN_BUNDLES, RECORDS, PriorityPacer


def drain(pacer: PriorityPacer, until_ms: float, step_ms: float = 1.0) -> list[tuple[float, object]]:
    """Grant at every step up to ``until_ms``: (time, key) in the order they went."""
    out, now = [], 0.0
    while now <= until_ms:
        out += [(now, key) for key in pacer.grant(now)]
        now += step_ms
    return out


def test_no_cap_grants_everything_at_once_and_counts_it():
    pacer = PriorityPacer(0)
    assert all(pacer.request(i, BUNDLES, 1 << 20, 0, protocol="fetch", peer="p") for i in range(100))
    assert pacer.next_ms() is None and pacer.grant(0) == []
    assert pacer.sent == {"fetch": 100 << 20} and pacer.sent_to == {"p": {"fetch": 100 << 20}}


def test_the_cap_spaces_every_protocol_together():
    """1000 B/s: four 500-byte pieces of three protocols take two seconds between them, whoever
    asks; a pacer per protocol would let them all go at once."""
    pacer = PriorityPacer(1000)
    assert pacer.request("a", BUNDLES, 500, 0, protocol="fetch")
    granted = [pacer.request(k, p, 500, 0, protocol=proto)
               for k, p, proto in (("b", RECORDS, "sync"), ("c", RECORDS, "gossip"), ("d", BUNDLES, "fetch"))]
    assert granted == [False, False, False]
    went = dict((k, t) for t, k in drain(pacer, 3000))
    assert went["b"] >= 500 - BURST_MS and went["c"] >= 1000 - BURST_MS and went["d"] >= 1500 - BURST_MS
    assert pacer.sent == {"fetch": 1000, "sync": 500, "gossip": 500}


def test_records_asked_later_go_before_waiting_bundle_pieces():
    """A bundle's 20 pieces are queued; a record frame's piece asked afterwards goes next, not
    after the bundle; own and followed bundles go before other bundles."""
    pacer = PriorityPacer(16_000)
    piece = pacer.piece_bytes()
    assert piece == 2000
    went_at_once = [pacer.request(("other", i), BUNDLES, piece, 0) for i in range(20)]
    assert went_at_once == [True] + [False] * 19  # the link was free for the first piece
    for i in range(3):
        pacer.request(("own", i), OWN_BUNDLES, piece, 0)
    pacer.request("record", RECORDS, 300, 10)
    order = [key for _, key in drain(pacer, 10_000)]
    assert order == ["record", *[("own", i) for i in range(3)], *[("other", i) for i in range(1, 20)]]


def test_a_record_waits_at_most_about_one_piece():
    """With a bundle streaming at the cap, a record asked at any moment goes within one piece's
    time plus the burst: the link's queue never holds more than that ahead of it."""
    rate = 32_000
    pacer = PriorityPacer(rate)
    piece = pacer.piece_bytes()
    for i in range(200):
        pacer.request(("bundle", i), BUNDLES, piece, 0)
    now, asked_at, went_at = 0.0, None, None
    while went_at is None:
        if now >= 1234 and asked_at is None:
            asked_at = now
            pacer.request("record", RECORDS, 500, now)
        if "record" in pacer.grant(now):
            went_at = now
        now += 1
    assert went_at - asked_at <= piece * 1000 / rate + BURST_MS


def test_a_cancelled_request_never_goes_and_waiting_is_reported():
    pacer = PriorityPacer(1000)
    pacer.request("first", BUNDLES, 1000, 0)
    pacer.request("gone", RECORDS, 100, 0)
    pacer.request("bundle", BUNDLES, 700, 0)
    assert pacer.waiting() == {"records": 100, "other bundles": 700}
    pacer.cancel("gone")
    assert [k for _, k in drain(pacer, 3000)] == ["bundle"]
    assert pacer.next_ms() is None and pacer.waiting() == {}


def test_pieces_are_about_an_eighth_of_a_second():
    assert PriorityPacer(32_000).piece_bytes() == 4000
    assert PriorityPacer(1000).piece_bytes() == 1024
    assert PriorityPacer(10_000_000).piece_bytes() == 16 << 10
