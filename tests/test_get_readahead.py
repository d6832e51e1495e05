"""`get` of a tree of 8 MiB or more reads and verifies its blocks in a second thread while it
writes the files (node/local/files.py, ``_read_ahead``): the real CLI on a real store."""

from __future__ import annotations

import filecmp
import os
import random
import sqlite3

from fabnode.protocol.cid import parse_cid

from conftest import Cli, damage_block, stored_block, write_random_file


def tree(root, seed: int):
    """Large files (several blocks each, one not a whole number of blocks), small ones, an empty
    one, in nested folders: 12 MiB in all, over READ_AHEAD_MIN_BYTES."""
    rng = random.Random(seed)
    write_random_file(root / "scans" / "a.bin", 5 << 20, seed)
    write_random_file(root / "scans" / "deeper" / "b.bin", (4 << 20) + 12345, seed + 1)
    for i in range(40):
        write_random_file(root / "notes" / f"n{i:02d}.txt", rng.randint(1, 70_000), seed + 2 + i)
    (root / "notes" / "empty.txt").write_bytes(b"")
    write_random_file(root / "z-last.bin", (2 << 20) + 1, seed + 99)
    return root


def same(a, b) -> bool:
    cmp = filecmp.dircmp(a, b)
    pending = [cmp]
    while pending:
        c = pending.pop()
        if c.left_only or c.right_only or c.funny_files:
            return False
        _, mismatch, errors = filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)
        if mismatch or errors:
            return False
        pending.extend(c.subdirs.values())
    return True


def test_a_large_tree_is_written_byte_for_byte(tmp_path):
    cli = Cli(tmp_path / "home")
    cli.run("init", "--name", "Lab")
    src = tree(tmp_path / "src", seed=14)
    cid = cli.out("add", str(src))
    out = tmp_path / "out"
    assert cli.out("get", cid, "-o", str(out)) == str(out)
    assert same(src, out)
    assert (out / "notes" / "empty.txt").read_bytes() == b""


def test_a_damaged_block_half_way_stops_the_get_and_leaves_nothing(tmp_path):
    """The reading thread finds the damage after earlier files were written: the error names the
    block, and the temporary folder (with what was written) is gone."""
    cli = Cli(tmp_path / "home")
    cli.run("init", "--name", "Lab")
    src = tree(tmp_path / "src", seed=15)
    cid = cli.out("add", str(src))
    leaf = cli.json("ls", cid + "/z-last.bin")[0]["cid"]
    conn = sqlite3.connect(cli.home / "fabnode.db")
    # z-last.bin is a 3-leaf file written last: damage its root node's first leaf instead,
    # so the files before it have been written when the damage is found
    from fabnode.protocol.dagpb import decode_node

    node = stored_block(conn, parse_cid(leaf))
    first_leaf = decode_node(node).links[0].cid
    data = bytearray(stored_block(conn, first_leaf))
    data[len(data) // 2] ^= 0xFF
    damage_block(conn, first_leaf, bytes(data))
    conn.close()
    out = tmp_path / "out"
    line = cli.fails("get", cid, "-o", str(out))
    assert "is damaged" in line
    assert sorted(os.listdir(tmp_path)) == ["home", "src"]  # no output, no temporary folder
