"""CID parity with ipfs-car 3.x: fabnode add must name content exactly as IPFS tools do.

Each case builds a tree, runs ``fabnode add`` (the real CLI) and ``ipfs-car pack`` over the
same path, and compares root CIDs; then reads everything back byte for byte.
"""

from __future__ import annotations

import filecmp
import os
import subprocess
from pathlib import Path

import pytest

from fabnode.protocol.unixfs import CHUNK_SIZE, FileBuilder

from conftest import TOOLS, Cli, ipfs_car_cid, write_random_file

MiB = 1 << 20

FILE_SIZES = {
    "empty": 0,
    "one-byte": 1,
    "exactly-1MiB": MiB,
    "1MiB-plus-1": MiB + 1,
    "few-MiB": 3 * MiB + 12345,
    "exactly-2MiB": 2 * MiB,
}


@pytest.mark.parametrize("name", FILE_SIZES)
def test_single_file_matches_ipfs_car_no_wrap(cli: Cli, ipfs_car, tmp_path, name):
    path = write_random_file(tmp_path / "in" / name, FILE_SIZES[name], seed=len(name))
    expected = ipfs_car_cid(ipfs_car, path, tmp_path, no_wrap=True)
    assert cli.out("add", str(path)) == expected
    assert cli.run("cat", expected).stdout == path.read_bytes()
    cli.run("get", expected, "-o", str(tmp_path / "back"))
    assert (tmp_path / "back").read_bytes() == path.read_bytes()


def _tree(root: Path, files: dict[str, int]) -> Path:
    for i, (rel, size) in enumerate(sorted(files.items())):
        write_random_file(root / rel, size, seed=i)
    return root


TREES = {
    "nested": {"a.txt": 10, "cad/pump.scad": 2000, "cad/parts/piston.scad": 700,
               "docs/img/photo.jpg": MiB + 77, "docs/index.md": 3, "z/y/x/w/deep.bin": 0},
    "non-ascii": {"Bombe à main/notice é.md": 40, "насос/чертёж.txt": 50, "ポンプ.scad": 60,
                  "Cusco – adaptación/ñandú.csv": 70},
    # Byte order differs from UTF-16 order (what a JavaScript sort would use): U+FF21 sorts
    # before U+1F600 in UTF-8 bytes (EF.. < F0..) but after it in UTF-16 (FF21 > D83D).
    "byte-vs-char-order": {"\uff21.txt": 1, "\U0001f600.txt": 2, "a.txt": 3, "Z.txt": 4,
                           "\u00e9.txt": 5, "e\u0301.txt": 6, "\uffff.txt": 7},
    "one-file-folder": {"only.md": 123},
    "many-files": {f"part-{i:03d}.stl": i * 37 for i in range(300)},
}


@pytest.mark.parametrize("name", TREES)
def test_directory_matches_ipfs_car(cli: Cli, ipfs_car, tmp_path, name):
    root = _tree(tmp_path / "in" / name, TREES[name])
    expected = ipfs_car_cid(ipfs_car, root, tmp_path)
    assert cli.out("add", str(root)) == expected
    out = tmp_path / "back"
    assert cli.out("get", expected, "-o", str(out)) == str(out)
    cmp = filecmp.dircmp(root, out)
    assert _same_tree(cmp), f"{root} and {out} differ"
    assert cli.out("fsck").endswith("the store is sound")


def _same_tree(cmp: filecmp.dircmp) -> bool:
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(cmp.left, cmp.right, cmp.common_files, shallow=False)
    return not mismatch and not errors and all(_same_tree(sub) for sub in cmp.subdirs.values())


def test_dotfiles_and_empty_folders_are_left_out_like_ipfs_car(cli: Cli, ipfs_car, tmp_path):
    root = _tree(tmp_path / "in", {"README.md": 5, ".git/HEAD": 20, "cad/.cache": 3, "cad/a.scad": 9})
    (root / "empty" / "emptier").mkdir(parents=True)
    expected = ipfs_car_cid(ipfs_car, root, tmp_path)
    result = cli.json("add", str(root))
    assert result == {"cid": expected, "size": 14, "files": 2, "skipped_hidden": 2, "dropped_empty_dirs": 2}
    names = [e["name"] for e in cli.json("ls", expected)]
    assert names == ["README.md", "cad"]


def test_hidden_flag_keeps_dotfiles_like_ipfs_car_H(cli: Cli, ipfs_car, tmp_path):
    root = _tree(tmp_path / "in", {"README.md": 5, ".gitignore": 20})
    car = tmp_path / "h.car"
    expected = subprocess.run([str(ipfs_car), "pack", "-H", str(root), "--output", str(car)],
                              capture_output=True, check=True).stdout.decode().strip()
    assert cli.out("add", "--hidden", str(root)) == expected
    assert cli.run("cat", f"{expected}/.gitignore").stdout == (root / ".gitignore").read_bytes()


def _oracle_file_cid(path: Path, chunk_size: int, width: int) -> str:
    result = subprocess.run(["node", str(TOOLS / "unixfs-file.mjs"), str(path), str(chunk_size), str(width)],
                            capture_output=True, check=True, timeout=60)
    return result.stdout.decode().strip()


def _builder_cid(data: bytes, chunk_size: int, width: int) -> str:
    from fabnode.protocol.cid import cid_str

    builder = FileBuilder(width=width, chunk_size=chunk_size)
    for i in range(0, len(data), chunk_size):
        builder.add_chunk(data[i:i + chunk_size])
    _, root = builder.finish()
    return cid_str(root.cid)


# Leaf counts around every boundary of a width-3 tree: 1 leaf, a full node, one past it, a full
# second level (9), one past (10), a full third level (27) and one past (28), and more.
@pytest.mark.parametrize("leaves", [1, 2, 3, 4, 8, 9, 10, 12, 26, 27, 28, 40, 81, 82])
def test_balanced_layout_matches_ipld_unixfs_at_small_width(tmp_path, leaves):
    """Deep trees cheaply: the same layout at chunk size 7 and width 3 as @ipld/unixfs."""
    chunk, width = 7, 3
    data = bytes((i * 31 + leaves) % 251 for i in range(leaves * chunk - (leaves > 1)))
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert _builder_cid(data, chunk, width) == _oracle_file_cid(path, chunk, width)


@pytest.mark.slow
def test_file_needing_a_second_tree_level_matches_ipfs_car(cli: Cli, ipfs_car, tmp_path):
    """1025 chunks: more than one 1024-wide node, so the root sits two levels above the leaves.

    The file is sparse with a distinct marker at the start of every chunk, so each leaf differs
    (a misordered tree changes the CID) without writing a gigabyte of random data.
    """
    path = tmp_path / "big.bin"
    chunks = 1025
    with open(path, "wb") as f:
        for i in range(chunks):
            f.seek(i * CHUNK_SIZE)
            f.write(f"chunk {i}".encode())
        f.truncate(chunks * CHUNK_SIZE - 5)
    expected = ipfs_car_cid(ipfs_car, path, tmp_path, no_wrap=True)
    assert cli.out("add", str(path)) == expected
    entries = cli.json("ls", expected)
    assert entries == [{"name": expected, "cid": expected, "type": "file", "size": os.path.getsize(path)}]
