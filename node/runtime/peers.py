"""Peers on the network side: connections watched, dials made, bootstrap and mDNS discoveries
(the decisions — whom to dial, when, whom to drop — are the service's: node/service/peers.py).

:class:`PeerRuntime` turns libp2p's view of connections into events (PeerConnected,
PeerSpeaksFabnode, PeerDisconnected, MeshChanged), and carries out Dial and Disconnect.
"""

from __future__ import annotations

import trio

from fabnode.node.service import events as ev
from fabnode.protocol.fetch import PROTOCOL as FETCH

DIAL_TIMEOUT = 30
"""A dial (TCP, Noise, Yamux, each negotiated) takes 5-8 round trips: over 5 s on a 600 ms link (issue 14)."""
WATCH_INTERVAL = 0.2
MDNS_SERVICE = "_p2p-fabnode._udp.local."


class PeerRuntime:
    def __init__(self, host, feed, log, mesh_peers) -> None:
        """``feed(event)`` hands an event to the service; ``mesh_peers()`` counts gossip mesh peers."""
        self.host, self.feed, self.log, self.mesh_peers = host, feed, log, mesh_peers
        self.nursery: trio.Nursery | None = None
        self.connected: dict[str, str] = {}
        self._speaks: set[str] = set()
        self._mesh = 0
        self._refused: set[str] = set()

    def remember_bootstrap(self, addresses: list[str]) -> None:
        from libp2p.peer.peerinfo import info_from_p2p_addr
        from multiaddr import Multiaddr

        for addr in addresses:
            try:
                info = info_from_p2p_addr(Multiaddr(addr))
            except Exception:
                self.log(f"ignoring bootstrap address {addr!r}: not /ip4/…/tcp/…/p2p/…")
                continue
            self.feed(ev.PeerDiscovered(str(info.peer_id), tuple(str(a) for a in info.addrs), "bootstrap"))

    # ------------------------------------------------------------------ effects

    def dial(self, peer: str, addrs) -> None:
        self.nursery.start_soon(self._dial, peer, addrs)

    def disconnect(self, peer: str) -> None:
        self._refused.add(peer)
        self.nursery.start_soon(self._close, peer)

    async def _dial(self, peer: str, addrs) -> None:
        from libp2p.peer.id import ID
        from libp2p.peer.peerinfo import PeerInfo
        from multiaddr import Multiaddr

        try:
            peer_id = ID.from_base58(peer)
            info = PeerInfo(peer_id, [Multiaddr(a) for a in addrs])
            self.host.get_network().unblock_peer(peer_id)  # docs/libp2p.md pitfall 4: the 60 s negative cache
            with trio.fail_after(DIAL_TIMEOUT):
                await self.host.connect(info)
        except Exception as exc:
            self.feed(ev.DialFailed(peer, type(exc).__name__))

    async def _close(self, peer: str) -> None:
        from libp2p.peer.id import ID

        with trio.move_on_after(2):
            try:
                await self.host.get_network().close_peer(ID.from_base58(peer))
            except Exception:
                pass

    # ------------------------------------------------------------------ watching

    async def watch(self) -> None:
        """Every 0.2 s: who is connected, who speaks fabnode (identify), how big the mesh is."""
        network = self.host.get_network()
        store = self.host.get_peerstore()
        while True:
            current: dict[str, str] = {}
            for peer_id, conns in network.get_connections_map().items():
                if not conns:
                    continue
                try:
                    addr = str(conns[0].get_transport_addresses()[0])
                except Exception:
                    addr = "?"
                key = str(peer_id)
                current[key] = addr
                if key not in self.connected:
                    self._refused.discard(key)
                    self.connected[key] = addr
                    self.feed(ev.PeerConnected(key, addr))
                elif key in self._refused:  # refused, and still here: close it again (quietly)
                    self.nursery.start_soon(self._close, key)
                    continue
                if key not in self._speaks:
                    try:
                        speaks = FETCH in store.get_protocols(peer_id)
                    except Exception:
                        speaks = False
                    if speaks:
                        self._speaks.add(key)
                        addrs = tuple(str(a) for a in store.addrs(peer_id) if "/tcp/" in str(a))
                        self.feed(ev.PeerSpeaksFabnode(key, addrs))
            for key in sorted(self.connected.keys() - current.keys()):
                del self.connected[key]
                self._speaks.discard(key)
                self._refused.discard(key)
                self.feed(ev.PeerDisconnected(key))
            mesh = self.mesh_peers()
            if mesh != self._mesh:
                self._mesh = mesh
                self.feed(ev.MeshChanged(mesh))
            await trio.sleep(WATCH_INTERVAL)

    # ------------------------------------------------------------------ mDNS

    async def mdns_or_explain(self) -> None:
        try:
            await self._mdns()
        except Exception as exc:  # no multicast on this network, a firewall, …
            self.log(f"mDNS is not available here ({type(exc).__name__}: {exc}); use bootstrap peers")

    async def _mdns(self) -> None:
        """mDNS on the LAN. zeroconf blocks for ~1.7 s at registration (docs/libp2p.md pitfall 5), so
        it is set up in a worker thread; its discoveries arrive on zeroconf's thread and are handed
        over."""
        from libp2p.discovery.events.peerDiscovery import peerDiscovery
        from libp2p.discovery.mdns.mdns import MDNSDiscovery

        token = trio.lowlevel.current_trio_token()
        found_send, found = trio.open_memory_channel(100)

        def on_found(info) -> None:
            try:
                trio.from_thread.run_sync(found_send.send_nowait, info, trio_token=token)
            except Exception:
                pass  # daemon stopping, or a flood of announcements: mDNS repeats itself

        port = next((int(a.value_for_protocol("tcp")) for a in self.host.get_addrs()), 0)

        def start():
            mdns = MDNSDiscovery(self.host.get_network(), port=port, service_type=MDNS_SERVICE, host=self.host)
            mdns.broadcaster.register()
            return mdns

        peerDiscovery.register_peer_discovered_handler(on_found)
        mdns = await trio.to_thread.run_sync(start)
        self.log("looking for peers on the LAN (mDNS)")
        try:
            async for info in found:
                addrs = tuple(str(a) for a in info.addrs if "/tcp/" in str(a))
                self.feed(ev.PeerDiscovered(str(info.peer_id), addrs, "mdns"))
        finally:
            peerDiscovery.unregister_peer_discovered_handler(on_found)

            def stop():
                mdns.broadcaster.unregister()
                mdns.listener.stop()
                mdns.zeroconf.close()

            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(stop)
