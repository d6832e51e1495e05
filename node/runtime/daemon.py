"""The daemon (`fabnode run`): the node online — wiring around the pure node service.

Theory of operation
-------------------
Everything the node *decides* is :class:`node.service.service.NodeService`: a state machine
that takes events and the time, and returns effects (docs/design.md, "The node service"). This
module only wires it to the world, under one trio nursery:

* **the driver** (:meth:`Daemon.feed`): every event goes to ``service.handle(event, now)``;
  the effects that come back are carried out at once, in order (:meth:`Daemon._carry_out`) —
  frames to write, dials, SQLite writes, log lines. Answers that are immediate (records stored
  during a sync) are handed back before the next event. A timer task calls ``service.tick``
  when ``service.deadline()`` comes, or when a SetTimer effect moves it earlier.
* **peers** (:mod:`node.runtime.peers`): libp2p's connections become events; dials and
  disconnections are carried out; bootstrap addresses and mDNS discoveries are handed over.
* **gossip** (:mod:`node.runtime.gossip`): gossipsub with the service as topic validator;
  records stored in batches; announcements published.
* **sync** (:mod:`node.runtime.sync`): the sessions' frames over ``/fabnode/sync/1.0.0`` streams.
* **fetch** (:mod:`node.runtime.fetch`, :mod:`node.runtime.fetcher`): serving
  ``/fabnode/car/1.1.0`` and ``1.0.0`` within its budgets, and fetching for `get` and seeding.
* **Bitswap** (:mod:`node.runtime.bitswap`): serving every held block to IPFS nodes
  (``/ipfs/bitswap/1.2.0``, ``1.1.0``, ``1.0.0``) within the same budgets and upload cap.
* **providers** (:mod:`node.runtime.providers`): the Kademlia DHT.
* **control** (:func:`node.runtime.control.serve_control`): the CLI's port on 127.0.0.1.
* **HTTP** (:func:`node.http.web.serve_http`), unless ``http = "off"``: the lab's pages and
  the trustless-gateway subset, on Hypercorn's trio worker.

Each task is restarted a second after an unexpected error (:meth:`Daemon._keep_running`), so one
failing task never takes the node down. Before anything else the daemon takes the home's lock
(:mod:`node.runtime.lock`): one node per home. Once everything is started it writes
``HOME/daemon.json`` (pid, listen addresses, control port, token, web address) and logs its
addresses. SIGINT or SIGTERM cancel the nursery; the host is then closed and ``daemon.json``
removed. SQLite calls are made from the trio thread: they are short, and WAL lets the CLI read
and write meanwhile. The py-libp2p pitfalls handled (gossip bursts, the negative dial cache,
mDNS, DHT duplicates, shutdown) are described in docs/libp2p.md.
"""

from __future__ import annotations

import functools
import os
import secrets
import signal
import sys
import time

import trio

from fabnode.node.service import effects as fx
from fabnode.node.service import events as ev
from fabnode.node.service.service import NodeService, ServiceConfig
from fabnode.protocol.errors import FabnodeError

