"""The Kademlia DHT: provider records for the bundles this node holds, and lookups for `get`.

Every pinned root is announced as provided once a peer is connected, and all again every
:data:`PROVIDE_INTERVAL_S` (provider records expire, and are only refreshed while the node runs),
and all again when this node's relayed addresses change: a node behind NAT adds them to the
provider records it sends its connected peers (``/ip4/…/tcp/…/p2p/RELAY/p2p-circuit/p2p/ME``), so
that a node which shares no relay with it learns which relay to dial (issue 21).
"""

from __future__ import annotations

import trio

from fabnode.protocol.cid import cid_str

PROVIDE_INTERVAL_S = 600
CHECK_INTERVAL_S = 2
LOOKUP_TIMEOUT_S = 10


class Providers:
    def __init__(self, host, store, log, connected, relayed_addrs=lambda: ()) -> None:
        """``connected()``: whether any peer is connected (nothing to announce to otherwise);
        ``relayed_addrs()``: this node's addresses through the relays it holds a slot on."""
        from libp2p.kad_dht.kad_dht import DHTMode, KadDHT

        self.host, self.store, self.log, self.connected = host, store, log, connected
        self.relayed_addrs = relayed_addrs
        self.dht = KadDHT(host, DHTMode.SERVER, enable_values=False)
        self._provided: set[bytes] = set()
        self._told_relayed: tuple[str, ...] = ()
        self._known_peers: frozenset = frozenset()

    async def provide_bundles(self) -> None:
        last_round = trio.current_time()
        while True:
            if trio.current_time() - last_round > PROVIDE_INTERVAL_S:
                self._provided.clear()
                last_round = trio.current_time()
            relayed = tuple(sorted(self.relayed_addrs()))
            if relayed != self._told_relayed:  # a new relay: every record again, with its address
                self._told_relayed = relayed
                self._provided.clear()
            if self.connected():
                connected = frozenset(self.host.get_network().get_connections_map())
                if connected != self._known_peers:  # a hub holding nothing still routes lookups
                    self._known_peers = connected
                    await self.know_connected_peers()
                added = 0
                if any(pin.cid not in self._provided for pin in self.store.pins()):
                    await self.know_connected_peers()
                for pin in self.store.pins():
                    if pin.cid not in self._provided:
                        with trio.move_on_after(LOOKUP_TIMEOUT_S):
                            try:
                                ok = await self._provide_to_connected(pin.cid) or \
                                    await self.dht.provide(cid_str(pin.cid))
                            except Exception:
                                ok = False  # retried on the next round
                            if ok:
                                self._provided.add(pin.cid)
                                added += 1
                if added:
                    self.log(f"announced {added} bundle(s) as provider in the DHT")
            await trio.sleep(CHECK_INTERVAL_S)

    async def know_connected_peers(self) -> None:
        """0.8.1 puts a peer in the routing table only once it has queried us, so a lab that just
        connected to its hub would provide to nobody and look nowhere (issue 21): every
        connected peer that serves the DHT goes in (the library checks it does, via identify)."""
        for peer_id in list(self.host.get_network().get_connections_map()):
            with trio.move_on_after(1):
                try:
                    await self.dht.add_peer(peer_id)
                except Exception:
                    pass

    async def _provide_to_connected(self, root: bytes) -> bool:
        """Tell the connected peers first, one message each (within 3 s): the library's provide
        looks for the closest peers first, dialling each it was told of, and a lab behind NAT it
        once met over a relay holds it past the deadline, so nothing was announced (issue 21)."""
        from libp2p.kad_dht.kad_dht import _encode_key

        key = _encode_key(cid_str(root))
        told = []

        async def tell(peer_id) -> None:
            with trio.move_on_after(3):
                try:
                    if await self._send_add_provider(peer_id, key):
                        told.append(peer_id)
                except Exception:
                    pass

        async with trio.open_nursery() as nursery:
            for peer_id in list(self.host.get_network().get_connections_map()):
                nursery.start_soon(tell, peer_id)
        return bool(told)

    async def _send_add_provider(self, peer_id, key: bytes) -> bool:
        """py-libp2p 0.8.1's ADD_PROVIDER (provider_store.py), with this node's relayed addresses
        added to its own: the receiver keeps a provider's addresses as sent and hands them on to
        whoever asks, where identify and the peerstore would mangle a circuit address."""
        import varint
        from libp2p.kad_dht.common import PROTOCOL_ID
        from libp2p.kad_dht.pb.kademlia_pb2 import Message
        from libp2p.peer.peerstore import env_to_send_in_RPC
        from multiaddr import Multiaddr

        stream = await self.host.new_stream(peer_id, [PROTOCOL_ID])
        try:
            message = Message()
            message.type = Message.MessageType.ADD_PROVIDER
            message.key = key
            envelope, _ = env_to_send_in_RPC(self.host)
            message.senderRecord = envelope
            provider = message.providerPeers.add()
            provider.id = self.host.get_id().to_bytes()
            provider.addrs.extend([a.to_bytes() for a in self.host.get_addrs()] +
                                  [Multiaddr(a).to_bytes() for a in self._told_relayed])
            provider.signedRecord = envelope
            data = message.SerializeToString()
            await stream.write(varint.encode(len(data)) + data)
        finally:
            await stream.close()
        return True

    async def _ask_connected(self, root: bytes) -> list:
        """Providers the connected peers know of, one question each (within 3 s): the hub of a
        region holds its labs' provider records, and asking it costs one round trip, where the
        library's iterative lookup first dials the peers it names, labs behind NAT among them,
        and runs out of time (issue 21). The method is private in 0.8.1 (pinned exactly)."""
        from libp2p.kad_dht.kad_dht import _encode_key

        key = _encode_key(cid_str(root))
        found: list = []

        async def ask(peer_id) -> None:
            with trio.move_on_after(3):
                try:
                    providers, _ = await self.dht.provider_store._get_providers_from_peer_with_closers(peer_id, key)
                    found.extend(providers)
                except Exception:
                    pass

        async with trio.open_nursery() as nursery:
            for peer_id in list(self.host.get_network().get_connections_map()):
                nursery.start_soon(ask, peer_id)
        return found

    async def find(self, root: bytes) -> list:
        """Providers of ``root`` other than us, each once (the library returns duplicates:
        docs/libp2p.md pitfall 7); none if the lookup fails or takes over 10 s."""
        try:
            with trio.move_on_after(LOOKUP_TIMEOUT_S):
                await self.know_connected_peers()
                found = await self._ask_connected(root) or await self.dht.find_providers(cid_str(root))
                seen, out = set(), []
                for info in found:
                    if info.peer_id not in seen and info.peer_id != self.host.get_id():
                        seen.add(info.peer_id)
                        out.append(info)
                return out
        except Exception:
            pass
        return []
