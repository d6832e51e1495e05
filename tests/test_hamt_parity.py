"""HAMT directories against the independent tools (issue 16): ``fabnode add`` gives Helia's
default CID for folders on both sides of its 256 KiB shard rule, reads the HAMTs Helia and
ipfs-car write, and the two documented differences from ipfs-car are pinned as such: its
count rule (a HAMT above 1,000 entries) and its lone-folder rule (``pack d`` where ``d`` holds
only ``cad/`` gives ``cad``'s CID)."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import pytest

from fabnode.protocol.car import Block, read_car
from fabnode.protocol.cid import cid_str
from fabnode.protocol.unixfs import decode

from conftest import TOOLS, Cli, ipfs_car_cid
from daemons import start

NODE24 = TOOLS / "node_modules" / ".bin" / "node"

FOLDERS = {
    # name: (entries, name for entry i): tiny files, one per entry
    "1000-short": (1000, lambda i: f"s{i:04d}.txt"),      # below both rules: all three agree
    "1001-short": (1001, lambda i: f"s{i:04d}.txt"),      # ipfs-car shards (> 1000), Helia not (46 KB of links)
    "1000-long": (1000, lambda i: f"{i:04d}-" + "l" * 236 + ".txt"),  # 1000 x 281 B > 256 KiB: Helia shards
    # both shard: 6,000 x ~49 B of links > 256 KiB and > 1,000 entries; ~23 entries a root
    # bucket, so every bucket is a sub-shard and some hold sub-shards in turn (three levels)
    "6000": (6000, lambda i: f"part-{i}.stl"),
}


def helia(folder: Path, car: Path | None = None) -> str:
    args = [str(NODE24), str(TOOLS / "helia-add.mjs"), str(folder)] + ([str(car)] if car else [])
    return subprocess.run(args, capture_output=True, timeout=300, check=True).stdout.decode().strip()


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Each folder once, with Helia's CID and CAR, and fabnode's CID from a shared home."""
    base = tmp_path_factory.mktemp("hamt")
    cli = Cli(base / "home")
    cli.run("init", "--name", "Shard Lab")
    out = {}
    for key, (count, name) in FOLDERS.items():
        folder = base / key
        folder.mkdir()
        for i in range(count):
            (folder / name(i)).write_bytes(b"%d\n" % i)
        car = base / f"{key}.helia.car"
        out[key] = {"folder": folder, "helia": helia(folder, car), "helia_car": car, "fabnode": cli.out("add", str(folder))}
    return cli, base, out


@pytest.mark.parametrize("key", FOLDERS)
def test_add_gives_helias_default_cid(made, key):
    assert made[2][key]["fabnode"] == made[2][key]["helia"]


def ipfs_car_pack(ipfs_car: Path, folder: Path, car: Path) -> str:
    return subprocess.run([str(ipfs_car), "pack", str(folder), "--output", str(car)], check=True,
                          capture_output=True, timeout=300).stdout.decode().strip()


def test_ipfs_car_differs_only_where_its_count_rule_does(made, ipfs_car, tmp_path):
    """ipfs-car shards above 1,000 entries, Helia (and fabnode) once the links pass 256 KiB."""
    cli, _, out = made
    below = out["1000-short"]
    assert ipfs_car_pack(ipfs_car, below["folder"], tmp_path / "below.car") == below["fabnode"] == below["helia"]
    assert ipfs_car_pack(ipfs_car, out["1000-long"]["folder"], tmp_path / "long.car") != out["1000-long"]["fabnode"]
    car = tmp_path / "ipfs-car.car"
    theirs = ipfs_car_pack(ipfs_car, out["1001-short"]["folder"], car)
    assert theirs != out["1001-short"]["fabnode"]
    # and fabnode reads the HAMT ipfs-car (@ipld/unixfs) writes for 1,001 entries
    assert cli.json("import", str(car))["bundles"] == [theirs]
    listing = cli.out("ls", theirs).splitlines()
    assert len(listing) == 1001 and listing[0].endswith("s0000.txt")
    assert cli.run("cat", f"{theirs}/s0777.txt").stdout == b"777\n"


