"""Issue 15: files addressed by what people see (a version CID, a design id), and the everyday
messages that say what is really wrong, in one line. Every check runs the real command line on
real homes; the gateway and `get --peer` run against a real daemon."""

from __future__ import annotations

import filecmp
import http.client
import json
import re
import shutil
import sqlite3
import subprocess
import sys

import pytest

from fabnode import cli as cli_module

from conftest import FABNODE, ROOT, Cli, cli_env
from daemons import STOP_DEADLINE_S, Daemon, start

EXAMPLE = ROOT / "examples" / "hand-pump"
UNKNOWN_RECORD = "bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
"""A DAG-CBOR CID no home in these tests knows."""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Lab A published the hand pump three times (v1, then v2 and v3 each with a changed README);
    lab B knows A's records (imported from a records-only export) but holds none of the files."""
    tmp = tmp_path_factory.mktemp("addressing")
    a, b = Cli(tmp / "a"), Cli(tmp / "b")
    a.run("init", "--name", "Lab A")
    b.run("init", "--name", "Lab B")
    work = tmp / "hand-pump"
    shutil.copytree(EXAMPLE, work)
    v1 = a.out("publish", str(work), "-m", "first")
    (work / "README.md").write_text(V2_README)
    v2 = a.out("publish", str(work), "-m", "longer handle", "--design", v1)
    v2_copy = tmp / "v2-copy"
    shutil.copytree(work, v2_copy)
    (work / "README.md").write_text(V3_README)
    v3 = a.out("publish", str(work), "-m", "thicker walls", "--design", v1)
    a.run("export", str(tmp / "records.car"), "--records-only")
    b.run("import", str(tmp / "records.car"))
    return {"a": a, "b": b, "design": v1, "v1": v1, "v2": v2, "v3": v3, "v2_dir": v2_copy, "v3_dir": work,
            "tmp": tmp}


TITLE = "Direct-action PVC hand pump"
"""The name in the example's okh.toml: the design's title."""
V2_README = "# Hand pump\n\nVersion two: a longer handle.\n"
V3_README = "# Hand pump\n\nVersion three: thicker walls.\n"


def _bundles(lab: Cli, design: str) -> dict[str, str]:
    return {v["version"]: v["bundle"] for v in lab.json("log", design)["versions"]}


def test_log_prints_each_versions_files_cid(world):
    """`log` shows the files CID (the bundle inside each version record) under each version."""
    a = world["a"]
    shown = a.out("log", world["design"])
    bundles = _bundles(a, world["design"])
    assert bundles[world["v2"]] == a.json("show", world["v2"])["body"]["bundle"]["/"]
    assert len(set(bundles.values())) == 3
    for version, bundle in bundles.items():
        assert re.search(rf"^{version} .*\n    files {bundle}$", shown, re.M), shown


def test_cat_ls_get_take_a_version_cid_or_a_design_id(world, tmp_path):
    a = world["a"]
    v1, v2, design = world["v1"], world["v2"], world["design"]
    assert a.run("cat", f"{v2}/README.md").stdout == V2_README.encode()
    # the design id (its first version's CID) means the newest canonical version's files
    assert a.run("cat", f"{design}/README.md").stdout == V3_README.encode()
    # the first version's own files: by the files CID `log` prints
    first_files = _bundles(a, design)[v1]
    assert a.run("cat", f"{first_files}/README.md").stdout == (EXAMPLE / "README.md").read_bytes()
    listing = a.json("ls", f"{design}/cad")
    assert [e["name"] for e in listing] == ["hand-pump.scad"]
    assert {e["name"] for e in a.json("ls", v2)} == {p.name for p in world["v2_dir"].iterdir()}
    out = a.run("get", v2, "-o", str(tmp_path / "v2"), cwd=tmp_path).stdout.decode().strip()
    assert out == str(tmp_path / "v2")
    assert (tmp_path / "v2" / "README.md").read_text() == V2_README
    assert not filecmp.dircmp(tmp_path / "v2", world["v2_dir"]).diff_files
    # without -o, the output is named as the user named it (not by the bundle's CID)
    a.run("get", design, cwd=tmp_path)
    assert (tmp_path / design / "README.md").read_text() == V3_README
    a.run("get", f"{design}/cad/hand-pump.scad", cwd=tmp_path)
    assert (tmp_path / "hand-pump.scad").read_bytes() == (EXAMPLE / "cad" / "hand-pump.scad").read_bytes()


@pytest.mark.parametrize("command", ["get", "ls", "cat"])
def test_an_unknown_version_or_design_is_said_so_with_what_to_do(world, command, tmp_path):
    line = world["a"].fails(command, f"{UNKNOWN_RECORD}/README.md")
    assert line == (f"error: no version or design {UNKNOWN_RECORD} is known here: sync with a peer that has it "
                    "('fabnode run'), or import an export that holds its records, then try again")


