"""Fetching a DAG from a peer over ``/fabnode/car/1.1.0`` or ``1.0.0``, and serving ours (docs/protocol.md §9).

The protocol core is :mod:`protocol.fetch`; this module moves its frames over libp2p streams
under trio. The asker stores verified blocks in batches, each in its own transaction, so a
transfer that breaks keeps what arrived and the next attempt asks only for the rest (it lists
the blocks it holds in its request). The root is pinned, and files written out, only once the
whole DAG is here.
"""

from __future__ import annotations

import math
import signal
import sqlite3
import time
import weakref
from contextlib import aclosing, contextmanager

import trio

from fabnode import interrupts
from fabnode.protocol.car import encode_header, encode_section
from fabnode.protocol.cid import DAG_PB, cid_codec, cid_str, parse_cid_path
from fabnode.protocol.dagpb import decode_node
from fabnode.protocol import dag
from fabnode.protocol.errors import FabnodeError, InvalidBlock, first_in_group, human_size
from fabnode.protocol.fetch import (
    MAX_HAVE,
    MAX_REQUEST_BYTES,
    PROTOCOL,
    PROTOCOL_INTERIOR,
    FetchRequest,
    FetchSession,
    RemoteProtocolError,
    decode_request,
    encode_request,
)
from fabnode.protocol.unixfs import dag_sizes, decode as decode_unixfs, resolve, resolve_crossing
from fabnode.storage import BlockStore, Pin

from fabnode.node.config import DEFAULTS
from fabnode.node.home import Home
from fabnode.node.runtime.blockreader import sections_ahead
from fabnode.node.runtime.blockwriter import BlockWriter
from fabnode.node.runtime.wire import read_frame, write_all
from fabnode.node.service.pacing import BUNDLES
from fabnode.node.service.fetching import ServeSlots
from fabnode.node.service.fetchplan import FetchPlan
from fabnode.node.service.loglimit import LogLimiter
from fabnode.node.local.sneakernet import dag_cids

CONNECT_TIMEOUT = 10
STREAM_OPEN_TIMEOUT = 30
"""Opening a stream on a connection takes round trips that queue behind what the link is
already carrying: over 256 kbit/s, a queue of a few hundred KiB is ten seconds and more."""
READ_TIMEOUT = 30
"""The asker waits this long for the server's next bytes."""
REQUEST_TIMEOUT = 5
"""A serving stream must deliver its request frame within this (a slot is not a parking place)."""
SEND_TIMEOUT = 30
"""The asker must take some of a block within this (make room in the window), or its stream is
cut: a progress deadline, so a 1 MiB block may take a minute over a thin link."""
REQUESTS_IN_FLIGHT = 2
"""Requests each peer is asked at once: while one stream ends and the next is set up, the other
keeps the link busy."""
BATCH_BYTES = 8 << 20
"""Blocks are committed in batches of this size, so an interrupted fetch keeps its progress."""


# ------------------------------------------------------------------ serving


def dag_in_order(store: BlockStore, root: bytes, skip: set[bytes]):
    """(cid, data) of root's DAG depth-first, each once, every block verified; blocks in
    ``skip`` are walked through, not yielded (the asker holds them, or they were sent already)."""
    for visit in dag.walk(store.get, root, skip=skip, descend_skipped=True):
        yield visit.cid, visit.data


def dag_interior_in_order(store: BlockStore, root: bytes, skip: set[bytes]):
    """(cid, data) of the dag-pb nodes of root's DAG depth-first (an ``interior`` request,
    protocol/fetch.py): leaves are neither read nor sent."""
    for visit in dag.walk(store.get, root, skip=skip, descend_skipped=True, has_block=store.has):
        if visit.data is not None:
            yield visit.cid, visit.data


def _now_ms() -> float:
    return trio.current_time() * 1000


