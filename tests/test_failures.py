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

from conftest import FABNODE, ROOT, Cli, _env, write_random_file
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
        f"error: disk full: adding big.bin (4.0 MiB) needs about 8.0 MiB free on the home's filesystem "
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
        f"error: disk full: importing lab-a.car ({human_size(size)}) needs about {human_size(2 * size)} free on "
        f"the home's filesystem ({b.home}); nothing was stored")
    assert sorted(os.listdir(b.home)) == before["files"]
    filler.unlink()
    assert home_state(b) == before and b.json("designs") == []
    assert b.json("import", str(car))["records"]["new"] == 1


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
