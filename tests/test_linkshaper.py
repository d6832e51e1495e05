"""The link shaper itself (tests/linkshaper.py): it must really slow, delay, stall, cut and count.

Only lower bounds on time are asserted (a loaded machine is slower, never faster), each with a
generous upper deadline so a broken shaper fails instead of hanging.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from linkshaper import LinkShaper


class Sink:
    """A server on 127.0.0.1 that echoes what it receives (or swallows it, counting)."""

    def __init__(self, echo: bool = True) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.echo = echo
        self.received = 0
        self.accepted = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                self.received += len(data)
                if self.echo:
                    try:
                        conn.sendall(data)
                    except OSError:
                        return

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def sink():
    s = Sink()
    yield s
    s.close()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
    return sock


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk = sock.recv(min(65536, n - got))
        if not chunk:
            raise ConnectionError(f"closed after {got} of {n} bytes")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def test_carries_bytes_both_ways_in_order_and_counts_them(sink):
    payload = bytes(range(256)) * 4000  # 1,024,000 bytes with a pattern that shows reordering
    with LinkShaper(sink.port) as link, _connect(link.port) as sock:
        threading.Thread(target=sock.sendall, args=(payload,), daemon=True).start()
        assert _recv_exactly(sock, len(payload)) == payload
        # the count follows the write the client has just read from: poll it, with a deadline
        deadline = time.monotonic() + 10
        while link.carried != {"up": len(payload), "down": len(payload)} and time.monotonic() < deadline:
            time.sleep(0.01)
        assert link.carried == {"up": len(payload), "down": len(payload)}
        assert link.connections == 1


def test_rate_limits_each_direction(sink):
    size = 200_000
    with LinkShaper(sink.port, rate_up=100_000, rate_down=0) as link, _connect(link.port) as sock:
        started = time.monotonic()
        threading.Thread(target=sock.sendall, args=(b"x" * size,), daemon=True).start()
        _recv_exactly(sock, size)
        took = time.monotonic() - started
    assert 1.8 <= took < 20, took  # 200 kB at 100 kB/s: at least 2 s less one chunk's slack


def test_delay_is_one_way(sink):
    with LinkShaper(sink.port, delay=0.25) as link, _connect(link.port) as sock:
        started = time.monotonic()
        sock.sendall(b"ping")
        assert _recv_exactly(sock, 4) == b"ping"
        took = time.monotonic() - started
    assert 0.5 <= took < 10, took  # there and back: twice the one-way delay


def test_cut_resets_connections_and_refuses_new_ones_until_up(sink):
    with LinkShaper(sink.port) as link:
        sock = _connect(link.port)
        sock.sendall(b"hello")
        assert _recv_exactly(sock, 5) == b"hello"
        link.cut(down=60)
        with pytest.raises(OSError):  # reset, or closed: the connection is gone
            sock.settimeout(10)
            for _ in range(100):
                sock.sendall(b"more")
                if not sock.recv(100):
                    raise ConnectionError("closed")
        sock.close()
        refused = _connect(link.port)  # the listener takes it, then resets it: nothing gets through
        refused.settimeout(10)
        with pytest.raises(OSError):
            refused.sendall(b"anyone?")
            if not refused.recv(100):
                raise ConnectionError("closed")
        refused.close()
        assert link.refused >= 1 and link.is_down
        accepted = sink.accepted
        link.up()
        with _connect(link.port) as again:
            again.sendall(b"back")
            assert _recv_exactly(again, 4) == b"back"
        assert sink.accepted == accepted + 1


def test_stall_holds_bytes_without_closing(sink):
    with LinkShaper(sink.port) as link, _connect(link.port) as sock:
        link.stall(0.6)
        started = time.monotonic()
        sock.sendall(b"wait")
        assert _recv_exactly(sock, 4) == b"wait"
        assert time.monotonic() - started >= 0.5
        assert link.connections == 1


def test_target_must_answer_or_the_client_is_reset():
    unused = socket.create_server(("127.0.0.1", 0))
    port = unused.getsockname()[1]
    unused.close()  # nothing listens there now
    with LinkShaper(port) as link:
        with pytest.raises(OSError):  # the reset may come as early as the connect itself
            with _connect(link.port) as sock:
                sock.settimeout(10)
                sock.sendall(b"x")
                if not sock.recv(10):
                    raise ConnectionError("closed")
        assert link.connections == 0
