"""A shaped link on loopback: a TCP proxy that behaves like a slow, far or broken line.

Tests and benchmarks put it between two programs on 127.0.0.1 (fabnode against fabnode, rsync
against rsync) to see how they fare on the links labs really have. It never connects anywhere
but the target it is given, which must be on 127.0.0.1.

Theory of operation: every accepted connection is paired with one to the target, and each
direction is a pipe with a rate and a one-way delay. The pipe's reader takes at most a small
chunk, holds it for the chunk's serialisation time at the direction's rate (so the sender feels
the bottleneck as TCP back-pressure), then queues it to be written ``delay`` later; the writer
writes chunks in order at their due time. ``stall`` stops both directions of every connection
(bytes wait, connections stay); ``cut`` resets every connection (RST, as a dropped radio link
looks to the ends) and resets new ones until the link is back up. ``carried`` counts the bytes
written to each side, so a test can check what a transfer cost on the wire.

Use it from any test, sync or trio: the proxy runs its own trio loop in a thread.

    with LinkShaper(target_port, rate=1_000_000, delay=0.04) as link:
        ... dial 127.0.0.1:link.port ...
        link.cut(down=8)          # reset everything; refuse for 8 s
        link.carried["down"]      # bytes target → client so far

Or as a process (benchmarks): ``python tests/linkshaper.py TARGET_PORT --rate 2000000
--delay-ms 40`` prints ``listening on PORT`` and runs until killed.
"""

from __future__ import annotations

import argparse
import math
import socket
import struct
import threading

import trio

CHUNK = 16 * 1024
"""Largest piece moved at once; smaller on slow links so pacing stays smooth."""
SEGMENT = 1448
"""Smallest piece: one TCP segment on an Ethernet-sized path, as a real slow link delivers them.
(py-libp2p 0.8.1 reads a 64 KiB Yamux frame in at most 101 reads, so a path whose segments are
under ~650 bytes breaks it: docs/design.md, "Thin links and py-libp2p".)"""


def _chunk_for(rate: float) -> int:
    """About 10 ms worth of bytes at ``rate``, between one segment and :data:`CHUNK`."""
    if not rate:
        return CHUNK
    return max(SEGMENT, min(CHUNK, int(rate / 100)))


def _reset(sock: trio.SocketStream) -> None:
    """Close with an RST rather than a FIN: the far end sees the connection break."""
    try:
        sock.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.socket.close()


