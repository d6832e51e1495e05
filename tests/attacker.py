"""Hostile libp2p peers for the hardening tests (issue 12), each a separate process.

Usage:
  python tests/attacker.py serve-car CAR_FILE [--old]
      Answer every /fabnode/car/1.1.0 and 1.0.0 request with the bytes of CAR_FILE, whatever was
      asked (a valid CAR of some other DAG: "get trusts the root the server names"). --old: a
      server from before issue 20, honest: only 1.0.0, and a request map with any key but root,
      path and have is refused (the stream reset) and counted in the line "offences N" on stderr.
  python tests/attacker.py hog-fetch TARGET_ADDR PEERS STREAMS
      From PEERS throwaway peer ids, keep STREAMS fetch streams each open on TARGET, sending only
      a length prefix and never the request; a stream the target cuts is opened again at once.

  python tests/attacker.py fetch-garbage TARGET_ADDR
      Open a fetch stream and announce a request over the 4 MiB frame limit.
  python tests/attacker.py connect-many TARGET_ADDR N
      N throwaway peer ids, each connected to TARGET and staying connected.
  python tests/attacker.py sync-rounds TARGET_ADDR
      Open a /fabnode/sync/1.0.0 stream and send valid reconcile frames without end.
  python tests/attacker.py sync-junk TARGET_ADDR
      Open a sync stream and send one 4 MiB frame (the old limit) of junk short ids.
  python tests/attacker.py sync-streams TARGET_ADDR N
      Open N sync streams at once, each stalled one byte short of a 4 MiB frame.

  python tests/attacker.py relay-flood TARGET_ADDR N
      Ask TARGET's circuit relay for N reservations, then for N circuits to made-up peers, each
      on its own stream; prints "ready GRANTED REFUSED" (reservations) once done.
  python tests/attacker.py relay-after-offence TARGET_ADDR
      Commit an offence (a fetch request over the 4 MiB frame limit), then dial TARGET again and
      ask its relay for a reservation; prints "ready granted", "ready refused" or "ready cut off"
      (the connection or the stream was dropped).

Each prints one line when ready ("ready ADDR" or "ready"), then runs until its stdin closes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import msgpack
import trio


def _answer(car: bytes, request: dict) -> bytes:
    """``car`` as an honest server would cut it for ``request`` (issue 20): the sections listed
    in ``have`` left out and, for an ``interior`` request, every non-dag-pb one; split without
    checking anything (the file may be hostile on purpose)."""
    from fabnode.protocol.varint import decode_varint

    have, interior = set(request.get("have", [])), request.get("interior", False)
    size, pos = decode_varint(car, 0)
    out, pos = [car[:pos + size]], pos + size
    while pos < len(car):
        size, start = decode_varint(car, pos)
        _, at = decode_varint(car, start)  # CID version
        codec, at = decode_varint(car, at)
        _, at = decode_varint(car, at)  # multihash code
        length, at = decode_varint(car, at)
        if car[start:at + length] not in have and (codec == 0x70 or not interior):
            out.append(car[pos:start + size])
        pos = start + size
    return b"".join(out)


async def serve_car(car_file: str, old: bool = False) -> None:
    from libp2p.crypto.ed25519 import create_new_key_pair

    from fabnode.node.runtime.wire import read_frame
    from fabnode.node.runtime.host import dial_address, quiet_library_logs, running_host
    from fabnode.protocol.fetch import MAX_REQUEST_BYTES, PROTOCOL, PROTOCOL_INTERIOR

    quiet_library_logs()
    answer = Path(car_file).read_bytes()
    offences = 0

    async def handle(stream) -> None:
        nonlocal offences
        try:
            request = msgpack.unpackb(await read_frame(stream, MAX_REQUEST_BYTES))
            if old and (not isinstance(request, dict) or set(request) != {"root", "path", "have"}):
                # the check of protocol/fetch.py before issue 20: an offence, the stream reset
                offences += 1
                print(f"offences {offences}", file=sys.stderr, flush=True)
                await stream.reset()
                return
            # an asker first asks for the DAG's dag-pb nodes, then for the rest (issue 20)
            await stream.write(_answer(answer, request))
            await stream.close()
        except Exception:
            pass

    async with running_host(create_new_key_pair(), ["/ip4/127.0.0.1/tcp/0"]) as host:
        host.set_stream_handler(PROTOCOL, handle)
        if not old:
            host.set_stream_handler(PROTOCOL_INTERIOR, handle)
        print(f"ready {dial_address(host)}", flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)


async def hog_fetch(target: str, peers: int, streams: int) -> None:
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from multiaddr import Multiaddr

    from fabnode.node.runtime.host import quiet_library_logs, running_host
    from fabnode.protocol.fetch import PROTOCOL

    quiet_library_logs()
    info = info_from_p2p_addr(Multiaddr(target))
    opened = trio.Semaphore(0)

    async def hog(host, first: list) -> None:
        while True:
            try:
                stream = await host.new_stream(info.peer_id, [PROTOCOL])
                await stream.write(b"\xe8\x07")  # "a 1000-byte request follows" ... and nothing does
                if first:
                    first.pop()
                    opened.release()
                await stream.read(1)  # returns (or raises) once the target cuts the stream
            except Exception:
                await trio.sleep(0.05)

    async def one_peer(nursery) -> None:
        host_cm = running_host(create_new_key_pair(), ["/ip4/127.0.0.1/tcp/0"])
        host = await nursery_enter(host_cm)
        await host.connect(info)
        for _ in range(streams):
            nursery.start_soon(hog, host, [True])

    cms = []

    async def nursery_enter(cm):
        cms.append(cm)
        return await cm.__aenter__()

    async with trio.open_nursery() as nursery:
        for _ in range(peers):
            await one_peer(nursery)
        for _ in range(peers * streams):
            await opened.acquire()
        print("ready", flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)
        nursery.cancel_scope.cancel()
    for cm in cms:
        with trio.CancelScope(shield=True):
            await cm.__aexit__(None, None, None)


async def sync_attack(mode: str, target: str, streams: int = 1) -> None:
    import random

    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from multiaddr import Multiaddr

    from fabnode.node.runtime.host import quiet_library_logs, running_host
    from fabnode.protocol.reconcile import ItemSet, Reconciler
    from fabnode.protocol.sync import PROTOCOL, encode_frame
    from fabnode.protocol.varint import encode_varint

    quiet_library_logs()
    info = info_from_p2p_addr(Multiaddr(target))
    rng = random.Random(7)
    items = ItemSet((rng.randrange(1 << 40), rng.randbytes(32)) for _ in range(5000))

    async def drain(stream) -> None:
        try:
            while await stream.read(65536):
                pass
        except Exception:
            pass

    async def attack(host, nursery) -> None:
        stream = await host.new_stream(info.peer_id, [PROTOCOL])
        nursery.start_soon(drain, stream)
        if mode == "fetch-garbage":
            from fabnode.protocol.fetch import PROTOCOL as FETCH

            await stream.reset()
            stream = await host.new_stream(info.peer_id, [FETCH])
            nursery.start_soon(drain, stream)
            await stream.write(encode_varint(64 << 20))
        elif mode == "sync-rounds":
            message = encode_frame({"type": "reconcile", "msg": Reconciler(items).initiate()})
            for _ in range(10_000):
                await stream.write(message)
        elif mode == "sync-junk":
            body = b"\x82\xa4type\xa9reconcile\xa3msg\xc6" + (4 << 20).to_bytes(4, "big")
            await stream.write(encode_varint(len(body) + (4 << 20)) + body)
            await stream.write(rng.randbytes(4 << 20))
        else:  # sync-streams: a frame announced, all but its last byte sent, then nothing
            await stream.write(encode_varint(4 << 20) + bytes((4 << 20) - 1))

    async with running_host(create_new_key_pair(), ["/ip4/127.0.0.1/tcp/0"]) as host:
        await host.connect(info)
        print(f"ready {host.get_id()}", flush=True)
        async def come_back() -> None:  # once cut off, dial again every second
            while True:
                await trio.sleep(1)
                if not host.get_network().get_connections(info.peer_id):
                    # py-libp2p 0.8.1 keeps a peer whose dial failed in a negative cache and then
                    # never dials it: this attacker must keep coming back, so forget that; and a
                    # dial the target holds open must not stop the coming back
                    host.get_network().unblock_peer(info.peer_id)
                    with trio.move_on_after(5):
                        await _quietly(host.connect, info)

        async with trio.open_nursery() as nursery:
            for _ in range(streams):
                nursery.start_soon(_quietly, attack, host, nursery)
            nursery.start_soon(come_back)
            await trio.to_thread.run_sync(sys.stdin.read)
            nursery.cancel_scope.cancel()


async def _quietly(fn, *args) -> None:
    try:
        await fn(*args)
    except Exception:
        pass  # the target cut us off: that is the point


async def connect_many(target: str, n: int) -> None:
    from contextlib import AsyncExitStack

    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from multiaddr import Multiaddr

    from fabnode.node.runtime.host import quiet_library_logs, running_host

    quiet_library_logs()
    info = info_from_p2p_addr(Multiaddr(target))
    async with AsyncExitStack() as stack:
        for _ in range(n):
            host = await stack.enter_async_context(running_host(create_new_key_pair(), ["/ip4/127.0.0.1/tcp/0"]))
            await _quietly(host.connect, info)
        print("ready", flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)


async def relay_flood(target: str, n: int) -> None:
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, PeerId as Peer
    from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP
    from libp2p.relay.circuit_v2.protocol_buffer import StatusCode
    from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg
    from multiaddr import Multiaddr

    from fabnode.node.runtime.host import quiet_library_logs, running_host

    quiet_library_logs()
    info = info_from_p2p_addr(Multiaddr(target))
    granted = refused = 0
    async with running_host(create_new_key_pair(), ["/ip4/127.0.0.1/tcp/0"]) as host:
        await host.connect(info)

        async def ask(message) -> int:
            stream = await host.new_stream(info.peer_id, [HOP])
            try:
                with trio.fail_after(10):
                    await write_delimited_msg(stream, message)
                    return (await read_delimited_msg(stream, HopMessage)).status
            finally:
                await _quietly(stream.reset)

        for _ in range(n):
            status = await ask(HopMessage(type=HopMessage.RESERVE))
            if status == StatusCode.OK:
                granted += 1
            else:
                refused += 1
        for i in range(n):
            made_up = ID(bytes([0, 36, 8, 1, 18, 32]) + bytes([i % 256]) * 32)
            await _quietly(ask, HopMessage(type=HopMessage.CONNECT, peer=Peer(id=made_up.to_bytes())))
        print(f"ready {granted} {refused}", flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)


async def relay_after_offence(target: str) -> None:
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
    from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP
    from libp2p.relay.circuit_v2.protocol_buffer import StatusCode
    from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg
    from multiaddr import Multiaddr

    from fabnode.node.runtime.host import quiet_library_logs, running_host
    from fabnode.protocol.fetch import PROTOCOL as FETCH
    from fabnode.protocol.varint import encode_varint

    quiet_library_logs()
    info = info_from_p2p_addr(Multiaddr(target))
    async with running_host(create_new_key_pair(), ["/ip4/127.0.0.1/tcp/0"]) as host:
        await host.connect(info)
        stream = await host.new_stream(info.peer_id, [FETCH])
        await stream.write(encode_varint(64 << 20))
        with trio.move_on_after(10):  # the target cuts us off: our connection goes
            while host.get_network().get_connections(info.peer_id):
                await trio.sleep(0.05)
        outcome = "cut off"
        try:
            with trio.fail_after(10):
                host.get_network().unblock_peer(info.peer_id)
                await host.connect(info)
                stream = await host.new_stream(info.peer_id, [HOP])
                await write_delimited_msg(stream, HopMessage(type=HopMessage.RESERVE))
                status = (await read_delimited_msg(stream, HopMessage)).status
                outcome = "granted" if status == StatusCode.OK else "refused"
        except Exception:
            pass
        print(f"ready {outcome}", flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "serve-car":
        trio.run(serve_car, args[0], "--old" in args[1:])
    elif mode == "hog-fetch":
        trio.run(hog_fetch, args[0], int(args[1]), int(args[2]))
    elif mode in ("sync-rounds", "sync-junk", "fetch-garbage"):
        trio.run(sync_attack, mode, args[0])
    elif mode == "connect-many":
        trio.run(connect_many, args[0], int(args[1]))
    elif mode == "relay-flood":
        trio.run(relay_flood, args[0], int(args[1]))
    elif mode == "relay-after-offence":
        trio.run(relay_after_offence, args[0])
    elif mode == "sync-streams":
        trio.run(sync_attack, mode, args[0], int(args[1]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