class FetchServer:
    """Serves DAGs this node holds completely, within limits on streams and upload speed.

    ``streams_per_peer`` and ``streams_total`` bound concurrent requests; ``upload_rate``
    (bytes/s, 0 = no cap) paces every stream together. ``active`` lists the transfers in
    progress for ``fabnode status``.

    Who gets a slot, and the pacing, are decided by node/service/fetching.py (pure); here a
    stream must send its request within :data:`REQUEST_TIMEOUT` and the asker must take each
    block within :data:`SEND_TIMEOUT`, and an evicted stream's scope is cancelled.
    """

    def __init__(self, store: BlockStore, log=print, *,
                 streams_per_peer: int = DEFAULTS["limits.fetch_streams_per_peer"],
                 streams_total: int = DEFAULTS["limits.fetch_streams_total"],
                 upload_rate: int = DEFAULTS["limits.upload_bytes_per_second"]) -> None:
        self.store = store
        self.log = log
        self.streams_per_peer = streams_per_peer
        self.streams_total = streams_total
        self.upload_rate = upload_rate
        self.slots = ServeSlots(streams_per_peer, streams_total)
        self._scopes: dict[int, trio.CancelScope] = {}
        from .pacing import LinkPacer

        self.pacer = LinkPacer(upload_rate)
        """Shared with sync and gossip by the daemon (node/runtime/pacing.py): one cap, records first."""
        self.priority_of = lambda root: BUNDLES
        """The pacing priority of serving ``root`` (the daemon: own and followed designs first)."""
        self.on_offence = lambda peer, reason: None
        """Called with (peer, reason) when a peer breaks the protocol; the daemon cuts it off."""
        self.active: dict[int, dict] = {}
        self._refusals = LogLimiter(log, clock=trio.current_time)

    def _log_refusal(self, peer: str, what: str) -> None:
        """A refused or broken fetch: at most LINES_PER_MINUTE lines per peer per minute."""
        who = _short(peer)
        self._refusals.say(peer, f"fetch from {who} {what}",
                           stopping=f"more fetches from {who} refused; not logging them for a minute",
                           left_out=lambda n: f"… {n} more refusals from {who} suppressed in that minute")

    def _take_slot(self, key: int, peer: str) -> bool:
        """A slot for a new stream from ``peer``, evicting an idle greedier one if need be."""
        admitted, victim = self.slots.admit(key, peer, _now_ms())
        if victim is not None:
            self._scopes.pop(victim.key).cancel()
            self.log(f"fetch from {_short(victim.peer)} cut: its slot went to {_short(peer)} "
                     f"({'no request yet' if not victim.has_request else 'stalled'})")
        return admitted

    async def _pace(self, data: bytes, priority: int, peer: str, send) -> None:
        """``send(data)`` in pieces, each granted by the shared pacer (one cap with sync and
        gossip, records first: node/runtime/pacing.py) before it goes."""
        if not self.pacer.rate:
            await send(data)
            self.pacer.pacer.request(None, priority, len(data), 0, protocol="fetch", peer=peer)  # counted only
            return
        piece = self.pacer.pacer.piece_bytes()
        for start in range(0, len(data), piece):
            chunk = data[start:start + piece]
            await self.pacer.acquire(priority, len(chunk), "fetch", peer)
            await send(chunk)

    async def handle(self, stream) -> None:
        peer = str(stream.muxed_conn.peer_id)
        transfer = {"peer": peer, "root": "", "sent_bytes": 0}
        key = id(transfer)
        if not self._take_slot(key, peer):
            self._log_refusal(peer, "refused: too many streams at once")
            await stream.reset()
            return
        self.active[key] = transfer
        scope = self._scopes[key] = trio.CancelScope()
        try:
            with scope:
                await self._serve(stream, key, peer, transfer)
            if scope.cancelled_caught:
                with trio.move_on_after(1) as cleanup:
                    cleanup.shield = True
                    await stream.reset()
        except (FabnodeError, trio.TooSlowError) as exc:
            self._log_refusal(peer, f"refused: {exc}")
            if isinstance(exc, RemoteProtocolError):
                self.on_offence(peer, f"fetch: {exc}")  # a malformed request: the peer broke the protocol
            with trio.move_on_after(1):
                await stream.reset()
        except Exception as exc:  # a peer that went away mid-stream
            self._log_refusal(peer, f"ended: {type(exc).__name__}")
        finally:
            self.slots.release(key)
            self._scopes.pop(key, None)
            del self.active[key]

    async def _serve(self, stream, key: int, peer: str, transfer: dict) -> None:
        with trio.fail_after(REQUEST_TIMEOUT):
            # ``interior`` only over 1.1.0; on 1.0.0 the request is what it was before issue 20
            request = decode_request(await read_frame(stream, MAX_REQUEST_BYTES),
                                     interior_allowed=_protocol_of(stream) == PROTOCOL_INTERIOR)
        self.slots.requested(key, _now_ms())
        root, crossed = resolve_crossing(self.store.get, request.root, list(request.path))
        transfer["root"] = cid_str(root)
        if not dag_cids(self.store, root)[1]:  # serve only what we hold whole
            raise FabnodeError(f"{cid_str(root)} is not (completely) held here")

        async def send(data: bytes) -> None:
            await write_all(stream, data, SEND_TIMEOUT)  # the asker must take bytes within the timeout
            self.slots.progressed(key, _now_ms())

        # the requested root names the stream; a path's directories come first, so the asker
        # can check each step from the root it asked for (protocol.fetch)
        await send(encode_header([request.root]))
        for cid in crossed:
            await send(encode_section(cid, self.store.get(cid)))
        priority = self.priority_of(root) if self.pacer.rate else BUNDLES
        # read, verified and encoded in a worker thread ahead of the stream (blockreader.py),
        # each section paced with sync and gossip under one cap (records first: pacing.py)
        skip = set(request.have) | set(crossed)
        order = dag_interior_in_order if request.interior else dag_in_order
        async with aclosing(sections_ahead(self.store, lambda store: order(store, root, skip))) as sections:
            async for _cid, size, section in sections:
                await self._pace(section, priority, peer, send)
                transfer["sent_bytes"] += size
        await stream.close()
        self.log(f"served {cid_str(root)} to {_short(peer)}: {transfer['sent_bytes']} bytes")
        try:  # wanted: the seeding budget drops it last (issue 15); best effort, the serve is done
            with self.store.write_transaction():
                self.store.db.conn.execute("UPDATE pins SET wanted_ms = ? WHERE cid = ?",
                                           (time.time_ns() // 1_000_000, root))
        except sqlite3.Error:
            pass


# ------------------------------------------------------------------ asking


def _held_part(store: BlockStore, root: bytes) -> list[tuple[bytes, bytes]]:
    """The blocks of root's DAG already here (from an earlier, interrupted fetch), as (cid,
    data): data only for dag-pb nodes, whose links matter; raw leaves are only checked for
    presence, so memory stays small whatever the size of the bundle."""
    return [(visit.cid, visit.data or b"") for visit in dag.walk(store.get_unverified, root, has_block=store.has)
            if visit.present]


class PeerFailed(FabnodeError):
    """One peer could not (finish) sending a DAG; what it sent is kept, another may resume."""


class PeerRefused(PeerFailed):
    """The peer answered that it does not hold the DAG, or broke the protocol: it is not asked
    again in this fetch (a peer that merely went away is retried)."""


def _links(cid: bytes, data: bytes) -> list[tuple[bytes, int]] | None:
    """A dag-pb node's links as (child, sub-DAG size); None for a leaf."""
    if cid_codec(cid) != DAG_PB:
        return None
    return [(link.cid, link.tsize) for link in decode_node(data).links]


async def fetch_from_peer(host, store: BlockStore, root: bytes, path: list[str], peer_id, progress=None,
                          on_block=None, on_data=None) -> dict:
    """Ask one connected peer for a DAG; store verified blocks in batches as they arrive.

    Raises :class:`PeerFailed` if the peer refuses, breaks the protocol or stops early: every
    block already verified is committed (also when cancelled), so the next attempt (this peer or
    another) asks only for the rest: at most the block in flight is fetched twice.
    ``progress`` is a dict updated with ``blocks`` and ``bytes`` for status reports.
    ``on_block(cid, nbytes, links) -> bool`` hears of every verified block; when it returns
    False the stream is dropped there and the call returns with ``stopped`` set (the rest of
    the DAG is someone else's work: node/service/fetchplan.py). ``on_data(nbytes)`` hears of
    every read (a large block arrives in many).
    """
    name = str(peer_id)
    interior = 0
    stream = None
    if not path and cid_codec(root) == DAG_PB and not store.has(root) and store.pins() \
            and not _speaks_only_1_0(host, name):
        # only what changed travels (protocol/fetch.py): learn the DAG's interior first, so the
        # request for the rest can name every block held here, from any design or version (a
        # home that keeps nothing yet has nothing to name: it saves the round trip). Only over
        # 1.1.0: a server from before issue 20 cuts off a peer sending it ``interior``; when
        # it settles on 1.0.0 the same stream carries the plain request of old (docs/protocol.md §9.1)
        stream = await _open_stream(host, peer_id, [PROTOCOL_INTERIOR, PROTOCOL])
        if _protocol_of(stream) == PROTOCOL_INTERIOR:
            ask = FetchRequest(root, (), (), interior=True)
            session, interior, stopped = await _one_request(stream, store, ask, [], progress, on_block, on_data)
            stream = None
            if stopped:
                return {"root": session.root, "fetched": interior, "held": 0, "from": name, "stopped": True}
            if session.root is None:
                raise PeerRefused(f"does not have {cid_str(root)}")
            if session.missing():
                raise PeerFailed(f"stopped after {interior} block(s) with {len(session.missing())} still missing")
        else:  # a server from before issue 20: remembered, and asked as before
            _OLD_PEERS.setdefault(host, {})[name] = trio.current_time()
    try:
        held = (_held_part(store, root) if not path else [])[:MAX_HAVE]
        if stream is None:  # a plain request: 1.0.0, which every server speaks
            stream = await _open_stream(host, peer_id, [PROTOCOL])
    except BaseException:
        if stream is not None:
            await _reset(stream)
        raise
    request = FetchRequest(root, tuple(path), tuple(cid for cid, _ in held))
    session, fetched, stopped = await _one_request(stream, store, request, held, progress, on_block, on_data)
    fetched += interior
    if stopped:
        return {"root": session.root, "fetched": fetched, "held": len(held), "from": name, "stopped": True}
    if session.root is None:
        raise PeerRefused(f"does not have {cid_str(root)}")
    missing = session.missing()
    if missing:
        raise PeerFailed(f"stopped after {fetched} block(s) with {len(missing)} still missing")
    return {"root": session.root, "fetched": fetched, "held": len(held), "from": name, "stopped": False}


OLD_PEER_MEMORY_S = 3600
"""How long a peer that settled on 1.0.0 is asked only over 1.0.0 (it may upgrade meanwhile)."""
_OLD_PEERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
"""Per host: peer id → when it last settled on 1.0.0 (it does not speak ``interior``)."""


def _speaks_only_1_0(host, name: str) -> bool:
    """Whether ``name`` settled on 1.0.0 lately: then it is not offered 1.1.0 (saves a round trip)."""
    since = _OLD_PEERS.get(host, {}).get(name)
    return since is not None and trio.current_time() - since < OLD_PEER_MEMORY_S


def _protocol_of(stream) -> str | None:
    """The protocol id multistream-select agreed on for ``stream``."""
    try:
        return str(stream.get_protocol())
    except Exception:
        return None


async def _open_stream(host, peer_id, protocols: list[str]):
    try:
        with trio.fail_after(STREAM_OPEN_TIMEOUT):
            return await host.new_stream(peer_id, protocols)
    except Exception as exc:
        raise PeerFailed(f"cannot open a fetch stream: {type(exc).__name__} {exc}".strip()) from None


async def _reset(stream) -> None:
    with trio.move_on_after(1) as cleanup:
        cleanup.shield = True  # also when cancelled: the server stops sending at once
        try:
            await stream.reset()
        except Exception:
            pass


async def _one_request(stream, store: BlockStore, request: FetchRequest, held: list[tuple[bytes, bytes]],
                       progress, on_block, on_data) -> tuple[FetchSession, int, bool]:
    """On an open ``stream`` (reset at the end): send ``request``, store the verified blocks as
    they come; (session, blocks stored, whether ``on_block`` stopped it). See
    :func:`fetch_from_peer` for the rest."""
    from libp2p.network.stream.exceptions import StreamEOF

    root = request.root
    try:
        session = FetchSession(request, set(), defer_leaf_hashing=True)  # leaves hashed by the writer
        for cid, data in held:
            session.held_block(cid, data)
    except BaseException:
        await _reset(stream)
        raise
    fetched = received = fetched_bytes = 0
    batch: list = []
    batch_bytes = 0
    stopped = False
    writer = BlockWriter(store, refuse=PeerRefused)  # hashes leaves, commits batches in a thread (blockwriter.py);
    # a leaf that does not match its CID: the peer broke the protocol, it is not asked again
    try:
        await write_all(stream, encode_request(request))
        while True:
            try:
                with trio.fail_after(READ_TIMEOUT):
                    data = await stream.read(1 << 20)
            except StreamEOF:
                data = b""
            except trio.TooSlowError:
                raise PeerFailed(f"sent nothing for {READ_TIMEOUT} s") from None
            except Exception:
                data = b""  # a reset: what arrived is kept, what is missing is reported below
            received += len(data)
            if on_data is not None and data:
                on_data(len(data))
            if not received:  # refused before the first byte, or the link broke
                if await _link_broke(stream):
                    raise PeerFailed("the link broke before the first byte")
                raise PeerRefused(f"does not have {cid_str(root)} (or would not send it)")
            try:
                blocks = session.receive(data)
            except RemoteProtocolError as exc:
                if data:  # it sent what it must not: not asked again in this fetch
                    raise PeerRefused(str(exc)) from None
                raise PeerFailed(str(exc)) from None  # it stopped early (a cut looks the same)
            batch.extend(blocks)
            size = sum(len(b.data) for b in blocks)
            batch_bytes += size
            if on_block is not None:
                for b in blocks:
                    if not on_block(b.cid, len(b.data), _links(b.cid, b.data)):
                        stopped = True
            if progress is not None:
                progress["bytes"] = progress.get("bytes", 0) + size
                progress["blocks"] = progress.get("blocks", 0) + len(blocks)
            if batch and (batch_bytes >= BATCH_BYTES or not data or stopped):
                await writer.put(batch)
                fetched += len(batch)
                fetched_bytes += batch_bytes
                batch, batch_bytes = [], 0
            if not data or stopped:
                break
    finally:
        # blocks verified before a protocol error, a cut, a stop or a cancel (Ctrl-C) are kept
        await writer.finish(batch)
        fetched += len(batch)
        with trio.move_on_after(1) as cleanup:
            cleanup.shield = True  # also when cancelled: the server stops sending at once
            await stream.reset()
    return session, fetched, stopped


async def _link_broke(stream) -> bool:
    """Whether the stream ended because its connection went (a cut), not because the peer reset
    just this stream (its refusal). The connection's end may be seen a moment later."""
    conn = getattr(stream, "muxed_conn", None)
    with trio.move_on_after(0.3):
        while not getattr(conn, "is_closed", False):
            await trio.sleep(0.02)
    return bool(getattr(conn, "is_closed", False))


def _short(peer: str) -> str:
    """A peer ID in a log line: the one abbreviation of protocol/labs.py."""
    from fabnode.protocol.labs import short_key

    return short_key(peer)


class _MultiFetch:
    """One DAG from every peer that holds it, retrying each with backoff until a deadline.

    The decisions (units, stealing, endgame, backoff) are :class:`FetchPlan`'s; this class runs
    one trio task per peer (connect, take a unit, fetch it, report; on failure wait out the
    peer's backoff), refreshes the list of peers every second, and reports progress.
    ``candidates()`` gives PeerInfo to ask (for the daemon: the peers connected now);
    ``find_more()`` (optional, async) gives more (providers found in the DHT).
    """

    def __init__(self, host, store: BlockStore, root: bytes, path: list[str], candidates, *, log=None,
                 status=None, jitter=None, find_more=None, connect=True, on_change=None, renew=None,
                 dialer=None, explain=None, describe=None) -> None:
        self.host, self.store, self.root, self.path = host, store, root, list(path)
        self.dialer, self.explain, self.describe = dialer, explain, describe
        """``describe(peer)``: a note on how a linked peer is reached (a relay: why it is slow), or ""."""
        self.notes: list[str] = []
        """Each note once, in the order they came: the progress `get` prints them from."""
        """``explain(peer)``: more words on why a peer failed (reached through a relay), or ""."""
        """Reaches a peer (direct, else through a relay: node/runtime/nat.py); None: ``host.connect``."""
        self.candidates, self.log, self.status, self.find_more = candidates, log, status, find_more
        self.on_change = on_change
        self.renew = renew
        """Called a few times a second: keeps this fetch's gc lease fresh (:func:`fetch_lease`)."""
        self.dial: set[str] = set()
        """Peers this fetch dials itself (all with ``connect``; else only those the DHT found)."""
        self.connect = connect
        self.target: bytes | None = None
        self.plan = FetchPlan(root, jitter)
        self.done = trio.Event()
        self._news = trio.Event()
        self.linked: set[str] = set()
        self.scopes: dict[str, trio.CancelScope] = {}
        self.infos: dict[str, object] = {}
        self.path_busy = False
        self.held_before = 0
        self.blocks_received = 0
        self.bytes = 0
        self.total = 0
        self.path_result: dict | None = None
        self.found_more_at = -1e9
        self.dht_said = ""

    # ---------------------------------------------------------------- plan and store

    def _seed(self) -> None:
        """Tell the plan what the store holds of the target's DAG, and queue what it lacks."""
        self.plan.have.clear()
        self.plan.kids.clear()
        for cid, data in _held_part(self.store, self.target):
            self.plan.held(cid, _links(cid, data) if data else None)
        self.plan.refill()

    def _resolve_locally(self) -> None:
        if self.target is not None:
            return
        if not self.path:
            self.target = self.root
        else:
            try:
                self.target = resolve(self.store.get, self.root, self.path)
            except FabnodeError:
                return  # the path's directories are not all here yet: a path request finds them
        self.plan.root = self.target
        self._seed()
        self.held_before = len(self.plan.have)
        self._set_total()

    def _set_total(self) -> None:
        links = self.plan.kids.get(self.target)
        if links and not self.total:
            self.total = sum(size for _, size in links)

    def _complete(self) -> bool:
        return self.target is not None and dag_cids(self.store, self.target)[1]

    def _changed(self) -> None:
        self._news.set()
        self._news = trio.Event()

    async def _wait_news(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            await self._news.wait()

    def _on_block(self, worker):
        def heard(cid: bytes, nbytes: int, links) -> bool:
            self.bytes += nbytes
            self.blocks_received += 1
            keep = self.plan.received(worker, cid, nbytes, links, int(trio.current_time() * 1000))
            if cid == self.target:
                self._set_total()
            return keep
        return heard

    # ---------------------------------------------------------------- one peer

    def _now(self) -> int:
        return int(trio.current_time() * 1000)

    async def _peer(self, name: str) -> None:
        plan = self.plan
        while not self.done.is_set():
            state = plan.peer(name)
            if state.refused:
                self._changed()
                return
            wait = state.retry_at_ms - self._now()
            if wait > 0:
                await self._wait_until(state.retry_at_ms)
                continue
            info = self.infos[name]
            if name not in self.dial and name not in {str(i.peer_id) for i in self.candidates()}:
                await self._wait_news(0.5)  # the daemon redials it (its own backoff): wait for the link
                continue
            try:
                if name in self.dial:
                    # a failed dial blocks a peer for 60 s (docs/libp2p.md pitfall 4)
                    self.host.get_network().unblock_peer(info.peer_id)
                    self._only_given_addrs(info)
                    with trio.fail_after(CONNECT_TIMEOUT if self.dialer is None else 3 * CONNECT_TIMEOUT):
                        await (self.dialer or self.host.connect)(info)
            except Exception as exc:
                self._failed(name, str(exc) if isinstance(exc, FabnodeError) else f"cannot connect ({type(exc).__name__})")
                continue
            workers = [(name, slot) for slot in range(REQUESTS_IN_FLIGHT)]
            for worker in workers:
                plan.connected(worker, self._now())
            self.linked.add(name)
            self._changed()
            try:
                async with trio.open_nursery() as slots:  # one peer failing stops both its requests
                    for worker in workers:
                        slots.start_soon(self._work, worker, info)
            except* PeerFailed as group:
                exc = group.exceptions[0]
                for worker in workers:
                    plan.failed(worker)
                self._failed(name, str(exc), refused=isinstance(exc, PeerRefused))
            finally:
                self.linked.discard(name)
                self._changed()

    def _only_given_addrs(self, info) -> None:
        """Reach a peer we dial at the addresses we were given, not at those it advertised
        (identify): the operator chose the route (a VPN, a tunnel, a shaped test link), and
        libp2p's dial would otherwise try every address in the peerstore."""
        store = self.host.get_peerstore()
        store.clear_addrs(info.peer_id)
        store.add_addrs(info.peer_id, info.addrs, 120)

    async def _wait_until(self, at_ms: int) -> None:
        with trio.move_on_after(max(at_ms - self._now(), 0) / 1000):
            await self.done.wait()

    def _failed(self, name: str, reason: str, refused: bool = False) -> None:
        if self.explain is not None and "relay" not in reason:
            reason += self.explain(name)
        self.plan.peer_failed(name, reason, self._now(), refused=refused)
        if self.log:
            self.log(f"fetch of {cid_str(self.root)} from {_short(name)} failed: {reason}")
        self._changed()

    async def _work(self, worker, info) -> None:
        plan, name = self.plan, worker[0]
        while not self.done.is_set():
            self._resolve_locally()
            if self.target is None:  # a path whose directories are not here: one peer resolves it
                if self.path_busy:
                    await self._wait_news(0.5)
                    continue
                self.path_busy = True
                got: dict = {}
                try:
                    self.path_result = await fetch_from_peer(self.host, self.store, self.root, self.path,
                                                             info.peer_id, got)
                finally:
                    self.path_busy = False
                    self.bytes += got.get("bytes", 0)
                    self._changed()
                self.target = self.path_result["root"]
                self.plan.root = self.target
                self._seed()
                continue
            unit = plan.take(worker, self._now())
            if unit is None:
                if plan.idle:
                    if self._complete():
                        self.done.set()
                        self._changed()
                        return
                    self._seed()
                    if plan.idle:  # nothing to queue yet the DAG is incomplete: cannot happen
                        raise PeerFailed("the fetch plan and the store disagree")
                    continue
                await self._wait_news(0.25)
                continue
            self._changed()
            if name in self.dial:
                self._only_given_addrs(info)  # new_stream redials by itself if the link just broke
            scope = self.scopes[worker] = trio.CancelScope()
            with scope:
                await fetch_from_peer(self.host, self.store, unit.root, [], info.peer_id,
                                      on_block=self._on_block(worker),
                                      on_data=lambda n, w=worker: plan.heard(w, n, self._now()))
            self.scopes.pop(worker, None)
            if scope.cancelled_caught:  # another peer finished this unit first
                plan.failed(worker)
                continue
            for other in plan.finished(worker):
                other_scope = self.scopes.get(other)
                if other_scope is not None:
                    other_scope.cancel()
            self._changed()

    # ---------------------------------------------------------------- all peers

    def _start_new_peers(self, nursery) -> None:
        for info in self.candidates():
            name = str(info.peer_id)
            if name not in self.infos:
                self.infos[name] = info
                if self.connect:
                    self.dial.add(name)
                nursery.start_soon(self._peer, name)

    def _hopeless(self) -> bool:
        """Every peer ever asked said it does not hold the DAG, and there is no one else."""
        return bool(self.infos) and all(self.plan.peer(n).refused for n in self.infos)

    async def _supervise(self, nursery) -> None:
        while not self.done.is_set():
            self._start_new_peers(nursery)
            for name in self.dial:  # identify adds the addresses a peer advertises, and libp2p's
                self._only_given_addrs(self.infos[name])  # auto-connector would redial them
            stuck = not self.linked and all(self.plan.peer(n).failures for n in self.infos)
            if self.find_more is not None and (self._hopeless() or stuck) \
                    and trio.current_time() - self.found_more_at >= 30:
                self.found_more_at = trio.current_time()
                more = [i for i in await self.find_more(self.target or self.root) if str(i.peer_id) not in self.infos]
                if more:
                    if self.log:
                        self.log(f"fetching {cid_str(self.root)}: asking {len(more)} provider(s) found in the DHT")
                    for info in more:
                        self.infos[str(info.peer_id)] = info
                        self.dial.add(str(info.peer_id))
                        nursery.start_soon(self._peer, str(info.peer_id))
                    continue
                self.dht_said = "; the DHT knows no other provider"
            if self._hopeless() and (self.find_more is None or self.dht_said):
                kept = "; what arrived is kept, run again to resume" if self.bytes else ""
                raise FabnodeError(f"could not fetch {cid_str(self.root)}: {self._reasons()}{self.dht_said}{kept}")
            self._report()
            await self._wait_news(0.25)

    def _report(self) -> None:
        if self.renew is not None:
            self.renew()
        if self.status is None:
            self.status = {}
        if self.describe is not None:
            for name in sorted(self.linked):
                note = self.describe(name)
                if note and note not in self.notes:
                    self.notes.append(note)
                    if self.log:
                        self.log(f"fetching {cid_str(self.root)}: {note}")
        waiting = not self.linked
        retry = self.plan.next_retry_ms([n for n in self.infos if n in self.dial]) if waiting else None
        self.status.update(
            bytes=self.bytes, total=self.total, peers=len(self.linked),
            blocks=sum(self.plan.peer(n).blocks for n in self.infos),
            state="waiting" if waiting else "fetching",
            retry_in_s=None if retry is None else max(0, round((retry - self._now()) / 1000)),
            last=self.plan.last_reason() or ("" if self.infos else "no peer connected"),
            notes=list(self.notes), **{"from": ",".join(sorted(self.linked))})
        if self.on_change is not None:
            self.on_change(dict(self.status))

    def _reasons(self) -> str:
        parts = [f"{_short(n)}: {self.plan.peer(n).last_reason}" for n in self.infos if self.plan.peer(n).last_reason]
        return "; ".join(parts) or "no peer to ask"

    def attempts(self) -> list[str]:
        out = []
        for n in self.infos:
            st = self.plan.peer(n)
            line = f"{_short(n)}: sent {st.blocks} block(s)"
            if st.failures:
                line += f", failed {st.failures} time(s) (last: {st.last_reason})"
            out.append(line)
        return out

    async def run(self, timeout_s: float | None) -> dict:
        self._resolve_locally()
        if self._complete():
            self.done.set()
        else:
            with trio.move_on_after(timeout_s if timeout_s is not None else math.inf) as deadline:
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._supervise, nursery)
                        await self.done.wait()
                        nursery.cancel_scope.cancel()
                except BaseExceptionGroup as group:  # the supervisor's verdict, not a group of one
                    verdict = first_in_group(group, FabnodeError)
                    if verdict is None or first_in_group(group, KeyboardInterrupt) is not None:
                        raise
                    raise verdict from None
            if deadline.cancelled_caught:
                self._report()
                kept = (f"{human_size(self.bytes)} arrived and {'is' if self.bytes else 'are'} kept, run again "
                        "to resume") if self.bytes else "nothing arrived"
                raise FabnodeError(f"could not fetch {cid_str(self.root)}: {self._reasons()}; gave up after "
                                   f"{_duration(timeout_s)} (--timeout): {kept}")
        self._report()
        total = len(dag_cids(self.store, self.target)[0])
        if self.path_result is not None:
            fetched, held = self.path_result["fetched"], self.held_before
        else:  # what arrived; the rest was here before (of this DAG, or of another: issue 20)
            fetched = min(self.blocks_received, total - self.held_before)
            held = total - fetched
        senders = sorted(self.infos, key=lambda n: -self.plan.peer(n).bytes)
        return {"root": self.target, "fetched": fetched, "held": held,
                "from": senders[0] if senders else "", "attempts": self.attempts(),
                "steals": self.plan.steals, "duplicates": self.plan.duplicates}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "ever"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    return f"{seconds:g} s"


async def fetch_from_peers(host, store: BlockStore, root: bytes, path: list[str], peers, log=None,
                           progress=None, *, timeout_s: float | None = None, jitter=None, find_more=None,
                           connect: bool = True, on_change=None, renew=None, dialer=None, explain=None,
                           describe=None) -> dict:
    """Fetch a DAG from ``peers`` (PeerInfo, or a function returning the PeerInfo to ask now)
    at once, each sending disjoint parts, retrying each with backoff until ``timeout_s``.

    Returns the resolved root, the blocks fetched, those held before, the peer that sent most,
    and one line per peer. Raises :class:`FabnodeError` when the deadline passes (what arrived is
    kept) or when every peer said it does not hold the DAG. ``progress`` (a dict) is kept up to
    date for `fabnode status`; ``on_change(copy)`` hears of it a few times a second, and so
    does ``renew()`` (the lease of :func:`fetch_lease`).
    """
    candidates = peers if callable(peers) else (lambda fixed=list(peers): fixed)
    job = _MultiFetch(host, store, root, path, candidates, log=log, status=progress, jitter=jitter,
                      find_more=find_more, connect=connect, on_change=on_change, renew=renew, dialer=dialer,
                      explain=explain, describe=describe)
    return await job.run(timeout_s)


async def _fetch_with_own_host(store: BlockStore, root: bytes, path: list[str], peer_addrs: list[str],
                               timeout_s: float | None = None, progress=None, renew=None,
                               bitswap: bool | None = None) -> dict:
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from multiaddr import Multiaddr

    from fabnode.node.runtime.host import quiet_library_logs, running_host

    quiet_library_logs()
    infos = []
    for addr in peer_addrs:
        try:
            infos.append(info_from_p2p_addr(Multiaddr(addr)))
        except Exception as exc:
            raise FabnodeError(f"not a peer address: {addr!r} (want /ip4/…/tcp/…/p2p/…): {exc}") from None
    async with running_host(create_new_key_pair(), ["/ip4/127.0.0.1/tcp/0"]) as host:
        _learn_no_other_addrs(host, infos)
        if bitswap is not False:
            from .bitswap import Bitswap, fetch_over_bitswap, speaks_fetch

            # a peer that does not answer fabnode's fetch protocol (Kubo, Helia) is asked over
            # Bitswap; with --bitswap every peer is (docs/design.md, "Bitswap (issue 16)")
            ipfs_only = infos if bitswap else [info for info in infos if await speaks_fetch(host, info) is False]
            if ipfs_only and (bitswap or len(ipfs_only) == len(infos)):
                swap = Bitswap(host, store, serve=False, log=lambda line: None)  # the error says it all
                swap.register()
                return await fetch_over_bitswap(swap, store, root, path, ipfs_only, timeout_s=timeout_s,
                                                on_change=progress, renew=renew)
        return await fetch_from_peers(host, store, root, path, infos, timeout_s=timeout_s, on_change=progress,
                                      renew=renew)


def _learn_no_other_addrs(host, infos) -> None:
    """This host's peerstore never learns other addresses for the peers named with ``--peer``.

    Clearing them after identify added them (``_MultiFetch._only_given_addrs``) leaves a window
    in which libp2p opens a stream, or a second connection, at an advertised address: around the
    route the operator chose (on loopback, around the shaped link: a test saw the whole fetch
    go around it). The host is this command's own, so the guard lives as long as the fetch."""
    given = {str(info.peer_id): list(info.addrs) for info in infos}
    store = host.get_peerstore()
    add_addrs = store.add_addrs

    def only_given(peer_id, addrs, ttl=0):
        allowed = given.get(str(peer_id))
        if allowed is not None:
            # a signed peer record clears the addresses before adding its own: put ours back
            addrs = [a for a in addrs if str(a) in {str(b) for b in allowed}] or allowed
        add_addrs(peer_id, addrs, ttl)

    store.add_addrs = only_given


async def _until_interrupted(fn, *args):
    """Run ``fn``; SIGINT or SIGTERM cancels it, and :class:`Interrupted` is raised once every
    nursery has closed (so no exception group hides it). The command line's own handler
    (interrupts.py) would raise in the middle of trio's machinery, and trio installs its
    Ctrl-C handling only over the default handler, so the signals are taken here as trio means
    them to be: through a signal receiver. Blocks verified before the signal stay stored."""
    got: list[int] = []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        try:
            async with trio.open_nursery() as nursery:
                async def watch() -> None:
                    async for signum in signals:
                        got.append(signum)
                        nursery.cancel_scope.cancel()
                        return

                nursery.start_soon(watch)
                try:
                    return await fn(*args)
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            if got:  # whatever the cancelled work raised, the signal is the reason
                raise interrupts.Interrupted(got[0])


def pin_fetched(store: BlockStore, root: bytes, source: str = "") -> None:
    """Keep a fetched DAG. A pin's size is the file content for a file, and the bytes of every
    block for a folder (what the seeding budget counts). A DAG whose sizes disagree with its
    children's, or that expands far beyond its unique bytes, is refused unpinned."""
    try:
        dag_sizes(store.get, root, raw_size=store.size)
    except InvalidBlock as exc:
        raise FabnodeError(f"fetched {cid_str(root)} but refused to keep it: {exc}") from None
    node = decode_unixfs(root, store.get(root))
    size = node.filesize
    if node.kind == "directory":
        size = store.total_size(dag_cids(store, root)[0])
    with store.write_transaction():
        store.pin(Pin(root, node.kind, size, 0, source or f"fetched:{cid_str(root)}",
                      time.time_ns() // 1_000_000), replace=False)


LEASE_RENEW_S = 3600
"""A running fetch touches its gc lease this often (the lease lasts storage.gc.LEASE_KEEP_MS)."""


@contextmanager
def fetch_lease(store: BlockStore, root: bytes):
    """Protect the blocks of ``root`` from gc while they are fetched (storage/gc.py: a lease,
    committed before anything of the DAG is read). Once pinned the lease ends; a fetch that
    fails or is interrupted leaves it, touched now, so gc keeps what arrived for
    ``storage.gc.LEASE_KEEP_MS`` and the next attempt resumes from it. Yields ``renew()``, for
    the fetch to call often: it touches the lease once an hour, so a fetch that runs for days
    stays protected."""
    from fabnode.storage.gc import end_lease, take_lease, touch_lease

    lease = take_lease(store, root, "fetch", time.time_ns() // 1_000_000)
    touched = [time.monotonic()]

    def renew() -> None:
        if time.monotonic() - touched[0] >= LEASE_RENEW_S:
            touched[0] = time.monotonic()
            try:
                touch_lease(store, lease, time.time_ns() // 1_000_000)
            except sqlite3.Error:
                pass  # tried again in an hour; the lease lasts a week

    try:
        yield renew
    except BaseException:
        try:
            touch_lease(store, lease, time.time_ns() // 1_000_000)
        except Exception:  # the fetch's own error (a full disk, a damaged file) is the one to report
            pass
        raise
    end_lease(store, lease)


DEFAULT_TIMEOUT_S = 600
"""How long an interactive `get` keeps trying (``--timeout``)."""


def fetch(home: Home, cid_path: str, peer_addrs: list[str] | str, timeout_s: float | None = DEFAULT_TIMEOUT_S,
          progress=None, bitswap: bool | None = None) -> dict:
    """Fetch a DAG from the given peers (all at once, each retried with backoff until
    ``timeout_s``) into the store, verified, and pin it; without peers, ask the running daemon
    to find them. ``progress(status)`` is called a few times a second with a dict: ``bytes``,
    ``total`` (0 until known), ``state`` ("fetching" or "waiting"), ``retry_in_s``, ``last``.
    ``bitswap``: True asks the peers over Bitswap only; None (the default) does so when none of
    them answers fabnode's own fetch protocol (an IPFS node: Kubo, Helia)."""
    root, path = parse_cid_path(cid_path)
    if isinstance(peer_addrs, str):
        peer_addrs = [peer_addrs]
    store = home.open_store()
    if not peer_addrs:
        from fabnode.node.runtime.control import ask_daemon

        reply = ask_daemon(home.path, "fetch", timeout=None, on_progress=progress, cid=cid_path, timeout_s=timeout_s)
        if reply is None:
            what = missing_here(store, root, path) or "is not held here"
            raise FabnodeError(f"{cid_path} {what}, and no daemon is running to fetch it: "
                               "start 'fabnode run', or name a peer with --peer /ip4/…/tcp/…/p2p/…")
        return reply
    with fetch_lease(store, root) as renew:
        try:
            result = trio.run(_until_interrupted, _fetch_with_own_host, store, root, path, peer_addrs, timeout_s,
                              progress, renew, bitswap)
        except BaseExceptionGroup as group:  # libp2p's nurseries wrap what our code raised inside them
            raise interrupts.find_interrupt(group) or first_in_group(group, FabnodeError) or group from None
        pin_fetched(store, result["root"])
    return {"root": cid_str(result["root"]), "fetched_blocks": result["fetched"], "already_held": result["held"],
            "from": str(result["from"]), "attempts": result["attempts"]}


def missing_here(store: BlockStore, root: bytes, path: list[str]) -> str | None:
    """None if every block of the DAG at root/path is here; else what is missing, in words."""
    from fabnode.protocol.errors import MissingBlock

    try:
        resolved = resolve(store.get, root, list(path))
    except MissingBlock as exc:
        return "is not held here" if not store.has(root) else f"is not completely held here ({exc})"
    except FabnodeError:
        return None  # a bad path in a DAG we hold: `get` itself says what is wrong
    cids, complete = dag_cids(store, resolved)
    if complete:
        return None
    if not store.has(resolved):
        return "is not held here"
    absent = next((c for c in sorted(cids) if not store.has(c)), None)
    return f"is not completely held here (block {cid_str(absent)} is missing)" if absent else "is not completely held here"
