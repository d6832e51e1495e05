"""Fetching a DAG for `fabnode get` and for seeding: the connected fabnode peers first, then
providers found in the DHT, each attempt resuming where the last stopped (the wire: fetch.py)."""

from __future__ import annotations

from fabnode.node.service.service import short
from fabnode.protocol.cid import cid_str, parse_cid_path
from fabnode.protocol.errors import FabnodeError


class Fetcher:
    def __init__(self, host, store, providers, candidates, log) -> None:
        """``candidates()``: the connected peers worth asking (fabnode peers, known peers)."""
        self.host, self.store, self.providers, self.candidates, self.log = host, store, providers, candidates, log
        self.active: dict[int, dict] = {}
        """Fetches in progress, for `fabnode status`."""

    async def fetch(self, cid_path: str, source: str = "") -> dict:
        from libp2p.peer.id import ID
        from libp2p.peer.peerinfo import PeerInfo

        from .fetch import fetch_from_peers, pin_fetched

        root, path = parse_cid_path(cid_path)
        progress = {"root": cid_str(root), "from": "", "blocks": 0, "bytes": 0}
        self.active[id(progress)] = progress
        peerstore = self.host.get_peerstore()
        try:
            candidates = [PeerInfo(ID.from_base58(p), peerstore.addrs(ID.from_base58(p))) for p in self.candidates()]
            self.log(f"fetching {cid_str(root)}: asking {len(candidates)} connected peer(s)")
            try:
                result = await fetch_from_peers(self.host, self.store, root, path, candidates, self.log, progress)
            except FabnodeError as first:
                asked = {str(c.peer_id) for c in candidates}
                providers = [p for p in await self.providers.find(root) if str(p.peer_id) not in asked]
                if not providers:
                    raise FabnodeError(f"{first}; the DHT knows no other provider") from None
                self.log(f"fetching {cid_str(root)}: asking {len(providers)} provider(s) found in the DHT")
                result = await fetch_from_peers(self.host, self.store, root, path, providers, self.log, progress)
            pin_fetched(self.store, result["root"], source)
            who = str(result["from"])
            self.log(f"fetch finished: {cid_str(result['root'])}, {result['fetched']} block(s) "
                     f"from {short(who)}")
            return {"root": cid_str(result["root"]), "fetched_blocks": result["fetched"],
                    "already_held": result["held"], "from": who, "attempts": result["attempts"]}
        finally:
            del self.active[id(progress)]
