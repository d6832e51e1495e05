"""Broken and hostile input: each is refused with one clear line and changes nothing stored."""

from __future__ import annotations

import os
import sqlite3
import subprocess

import pytest

from fabnode.protocol.cid import DAG_PB, RAW, cid_str, make_cid
from fabnode.protocol.dagpb import PBLink, encode_node
from fabnode.protocol.unixfs import DIRECTORY_DATA
from fabnode.storage import BlockStore, open_db

from conftest import FABNODE, Cli, cli_env, damage_block, stored_block, write_random_file


def _store_state(cli: Cli) -> list[tuple]:
    """Every row of the store, to show that a refusal changed nothing."""
    conn = sqlite3.connect(cli.home / "fabnode.db")
    try:
        return (conn.execute("SELECT cid, size, data, pack, pack_offset FROM blocks ORDER BY cid").fetchall()
                + conn.execute("SELECT * FROM packs ORDER BY id").fetchall()
                + conn.execute("SELECT * FROM pins ORDER BY cid").fetchall())
    finally:
        conn.close()


@pytest.fixture
def seeded(cli: Cli, tmp_path) -> Cli:
    """A home that already holds something, so we can check it is left untouched."""
    write_random_file(tmp_path / "existing" / "a.bin", 70_000, seed=9)
    cli.out("add", str(tmp_path / "existing"))
    return cli


def test_path_that_does_not_exist(seeded: Cli, tmp_path):
    before = _store_state(seeded)
    assert seeded.fails("add", str(tmp_path / "nope")) == f"error: cannot add {tmp_path / 'nope'}: no such file or folder"
    assert _store_state(seeded) == before


def _run_without_read_override(cli: Cli, *args: str) -> subprocess.CompletedProcess:
    """Root reads everything; drop the capabilities that let it, so file modes apply."""
    prefix = []
    if os.geteuid() == 0:
        caps = "-dac_override,-dac_read_search"
        prefix = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]
    return subprocess.run([*prefix, str(FABNODE), *args], env=cli_env(cli.home), capture_output=True, timeout=60)


@pytest.mark.parametrize("what", ["file", "folder"])
def test_unreadable_input(tmp_path, what):
    cli = Cli(tmp_path / "home")
    cli.run("init")
    design = tmp_path / "design"
    write_random_file(design / "ok.md", 10, seed=1)
    secret = design / "secret"
    if what == "file":
        write_random_file(secret, 10, seed=2)
    else:
        write_random_file(secret / "inner.txt", 10, seed=2)
    secret.chmod(0o000)
    before = _store_state(cli)
    result = _run_without_read_override(cli, "add", str(design))
    assert result.returncode == 1, result.stderr
    assert result.stderr.decode() == f"error: cannot read {secret}: permission denied\n"
    assert _store_state(cli) == before


@pytest.mark.parametrize("target", ["outside", "inside"])
def test_symlinks_inside_the_tree_are_refused(seeded: Cli, tmp_path, target):
    design = tmp_path / "design"
    write_random_file(design / "real.txt", 100, seed=4)
    outside = write_random_file(tmp_path / "private" / "id_rsa", 100, seed=5)
    (design / "link").symlink_to(outside if target == "outside" else design / "real.txt")
    before = _store_state(seeded)
    line = seeded.fails("add", str(design))
    assert line.startswith(f"error: cannot add {design / 'link'}: it is a symlink")
    assert "never stores symlinks" in line
    assert _store_state(seeded) == before


def test_top_level_symlink_is_followed_because_the_operator_named_it(cli: Cli, tmp_path):
    write_random_file(tmp_path / "real" / "x.txt", 10, seed=1)
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    assert cli.out("add", str(tmp_path / "alias")) == cli.out("add", str(tmp_path / "real"))


def test_fifo_is_refused(seeded: Cli, tmp_path):
    design = tmp_path / "design"
    design.mkdir()
    os.mkfifo(design / "pipe")
    before = _store_state(seeded)
    assert "it is not a regular file or folder" in seeded.fails("add", str(design))
    assert _store_state(seeded) == before


def test_names_that_cannot_be_written_back_are_refused(seeded: Cli, tmp_path):
    design = tmp_path / "design"
    write_random_file(design / "back\\slash.txt", 3, seed=1)
    before = _store_state(seeded)
    assert "contains '\\\\'" in seeded.fails("add", str(design))
    bad = tmp_path / "latin1"
    bad.mkdir()
    open(os.fsencode(bad) + b"/caf\xe9.txt", "wb").close()
    assert seeded.fails("add", str(bad)).endswith("its name is not valid UTF-8")
    assert _store_state(seeded) == before


def test_folder_of_more_than_1000_entries_is_added(seeded: Cli, tmp_path):
    """Once refused (fabnode wrote no HAMT); now a plain or HAMT folder by Helia's size rule
    (issue 16: tests/test_hamt_parity.py compares the CIDs)."""
    design = tmp_path / "slices"
    design.mkdir()
    for i in range(1001):
        (design / f"layer-{i:04d}.svg").write_bytes(b"")
    cid = seeded.out("add", str(design))
    assert len(seeded.out("ls", cid).splitlines()) == 1001


