"""Issue 11, a real install: every mistake an operator can make starting a node is one line.

Each test runs the real ``fabnode`` command (and real daemons, on 127.0.0.1 only) and checks the
exact message, the exit status, and that the home is as it was.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

from conftest import Cli
from daemons import daemon_state, start

QUIET = ("--no-mdns", "--http", "127.0.0.1:0")
LOOPBACK = "/ip4/127.0.0.1/tcp/0"


def refused(cli: Cli, *args: str, code: int = 1) -> str:
    """Run a command that must stop at once with one ``error: …`` line; return that line."""
    result = cli.run(*args, check=False, timeout=60)
    err = result.stderr.decode()
    assert result.returncode == code, (result.returncode, err, result.stdout.decode())
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def files(home: Path) -> dict[str, str]:
    """Every file of a home with a hash of its bytes (daemon.lock aside: it is the lock itself,
    created once by the first `run` and never removed)."""
    return {str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(home.rglob("*")) if p.is_file() and p.name != "daemon.lock"}


# ------------------------------------------------------------------ one node per home


def test_a_second_node_on_a_home_is_refused_and_the_first_keeps_running(cli, daemons):
    first = start(daemons, cli)
    state = (cli.home / "daemon.json").read_bytes()
    before = files(cli.home)

    line = refused(cli, "run", "--listen", LOOPBACK, *QUIET)
    assert line == (f"error: a node is already running on {cli.home} (pid {first.proc.pid}, listening on "
                    f"{first.addr}); stop it first, or use another --home")
    # even on the very port the first listens on: the home's lock is what is reported
    same_port = refused(cli, "run", "--listen", f"/ip4/127.0.0.1/tcp/{first.port}", *QUIET)
    assert same_port == line

    assert (cli.home / "daemon.json").read_bytes() == state  # neither overwritten nor deleted
    assert files(cli.home) == before
    status = cli.json("status")
    assert status["running"] and status["pid"] == first.proc.pid and status["addrs"] == [first.addr]
    assert f"daemon    running (pid {first.proc.pid}" in cli.out("status")
    assert first.proc.poll() is None


def test_a_node_still_starting_is_named_by_its_pid(cli):
    """The lock holder writes its pid at once; before its daemon.json exists it is "starting"
    (here the test process holds the lock, as a node would in its first second)."""
    fd = os.open(cli.home / "daemon.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{os.getpid()}\n".encode())
        before = files(cli.home)
        line = refused(cli, "run", "--listen", LOOPBACK, *QUIET)
        assert line == (f"error: a node is already running on {cli.home} (pid {os.getpid()}, still starting); "
                        f"stop it first, or use another --home")
        assert files(cli.home) == before and not (cli.home / "daemon.json").exists()
    finally:
        os.close(fd)


def test_a_killed_node_never_blocks_the_next_start(cli, daemons):
    first = start(daemons, cli)
    first.kill()  # SIGKILL: no clean-up at all; its daemon.json stays behind
    assert daemon_state(cli.home)["pid"] == first.proc.pid
    assert not cli.json("status")["running"]

    second = start(daemons, cli)
    status = cli.json("status")
    assert status["running"] and status["pid"] == second.proc.pid and status["addrs"] == [second.addr]
    assert second.stop() < 2.0 and second.proc.returncode == 0
    assert not (cli.home / "daemon.json").exists()
