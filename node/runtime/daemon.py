"""The daemon (`fabnode run`): the node online, everything under one trio nursery.

Theory of operation
-------------------
:meth:`Daemon.run` starts one libp2p host (TCP, Noise only, Yamux only; :mod:`node.runtime.host`) and,
as library services on it, gossipsub, pubsub and a Kademlia DHT in server mode with values
disabled. It registers two stream handlers — fetch ``/fabnode/car/1.0.0``
(:class:`node.runtime.fetch.FetchServer`) and sync ``/fabnode/sync/1.0.0`` (:meth:`Daemon._handle_sync`)
— and a topic validator on ``/fabnode/records/1`` that applies every record rule
(:func:`protocol.records.verify_record`), so an invalid record is neither delivered nor
forwarded. Then one nursery runs these tasks, each restarted a second after an unexpected error
(:meth:`Daemon._keep_running`) so one failing task never takes the node down:

* **control** (:meth:`_serve_control`): 127.0.0.1 at a free port; one JSON line in, one out,
  carrying the token from ``HOME/daemon.json`` (see :mod:`node.runtime.control`). Commands: ``announce``
  (look at the outbox now), ``status``, ``peers`` and ``fetch`` (for ``fabnode get``).
* **gossip in** (:meth:`_receive_gossip`, :meth:`_store_received`): the library's 32-slot
  delivery queue is drained at once into our own queue of 10,000; a second task stores what has
  arrived in one transaction (at most 200 records) and logs each new record. Message ids are the
  SHA-256 of the record, so one record announced by two nodes travels once.
* **gossip out** (:meth:`_announce_outbox`): records made here (the CLI marks them ``outbox =
  1``) are published once a peer is in the topic's mesh, paced at
  ``limits.gossip_messages_per_second``, then leave the outbox. The CLI pokes the daemon after
  each record; the task also looks every second, so nothing depends on the poke.
* **connections** (:meth:`_watch_connections`): every 0.2 s, logs peers connecting and leaving;
  a peer whose identify lists the fetch protocol is a fabnode peer: it is remembered in the
  ``peers`` table and, if its peer ID is larger than ours, synced with at once.
* **dialler** (:meth:`_dial_peers`, :meth:`_dial`): every 0.5 s, while fewer than
  ``limits.max_connections`` are open, dials the remembered peers that are due (bootstrap,
  mDNS, inbound), with backoff 1 s … 5 min, clearing libp2p's 60 s negative dial cache first.
* **DHT provider** (:meth:`_provide_bundles`): announces every pinned root as provided once a
  peer is connected, and again every 10 minutes.
* **sync** (:meth:`_sync_scheduler`, :meth:`_sync_periodically`, :func:`node.runtime.sync.sync_over_stream`):
  syncs are requested on meeting a peer, every ``sync.interval_seconds`` (by the side with the
  smaller peer ID) and, after a sync that brought news, with every other fabnode peer; the
  scheduler runs at most one per peer. A peer that breaks the protocol or sends an invalid record
  is cut off (see below); after a successful sync the outbox is cleared (the peer holds it all).
* **seeding** (:meth:`_seed`, :mod:`node.runtime.seeding`): every second while connected, fetches one
  at a time the bundles the seeding policy wants (followed designs, trusted authors) within
  ``seeding.budget_mib``, through the same path as ``get``; a bundle nobody sent is retried a
  minute later.
* **HTTP** (:func:`node.http.web.serve_http`), unless ``http = "off"``: the lab's pages and the
  trustless-gateway subset, on Hypercorn's trio worker.
* **mDNS** (:meth:`_mdns`), unless disabled: registration in a worker thread, discoveries handed
  over from zeroconf's thread into the peers table; without multicast, one line says so.

Before anything else the daemon takes the home's lock (:mod:`node.runtime.lock`): one node per home.
Fetching for ``fabnode get`` (:meth:`Daemon.fetch`) asks the connected fabnode peers first, then
providers found in the DHT, each attempt resuming the last, and pins what arrived.

Once everything is started the daemon writes ``HOME/daemon.json`` (pid, listen addresses,
control port, token, web address) and logs its addresses. SIGINT or SIGTERM cancel the
nursery; the host is then closed explicitly and ``daemon.json`` removed. SQLite calls are made
from the trio thread: they are short (indexed lookups, batches of at most 8 MiB), and WAL lets
the CLI read and write meanwhile. The py-libp2p pitfalls handled here (gossip bursts, the
negative dial cache, mDNS, DHT duplicates, shutdown) are described in docs/libp2p.md.

Peers that break a protocol rule are cut off for a while (:mod:`protocol.penalties`): their
connections are dropped and they are not dialled; every budget is listed in docs/design.md.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass

import trio

from fabnode.protocol.cid import DAG_CBOR, cid_str, make_cid, parse_cid_path
from fabnode.protocol.errors import FabnodeError
from fabnode.protocol.penalties import Penalties
from fabnode.protocol.records import RecordRejected, verify_record

from fabnode.node.config import DaemonOptions, daemon_options  # noqa: F401 (moved to node/config.py)
from fabnode.node.home import Home

TOPIC = "/fabnode/records/1"
DIAL_TIMEOUT = 5
STORE_BATCH = 200
MDNS_SERVICE = "_p2p-fabnode._udp.local."
PROVIDE_INTERVAL_S = 600
MAX_SYNCS = 8
"""Sync sessions at once, both directions together (one per peer)."""
GOSSIP_INVALID_PER_MINUTE = 50
"""Invalid records one gossip peer may forward in a minute before it is cut off. Not one: an
honest peer with a skewed clock, or an older version, may pass on a few we refuse."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _short(peer) -> str:
    text = str(peer)
    return text[:16] + "…" if len(text) > 17 else text


