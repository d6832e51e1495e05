"""The Kademlia DHT: provider records for the bundles this node holds, and lookups for `get`.

Every pinned root is announced as provided once a peer is connected, and all again every
:data:`PROVIDE_INTERVAL_S` (provider records expire, and are only refreshed while the node runs).
"""

from __future__ import annotations

import trio

from fabnode.protocol.cid import cid_str

PROVIDE_INTERVAL_S = 600
CHECK_INTERVAL_S = 2
LOOKUP_TIMEOUT_S = 10


class Providers:
    def __init__(self, host, store, log, connected) -> None:
        """``connected()``: whether any peer is connected (nothing to announce to otherwise)."""
        from libp2p.kad_dht.kad_dht import DHTMode, KadDHT

        self.host, self.store, self.log, self.connected = host, store, log, connected
        self.dht = KadDHT(host, DHTMode.SERVER, enable_values=False)
        self._provided: set[bytes] = set()

    async def provide_bundles(self) -> None:
        last_round = trio.current_time()
        while True:
            if trio.current_time() - last_round > PROVIDE_INTERVAL_S:
                self._provided.clear()
                last_round = trio.current_time()
            if self.connected():
                added = 0
                for pin in self.store.pins():
                    if pin.cid not in self._provided:
                        with trio.move_on_after(LOOKUP_TIMEOUT_S):
                            try:
                                ok = await self.dht.provide(cid_str(pin.cid))
                            except Exception:
                                ok = False  # retried on the next round
                            if ok:
                                self._provided.add(pin.cid)
                                added += 1
                if added:
                    self.log(f"announced {added} bundle(s) as provider in the DHT")
            await trio.sleep(CHECK_INTERVAL_S)

    async def find(self, root: bytes) -> list:
        """Providers of ``root`` other than us, each once (the library returns duplicates:
        docs/libp2p.md pitfall 7); none if the lookup fails or takes over 10 s."""
        try:
            with trio.move_on_after(LOOKUP_TIMEOUT_S):
                found = await self.dht.find_providers(cid_str(root))
                seen, out = set(), []
                for info in found:
                    if info.peer_id not in seen and info.peer_id != self.host.get_id():
                        seen.add(info.peer_id)
                        out.append(info)
                return out
        except Exception:
            pass
        return []
