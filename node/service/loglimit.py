"""Log lines a hostile peer can cause, rate limited per peer (issue 12).

A peer that sends a thousand bad records or asks a thousand times for what we refuse must not
be able to flood the operator's log: :class:`LogLimiter` lets through ``per_minute`` lines per
key (a peer) per minute, then says once that it stops, and when the minute is over how many it
left out.
"""

from __future__ import annotations

from collections.abc import Callable

LINES_PER_MINUTE = 20
"""Lines about one peer's refusals (or rejected records) logged per minute; more are counted."""
MAX_KEYS = 10_000
"""Peers remembered at once; past this the oldest windows are forgotten (bounded memory)."""


class LogLimiter:
    def __init__(self, log: Callable[[str], None], per_minute: int = LINES_PER_MINUTE,
                 *, clock: Callable[[], float]) -> None:
        """``clock``: seconds, from the caller (the service passes the time it was given)."""
        self.log, self.per_minute, self.clock = log, per_minute, clock
        self._windows: dict[str, tuple[float, int]] = {}

    def say(self, key: str, line: str, *, stopping: str, left_out: Callable[[int], str]) -> bool:
        """Log ``line`` unless ``key`` had its ``per_minute`` lines this minute; the first line
        over says ``stopping``; the first line of the next minute is preceded by
        ``left_out(n)``. True if ``line`` was logged."""
        now = self.clock()
        start, count = self._windows.pop(key, (now, 0))
        if now - start > 60:
            if count > self.per_minute:
                self.log(left_out(count - self.per_minute))
            start, count = now, 0
        count += 1
        self._windows[key] = (start, count)  # re-inserted: the dict stays oldest-first
        if len(self._windows) > MAX_KEYS:
            del self._windows[next(iter(self._windows))]
        if count <= self.per_minute:
            self.log(line)
            return True
        if count == self.per_minute + 1:
            self.log(stopping)
        return False
