"""Ctrl-C and SIGTERM in the command line: one line, the usual exit status, nothing half-done.

``fabnode`` installs :func:`install`'s handler for SIGINT *and* SIGTERM, so both raise
:class:`Interrupted` (a ``KeyboardInterrupt``) where the command is: ``finally`` blocks run, a
transaction rolls back, ``get`` removes its temporary folder, ``export`` its partial file. The
command line then prints ``error: interrupted`` (SIGINT, exit 130) or ``error: terminated``
(SIGTERM, exit 143): 128 + the signal number, as shells report a process killed by it.

**The point of no return.** A command's changes are one transaction, so an interrupt before its
COMMIT leaves the store as it was. SQLite runs the COMMIT (and the checkpoint that follows it)
without looking at signals, and Python raises the interrupt only once that returns, when the
changes are already there. So a command's final transaction calls :func:`point_of_no_return`
just before COMMIT: from then on an interrupt is only noted, the command completes and prints
its result (exit 0), and the command line adds a note that the interrupt came too late. This
keeps the rule simple for an operator: "error: interrupted" means nothing was stored; a printed
CID means it was.

Cleanup that must not be cut short by a second Ctrl-C runs under :func:`deferred`.
Worker processes ignore both signals (:func:`ignore_in_worker`): the command stops them.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM; a KeyboardInterrupt, so trio, libp2p and ``except Exception`` treat
    it as Ctrl-C."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def exit_code(exc: BaseException) -> int:
    """130 for Ctrl-C, 143 for SIGTERM."""
    return 128 + getattr(exc, "signum", signal.SIGINT)


def message(exc: BaseException) -> str:
    return "terminated" if getattr(exc, "signum", signal.SIGINT) == signal.SIGTERM else "interrupted"


class _State:
    installed = False
    final = False          # past the point of no return: interrupts are noted, not raised
    deferring = 0          # inside deferred(): interrupts wait for the end of the block
    pending: int | None = None
    late: int | None = None
    previous: dict = {}


_state = _State()


def _handler(signum: int, frame) -> None:
    if _state.final:
        _state.late = _state.late or signum
        return
    if _state.deferring:
        _state.pending = _state.pending or signum
        return
    raise Interrupted(signum)


def install() -> None:
    """SIGINT and SIGTERM raise :class:`Interrupted` from now on (main thread only)."""
    _state.final, _state.deferring, _state.pending, _state.late = False, 0, None, None
    _state.previous = {s: signal.getsignal(s) for s in _SIGNALS}
    for s in _SIGNALS:
        signal.signal(s, _handler)
    _state.installed = True


def uninstall() -> int | None:
    """Put the previous handlers back; returns the signal that came after the point of no
    return, if one did (the command completed anyway)."""
    if _state.installed:
        for s, handler in _state.previous.items():
            signal.signal(s, handler)
        _state.installed = False
    late, _state.late, _state.final = _state.late, None, False
    return late


def point_of_no_return() -> None:
    """Called just before the COMMIT of a command's final transaction: an interrupt that was
    already raised has rolled it back; one that comes from now on lets the command finish."""
    if _state.installed:
        _state.final = True


def commit_failed() -> None:
    """The final COMMIT failed after all: nothing was stored, so an interrupt noted meanwhile
    is raised again (else the failure itself is reported)."""
    if not _state.final:
        return
    _state.final = False
    late, _state.late = _state.late, None
    if late is not None:
        raise Interrupted(late)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold interrupts during cleanup (removing a temporary folder), raise them at the end."""
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
        if not _state.deferring and _state.pending is not None:
            signum, _state.pending = _state.pending, None
            raise Interrupted(signum)


def ignore_in_worker() -> None:
    """Initializer of worker processes: Ctrl-C reaches the whole process group, and a worker
    that raised would print a traceback; the command itself stops its workers."""
    for s in _SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def find_interrupt(exc: BaseException) -> BaseException | None:
    """The KeyboardInterrupt inside ``exc`` (trio and libp2p nurseries wrap what was raised
    in their tasks in exception groups), or None."""
    from fabnode.protocol.errors import first_in_group

    return first_in_group(exc, KeyboardInterrupt)
