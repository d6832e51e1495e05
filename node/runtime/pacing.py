"""Every write of the node through one priority pacer (the queue itself: node/service/pacing.py).

:class:`LinkPacer` is shared by the sync streams, gossip announcements and the fetch server.
:meth:`LinkPacer.write` cuts a write into pieces of at most ``piece_bytes()`` and asks the pure
:class:`PriorityPacer` for each before writing it, so that records asked for while a bundle is
being served go before the bundle's next piece. A waiting writer sleeps until the pacer's next
slot and then grants what may go (any waiter may hand out grants: no task of its own).
"""

from __future__ import annotations

import itertools

import trio

from fabnode.node.service.pacing import BUNDLES, OWN_BUNDLES, RECORDS, PriorityPacer  # noqa: F401 (re-exported)

from .wire import write_all


UNPACED_PIECE = 64 << 10
"""Without a cap, writes are still cut this small, so progress is seen while a slow link drains."""


def _now_ms() -> float:
    return trio.current_time() * 1000


class LinkPacer:
    def __init__(self, rate: int) -> None:
        self.pacer = PriorityPacer(rate)
        self._events: dict[int, trio.Event] = {}
        self._keys = itertools.count()
        self._changed = trio.Event()

    @property
    def rate(self) -> int:
        return self.pacer.rate

    async def acquire(self, priority: int, nbytes: int, protocol: str = "", peer: str = "") -> None:
        """Return once ``nbytes`` may be written (at once when there is no cap)."""
        key = next(self._keys)
        if self.pacer.request(key, priority, nbytes, _now_ms(), protocol=protocol, peer=peer):
            return
        event = self._events[key] = trio.Event()
        try:
            while not event.is_set():
                self._hand_out()
                if event.is_set():
                    break
                at = self.pacer.next_ms()
                changed = self._changed
                with trio.move_on_at((at if at is not None else _now_ms() + 1000) / 1000):
                    await changed.wait()  # a grant elsewhere may have been ours
        except BaseException:
            if not event.is_set():
                self.pacer.cancel(key)
            raise
        finally:
            self._events.pop(key, None)

    def _hand_out(self) -> None:
        granted = self.pacer.grant(_now_ms())
        for key in granted:
            event = self._events.get(key)
            if event is not None:
                event.set()
        if granted:
            self._changed.set()
            self._changed = trio.Event()

    async def write(self, stream, data: bytes, priority: int, protocol: str, peer: str = "", on_piece=None) -> None:
        """Write ``data`` to a libp2p stream in paced pieces (order kept); ``on_piece()`` after each."""
        piece = self.pacer.piece_bytes() if self.pacer.rate else UNPACED_PIECE
        for start in range(0, len(data), piece):
            chunk = data[start:start + piece]
            await self.acquire(priority, len(chunk), protocol, peer)
            await write_all(stream, chunk)  # a progress deadline, and room in the peer's window
            if on_piece is not None:
                on_piece()

    def status(self) -> dict:
        return {"upload_bytes_per_second": self.pacer.rate, "sent_bytes": dict(self.pacer.sent),
                "waiting_bytes": self.pacer.waiting(),
                "sent_bytes_per_peer": {p: dict(c) for p, c in list(self.pacer.sent_to.items())[-20:]}}


def patch_libp2p_for_thin_links() -> None:
    """``libp2p.io.utils.read_exactly`` (py-libp2p 0.8.1) gives up after 100 partial reads. Noise
    messages are up to 64 KiB, and a slow link delivers them a segment at a time: at 32 kB/s in
    512-byte pieces, the 101st read came at 51,710 of 64,056 bytes and the whole connection was
    closed ("Connection closed during read operation"), 5 s into any transfer (issue 14; links
    with MSS 536, PPP and some mobile links, are that small). Now only reads that bring
    *nothing* count against the limit: progress is not a retry. libp2p is pinned to 0.8.1 for
    such patches; if the function's signature changed, nothing is patched. (Yamux's own 5 s
    give-up on a shut window is kept clear of by ``wire.write_all``.)"""
    _patch_read_exactly()


async def _read_exactly_counting_progress(reader, n, retry_count=100):
    buffer = bytearray()
    empty = 0
    while len(buffer) < n:
        chunk = await reader.read(n - len(buffer))
        if chunk:
            buffer.extend(chunk)
            continue
        empty += 1
        if empty > retry_count:
            raise IncompleteReadError(  # noqa: F821 (resolved in libp2p.io.utils, whose code this becomes)
                f"Connection closed during read operation: expected {n} bytes but received {len(buffer)} bytes",
                expected_bytes=n, received_bytes=len(buffer))
    return bytes(buffer)


def _patch_read_exactly() -> None:
    from libp2p.io import utils

    original = utils.read_exactly
    if getattr(original, "_fabnode_patched", False) or not hasattr(utils, "IncompleteReadError"):
        return
    if original.__code__.co_varnames[:3] != ("reader", "n", "retry_count") or original.__code__.co_freevars:
        return
    # every module imported the function object itself: its code is replaced, not the name
    original.__code__ = _read_exactly_counting_progress.__code__
    original._fabnode_patched = True
