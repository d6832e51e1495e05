"""Fetching a DAG from a peer over ``/fabnode/car/1.0.0``, and serving ours (DESIGN §3).

The protocol core is :mod:`protocol.fetch`; this module moves its frames over libp2p streams
under trio. The asker stores verified blocks in batches, each in its own transaction, so a
transfer that breaks keeps what arrived and the next attempt asks only for the rest (it lists
the blocks it holds in its request). The root is pinned, and files written out, only once the
whole DAG is here.
"""

from __future__ import annotations

import sys
import time

import trio

from protocol.car import encode_header, encode_section
from protocol.cid import DAG_PB, cid_codec, cid_str, parse_cid_path
from protocol.dagpb import decode_node
from protocol.errors import FabnodeError
from protocol.fetch import (
    MAX_REQUEST_BYTES,
    PROTOCOL,
    FetchRequest,
    FetchSession,
    RemoteProtocolError,
    decode_request,
    encode_request,
)
from protocol.unixfs import MAX_DEPTH, decode as decode_unixfs, resolve
from protocol.varint import MAX_VARINT_BYTES
from storage import BlockStore, Pin

from .home import Home
from .sneakernet import dag_cids

CONNECT_TIMEOUT = 10
READ_TIMEOUT = 30
BATCH_BYTES = 8 << 20
"""Blocks are committed in batches of this size, so an interrupted fetch keeps its progress."""
MAX_STREAMS_PER_PEER = 4


