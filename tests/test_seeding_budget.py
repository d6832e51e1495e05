"""The seeding budget's pure decisions (node/service/seeding.py): which seeded bundle goes when
the budget is passed, and that a dropped bundle is not fetched again (no fetch-and-drop circle).
The daemon doing it for real: tests/test_disk.py."""

from __future__ import annotations

from fabnode.node.service.seeding import Seeder

MIB = 1 << 20


class BudgetView:
    def __init__(self, pins, wanted=()):
        self.pins = list(pins)
        self.wanted = list(wanted)

    def seeded_bytes(self):
        return sum(size for _, size, _ in self.pins)

    def seeded_pins(self):
        return list(self.pins)

    def wanted_bundles(self):
        return list(self.wanted)

    def seeding_marker(self):
        return (len(self.pins), len(self.wanted))


def test_the_least_recently_wanted_bundle_is_dropped_one_at_a_time_and_not_fetched_again():
    view = BudgetView([(b"new", MIB, 3000), (b"old", MIB, 1000), (b"mid", MIB, 2000)])
    seeder = Seeder(2 * MIB)
    assert seeder.over_budget(view) == (b"old", MIB)
    assert seeder.over_budget(view) is None  # one drop at a time
    assert seeder.check(view, 5000) == (None, None)  # no fetch while dropping
    view.pins.remove((b"old", MIB, 1000))
    seeder.dropped_bundle(b"old")
    assert seeder.over_budget(view) is None  # back within the budget
    view.wanted = [(b"old", b"design")]  # the policy still wants it
    assert seeder.check(view, 6000) == (None, None)  # but it was dropped: not fetched again


def test_a_single_bundle_larger_than_the_budget_stays():
    view = BudgetView([(b"big", 5 * MIB, 1000)])
    assert Seeder(2 * MIB).over_budget(view) is None


def test_nothing_is_dropped_within_the_budget_or_while_a_fetch_runs():
    view = BudgetView([(b"a", MIB, 1000), (b"b", MIB, 2000)])
    assert Seeder(2 * MIB).over_budget(view) is None
    seeder = Seeder(MIB)
    seeder.fetching = b"c"
    assert seeder.over_budget(view) is None
