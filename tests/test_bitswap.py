"""Bitswap (issue 16): Helia fetches from a fabnode daemon, fabnode fetches from Helia, hostile
Bitswap peers are refused, and the pure message codec agrees with the protobuf schema.

Helia 7 (npm, Node 24 from test-tools) is the independent implementation: an in-memory node with
TCP, Noise, Yamux, identify and Bitswap only (test-tools/helia-node.mjs), talking to 127.0.0.1.
The hostile peers are real py-libp2p hosts in the test's own trio loop.
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
import subprocess
from pathlib import Path

import pytest
import trio

from conftest import TOOLS, Cli, write_random_file
from daemons import Daemon, wait_until

from fabnode.protocol import bitswap as bs
from fabnode.protocol.cid import DAG_PB, RAW, cid_str, make_cid
from fabnode.protocol.errors import RemoteProtocolError

NODE = TOOLS / "node_modules" / ".bin" / "node"
WAIT = 60  # every wait on a process or the network is bounded by this (seconds)


# ------------------------------------------------------------------ the pure codec


def test_messages_agree_with_the_protobuf_schema_both_ways():
    """Our encoder's bytes parse with the schema's generated classes (py-libp2p ships them,
    built from the spec's .proto), and theirs decode with ours, field by field."""
    from libp2p.bitswap.pb.bitswap_pb2 import Message as PbMessage

    rng = random.Random(16)
    raw_block, node_block = rng.randbytes(3000), b"\x0a\x02\x08\x01"  # a raw leaf; a dag-pb node's bytes
    raw_cid, node_cid = make_cid(RAW, raw_block), make_cid(DAG_PB, node_block)
    wants = [bs.WantEntry(raw_cid, priority=7, send_dont_have=True),
             bs.WantEntry(node_cid, priority=-3, want_have=True),  # a negative int32 is ten bytes
             bs.WantEntry(raw_cid, cancel=True)]
    ours = bs.encode_message(wants=wants, full=True, blocks=[(raw_cid, raw_block), (node_cid, node_block)],
                             presences=[(node_cid, bs.DONT_HAVE)])
    pb = PbMessage.FromString(ours)
    assert pb.wantlist.full
    assert [(e.block, e.priority, e.cancel, e.wantType, e.sendDontHave) for e in pb.wantlist.entries] == [
        (raw_cid, 7, False, 0, True), (node_cid, -3, False, 1, False), (raw_cid, 1, True, 0, False)]
    assert [(p.prefix, p.data) for p in pb.payload] == [(raw_cid[:4], raw_block), (node_cid[:4], node_block)]
    assert [(p.cid, p.type) for p in pb.blockPresences] == [(node_cid, 1)]

    theirs = PbMessage()
    entry = theirs.wantlist.entries.add()
    entry.block, entry.priority, entry.wantType, entry.sendDontHave = node_cid, -5, 1, True
    block = theirs.payload.add()
    block.prefix, block.data = raw_cid[:4], raw_block
    theirs.blocks.append(node_block)  # 1.0.0: bare bytes, CIDv0 (dag-pb) implied
    presence = theirs.blockPresences.add()
    presence.cid, presence.type = raw_cid, 1
    msg = bs.decode_message(theirs.SerializeToString())
    assert msg.wants == [bs.WantEntry(node_cid, -5, False, True, True)]
    assert sorted((b.cid, b.data) for b in msg.blocks) == sorted([(raw_cid, raw_block), (node_cid, node_block)])
    assert msg.presences == [(raw_cid, bs.DONT_HAVE)]
    assert bs.decode_message(bs.encode_message(blocks=[(raw_cid, raw_block)], v100=True)).blocks[0].cid \
        == make_cid(DAG_PB, raw_block)  # 1.0.0 can only name dag-pb blocks: a raw leaf is another CID there


def test_a_block_is_named_by_its_bytes_never_by_what_it_claims():
    """A payload claiming a wanted CID's prefix with other bytes decodes as another CID (so no
    fetch takes it); a hash fabnode cannot check is counted and dropped; limits are offences."""
    good = b"the real block"
    wanted = make_cid(RAW, good)
    forged = bs.decode_message(bs.encode_message(blocks=[(wanted, b"not the real block")]))
    assert [b.cid for b in forged.blocks] == [make_cid(RAW, b"not the real block")] != [wanted]
    sha512_prefix = bytes([1, RAW, 0x13, 64])
    odd = bs._bytes_field(3, bs._bytes_field(1, sha512_prefix) + bs._bytes_field(2, good))
    assert bs.decode_message(odd).blocks == [] and bs.decode_message(odd).unverifiable == 1
    with pytest.raises(RemoteProtocolError, match="over the 2097152-byte limit"):
        bs.decode_message(bs.encode_message(blocks=[(wanted, bytes(bs.MAX_BLOCK_BYTES + 1))]))
    with pytest.raises(RemoteProtocolError, match="runs past the end"):
        bs.decode_message(bs.encode_message(blocks=[(wanted, good)])[:-3])
    with pytest.raises(RemoteProtocolError, match="over the 4194304-byte limit"):
        bs.decode_message(bytes(bs.MAX_MESSAGE_BYTES + 1))
    v0 = bytes([0x12, 32]) + make_cid(DAG_PB, good)[4:]  # a CIDv0 as Kubo may ask for it
    assert bs.internal_cid(v0) == make_cid(DAG_PB, good) and bs.prefix_of(v0) == bytes([0, DAG_PB, 0x12, 32])
    assert bs.internal_cid(sha512_prefix + bytes(64)) is None


def test_a_peers_wants_are_bounded_ordered_and_cancellable():
    wants = bs.PeerWants(max_entries=3)
    cids = [make_cid(RAW, bytes([i])) for i in range(6)]
    wants.apply(bs.Message(wants=[bs.WantEntry(c, priority=1) for c in cids[:5]]))
    assert len(wants) == 3 and wants.dropped == 2
    wants.apply(bs.Message(wants=[bs.WantEntry(cids[1], cancel=True), bs.WantEntry(cids[5], priority=9)]))
    assert [w.cid for w in wants.take(2)] == [cids[5], cids[0]]  # highest priority, then oldest
    wants.apply(bs.Message(wants=[bs.WantEntry(cids[3])], full=True))  # a full list replaces the queue
    assert [w.cid for w in wants.take(10)] == [cids[3]] and len(wants) == 0


# ------------------------------------------------------------------ a daemon and Helia


def _design(folder: Path) -> Path:
    write_random_file(folder / "cad" / "frame.bin", 2_500_000, seed=16)  # three 1 MiB leaves and a node
    (folder / "README.md").write_text("# Hand pump\nBuilt in Nakuru.\n")
    (folder / "cad" / "notes.txt").write_text("printed in PETG\n")
    return folder


def _same_tree(a: Path, b: Path) -> None:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """One daemon for the module, holding one design; stopped at the end."""
    if not NODE.exists():
        pytest.fail(f"{NODE} is missing: run 'make test' (it installs test-tools with npm ci)")
    tmp = tmp_path_factory.mktemp("bitswap")
    cli = Cli(tmp / "lab")
    cli.run("init", "--name", "Bitswap Lab")
    src = _design(tmp / "design")
    root = cli.out("add", str(src))
    daemon = Daemon(cli)
    yield {"cli": cli, "daemon": daemon, "src": src, "root": root, "tmp": tmp}
    daemon.stop()


def test_helia_fetches_a_design_from_the_daemon_by_cid(node, tmp_path):
    out = tmp_path / "helia-out"
    result = subprocess.run([str(NODE), str(TOOLS / "helia-fetch.mjs"), node["daemon"].addr, node["root"], str(out),
                             "--timeout", "40"], capture_output=True, timeout=WAIT)
    assert result.returncode == 0, result.stderr.decode()
    _same_tree(node["src"], out)


def test_get_fetches_a_folder_helia_serves(node, tmp_path):
    """`get --peer HELIA` notices Helia does not speak fabnode's fetch protocol and walks the DAG
    over Bitswap; Helia's CID for the folder is fabnode's (the same profile), and the fetched
    design is pinned: a later `get` needs no peer."""
    src = _design(tmp_path / "from-helia")
    (src / "cad" / "frame.bin").write_bytes(random.Random(61).randbytes(2_200_000))
    helia = subprocess.Popen([str(NODE), str(TOOLS / "helia-serve.mjs"), str(src), "--exit-after", str(WAIT * 2)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        said = _read_until_ready(helia)
        cli = Cli(tmp_path / "home")
        cli.run("init")
        got = cli.run("get", said["cid"], "--peer", said["multiaddr"], "-o", str(tmp_path / "got"),
                      "--timeout", "40s", timeout=WAIT)
        # two folders, two small files (raw), the large file's node and its three leaves
        assert "fetched 8 block(s)" in got.stderr.decode(), got.stderr.decode()
        _same_tree(src, tmp_path / "got")
        assert cli.out("add", str(src)) == said["cid"]  # nothing new: every block arrived, verified
    finally:
        helia.stdin.close()
        helia.wait(timeout=WAIT)
    again = cli.run("get", said["cid"], "-o", str(tmp_path / "again"), timeout=WAIT)  # Helia is gone: from the store
    assert again.stderr == b"" and said["cid"] in cli.out("ls")  # pinned: gc keeps it
    _same_tree(src, tmp_path / "again")


def _read_until_ready(proc) -> dict:
    said: dict[str, str] = {}
    deadline_lines = 20
    while "ready" not in said and deadline_lines:
        line = proc.stdout.readline().decode().strip()  # helia-serve exits within WAIT*2 s whatever happens
        if not line:
            raise AssertionError(f"helia-serve ended early: {proc.stderr.read().decode()[-500:]}")
        key, _, value = line.partition(" ")
        said[key] = value
        deadline_lines -= 1
    return said


def test_get_over_bitswap_from_a_fabnode_daemon(node, tmp_path):
    """py to py: --bitswap asks a fabnode daemon over Bitswap instead of its own fetch protocol."""
    cli = Cli(tmp_path / "home")
    cli.run("init")
    got = cli.run("get", node["root"] + "/cad", "--peer", node["daemon"].addr, "--bitswap",
                  "-o", str(tmp_path / "cad"), "--timeout", "40s", timeout=WAIT)
    assert "fetched" in got.stderr.decode()
    _same_tree(node["src"] / "cad", tmp_path / "cad")
    assert "--bitswap needs --peer" in cli.fails("get", cid_str(make_cid(RAW, b"elsewhere")), "--bitswap")


# ------------------------------------------------------------------ hostile Bitswap peers


async def _hostile_host(target: str):
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from multiaddr import Multiaddr

    from fabnode.node.runtime.host import quiet_library_logs, running_host

    quiet_library_logs()
    info = info_from_p2p_addr(Multiaddr(target))
    return running_host(create_new_key_pair(), ["/ip4/127.0.0.1/tcp/0"]), info


def _blocks_in(home: Path) -> set[bytes]:
    with sqlite3.connect(f"file:{home / 'fabnode.db'}?mode=ro", uri=True) as conn:
        return {row[0] for row in conn.execute("SELECT cid FROM blocks")}


def test_the_daemon_stores_no_pushed_block_and_limits_huge_wantlists(node):
    """A peer pushes a block nobody asked for and a forged copy of a block the daemon holds:
    neither is stored, one line says so. It then asks for 3,000 blocks at once: the daemon keeps
    1,024 of its wants (one log line), still answers the one it holds, and the peer is not cut off.
    A fifth stream held open at once is refused."""
    from fabnode.node.runtime.wire import read_frame

    daemon, home = node["daemon"], node["cli"].home
    held = sorted(_blocks_in(home))
    held_leaf = next(c for c in held if c[1] == RAW)
    before = _blocks_in(home)
    stray = b"a block nobody wanted " * 50
    answered: list[bs.Message] = []

    async def main():
        context, info = await _hostile_host(daemon.addr)
        async with context as host:
            got = trio.Event()

            async def take_answers(stream):
                while True:
                    answered.append(bs.decode_message(await read_frame(stream, bs.MAX_MESSAGE_BYTES)))
                    got.set()

            for protocol in bs.PROTOCOLS:
                host.set_stream_handler(protocol, take_answers)
            with trio.fail_after(WAIT):
                await host.connect(info)
                stream = await host.new_stream(info.peer_id, [bs.PROTOCOLS[0]])
                await stream.write(bs.frame(bs.encode_message(blocks=[(make_cid(RAW, stray), stray),
                                                                      (held_leaf, b"forged bytes")])))
                await trio.to_thread.run_sync(daemon.wait_for, "bitswap: dropped 2 block(s)", WAIT)
                rng = random.Random(3000)
                wants = [bs.WantEntry(held_leaf, priority=10)] + [
                    bs.WantEntry(make_cid(RAW, rng.randbytes(8)), want_have=True) for _ in range(2999)]
                await stream.write(bs.frame(bs.encode_message(wants=wants)))
                await got.wait()
                held_open = []
                for _ in range(4):
                    try:
                        held_open.append(await host.new_stream(info.peer_id, [bs.PROTOCOLS[0]]))
                    except Exception:  # the one over the limit may be reset while its protocol is agreed
                        pass
                await trio.to_thread.run_sync(daemon.wait_for, "refused a stream from", WAIT)  # 4 per peer
                assert len(held_open) >= 3
                for extra in (stream, *held_open):
                    await extra.close()

    trio.run(main)
    assert _blocks_in(home) == before  # nothing stored: not the stray block, not the forgery
    assert node["cli"].run("cat", f"{node['root']}/cad/frame.bin").stdout == (node["src"] / "cad/frame.bin").read_bytes()
    assert [(b.cid, hashlib.sha256(b.data).digest()) for b in answered[0].blocks] == \
        [(held_leaf, held_leaf[4:])]  # the one held block, served intact
    lines = daemon.said("wants more than 1024 blocks at once")  # said before the block was answered
    assert len(lines) == 1 and "dropped 1976 wantlist entries" in lines[0], lines
    peers = node["cli"].out("peers")
    assert "cut off" not in peers
    swap = node["cli"].json("status")["bitswap"]
    assert swap["served_blocks"] >= 1 and swap["dropped_blocks"] == 2 and swap["dropped_wants"] == 1976, swap
    assert "refused 2 unasked-for block(s), 1976 want(s) over the limit" in node["cli"].out("status")


def test_a_malformed_message_cuts_the_peer_off(node):
    daemon = node["daemon"]

    async def main():
        context, info = await _hostile_host(daemon.addr)
        async with context as host:
            with trio.fail_after(WAIT):
                await host.connect(info)
                stream = await host.new_stream(info.peer_id, [bs.PROTOCOLS[2]])  # 1.0.0 too
                await stream.write(bs._uvarint(5 << 20) + b"x" * 1024)  # announces 5 MiB
                await trio.to_thread.run_sync(daemon.wait_for, "broke the protocol", WAIT)

    trio.run(main)
    wait_until(lambda: "cut off" in node["cli"].out("peers"), WAIT, "the peer to be cut off")


def test_get_takes_only_the_wanted_block_from_a_lying_peer(tmp_path):
    """A Bitswap server answers the want for R with a forged block, an unrelated one, then R:
    `get` stores R alone. Another sends the forgeries, then DONT_HAVE: `get` fails in one line
    that says blocks were dropped, and stores nothing."""
    reals = {honest: random.Random(int(honest)).randbytes(5000) for honest in (True, False)}
    stray = b"unrelated" * 100

    async def serve(honest_at_last: bool, addr_ready, stop):
        from fabnode.node.runtime.host import dial_address, quiet_library_logs, running_host
        from fabnode.node.runtime.wire import read_frame
        from libp2p.crypto.ed25519 import create_new_key_pair

        quiet_library_logs()
        real = reals[honest_at_last]
        root = make_cid(RAW, real)
        async with running_host(create_new_key_pair(), ["/ip4/127.0.0.1/tcp/0"]) as host:
            async def handle(stream):
                peer = stream.muxed_conn.peer_id
                try:
                    msg = bs.decode_message(await read_frame(stream, bs.MAX_MESSAGE_BYTES))
                    if not msg.wants or msg.wants[0].cancel:
                        return
                    out = await host.new_stream(peer, [str(stream.get_protocol())])
                    answers = [(root, b"forged" * 10), (make_cid(RAW, stray), stray)]
                    if honest_at_last:
                        answers.append((root, real))
                    for answer in answers:
                        await out.write(bs.frame(bs.encode_message(blocks=[answer])))
                    if not honest_at_last:  # then says it does not have it: the fetch ends at once
                        await out.write(bs.frame(bs.encode_message(presences=[(root, bs.DONT_HAVE)])))
                    await out.close()
                except Exception:
                    pass

            for protocol in bs.PROTOCOLS:
                host.set_stream_handler(protocol, handle)
            addr_ready(dial_address(host))
            await stop.wait()

    async def main():
        cli = Cli(tmp_path / "home")
        await trio.to_thread.run_sync(lambda: cli.run("init"))
        results = {}
        for honest in (True, False):
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                ready = trio.Event()
                addr = []
                nursery.start_soon(serve, honest, lambda a: (addr.append(a), ready.set()), stop)
                with trio.fail_after(WAIT):
                    await ready.wait()
                    results[honest] = await trio.to_thread.run_sync(lambda: cli.run(
                        "get", cid_str(make_cid(RAW, reals[honest])), "--peer", addr[0], "-o", str(tmp_path / f"out-{honest}"),
                        "--timeout", "40s", check=False, timeout=WAIT))
                stop.set()
        return cli, results

    cli, results = trio.run(main)
    assert results[True].returncode == 0, results[True].stderr.decode()
    assert (tmp_path / "out-True").read_bytes() == reals[True]
    stored = _blocks_in(cli.home)
    assert make_cid(RAW, reals[True]) in stored and make_cid(RAW, stray) not in stored
    assert make_cid(RAW, reals[False]) not in stored
    err = results[False].stderr.decode().strip()
    assert results[False].returncode == 1 and len(err.splitlines()) == 1, err
    assert err.startswith("error: could not fetch") and "does not have block" in err, err
    assert "dropped 2 block(s) that were not the ones asked for" in err, err
    assert not (tmp_path / "out-False").exists()
