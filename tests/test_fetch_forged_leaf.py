"""A peer that sends a forged leaf (issue 14: leaves are hashed in the block writer's thread,
not as they are parsed): the real CLI against a hostile serving process on 127.0.0.1."""

from __future__ import annotations

import random
from pathlib import Path

from conftest import Cli
from fabnode.protocol.car import encode_header, encode_section
from fabnode.protocol.cid import DAG_PB, RAW, cid_str, make_cid
from fabnode.protocol.dagpb import PBLink, encode_node
from fabnode.protocol.unixfs import file_node_data

LEAF = 1 << 20
LEAVES = 12
FORGED = 10
"""The 10th leaf is forged: past the first 8 MiB batch, so one batch was committed before it."""


def forged_file_car(path: Path, seed: int) -> tuple[bytes, list[bytes]]:
    """A CAR of a 12 MiB file (one dag-pb node over twelve 1 MiB raw leaves) whose 10th leaf's
    bytes were changed after its CID was made. Returns the root and the leaves' CIDs."""
    rng = random.Random(seed)
    leaves = [rng.randbytes(LEAF) for _ in range(LEAVES)]
    cids = [make_cid(RAW, leaf) for leaf in leaves]
    node = encode_node([PBLink(cid, "", LEAF) for cid in cids], file_node_data(LEAF * LEAVES, [LEAF] * LEAVES))
    root = make_cid(DAG_PB, node)
    bad = bytearray(leaves[FORGED - 1])
    bad[12345] ^= 0x01
    leaves[FORGED - 1] = bytes(bad)
    path.write_bytes(encode_header([root]) + encode_section(root, node)
                     + b"".join(encode_section(c, d) for c, d in zip(cids, leaves)))
    return root, cids


def test_a_forged_leaf_ends_the_fetch_keeping_only_what_came_before_it(tmp_path, attackers):
    from test_hostile_peers import Attacker

    root, cids = forged_file_car(tmp_path / "forged.car", seed=14)
    liar = Attacker("serve-car", str(tmp_path / "forged.car"))
    attackers.append(liar)
    lab = Cli(tmp_path / "lab")
    lab.run("init")
    line = lab.fails("get", cid_str(root), "--peer", liar.addr, "-o", str(tmp_path / "out"))
    # the session's own words, with the section (the root is section 1) and the peer's part
    assert f"bad CAR stream from the peer: section {FORGED + 1} at byte" in line
    assert f"block {cid_str(cids[FORGED - 1])} does not match its CID" in line
    assert "what arrived is kept, run again to resume" in line
    assert not (tmp_path / "out").exists() and lab.json("ls") == []
    # the root and the nine leaves before the forged one, verified and kept; nothing from it on
    report = lab.json("fsck")
    assert report["ok"] and report["blocks"] == 1 + FORGED - 1
    assert report["bytes"] > (FORGED - 1) * LEAF
