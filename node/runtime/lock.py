"""One node per home: ``fabnode run`` holds an exclusive lock on ``HOME/daemon.lock``.

Two daemons of one home would share one peer ID (peers would see one node flicker between two
machines' connections) and the second would overwrite, then on stopping delete, the first's
``daemon.json``, so local commands would lose the running node. Hence the lock, taken before
anything else happens:

* ``flock(LOCK_EX | LOCK_NB)``, held for the life of the process: the kernel releases it when
  the process ends however it ends (Ctrl-C, SIGKILL, a crash), so a dead node never blocks the
  next start, unlike a pid file alone.
* The lock holder writes its pid into the file at once, so a refused second start can name the
  running node even before that node has written ``daemon.json`` (libp2p takes a second to
  start); the addresses come from ``daemon.json`` once it is there.
* The file is never deleted: a process could open it, another delete it, and a third create
  and lock a new one, and two nodes would each hold a lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from fabnode.protocol.errors import FabnodeError

from fabnode.node.runtime.control import read_state

LOCK_FILE = "daemon.lock"


def lock_home(home_path: Path) -> int:
    """Take the home's lock and write our pid into it; the returned descriptor holds the lock
    until it is closed or the process ends. Raises FabnodeError naming the node that holds it."""
    fd = os.open(home_path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_pid(fd)
        os.close(fd)
        raise FabnodeError(f"a node is already running on {home_path} ({_describe(home_path, holder)}); "
                           f"stop it first, or use another --home") from None
    except BaseException:
        os.close(fd)
        raise
    pid = f"{os.getpid()}\n".encode()
    os.pwrite(fd, pid, 0)
    os.ftruncate(fd, len(pid))
    return fd


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except ValueError:
        return None  # the holder has not written its pid yet


def _describe(home_path: Path, pid: int | None) -> str:
    """``pid 123, listening on ADDR`` from daemon.json when it is that node's; else "still starting"."""
    state = read_state(home_path)
    if pid is None:
        return "still starting"
    if state is None or state.get("pid") != pid or not state.get("addrs"):
        return f"pid {pid}, still starting"
    return f"pid {pid}, listening on {', '.join(state['addrs'])}"
