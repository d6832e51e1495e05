"""Applies the strangers' quotas (protocol/quota.py) to the record store, for the daemon's gossip
and sync. Files carried by hand (`fabnode import`) are the operator's choice and not limited."""

from __future__ import annotations

from collections import OrderedDict, deque

from fabnode.protocol.quota import HOUR_MS, StrangerLimits, refusal, to_evict
from fabnode.storage.records import RecordStore

MAX_PEERS_COUNTED = 10_000


class StrangerQuota:
    def __init__(self, records: RecordStore, me: str, limits: StrangerLimits, log=print) -> None:
        self.records, self.me, self.limits, self.log = records, me, limits, log
        self._trusted: frozenset[str] = frozenset()
        self._vouch_marker = None
        self._by_peer: OrderedDict[str, deque[int]] = OrderedDict()
        """peer -> times (ms, oldest first) of the strangers' records it sent in the last hour."""
        self._trusted_at: int | None = None
        self._by_author: OrderedDict[str, tuple[int, int]] = OrderedDict()
        """author -> (hour window start, records received in it): counted in memory, seeded once
        from the store, so a catch-up of many records by one author costs O(1) per record."""
        self.refused = 0
        self.evicted = 0
        self._stranger_bytes: int | None = None
        """Running total of the strangers' records (None: count it again from the store)."""

    def trusted(self) -> frozenset[str]:
        """Our key and every key our trust reaches; recomputed only when vouches change. Keys
        that became trusted get their evicted records back at the next sync."""
        from fabnode.protocol.reputation import Vouch, compute_trust

        if self._vouch_marker is None:
            self.records.set_quota_trusted([self.me])
        # only a vouch by a trusted key can change who is trusted (a stranger's vouch carries no
        # weight), so the graph is recomputed only when one of those is added
        marker = self.records.trusted_vouch_marker()
        if marker != self._vouch_marker:
            vouches = [Vouch(v.author, v.subject, v.trust, v.ts) for v in self.records.vouches()]
            trusted = frozenset(a for a, path in compute_trust(self.me, (), vouches).items() if path.weight > 0)
            trusted |= {self.me}
            if trusted - self._trusted:
                self.records.forget_tombstones(trusted - self._trusted)
            self.records.set_quota_trusted(trusted)
            self._trusted = trusted
            self._stranger_bytes = None
            self._vouch_marker = self.records.trusted_vouch_marker()
        return self._trusted

    def admit(self, author: str, peer: str | None, now_ms: int, size: int = 0) -> str | None:
        """None to store a record (``size`` bytes) by ``author`` that ``peer`` sent; else why not.

        A batch of records (one sync frame, one gossip batch) is admitted with one ``now_ms``:
        the trust graph is looked at once per batch, not once per record (a vouch stored in the
        batch counts from the next one), and each peer's window drops its old entries from the
        front — O(1) per record, so a catch-up of 12,000 records costs milliseconds, not seconds."""
        if self._trusted_at != now_ms:
            self.trusted()
            self._trusted_at = now_ms
        trusted = self._trusted
        if author in trusted:
            return None
        since = now_ms - HOUR_MS
        times = self._by_peer.get(peer, deque()) if peer else deque()
        while times and times[0] < since:
            times.popleft()
        window, count = self._by_author.get(author, (None, 0))
        if window is None or window < since:  # a new hour for this author: count from the store
            window, count = now_ms, self.records.received_since(author, since)
        reason = refusal(author=author, trusted=trusted, author_recent=count,
                         peer_recent=len(times), limits=self.limits)
        if reason is not None:
            self.refused += 1
            return reason
        if self._stranger_bytes is not None:
            self._stranger_bytes += size
        self._by_author[author] = (window, count + 1)
        self._by_author.move_to_end(author)
        while len(self._by_author) > MAX_PEERS_COUNTED:
            self._by_author.popitem(last=False)
        if peer:
            times.append(now_ms)
            self._by_peer[peer] = times
            self._by_peer.move_to_end(peer)
            while len(self._by_peer) > MAX_PEERS_COUNTED:
                self._by_peer.popitem(last=False)
        return None

    def enforce_storage(self, now_ms: int) -> int:
        """Evict the strangers' records received longest ago while they take more than the quota.
        Call inside the write transaction that stored new records."""
        trusted = self.trusted()
        if self._stranger_bytes is not None and self._stranger_bytes <= self.limits.storage_bytes:
            return 0  # the running total says there is room: no need to read the store
        total, oldest_first = self.records.strangers(trusted)
        self._stranger_bytes = total
        if total <= self.limits.storage_bytes:
            return 0
        victims = to_evict(oldest_first, total, self.limits)
        self.records.evict(victims, now_ms)
        self.evicted += len(victims)
        self._stranger_bytes = None
        self.log(f"strangers' records over the {self.limits.storage_bytes >> 20} MiB quota: evicted the "
                 f"{len(victims)} received longest ago (raise limits.stranger_storage_mib, or vouch for their authors)")
        return len(victims)