def test_helia_hamt_of_6000_entries_imports_lists_cats_and_exports_unchanged(made, tmp_path):
    made_here = made[2]["6000"]
    count, name = FOLDERS["6000"]
    lab = Cli(tmp_path / "lab")
    lab.run("init")
    root = made_here["helia"]
    assert lab.json("import", str(made_here["helia_car"]))["bundles"] == [root]
    listing = lab.json("ls", root)
    assert len(listing) == count and sorted(e["name"] for e in listing) == sorted(name(i) for i in range(count))
    assert lab.run("cat", f"{root}/{name(count - 7)}").stdout == b"%d\n" % (count - 7)
    (entry,) = lab.json("ls", f"{root}/{name(3)}")  # one name looked up along its buckets
    assert entry["name"] == name(3) and entry["size"] == 2
    exported = tmp_path / "again.car"
    lab.run("export", "--bundle", root, str(exported))
    # the same blocks in the same depth-first order under the same root: byte for byte Helia's CAR
    assert exported.read_bytes() == made_here["helia_car"].read_bytes()
    # three levels: more shard nodes than the root and its 256 sub-shards
    shards = [b for b in read_car([exported.read_bytes()]) if isinstance(b, Block) and b.cid[1] == 0x70
              and decode(b.cid, b.data).shard is not None]
    assert len(shards) > 1 + 256


def test_a_hamt_written_out_as_files_adds_back_to_the_same_cid(made, tmp_path):
    cli, _, out = made
    root = out["1000-long"]["fabnode"]
    cli.run("get", root, "-o", str(tmp_path / "out"))
    assert cli.out("add", str(tmp_path / "out")) == root


def test_lone_folder_rule_ipfs_car_roots_at_the_subfolder_fabnode_and_helia_at_the_folder(made, ipfs_car, tmp_path):
    """``ipfs-car pack d`` where d holds only cad/ (or .git and design/: dotfiles are skipped)
    gives the subfolder's CID; fabnode, like Helia and Kubo, gives d's own."""
    cli = made[0]
    for layout in ({"cad/pump.scad": b"cube(1);\n"}, {".git/HEAD": b"ref: main\n", "design/pump.scad": b"cube(2);\n"}):
        d = tmp_path / f"d{len(layout)}"
        for rel, data in layout.items():
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            (d / rel).write_bytes(data)
        sub = d / next(rel.split("/")[0] for rel in layout if not rel.startswith("."))
        ours = cli.out("add", str(d))
        assert ours == helia(d)
        assert ipfs_car_cid(ipfs_car, d, tmp_path) == cli.out("add", str(sub)) != ours
        assert [line.split()[-1] for line in cli.out("ls", ours).splitlines()] == [sub.name + "/"]


def test_a_peer_and_a_browser_read_hamt_folders_from_a_daemon(made, daemons, tmp_path):
    """get over the network follows a path through the sub-shards (and a whole HAMT's DAG); the
    gateway resolves a name inside a HAMT and lists a HAMT folder."""
    cli, _, out = made
    daemon = start(daemons, cli)
    other = Cli(tmp_path / "other")
    other.run("init")
    big, count, name = out["6000"]["fabnode"], *FOLDERS["6000"]
    other.run("get", f"{big}/{name(4321)}", "--peer", daemon.addr, "-o", str(tmp_path / "one.stl"))
    assert (tmp_path / "one.stl").read_bytes() == b"4321\n"
    long_root = out["1000-long"]["fabnode"]
    other.run("get", long_root, "--peer", daemon.addr, "-o", str(tmp_path / "long"))
    assert sorted(p.name for p in (tmp_path / "long").iterdir()) == sorted(FOLDERS["1000-long"][1](i) for i in range(1000))
    assert other.out("add", str(tmp_path / "long")) == long_root
    http = json.loads((cli.home / "daemon.json").read_text())["http"]
    with urllib.request.urlopen(f"http://{http}/ipfs/{big}/{name(777)}", timeout=30) as response:
        assert response.status == 200 and response.read() == b"777\n"
    # a trustless CAR for the path carries the root, the sub-shards on the name's buckets, the file
    with urllib.request.urlopen(f"http://{http}/ipfs/{big}/{name(777)}?format=car", timeout=30) as response:
        sections = [e for e in read_car([response.read()]) if isinstance(e, Block)]
    path_blocks = [decode(e.cid, e.data) for e in sections[:-1]]
    assert cid_str(sections[0].cid) == big and all(node.shard is not None for node in path_blocks)
    assert 2 <= len(sections) <= 4 and sections[-1].data == b"777\n"
    with urllib.request.urlopen(f"http://{http}/ipfs/{long_root}/", timeout=30) as response:
        page = response.read().decode()
    assert page.count("<li>") == 1000 and FOLDERS["1000-long"][1](999) in page
    # dag-scope=entity on a HAMT folder: the folder's own blocks (its root and every sub-shard),
    # none of its entries — what a client needs to list it (trustless gateway spec)
    with urllib.request.urlopen(f"http://{http}/ipfs/{big}?format=car&dag-scope=entity", timeout=30) as response:
        sections = [e for e in read_car([response.read()]) if isinstance(e, Block)]
    nodes = [decode(e.cid, e.data) for e in sections]
    assert cid_str(sections[0].cid) == big and all(node.shard is not None for node in nodes)
    assert len(sections) > 1 and len({e.cid for e in sections}) == len(sections)
