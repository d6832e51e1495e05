"""Fetching a DAG for `fabnode get` and for seeding: every connected fabnode peer at once, then
providers found in the DHT, each peer retried with backoff (the wire: fetch.py; the decisions:
node/service/fetchplan.py) until the deadline. `get` gives its own deadline (``--timeout``); a
seeding fetch gives up after :data:`SEEDING_ROUND_S` and the seeding policy tries it again in its
next round once a peer is connected (node/service/seeding.py): seeding never gives up for good."""

from __future__ import annotations

from fabnode.node.service.service import short
from fabnode.protocol.cid import cid_str, parse_cid_path

SEEDING_ROUND_S = 300
"""A seeding fetch's deadline; what arrived stays, and the next round resumes it."""


class Fetcher:
    def __init__(self, host, store, providers, candidates, log, dialer=None, explain=None, describe=None) -> None:
        """``candidates()``: the connected peers worth asking (fabnode peers, known peers);
        ``dialer(info)``: reaches a peer the DHT named, directly or through a relay;
        ``describe(peer)``: a note for `get` on how a peer is reached (through a relay: why slow)."""
        self.host, self.store, self.providers, self.candidates, self.log = host, store, providers, candidates, log
        self.dialer, self.explain, self.describe = dialer, explain, describe
        self.active: dict[int, dict] = {}
        """Fetches in progress, for `fabnode status`."""

    def _infos(self) -> list:
        from libp2p.peer.id import ID
        from libp2p.peer.peerinfo import PeerInfo

        peerstore = self.host.get_peerstore()
        return [PeerInfo(ID.from_base58(p), peerstore.addrs(ID.from_base58(p))) for p in self.candidates()]

    async def fetch(self, cid_path: str, source: str = "", timeout_s: float | None = None, on_change=None) -> dict:
        """Fetch and pin; ``timeout_s`` None means a seeding round (:data:`SEEDING_ROUND_S`).
        ``on_change(status)``: progress for the `get` that asked (over the control socket)."""
        from .fetch import fetch_from_peers, fetch_lease, pin_fetched

        root, path = parse_cid_path(cid_path)
        progress = {"root": cid_str(root), "from": "", "blocks": 0, "bytes": 0}
        self.active[id(progress)] = progress
        try:
            self.log(f"fetching {cid_str(root)}: asking {len(self.candidates())} connected peer(s)")
            # the daemon keeps its connections itself (redialling the addresses it knows, which
            # are the ones it was told to use): the fetch only asks the peers connected now
            with fetch_lease(self.store, root) as renew:  # gc keeps what arrives, also after an interruption
                result = await fetch_from_peers(self.host, self.store, root, path, self._infos, self.log, progress,
                                                timeout_s=SEEDING_ROUND_S if timeout_s is None else timeout_s,
                                                find_more=self.providers.find, connect=False, on_change=on_change,
                                                renew=renew, dialer=self.dialer,
                                                explain=self.explain, describe=self.describe)
                pin_fetched(self.store, result["root"], source)
            who = str(result["from"])
            self.log(f"fetch finished: {cid_str(result['root'])}, {result['fetched']} block(s) "
                     f"from {short(who)}")
            return {"root": cid_str(result["root"]), "fetched_blocks": result["fetched"],
                    "already_held": result["held"], "from": who, "attempts": result["attempts"]}
        finally:
            del self.active[id(progress)]