class LinkShaper:
    """A shaped TCP link from ``127.0.0.1:port`` to ``127.0.0.1:target_port``.

    ``rate`` (bytes/s, 0 = unlimited) applies to each direction unless ``rate_up`` (client →
    target) or ``rate_down`` (target → client) say otherwise; ``delay`` is one way, in seconds.
    All settings may be changed while it runs.
    """

    def __init__(self, target_port: int, *, rate: float = 0, rate_up: float | None = None,
                 rate_down: float | None = None, delay: float = 0.0, port: int = 0) -> None:
        self.target_port = target_port
        self.rates = {"up": rate if rate_up is None else rate_up, "down": rate if rate_down is None else rate_down}
        self.delay = delay
        self.port = port
        self.carried = {"up": 0, "down": 0}
        """Bytes delivered client → target ("up") and target → client ("down")."""
        self.connections = 0
        """Connections accepted and paired with the target since the start."""
        self.refused = 0
        """Connections reset because the link was down."""
        self._down_until = -math.inf
        self._stalled_until = -math.inf
        self._open: set[tuple[trio.SocketStream, trio.SocketStream]] = set()
        self._token: trio.lowlevel.TrioToken | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: trio.Event | None = None
        self._error: BaseException | None = None

    # ---------------------------------------------------------------- control (any thread)

    def __enter__(self) -> "LinkShaper":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True, name="linkshaper")
        self._thread.start()
        if not self._ready.wait(10) or self._error:
            raise RuntimeError(f"link shaper did not start: {self._error!r}")

    def close(self) -> None:
        if self._token is not None and self._thread and self._thread.is_alive():
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
            self._thread.join(10)

    def _call(self, fn, *args):
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def cut(self, down: float) -> None:
        """Reset every connection now and reset new ones for ``down`` seconds."""
        self._call(self._cut, down)

    def up(self) -> None:
        """End a cut or a stall now."""
        def lift() -> None:
            self._down_until = self._stalled_until = -math.inf
        self._call(lift)

    def stall(self, seconds: float) -> None:
        """Carry nothing either way for ``seconds``; connections stay open."""
        def hold() -> None:
            self._stalled_until = trio.current_time() + seconds
        self._call(hold)

    def set_rate(self, rate: float, direction: str | None = None) -> None:
        for d in ([direction] if direction else ["up", "down"]):
            self.rates[d] = rate

    @property
    def is_down(self) -> bool:
        return self._call(lambda: trio.current_time() < self._down_until)

    @property
    def total(self) -> int:
        return self.carried["up"] + self.carried["down"]

    # ---------------------------------------------------------------- the proxy (its own trio loop)

    def _cut(self, down: float) -> None:
        self._down_until = trio.current_time() + down
        for client, target in list(self._open):
            _reset(client)
            _reset(target)
        self._open.clear()

    async def _main(self) -> None:
        try:
            self._token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
            self.port = listeners[0].socket.getsockname()[1]
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            raise
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._serve, listeners)
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    async def _serve(self, client: trio.SocketStream) -> None:
        if trio.current_time() < self._down_until:
            self.refused += 1
            _reset(client)
            return
        try:
            target = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        except OSError:
            _reset(client)
            return
        for sock in (client, target):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        self.connections += 1
        pair = (client, target)
        self._open.add(pair)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pipe, client, target, "up", nursery.cancel_scope)
                nursery.start_soon(self._pipe, target, client, "down", nursery.cancel_scope)
        finally:
            if pair in self._open:
                self._open.discard(pair)
                for sock in pair:
                    try:
                        sock.socket.close()
                    except OSError:
                        pass

    async def _wait_while_stalled(self) -> None:
        while trio.current_time() < self._stalled_until:
            await trio.sleep_until(self._stalled_until)

    async def _pipe(self, source: trio.SocketStream, sink: trio.SocketStream, direction: str,
                    scope: trio.CancelScope) -> None:
        send, receive = trio.open_memory_channel(math.inf)

        async def deliver() -> None:
            async for due, data in receive:
                await trio.sleep_until(due)
                await self._wait_while_stalled()
                try:
                    await sink.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    scope.cancel()
                    return
                self.carried[direction] += len(data)
            try:
                await sink.send_eof()  # the source closed its side: pass the FIN on, in order
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(deliver)
            departs = trio.current_time()
            async with send:
                while True:
                    await self._wait_while_stalled()
                    rate = self.rates[direction]
                    try:
                        data = await source.receive_some(_chunk_for(rate))
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        scope.cancel()
                        return
                    if not data:
                        break
                    now = trio.current_time()
                    departs = max(now, departs) + (len(data) / rate if rate else 0)
                    await trio.sleep_until(departs)  # the bottleneck: the sender feels it as back-pressure
                    send.send_nowait((departs + self.delay, data))


def main() -> None:
    parser = argparse.ArgumentParser(description="A shaped TCP link on 127.0.0.1 (tests and benchmarks only).")
    parser.add_argument("target_port", type=int)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0, help="bytes per second each way (0: unlimited)")
    parser.add_argument("--delay-ms", type=float, default=0, help="one-way delay")
    args = parser.parse_args()
    link = LinkShaper(args.target_port, rate=args.rate, delay=args.delay_ms / 1000, port=args.port)
    link.start()
    print(f"listening on {link.port}", flush=True)
    try:
        link._thread.join()
    except KeyboardInterrupt:
        link.close()


if __name__ == "__main__":
    main()
