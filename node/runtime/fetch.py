"""Fetching a DAG from a peer over ``/fabnode/car/1.0.0``, and serving ours (docs/protocol.md §9).

The protocol core is :mod:`protocol.fetch`; this module moves its frames over libp2p streams
under trio. The asker stores verified blocks in batches, each in its own transaction, so a
transfer that breaks keeps what arrived and the next attempt asks only for the rest (it lists
the blocks it holds in its request). The root is pinned, and files written out, only once the
whole DAG is here.
"""

from __future__ import annotations

import signal
import time
from contextlib import aclosing

import trio

from fabnode import interrupts
from fabnode.protocol.car import encode_header, encode_section
from fabnode.protocol.cid import cid_str, parse_cid_path
from fabnode.protocol import dag
from fabnode.protocol.errors import FabnodeError, InvalidBlock, first_in_group
from fabnode.protocol.fetch import (
    MAX_REQUEST_BYTES,
    PROTOCOL,
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
from fabnode.node.service.loglimit import LogLimiter
from fabnode.node.local.sneakernet import dag_cids

CONNECT_TIMEOUT = 10
READ_TIMEOUT = 30
"""The asker waits this long for the server's next bytes."""
REQUEST_TIMEOUT = 5
"""A serving stream must deliver its request frame within this (a slot is not a parking place)."""
SEND_TIMEOUT = 30
"""The asker must take some of a block within this (make room in the window), or its stream is
cut: a progress deadline, so a 1 MiB block may take a minute over a thin link."""
BATCH_BYTES = 8 << 20
"""Blocks are committed in batches of this size, so an interrupted fetch keeps its progress."""


# ------------------------------------------------------------------ serving


def dag_in_order(store: BlockStore, root: bytes, skip: set[bytes]):
    """(cid, data) of root's DAG depth-first, each once, every block verified; blocks in
    ``skip`` are walked through, not yielded (the asker holds them, or they were sent already)."""
    for visit in dag.walk(store.get, root, skip=skip, descend_skipped=True):
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
        who = f"{peer[:16]}…"
        self._refusals.say(peer, f"fetch from {who} {what}",
                           stopping=f"more fetches from {who} refused; not logging them for a minute",
                           left_out=lambda n: f"… {n} more refusals from {who} suppressed in that minute")

    def _take_slot(self, key: int, peer: str) -> bool:
        """A slot for a new stream from ``peer``, evicting an idle greedier one if need be."""
        admitted, victim = self.slots.admit(key, peer, _now_ms())
        if victim is not None:
            self._scopes.pop(victim.key).cancel()
            self.log(f"fetch from {victim.peer[:16]}… cut: its slot went to {peer[:16]}… "
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
            request = decode_request(await read_frame(stream, MAX_REQUEST_BYTES))
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
        async with aclosing(sections_ahead(self.store, lambda store: dag_in_order(store, root, skip))) as sections:
            async for _cid, size, section in sections:
                await self._pace(section, priority, peer, send)
                transfer["sent_bytes"] += size
        await stream.close()
        self.log(f"served {cid_str(root)} to {peer[:16]}…: {transfer['sent_bytes']} bytes")


# ------------------------------------------------------------------ asking


def _held_part(store: BlockStore, root: bytes) -> list[tuple[bytes, bytes]]:
    """The blocks of root's DAG already here (from an earlier, interrupted fetch), as (cid,
    data): data only for dag-pb nodes, whose links matter; raw leaves are only checked for
    presence, so memory stays small whatever the size of the bundle."""
    return [(visit.cid, visit.data or b"") for visit in dag.walk(store.get_unverified, root, has_block=store.has)
            if visit.present]


class PeerFailed(FabnodeError):
    """One peer could not (finish) sending a DAG; what it sent is kept, another may resume."""


async def fetch_from_peer(host, store: BlockStore, root: bytes, path: list[str], peer_id, progress=None) -> dict:
    """Ask one connected peer for a DAG; store verified blocks in batches as they arrive.

    Raises :class:`PeerFailed` if the peer refuses, breaks the protocol or stops early: every
    block already committed stays, so the next attempt (this peer or another) asks only for
    the rest. ``progress`` is a dict updated with ``blocks`` and ``bytes`` for status reports.
    """
    from libp2p.network.stream.exceptions import StreamEOF

    held = _held_part(store, root) if not path else []
    request = FetchRequest(root, tuple(path), tuple(cid for cid, _ in held))
    session = FetchSession(request, set(), defer_leaf_hashing=True)  # leaves hashed by the writer
    for cid, data in held:
        session.held_block(cid, data)
    name = str(peer_id)
    try:
        with trio.fail_after(CONNECT_TIMEOUT):
            stream = await host.new_stream(peer_id, [PROTOCOL])
    except Exception as exc:
        raise PeerFailed(f"cannot open a fetch stream: {type(exc).__name__} {exc}".strip()) from None
    fetched = received = fetched_bytes = 0
    batch: list = []
    batch_bytes = 0
    writer = BlockWriter(store, refuse=PeerFailed)  # hashes leaves, commits batches in a thread (blockwriter.py)
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
            if not received:  # refused before the first byte
                raise PeerFailed(f"does not have {cid_str(root)} (or would not send it)")
            try:
                blocks = session.receive(data)
            except RemoteProtocolError as exc:
                raise PeerFailed(str(exc)) from None
            batch.extend(blocks)
            batch_bytes += sum(len(b.data) for b in blocks)
            if batch and (batch_bytes >= BATCH_BYTES or not data):
                await writer.put(batch)
                fetched += len(batch)
                fetched_bytes += batch_bytes
                if progress is not None:
                    progress.update(blocks=fetched, bytes=fetched_bytes)
                batch, batch_bytes = [], 0
            if not data:
                break
    finally:
        # blocks verified before a protocol error are still good; Ctrl-C keeps them too
        await writer.finish(batch)
        fetched += len(batch)
        with trio.move_on_after(1):
            await stream.reset()
    if session.root is None:
        raise PeerFailed(f"does not have {cid_str(root)}")
    missing = session.missing()
    if missing:
        raise PeerFailed(f"stopped after {fetched} block(s) with {len(missing)} still missing")
    return {"root": session.root, "fetched": fetched, "held": len(held), "from": name}


async def fetch_from_peers(host, store: BlockStore, root: bytes, path: list[str], peers, log=None,
                           progress=None) -> dict:
    """Try ``peers`` (PeerInfo, in order) until one sends the whole DAG; each resumes the last.

    Returns the resolved root, the blocks fetched over all attempts, those held before the
    first one, and one line per attempt.
    """
    attempts: list[str] = []
    fetched = 0
    held_before = len(_held_part(store, root)) if not path else 0
    for info in peers:
        short = str(info.peer_id)[:16] + "…"
        try:
            # a failed dial blocks a peer for 60 s (docs/libp2p.md pitfall 4)
            host.get_network().unblock_peer(info.peer_id)
            with trio.fail_after(CONNECT_TIMEOUT):
                await host.connect(info)
        except Exception as exc:
            attempts.append(f"{short}: cannot connect ({type(exc).__name__})")
            continue
        if progress is not None:
            progress["from"] = str(info.peer_id)
        try:
            result = await fetch_from_peer(host, store, root, path, info.peer_id, progress)
        except PeerFailed as exc:
            attempts.append(f"{short}: {exc}")
            if log:
                log(f"fetch of {cid_str(root)} from {short} failed: {exc}")
            continue
        attempts.append(f"{short}: sent {result['fetched']} block(s)")
        fetched = len(_held_part(store, root)) - held_before if not path else result["fetched"]
        return {"root": result["root"], "fetched": fetched, "held": held_before if not path else result["held"],
                "from": result["from"], "attempts": attempts}
    tried = "; ".join(attempts) or "no peer to ask"
    progressed = not path and len(_held_part(store, root)) > held_before
    hint = "; what arrived is kept, run again to resume" if progressed else ""
    raise FabnodeError(f"could not fetch {cid_str(root)}: {tried}{hint}")


async def _fetch_with_own_host(store: BlockStore, root: bytes, path: list[str], peer_addrs: list[str]) -> dict:
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
        return await fetch_from_peers(host, store, root, path, infos)


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


def fetch(home: Home, cid_path: str, peer_addrs: list[str] | str) -> dict:
    """Fetch a DAG from the given peers (tried in order, each resuming the last) into the store,
    verified, and pin it; without peers, ask the running daemon to find them."""
    root, path = parse_cid_path(cid_path)
    if isinstance(peer_addrs, str):
        peer_addrs = [peer_addrs]
    store = home.open_store()
    if not peer_addrs:
        from fabnode.node.runtime.control import ask_daemon

        reply = ask_daemon(home.path, "fetch", timeout=None, cid=cid_path)
        if reply is None:
            what = missing_here(store, root, path) or "is not held here"
            raise FabnodeError(f"{cid_path} {what}, and no daemon is running to fetch it: "
                               "start 'fabnode run', or name a peer with --peer /ip4/…/tcp/…/p2p/…")
        return reply
    try:
        result = trio.run(_until_interrupted, _fetch_with_own_host, store, root, path, peer_addrs)
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
