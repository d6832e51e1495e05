"""Bitswap over py-libp2p streams: serving this node's blocks to IPFS nodes, and `get` from them.

Why not ``libp2p.bitswap``: py-libp2p 0.8.1's module writes its answers on the asker's stream,
which Helia and Kubo never read (Helia's fetches fail), stores every block any peer pushes, and
has no budget a hostile peer could not walk around (docs/design.md, "Bitswap (issue 16)"). This
module is the small part fabnode needs, with the messages and wantlist bookkeeping in the pure
:mod:`protocol.bitswap`.

Theory of operation
-------------------
One handler takes the inbound streams of all three protocol versions. Each message read from
one is decoded (a malformed or oversized message is an offence), then split:

* its **wantlist** goes into the peer's :class:`~protocol.bitswap.PeerWants` (bounded; entries
  over the bound are dropped and logged in one line per minute); if no sender runs for that peer,
  one starts. The **sender** answers the peer's wants, highest priority first, on a stream *it
  opens* with the version the peer spoke: each block read from the store re-hashed
  (``BlockStore.get``), packed into messages of about 1 MiB, every piece paced with sync, gossip
  and fetch serving under one upload cap; DONT_HAVE/HAVE when the peer asked for them. A
  sender keeps its stream while the peer keeps asking, and ends once the queue has been empty
  for ``SENDER_LINGER``, or when the peer takes nothing for ``SEND_TIMEOUT``.
* its **blocks and presences** go to the fetches running here (:func:`fetch_over_bitswap`) that
  wait for exactly those CIDs. A block's CID is computed from its bytes, so a block is delivered
  only if its bytes hash to a CID a fetch asked this peer for, and at most once; anything else
  (unsolicited, a wrong hash, a duplicate) is dropped, counted and logged in one line a minute.
  Nothing received is stored here: the fetch stores what it asked for, all or nothing.
"""

from __future__ import annotations

from collections import deque

import trio

from fabnode.protocol.bitswap import (
    DONT_HAVE,
    HAVE,
    MAX_MESSAGE_BYTES,
    PROTOCOLS,
    SEND_MESSAGE_BYTES,
    V100,
    PeerWants,
    WantEntry,
    decode_message,
    encode_message,
    frame,
    internal_cid,
)
from fabnode.protocol.car import Block
from fabnode.protocol.cid import DAG_PB, cid_codec, cid_str
from fabnode.protocol.dagpb import decode_node
from fabnode.protocol.errors import FabnodeError, InvalidBlock, RemoteProtocolError
from fabnode.storage import BlockStore

from fabnode.node.service.pacing import BUNDLES

from .wire import StreamEnded, read_frame, write_all

MAX_WANTS_PER_PEER = 1024
"""Entries one peer may have queued (Kubo's server default too); more are dropped."""
IDLE_TIMEOUT = 60
"""An inbound stream that brings no message for this long is closed (the peer opens another)."""
SEND_TIMEOUT = 30
"""The peer must take some of our answer within this, or its queue is dropped."""
STREAM_OPEN_TIMEOUT = 30
SENDER_LINGER = 10
"""A sender whose peer wants nothing more keeps its stream this long for the next want."""
TAKE_AT_ONCE = 16
"""Wants taken from a peer's queue per round (a cancel still removes the ones not yet taken)."""
WINDOW = 32
"""Blocks a fetch asks one peer for at once (Helia's leaves are 1 MiB: up to 32 MiB in flight)."""
READ_TIMEOUT = 30
"""A fetch gives up on a peer that sends none of the wanted blocks for this long."""
BATCH_BYTES = 8 << 20
MAX_LOGGED_PEERS = 10_000
"""Peers whose last log line is remembered (the oldest forgotten first)."""


def _short(peer: str) -> str:
    from fabnode.protocol.labs import short_key

    return short_key(peer)


