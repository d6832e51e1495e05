"""The libp2p host on 127.0.0.1: the home's identity, Noise only, and a clean shutdown."""

from __future__ import annotations

import trio

from conftest import Cli

ECHO = "/fabnode/test-echo/1.0.0"
LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]


def _home(cli: Cli):
    from fabnode.node.home import Home

    return Home(cli.home)


async def _echo(stream) -> None:
    data = await stream.read(1024)
    await stream.write(data[::-1])
    await stream.close()


async def test_two_nodes_connect_with_their_home_identities(tmp_path):
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from multiaddr import Multiaddr

    from fabnode.node.runtime.host import dial_address, node_key_pair, running_host

    alice, bob = Cli(tmp_path / "alice"), Cli(tmp_path / "bob")
    for c in (alice, bob):
        c.run("init")
    async with running_host(node_key_pair(_home(alice)), LOOPBACK) as a, \
            running_host(node_key_pair(_home(bob)), LOOPBACK) as b:
        assert str(a.get_id()) == alice.json("id")["peer_id"]
        a.set_stream_handler(ECHO, _echo)
        with trio.fail_after(10):
            await b.connect(info_from_p2p_addr(Multiaddr(dial_address(a))))
            stream = await b.new_stream(a.get_id(), [ECHO])
            await stream.write(b"pump")
            assert await stream.read(1024) == b"pmup"
        conn = b.get_network().get_connections(a.get_id())[0]
        # Noise's session class (the plaintext transport would give an InsecureSession)
        assert type(conn.muxed_conn.secured_conn).__name__ == "SecureSession"
        assert "yamux" in type(conn.muxed_conn).__module__


async def test_a_plaintext_dialer_is_refused(tmp_path):
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
    from multiaddr import Multiaddr

    from fabnode.node.runtime.host import dial_address, node_key_pair, running_host

    alice = Cli(tmp_path / "alice")
    alice.run("init")
    kp = create_new_key_pair()
    plaintext = new_host(key_pair=kp, sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(kp)})
    async with running_host(node_key_pair(_home(alice)), LOOPBACK) as a, plaintext.run([Multiaddr(LOOPBACK[0])]):
        refused = False
        with trio.fail_after(20):
            try:
                await plaintext.connect(info_from_p2p_addr(Multiaddr(dial_address(a))))
            except Exception:
                refused = True
        await plaintext.close()
        assert refused and a.get_network().get_connections(plaintext.get_id()) == []


async def test_closing_a_node_closes_its_connections_on_the_other_side(tmp_path):
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from multiaddr import Multiaddr

    from fabnode.node.runtime.host import dial_address, node_key_pair, running_host

    alice, bob = Cli(tmp_path / "alice"), Cli(tmp_path / "bob")
    for c in (alice, bob):
        c.run("init")
    async with running_host(node_key_pair(_home(alice)), LOOPBACK) as a:
        async with running_host(node_key_pair(_home(bob)), LOOPBACK) as b:
            with trio.fail_after(10):
                await b.connect(info_from_p2p_addr(Multiaddr(dial_address(a))))
            bob_id = b.get_id()
            with trio.fail_after(10):
                while not a.get_network().get_connections(bob_id):
                    await trio.sleep(0.01)
        with trio.fail_after(10):  # bob has left: alice must see the connection go
            while a.get_network().get_connections(bob_id):
                await trio.sleep(0.01)



SLOW = "/fabnode/test-slow-reader/1.0.0"


async def test_write_all_delivers_every_byte_in_window_sized_pieces_to_a_reader_that_pauses(tmp_path):
    """wire.write_all hands Yamux only what the peer's window admits and waits for room itself,
    with a deadline on progress: a reader away for a while, then reading, gets every byte in
    order (issue 14: thin links drain windows slowly)."""
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from multiaddr import Multiaddr

    from fabnode.node.runtime.host import dial_address, running_host
    from fabnode.node.runtime.wire import write_all

    payload = bytes(range(251)) * (24 << 10)  # ~6 MiB, a pattern that shows a lost or repeated piece
    results: list[bytes] = []
    reading = trio.Event()

    async def slow_reader(stream) -> None:
        await reading.wait()
        got = bytearray()
        while len(got) < len(payload):
            chunk = await stream.read(1 << 16)
            if not chunk:
                break
            got += chunk
        results.append(bytes(got))

    async with running_host(create_new_key_pair(), LOOPBACK) as a, running_host(create_new_key_pair(), LOOPBACK) as b:
        a.set_stream_handler(SLOW, slow_reader)
        with trio.fail_after(30):
            await b.connect(info_from_p2p_addr(Multiaddr(dial_address(a))))
            stream = await b.new_stream(a.get_id(), [SLOW])
            async with trio.open_nursery() as nursery:
                nursery.start_soon(write_all, stream, payload)
                await trio.sleep(1)  # the scenario: nobody reads for a second while the writer writes
                reading.set()
            while not results:
                await trio.sleep(0.05)
    assert results == [payload]