def test_a_record_that_is_not_a_version_is_not_files(world):
    a = world["a"]
    attestation = a.out("attest", world["v1"], "--result", "passed")
    assert a.fails("cat", f"{attestation}/README.md") == (
        f"error: {attestation} is an attestation record, not files: name a version, a design or a files CID "
        "(see 'fabnode log')")


def test_export_bundle_of_a_design_writes_its_head_files(world, tmp_path):
    """`export --bundle DESIGN` used to say "not complete": it writes the head's files as a
    plain CAR, which another lab imports and lists under the design's title."""
    a = world["a"]
    car = tmp_path / "pump.car"
    summary = a.json("export", str(car), "--bundle", world["design"])
    assert summary["bundles"] == 1 and car.stat().st_size == summary["bytes"]
    c = Cli(tmp_path / "c")
    c.run("init")
    imported = c.json("import", str(car))
    assert imported["bundles"] == [_bundles(a, world["design"])[world["v3"]]]


def test_export_bundle_of_files_not_held_says_to_fetch_them(world, tmp_path):
    b, design = world["b"], world["design"]
    bundle = _bundles(b, design)[world["v3"]]
    assert b.fails("export", str(tmp_path / "x.car"), "--bundle", design) == (
        f"error: the files {design} ({bundle}) are not all held here: fetch them first with "
        f"'fabnode get {design}' (through the daemon or --peer), then export again")


@pytest.mark.parametrize("command", ["ls", "cat"])
def test_reading_files_not_held_says_how_to_get_them(world, command):
    b, design = world["b"], world["design"]
    bundle = _bundles(b, design)[world["v3"]]
    assert b.fails(command, f"{design}/README.md") == (
        f"error: the files of {design} ({bundle}) are not held here: fetch them with "
        f"'fabnode get {design}/README.md' (through the daemon or --peer)")


def test_export_into_a_missing_folder_names_that_folder(world, tmp_path):
    out = tmp_path / "no-such-folder" / "lab-a.car"
    line = world["a"].fails("export", str(out))
    assert line == f"error: cannot write {out}: folder {out.parent} does not exist (create it, or choose another path)"
    assert "fabnode-partial" not in line


def test_importing_a_have_file_says_what_it_is(world):
    b, tmp = world["b"], world["tmp"]
    b.run("have", str(tmp / "lab-b.have"))
    assert world["a"].fails("import", str(tmp / "lab-b.have")) == (
        "error: lab-b.have is a have file (the list of what a lab holds), not an export: on the lab that has the "
        "designs run 'fabnode export OUT.car --for lab-b.have', then import OUT.car here")


def test_imported_bundles_list_under_the_designs_title_with_their_size(world, tmp_path):
    """`ls` showed imported and seeded bundles as "0 B  import:lab-a.car/": now the design's title
    and the bytes of the bundle's blocks; a row an older version recorded as 0 is computed."""
    a = world["a"]
    car = tmp_path / "lab-a.car"
    a.run("export", str(car), "--design", world["design"])
    c = Cli(tmp_path / "c")
    c.run("init")
    c.run("import", str(car))
    db = c.home / "fabnode.db"
    with sqlite3.connect(db) as conn:
        block_bytes = conn.execute("SELECT sum(size) FROM blocks").fetchone()[0]
    bundles = set(_bundles(a, world["design"]).values())
    listed = c.json("ls")
    assert {e["cid"] for e in listed} == bundles
    assert all(e["name"] == TITLE and e["type"] == "directory" for e in listed)
    # the two bundles share most blocks: each one's size is its own blocks' bytes, none is 0
    assert all(0 < e["size"] <= block_bytes for e in listed) and sum(e["size"] for e in listed) > block_bytes
    plain = c.out("ls")
    assert "import:" not in plain and " 0 B" not in plain and TITLE + "/" in plain
    sizes = {e["cid"]: e["size"] for e in listed}
    conn = sqlite3.connect(db)  # a home from before issue 15: imported and seeded rows say 0 bytes
    with conn:
        conn.execute("UPDATE pins SET size = 0, source = 'seeded:' || source")
    conn.close()
    again = c.json("ls")
    assert {e["cid"]: e["size"] for e in again} == sizes and all(e["name"] == TITLE for e in again)


