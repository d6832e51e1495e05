"""How command-line commands talk to a running daemon of the same home.

The daemon listens on 127.0.0.1 at a free port and writes ``HOME/daemon.json`` (mode 0600, in
the 0700 home): its pid, its libp2p addresses, the control port and a random token. A command
connects, sends one JSON line ``{"token": …, "cmd": …, …}`` and reads one JSON line back:
``{"ok": true, …}`` or ``{"ok": false, "error": "…"}``. Only a process that can read the home
can read the token, so only the lab's operator can steer the daemon.

The client side (:func:`ask_daemon`) uses plain blocking sockets and imports nothing heavy: the
commands that use it must stay quick.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from fabnode.protocol.errors import FabnodeError

STATE_FILE = "daemon.json"
MAX_LINE = 1 << 20


def write_state(home_path: Path, state: dict) -> None:
    path = home_path / STATE_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f)
    os.replace(tmp, path)


def read_state(home_path: Path) -> dict | None:
    """The running daemon's state file, or None when no daemon of this home is alive."""
    try:
        state = json.loads((home_path / STATE_FILE).read_text())
        os.kill(state["pid"], 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state


def ask_daemon(home_path: Path, cmd: str, timeout: float | None = 10, **args) -> dict | None:
    """Send one command to the daemon; None if none runs. Raises FabnodeError on its refusal."""
    state = read_state(home_path)
    if state is None or "control" not in state:
        return None
    try:
        with socket.create_connection(("127.0.0.1", state["control"]), timeout=timeout) as sock:
            sock.sendall(json.dumps({"token": state["token"], "cmd": cmd, **args}).encode() + b"\n")
            with sock.makefile("rb") as f:
                line = f.readline(MAX_LINE)
    except OSError:
        return None
    if not line:
        raise FabnodeError("the daemon closed the connection without answering")
    reply = json.loads(line)
    if not reply.pop("ok", False):
        raise FabnodeError(reply.get("error", "the daemon refused"))
    return reply


def poke_daemon(home_path: Path) -> bool:
    """Ask a running daemon to announce its outbox now (it also looks by itself every second)."""
    try:
        return ask_daemon(home_path, "announce", timeout=2) is not None
    except FabnodeError:
        return False
