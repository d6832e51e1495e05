"""Carrying designs on a USB stick: export, have, import, with the real CLI and real files."""

from __future__ import annotations

import filecmp
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, TOOLS, Cli, stored_block, write_random_file

EXAMPLE = ROOT / "examples" / "hand-pump"


def car_check(path: Path) -> tuple[list[str], list[str]]:
    """(roots, block CIDs) of a CAR, as the npm @ipld/car reads it after re-hashing every block."""
    out = subprocess.run(["node", str(TOOLS / "car-verify.mjs"), str(path)], capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr.decode()
    lines = out.stdout.decode().splitlines()
    return lines[0].split()[1:], lines[1:]


def state(cli: Cli) -> list:
    """Every row a store holds that an import could change."""
    conn = sqlite3.connect(cli.home / "fabnode.db")
    try:
        return [conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
                for t in ("blocks", "pins", "records", "versions", "version_parents", "designs", "attestations",
                          "vouches")]
    finally:
        conn.close()


def design_state(cli: Cli, design: str) -> tuple:
    log = cli.json("log", design)
    versions = {v["version"] for v in log["versions"]}
    blocks = set()
    conn = sqlite3.connect(cli.home / "fabnode.db")
    for v in log["versions"]:
        blocks |= {cid for cid in _dag(conn, v["bundle"])}
    conn.close()
    return versions, frozenset(blocks), json.dumps([v["attestations"] for v in log["versions"]])


def _dag(conn, root: str) -> set:
    from fabnode.protocol.cid import cid_str, parse_cid
    from fabnode.protocol.dag import walk

    def get_block(cid: bytes) -> bytes | None:
        data = stored_block(conn, cid)
        assert data is not None, f"block {cid_str(cid)} missing"
        return data

    return {cid_str(visit.cid) for visit in walk(get_block, parse_cid(root))}


@pytest.fixture
def two_labs(tmp_path):
    a, b = Cli(tmp_path / "lab-a"), Cli(tmp_path / "lab-b")
    a.run("init", "--name", "Lab A")
    b.run("init", "--name", "Lab B")
    return a, b


def test_export_everything_and_import_it_elsewhere(two_labs, tmp_path):
    a, b = two_labs
    published = a.json("publish", str(EXAMPLE), "-m", "first design")
    a.out("attest", published["version"], "--result", "passed", "-m", "works")
    car = tmp_path / "stick" / "lab-a.car"
    car.parent.mkdir()
    summary = a.json("export", str(car))
    assert summary["records"] == 3 and summary["bundles"] == 1  # a version, an attestation, the lab record
    roots, blocks = car_check(car)
    assert len(roots) == 1 and len(blocks) == summary["blocks"] + 1  # + the index
    imported = b.json("import", str(car))
    assert imported["records"] == {"new": 3, "known": 0} and imported["bundles"] == [published["bundle"]]
    assert imported["rejected"] == []
    assert b.json("log", published["design"])["versions"][0]["attestations"] == {"built/passed": 1}
    b.run("get", published["bundle"], "-o", str(tmp_path / "copy"))
    assert not filecmp.dircmp(EXAMPLE, tmp_path / "copy").diff_files
    assert b.out("fsck").endswith("the store is sound")
    before = state(b)
    again = b.json("import", str(car))
    assert again["records"] == {"new": 0, "known": 3} and again["blocks"]["new"] == 0
    assert state(b) == before  # importing twice changes nothing


def test_records_only_and_design_exports(two_labs, tmp_path):
    a, b = two_labs
    one = a.json("publish", str(EXAMPLE), "-m", "first design")
    other = tmp_path / "other"
    write_random_file(other / "part.stl", 300_000, seed=1)
    two = a.json("publish", str(other), "-m", "a bracket", "--license", "MIT")
    news = tmp_path / "news.car"
    summary = a.json("export", "--records-only", str(news))
    assert summary == {"path": str(news), "records": 3, "bundles": 0, "blocks": 3, "bytes": summary["bytes"]}
    assert summary["bytes"] < 4096
    assert len(car_check(news)[1]) == 4  # index + two versions + the lab record, each re-hashed by @ipld/car
    b.out("import", str(news))
    assert {d["design"] for d in b.json("designs")} == {one["design"], two["design"]}
    assert "is not in this store" in b.fails("cat", f"{one['bundle']}/okh.toml")
    only = tmp_path / "one.car"
    assert a.json("export", "--design", one["design"], str(only))["records"] == 1
    assert one["bundle"] in car_check(only)[1]
    b.out("import", str(only))
    assert b.run("cat", f"{one['bundle']}/okh.toml").stdout == (EXAMPLE / "okh.toml").read_bytes()


def test_plain_bundle_car_unpacks_with_ipfs_car(two_labs, ipfs_car, tmp_path):
    a, _ = two_labs
    cid = a.out("add", str(EXAMPLE))
    car = tmp_path / "x.car"
    a.out("export", "--bundle", cid, str(car))
    assert car_check(car)[0] == [cid]
    out = tmp_path / "unpacked"
    subprocess.run([str(ipfs_car), "unpack", str(car), "--output", str(out)], check=True, capture_output=True)
    cmp = filecmp.dircmp(EXAMPLE, out)
    assert not cmp.left_only and not cmp.right_only and not cmp.diff_files


def test_a_car_from_ipfs_car_imports_and_can_be_published(two_labs, ipfs_car, tmp_path):
    _, b = two_labs
    car = tmp_path / "packed.car"
    root = subprocess.run([str(ipfs_car), "pack", str(EXAMPLE), "--output", str(car)], check=True,
                          capture_output=True).stdout.decode().strip()
    result = b.json("import", str(car))
    assert result["bundles"] == [root] and result["records"] == {"new": 0, "known": 0}
    assert root in {p["cid"] for p in b.json("ls")}
    assert b.run("cat", f"{root}/okh.toml").stdout == (EXAMPLE / "okh.toml").read_bytes()
    b.run("get", root, "-o", str(tmp_path / "design"))
    assert b.json("publish", str(tmp_path / "design"), "-m", "from a CAR")["bundle"] == root


def test_incremental_export_sends_only_what_is_new(two_labs, tmp_path):
    """Lab A changes one 5 MB file of a 50 MB design; the export for lab B carries just that."""
    a, b = two_labs
    design = tmp_path / "big-design"
    shutil.copytree(EXAMPLE, design)
    for i in range(10):
        write_random_file(design / "scans" / f"scan-{i}.bin", 5_000_000, seed=i)
    first = a.json("publish", str(design), "-m", "first design")
    full = tmp_path / "full.car"
    a.out("export", str(full))
    b.out("import", str(full))
    have = tmp_path / "lab-b.have"
    held = b.json("have", str(have))["blocks"]
    assert have.stat().st_size < 1024 + 32 * held  # records, bundles, and 32 bytes a block held
    write_random_file(design / "scans" / "scan-3.bin", 5_000_000, seed=99)
    second = a.json("publish", str(design), "-m", "rescanned the piston", "--design", first["design"])
    delta = tmp_path / "for-b.car"
    summary = a.json("export", "--for", str(have), str(delta))
    assert summary["records"] == 1
    new_file_blocks = 5_000_000 + 5 * 64  # the new file's chunks and their section headers
    new_dirs = 4096  # the changed root and scans/ directory nodes, the file's own node
    assert delta.stat().st_size <= new_file_blocks + new_dirs + 2048, delta.stat().st_size
    car_check(delta)
    b.out("import", str(delta))
    assert design_state(b, first["design"]) == design_state(a, first["design"])
    assert b.json("log", first["design"])["heads"] == [second["version"]]


@pytest.mark.parametrize("content, reason", [
    (b"not cbor at all \xff", "is not a fabnode have file"),
    (None, "no type 'fabnode-have'"),
    ("version2", "have file of version 2"),
    ("bad-records", "malformed have file"),
])
def test_a_broken_have_file_is_refused(two_labs, tmp_path, content, reason):
    from fabnode.protocol.dagcbor import encode

    a, _ = two_labs
    a.json("publish", str(EXAMPLE), "-m", "first design")
    good = {"type": "fabnode-have", "version": 1, "node": "x", "created": 1, "records": b"", "bundles": []}
    if content is None:
        content = encode({"type": "something-else"})
    elif content == "version2":
        content = encode(good | {"version": 2})
    elif content == "bad-records":
        content = encode(good | {"records": b"\x01" * 33})
    have = tmp_path / "odd.have"
    have.write_bytes(content)
    assert reason in a.fails("export", "--for", str(have), str(tmp_path / "out.car"))
    assert not (tmp_path / "out.car").exists()


def test_have_file_format(two_labs, tmp_path):
    from fabnode.protocol.dagcbor import decode

    a, _ = two_labs
    published = a.json("publish", str(EXAMPLE), "-m", "first design")
    have = tmp_path / "a.have"
    assert a.json("have", str(have))["records"] == 2  # the version and the lab record
    value = decode(have.read_bytes())
    assert value["type"] == "fabnode-have" and value["version"] == 1 and value["node"] == a.json("id")["did"]
    from fabnode.protocol.cid import parse_cid

    digests = [value["records"][i:i + 32] for i in range(0, len(value["records"]), 32)]
    assert len(value["records"]) == 64 and parse_cid(published["version"])[4:] in digests  # 32-byte digests
    assert value["bundles"] == [parse_cid(published["bundle"])]
