"""The read-ahead thread used by add: order kept, errors surface, early exit does not hang."""

from __future__ import annotations

import pytest

from fabnode.node.local.files import in_thread


def test_items_arrive_in_order():
    assert list(in_thread(iter(range(1000)), depth=3)) == list(range(1000))


def test_producer_error_is_raised_in_the_consumer():
    def broken():
        yield 1
        raise PermissionError("disk said no")

    got = []
    with pytest.raises(PermissionError, match="disk said no"):
        for item in in_thread(broken()):
            got.append(item)
    assert got == [1]


def test_consumer_leaving_early_stops_the_producer():
    produced = []

    def endless():
        n = 0
        while True:
            produced.append(n)
            yield n
            n += 1

    stream = in_thread(endless(), depth=2)
    assert next(stream) == 0
    stream.close()  # must return, not wait forever on a full queue
    assert len(produced) < 10
