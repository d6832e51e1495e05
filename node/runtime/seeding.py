"""The seeding policy (docs/design.md#offline-first-sync-and-seeding): which bundles the daemon
fetches without being asked.

Records are always replicated. Bundles are fetched on their own when they belong to a design
the lab follows (`fabnode follow`), or — with ``seeding.follow_trusted_authors`` — when a
version's author is this lab or one it vouched for as trusted. Followed designs and the lab's
own versions come first, then trusted authors' (newest first within each), and nothing more is
started once the bundles fetched this way take ``seeding.budget_mib``.
"""

from __future__ import annotations

from fabnode.protocol.cid import cid_str
from fabnode.storage import BlockStore
from fabnode.storage.records import RecordStore

SOURCE_PREFIX = "seeded:"


def trusted_authors(records: RecordStore, me: str) -> set[str]:
    """This lab, and the keys it vouched for (its latest vouch for each key decides)."""
    latest: dict[str, tuple[int, str]] = {}
    for v in records.vouches():
        if v.author == me and (v.subject not in latest or v.ts >= latest[v.subject][0]):
            latest[v.subject] = (v.ts, v.trust)
    return {me} | {subject for subject, (_, trust) in latest.items() if trust == "trusted"}


def seeded_bytes(store: BlockStore) -> int:
    return sum(p.size for p in store.pins() if p.source.startswith(SOURCE_PREFIX))


def seeded_pins(store: BlockStore) -> list[tuple[bytes, int, int]]:
    """(bundle, bytes, last wanted ms) of every seeded pin: wanted = pinned, or last served to a peer."""
    return [tuple(row) for row in store.db.conn.execute(
        "SELECT cid, size, max(added_ms, wanted_ms) FROM pins WHERE source LIKE 'seeded:%'")]


def first_bundles(records: RecordStore, me: str) -> set[bytes]:
    """Bundles of this lab's own versions and of followed designs: served and fetched first."""
    return {bundle for bundle, _design, _version in records.seed_candidates([me])}


def wanted_bundles(records: RecordStore, store: BlockStore, me: str, follow_trusted: bool) -> list[tuple[bytes, bytes]]:
    """(bundle, design) the policy wants and this node does not hold completely, in the order
    they are fetched (issue 14): followed designs and this lab's own versions first, then the
    versions of authors it trusts; newest first within each."""
    from fabnode.node.runtime.fetch import missing_here

    first = records.seed_candidates([me])  # followed designs, and this lab's own versions
    rest = records.seed_candidates(trusted_authors(records, me)) if follow_trusted else []
    out, seen = [], {p.cid for p in store.pins()}  # a pinned DAG is complete
    for bundle, design, _version in first + rest:
        if bundle in seen:
            continue
        seen.add(bundle)
        if missing_here(store, bundle, []) is not None:
            out.append((bundle, design))
    return out


def describe(bundle: bytes, design: bytes) -> str:
    return f"bundle {cid_str(bundle)} of design {cid_str(design)}"
