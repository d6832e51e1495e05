"""CARs from other IPFS tools (issue 16): CARv2, Kubo-style CIDv0, rootless CARs, and
``publish CID`` for a bundle already in the store (protocol/car.py, node/local/sneakernet.py,
node/local/commons.py).

The foreign files come from independent writers: ipfs-car 3.1 (CARv1, also rootless on stdout),
ipfs-unixfs-importer + @ipld/car with CIDv0 (Kubo's shape), and a CARv2 wrapper that @ipld/car's
own CARv2 reader must read back identically (test-tools/car-foreign.mjs). The hostile CARv2 headers
are built here, byte by byte, after the IPLD carv2 spec.
"""

from __future__ import annotations

import filecmp
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from fabnode.protocol.car import (
    V2_PRAGMA, Block, CarError, CarReader, End, Header, NEED_DATA, encode_header, encode_section, read_car,
)
from fabnode.protocol.cid import DAG_PB, RAW, cid_str, make_cid, parse_cid
from fabnode.protocol.dagpb import PBLink, decode_node, encode_node
from fabnode.protocol.unixfs import DIRECTORY_DATA

from conftest import IPFS_CAR, ROOT, TOOLS, Cli, write_random_file
from test_sneakernet import state

NODE = TOOLS / "node_modules" / ".bin" / "node"  # Node 24: ipfs-unixfs-importer 17 wants a recent Node
FOREIGN = TOOLS / "car-foreign.mjs"
EXAMPLE = ROOT / "examples" / "hand-pump"


