"""How command-line commands talk to a running daemon of the same home.

The daemon listens on 127.0.0.1 at a free port and writes ``HOME/daemon.json`` (mode 0600, in
the 0700 home): its pid, its libp2p addresses, the control port and a random token. A command
connects, sends one JSON line ``{"token": …, "cmd": …, …}`` and reads one JSON line back:
``{"ok": true, …}`` or ``{"ok": false, "error": "…"}``. Only a process that can read the home
can read the token, so only the lab's operator can steer the daemon.

The client side (:func:`ask_daemon`) uses plain blocking sockets and imports nothing heavy: the
commands that use it must stay quick. The daemon's side is :func:`serve_control` (trio).
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


def ask_daemon(home_path: Path, cmd: str, timeout: float | None = 10, on_progress=None, **args) -> dict | None:
    """Send one command to the daemon; None if none runs. Raises FabnodeError on its refusal.
    With ``on_progress``, the daemon may send ``{"progress": {…}}`` lines before its answer
    (a fetch does), each handed to ``on_progress``."""
    state = read_state(home_path)
    if state is None or "control" not in state:
        return None
    if on_progress is not None:
        args["progress"] = True
    try:
        with socket.create_connection(("127.0.0.1", state["control"]), timeout=timeout) as sock:
            sock.sendall(json.dumps({"token": state["token"], "cmd": cmd, **args}).encode() + b"\n")
            with sock.makefile("rb") as f:
                while True:
                    line = f.readline(MAX_LINE)
                    progress = json.loads(line).get("progress") if line.startswith(b'{"progress"') else None
                    if progress is None:
                        break
                    on_progress(progress)
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


async def serve_control(answer, token, log, task_status=None) -> None:
    """Serve the control port on 127.0.0.1 (a free port, given to ``task_status.started``).
    ``answer(request, emit) -> dict`` (async) runs a command, and may call ``emit(progress)``
    (a dict) meanwhile: it goes out as a ``{"progress": …}`` line before the answer, the newest
    only if the client reads slowly; ``token()`` is the token to expect."""
    import trio

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    if task_status is not None:
        task_status.started(listeners[0].socket.getsockname()[1])

    async def connection(stream) -> None:
        from fabnode.node.http.web import token_matches

        async with stream:
            buf = b""
            with trio.move_on_after(10):
                while b"\n" not in buf and len(buf) < MAX_LINE:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    buf += chunk
            try:
                request = json.loads(buf.split(b"\n", 1)[0])
                given = request.get("token", "")
                # compared as bytes: compare_digest raises TypeError on non-ASCII text
                if not isinstance(given, str) or not token_matches(given, token()):
                    raise FabnodeError("wrong control token")
                reply = {"ok": True, **await _answer_with_progress(answer, request, stream)}
            except FabnodeError as exc:
                reply = {"ok": False, "error": str(exc)}
            except (ValueError, AttributeError):
                reply = {"ok": False, "error": "malformed control request"}
            except Exception as exc:
                log(f"internal error answering a local command: {type(exc).__name__}: {exc}")
                reply = {"ok": False, "error": f"the daemon failed: {type(exc).__name__}: {exc}"}
            try:
                await stream.send_all(json.dumps(reply).encode() + b"\n")
            except trio.BrokenResourceError:
                pass

    await trio.serve_listeners(connection, listeners)


async def _answer_with_progress(answer, request: dict, stream) -> dict:
    """Run ``answer``, sending what it emits as progress lines meanwhile (one at a time: while
    a line is being sent, newer progress replaces the waiting one)."""
    import trio

    latest: list = []
    wake = trio.Event()

    def emit(progress: dict) -> None:
        latest[:] = [progress]
        wake.set()

    async def send_progress() -> None:
        nonlocal wake
        while True:
            await wake.wait()
            wake = trio.Event()
            if latest:
                line = json.dumps({"progress": latest.pop()}).encode() + b"\n"
                try:
                    with trio.CancelScope(shield=True), trio.move_on_after(10):  # never half a line
                        await stream.send_all(line)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return

    from fabnode.protocol.errors import first_in_group

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_progress)
            try:
                return await answer(request, emit)
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # the command's own error, not a group of one
        raise first_in_group(group, FabnodeError) or group from None
