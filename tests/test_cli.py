"""The command line as an operator uses it: separate processes, real homes, exact outputs."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from fabnode.protocol.identity import ed25519_from_did

from conftest import FABNODE, ROOT, Cli, cli_env, write_random_file


def _raw_public(path: Path) -> bytes:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_init_creates_private_keys_and_prints_identity(tmp_path):
    cli = Cli(tmp_path / "lab")
    ident = cli.json("init", "--name", "Fab Lab Nairobi")
    assert len(ident.pop("recovery")["words"]) == 24  # shown once, by the init that made it (test_recovery.py)
    assert set(ident) == {"did", "peer_id", "name"} and ident["name"] == "Fab Lab Nairobi"
    assert ident["did"].startswith("did:key:z6Mk")
    assert ed25519_from_did(ident["did"]) == _raw_public(cli.home / "author.key")
    for key in ("author.key", "node.key"):
        assert stat.S_IMODE((cli.home / key).stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.home.stat().st_mode) == 0o700
    assert cli.json("id") == ident
    plain = cli.out("id").splitlines()
    assert plain == ["name     Fab Lab Nairobi", f"did      {ident['did']}", f"peer id  {ident['peer_id']}"]


def test_peer_id_is_the_one_libp2p_computes(cli: Cli):
    from libp2p.crypto.ed25519 import Ed25519PublicKey
    from libp2p.peer.id import ID

    expected = ID.from_pubkey(Ed25519PublicKey.from_bytes(_raw_public(cli.home / "node.key"))).to_base58()
    assert cli.json("id")["peer_id"] == expected
    assert expected.startswith("12D3KooW")


def test_init_never_replaces_keys_and_updates_the_name(cli: Cli):
    before = {k: (cli.home / k).read_bytes() for k in ("author.key", "node.key")}
    first = cli.json("id")
    again = cli.json("init", "--name", "Taller Cusco")
    assert again == {**first, "name": "Taller Cusco"}
    assert {k: (cli.home / k).read_bytes() for k in before} == before
    assert cli.json("init") == again  # no --name: nothing changes


def test_home_option_and_environment(tmp_path):
    home = tmp_path / "elsewhere"
    env = cli_env(None)
    made = subprocess.run([str(FABNODE), "--home", str(home), "init", "--json"], env=env, capture_output=True, check=True)
    shown = subprocess.run([str(FABNODE), "id", "--json"], env={**env, "FABNODE_HOME": str(home)},
                           capture_output=True, check=True)
    assert {k: v for k, v in json.loads(made.stdout).items() if k != "recovery"} == json.loads(shown.stdout)


def test_commands_without_a_home_say_how_to_make_one(tmp_path):
    cli = Cli(tmp_path / "nothing-here")
    for args in (("id",), ("ls",), ("add", str(ROOT / "README.md")), ("fsck",)):
        line = cli.fails(*args)
        assert line == f"error: no fabnode home at {cli.home}: run 'fabnode init' (or pass --home)"
    assert not cli.home.exists()


def test_misuse_exits_2(cli: Cli):
    assert "invalid choice: 'frobnicate'" in cli.fails("frobnicate", code=2)
    assert "the following arguments are required: path" in cli.fails("add", code=2)


def test_help_does_not_import_libp2p_or_the_store():
    """`fabnode --help` must stay fast: the heavy imports happen inside commands only."""
    probe = (
        "import sys, cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'libp2p', 'trio', 'sqlite_utils', 'multiformats',"
        " 'cryptography', 'click', 'libipld', 'nacl'})\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, check=True, cwd=ROOT).stdout.decode()
    assert out.strip().endswith("HEAVY []"), out


def test_add_ls_cat_get_roundtrip(cli: Cli, tmp_path):
    design = tmp_path / "pump"
    write_random_file(design / "cad" / "body.scad", 5000, seed=1)
    (design / "README.md").write_text("# Pump\n", encoding="utf-8")
    cid = cli.out("add", str(design))
    assert cid.startswith("bafybei")
    listing = cli.json("ls", cid)
    assert [(e["name"], e["type"], e["size"]) for e in listing] == [("README.md", "file", 7), ("cad", "directory", None)]
    assert cli.out("ls", f"{cid}/cad").endswith("4.9 KiB  body.scad")
    assert cli.run("cat", f"{cid}/README.md").stdout == b"# Pump\n"
    assert cli.run("cat", f"/ipfs/{cid}/cad/body.scad").stdout == (design / "cad" / "body.scad").read_bytes()
    pins = cli.json("ls")
    assert pins == [{"name": "pump", "cid": cid, "type": "directory", "size": 5007}]
    # default output name: the last path segment, or the CID, in the current directory
    work = tmp_path / "work"
    work.mkdir()
    assert cli.run("get", f"{cid}/cad", cwd=work).stdout.decode().strip() == "cad"
    assert (work / "cad" / "body.scad").read_bytes() == (design / "cad" / "body.scad").read_bytes()
    assert cli.run("get", cid, cwd=work).stdout.decode().strip() == cid
    assert (work / cid / "README.md").read_text() == "# Pump\n"
    assert cli.json("get", f"{cid}/README.md", "-o", str(work / "r.md")) == {"path": str(work / "r.md")}
    assert sorted(os.listdir(work)) == sorted(["cad", cid, "r.md"])  # no temporary leftovers


def test_add_is_idempotent_and_fsck_reports_counts(cli: Cli, tmp_path):
    f = write_random_file(tmp_path / "f.bin", 3 * (1 << 20) + 5, seed=3)
    assert cli.out("add", str(f)) == cli.out("add", str(f))
    report = cli.json("fsck")  # one record: the lab's own, made by init
    assert report == {"ok": True, "blocks": 5, "bytes": report["bytes"], "pins": 1, "damaged": [], "missing": [],
                      "records": 1, "invalid_records": [], "index_damage": [], "database_damage": [],
                      "unindexed": [], "repaired": [], "pack_damage": [], "reclaimable": []}
    assert report["bytes"] > 3 * (1 << 20)


def test_cat_of_a_directory_is_a_clear_error(cli: Cli, tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("x")
    cid = cli.out("add", str(tmp_path / "d"))
    assert cli.fails("cat", cid) == f"error: {cid} is a directory: use 'fabnode ls' or 'fabnode get'"
    assert cli.fails("ls", f"{cid}/x/y") == f"error: {cid}/x is a file, not a directory"
    assert cli.fails("cat", f"{cid}/nope") == f"error: no entry 'nope' in {cid}"


def test_an_add_killed_half_way_leaves_nothing_visible(cli: Cli, tmp_path):
    """The whole add is one transaction: SIGKILL in the middle, and the store is as before."""
    import signal
    import time

    design = tmp_path / "design"
    write_random_file(design / "a.bin", 200 << 20, seed=11)
    before = cli.json("fsck")
    proc = subprocess.Popen([str(FABNODE), "add", str(design)], env=cli_env(cli.home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    packs = cli.home / "packs"
    deadline = time.monotonic() + 60
    while sum(p.stat().st_size for p in packs.glob("*.pack")) <= 20 << 20:  # blocks are being written
        assert proc.poll() is None, "the add finished before it could be interrupted"
        assert time.monotonic() < deadline, "the add never started writing"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    after = cli.json("fsck")
    tail = after.pop("reclaimable")  # the killed add's bytes past the committed end: garbage, cut by the next add
    assert tail and all("past its committed end" in note or "no index row" in note for note in tail)
    before.pop("reclaimable")
    assert after == before and after["ok"]
    assert cli.json("ls") == []
    assert cli.out("add", str(design)).startswith("bafybei")  # and a rerun completes
