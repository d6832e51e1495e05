"""Every failure is one line, exit 1 (130 on Ctrl-C, 143 on SIGTERM), no traceback, and the home
as it was (issue 11, item 5): a full disk, a damaged database, an interrupt at any moment.

Each case runs the real ``fabnode`` command in a subprocess, checks its exact message and exit
status, then checks the home with ``fabnode fsck`` and ``fabnode ls --json`` and lists its files.
Full disks are small tmpfs mounts made by the test itself (skipped where mounting is not
permitted); interrupts are sent once the work is visibly under way (polled, with a deadline).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from fabnode.protocol.errors import human_size

from conftest import FABNODE, ROOT, Cli, cli_env, write_random_file
from daemons import Daemon, wait_until

EXAMPLE = ROOT / "examples" / "hand-pump"
RESTORE = "restore it from a backup, or move it aside and run 'fabnode init' for an empty store (the keys stay)"


def home_state(cli: Cli) -> dict:
    """What a failure must not change: a sound store, the same blocks and pins, the same files."""
    report = cli.json("fsck")
    assert report["ok"], report
    return {"fsck": report, "pins": cli.json("ls"), "files": sorted(os.listdir(cli.home))}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lab(path: Path, name: str = "Lab") -> Cli:
    cli = Cli(path)
    cli.run("init", "--name", name)
    return cli


# ------------------------------------------------------------------ a full disk


@pytest.fixture
def small_fs(tmp_path):
    """A 16 MiB tmpfs of this test's own, unmounted at the end."""
    mount = tmp_path / "small-fs"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip() or made.returncode}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(fs: Path, leave: int) -> Path:
    """Fill ``fs`` until ``leave`` bytes are free; removing the returned file frees it again."""
    st = os.statvfs(fs)
    left = st.f_bavail * st.f_frsize - leave
    filler = fs / "filler"
    with open(filler, "wb") as f:
        while left > 0:
            left -= f.write(bytes(min(left, 1 << 20)))
    st = os.statvfs(fs)
    assert st.f_bavail * st.f_frsize == leave
    return filler


@pytest.mark.parametrize("leave", [1 << 20, 0], ids=["1MiB-free", "nothing-free"])
def test_add_on_a_full_disk_says_how_much_it_needs_and_stores_nothing(small_fs, tmp_path, leave):
    """The home on a full filesystem: SQLite's SQLITE_FULL (or, with not a byte left, its
    failure to make the log's index when opening) becomes one line; the rollback does not
    fail a second time ("cannot rollback - no transaction is active")."""
    cli = lab(small_fs / "home")
    cli.out("add", str(write_random_file(tmp_path / "small.bin", 100_000, seed=1)))
    before = home_state(cli)
    db_before = digest(cli.home / "fabnode.db")
    big = write_random_file(tmp_path / "big.bin", 4 << 20, seed=2)
    filler = fill(small_fs, leave)
    assert cli.fails("add", str(big)) == (
        f"error: disk full: adding big.bin (4.0 MiB) needs about 4.0 MiB free on the home's filesystem "
        f"({cli.home}); nothing was stored")
    assert digest(cli.home / "fabnode.db") == db_before
    if leave:  # with nothing free SQLite may leave its empty -wal and -shm, reused on the next open
        assert sorted(os.listdir(cli.home)) == before["files"]
    filler.unlink()
    assert home_state(cli) == before
    assert cli.out("add", str(big)).startswith("bafybei")  # with room, the same add works