def test_a_distrusted_key_is_reported_as_distrusted(world, tmp_path):
    """Lab B attests v2; lab A distrusts B's key: `reputation` says so, not "no trust path"."""
    a, b, tmp = world["a"], world["b"], world["tmp"]
    b.run("attest", world["v2"], "--result", "passed", "-m", "built it")
    b.run("export", str(tmp_path / "b.car"), "--records-only")
    a.run("import", str(tmp_path / "b.car"))
    b_did = b.json("id")["did"]
    shown = a.out("reputation", world["v2"])
    assert "no trust path from you to this key" in shown
    a.run("vouch", b_did, "--distrust", "-m", "sold us a broken pump")
    shown = a.out("reputation", world["v2"])
    assert re.search(r"^  Lab B \(did:key:z6Mk…\w{4}\) built it: passed — not counted: you distrust this key$", shown,
                     re.M), shown
    assert "no trust path" not in shown


def test_search_without_hits_says_so(world):
    a = world["a"]
    assert a.out("search", "windmill") == ("no design known here matches 'windmill' (try other words; "
                                          "'fabnode designs' lists them all)")
    assert a.json("search", "windmill") == []
    assert TITLE in a.out("search", "pump")


def test_publishing_a_file_says_a_design_is_a_folder(world):
    csv = world["v3_dir"] / "bom.csv"
    assert world["a"].fails("publish", str(csv), "-m", "parts") == (
        f"error: cannot publish {csv}: it is a file, and a design is a folder: put it in a folder (with an "
        "okh.toml) and publish the folder, or store it alone with 'fabnode add'")


# ------------------------------------------------------------------ with a running daemon


@pytest.fixture(scope="module")
def daemon_a(world):
    daemon = Daemon(world["a"])
    http_addr = json.loads((world["a"].home / "daemon.json").read_text())["http"]
    yield {"daemon": daemon, "http": http_addr}
    assert daemon.stop() < STOP_DEADLINE_S and daemon.proc.returncode == 0


def _request(http_addr: str, path: str) -> tuple[int, dict, bytes]:
    host, port = http_addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_gateway_redirects_a_version_for_good_and_a_design_for_now(world, daemon_a):
    """/ipfs/VERSION/path → 301 to the version's files (immutable, as the files are); /ipfs/DESIGN/path
    → 302 to the head's files, never cached (the head moves); the query string goes along."""
    http_addr = daemon_a["http"]
    bundles = _bundles(world["a"], world["design"])
    status, headers, _ = _request(http_addr, f"/ipfs/{world['v1']}/README.md")
    assert status == 302  # v1 is the design's first version: its CID is the design id
    assert headers["location"] == f"/ipfs/{bundles[world['v3']]}/README.md"
    assert headers["cache-control"] == "no-cache"
    status, headers, _ = _request(http_addr, f"/ipfs/{world['v2']}/cad/hand-pump.scad?format=raw")
    assert status == 301 and "immutable" in headers["cache-control"]
    assert headers["location"] == f"/ipfs/{bundles[world['v2']]}/cad/hand-pump.scad?format=raw"
    status, _, body = _request(http_addr, headers["location"])
    assert status == 200 and body == (EXAMPLE / "cad" / "hand-pump.scad").read_bytes()
    status, _, body = _request(http_addr, f"/ipfs/{UNKNOWN_RECORD}/README.md")
    assert status == 404 and body.decode().startswith(f"no version or design {UNKNOWN_RECORD} is known here")
    assert body.count(b"\n") == 1


def test_get_a_version_from_a_peer_by_its_version_cid(world, daemon_a, tmp_path):
    """Lab B knows the records but not the files: `get VERSION --peer A` resolves the version to
    its files here, then fetches them (it used to ask the peer for the record's CID)."""
    b = world["b"]
    out = tmp_path / "from-a"
    b.run("get", world["v2"], "-o", str(out), "--peer", daemon_a["daemon"].addr,
          "--timeout", "60s", timeout=120)
    assert (out / "README.md").read_text() == V2_README
    assert not filecmp.dircmp(out, world["v2_dir"]).diff_files


def test_get_a_design_through_the_daemon(world, daemon_a, daemons, tmp_path):
    """Lab B's own daemon, linked to A's: `get DESIGN` hands it the head's files CID to fetch."""
    b = world["b"]
    start(daemons, b, "--bootstrap", daemon_a["daemon"].addr).wait_for(f"peer connected: {daemon_a['daemon'].peer_id}")
    out = tmp_path / "head"
    result = b.run("get", world["design"], "-o", str(out), "--timeout", "60s", timeout=120)
    assert re.match(r"fetched [1-9]\d* block\(s\) from ", result.stderr.decode()), result.stderr
    assert (out / "README.md").read_text() == V3_README
    assert not filecmp.dircmp(out, world["v3_dir"]).diff_files


# ------------------------------------------------------------------ publishing unchanged files