def _node(*args: str) -> list[str]:
    result = subprocess.run([str(NODE), str(FOREIGN), *args], capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().split()


# ---------------------------------------------------------------- pure: the reader


def _raw(data: bytes) -> tuple[bytes, bytes]:
    return make_cid(RAW, data), data


HELLO = _raw(b"hello carv2\n")
WORLD = _raw(b"world\n")
INNER = encode_header([HELLO[0]]) + encode_section(*HELLO) + encode_section(*WORLD)


def carv2(inner: bytes = INNER, *, padding: bytes = bytes(5), data_offset: int | None = None,
          data_size: int | None = None, index_offset: int | None = None, index: bytes = b"\x80\x08garbage",
          pragma: bytes = V2_PRAGMA) -> bytes:
    """pragma, 40-byte header (characteristics, data offset, data size, index offset: u64 LE), padding,
    the CARv1, the index (by default bytes that are no index at all: it is only a hint)."""
    start = len(pragma) + 40 + len(padding)
    header = (bytes(16) + (start if data_offset is None else data_offset).to_bytes(8, "little")
              + (len(inner) if data_size is None else data_size).to_bytes(8, "little")
              + ((start + len(inner)) if index_offset is None else index_offset).to_bytes(8, "little"))
    return pragma + header + padding + inner + index


def _events(data: bytes, *, ipfs_tools: bool = True, step: int | None = None) -> list:
    reader = CarReader(ipfs_tools=ipfs_tools)
    events = []
    for i in range(0, len(data), step or len(data) or 1):
        reader.feed(data[i:i + (step or len(data))])
        while (event := reader.next_event()) is not NEED_DATA:
            events.append(event)
    reader.feed_eof()
    while not isinstance(event := reader.next_event(), End):
        events.append(event)
    return events


@pytest.mark.parametrize("step", [None, 1, 7])
def test_carv2_yields_its_inner_carv1_whatever_the_index_says(step):
    assert _events(carv2(), step=step) == [Header((HELLO[0],), 2), Block(*HELLO), Block(*WORLD)]


def test_carv2_without_index_and_with_trailing_padding():
    assert _events(carv2(index_offset=0, index=bytes(3)))[1:] == [Block(*HELLO), Block(*WORLD)]


def test_a_peers_stream_is_still_carv1_only():
    with pytest.raises(CarError, match=r"^this is a CARv2 file; only 'fabnode import' reads CARv2"):
        _events(carv2(), ipfs_tools=False)


HOSTILE_V2 = [
    ("bad pragma (version 2 with roots)",
     encode_header([HELLO[0]]).replace(b"\x67version\x01", b"\x67version\x02") + bytes(40),
     "CAR header says version 2 but is not the CARv2 pragma (exactly the 11 bytes 0a a1 67 76 65 72 73 69 6f 6e 02)"),
    ("header truncated", V2_PRAGMA + bytes(20),
     "truncated CARv2: the file ends inside its 40-byte header"),
    ("data offset inside the header", carv2(data_offset=30),
     "CARv2 data offset 30 points inside the pragma and header (the data starts at byte 51 or later)"),
    ("data offset beyond the file", carv2(data_offset=10_000, index_offset=0),
     f"CARv2 data offset 10000 is beyond the end of the file ({len(carv2())} bytes)"),
    ("data size 0", carv2(data_size=0, index_offset=0), "CARv2 data size is 0: the file holds no CARv1"),
    ("data size larger than the file", carv2(data_size=len(INNER) + 100, index_offset=0, index=b""),
     f"truncated CARv2: the file ends at byte {56 + len(INNER)} but its header says the data runs to "
     f"byte {56 + len(INNER) + 100}"),
    ("data size cutting a section", carv2(data_size=len(INNER) - 3, index_offset=0),
     f"section 2 at byte {56 + len(INNER) - len(encode_section(*WORLD))} runs past the end of the CARv2 data "
     f"(byte {56 + len(INNER) - 3}, from the header's data size)"),
    ("data size cutting the inner header", carv2(data_size=4, index_offset=0),
     "the CARv1 header inside the CARv2 runs past the end of the data (byte 60, from the data size)"),
    ("index beyond the file", carv2(index_offset=1 << 40),
     f"CARv2 index offset {1 << 40} is beyond the end of the file ({len(carv2())} bytes)"),
    ("index inside the data", carv2(index_offset=60),
     f"CARv2 index offset 60 points into the header or the data (bytes 0-{56 + len(INNER) - 1})"),
    ("a CARv2 inside a CARv2", carv2(carv2()), "the data of this CARv2 is another CARv2; it must be a CARv1"),
    ("inner header of version 2", carv2(encode_header([HELLO[0]]).replace(b"\x67version\x01", b"\x67version\x02")),
     "CAR header has version 2; only CARv1 (version 1) is read here"),
]


@pytest.mark.parametrize("name, data, message", HOSTILE_V2, ids=[c[0] for c in HOSTILE_V2])
def test_hostile_carv2_headers_are_refused_in_one_line(name, data, message):
    with pytest.raises(CarError) as caught:
        _events(data)
    assert str(caught.value) == message


def test_cidv0_root_and_sections_become_cidv1():
    leaf = b"a kubo leaf"
    v0_leaf_block = encode_node([], b"\x08\x02\x12\x0b" + leaf + b"\x18\x0b")  # a dag-pb file leaf
    v0_leaf = b"\x12\x20" + hashlib.sha256(v0_leaf_block).digest()
    folder = encode_node([PBLink(v0_leaf, "leaf.txt", len(v0_leaf_block))], DIRECTORY_DATA)
    v0_root = b"\x12\x20" + hashlib.sha256(folder).digest()
    from fabnode.protocol.dagcbor import Link, encode
    from fabnode.protocol.varint import encode_varint
    header = encode({"roots": [Link(v0_root)], "version": 1})
    data = (encode_varint(len(header)) + header + encode_varint(34 + len(folder)) + v0_root + folder
            + encode_varint(34 + len(v0_leaf_block)) + v0_leaf + v0_leaf_block)
    events = list(read_car([data], ipfs_tools=True))
    root_v1, leaf_v1 = make_cid(DAG_PB, folder), make_cid(DAG_PB, v0_leaf_block)
    assert events == [Header((root_v1,)), Block(root_v1, folder), Block(leaf_v1, v0_leaf_block)]
    assert decode_node(folder).links[0].cid == leaf_v1  # links inside dag-pb nodes too
    forged = data[:-1] + b"!"
    with pytest.raises(CarError, match="does not match its CID"):
        list(read_car([forged], ipfs_tools=True))
    with pytest.raises(CarError, match="CAR header root 1"):  # a peer's stream: CIDv1 only, as before
        list(read_car([data]))


# ---------------------------------------------------------------- the CLI, with independent writers


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict:
    """A lab holding one published design, and foreign CARs of two small designs."""
    tmp = tmp_path_factory.mktemp("car-input")
    lab = Cli(tmp / "home")
    lab.run("init", "--name", "Importing Lab")
    kubo_dir = shutil.copytree(EXAMPLE, tmp / "kubo-pump")
    write_random_file(kubo_dir / "cad" / "casting.bin", 300_000, seed=16)  # two 256 KiB chunks, as Kubo cuts
    packed_dir = tmp / "packed"
    write_random_file(packed_dir / "cad" / "frame.bin", 70_000, seed=17)
    (packed_dir / "okh.toml").write_text((EXAMPLE / "okh.toml").read_text(encoding="utf-8").split("\nreadme")[0]
                                         + "\n", encoding="utf-8")
    qm = _node("kubo", str(kubo_dir), str(tmp / "kubo.car"))[0]
    subprocess.run([str(IPFS_CAR), "pack", str(packed_dir), "--output", str(tmp / "packed.car")],
                   capture_output=True, timeout=120, check=True)
    v2 = _node("v2", str(tmp / "packed.car"), str(tmp / "packed-v2.car"))
    with open(tmp / "rootless.car", "wb") as out:  # what `ipfs-car pack DIR > f.car` writes
        subprocess.run([str(IPFS_CAR), "pack", str(packed_dir)], stdout=out, timeout=120, check=True)
    return {"tmp": tmp, "lab": lab, "kubo_dir": kubo_dir, "packed_dir": packed_dir, "qm": qm,
            "packed_root": v2[1]}


def test_a_kubo_car_with_cidv0_is_imported_as_cidv1_and_published(work):
    lab, qm = work["lab"], work["qm"]
    assert qm.startswith("Qm")
    imported = lab.json("import", str(work["tmp"] / "kubo.car"))
    assert imported["bundles"] == [cid_str(parse_cid(qm))] and imported["bundles"][0].startswith("bafybei")
    out = work["tmp"] / "kubo-out"
    lab.run("get", imported["bundles"][0], "-o", str(out))
    assert not filecmp.dircmp(work["kubo_dir"], out).diff_files
    assert (out / "cad" / "casting.bin").read_bytes() == (work["kubo_dir"] / "cad" / "casting.bin").read_bytes()
    published = lab.json("publish", qm, "-m", "as it came from Kubo")  # the Qm form names it too
    assert published["bundle"] == imported["bundles"][0]


def test_a_carv2_is_imported_by_its_inner_carv1(work):
    lab = work["lab"]
    imported = lab.json("import", str(work["tmp"] / "packed-v2.car"))
    assert imported["bundles"] == [work["packed_root"]]  # ipfs-car's root, read through the v2 wrapper
    assert imported["blocks"]["new"] >= 3
    assert lab.run("cat", f"{work['packed_root']}/cad/frame.bin").stdout == \
        (work["packed_dir"] / "cad" / "frame.bin").read_bytes()


def test_a_rootless_car_gets_a_hint_and_imports_with_root(work):
    lab, root = work["lab"], work["packed_root"]
    rootless = work["tmp"] / "rootless.car"
    before = state(lab)
    assert lab.fails("import", str(rootless)) == (
        "error: rootless.car: the CAR header names no root (ipfs-car pack writes none when its output goes to "
        "stdout): pack again with 'ipfs-car pack DIR --output FILE.car', or name the root: "
        "'fabnode import rootless.car --root CID'")
    elsewhere = make_cid(RAW, b"not in that file")
    assert lab.fails("import", str(rootless), "--root", cid_str(elsewhere)) == \
        f"error: rootless.car: root {cid_str(elsewhere)} given with --root is not in the file"
    assert state(lab) == before
    assert lab.json("import", str(rootless), "--root", root)["bundles"] == [root]


def test_hostile_carv2_files_change_nothing(work):
    lab = work["lab"]
    before = state(lab)
    for name, data, message in (HOSTILE_V2[3], HOSTILE_V2[6], HOSTILE_V2[8]):
        path = work["tmp"] / "hostile-v2.car"
        path.write_bytes(data)
        assert lab.fails("import", str(path)) == f"error: hostile-v2.car: {message}", name
    assert state(lab) == before


def test_publish_cid_publishes_an_added_folder_and_refuses_what_is_not_a_design(work):
    lab, tmp = work["lab"], work["tmp"]
    pump = lab.out("add", str(EXAMPLE))
    published = lab.json("publish", pump, "-m", "from the store")
    assert published["bundle"] == pump
    body = lab.json("show", published["version"])["body"]
    assert body["bundle"] == {"/": pump} and body["title"] == "Direct-action PVC hand pump"  # okh.toml was read
    bare = tmp / "bare"
    (bare / "cad").mkdir(parents=True)
    (bare / "cad" / "x.scad").write_text("cube(1);\n")
    no_manifest = lab.out("add", str(bare))
    a_file = lab.out("add", str(bare / "cad" / "x.scad"))
    (bare / "okh.toml").write_text((EXAMPLE / "okh.toml").read_text(encoding="utf-8").replace('"OTRL-4"', '"OTRL-9"'),
                                   encoding="utf-8")
    off_schema = lab.out("add", str(bare))
    missing = cid_str(make_cid(DAG_PB, b"never stored"))
    before = state(lab)
    assert lab.fails("publish", no_manifest, "-m", "x") == (
        f"error: cannot publish {no_manifest}: the folder has no okh.toml at its top (a published design "
        "carries its Open Know-How manifest)")
    assert lab.fails("publish", off_schema, "-m", "x") == (  # the stored okh.toml is checked as a folder's is
        "error: okh.toml does not follow the OKH-LOSH schema at technology-readiness-level: 'OTRL-9' is not one of "
        "'OTRL-1', 'OTRL-2', 'OTRL-3', 'OTRL-4', 'OTRL-5', 'OTRL-6'; fix it, or publish anyway with --force")
    assert lab.fails("publish", a_file, "-m", "x") == (
        f"error: cannot publish {a_file}: it is a file, and a design is a folder (with an okh.toml)")
    assert lab.fails("publish", missing, "-m", "x") == (
        f"error: cannot publish {missing}: it is not held here (add the folder, import a CAR or "
        f"'fabnode get {missing}' first)")
    assert state(lab) == before


@pytest.mark.parametrize("section, message", [
    (b"\x12", "section 1 at byte {at}: its CID runs past the end of the 1-byte section"),
    (b"\x12\x21" + bytes(40), "section 1 at byte {at}: a CIDv0 must be a 32-byte sha2-256 multihash"),
])
def test_broken_cidv0_sections(section, message):
    from fabnode.protocol.varint import encode_varint

    head = encode_header([HELLO[0]])
    data = head + encode_varint(len(section)) + section + encode_section(*HELLO)
    for step in (None, 1):
        with pytest.raises(CarError) as caught:
            _events(data, step=step)
        assert str(caught.value) == message.format(at=len(head))