def test_import_on_a_full_disk_stores_nothing(small_fs, tmp_path):
    a = lab(tmp_path / "a", "Lab A")
    design = tmp_path / "design"
    write_random_file(design / "scan.bin", 4 << 20, seed=3)
    (design / "README.md").write_text("# scan\n")
    a.json("publish", str(design), "-m", "a scan", "--license", "CC-BY-SA-4.0")
    car = tmp_path / "lab-a.car"
    a.out("export", str(car))
    b = lab(small_fs / "home", "Lab B")
    before = home_state(b)
    filler = fill(small_fs, 1 << 20)
    size = car.stat().st_size
    assert b.fails("import", str(car)) == (
        f"error: disk full: importing lab-a.car ({human_size(size)}) needs about {human_size(size)} free on "
        f"the home's filesystem ({b.home}); nothing was stored")
    assert sorted(os.listdir(b.home)) == before["files"]
    filler.unlink()
    assert home_state(b) == before and b.json("designs") == []
    assert b.json("import", str(car))["records"]["new"] == 2  # the version and lab A's record


def test_get_onto_a_full_disk_writes_nothing(small_fs, tmp_path):
    cli = lab(tmp_path / "home")
    design = tmp_path / "design"
    write_random_file(design / "cad" / "body.step", 3 << 20, seed=4)
    write_random_file(design / "frame.stl", 1 << 20, seed=5)
    cid = cli.out("add", str(design))
    before = home_state(cli)
    fill(small_fs, 1 << 20)
    out = small_fs / "design"
    assert cli.fails("get", cid, "-o", str(out)) == (
        f"error: disk full: writing {out} needs 4.0 MiB on the output's filesystem ({small_fs}); nothing was written")
    assert os.listdir(small_fs) == ["filler"]  # no partial folder
    assert home_state(cli) == before


def test_export_onto_a_full_disk_writes_nothing_and_says_the_export_size(small_fs, tmp_path):
    cli = lab(tmp_path / "home")
    design = tmp_path / "design"
    write_random_file(design / "scan.bin", 4 << 20, seed=6)
    cli.json("publish", str(design), "-m", "a scan", "--license", "CC-BY-SA-4.0")
    reference = tmp_path / "reference.car"
    cli.out("export", str(reference))
    before = home_state(cli)
    fill(small_fs, 1 << 20)
    out = small_fs / "lab.car"
    assert cli.fails("export", str(out)) == (
        f"error: disk full: writing {out} needs {human_size(reference.stat().st_size)} on the output's filesystem "
        f"({small_fs}); nothing was written")
    assert os.listdir(small_fs) == ["filler"]  # no partial file
    assert home_state(cli) == before


# ------------------------------------------------------------------ a damaged database


@pytest.fixture
def full_lab(tmp_path):
    """A home holding a published design, an added file, and an export of both on disk."""
    cli = lab(tmp_path / "home")
    design = cli.json("publish", str(EXAMPLE), "-m", "first design")["design"]
    cid = cli.out("add", str(write_random_file(tmp_path / "part.stl", 50_000, seed=7)))
    cli.out("export", str(tmp_path / "lab.car"))
    assert not (cli.home / "fabnode.db-wal").exists()  # closed: everything is in the main file
    return cli, cid, design


def _every_command(cli: Cli, tmp_path: Path, cid: str, design: str) -> list[tuple[str, ...]]:
    """A command of every kind that opens the database (writing, reading, network, files)."""
    return [
        ("init",), ("ls",), ("ls", cid), ("cat", cid), ("get", cid, "-o", str(tmp_path / "got")),
        ("add", str(tmp_path / "part.stl")), ("fsck",), ("designs",), ("log", design), ("search", "pump"),
        ("show", design), ("status",), ("peers",), ("follow",), ("unfollow", design), ("trust",),
        ("reputation", design), ("vouch", "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"),
        ("attest", design, "--result", "passed"), ("publish", str(EXAMPLE), "-m", "again"),
        ("export", str(tmp_path / "again.car")), ("have", str(tmp_path / "lab.have")),
        ("import", str(tmp_path / "lab.car")),
    ]