from fabnode.node.config import DaemonOptions
from fabnode.node.home import Home


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Daemon:
    def __init__(self, home: Home, options: DaemonOptions, log=None, http_socket=None) -> None:
        from fabnode.protocol.quota import StrangerLimits
        from fabnode.storage import PeerStore
        from fabnode.storage.records import RecordStore

        from .fetch import FetchServer
        from .quota import StrangerQuota
        from .view import StoreView

        self.home = home
        self.options = options
        self.log = log or self._print
        self.store = home.open_store()
        self.records = RecordStore(self.store.db.conn)
        self.peer_table = PeerStore(self.store.db.conn)
        self.me = home.identity().did
        quota = StrangerQuota(self.records, self.me, StrangerLimits(
            options.stranger_per_author, options.stranger_per_peer, options.stranger_storage), self.log)
        self.view = StoreView(self.store, self.records, self.me, options.follow_trusted, quota)
        identity = home.identity()
        self.view.my_name, self.view.my_peer_id = identity.name, identity.peer_id
        self._ensure_lab_record()
        self.server = FetchServer(self.store, self.log, streams_per_peer=options.streams_per_peer,
                                  streams_total=options.streams_total, upload_rate=options.upload_rate)
        self.pacer = self.server.pacer  # one upload cap for sync, gossip and serving: records first
        self.server.priority_of = self._serving_priority
        self.started = time.time()
        self.service: NodeService | None = None
        self.host = self.nursery = None
        self.peers = self.gossip = self.syncs = self.providers = self.fetcher = self.bitswap = self.nat = None
        self.http = self.pages = None
        self.token = ""
        self.http_socket = http_socket  # bound by run_daemon before the start; None: no web interface
        self._carrying_out = False
        self._wake = trio.Event()

    @staticmethod
    def _print(line: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)

    # -------------------------------------------------------------- the driver

    def feed(self, event) -> list:
        """Hand ``event`` to the service and carry out what it answers; returns those effects."""
        self.service.handle(event, now_ms())
        return self._carry_out()

    def _keep_routes(self, host) -> None:
        """A bootstrap peer is reached only at the addresses the operator gave, never at those it
        announces about itself (identify): the operator's address may be a tunnel, a port
        forward or a shaped link, the announced ones a private address or the way around the
        link. libp2p dials every address its peerstore holds — for our dials, stream opens,
        its auto-connector, the DHT — so the peerstore is kept from learning others for such a
        peer (issue 14: after a cut, a lab redialled the hub's announced address, around the
        link; identify had added it)."""
        from multiaddr import Multiaddr

        store = host.get_peerstore()
        add_addrs = store.add_addrs

        def guarded(peer_id, addrs, ttl=0):
            entry = self.service.book.get(str(peer_id)) if self.service else None
            if entry is not None and entry.source == "bootstrap":
                allowed = set(entry.addrs)
                # a signed peer record clears the addresses before adding its own: put ours back
                addrs = [a for a in addrs if str(a) in allowed] or [Multiaddr(a) for a in entry.addrs]
            add_addrs(peer_id, addrs, ttl)

        store.add_addrs = guarded

    def _carry_out(self) -> list:
        if self._carrying_out:  # an effect answered with an event: the outer loop carries on
            return []
        self._carrying_out = True
        done = []
        try:
            while effects := self.service.drain():
                for effect in effects:
                    self._do(effect)
                done += effects
        finally:
            self._carrying_out = False
        return done

    def _do(self, e) -> None:
        if isinstance(e, fx.Log):
            self.log(e.line)
        elif isinstance(e, fx.SendFrame):
            self.syncs.send(e.stream, e.data)
        elif isinstance(e, fx.StoreRecords):
            if e.gossip:
                self.gossip.store(e)
            else:  # a sync's records: stored now, answered before its next frame
                new, over, reason = self.view.store_records(e.blocks, e.peer, now_ms(), e.records)
                self.service.handle(ev.RecordsStored(e.ticket, new, over, reason), now_ms())
        elif isinstance(e, fx.OpenStream):
            self.syncs.open(e.stream, e.peer)
        elif isinstance(e, fx.CloseStream):
            self.syncs.close(e.stream)
        elif isinstance(e, fx.ResetStream):
            self.syncs.reset(e.stream)
        elif isinstance(e, fx.Dial):
            self.peers.dial(e.peer, e.addrs)
        elif isinstance(e, fx.Disconnect):
            self.peers.disconnect(e.peer)
        elif isinstance(e, fx.Publish):
            self.gossip.publish(e.data)
        elif isinstance(e, fx.MarkAnnounced):
            self.view.announced(e.cids)
        elif isinstance(e, fx.RememberPeer):
            with self.store.write_transaction():
                self.peer_table.save(e)
        elif isinstance(e, fx.ForgetPeer):
            with self.store.write_transaction():
                self.peer_table.forget(e.peer)
        elif isinstance(e, fx.Fetch):
            self.nursery.start_soon(self._seed, e.root, e.source)
        elif isinstance(e, fx.DropBundle):
            self.nursery.start_soon(self._drop, e.root)
        elif isinstance(e, fx.SetTimer):
            self._wake.set()
        # fx.Forward: gossipsub forwards a message itself once the validator says yes

    async def _timer(self) -> None:
        """Tick the service when its deadline comes (at least once a second)."""
        while True:
            at = self.service.deadline()
            delay = 1.0 if at is None else min(1.0, max(0.0, (at - now_ms()) / 1000))
            with trio.move_on_after(delay):
                await self._wake.wait()
            self._wake = trio.Event()
            self.service.tick(now_ms())
            self._carry_out()

    async def _seed(self, root: bytes, source: str) -> None:
        from fabnode.protocol.cid import cid_str

        try:
            await self.fetcher.fetch(cid_str(root), source=source)
        except FabnodeError as exc:
            self.feed(ev.FetchFinished(root, str(exc)))
        else:
            self.feed(ev.FetchFinished(root))

    async def _drop(self, root: bytes) -> None:
        """The seeding budget: unpin a seeded bundle and delete what only it used, in a worker
        thread with its own connection (node/local/disk.py), then tell the service."""
        from fabnode.node.local.disk import evict_bundle

        try:
            # abandoned on shutdown: each batch is one transaction, so stopping mid-way is safe
            freed = await trio.to_thread.run_sync(evict_bundle, self.home.db_path, root, abandon_on_cancel=True)
        except Exception as exc:
            self.feed(ev.BundleDropped(root, 0, f"{type(exc).__name__}: {exc}"))
        else:
            self.feed(ev.BundleDropped(root, freed))

    # -------------------------------------------------------------- lifecycle

    def _ensure_lab_record(self) -> None:
        """A home made before lab records (or whose name or node changed) signs its ``lab``
        record now, so peers learn the lab's name (node/local/names.py)."""
        from fabnode.node.local.names import ensure_lab_record

        try:
            made = ensure_lab_record(self.home, announce=False)
        except FabnodeError as exc:
            self.log(f"warning: no lab record announced: {exc}")
        else:
            if made:
                self.log(f"lab record {made}: this lab is “{self.view.my_name}”")

    async def run(self) -> None:
        from libp2p.tools.anyio_service import background_trio_service

        from fabnode.node.service.peers import PeerEntry
        from fabnode.protocol.sync import PROTOCOL as SYNC

        from .bitswap import Bitswap
        from .fetch import PROTOCOL as FETCH, PROTOCOL_INTERIOR as FETCH_INTERIOR
        from .fetcher import Fetcher
        from .gossip import GossipRuntime
        from fabnode.protocol.nat import RelayLimits

        from .host import node_key_pair, quiet_library_logs, running_host
        from .nat import NatRuntime
        from .nat import running as running_nat
        from .peers import PeerRuntime
        from .providers import Providers
        from .sync import SyncStreams

        quiet_library_logs()
        opts = self.options
        self.service = NodeService(
            str(node_key_pair_id(self.home)), self.view,
            ServiceConfig(sync_interval_ms=opts.sync_interval * 1000, gossip_rate=opts.gossip_rate,
                          max_connections=opts.max_connections, seeding_budget=opts.seeding_budget),
            peers=[PeerEntry(r.peer_id, tuple(r.addrs), r.source, r.first_seen_ms, r.last_connected_ms,
                             r.failures, r.next_dial_ms) for r in self.peer_table.all()])
        self.server.on_offence = lambda peer, reason: (self.service.cut_off(peer, reason), self._carry_out())
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with running_host(node_key_pair(self.home), opts.listen, change=opts.listen_change,
                                    announce=opts.announce) as host:
                self.host = host
                self._keep_routes(host)
                self.gossip = GossipRuntime(self.feed, self.view, self.log, now_ms, self.pacer)
                pubsub, gossipsub = self.gossip.make_services(host, opts.gossip_rate)
                self.providers = Providers(host, self.store, self.log, lambda: bool(self.service.connected),
                                           relayed_addrs=lambda: self.nat.relays.values() if self.nat else ())
                self.peers = PeerRuntime(host, self.feed, self.log, self.gossip.mesh_peers)
                self.syncs = SyncStreams(host, self.feed, self.service.frame_limit, self.pacer)
                self.nat = NatRuntime(host, self.log, relay=opts.relay, hole_punching=opts.hole_punching,
                                      limits=opts.relay_limits or RelayLimits(), confirmations=opts.dialback_confirmations,
                                      banned=lambda p: self.service.penalties.cut_off(p, now_ms()) is not None,
                                      announce=opts.announce, pacer=self.pacer)
                self.fetcher = Fetcher(host, self.store, self.providers, self._fetch_candidates, self.log,
                                       dialer=self.nat.connect, explain=self.nat.explain, describe=self.nat.link_note)
                host.set_stream_handler(FETCH, self.server.handle)
                host.set_stream_handler(FETCH_INTERIOR, self.server.handle)  # 1.1.0: also ``interior``
                self.bitswap = Bitswap(host, self.store, self.log, pacer=self.pacer,
                                       streams_per_peer=opts.streams_per_peer, streams_total=opts.streams_total)
                self.bitswap.on_offence = self.server.on_offence
                self.bitswap.register()
                host.set_stream_handler(SYNC, self.syncs.handle_inbound)
                async with background_trio_service(pubsub), background_trio_service(gossipsub), \
                        background_trio_service(self.providers.dht), running_nat(self.nat):
                    subscription = await self.gossip.subscribe()
                    async with trio.open_nursery() as nursery:
                        self.nursery = self.peers.nursery = self.syncs.nursery = self.bitswap.nursery = nursery
                        self.nat.nursery = nursery
                        control_port = await nursery.start(self._serve_control)
                        for task in (functools.partial(self.gossip.drain_deliveries, subscription),
                                     self.gossip.storer, self.gossip.publisher, self.peers.watch,
                                     self.providers.provide_bundles, self._timer, self.nat.check_reachability):
                            nursery.start_soon(self._keep_running, task)
                        self.peers.remember_bootstrap(opts.bootstrap)
                        http = None
                        if self.http_socket is not None:
                            http = await self._start_http(nursery)
                        addrs = self._addresses()
                        self._write_state(addrs, control_port, http)
                        for addr in self._addresses(self.host.get_transport_addrs()):
                            self.log(f"listening on {addr}")
                        for addr in addrs if opts.announce else []:
                            self.log(f"announced as {addr}")
                        if http:
                            self.log(f"web interface on http://{http}/")
                        if opts.mdns:
                            nursery.start_soon(self.peers.mdns_or_explain)
                        async for sig in signals:
                            self.log(f"stopping ({signal.Signals(sig).name})")
                            break
                        nursery.cancel_scope.cancel()
        (self.home.path / "daemon.json").unlink(missing_ok=True)

    async def _start_http(self, nursery):
        from fabnode.node.http.pages import Pages
        from fabnode.node.http.web import allowed_hosts, http_token, make_app, serve_http

        # the pages show only who is connected: not the whole status, whose 'waiting' part asks the
        # seeding policy over every design (650 ms a page at 10,000 designs in three languages)
        pages = self.pages = Pages(self.home, self.store,
                                   status=lambda: {"connected": self.service.status()["connected"]})
        hosts = allowed_hosts(self.options.http, self.options.http_hosts)
        app = make_app(self.store, token=http_token(self.home.path), pages=pages, log=self.log, hosts=hosts)
        return await nursery.start(serve_http, app, self.http_socket)

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

    def _addresses(self, addrs=None) -> list[str]:
        out = []
        for addr in self.host.get_addrs() if addrs is None else addrs:
            text = str(addr)
            out.append(text if "/p2p/" in text else f"{text}/p2p/{self.host.get_id()}")
        return out

    def _write_state(self, addrs: list[str], control_port: int, http: str | None) -> None:
        from .control import write_state

        self.token = secrets.token_hex(16)
        self.http = http
        write_state(self.home.path, {"pid": os.getpid(), "addrs": addrs, "control": control_port,
                                     "token": self.token, "started": self.started, "http": http})

    def _serving_priority(self, root: bytes) -> int:
        """Bundles of this lab's own versions and followed designs are served before others."""
        from .pacing import BUNDLES, OWN_BUNDLES
        from .seeding import first_bundles

        return OWN_BUNDLES if root in first_bundles(self.records, self.me) else BUNDLES

    def _fetch_candidates(self) -> list[str]:
        return [p for p in self.service.connected if p in self.service.fabnode or self.service.book.get(p)]

    async def fetch(self, cid_path: str, source: str = "", timeout_s: float | None = None, on_change=None) -> dict:
        """Fetch a DAG for `fabnode get`: connected fabnode peers first, then DHT providers."""
        return await self.fetcher.fetch(cid_path, source, timeout_s, on_change)

    # -------------------------------------------------------------- control

    async def _serve_control(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        from .control import serve_control

        await serve_control(self._control, lambda: self.token, self.log, task_status)

    async def _control(self, request: dict, emit=None) -> dict:
        cmd = request.get("cmd")
        if cmd == "announce":
            self.feed(ev.OutboxChanged())
            return {}
        if cmd == "key_changed":
            return self.reload_key()
        if cmd == "status":
            return self.status()
        if cmd == "peers":
            return {"connected": dict(self.service.connected), "cut_off": self.service.cut_off_peers(now_ms())}
        if cmd == "fetch":
            timeout_s = request.get("timeout_s")
            if not isinstance(timeout_s, (int, float)) or isinstance(timeout_s, bool) or timeout_s <= 0:
                timeout_s = 600
            return await self.fetch(str(request.get("cid", "")), timeout_s=float(timeout_s),
                                    on_change=emit if request.get("progress") is True else None)
        raise FabnodeError(f"unknown control command {cmd!r}")

    def reload_key(self) -> dict:
        """``key rotate`` / ``key revoke`` changed this home's author key (issue 17): read it
        again, so what this daemon counts as its own lab (trust, quota, seeding, pages) follows,
        and announce the new key's lab record the command queued."""
        identity = self.home.identity()
        self.me = self.view.me = identity.did
        if self.view.quota is not None:
            self.view.quota.me = identity.did
            self.view.quota._vouch_marker = None  # who is trusted is counted from the new key
        self.view.my_name = identity.name
        if self.pages is not None:
            self.pages.identity = identity
            self.pages._names = None
        self.feed(ev.OutboxChanged())
        self.log(f"author key is now {identity.did}")
        return {"did": identity.did}

    def status(self) -> dict:
        service = self.service.status()
        return {
            "pid": os.getpid(), "uptime_s": int(time.time() - self.started), "addrs": self._addresses(),
            "connected": service["connected"], "mesh_peers": self.gossip.mesh_peers(),
            "fetching": [dict(t) for t in self.fetcher.active.values()],
            "serving": [dict(t) for t in self.server.active.values()],
            "mdns": self.options.mdns, "http": self.http or "off",
            "last_syncs": service["last_syncs"], "seeding": service["seeding"],
            "waiting": self._waiting(service), "sent": {**self.pacer.status(), "records": service["records_sent"]},
            "bitswap": self.bitswap.status(),
            "nat": self.nat.status(),
        }

    def _waiting(self, service: dict) -> dict:
        """What waits to go out or come in, for `fabnode status` (issue 14)."""
        from fabnode.protocol.cid import cid_str

        from .seeding import first_bundles

        first = first_bundles(self.records, self.me)
        wanted = [{"bundle": cid_str(b), "design": cid_str(d), "first": b in first,
                   "held_bytes": self._held_bytes(b)} for b, d in self.view.wanted_bundles()[:20]]
        return {"outbox": self.records.outbox_size(), "syncs_running": service["syncs_running"],
                "syncs_waiting": service["syncs_waiting"], "bundles": wanted,
                "upload_bytes": self.pacer.pacer.waiting()}

    def _held_bytes(self, bundle: bytes) -> int:
        """Bytes of a wanted bundle already here (an interrupted fetch keeps them)."""
        from .fetch import _held_part

        try:
            return sum(self.store.size(cid) or 0 for cid, _ in _held_part(self.store, bundle))
        except Exception:
            return 0


def node_key_pair_id(home: Home):
    """This node's libp2p peer id (the service compares it with its peers')."""
    from libp2p.peer.id import ID

    from .host import node_key_pair

    return ID.from_pubkey(node_key_pair(home).public_key)


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