@pytest.mark.parametrize("text, message", [
    ("not-a-cid", "error: not a valid CID: 'not-a-cid'"),
    ("bafk2bzacedn5ddgz5eqpkwr3ewwnuhgcjyiylqrb43u6cxkfnzhegypbhhfyu", "uses hash blake2b-256"),
    ("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyka", "is not in this store"),
])
def test_malformed_or_unknown_cids(seeded: Cli, text, message):
    for command in ("ls", "cat", "get"):
        if command == "get" and message == "is not in this store":
            message = "is not held here, and no daemon is running to fetch it"  # get would fetch it
        assert message in seeded.fails(command, text)


def test_get_refuses_an_existing_output(seeded: Cli, tmp_path):
    cid = seeded.json("ls")[0]["cid"]
    existing = tmp_path / "already"
    existing.mkdir()
    (existing / "keep.txt").write_text("precious")
    assert seeded.fails("get", cid, "-o", str(existing)) == (
        f"error: {existing} already exists: fabnode get writes a new file or folder; choose another -o")
    assert os.listdir(existing) == ["keep.txt"] and (existing / "keep.txt").read_text() == "precious"
    (tmp_path / "file").write_text("mine")
    assert "already exists" in seeded.fails("get", cid, "-o", str(tmp_path / "file"))
    assert (tmp_path / "file").read_text() == "mine"
    assert "does not exist" in seeded.fails("get", cid, "-o", str(tmp_path / "no" / "such" / "dir"))


def test_damaged_block_is_named_by_fsck_and_cat_fails_cleanly(cli: Cli, tmp_path):
    design = tmp_path / "design"
    write_random_file(design / "big.bin", 3 * (1 << 20), seed=6)
    write_random_file(design / "small.txt", 100, seed=7)
    root = cli.out("add", str(design))
    leaf = make_cid(RAW, (design / "big.bin").read_bytes()[1 << 20: 2 << 20])
    conn = sqlite3.connect(cli.home / "fabnode.db")
    data = stored_block(conn, leaf)
    damage_block(conn, leaf, bytes([data[0] ^ 1]) + data[1:])
    conn.close()
    result = cli.run("fsck", check=False)
    assert result.returncode == 1
    assert f"damaged block {cid_str(leaf)}" in result.stdout.decode().splitlines()
    as_json = cli.run("fsck", "--json", check=False)
    assert as_json.returncode == 1 and '"damaged": [\n    "%s"\n  ]' % cid_str(leaf) in as_json.stdout.decode()
    expected = f"error: block {cid_str(leaf)} is damaged: its bytes no longer hash to its CID (run 'fabnode fsck')"
    cat = cli.run("cat", f"{root}/big.bin", check=False)
    assert cat.returncode == 1 and cat.stderr.decode() == expected + "\n"
    assert len(cat.stdout) < 3 * (1 << 20)  # it stopped; it never passed on the bad block
    assert cli.run("cat", f"{root}/small.txt").stdout == (design / "small.txt").read_bytes()
    out = tmp_path / "out"
    assert cli.fails("get", root, "-o", str(out)) == expected
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def _put_hostile_directory(cli: Cli, names: list[str]) -> str:
    store = BlockStore(open_db(cli.home / "fabnode.db"))
    leaf = make_cid(RAW, b"owned\n")
    links = [PBLink(leaf, name, 6) for name in names]
    block = encode_node(links, DIRECTORY_DATA)
    cid = make_cid(DAG_PB, block)
    with store.write_transaction():
        store.put(leaf, b"owned\n")
        store.put(cid, block)
    store.db.conn.close()
    return cid_str(cid)


@pytest.mark.parametrize("names, problem", [
    (["..", "ok"], "the name '..'"),
    (["."], "the name '.'"),
    ([""], "an empty name"),
    (["../../escape"], "contains '/'"),
    (["/etc/passwd"], "contains '/'"),
    (["a\\..\\b"], "contains '\\\\'"),
    (["nul\x00byte"], "contains '\\x00'"),
    (["twice", "twice"], "appears twice"),
])
def test_get_never_writes_outside_its_output(cli: Cli, tmp_path, names, problem):
    cid = _put_hostile_directory(cli, names)
    work = tmp_path / "work" / "inner"
    work.mkdir(parents=True)
    line = cli.fails("get", cid, "-o", str(work / "out"))
    assert problem in line and "nothing was written" in line
    assert os.listdir(work) == [] and os.listdir(tmp_path / "work") == ["inner"]


def test_get_removes_its_temporary_folder_when_a_block_is_missing(cli: Cli, tmp_path):
    missing = make_cid(RAW, b"not here")
    store = BlockStore(open_db(cli.home / "fabnode.db"))
    block = encode_node([PBLink(make_cid(RAW, b""), "a", 0), PBLink(missing, "b", 8)], DIRECTORY_DATA)
    with store.write_transaction():
        store.put(make_cid(RAW, b""), b"")
        store.put(make_cid(DAG_PB, block), block)
    root = cid_str(make_cid(DAG_PB, block))
    line = cli.fails("get", root, "-o", str(tmp_path / "out"))
    assert line.startswith(f"error: {root} is not completely held here (block {cid_str(missing)} is missing), "
                           "and no daemon is running to fetch it")
    assert sorted(os.listdir(tmp_path)) == ["home"]
