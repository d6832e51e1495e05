"""Shared fixtures: the real CLI in a subprocess, fresh homes, and the npm oracles."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# hypercorn's HTTP/2 package, imported before any test runs: once a worker found `h2` shadowed by
# a module that is not the package (hypercorn then failed to import mid-suite; cause not found)
import h2.events  # noqa: F401,E402
import hypercorn.trio.tcp_server  # noqa: F401,E402

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "test-tools"
FABNODE = Path(sys.executable).parent / "fabnode"
IPFS_CAR = TOOLS / "node_modules" / ".bin" / "ipfs-car"


def cli_env(home: Path | None) -> dict:
    """The environment for running the fabnode command with ``home`` (None: no FABNODE_HOME)."""
    env = {k: v for k, v in os.environ.items() if k != "FABNODE_HOME"}
    if home is not None:
        env["FABNODE_HOME"] = str(home)
    return env


class Cli:
    """Runs ``fabnode`` exactly as an operator does: a separate process, a real home."""

    def __init__(self, home: Path, prefix: tuple[str, ...] = ()) -> None:
        """``prefix``: run inside a network namespace (``ip netns exec NS``), as a lab's own machine."""
        self.home, self.prefix = home, prefix

    def run(self, *args: str, check: bool = True, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
        result = subprocess.run([*self.prefix, str(FABNODE), *args], env=cli_env(self.home), capture_output=True,
                                timeout=timeout, **kw)
        if check and result.returncode != 0:
            raise AssertionError(f"fabnode {' '.join(args)} exited {result.returncode}: {result.stderr.decode()}")
        return result

    def out(self, *args: str) -> str:
        return self.run(*args).stdout.decode().strip()

    def json(self, *args: str):
        return json.loads(self.run(*args, "--json").stdout)

    def fails(self, *args: str, code: int = 1) -> str:
        """Run a command that must fail; return its one-line error."""
        result = self.run(*args, check=False)
        err = result.stderr.decode()
        assert result.returncode == code, (result.returncode, err)
        lines = [line for line in err.splitlines() if line.strip()]
        assert "Traceback" not in err, err
        if code == 1:
            assert len(lines) == 1 and lines[0].startswith("error: "), err
            return lines[0]
        return err


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    home = tmp_path / "home"
    c = Cli(home)
    c.run("init", "--name", "Test Lab")
    return c


@pytest.fixture(scope="session")
def ipfs_car() -> Path:
    if not IPFS_CAR.exists():
        pytest.fail(f"{IPFS_CAR} is missing: run 'make test' (it installs test-tools with npm ci)")
    return IPFS_CAR


def ipfs_car_cid(ipfs_car: Path, path: Path, tmp: Path, *, no_wrap: bool = False) -> str:
    car = tmp / f"oracle-{random.Random(str(path)).getrandbits(32)}.car"
    args = [str(ipfs_car), "pack", str(path), "--output", str(car)]
    if no_wrap:
        args.insert(3, "--no-wrap")
    result = subprocess.run(args, capture_output=True, timeout=600, check=True)
    car.unlink()
    return result.stdout.decode().strip()


def write_random_file(path: Path, size: int, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    with open(path, "wb") as f:
        remaining = size
        while remaining:
            n = min(remaining, 1 << 20)
            f.write(rng.randbytes(n))
            remaining -= n
    return path


def stored_block(conn, cid: bytes) -> bytes | None:
    """A block's bytes as stored, read straight from the files without fabnode's code: its
    inline row, or its range of its pack file (storage/blocks.py). Unverified."""
    row = conn.execute("SELECT data, pack, pack_offset, size FROM blocks WHERE cid = ?", (cid,)).fetchone()
    if row is None:
        return None
    data, pack, offset, size = row
    if pack is None:
        return data
    db_file = conn.execute("PRAGMA database_list").fetchone()[2]
    with open(Path(db_file).parent / "packs" / f"{pack:06d}.pack", "rb") as f:
        f.seek(offset)
        return f.read(size)


def damage_block(conn, cid: bytes, data: bytes) -> int:
    """Put ``data`` where block ``cid`` is stored, as a failing disk would: over its bytes in its
    pack when the length is the same, else as an inline row (a home from before packs). Returns
    the rows changed (0: no such block); commits."""
    row = conn.execute("SELECT pack, pack_offset, size FROM blocks WHERE cid = ?", (cid,)).fetchone()
    if row is None:
        return 0
    pack, offset, size = row
    if pack is not None and size == len(data):
        db_file = conn.execute("PRAGMA database_list").fetchone()[2]
        with open(Path(db_file).parent / "packs" / f"{pack:06d}.pack", "r+b") as f:
            f.seek(offset)
            f.write(data)
        return 1
    changed = conn.execute("UPDATE blocks SET data = ?, pack = NULL, pack_offset = NULL WHERE cid = ?",
                           (data, cid)).rowcount
    if conn.in_transaction:
        conn.commit()
    return changed


@pytest.fixture
def daemons():
    """Daemons started in a test; whatever is still running at the end is killed."""
    from fabnode.node.http.web import INTERNAL_ERROR

    started: list = []
    yield started
    failed = []
    for d in started:
        failed += d.said(f"http {INTERNAL_ERROR}")  # a page answering 500 fails the test that caused it
        if d.proc.poll() is None:
            d.kill()
    assert not failed, f"a daemon answered HTTP 500: {failed}"


@pytest.fixture
def attackers():
    """Hostile peer processes (tests/test_hostile_peers.py's Attacker) stopped after the test."""
    started: list = []
    yield started
    for a in started:
        a.stop()


# make test runs the files on xdist workers (--dist loadfile), handed out in collection order: the
# files that take longest (real daemons, large files) go first, so that no worker is still busy
# with one of them after the others have finished. The order of tests within a file is kept.
LONGEST_FIRST = ["test_network.py", "test_nat.py", "test_simnet.py", "test_sync.py", "test_failures.py", "test_hostile_peers.py", "test_parity.py", "test_hamt_parity.py",
                 "test_docs.py", "test_crash.py", "test_packs.py", "test_disk.py", "test_operator_errors.py", "test_fetch.py", "test_sneakernet.py",
                 "test_commons.py", "test_quota.py", "test_hostile_http.py"]


def pytest_configure(config) -> None:
    """Compile fabnode's modules to .pyc files once, before the workers start. Where
    PYTHONDONTWRITEBYTECODE is set (as in this machine's environment) no process writes them, so
    every CLI run and daemon of the suite compiled fabnode's ~29,000 lines from source again:
    0.1 s of CPU for a short command, more for a daemon, thousands of times. Python checks each
    .pyc against its source (mtime and size), so an edited module is compiled afresh, never stale."""
    if hasattr(config, "workerinput"):  # an xdist worker: the controller has done it
        return
    import compileall

    for package in ("node", "protocol", "storage"):
        compileall.compile_dir(ROOT / package, quiet=1)
    for module in ROOT.glob("*.py"):
        compileall.compile_file(module, quiet=1)


def pytest_collection_modifyitems(items) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    rank["test_wheel.py"] = len(rank) + 1  # last: `make test` builds the wheel meanwhile
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # a stable sort


def run_on_terminal(cli: "Cli", *args: str, columns: int = 100, quiet_s: float = 60,
                    answer: bytes | None = None) -> tuple[int, bytes]:
    """Run fabnode with stdout and stderr on a pseudo-terminal (where progress lines are drawn);
    return (exit code, everything shown). Fails if nothing is shown for ``quiet_s``. With
    ``answer``, stdin is the terminal too and ``answer`` is typed when fabnode asks a question
    (a line ending in "] ")."""
    import pty
    import select

    primary, secondary = pty.openpty()
    proc = subprocess.Popen([str(FABNODE), *args], env={**cli_env(cli.home), "COLUMNS": str(columns)},
                            stdin=subprocess.DEVNULL if answer is None else secondary, stdout=secondary,
                            stderr=secondary)
    os.close(secondary)
    shown = bytearray()
    try:
        while True:
            ready, _, _ = select.select([primary], [], [], quiet_s)
            assert ready, f"no output from fabnode within {quiet_s} s"
            try:
                data = os.read(primary, 65536)
            except OSError:  # EIO: the terminal closed when the process exited
                break
            if not data:
                break
            shown += data
            if answer is not None and shown.rstrip(b"\r\n").endswith(b"] "):
                os.write(primary, answer)
                answer = None
    finally:
        os.close(primary)
        if proc.poll() is None and not shown:
            proc.kill()
    return proc.wait(timeout=60), bytes(shown)


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by Playwright, one per test module (pages are tested in a real browser)."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: .ci/run installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield browser
        browser.close()
