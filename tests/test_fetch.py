"""Fetching designs by hash from a peer: a real daemon process on 127.0.0.1 and the real CLI."""

from __future__ import annotations

import filecmp
import sqlite3

import pytest

from fabnode.protocol.car import encode_header, encode_section
from fabnode.protocol.cid import RAW, make_cid
from fabnode.protocol.fetch import FetchRequest, FetchSession, RemoteProtocolError
from fabnode.protocol.labs import short_key

from conftest import ROOT, Cli
from daemons import STOP_DEADLINE_S, Daemon

EXAMPLE = ROOT / "examples" / "hand-pump"


@pytest.fixture
def two(tmp_path):
    a, b = Cli(tmp_path / "a"), Cli(tmp_path / "b")
    a.run("init", "--name", "Lab A")
    b.run("init", "--name", "Lab B")
    return a, b


def test_get_from_a_peer_is_byte_identical_and_resumes(two, tmp_path):
    a, b = two
    bundle = a.json("publish", str(EXAMPLE), "-m", "first design")["bundle"]
    daemon = Daemon(a)
    try:
        assert daemon.addr.endswith(a.json("id")["peer_id"])
        got = b.run("get", bundle, "--peer", daemon.addr, "-o", str(tmp_path / "pump"))
        assert got.stdout.decode().strip() == str(tmp_path / "pump")
        cmp = filecmp.dircmp(EXAMPLE, tmp_path / "pump")
        assert not cmp.left_only and not cmp.right_only and not cmp.diff_files
        assert b.json("fsck")["ok"]
        total = b.json("fsck")["blocks"]
        # lose some blocks, as an interrupted transfer would, then ask again: only those come
        conn = sqlite3.connect(b.home / "fabnode.db")
        lost = [r[0] for r in conn.execute("SELECT cid FROM blocks ORDER BY size DESC LIMIT 3")]
        conn.executemany("DELETE FROM blocks WHERE cid = ?", [(c,) for c in lost])
        conn.execute("DELETE FROM pins")
        conn.commit()
        conn.close()
        again = b.run("get", bundle, "--peer", daemon.addr, "-o", str(tmp_path / "pump2"))
        peer = daemon.addr.rsplit("/", 1)[1]
        assert f"fetched 3 block(s) from {short_key(peer)} ({total - 3} already here)" in again.stderr.decode()
        assert b.json("fsck")["blocks"] == total and b.json("fsck")["ok"]
        missing = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyka"
        assert "does not have" in b.fails("get", missing, "--peer", daemon.addr, "-o", str(tmp_path / "x"))
        daemon.wait_for("refused")
    finally:
        took = daemon.stop()
    assert took < STOP_DEADLINE_S and daemon.proc.returncode == 0
    assert not (a.home / "daemon.json").exists()


def test_get_from_an_unreachable_peer_is_a_clear_error(two, tmp_path):
    _, b = two
    addr = "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB"
    cid = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    line = b.fails("get", cid, "--peer", addr, "--timeout", "2s")
    assert line.startswith(f"error: could not fetch {cid}: 12D3KooWA4Xo…feSB: cannot connect")


def test_a_session_refuses_blocks_the_dag_does_not_need():
    want = make_cid(RAW, b"wanted")
    stowaway = (make_cid(RAW, b"stowaway"), b"stowaway")
    session = FetchSession(FetchRequest(want), set())
    with pytest.raises(RemoteProtocolError, match="does not need"):
        session.receive(encode_header([want]) + encode_section(*stowaway))


def test_a_session_refuses_a_forged_block():
    want = make_cid(RAW, b"wanted")
    session = FetchSession(FetchRequest(want), set())
    with pytest.raises(RemoteProtocolError, match="does not match"):
        session.receive(encode_header([want]) + encode_section(want, b"wanteD"))
    complete = FetchSession(FetchRequest(want), set())
    assert [b.data for b in complete.receive(encode_header([want]) + encode_section(want, b"wanted"))] == [b"wanted"]
    assert complete.receive(b"") == [] and complete.missing() == set()


async def test_a_peer_gets_at_most_its_share_of_fetch_streams(tmp_path):
    """limits.fetch_streams_per_peer = 2: a third concurrent request from the same peer is
    refused at once, while the first two go on being served."""
    import trio
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from multiaddr import Multiaddr

    from fabnode.node.runtime.host import quiet_library_logs, running_host
    from fabnode.protocol.cid import parse_cid
    from fabnode.protocol.fetch import PROTOCOL, encode_request

    from conftest import write_random_file

    a = Cli(tmp_path / "a")
    a.run("init")
    write_random_file(tmp_path / "big.bin", 6 << 20, seed=3)
    with open(a.home / "config.toml", "a") as f:
        f.write("[limits]\nfetch_streams_per_peer = 2\nupload_bytes_per_second = 1048576\n")
    root = parse_cid(a.out("add", str(tmp_path / "big.bin")))
    daemon = Daemon(a)
    quiet_library_logs()
    try:
        info = info_from_p2p_addr(Multiaddr(daemon.addr))
        async with running_host(create_new_key_pair(), ["/ip4/127.0.0.1/tcp/0"]) as host:
            with trio.fail_after(20):
                await host.connect(info)
                streams = []

                async def first_bytes() -> bytes:
                    try:  # a refusal may come as early as the protocol negotiation
                        stream = await host.new_stream(info.peer_id, [PROTOCOL])
                        streams.append(stream)
                        await stream.write(encode_request(FetchRequest(root)))
                        return await stream.read(1 << 16)
                    except Exception:
                        return b""

                got = [await first_bytes() for _ in range(3)]
            assert got[0] and got[1], "the first two streams are served"
            assert got[2] == b"", "the third is refused before any byte"
            for s in streams:
                await s.reset()
    finally:
        daemon.stop()
    assert daemon.said("refused: too many streams at once")
