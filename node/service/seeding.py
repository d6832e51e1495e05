"""When to fetch the bundles the seeding policy wants (docs/design.md#offline-first-sync-and-seeding).

Theory of operation: *which* bundles are wanted is a question for the store (followed designs,
trusted authors, what is already held: :mod:`node.runtime.seeding`), asked through the service's
view. This machine decides *when*: one fetch at a time, only while a peer is connected; a bundle
nobody could send is tried again :data:`RETRY_MS` later; nothing starts once seeded bundles take
the budget (said once); once they pass it (a fetch ends over it, or the budget was lowered) the least
recently wanted seeded bundle is dropped, one at a time, never the most recently wanted one, and
not fetched again while the daemon runs (issue 15); and while neither the records, the follows nor the pins changed and no
retry fell due, the policy is not asked again.
"""

from __future__ import annotations

RETRY_MS = 60_000
CHECK_MS = 1_000


class Seeder:
    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.fetching: bytes | None = None
        self.dropping: bytes | None = None
        self.dropped: set[bytes] = set()
        """Bundles dropped to stay within the budget: not fetched again (until a restart)."""
        self.retry_at: dict[bytes, int] = {}
        self.status = {"wanted": 0, "used_bytes": 0, "budget_bytes": budget_bytes}
        self._last_marker = None
        self._idle_until = 0
        self._over_budget_said = False
        self.next_check_ms = 0

    def check(self, view, now_ms: int) -> tuple[tuple[bytes, bytes] | None, str | None]:
        """((bundle, design) to fetch now or None, a line to log or None)."""
        self.next_check_ms = now_ms + CHECK_MS
        if self.fetching is not None or self.dropping is not None:
            return None, None
        marker = view.seeding_marker()
        if marker == self._last_marker and now_ms < self._idle_until:
            return None, None
        self._last_marker, self._idle_until = marker, 0
        wanted = [(b, d) for b, d in view.wanted_bundles()
                  if self.retry_at.get(b, 0) <= now_ms and b not in self.dropped]
        used = view.seeded_bytes()
        self.status = {"wanted": len(wanted), "used_bytes": used, "budget_bytes": self.budget_bytes}
        if not wanted:
            self._idle_until = min((t for t in self.retry_at.values() if t > now_ms), default=1 << 62)
            return None, None
        if used >= self.budget_bytes:
            self._idle_until = 1 << 62
            if self._over_budget_said:
                return None, None
            self._over_budget_said = True
            return None, (f"seeding budget of {self.budget_bytes >> 20} MiB reached: {len(wanted)} bundle(s) "
                          f"not fetched (raise seeding.budget_mib to fetch them)")
        self._over_budget_said = False
        self.fetching = wanted[0][0]
        return wanted[0], None

    def finished(self, root: bytes, error: str, now_ms: int) -> None:
        if root == self.fetching:
            self.fetching = None
        if error:
            self.retry_at[root] = now_ms + RETRY_MS

    def over_budget(self, view) -> tuple[bytes, int] | None:
        """(bundle, bytes) to drop now to get back within the budget, or None: the seeded bundle
        least recently wanted (pinned, or last served to a peer), never the most recent one (a
        single bundle larger than the budget stays: dropping it would only fetch it again)."""
        if self.fetching is not None or self.dropping is not None or view.seeded_bytes() <= self.budget_bytes:
            return None
        pins = sorted(view.seeded_pins(), key=lambda p: (p[2], p[0]))
        if len(pins) < 2:
            return None
        bundle, size, _wanted_ms = pins[0]
        self.dropping = bundle
        return bundle, size

    def dropped_bundle(self, root: bytes) -> None:
        if root == self.dropping:
            self.dropping = None
        self.dropped.add(root)
        self._last_marker = None  # the pins changed: look at the policy again
