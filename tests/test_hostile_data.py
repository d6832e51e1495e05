"""Hostile data (issue 12): declared sizes that lie, decompression bombs, and fields too long to
be honest — refused at import and at fetch with one line, nothing kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT, Cli
from fabnode.protocol.car import encode_header, encode_section
from fabnode.protocol.cid import DAG_PB, RAW, cid_str, make_cid, parse_cid
from fabnode.protocol.dagpb import PBLink, encode_node
from fabnode.protocol.errors import InvalidBlock, InvalidCID
from fabnode.protocol.unixfs import EXPANSION_SLACK, MAX_EXPANSION, file_node_data, dag_sizes

EXAMPLE = ROOT / "examples" / "hand-pump"


def _file_node(children: list[tuple[bytes, int, int]], declared: list[int] | None = None) -> tuple[bytes, bytes]:
    """(cid, block) of a dag-pb file node over (cid, block length, content size) children."""
    sizes = declared if declared is not None else [c[2] for c in children]
    block = encode_node([PBLink(cid, "", length) for cid, length, _ in children], file_node_data(sum(sizes), sizes))
    return make_cid(DAG_PB, block), block


def bomb() -> tuple[bytes, dict[bytes, bytes]]:
    """1.1 MB of blocks declaring a 1 TiB file: 1,024 links to a node of 1,024 links to one 1 MiB leaf."""
    leaf = bytes(range(256)) * 4096
    leaf_cid = make_cid(RAW, leaf)
    mid_cid, mid = _file_node([(leaf_cid, len(leaf), len(leaf))] * 1024)
    top_cid, top = _file_node([(mid_cid, len(mid), 1 << 30)] * 1024)
    return top_cid, {top_cid: top, mid_cid: mid, leaf_cid: leaf}


def _car(path: Path, root: bytes, blocks: dict[bytes, bytes]) -> Path:
    path.write_bytes(encode_header([root]) + b"".join(encode_section(c, d) for c, d in blocks.items()))
    return path


def test_a_bomb_is_measured_in_linear_time_and_refused():
    root, blocks = bomb()
    with pytest.raises(InvalidBlock, match=r"expands to 1099511627776 bytes of files from only \d+ distinct bytes"):
        dag_sizes(blocks.__getitem__, root)


def test_repetition_within_the_documented_factor_is_fine():
    leaf = b"\0" * (1 << 20)
    leaf_cid = make_cid(RAW, leaf)
    n = 60  # 60 MiB of zeros from one 1 MiB block: within 64x + 64 MiB
    root, block = _file_node([(leaf_cid, len(leaf), len(leaf))] * n)
    sizes = dag_sizes({root: block, leaf_cid: leaf}.__getitem__, root)
    assert sizes.content_bytes == n << 20 and sizes.unique_bytes == len(block) + len(leaf)
    assert sizes.content_bytes <= MAX_EXPANSION * sizes.unique_bytes + EXPANSION_SLACK


def test_a_file_node_whose_blocksizes_disagree_with_its_children_is_refused():
    leaf = b"a" * 1000
    leaf_cid = make_cid(RAW, leaf)
    root, block = _file_node([(leaf_cid, 1000, 1000)] * 2, declared=[1000, 5000])
    with pytest.raises(InvalidBlock, match=f"declares 5000 bytes under {cid_str(leaf_cid)}, which holds 1000"):
        dag_sizes({root: block, leaf_cid: leaf}.__getitem__, root)


def test_an_honest_bundle_measures_its_files(cli):
    bundle = cli.out("add", str(EXAMPLE))
    from fabnode.node.home import Home

    store = Home(cli.home).open_store()
    sizes = dag_sizes(store.get, parse_cid(bundle))
    files = [p for p in EXAMPLE.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert sizes.content_bytes == sum(p.stat().st_size for p in files)


def test_import_refuses_a_bomb_and_keeps_nothing(cli, tmp_path):
    root, blocks = bomb()
    before = cli.json("fsck")["blocks"], cli.json("ls")
    line = cli.fails("import", str(_car(tmp_path / "bomb.car", root, blocks)))
    assert "refused as a decompression bomb" in line and cid_str(root) in line
    assert (cli.json("fsck")["blocks"], cli.json("ls")) == before


def test_get_from_a_peer_refuses_to_keep_a_bomb(tmp_path, attackers):
    from test_hostile_peers import Attacker

    root, blocks = bomb()
    liar = Attacker("serve-car", str(_car(tmp_path / "bomb.car", root, blocks)))
    attackers.append(liar)
    lab = Cli(tmp_path / "lab")
    lab.run("init")
    line = lab.fails("get", cid_str(root), "--peer", liar.addr, "-o", str(tmp_path / "out"))
    assert "refused to keep it" in line and "decompression bomb" in line
    assert lab.json("ls") == [] and not (tmp_path / "out").exists()


def test_cid_text_is_bounded_before_decoding():
    from fabnode.protocol.cid import parse_cid as parse

    with pytest.raises(InvalidCID, match="is 100000 characters long"):
        parse("z" + "2" * 99_999)


def test_attestation_test_names_are_capped():
    from fabnode.protocol.records import MAX_LIST_TEXT, RecordRejected, check_body

    author = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
    body = {"subject": make_cid(0x71, b"v"), "predicate": "built", "result": "passed", "tests": ["x" * 47_000]}
    with pytest.raises(RecordRejected, match=f"body.tests has an entry longer than {MAX_LIST_TEXT} characters"):
        check_body("attestation", author, body)


def test_get_refuses_before_writing_when_the_output_cannot_hold_it(cli, tmp_path, monkeypatch):
    """plan_get (which runs before anything is written) measures the files against the free
    space; the real full-disk case through the CLI is in tests/test_failures.py."""
    import shutil
    from collections import namedtuple

    from fabnode.node.local.files import plan_get
    from fabnode.node.home import Home
    from fabnode.protocol.errors import DiskFull

    bundle = parse_cid(cli.out("add", str(EXAMPLE)))
    store = Home(cli.home).open_store()
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 30, 1 << 30, 100_000))
    with pytest.raises(DiskFull, match="disk full: writing .*out needs .* on the output's filesystem"):
        plan_get(store, bundle, [], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_peers_met_by_chance_are_bounded_and_bootstrap_peers_kept():
    from fabnode.node.service.effects import ForgetPeer
    from fabnode.node.service.peers import MAX_REMEMBERED, PeerBook
    from fabnode.storage import PeerStore, open_db

    db = open_db(memory=True)
    peers = PeerStore(db.conn)
    book = PeerBook()
    events = book.remember("boot", ("/ip4/127.0.0.1/tcp/1",), "bootstrap", 0)[1]
    for i in range(MAX_REMEMBERED + 50):  # throwaway peer ids dialling in
        events += book.remember(f"p{i:05}", (), "inbound", 1000 + i)[1]
    for effect in events:  # what the daemon writes
        peers.forget(effect.peer) if isinstance(effect, ForgetPeer) else peers.save(effect)
    ids = {row.peer_id for row in peers.all()}
    assert len(ids) == MAX_REMEMBERED + 1 and "boot" in ids
    assert "p00000" not in ids and f"p{MAX_REMEMBERED + 49:05}" in ids  # the least recently seen went


def test_a_bomb_already_in_the_store_is_neither_served_nor_written(cli, tmp_path, daemons):
    """Blocks of a bomb left in a store (say, by an older version): the gateway answers 502 in one
    line instead of `Content-Length: 1099511627776`, and `get` refuses before writing."""
    import json
    import urllib.error
    import urllib.request

    from daemons import start
    from fabnode.node.home import Home

    root, blocks = bomb()
    store = Home(cli.home).open_store()
    with store.write_transaction():
        for cid, data in blocks.items():
            store.put(cid, data)
    store.close()
    line = cli.fails("get", cid_str(root), "-o", str(tmp_path / "out"))
    assert "refused as a decompression bomb" in line and not (tmp_path / "out").exists()
    node = start(daemons, cli)
    base = "http://" + json.loads((cli.home / "daemon.json").read_text())["http"]
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{base}/ipfs/{cid_str(root)}", timeout=10)
    assert info.value.code == 502 and b"decompression bomb" in info.value.read()
    assert node.proc.poll() is None


def test_add_keeps_a_repetitive_file_but_says_peers_will_refuse_it(cli, tmp_path):
    zeros = tmp_path / "padding.img"
    with open(zeros, "wb") as f:  # 200 MiB of zeros: one unique 1 MiB block
        f.truncate(200 << 20)
    result = cli.run("add", str(zeros))
    note = result.stderr.decode().strip()
    assert note.startswith("note: other nodes will refuse to fetch or import this: ") and "decompression bomb" in note
    assert cli.json("ls")[0]["cid"] == result.stdout.decode().strip()  # kept, as asked
    quiet = cli.run("add", str(EXAMPLE))
    assert quiet.stderr == b""
