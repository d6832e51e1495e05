"""Quotas for strangers: how much a key outside this node's trust graph may make it store.

Theory of operation: records are small and replicated to everyone, so any key could make every
node store without limit (issue 12: 300 valid 63 KB records from 300 fresh keys were accepted and
passed on). A node therefore admits records by *strangers* — authors with no trust path from its
own key (:func:`fabnode.protocol.reputation.compute_trust`) — only within three budgets:

* per author: at most ``per_author_per_hour`` records received in the last hour;
* per peer: at most ``per_peer_per_hour`` strangers' records received from one peer in the last
  hour (a Sybil swarm relayed by one peer is the peer's problem, not ours);
* in total: strangers' records together take at most ``storage_bytes``; beyond it the strangers'
  records received *longest ago* are evicted first, never a trusted author's or our own.

A refusal by quota is not an offence (honest peers relay strangers' records too): the record is
simply not stored. Evicted records are remembered by id (a tombstone) so that sync does not ask
for them again; when an author becomes trusted, its tombstones are dropped and the next sync
fetches its records back. This module only decides; node/runtime/quota.py applies the decisions to the
store.
"""

from __future__ import annotations

from dataclasses import dataclass

HOUR_MS = 3600 * 1000


@dataclass(frozen=True, slots=True)
class StrangerLimits:
    per_author_per_hour: int = 1000
    per_peer_per_hour: int = 10_000
    storage_bytes: int = 64 << 20


def refusal(*, author: str, trusted: frozenset[str], author_recent: int, peer_recent: int,
            limits: StrangerLimits) -> str | None:
    """Why a record by ``author`` may not be stored now (None: admit it). ``author_recent`` and
    ``peer_recent`` count the strangers' records already received in the last hour from that
    author and from the peer that sent this one."""
    if author in trusted:
        return None
    if author_recent >= limits.per_author_per_hour:
        return (f"{author[:24]}… is not trusted here and already sent {author_recent} records this hour "
                f"(at most {limits.per_author_per_hour})")
    if peer_recent >= limits.per_peer_per_hour:
        return (f"this peer already relayed {peer_recent} records by untrusted keys this hour "
                f"(at most {limits.per_peer_per_hour})")
    return None


def to_evict(strangers_oldest_first: list[tuple[bytes, int]], total_bytes: int, limits: StrangerLimits) -> list[bytes]:
    """Which strangers' records to evict, oldest received first, to bring their total back under
    the storage quota. ``strangers_oldest_first`` is (record id, size) by time received."""
    out = []
    for cid, size in strangers_oldest_first:
        if total_bytes <= limits.storage_bytes:
            break
        out.append(cid)
        total_bytes -= size
    return out