def describe_record(record) -> str:
    """One readable phrase for a log line: what the record says, by whom."""
    body = record.body
    who = record.author[:20] + "…"
    if record.type == "version":
        return f"version {cid_str(record.cid)} “{body['title']}” by {who}"
    if record.type == "attestation":
        return f"attestation {cid_str(record.cid)}: {body['predicate']} {body['result']} on {cid_str(body['subject'].cid)} by {who}"
    return f"vouch {cid_str(record.cid)}: {who} {body['trust']} {body['subject'][:20]}…"


class Daemon:
    def __init__(self, home: Home, options: DaemonOptions, log=None, http_socket=None) -> None:
        from fabnode.storage import PeerStore
        from fabnode.storage.records import RecordStore

        from fabnode.node.runtime.fetch import FetchServer
        from fabnode.node.runtime.loglimit import LogLimiter
        from fabnode.node.runtime.sync import ItemCache

        self.home = home
        self.options = options
        self.log = log or self._print
        self.store = home.open_store()
        self.records = RecordStore(self.store.db.conn)
        self.peers = PeerStore(self.store.db.conn)
        self.server = FetchServer(self.store, self.log, streams_per_peer=options.streams_per_peer,
                                  streams_total=options.streams_total, upload_rate=options.upload_rate)
        self.started = time.time()
        self.fetching: dict[int, dict] = {}
        self.announce_now = trio.Event()
        self._connected: dict[str, str] = {}
        self._dialing: set[str] = set()
        self._fabnode_peers: set[str] = set()
        self._to_store_send, self._to_store = trio.open_memory_channel(10_000)
        self._provided: set[bytes] = set()
        self._rejections = LogLimiter(self.log, clock=trio.current_time)
        self.items = ItemCache(self.records)
        self.last_syncs: dict[str, dict] = {}
        self.seeding: dict = {"wanted": 0, "used_bytes": 0, "budget_bytes": options.seeding_budget}
        self._syncing: set[str] = set()
        self._inbound_syncs: set[str] = set()
        self.penalties = Penalties()
        self._gossip_invalid: dict[str, tuple[int, int]] = {}
        self.server.on_offence = self._cut_off
        from fabnode.protocol.quota import StrangerLimits

        from fabnode.node.runtime.quota import StrangerQuota

        self.quota = StrangerQuota(self.records, home.identity().did, StrangerLimits(
            options.stranger_per_author, options.stranger_per_peer, options.stranger_storage), self.log)
        self._sync_send, self._sync_requests = trio.open_memory_channel(1000)
        self.host = self.pubsub = self.gossipsub = self.dht = None
        self.http = None
        self.http_socket = http_socket  # bound by run_daemon before the start; None: no web interface

    @staticmethod
    def _print(line: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)

    # -------------------------------------------------------------- lifecycle

    async def run(self) -> None:
        from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
        from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
        from libp2p.pubsub.pubsub import Pubsub
        from libp2p.tools.anyio_service import background_trio_service

        from fabnode.protocol.sync import PROTOCOL as SYNC

        from fabnode.node.runtime.fetch import PROTOCOL as FETCH
        from fabnode.node.runtime.host import node_key_pair, quiet_library_logs, running_host

        quiet_library_logs()
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with running_host(node_key_pair(self.home), self.options.listen,
                                    change=self.options.listen_change) as host:
                self.host = host
                host.set_stream_handler(FETCH, self.server.handle)
                host.set_stream_handler(SYNC, self._handle_sync)
                self.gossipsub = GossipSub(
                    protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11, PROTOCOL_ID], degree=4, degree_low=2, degree_high=8,
                    heartbeat_interval=1, eclipse_protection_enabled=False, spam_protection_enabled=True,
                    max_messages_per_topic_per_second=float(self.options.gossip_rate * 2),
                )
                self.pubsub = Pubsub(host, self.gossipsub, msg_id_constructor=lambda m: hashlib.sha256(m.data).digest())
                self.dht = KadDHT(host, DHTMode.SERVER, enable_values=False)
                async with background_trio_service(self.pubsub), background_trio_service(self.gossipsub), \
                        background_trio_service(self.dht):
                    await self.pubsub.wait_until_ready()
                    self.pubsub.set_topic_validator(TOPIC, self._validate, is_async_validator=False)
                    subscription = await self.pubsub.subscribe(TOPIC)
                    async with trio.open_nursery() as nursery:
                        control_port = await nursery.start(self._serve_control)
                        for task in (functools.partial(self._receive_gossip, subscription), self._store_received,
                                     self._announce_outbox, self._watch_connections, self._dial_peers,
                                     self._provide_bundles, self._sync_scheduler, self._sync_periodically,
                                     self._seed):
                            nursery.start_soon(self._keep_running, task)
                        self._remember_bootstrap()
                        http = None
                        if self.http_socket is not None:
                            from fabnode.node.http.web import allowed_hosts, http_token, make_app, serve_http

                            from fabnode.node.http.pages import Pages

                            pages = Pages(self.home, self.store, status=self.status)
                            hosts = allowed_hosts(self.options.http, self.options.http_hosts)
                            app = make_app(self.store, token=http_token(self.home.path), pages=pages, log=self.log,
                                           hosts=hosts)
                            http = await nursery.start(serve_http, app, self.http_socket)
                        addrs = self._addresses()
                        self._write_state(addrs, control_port, http)
                        for addr in addrs:
                            self.log(f"listening on {addr}")
                        if http:
                            self.log(f"web interface on http://{http}/")
                        if self.options.mdns:
                            nursery.start_soon(self._mdns_or_explain)
                        async for sig in signals:
                            self.log(f"stopping ({signal.Signals(sig).name})")
                            break
                        nursery.cancel_scope.cancel()
        (self.home.path / "daemon.json").unlink(missing_ok=True)

    async def _keep_running(self, task) -> None:
        """Run a daemon task for good: a bug or a surprise from the library in one task is
        logged in one line and the task restarted, instead of taking the whole node down."""
        name = getattr(task, "__name__", None) or getattr(getattr(task, "func", None), "__name__", "task")
        while True:
            try:
                await task()
                return
            except Exception as exc:
                self.log(f"internal error in {name.strip('_')}: {type(exc).__name__}: {exc}; restarting it")
                await trio.sleep(1)

    async def _mdns_or_explain(self) -> None:
        try:
            await self._mdns()
        except Exception as exc:  # no multicast on this network, a firewall, …
            self.log(f"mDNS is not available here ({type(exc).__name__}: {exc}); use bootstrap peers")

    def _addresses(self) -> list[str]:
        out = []
        for addr in self.host.get_addrs():
            text = str(addr)
            out.append(text if "/p2p/" in text else f"{text}/p2p/{self.host.get_id()}")
        return out

    def _write_state(self, addrs: list[str], control_port: int, http: str | None) -> None:
        from fabnode.node.runtime.control import write_state

        self.token = secrets.token_hex(16)
        self.http = http
        write_state(self.home.path, {"pid": os.getpid(), "addrs": addrs, "control": control_port,
                                     "token": self.token, "started": self.started, "http": http})

    # -------------------------------------------------------------- gossip in

    def _validate(self, forwarder, msg) -> bool:
        """Topic validator: every record rule, before the message is delivered or forwarded.
        Cheap first: the size is checked before anything is decoded (protocol.records)."""
        try:
            verify_record(bytes(msg.data), now_ms())
        except RecordRejected as exc:
            if forwarder != self.host.get_id():
                self._log_rejection(forwarder, str(exc).removeprefix("record rejected: "))
                self._gossip_offence(str(forwarder))
            return False
        except Exception as exc:  # anything a malformed block trips
            self._log_rejection(forwarder, f"not a record ({type(exc).__name__})")
            self._gossip_offence(str(forwarder))
            return False
        return True

    def _cut_off(self, peer: str, reason: str) -> None:
        """A peer broke a protocol rule: keep it away (the connection watcher drops it)."""
        wait = self.penalties.strike(peer, reason, now_ms())
        self.log(f"{_short(peer)} broke a rule ({reason}): cutting it off for {wait // 1000} s")

    def _gossip_offence(self, peer: str) -> None:
        """Count an invalid record a peer forwarded; past the limit the peer is cut off (the
        connection watcher drops it within 0.2 s)."""
        now = now_ms()
        window, count = self._gossip_invalid.get(peer, (now, 0))
        if now - window > 60_000:
            window, count = now, 0
        count += 1
        self._gossip_invalid[peer] = (window, count)
        if count == GOSSIP_INVALID_PER_MINUTE and not self.penalties.cut_off(peer, now):
            reason = f"gossip: {count} invalid records in a minute"
            wait = self.penalties.strike(peer, reason, now)
            self.log(f"{_short(peer)} forwarded {count} invalid records in a minute: cutting it off for {wait // 1000} s")
        while len(self._gossip_invalid) > 10_000:
            del self._gossip_invalid[next(iter(self._gossip_invalid))]

    def _log_rejection(self, forwarder, reason: str, what: str = "a record") -> None:
        """One line per rejected record (or stream), but at most LINES_PER_MINUTE per peer per
        minute (:mod:`node.runtime.loglimit`): a hostile peer must not be able to flood the operator's log."""
        who = _short(forwarder)
        self._rejections.say(str(forwarder), f"rejected {what} from {who}: {reason}",
                             stopping=f"rejected more from {who}; not logging the rest for a minute",
                             left_out=lambda n: f"… {n} more from {who} were rejected in that minute")

    async def _receive_gossip(self, subscription) -> None:
        """Drain the library's 32-slot delivery queue at once, into our own larger one."""
        from libp2p.peer.id import ID

        me = self.host.get_id().to_bytes()
        while True:
            msg = await subscription.get()
            if msg.from_id == me:
                continue
            try:
                origin = _short(ID(msg.from_id))
            except Exception:
                origin = "?"
            await self._to_store_send.send((bytes(msg.data), origin))

    async def _store_received(self) -> None:
        from fabnode.node.local.commons import receive_records

        while True:
            batch = [await self._to_store.receive()]
            while len(batch) < STORE_BATCH:
                try:
                    batch.append(self._to_store.receive_nowait())
                except trio.WouldBlock:
                    break
            now = now_ms()
            by_origin: dict[str, list[bytes]] = {}
            for data, origin in batch:
                by_origin.setdefault(origin, []).append(data)
            new: set[str] = set()
            with self.store.write_transaction():
                for origin, blocks in by_origin.items():
                    result = receive_records(self.records, [(None, data) for data in blocks], now=now,
                                             all_or_nothing=False, quota=self.quota, peer=origin)
                    new.update(result.new)
                    if result.over_quota:
                        self._log_rejection(origin, result.over_quota[0][1], what="records over the strangers' quota")
            for data, origin in batch:
                cid = make_cid(DAG_CBOR, data)
                if cid_str(cid) in new:
                    new.discard(cid_str(cid))
                    self.log(f"record received: {describe_record(verify_record(data, now, cid))} (from {origin})")

    # -------------------------------------------------------------- gossip out

    def _mesh_peers(self) -> int:
        return len(self.gossipsub.mesh.get(TOPIC, ())) if self.gossipsub else 0

    async def _announce_outbox(self) -> None:
        pause = 1 / self.options.gossip_rate
        while True:
            with trio.move_on_after(1):
                await self.announce_now.wait()
            self.announce_now = trio.Event()
            if not self._mesh_peers():
                continue
            while True:
                pending = self.records.outbox(limit=100)
                if not pending:
                    break
                done = []
                for cid, data in pending:
                    await self.pubsub.publish(TOPIC, data)
                    done.append(cid)
                    self.log(f"announced {cid_str(cid)} to {self._mesh_peers()} peer(s)")
                    await trio.sleep(pause)  # stay under the peers' per-second limit
                with self.store.write_transaction():
                    self.records.announced(done)

    # -------------------------------------------------------------- peers

    def _remember_bootstrap(self) -> None:
        from libp2p.peer.peerinfo import info_from_p2p_addr
        from multiaddr import Multiaddr

        now = now_ms()
        with self.store.write_transaction():
            for addr in self.options.bootstrap:
                try:
                    info = info_from_p2p_addr(Multiaddr(addr))
                except Exception:
                    self.log(f"ignoring bootstrap address {addr!r}: not /ip4/…/tcp/…/p2p/…")
                    continue
                self.peers.remember(str(info.peer_id), [str(a) for a in info.addrs], "bootstrap", now)

    async def _watch_connections(self) -> None:
        """Log connections as they come and go; remember inbound fabnode peers for redialling."""
        from fabnode.node.runtime.fetch import PROTOCOL as FETCH

        from libp2p.peer.id import ID

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
                current[str(peer_id)] = addr
                key = str(peer_id)
                if key not in self._fabnode_peers:
                    try:
                        speaks = FETCH in store.get_protocols(peer_id)
                    except Exception:
                        speaks = False
                    if speaks:
                        self._fabnode_peers.add(key)
                        if key > str(self.host.get_id()):  # the smaller peer id starts the sync
                            self._request_sync(key)
                        addrs = [str(a) for a in store.addrs(peer_id) if "/tcp/" in str(a)]
                        with self.store.write_transaction():
                            self.peers.remember(key, addrs, "inbound", now_ms())
                            self.peers.connected(key, now_ms())
            for key in sorted(current):
                offence = self.penalties.cut_off(key, now_ms())
                if offence is None:
                    continue
                del current[key]
                if key not in self._connected:
                    self.log(f"connection from {_short(key)} dropped: cut off for "
                             f"{(offence.until_ms - now_ms()) // 1000} s more ({offence.reason})")
                with trio.move_on_after(2):
                    await network.close_peer(ID.from_base58(key))
            cap = self.options.max_connections * 2  # dialled ones, and as many again dialling in
            if len(current) > cap:  # the newest peers met by chance go first; bootstrap peers stay
                def bootstrap(key: str) -> bool:
                    row = self.peers.get(key)
                    return row is not None and row.source == "bootstrap"

                keep = set(sorted(current, key=lambda k: (not bootstrap(k), k not in self._connected))[:cap])
                for key in sorted(current.keys() - keep):
                    del current[key]
                    self._log_rejection(key, f"{cap} connections already open (limits.max_connections x 2)",
                                        what="a connection")
                    with trio.move_on_after(2):
                        await network.close_peer(ID.from_base58(key))
            for key in sorted(current.keys() - self._connected.keys()):
                self.log(f"peer connected: {key} via {current[key]}")
                self.announce_now.set()
                if self.peers.get(key) is not None:
                    with self.store.write_transaction():
                        self.peers.connected(key, now_ms())
            for key in self._connected.keys() - current.keys():
                self.log(f"peer disconnected: {key}")
                self._fabnode_peers.discard(key)
            self._connected = current
            await trio.sleep(0.2)

    async def _dial_peers(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                if len(self._connected) < self.options.max_connections:
                    for row in self.peers.due(now_ms()):
                        if row.peer_id in self._connected or row.peer_id in self._dialing or not row.addrs:
                            continue
                        if row.peer_id == str(self.host.get_id()):
                            continue
                        if self.penalties.cut_off(row.peer_id, now_ms()):
                            continue
                        self._dialing.add(row.peer_id)
                        nursery.start_soon(self._dial, row)
                await trio.sleep(0.5)

    async def _dial(self, row) -> None:
        from libp2p.peer.id import ID
        from libp2p.peer.peerinfo import PeerInfo
        from multiaddr import Multiaddr

        try:
            try:
                peer_id = ID.from_base58(row.peer_id)
                info = PeerInfo(peer_id, [Multiaddr(a) for a in row.addrs])
                self.host.get_network().unblock_peer(peer_id)  # docs/libp2p.md pitfall 4: the 60 s negative cache
                with trio.fail_after(DIAL_TIMEOUT):
                    await self.host.connect(info)
            except Exception as exc:
                with self.store.write_transaction():
                    wait = self.peers.dial_failed(row.peer_id, now_ms())
                if wait is None:
                    self.log(f"forgetting {_short(row.peer_id)}: unreachable for 30 days")
                elif row.failures == 0 or wait >= 60_000:
                    self.log(f"cannot reach {_short(row.peer_id)} ({type(exc).__name__}); retrying in {wait // 1000} s")
                return
            with self.store.write_transaction():
                self.peers.connected(row.peer_id, now_ms())
        finally:
            self._dialing.discard(row.peer_id)

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
                key = str(info.peer_id)
                if key == str(self.host.get_id()):
                    continue
                addrs = [str(a) for a in info.addrs if "/tcp/" in str(a)]
                with self.store.write_transaction():
                    new = self.peers.remember(key, addrs, "mdns", now_ms())
                if new:
                    self.log(f"peer found on the LAN: {key}")
        finally:
            peerDiscovery.unregister_peer_discovered_handler(on_found)

            def stop():
                mdns.broadcaster.unregister()
                mdns.listener.stop()
                mdns.zeroconf.close()

            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(stop)

    # -------------------------------------------------------------- sync

    def _request_sync(self, peer: str) -> None:
        try:
            self._sync_send.send_nowait(peer)
        except trio.WouldBlock:
            pass  # a thousand requests already wait; the periodic sync covers this one

    async def _sync_scheduler(self) -> None:
        """Run the syncs asked for (on meeting a peer, periodically, after news), one per peer."""
        async with trio.open_nursery() as nursery:
            async for peer in self._sync_requests:
                if peer not in self._syncing and peer not in self._inbound_syncs and peer in self._connected \
                        and len(self._syncing) + len(self._inbound_syncs) < MAX_SYNCS:
                    self._syncing.add(peer)
                    nursery.start_soon(self._sync_with, peer)

    async def _sync_periodically(self) -> None:
        while True:
            await trio.sleep(self.options.sync_interval)
            me = str(self.host.get_id())
            for peer in sorted(self._fabnode_peers & self._connected.keys()):
                if peer > me:  # as on meeting: the smaller peer id starts, so one sync, not two
                    self._request_sync(peer)

    async def _sync_with(self, peer: str) -> None:
        from libp2p.peer.id import ID
        from fabnode.protocol.sync import PROTOCOL as SYNC

        try:
            peer_id = ID.from_base58(peer)
            try:
                with trio.fail_after(DIAL_TIMEOUT):
                    stream = await self.host.new_stream(peer_id, [SYNC])
            except Exception as exc:
                self.log(f"sync with {_short(peer)} could not start: {type(exc).__name__}")
                return
            await self._run_sync(stream, peer, initiator=True)
        finally:
            self._syncing.discard(peer)

    async def _handle_sync(self, stream) -> None:
        """A peer starts a sync: one session per peer at a time, :data:`MAX_SYNCS` in all."""
        peer = str(stream.muxed_conn.peer_id)
        refusal = ("one session per peer at a time" if peer in self._inbound_syncs or peer in self._syncing
                   else "cut off" if self.penalties.cut_off(peer, now_ms())
                   else f"{MAX_SYNCS} sessions already running"
                   if len(self._syncing) + len(self._inbound_syncs) >= MAX_SYNCS else None)
        if refusal is not None:
            self._log_rejection(peer, what="a sync stream", reason=refusal)
            with trio.move_on_after(1):
                await stream.reset()
            return
        self._inbound_syncs.add(peer)
        try:
            await self._run_sync(stream, peer, initiator=False)
        finally:
            self._inbound_syncs.discard(peer)

    async def _run_sync(self, stream, peer: str, *, initiator: bool) -> None:
        from fabnode.protocol.reconcile import ReconcileError
        from fabnode.protocol.sync import SyncProtocolError

        from fabnode.node.runtime.sync import sync_over_stream

        outbox_before = self.records.outbox_cids()
        try:
            report = await sync_over_stream(stream, initiator=initiator, peer=peer, items=self.items,
                                            records=self.records, store=self.store, now_ms=now_ms,
                                            quota=self.quota)
        except (SyncProtocolError, ReconcileError, RecordRejected) as exc:
            wait = self.penalties.strike(peer, f"sync: {exc}", now_ms())
            self.log(f"sync with {_short(peer)} failed: {exc}; cutting it off for {wait // 1000} s")
            self.last_syncs[peer] = {"peer": peer, "error": str(exc), "started_ms": now_ms()}
            with trio.move_on_after(2):
                await stream.reset()
            with trio.move_on_after(2):
                await self.host.disconnect(stream.muxed_conn.peer_id)
            return
        except Exception as exc:  # the peer went away, a timeout: the next sync resumes
            self.log(f"sync with {_short(peer)} interrupted ({type(exc).__name__}); the next one resumes")
            with trio.move_on_after(1):
                await stream.reset()
            return
        with trio.move_on_after(1):
            await stream.close()
        self.last_syncs[peer] = report.as_json()
        if outbox_before:  # the peer now holds everything we had: nothing left to announce to it
            with self.store.write_transaction():
                self.records.announced(outbox_before)
        if report.sent or report.new or report.over_quota:
            over = f" ({report.over_quota} by untrusted keys over the strangers' quota, not kept)" if report.over_quota else ""
            self.log(f"synced with {_short(peer)}: sent {report.sent}, received {report.new} new record(s){over} "
                     f"in {report.round_trips} round trip(s), {report.bytes_out + report.bytes_in} bytes")
        if report.new:  # pass the news on to everyone else at once
            for other in sorted(self._fabnode_peers & self._connected.keys() - {peer}):
                self._request_sync(other)

    # -------------------------------------------------------------- DHT

    async def _provide_bundles(self) -> None:
        """Announce every pinned root as a DHT provider record, and again every ten minutes
        (provider records expire, and are only refreshed while the node runs)."""
        last_round = trio.current_time()
        while True:
            if trio.current_time() - last_round > PROVIDE_INTERVAL_S:
                self._provided.clear()
                last_round = trio.current_time()
            if self._connected:
                added = 0
                for pin in self.store.pins():
                    if pin.cid not in self._provided:
                        with trio.move_on_after(10):
                            try:
                                ok = await self.dht.provide(cid_str(pin.cid))
                            except Exception:
                                ok = False  # retried on the next round
                            if ok:
                                self._provided.add(pin.cid)
                                added += 1
                if added:
                    self.log(f"announced {added} bundle(s) as provider in the DHT")
            await trio.sleep(2)

    async def _find_providers(self, root: bytes) -> list:
        try:
            with trio.move_on_after(10):
                found = await self.dht.find_providers(cid_str(root))
                seen, out = set(), []
                for info in found:  # the library returns duplicates (docs/libp2p.md pitfall 7)
                    if info.peer_id not in seen and info.peer_id != self.host.get_id():
                        seen.add(info.peer_id)
                        out.append(info)
                return out
        except Exception:
            pass
        return []

    # -------------------------------------------------------------- fetching

    async def _seed(self) -> None:
        """Fetch, one at a time, the bundles the seeding policy wants (node/runtime/seeding.py); a
        bundle that no peer could send is tried again a minute later."""
        from fabnode.node.runtime.seeding import SOURCE_PREFIX, describe, seeded_bytes, wanted_bundles

        retry_at: dict[bytes, float] = {}
        over_budget_said = False
        me = self.home.identity().did
        last_state, idle_until = None, 0.0
        while True:
            await trio.sleep(1)
            if not self._connected:
                continue
            # the policy's answer only changes with the records, the follows or the pins (or when
            # a retry falls due): while none has, a policy that found nothing to do is not re-run
            state = (self.records.change_marker(), tuple(self.records.follows()), len(self.store.pins()))
            if state == last_state and trio.current_time() < idle_until:
                continue
            last_state, idle_until = state, 0.0
            now = trio.current_time()
            wanted = [(b, d) for b, d in wanted_bundles(self.records, self.store, me, self.options.follow_trusted)
                      if retry_at.get(b, 0) <= now]
            used = seeded_bytes(self.store)
            self.seeding = {"wanted": len(wanted), "used_bytes": used, "budget_bytes": self.options.seeding_budget}
            if not wanted:
                idle_until = min((t for t in retry_at.values() if t > now), default=float("inf"))
                continue
            if used >= self.options.seeding_budget:
                idle_until = float("inf")
                if not over_budget_said:
                    self.log(f"seeding budget of {self.options.seeding_budget >> 20} MiB reached: "
                             f"{len(wanted)} bundle(s) not fetched (raise seeding.budget_mib to fetch them)")
                    over_budget_said = True
                continue
            over_budget_said = False
            bundle, design = wanted[0]
            self.log(f"seeding: fetching {describe(bundle, design)}")
            try:
                await self.fetch(cid_str(bundle), source=f"{SOURCE_PREFIX}{cid_str(design)}")
            except FabnodeError as exc:
                retry_at[bundle] = trio.current_time() + 60
                self.log(f"seeding: {cid_str(bundle)} not fetched for now ({exc})")

    async def fetch(self, cid_path: str, source: str = "") -> dict:
        """Fetch a DAG for `fabnode get`: connected fabnode peers first, then DHT providers."""
        from libp2p.peer.id import ID
        from libp2p.peer.peerinfo import PeerInfo

        from fabnode.node.runtime.fetch import fetch_from_peers, pin_fetched

        root, path = parse_cid_path(cid_path)
        progress = {"root": cid_str(root), "from": "", "blocks": 0, "bytes": 0}
        self.fetching[id(progress)] = progress
        store = self.host.get_peerstore()
        try:
            candidates = [PeerInfo(ID.from_base58(p), store.addrs(ID.from_base58(p)))
                          for p in self._connected if p in self._fabnode_peers or self.peers.get(p)]
            self.log(f"fetching {cid_str(root)}: asking {len(candidates)} connected peer(s)")
            try:
                result = await fetch_from_peers(self.host, self.store, root, path, candidates, self.log, progress)
            except FabnodeError as first:
                providers = [p for p in await self._find_providers(root)
                             if str(p.peer_id) not in {str(c.peer_id) for c in candidates}]
                if not providers:
                    raise FabnodeError(f"{first}; the DHT knows no other provider") from None
                self.log(f"fetching {cid_str(root)}: asking {len(providers)} provider(s) found in the DHT")
                result = await fetch_from_peers(self.host, self.store, root, path, providers, self.log, progress)
            pin_fetched(self.store, result["root"], source)
            self.log(f"fetch finished: {cid_str(result['root'])}, {result['fetched']} block(s) "
                     f"from {_short(result['from'])}")
            return {"root": cid_str(result["root"]), "fetched_blocks": result["fetched"],
                    "already_held": result["held"], "from": str(result["from"]), "attempts": result["attempts"]}
        finally:
            del self.fetching[id(progress)]

    # -------------------------------------------------------------- control

    async def _serve_control(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._control_connection, listeners)

    async def _control_connection(self, stream) -> None:
        from fabnode.node.runtime.control import MAX_LINE
        from fabnode.node.http.web import token_matches

        async with stream:
            buf = b""
            with trio.move_on_after(10):
                while b"\n" not in buf and len(buf) < MAX_LINE:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    buf += chunk
            try:
                request = json.loads(buf.split(b"\n", 1)[0])
                token = request.get("token", "")
                # compared as bytes: compare_digest raises TypeError on non-ASCII text
                if not isinstance(token, str) or not token_matches(token, self.token):
                    raise FabnodeError("wrong control token")
                reply = {"ok": True, **await self._control(request)}
            except FabnodeError as exc:
                reply = {"ok": False, "error": str(exc)}
            except (ValueError, AttributeError):
                reply = {"ok": False, "error": "malformed control request"}
            except Exception as exc:
                self.log(f"internal error answering a local command: {type(exc).__name__}: {exc}")
                reply = {"ok": False, "error": f"the daemon failed: {type(exc).__name__}: {exc}"}
            try:
                await stream.send_all(json.dumps(reply).encode() + b"\n")
            except trio.BrokenResourceError:
                pass

    async def _control(self, request: dict) -> dict:
        cmd = request.get("cmd")
        if cmd == "announce":
            self.announce_now.set()
            return {}
        if cmd == "status":
            return self.status()
        if cmd == "peers":
            now = now_ms()
            return {"connected": dict(self._connected),
                    "cut_off": {p: {"reason": o.reason, "for_s": (o.until_ms - now) // 1000, "strikes": o.strikes}
                                for p, o in self.penalties.current(now).items()}}
        if cmd == "fetch":
            return await self.fetch(str(request.get("cid", "")))
        raise FabnodeError(f"unknown control command {cmd!r}")

    def status(self) -> dict:
        return {
            "pid": os.getpid(), "uptime_s": int(time.time() - self.started), "addrs": self._addresses(),
            "connected": dict(self._connected), "mesh_peers": self._mesh_peers(),
            "fetching": [dict(t) for t in self.fetching.values()],
            "serving": [dict(t) for t in self.server.active.values()],
            "mdns": self.options.mdns, "http": self.http or "off",
            "last_syncs": list(self.last_syncs.values()), "seeding": dict(self.seeding),
        }


def run_daemon(home: Home, options: DaemonOptions) -> None:
    """Run until SIGINT or SIGTERM; print one line per meaningful event.

    The home's lock comes first (node/runtime/lock.py): a second node of the same home is refused before
    it opens anything, so it cannot disturb the first one's daemon.json."""
    from fabnode.node.runtime.addresses import bind_http, check_listen
    from fabnode.node.runtime.lock import lock_home

    for warning in home.config_warnings:  # in the log, where an operator of a service looks
        Daemon._print(f"warning: {warning}")
    lock = lock_home(home.path)
    http_socket = None
    try:
        check_listen(options.listen, options.listen_change)
        if options.http != "off":
            try:
                http_socket = bind_http(options.http, options.http_change)
            except FabnodeError as exc:
                if options.http_required:
                    raise
                Daemon._print(f"{exc}; the node runs without it")
        daemon = Daemon(home, options, http_socket=http_socket)
        try:
            trio.run(daemon.run)
        except BaseExceptionGroup as group:
            from fabnode.interrupts import find_interrupt
            from fabnode.protocol.errors import first_in_group

            raise find_interrupt(group) or first_in_group(group, FabnodeError) or group from None
        sys.stdout.flush()
    finally:
        if http_socket is not None and http_socket.fileno() != -1:
            http_socket.close()  # never handed to Hypercorn (which closes it otherwise)
        os.close(lock)
