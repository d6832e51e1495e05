"""`fabnode run` as separate processes on 127.0.0.1, and ways to wait for what they say.

Every wait has a deadline; nothing sleeps a fixed time hoping something happened.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from conftest import FABNODE, Cli, cli_env


class Daemon:
    """A daemon process; waits (with a deadline) for its listening line."""

    def __init__(self, cli: Cli, *args: str, listen: str | None = "/ip4/127.0.0.1/tcp/0", mdns: bool = False,
                 prefix: tuple[str, ...] = ()) -> None:
        """``mdns`` only inside a network namespace of the test's own (``prefix`` enters it):
        tests never send anything beyond this machine's loopback. ``listen=None``: no --listen
        (the home's config decides; with ``listen = []`` the node only dials out, as a lab behind
        a NAT does, and ``addr`` is its web address)."""
        assert prefix or not mdns, "mDNS multicasts: only inside a private network namespace"
        self.cli = cli
        flags = [] if mdns else ["--no-mdns"]
        if "--http" not in args:
            flags += ["--http", "127.0.0.1:0"]  # never the shared default port 8080
        listening = ["--listen", listen] if listen is not None else []
        self.proc = subprocess.Popen([*prefix, str(FABNODE), "run", *listening, *flags, *args],
                                     env=cli_env(cli.home), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: list[str] = []
        self._pending = b""
        self._read = 0
        try:
            if listen is None:
                self.addr = self.wait_for("web interface on ").split(" on ", 1)[1]
                self.peer_id = cli.json("id")["peer_id"]
                self.port = 0
                return
            self.addr = self.wait_for("listening on ").split("listening on ", 1)[1]
        except BaseException:  # never started as far as the test knows: no fixture will stop it
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise
        self.peer_id = self.addr.rsplit("/", 1)[1]
        self.port = int(self.addr.split("/tcp/", 1)[1].split("/", 1)[0])

    def _pump(self, timeout: float) -> None:
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], max(timeout, 0))
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""
                raise AssertionError(f"daemon exited; it said {self.lines} {err}")
            self._pending += chunk
            while b"\n" in self._pending:
                line, self._pending = self._pending.split(b"\n", 1)
                self.lines.append(line.decode())

    def wait_for(self, text: str, timeout: float = 30) -> str:
        """The first line (not taken by an earlier wait) containing ``text``, within a deadline."""
        deadline = time.monotonic() + timeout
        while True:
            for i in range(self._read, len(self.lines)):
                if text in self.lines[i]:
                    self._read = i + 1
                    return self.lines[i].strip()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"daemon never said {text!r}; it said {self.lines}")
            self._pump(left)

    def said(self, text: str) -> list[str]:
        """Every line so far containing ``text`` (reads what is waiting, without blocking)."""
        try:
            while True:
                before = len(self.lines) + len(self._pending)
                self._pump(0)
                if len(self.lines) + len(self._pending) == before:
                    break
        except AssertionError:
            pass
        return [line for line in self.lines if text in line]

    def stop(self) -> float:
        """SIGTERM, as systemd or Ctrl-C would; returns the seconds it took to exit."""
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)
        took = time.monotonic() - start
        internal_errors = self.said("http internal error")
        assert not internal_errors, f"the daemon answered HTTP 500: {internal_errors}"
        return took

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


# `fabnode run` stops within 2 s on a quiet machine (README); the tests allow 5 s because make test
# runs them on three workers at once, on a machine that may be busy: a shutdown that hangs still
# fails (Daemon.stop gives up after 10 s).
STOP_DEADLINE_S = 5.0


def wait_until(check: Callable[[], object], timeout: float = 30, what: str = "condition"):
    """Poll ``check`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def record_count(home: Path, where: str = "1") -> int:
    """Rows in a node's records table, read straight from its SQLite file."""
    conn = sqlite3.connect(f"file:{home / 'fabnode.db'}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(f"SELECT count(*) FROM records WHERE {where}").fetchone()[0]
    finally:
        conn.close()


def stored_blocks(home: Path) -> tuple[int, int]:
    """(blocks, bytes) committed in a node's store, read straight from its SQLite file while the
    node writes it; (0, 0) before the database exists."""
    try:
        conn = sqlite3.connect(f"file:{home / 'fabnode.db'}?mode=ro", uri=True, timeout=10)
        try:
            return tuple(conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM blocks").fetchone())
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0, 0


def has_record(home: Path, cid: str) -> bool:
    from fabnode.protocol.cid import parse_cid

    conn = sqlite3.connect(f"file:{home / 'fabnode.db'}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT 1 FROM records WHERE cid = ?", (parse_cid(cid),)).fetchone() is not None
    finally:
        conn.close()


def daemon_state(home: Path) -> dict:
    return json.loads((home / "daemon.json").read_text())


def make_labs(tmp_path, n: int) -> list[Cli]:
    labs = []
    for i in range(n):
        lab = Cli(tmp_path / f"lab{i}")
        lab.run("init", "--name", f"Lab {i}")
        labs.append(lab)
    return labs


def start(daemons: list, lab: Cli, *args: str, **kw) -> Daemon:
    d = Daemon(lab, *args, **kw)
    daemons.append(d)
    return d


def connect_line(daemons: list, labs: list[Cli]) -> list[Daemon]:
    """Start one daemon per lab, each bootstrapping from the one before: a line."""
    line = [start(daemons, labs[0])]
    for lab in labs[1:]:
        line.append(start(daemons, lab, "--bootstrap", line[-1].addr))
    for left, right in zip(line, line[1:]):
        right.wait_for(f"peer connected: {left.peer_id}")
        left.wait_for(f"peer connected: {right.peer_id}")
    return line


def signing_key(seed: int):
    """A fixed Ed25519 key (seed byte repeated) and its did:key, for records made in tests."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from fabnode.protocol.identity import did_from_ed25519

    key = Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return key, did_from_ed25519(public)