def test_publishing_the_heads_files_again_is_refused_unless_said_why(cli: Cli, tmp_path):
    folder = tmp_path / "pump"
    shutil.copytree(EXAMPLE, folder)
    design = cli.out("publish", str(folder), "-m", "first")
    cli.run("attest", design, "--result", "passed", "-m", "pumps 20 l/min")
    before = cli.json("reputation", design)
    assert before["version"] == design and before["verdict"] == "recommended"
    line = cli.fails("publish", str(folder), "-m", "again", "--design", design)
    assert line == (f"error: nothing changed: {folder} holds exactly the files of the design's current head "
                    f"{design}; nothing was published (to sign these same files again, say why with --same-files "
                    "\"REASON\")")
    assert cli.json("reputation", design) == before  # the attested version is still the one judged
    assert len(cli.json("log", design)["versions"]) == 1
    assert cli.fails("publish", str(folder), "-m", "again", "--design", design, "--same-files", " ") == (
        "error: --same-files needs a reason: say why these unchanged files deserve a new version")
    result = cli.run("publish", str(folder), "-m", "relicensed", "--design", design, "--same-files",
                     "the manifest's licence was wrong on the first signing")
    again = result.stdout.decode().strip()
    assert "attestations of that version do not carry over" in result.stderr.decode()
    message = next(v["message"] for v in cli.json("log", design)["versions"] if v["version"] == again)
    assert message == f"relicensed (same files as {design}: the manifest's licence was wrong on the first signing)"
    (folder / "README.md").write_text("changed\n")
    cli.run("publish", str(folder), "-m", "changed", "--design", design)  # changed files need no reason


# ------------------------------------------------------------------ help


def test_a_bare_fabnode_prints_the_full_help(tmp_path):
    shown = subprocess.run([str(FABNODE)], env=cli_env(tmp_path / "home"), capture_output=True, timeout=60)
    assert shown.returncode == 0 and shown.stderr == b""
    text = shown.stdout.decode()
    assert text.startswith("usage: fabnode") and "positional arguments" in text
    assert all(f"\n    {name}" in text for name in cli_module.COMMANDS)


def test_every_commands_summary_is_a_whole_sentence_in_the_top_level_help():
    """The top-level help showed each docstring's first line, cutting some mid-sentence."""
    shown = subprocess.run([sys.executable, "-m", "fabnode", "--help"], capture_output=True, timeout=60,
                           env={**cli_env(None), "COLUMNS": "100"})
    flowing = " ".join(shown.stdout.decode().split())
    for name, spec in cli_module.COMMANDS.items():
        doc = cli_module._cleandoc(spec.fn.__doc__)
        line = cli_module.summary(doc)
        first_paragraph = " ".join(doc.split("\n\n")[0].split())
        assert first_paragraph.startswith(line) and line.endswith("."), (name, line)
        assert f"{name} {line}" in flowing, (name, line)


@pytest.mark.parametrize("doc, line", [
    ("Follow a design: it is fetched (within the\nbudget). Without DESIGN, list.", "Follow a design: it is fetched (within the budget)."),
    ("Should we build this? A personal score.\n\nMore.", "Should we build this? A personal score."),
    ("One line only.", "One line only."),
])
def test_summary_is_the_first_sentence_however_wrapped(doc, line):
    assert cli_module.summary(doc) == line


# ------------------------------------------------------------------ the pure part of the distrust message


def test_distrusted_keys_names_who_distrusts_them():
    """Only distrust from a key this node trusts counts, and its own distrust comes first."""
    from fabnode.protocol.reputation import (Attestation, Vouch, compute_trust, distrusted_keys, explain,
                                             score_version)

    me, friend, stranger = "did:key:z6MkMe", "did:key:z6MkFriend", "did:key:z6MkStranger"
    liar, rogue, both = "did:key:z6MkLiar", "did:key:z6MkRogue", "did:key:z6MkBoth"
    vouches = [Vouch(me, friend, "trusted", 1), Vouch(me, liar, "distrusted", 1),
               Vouch(friend, rogue, "distrusted", 1), Vouch(stranger, both, "distrusted", 1),
               Vouch(friend, both, "distrusted", 1), Vouch(me, both, "distrusted", 2)]
    trust = compute_trust(me, (), vouches)
    found = distrusted_keys(me, trust, vouches)
    assert found == {liar: (me,), rogue: (me, friend), both: (me,)}  # the stranger's word counts for nothing
    score = score_version([Attestation("bafy-l", liar, "built", "passed", "", 1),
                           Attestation("bafy-r", rogue, "built", "passed", "", 1),
                           Attestation("bafy-s", stranger, "built", "passed", "", 1)], trust)
    assert sorted(explain(score, found)) == sorted([
        "did:key:z6MkLiar built it: passed — not counted: you distrust this key",
        "did:key:z6MkRogue built it: passed — not counted: did:key:z6MkFriend, whom you trust, distrusts this key",
        "did:key:z6MkStranger built it: passed — not counted: no trust path from you to this key"])
