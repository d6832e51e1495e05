"""Disk use the operator controls (issue 15): `du`, `unpin`, `gc`, run as an operator runs them,
on real homes; gc under SIGKILL and beside an add and a fetch; leftovers of interrupted fetches;
the daemon's seeding budget."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from conftest import FABNODE, Cli, cli_env, write_random_file
from daemons import start, stored_blocks, wait_until


def _block_bytes(home: Path) -> tuple[int, int]:
    """(blocks, SUM(size)) straight from the database file."""
    conn = sqlite3.connect(f"file:{home / 'fabnode.db'}?mode=ro", uri=True, timeout=10)
    try:
        return tuple(conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM blocks").fetchone())
    finally:
        conn.close()


def _cids(home: Path) -> set[bytes]:
    conn = sqlite3.connect(f"file:{home / 'fabnode.db'}?mode=ro", uri=True, timeout=10)
    try:
        return {r[0] for r in conn.execute("SELECT cid FROM blocks")}
    finally:
        conn.close()


def _two_designs(lab: Cli, tmp_path: Path) -> tuple[dict, dict, Path]:
    """Two published designs that share one file (1.5 MiB), each with a file of its own."""
    shared = write_random_file(tmp_path / "shared.bin", 1_500_000, seed=1)
    designs = []
    for i, own in enumerate((300_000, 200_000)):
        folder = tmp_path / f"design{i}"
        folder.mkdir()
        (folder / "shared.bin").write_bytes(shared.read_bytes())
        write_random_file(folder / f"own{i}.bin", own, seed=10 + i)
        designs.append(lab.json("publish", str(folder), "-m", f"design {i}", "--license", "CERN-OHL-P-2.0"))
    return designs[0], designs[1], shared


def test_du_totals_equal_the_databases_block_bytes_and_shared_blocks_count_once(cli, tmp_path):
    one, two, _ = _two_designs(cli, tmp_path)
    extra = write_random_file(tmp_path / "notes.bin", 700_000, seed=3)
    cli.out("add", str(extra))
    report = cli.json("du")
    blocks, total = _block_bytes(cli.home)
    assert (report["blocks"], report["total_bytes"]) == (blocks, total)
    assert report["pinned_bytes"] + report["partial_bytes"] + report["unreferenced_bytes"] == total
    assert report["pinned_bytes"] == total and report["unreferenced_bytes"] == 0
    kinds = report["kinds"]
    assert kinds["published"]["pins"] == 2 and kinds["added"]["pins"] == 1
    assert kinds["added"]["bytes"] == 700_000
    assert kinds["published"]["bytes"] + kinds["added"]["bytes"] == total  # shared blocks once per kind
    rows = {d["design"]: d for d in report["designs"]}
    shared_bytes = 1_500_000
    for design, own in ((one["design"], 300_000), (two["design"], 200_000)):
        row = rows[design]
        assert row["bytes"] > shared_bytes + own  # the shared file counts in both designs ...
        assert own <= row["own_bytes"] < own + 1000  # ... and in neither's own bytes (plus its folder node)
    text = cli.out("du")
    assert "unreferenced" in text and one["design"] in text


def test_unpin_and_gc_free_exactly_the_unreferenced_blocks_and_keep_shared_ones(cli, tmp_path):
    one, two, shared = _two_designs(cli, tmp_path)
    before = cli.json("du")
    own_one = next(d["own_bytes"] for d in before["designs"] if d["design"] == one["design"])
    result = cli.json("unpin", one["design"])
    assert [p["cid"] for p in result["unpinned"]] == [one["bundle"]]
    assert result["gc_would_free_bytes"] == own_one
    assert _block_bytes(cli.home) == (before["blocks"], before["total_bytes"])  # unpin deletes nothing
    after_unpin = cli.json("du")
    assert after_unpin["unreferenced_bytes"] == own_one
    freed = cli.json("gc")
    assert freed["freed_bytes"] == own_one
    assert _block_bytes(cli.home) == (before["blocks"] - result["gc_would_free_blocks"], before["total_bytes"] - own_one)
    assert cli.json("fsck")["ok"]
    out = tmp_path / "out"
    cli.out("get", two["bundle"], "-o", str(out))
    assert (out / "shared.bin").read_bytes() == shared.read_bytes()
    assert "is not in this store" in cli.fails("cat", one["bundle"] + "/own0.bin")
    again = cli.json("gc")
    assert again["freed_blocks"] == 0 and cli.json("du")["unreferenced_bytes"] == 0
    text = cli.out("gc")
    assert text.startswith("freed 0 B (0 block(s)) in the store")


def test_unpin_refuses_what_it_cannot_name_in_one_line_and_changes_nothing(cli, tmp_path):
    one, two, _ = _two_designs(cli, tmp_path)
    before = cli.json("du")
    assert cli.fails("unpin", "not-a-cid").startswith("error: ")
    unknown = cli.fails("unpin", "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")
    assert "is not pinned here" in unknown
    cli.json("unpin", one["bundle"])
    assert cli.fails("unpin", one["version"]) == f"error: nothing of design {one['design']} is pinned here"
    import fcntl

    with open(cli.home / "gc.lock", "w") as held:  # a gc running on this home
        fcntl.flock(held, fcntl.LOCK_EX)
        assert cli.fails("gc") == "error: another 'fabnode gc' is running on this home: wait for it to end"
    assert cli.json("du")["total_bytes"] == before["total_bytes"]
    same = cli.json("publish", str(tmp_path / "design1"), "-m", "the same files", "--license", "CERN-OHL-P-2.0")
    assert same["bundle"] == two["bundle"]
    result = cli.json("unpin", same["design"])  # one pin per CID: the other design loses it too, and is told
    assert result["warnings"] == [f"{two['bundle']} is also the files of design {two['design']}: unpinned there too"]


def _many_small_blocks(tmp_path: Path, name: str, files: int, seed: int) -> Path:
    """A folder of ``files`` small random files in subfolders of 500 (many blocks, few bytes)."""
    rng = random.Random(seed)
    root = tmp_path / name
    for i in range(files):
        folder = root / f"part{i // 500:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:05d}.dat").write_bytes(rng.randbytes(rng.randrange(50, 400)))
    return root


def test_gc_killed_at_twenty_random_moments_leaves_a_sound_store_with_every_pin_whole(cli, tmp_path):
    """gc deletes in batches, each one transaction: a SIGKILL at any moment leaves fsck sound,
    every pinned DAG complete, and only unreferenced blocks gone (fewer after each kill).
    FABNODE_TEST_GC_BATCH_ROWS makes the batches small, so a small store takes many."""
    kept = _many_small_blocks(tmp_path, "kept", 300, seed=5)
    kept_cid = cli.out("add", str(kept))
    kept_blocks = _cids(cli.home)
    env = {**cli_env(cli.home), "FABNODE_TEST_GC_BATCH_ROWS": "4"}

    def make_garbage(seed: int) -> None:
        cli.json("unpin", cli.out("add", str(_many_small_blocks(tmp_path, f"garbage{seed}", 1500, seed=seed))))

    make_garbage(100)
    watcher = sqlite3.connect(f"file:{cli.home / 'fabnode.db'}?mode=ro", uri=True, timeout=10)

    def count_blocks() -> int:
        return watcher.execute("SELECT count(*) FROM blocks").fetchall()[0][0]  # all: ends the read snapshot

    rng = random.Random(20261127)
    outcomes = {"nothing": 0, "part": 0, "all": 0}
    for attempt in range(20):
        before = len(_cids(cli.home))
        proc = subprocess.Popen([str(FABNODE), "gc"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # the seeded moment of the crash: every fourth one while it starts or marks, the others
        # once it has deleted a random number of the unreferenced blocks (polled, not slept for)
        if attempt % 4 == 0:
            time.sleep(rng.uniform(0.0, 0.5))
        else:
            target = before - int(rng.uniform(0.05, 0.8) * (before - len(kept_blocks)))
            deadline = time.monotonic() + 60
            while proc.poll() is None and count_blocks() > target:  # polled closely: batches are quick
                assert time.monotonic() < deadline, "gc deleted nothing within 60 s"
                time.sleep(0.003)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        report = cli.json("fsck")
        assert report["ok"] and not report["missing"] and report["pins"] == 1, f"attempt {attempt}: {report}"
        after = _cids(cli.home)
        assert kept_blocks <= after and len(after) <= before
        outcomes["nothing" if len(after) == before else "all" if after == kept_blocks else "part"] += 1
        if after == kept_blocks:
            make_garbage(101 + attempt)
    watcher.close()
    print(outcomes)
    assert outcomes["part"] >= 8, outcomes  # many kills really landed between two batches
    out = tmp_path / "out"
    cli.out("get", kept_cid, "-o", str(out))
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == sorted(p.relative_to(kept) for p in kept.rglob("*"))


def _served_design(tmp_path: Path, lab: Cli, files: int, size: int, seed: int) -> tuple[dict, Path]:
    folder = tmp_path / f"served{seed}"
    for i in range(files):
        write_random_file(folder / f"part{i}.bin", size, seed=seed + i)
    return lab.json("publish", str(folder), "-m", "parts", "--license", "CERN-OHL-P-2.0"), folder


def _slow_server(tmp_path: Path, daemons: list, rate: int, files: int, size: int):
    a = Cli(tmp_path / "a")
    a.run("init", "--name", "Lab A")
    with open(a.home / "config.toml", "a") as f:
        f.write(f"[limits]\nupload_bytes_per_second = {rate}\n")
    published, folder = _served_design(tmp_path, a, files, size, seed=20)
    return start(daemons, a), published, folder


def test_gc_beside_an_add_and_a_fetch_loses_nothing_they_keep(tmp_path, daemons):
    """B held some of the blocks it now fetches, adds and imports, unreferenced (INSERT OR IGNORE
    keeps those old rows). gc runs again and again while `get --peer` fetches at 3 MB/s, `add`
    stores the same file again and `import` a CAR: afterwards every pin is complete, fsck is
    sound, the files are identical."""
    da, published, folder = _slow_server(tmp_path, daemons, 3_000_000, files=3, size=3 << 20)
    a = da.cli
    shipped = write_random_file(tmp_path / "shipped" / "manual.pdf", 2 << 20, seed=31)
    carried = a.json("publish", str(shipped.parent), "-m", "by USB stick", "--license", "CERN-OHL-P-2.0")
    car = tmp_path / "stick.car"
    a.out("export", str(car), "--design", carried["design"])
    b = Cli(tmp_path / "b")
    b.run("init", "--name", "Lab B")
    b.json("unpin", b.out("add", str(folder / "part0.bin")))  # part of the bundle, now garbage here
    b.json("unpin", b.out("add", str(shipped)))  # the CAR's file, garbage here too
    again = write_random_file(tmp_path / "again.bin", 3 << 20, seed=30)
    b.json("unpin", b.out("add", str(again)))
    out = tmp_path / "out"
    fetch = subprocess.Popen([str(FABNODE), "get", published["bundle"], "--peer", da.addr, "-o", str(out)],
                             env=cli_env(b.home), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    rounds = 0
    added = None
    while fetch.poll() is None or rounds < 2:
        gc = subprocess.Popen([str(FABNODE), "gc"], env=cli_env(b.home), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        added = b.out("add", str(again))  # reuses the old rows gc is deleting
        if rounds == 1:
            b.json("import", str(car))  # so does the import
        assert gc.wait(timeout=60) == 0, gc.stderr.read()
        if fetch.poll() is None:
            b.json("unpin", added)  # garbage again for the next round
            added = None
        rounds += 1
    assert fetch.wait(timeout=60) == 0, fetch.stderr.read()
    if added is None:  # the fetch ended just after the last round's unpin
        added = b.out("add", str(again))
    report = b.json("fsck")
    assert report["ok"] and not report["missing"], report
    for part in folder.iterdir():
        assert (out / part.name).read_bytes() == part.read_bytes()
    assert b.run("cat", added).stdout == again.read_bytes()
    du = b.json("du")
    assert {p["cid"]: p["kind"] for p in du["pins"]} == {published["bundle"]: "fetched", added: "added",
                                                          carried["bundle"]: "imported"}
    assert b.run("cat", carried["bundle"] + "/manual.pdf").stdout == shipped.read_bytes()
    assert du["unreferenced_bytes"] + du["pinned_bytes"] + du["partial_bytes"] == _block_bytes(b.home)[1]


def test_leftovers_of_an_interrupted_fetch_stay_a_week_then_gc_collects_them(tmp_path, daemons):
    """A fetch killed half-way leaves its verified blocks and its lease: gc keeps them (du shows
    them as a partial fetch) until a week after the fetch started, and frees them after."""
    from fabnode.storage.gc import LEASE_KEEP_MS

    da, published, _ = _slow_server(tmp_path, daemons, 2_000_000, files=3, size=8 << 20)
    b = Cli(tmp_path / "b")
    b.run("init", "--name", "Lab B")
    started_ms = time.time_ns() // 1_000_000
    fetch = subprocess.Popen([str(FABNODE), "get", published["bundle"], "--peer", da.addr, "-o", str(tmp_path / "out")],
                             env=cli_env(b.home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: stored_blocks(b.home)[1] >= 8 << 20, timeout=60, what="a first batch of the fetch")
    fetch.send_signal(signal.SIGKILL)
    fetch.wait(timeout=10)
    blocks, held = _block_bytes(b.home)
    assert 0 < held < 24 << 20
    du = b.json("du")
    assert du["partial_bytes"] == held and du["unreferenced_bytes"] == 0

    def gc_at(ms: int) -> dict:
        result = subprocess.run([str(FABNODE), "gc", "--json"], env={**cli_env(b.home), "FABNODE_TEST_NOW_MS": str(ms)},
                                capture_output=True, check=True)
        import json

        return json.loads(result.stdout)

    early = gc_at(started_ms + LEASE_KEEP_MS - 60_000)
    assert early["freed_blocks"] == 0 and early["partial_kept"] == 1
    assert _block_bytes(b.home) == (blocks, held)
    late = gc_at(time.time_ns() // 1_000_000 + LEASE_KEEP_MS + 60_000)
    assert (late["freed_blocks"], late["freed_bytes"]) == (blocks, held) and late["leases_dropped"] >= 1
    assert _block_bytes(b.home) == (0, 0)


def test_the_daemon_keeps_seeded_bundles_within_the_budget_by_dropping_the_least_recently_wanted(tmp_path, daemons):
    """B (budget 2 MiB) follows three 1.2 MiB designs one after another: each new one passes the
    budget and the bundle seeded longest ago is dropped (unpinned, its blocks deleted), with a log
    line; a dropped bundle is not fetched again."""
    from daemons import record_count

    a = Cli(tmp_path / "a")
    a.run("init", "--name", "Lab A")
    designs = [_served_design(tmp_path, a, 1, 1_200_000, seed=40 + i)[0] for i in range(3)]
    b = Cli(tmp_path / "b")
    b.run("init", "--name", "Lab B")
    with open(b.home / "config.toml", "a") as f:
        f.write("[seeding]\nbudget_mib = 2\n")
    da = start(daemons, a)
    db = start(daemons, b, "--bootstrap", da.addr)
    wait_until(lambda: record_count(b.home, "type = 'version'") == 3, timeout=30, what="B to have the three versions")
    b.run("follow", designs[0]["design"])
    db.wait_for(f"fetch finished: {designs[0]['bundle']}", timeout=30)
    assert not db.said("dropping bundle")
    b.run("follow", designs[1]["design"])
    db.wait_for(f"fetch finished: {designs[1]['bundle']}", timeout=30)
    line = db.wait_for("seeding: dropping bundle", timeout=30)
    assert designs[0]["bundle"] in line and "least recently wanted" in line and "budget of 2 MiB" in line
    db.wait_for(f"seeding: dropped bundle {designs[0]['bundle']}: freed", timeout=30)
    b.run("follow", designs[2]["design"])
    db.wait_for(f"fetch finished: {designs[2]['bundle']}", timeout=30)
    db.wait_for(f"seeding: dropped bundle {designs[1]['bundle']}: freed", timeout=30)
    du = b.json("du")
    assert [p["cid"] for p in du["pins"]] == [designs[2]["bundle"]]
    assert du["kinds"]["followed"]["bytes"] == du["total_bytes"] <= 2 << 20
    assert not db.said(f"fetching bundle {designs[0]['bundle']}")[1:]  # fetched once, never again
    assert b.json("fsck")["ok"]
    assert "stop 'fabnode run' first" in b.fails("gc", "--compact")  # it would hold up the daemon's writes
    assert b.json("gc")["freed_blocks"] == 0  # plain gc is fine beside it: the drops left no garbage