def _damage(db: Path, how: str) -> str:
    """Damage the database file; returns what fabnode should say is wrong with it."""
    size = db.stat().st_size
    if how == "header":
        with open(db, "r+b") as f:
            f.write(b"NOT AN SQLITE DB")
        return "its first 16 bytes are not the SQLite header"
    if how == "truncated":
        os.truncate(db, size // 2)
        return f"it is truncated: {size // 2} of {size} bytes"
    os.truncate(db, 60)
    return "it is truncated: 60 bytes, less than the 100-byte SQLite header"


@pytest.mark.parametrize("how", ["header", "truncated", "stub"])
def test_every_command_says_the_database_is_damaged_in_one_line(full_lab, tmp_path, how):
    cli, cid, design = full_lab
    db = cli.home / "fabnode.db"
    reason = _damage(db, how)
    damaged, files = digest(db), sorted(os.listdir(cli.home))
    commands = _every_command(cli, tmp_path, cid, design) if how != "stub" else [("ls",), ("add", str(EXAMPLE))]
    for command in commands:
        if command == ("fsck",):
            continue
        line = cli.fails(*command)
        assert line == f"error: the database {db} is damaged ({reason}); run 'fabnode fsck'", command
    assert cli.fails("fsck") == f"error: {db} is not a readable SQLite database: {reason}; {RESTORE}"
    # the daemon does not start on it either
    daemon = cli.run("run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--http", "off", check=False, timeout=60)
    assert daemon.returncode == 1 and daemon.stderr.decode().strip() == (
        f"error: the database {db} is damaged ({reason}); run 'fabnode fsck'")
    # nothing was written, repaired or created by any of them (but the lock `run` takes first)
    assert digest(db) == damaged and sorted(set(os.listdir(cli.home)) - {"daemon.lock"}) == files
    assert not (tmp_path / "got").exists() and not (tmp_path / "again.car").exists()
    assert not (tmp_path / "lab.have").exists()


def _middle_leaf_of_blocks(db: Path) -> tuple[int, int]:
    """(page number, page size) of a leaf page of the blocks table in the middle of the file,
    read from the table's root page (an interior b-tree page: 4-byte child page numbers)."""
    conn = sqlite3.connect(db)
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'blocks'").fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(db, "rb") as f:
        f.seek((root - 1) * page_size)
        page = f.read(page_size)
    assert page[0] == 0x05, "the blocks table should span several leaf pages"
    cells = int.from_bytes(page[3:5], "big")
    children = [int.from_bytes(page[o:o + 4], "big")
                for o in (int.from_bytes(page[12 + 2 * i:14 + 2 * i], "big") for i in range(cells))]
    children.append(int.from_bytes(page[8:12], "big"))
    return children[len(children) // 2], page_size


def test_a_damaged_page_inside_the_database_is_named_where_it_is_read(tmp_path):
    """A page of the blocks table overwritten with garbage: what reads it fails in one line
    (SQLite: "database disk image is malformed"), fsck says which table; what does not read it
    goes on working."""
    cli = lab(tmp_path / "home")
    parts = tmp_path / "parts"
    rng = random.Random(100)
    parts.mkdir()
    for i in range(6000):  # many small blocks: their index rows spread over several leaf pages
        (parts / f"part-{i:04}.stl").write_bytes(rng.randbytes(64))
    cid = cli.out("add", str(parts))
    db = cli.home / "fabnode.db"
    page, page_size = _middle_leaf_of_blocks(db)
    pages = db.stat().st_size // page_size
    assert 8 < page < pages  # inside the file, past the schema and small tables
    with open(db, "r+b") as f:
        f.seek((page - 1) * page_size)
        f.write(random.Random(11).randbytes(page_size))
    assert cli.fails("fsck") == (f"error: {db} is damaged: reading its blocks table failed: database disk image "
                                 f"is malformed; {RESTORE}")
    out = tmp_path / "out"
    out.mkdir()
    assert cli.fails("get", cid, "-o", str(out / "parts")) == (
        f"error: the database {db} is damaged (database disk image is malformed); run 'fabnode fsck'")
    assert os.listdir(out) == []
    assert [p["cid"] for p in cli.json("ls")] == [cid]  # the pins table is intact


# ------------------------------------------------------------------ Ctrl-C and SIGTERM


SIGNALS = [pytest.param(signal.SIGINT, id="SIGINT"), pytest.param(signal.SIGTERM, id="SIGTERM")]
EXPECTED = {signal.SIGINT: (130, "error: interrupted\n"), signal.SIGTERM: (143, "error: terminated\n")}


def interrupt(cli: Cli, args: list[str], under_way, sig: int = signal.SIGINT, timeout: float = 60, env: dict | None = None):
    """Start ``fabnode ARGS``, wait (with a deadline) until ``under_way(proc)`` is true, then
    send ``sig``: SIGINT to its whole process group, as Ctrl-C in a terminal does; SIGTERM to
    the process, as kill or systemd do. Returns (exit status, stdout, stderr)."""
    proc = subprocess.Popen([str(FABNODE), *args], env={**cli_env(cli.home), **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not under_way(proc):
            assert proc.poll() is None, f"fabnode {args[0]} ended before it could be interrupted: {proc.stderr.read()}"
            assert time.monotonic() < deadline, f"fabnode {args[0]} never got under way"
            time.sleep(0.005)
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode, out.decode(), err.decode()


def grown(path: Path, size: int):
    return lambda proc: path.exists() and path.stat().st_size > size


def packs_grown(home: Path, size: int):
    """The blocks written so far (into the home's pack files) exceed ``size``."""
    return lambda proc: sum(p.stat().st_size for p in (home / "packs").glob("*.pack")) > size


FDATASYNC = {"x86_64": 75, "aarch64": 83}.get(os.uname().machine)


def in_fdatasync(proc) -> bool:
    """The command's main thread is inside fdatasync: an add making its pack durable, past the
    point of no return (storage/blocks.py)."""
    try:
        return Path(f"/proc/{proc.pid}/syscall").read_text().split()[0] == str(FDATASYNC)
    except (OSError, IndexError):
        return False


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:
    return write_random_file(tmp_path_factory.mktemp("big") / "big.bin", 200 << 20, seed=20261127)


@pytest.fixture(scope="module")
def big_lab(tmp_path_factory, big_file):
    """A home holding the 200 MiB file, and a plain CAR of it; tests only read from it."""
    where = tmp_path_factory.mktemp("big-lab")
    cli = lab(where / "home")
    cid = cli.out("add", str(big_file))
    car = where / "big.car"
    cli.out("export", "--bundle", cid, str(car))
    return cli, cid, car


@pytest.mark.slow
@pytest.mark.parametrize("sig", SIGNALS)
def test_an_interrupted_add_stores_and_pins_nothing(tmp_path, big_file, sig):
    cli = lab(tmp_path / "home")
    before = home_state(cli)
    code, out, err = interrupt(cli, ["add", str(big_file)], packs_grown(cli.home, 20 << 20), sig)
    assert (code, err) == EXPECTED[sig] and out == ""
    assert home_state(cli) == before  # rolled back: no block, no pin, no leftover log


@pytest.mark.slow
def test_an_add_interrupted_after_its_commit_completes_and_says_so(tmp_path, big_file):
    """The rule for the point of no return: the add is making its pack durable (fdatasync, just
    before the COMMIT), so the add is stored; it prints its CID and exits 0, with a note that
    the interrupt came too late."""
    if FDATASYNC is None or not Path(f"/proc/{os.getpid()}/syscall").exists():
        pytest.skip("no /proc/PID/syscall to see the add making its pack durable")
    cli = lab(tmp_path / "home")
    # the add starts writing its pack out as it grows (storage/blocks.py), so its fdatasync is
    # over in a few milliseconds; here the whole write is left to it, long enough to be seen
    code, out, err = interrupt(cli, ["add", str(big_file)], in_fdatasync,
                               env={"FABNODE_TEST_WRITEBACK_BYTES": str(1 << 40)})
    assert code == 0, err
    assert err == "note: the interrupt came after the changes were committed: they are complete\n"
    cid = out.strip()
    assert [p["cid"] for p in cli.json("ls")] == [cid] and cli.json("fsck")["ok"]


@pytest.mark.slow
def test_an_interrupted_import_stores_nothing(tmp_path, big_lab):
    _, _, car = big_lab
    cli = lab(tmp_path / "home")
    before = home_state(cli)
    code, out, err = interrupt(cli, ["import", str(car)], packs_grown(cli.home, 20 << 20))
    assert (code, err) == EXPECTED[signal.SIGINT] and out == ""
    assert home_state(cli) == before


@pytest.mark.slow
@pytest.mark.parametrize("sig", SIGNALS)
def test_an_interrupted_get_removes_its_partial_output(tmp_path, big_lab, sig):
    """Interrupted while writing out: the temporary folder beside the output goes too."""
    cli, cid, _ = big_lab
    before = home_state(cli)
    out = tmp_path / "out"
    out.mkdir()

    def writing(proc) -> bool:
        return any(p.stat().st_size > 20 << 20 for p in out.glob(".big.bin.fabnode-partial-*/content"))

    code, stdout, err = interrupt(cli, ["get", cid, "-o", str(out / "big.bin")], writing, sig)
    assert (code, err) == EXPECTED[sig] and stdout == ""
    assert os.listdir(out) == []
    assert home_state(cli) == before


@pytest.mark.slow
def test_an_interrupted_export_removes_its_partial_file(tmp_path, big_lab):
    cli, cid, _ = big_lab
    out = tmp_path / "stick"
    out.mkdir()
    code, stdout, err = interrupt(cli, ["export", str(out / "lab.car")],
                                  grown(out / ".lab.car.fabnode-partial", 20 << 20), signal.SIGTERM)
    assert (code, err) == EXPECTED[signal.SIGTERM] and stdout == ""
    assert os.listdir(out) == []


@pytest.mark.slow
def test_an_interrupted_fsck_is_one_line(big_lab):
    """A reading command: interrupted half-way through re-hashing 200 MiB."""
    cli, _, _ = big_lab

    def reading(proc) -> bool:
        io = Path(f"/proc/{proc.pid}/io")
        return io.exists() and int(io.read_text().split("rchar: ")[1].split()[0]) > 50 << 20

    if not Path(f"/proc/{os.getpid()}/io").exists():
        pytest.skip("no /proc/PID/io to see the check under way")
    code, out, err = interrupt(cli, ["fsck"], reading)
    assert (code, err) == EXPECTED[signal.SIGINT] and out == ""


@pytest.mark.parametrize("sig", SIGNALS)
def test_an_interrupted_get_from_a_peer_leaves_no_pin_and_no_partial_folder(tmp_path, sig):
    """``get --peer`` runs libp2p under trio, whose nurseries used to wrap Ctrl-C in a
    BaseExceptionGroup traceback. The serving daemon is capped at 1 MiB/s, so the 16 MiB
    transfer is still running when the signal comes."""
    a, b = lab(tmp_path / "a", "Lab A"), lab(tmp_path / "b", "Lab B")
    with open(a.home / "config.toml", "a") as f:
        f.write("[limits]\nupload_bytes_per_second = 1048576\n")
    cid = a.out("add", str(write_random_file(tmp_path / "scan.bin", 16 << 20, seed=8)))
    before = home_state(b)
    out = tmp_path / "out"
    out.mkdir()
    daemon = Daemon(a)
    try:
        def sending(proc) -> bool:
            return any(t["sent_bytes"] > 0 for t in a.json("status")["serving"])

        code, stdout, err = interrupt(b, ["get", cid, "--peer", daemon.addr, "-o", str(out / "scan.bin")], sending,
                                      sig)
        assert (code, err) == EXPECTED[sig] and stdout == ""
        assert os.listdir(out) == []
        after = home_state(b)
        # blocks verified before the signal are kept for the next attempt; nothing is pinned
        assert after["pins"] == before["pins"] == [] and after["files"] == before["files"]
        wait_until(lambda: not a.json("status")["serving"], timeout=30, what="the daemon to notice")
    finally:
        daemon.stop()
    assert daemon.proc.returncode == 0