class _Receiver:
    """What one running fetch waits for from one peer: CIDs (fabnode's binary CIDv1)."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.wanted: set[bytes] = set()
        self.send, self.receive = trio.open_memory_channel(float("inf"))  # bounded by WINDOW


class Bitswap:
    """The three ``/ipfs/bitswap/*`` protocols on one host: serving from ``store`` (when
    ``serve``), and delivering received blocks to :func:`fetch_over_bitswap`. ``nursery`` must
    be set before the first stream arrives (the senders run in it)."""

    def __init__(self, host, store: BlockStore, log=print, *, pacer=None, serve: bool = True,
                 streams_per_peer: int = 4, streams_total: int = 16, max_wants: int = MAX_WANTS_PER_PEER) -> None:
        self.host, self.store, self.log, self.pacer, self.serve = host, store, log, pacer, serve
        self.streams_per_peer, self.streams_total, self.max_wants = streams_per_peer, streams_total, max_wants
        self.nursery = None
        self.on_offence = lambda peer, reason: None
        """Called with (peer, reason) for a malformed message; the daemon cuts the peer off."""
        self._inbound: dict[str, int] = {}
        self._wants: dict[str, PeerWants] = {}
        self._protocol: dict[str, str] = {}
        self._senders: set[str] = set()
        self._news: dict[str, trio.Event] = {}
        """Set when a lingering sender's peer wants more."""
        self._sender_slots = trio.Semaphore(streams_total)
        self._receivers: list[_Receiver] = []
        self._lines: dict[tuple[str, str], tuple[float, int]] = {}
        self.served_blocks = self.served_bytes = 0
        self.dropped_blocks = 0
        """Blocks received that no fetch here asked for (or with bytes that are not the CID asked)."""
        self.dropped_wants = 0

    def status(self) -> dict:
        """What `fabnode status` shows: served since the start, and what was refused."""
        return {"served_blocks": self.served_blocks, "served_bytes": self.served_bytes,
                "peers_asking": len(self._wants), "dropped_blocks": self.dropped_blocks,
                "dropped_wants": self.dropped_wants}

    def register(self) -> None:
        for protocol in PROTOCOLS:
            self.host.set_stream_handler(protocol, self.handle)

    def _say(self, peer: str, topic: str, line: str) -> None:
        """One line a minute per peer and topic: the rest of the minute's are counted, and the
        next line says how many were left out (a flood is summed up, never echoed)."""
        key = (topic, peer)
        now = trio.current_time()
        start, left_out = self._lines.pop(key, (None, 0))
        if start is not None and now - start < 60:
            self._lines[key] = (start, left_out + 1)
            return
        if left_out:
            line += f" ({left_out} more like it in the minute before)"
        self._lines[key] = (now, 0)
        while len(self._lines) > MAX_LOGGED_PEERS:
            del self._lines[next(iter(self._lines))]
        self.log(line)

    # ---------------------------------------------------------------- inbound streams

    async def handle(self, stream) -> None:
        peer_id = stream.muxed_conn.peer_id
        peer = str(peer_id)
        if self._inbound.get(peer, 0) >= self.streams_per_peer or sum(self._inbound.values()) >= self.streams_total:
            self._say(peer, "streams", f"bitswap: refused a stream from {_short(peer)}: too many at once "
                                       f"(at most {self.streams_per_peer} per peer, {self.streams_total} in all)")
            with trio.move_on_after(1):
                await stream.reset()
            return
        self._inbound[peer] = self._inbound.get(peer, 0) + 1
        protocol = str(stream.get_protocol())
        try:
            while True:
                with trio.move_on_after(IDLE_TIMEOUT):
                    try:
                        raw = await read_frame(stream, MAX_MESSAGE_BYTES)
                    except StreamEnded:
                        return  # the peer closed its stream: it is done sending
                    self._take(peer_id, peer, protocol, decode_message(raw))
                    continue
                return  # idle: closed below
        except RemoteProtocolError as exc:
            self._say(peer, "offence", f"bitswap: {_short(peer)} broke the protocol: {exc}")
            self.on_offence(peer, f"bitswap: {exc}")
            with trio.move_on_after(1):
                await stream.reset()
        except Exception:  # a reset, a connection gone: nothing to answer any more
            pass
        finally:
            self._inbound[peer] -= 1
            if not self._inbound[peer]:
                del self._inbound[peer]
            with trio.move_on_after(1) as cleanup:
                cleanup.shield = True
                try:
                    await stream.close()
                except Exception:
                    pass

    def _take(self, peer_id, peer: str, protocol: str, msg) -> None:
        self._deliver(peer, msg)
        if not (msg.wants or msg.full) or not self.serve:
            return
        wants = self._wants.get(peer)
        if wants is None:
            wants = self._wants[peer] = PeerWants(self.max_wants)
        wants.apply(msg)
        if wants.dropped:
            self.dropped_wants += wants.dropped
            self._say(peer, "wants", f"bitswap: {_short(peer)} wants more than {self.max_wants} blocks at once: "
                                     f"dropped {wants.dropped} wantlist entries (it may ask again later)")
            wants.dropped = 0
        self._protocol[peer] = protocol
        if peer in self._senders:
            if len(wants) and peer in self._news:
                self._news[peer].set()  # a lingering sender: more to answer
        elif len(wants) and self.nursery is not None:
            self._senders.add(peer)
            self.nursery.start_soon(self._send_to, peer_id, peer)
        elif not len(wants):
            del self._wants[peer]
            del self._protocol[peer]

    def _deliver(self, peer: str, msg) -> None:
        dropped = msg.unverifiable
        for block in msg.blocks:
            for receiver in self._receivers:
                if receiver.peer == peer and block.cid in receiver.wanted:
                    receiver.wanted.discard(block.cid)  # at most once: a second copy is dropped
                    receiver.send.send_nowait(("block", block.cid, block.data))
                    break
            else:
                dropped += 1
        for wire_cid, kind in msg.presences:
            cid = internal_cid(wire_cid)
            for receiver in self._receivers:
                if kind == DONT_HAVE and receiver.peer == peer and cid in receiver.wanted:
                    receiver.wanted.discard(cid)  # heard once: the fetch ends its attempt on it
                    receiver.send.send_nowait(("dont-have", cid, b""))
        if dropped:
            self.dropped_blocks += dropped
            self._say(peer, "unsolicited", f"bitswap: dropped {dropped} block(s) from {_short(peer)} that nothing "
                                           "here asked it for (or whose bytes are not the block asked for)")

    # ---------------------------------------------------------------- answering one peer

    async def _send_to(self, peer_id, peer: str) -> None:
        """Answer ``peer``'s wants on one stream of ours, kept open while it keeps asking: an
        IPFS client asks for a file's blocks a few at a time, and a new stream per answer would
        cost a protocol negotiation each (a round trip). Idle for ``SENDER_LINGER`` s, it ends."""
        stream = None
        try:
            while True:
                wants = self._wants.get(peer)
                batch = wants.take(TAKE_AT_ONCE) if wants is not None else []
                if not batch:
                    news = self._news[peer] = trio.Event()
                    with trio.move_on_after(SENDER_LINGER):
                        await news.wait()
                    if news.is_set():
                        continue
                    break
                async with self._sender_slots:
                    stream = await self._answer(peer_id, peer, batch, stream)
        except (trio.TooSlowError, Exception) as exc:
            self._say(peer, "send", f"bitswap: stopped answering {_short(peer)}: {type(exc).__name__} {exc}".strip())
            self._wants.pop(peer, None)
        finally:
            # no await between the last look at the queue and this: a want arriving now starts a new sender
            self._senders.discard(peer)
            self._news.pop(peer, None)
            if peer in self._wants and not len(self._wants[peer]):
                del self._wants[peer]
            if peer not in self._wants:
                self._protocol.pop(peer, None)
            if stream is not None:
                with trio.move_on_after(1) as cleanup:
                    cleanup.shield = True
                    try:
                        await stream.close()
                    except Exception:
                        pass

    async def _answer(self, peer_id, peer: str, batch: list[WantEntry], stream):
        v100 = self._protocol.get(peer) == V100
        blocks: list[tuple[bytes, bytes]] = []
        presences: list[tuple[bytes, int]] = []
        size = 0
        for want in batch:
            cid = internal_cid(want.cid)
            data = None
            if cid is not None and self.store.has(cid):
                try:
                    data = self.store.get(cid)  # re-hashed: a damaged block is never served
                except FabnodeError as exc:
                    self._say(peer, "damaged", f"bitswap: not serving {cid_str(cid)}: {exc}")
            if data is None:
                if want.send_dont_have:
                    presences.append((want.cid, DONT_HAVE))
            elif want.want_have:
                presences.append((want.cid, HAVE))
            else:
                blocks.append((want.cid, data))
                size += len(data)
                if size >= SEND_MESSAGE_BYTES:
                    stream = await self._send(peer_id, peer, stream, blocks, presences, v100)
                    blocks, presences, size = [], [], 0
        if blocks or (presences and not v100):
            stream = await self._send(peer_id, peer, stream, blocks, presences, v100)
        return stream

    async def _send(self, peer_id, peer: str, stream, blocks, presences, v100: bool):
        """Write one answer on ``stream`` (opened if None); a kept stream the peer has since
        closed or reset is replaced once. Returns the stream written on."""
        data = frame(encode_message(blocks=blocks, presences=presences, v100=v100))
        for attempt in (1, 2):
            fresh = stream is None
            if fresh:
                with trio.fail_after(STREAM_OPEN_TIMEOUT):
                    stream = await self.host.new_stream(peer_id, [self._protocol.get(peer, PROTOCOLS[0])])
            try:
                await self._write(stream, data, peer)
                break
            except trio.TooSlowError:
                raise
            except Exception:
                if fresh or attempt == 2:
                    raise
                with trio.move_on_after(1):
                    try:
                        await stream.reset()
                    except Exception:
                        pass
                stream = None
        self.served_blocks += len(blocks)
        self.served_bytes += sum(len(d) for _, d in blocks)
        return stream

    async def _write(self, stream, data: bytes, peer: str) -> None:
        if self.pacer is not None and self.pacer.rate:
            piece = self.pacer.pacer.piece_bytes()
            for start in range(0, len(data), piece):
                chunk = data[start:start + piece]
                await self.pacer.acquire(BUNDLES, len(chunk), "bitswap", peer)
                await write_all(stream, chunk, SEND_TIMEOUT)
        else:
            await write_all(stream, data, SEND_TIMEOUT)
            if self.pacer is not None:
                self.pacer.pacer.request(None, BUNDLES, len(data), 0, protocol="bitswap", peer=peer)  # counted only

    # ---------------------------------------------------------------- asking one peer

    def _open_receiver(self, peer: str) -> _Receiver:
        receiver = _Receiver(peer)
        self._receivers.append(receiver)
        return receiver

    def _close_receiver(self, receiver: _Receiver) -> None:
        self._receivers.remove(receiver)


async def _fetch_blocks(bitswap: Bitswap, peer_id, store: BlockStore, root: bytes, *, descend: bool,
                        progress: dict, on_change=None) -> int:
    """Fetch ``root`` (and with ``descend`` every block under it) from one peer over Bitswap,
    verified and stored in batches; blocks already held are walked through, not asked for.
    Returns the blocks fetched. Raises :class:`FabnodeError` with one line on any failure."""
    from .blockwriter import BlockWriter
    from .fetch import PeerFailed, PeerRefused

    peer = str(peer_id)
    try:
        with trio.fail_after(STREAM_OPEN_TIMEOUT):
            stream = await bitswap.host.new_stream(peer_id, list(PROTOCOLS))
    except Exception as exc:
        raise PeerFailed(f"cannot open a Bitswap stream: {type(exc).__name__} {exc}".strip()) from None
    receiver = bitswap._open_receiver(peer)
    writer = BlockWriter(store, refuse=PeerRefused)
    frontier: deque[bytes] = deque([root])
    seen: set[bytes] = set()
    in_flight: set[bytes] = set()
    batch: list[Block] = []
    batch_bytes = 0

    def children(cid: bytes, data: bytes) -> list[bytes]:
        if not descend or cid_codec(cid) != DAG_PB:
            return []
        try:
            return [link.cid for link in decode_node(data).links]
        except InvalidBlock as exc:
            raise PeerRefused(f"sent block {cid_str(cid)}, which is not a valid dag-pb node: {exc}") from None

    try:
        while True:
            asked = []
            while frontier and len(in_flight) < WINDOW:
                cid = frontier.popleft()
                if cid in seen:
                    continue
                seen.add(cid)
                if store.has(cid):  # from an earlier, interrupted fetch: walk through it
                    frontier.extendleft(reversed(children(cid, store.get(cid))))
                    progress["held"] = progress.get("held", 0) + 1
                    continue
                asked.append(cid)
            if asked:
                in_flight.update(asked)
                receiver.wanted.update(asked)
                wants = [WantEntry(cid, priority=WINDOW, send_dont_have=True) for cid in asked]
                await write_all(stream, frame(encode_message(wants=wants)))
            if not in_flight:
                break
            try:
                with trio.fail_after(READ_TIMEOUT):
                    kind, cid, data = await receiver.receive.receive()
            except trio.TooSlowError:
                raise PeerFailed(f"sent none of {len(in_flight)} wanted block(s) for {READ_TIMEOUT} s") from None
            if kind == "dont-have":
                raise PeerRefused(f"does not have block {cid_str(cid)}")
            in_flight.discard(cid)
            frontier.extendleft(reversed(children(cid, data)))  # depth first: files complete in order
            batch.append(Block(cid, data))  # its CID was computed from these bytes (protocol.bitswap)
            batch_bytes += len(data)
            progress["bytes"] = progress.get("bytes", 0) + len(data)
            progress["blocks"] = progress.get("blocks", 0) + 1
            if on_change is not None:
                on_change(dict(progress))
            if batch_bytes >= BATCH_BYTES:
                await writer.put(batch)
                batch, batch_bytes = [], 0
    finally:
        bitswap._close_receiver(receiver)
        await writer.finish(batch)  # what arrived verified is kept, also when cancelled
        with trio.move_on_after(1) as cleanup:
            cleanup.shield = True
            try:
                if in_flight:  # tell the peer to stop sending what we no longer wait for
                    await write_all(stream, frame(encode_message(
                        wants=[WantEntry(cid, cancel=True) for cid in in_flight])), 1)
                await stream.close()
            except Exception:
                pass
    return writer.stored_blocks


async def fetch_over_bitswap(bitswap: Bitswap, store: BlockStore, root: bytes, path: list[str], infos,
                             *, timeout_s: float | None = None, on_change=None, renew=None, connect=True) -> dict:
    """Fetch the DAG at root/path from the given peers over Bitswap, one after another (each
    resuming where the last stopped), within ``timeout_s``. Directories along ``path`` are
    fetched first, one block at a time, and resolved here. Returns what
    :func:`node.runtime.fetch.fetch_from_peers` returns."""
    import math

    from fabnode.protocol.unixfs import resolve

    from .fetch import CONNECT_TIMEOUT, _duration

    attempts: list[str] = []
    progress = {"bytes": 0, "total": 0, "peers": 1, "state": "fetching", "retry_in_s": None, "last": ""}

    def changed(status: dict) -> None:
        if renew is not None:
            renew()
        if on_change is not None:
            on_change(status)

    with trio.move_on_after(timeout_s if timeout_s is not None else math.inf) as deadline:
        for info in infos:
            name = str(info.peer_id)
            try:
                if connect:
                    with trio.fail_after(CONNECT_TIMEOUT):
                        await bitswap.host.connect(info)
                target = root
                for depth in range(len(path)):
                    await _fetch_blocks(bitswap, info.peer_id, store, target, descend=False, progress=progress)
                    target = resolve(store.get, root, path[:depth + 1])
                await _fetch_blocks(bitswap, info.peer_id, store, target, descend=True, progress=progress,
                                    on_change=changed)
            except FabnodeError as exc:
                attempts.append(f"{_short(name)}: {exc}")
                continue
            except Exception as exc:  # a connection that failed or broke
                attempts.append(f"{_short(name)}: {type(exc).__name__} {exc}".strip())
                continue
            fetched = progress.get("blocks", 0)
            attempts.append(f"{_short(name)}: sent {fetched} block(s) over Bitswap")
            return {"root": target, "fetched": fetched, "held": progress.get("held", 0), "from": name, "attempts": attempts}
    kept = "; what arrived is kept, run again to resume" if progress.get("bytes") else ""
    if bitswap.dropped_blocks:
        kept = f"; dropped {bitswap.dropped_blocks} block(s) that were not the ones asked for" + kept
    if deadline.cancelled_caught:
        raise FabnodeError(f"could not fetch {cid_str(root)} over Bitswap: gave up after {_duration(timeout_s)} "
                           f"(--timeout){'; ' + '; '.join(attempts) if attempts else ''}{kept}")
    raise FabnodeError(f"could not fetch {cid_str(root)} over Bitswap: {'; '.join(attempts)}{kept}")


IDENTIFY_WAIT = 3
"""How long `get` waits for a peer's identify answer (its protocol list) before asking directly."""


async def speaks_fetch(host, info) -> bool | None:
    """Whether a peer answers fabnode's fetch protocol (True), only Bitswap (False), or could
    not be asked (None: the fetch itself will say why). The protocols the peer listed in its
    identify answer decide; without one (within :data:`IDENTIFY_WAIT`), one stream proposing
    fetch first, then Bitswap, is opened and reset at once."""
    from .fetch import CONNECT_TIMEOUT, PROTOCOL as FETCH

    try:
        with trio.fail_after(CONNECT_TIMEOUT):
            await host.connect(info)
    except Exception:
        return None
    listed: set[str] = set()
    with trio.move_on_after(IDENTIFY_WAIT):
        while not listed:
            try:
                listed = {str(p) for p in host.get_peerstore().get_protocols(info.peer_id)}
            except Exception:  # not identified yet
                listed = set()
            if not listed:
                await trio.sleep(0.05)  # the library fills the peerstore; there is no event to await
    if FETCH in listed:
        return True
    if listed & set(PROTOCOLS):
        return False
    try:
        with trio.fail_after(CONNECT_TIMEOUT):
            stream = await host.new_stream(info.peer_id, [FETCH, *PROTOCOLS])
    except Exception:
        return None
    protocol = str(stream.get_protocol())
    with trio.move_on_after(1):
        try:
            await stream.reset()
        except Exception:
            pass
    return protocol == FETCH