async def _read_exact(stream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.read(n - len(buf))
        if not chunk:
            raise RemoteProtocolError(f"stream ended after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


async def _read_frame(stream, limit: int) -> bytes:
    length = shift = 0
    for i in range(MAX_VARINT_BYTES):
        byte = (await _read_exact(stream, 1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    else:
        raise RemoteProtocolError("frame length varint too long")
    if length > limit:
        raise RemoteProtocolError(f"frame of {length} bytes is over the {limit}-byte limit")
    return await _read_exact(stream, length)


# ------------------------------------------------------------------ serving


def _dag_in_order(store: BlockStore, root: bytes, skip: set[bytes]):
    """(cid, data) to send, depth-first; held-by-asker blocks are walked through, not sent."""
    seen: set[bytes] = set()
    stack = [(root, 0)]
    while stack:
        cid, depth = stack.pop()
        if cid in seen or depth > MAX_DEPTH:
            continue
        seen.add(cid)
        data = store.get(cid)
        if cid not in skip:
            yield cid, data
        if cid_codec(cid) == DAG_PB:
            stack.extend((link.cid, depth + 1) for link in reversed(decode_node(data).links))


class FetchServer:
    """Serves DAGs this node holds completely, a few streams per peer at a time."""

    def __init__(self, store: BlockStore, log=print) -> None:
        self.store = store
        self.log = log
        self._busy: dict[str, int] = {}

    async def handle(self, stream) -> None:
        peer = str(stream.muxed_conn.peer_id)
        if self._busy.get(peer, 0) >= MAX_STREAMS_PER_PEER:
            await stream.reset()
            return
        self._busy[peer] = self._busy.get(peer, 0) + 1
        try:
            with trio.fail_after(READ_TIMEOUT):
                request = decode_request(await _read_frame(stream, MAX_REQUEST_BYTES))
            root = resolve(self.store.get, request.root, list(request.path))
            if not dag_cids(self.store, root)[1]:  # serve only what we hold whole
                raise FabnodeError(f"{cid_str(root)} is not (completely) held here")
            sent = 0
            await stream.write(encode_header([root]))
            for cid, data in _dag_in_order(self.store, root, set(request.have)):
                await stream.write(encode_section(cid, data))
                sent += len(data)
            await stream.close()
            self.log(f"served {cid_str(root)} to {peer[:16]}…: {sent} bytes")
        except (FabnodeError, trio.TooSlowError) as exc:
            self.log(f"fetch from {peer[:16]}… refused: {exc}")
            await stream.reset()
        except Exception as exc:  # a peer that went away mid-stream
            self.log(f"fetch from {peer[:16]}… ended: {type(exc).__name__}")
        finally:
            self._busy[peer] -= 1


# ------------------------------------------------------------------ asking


def _held_part(store: BlockStore, root: bytes) -> list[tuple[bytes, bytes]]:
    """The blocks of root's DAG already here (from an earlier, interrupted fetch)."""
    out, seen, stack = [], set(), [root]
    while stack:
        cid = stack.pop()
        if cid in seen:
            continue
        seen.add(cid)
        data = store.get_unverified(cid)
        if data is None:
            continue
        out.append((cid, data))
        if cid_codec(cid) == DAG_PB:
            stack.extend(link.cid for link in decode_node(data).links)
    return out


async def _fetch(store: BlockStore, root: bytes, path: list[str], peer_addr: str) -> dict:
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.network.stream.exceptions import StreamEOF
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from multiaddr import Multiaddr

    from .host import quiet_library_logs, running_host

    quiet_library_logs()
    held = _held_part(store, root) if not path else []
    request = FetchRequest(root, tuple(path), tuple(cid for cid, _ in held))
    session = FetchSession(request, set())
    for cid, data in held:
        session.held_block(cid, data)
    try:
        info = info_from_p2p_addr(Multiaddr(peer_addr))
    except Exception as exc:
        raise FabnodeError(f"not a peer address: {peer_addr!r} (want /ip4/…/tcp/…/p2p/…): {exc}") from None
    fetched = 0
    async with running_host(create_new_key_pair(), ["/ip4/127.0.0.1/tcp/0"]) as host:
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                await host.connect(info)
                stream = await host.new_stream(info.peer_id, [PROTOCOL])
        except Exception as exc:
            raise FabnodeError(f"cannot reach {peer_addr}: {type(exc).__name__} {exc}".strip()) from None
        await stream.write(encode_request(request))
        batch: list = []
        batch_bytes = received = 0
        while True:
            try:
                with trio.fail_after(READ_TIMEOUT):
                    data = await stream.read(1 << 20)
            except StreamEOF:
                data = b""
            except trio.TooSlowError:
                raise FabnodeError(f"{peer_addr} sent nothing for {READ_TIMEOUT} s; run again to resume") from None
            except Exception:
                data = b""  # a reset: what arrived is kept, what is missing is reported below
            received += len(data)
            if not received:  # refused before the first byte
                raise FabnodeError(f"the peer at {peer_addr} does not have {cid_str(root)} (or would not send it)")
            blocks = session.receive(data)
            batch.extend(blocks)
            batch_bytes += sum(len(b.data) for b in blocks)
            if batch and (batch_bytes >= BATCH_BYTES or not data):
                with store.write_transaction():
                    for b in batch:
                        store.put(b.cid, b.data)
                fetched += len(batch)
                batch, batch_bytes = [], 0
            if not data:
                break
    if session.root is None:
        raise FabnodeError(f"the peer at {peer_addr} does not have {cid_str(root)}")
    missing = session.missing()
    if missing:
        raise FabnodeError(f"the peer sent {fetched} block(s) but {len(missing)} are still missing; "
                           "what arrived is kept: run again (or ask another peer) to resume")
    return {"root": session.root, "fetched": fetched, "held": len(held)}


def fetch(home: Home, cid_path: str, peer_addr: str) -> dict:
    """Fetch a DAG from one peer into the store, verified; returns counts and the resolved root."""
    root, path = parse_cid_path(cid_path)
    store = home.open_store()
    try:
        result = trio.run(_fetch, store, root, path, peer_addr)
    except BaseExceptionGroup as group:  # libp2p's nurseries wrap what our code raised inside them
        raise _first_fabnode_error(group) or group from None
    node = decode_unixfs(result["root"], store.get(result["root"]))
    with store.write_transaction():
        store.pin(Pin(result["root"], node.kind, node.filesize, 0, f"fetched:{cid_str(result['root'])}",
                      time.time_ns() // 1_000_000), replace=False)
    return {"root": cid_str(result["root"]), "fetched_blocks": result["fetched"], "already_held": result["held"]}


def _first_fabnode_error(exc: BaseException) -> FabnodeError | None:
    if isinstance(exc, FabnodeError):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        found = _first_fabnode_error(inner)
        if found is not None:
            return found
    return None


# ------------------------------------------------------------------ the daemon


def run_daemon(home: Home, listen: list[str]) -> None:
    """Serve this node's DAGs until SIGINT or SIGTERM; print one line per meaningful event."""
    import json
    import os
    import signal


    def log(line: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)

    async def main() -> None:
        from .host import dial_address, node_key_pair, quiet_library_logs, running_host

        quiet_library_logs()
        server = FetchServer(home.open_store(), log)
        state = home.path / "daemon.json"
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with running_host(node_key_pair(home), listen) as host:
                host.set_stream_handler(PROTOCOL, server.handle)
                addr = dial_address(host)
                state.write_text(json.dumps({"pid": os.getpid(), "addrs": [addr]}))
                log(f"listening on {addr}")
                async for sig in signals:
                    log(f"stopping ({signal.Signals(sig).name})")
                    break
        state.unlink(missing_ok=True)

    trio.run(main)
    sys.stdout.flush()
