"""HTTP budgets against hostile clients (issue 12), in-process: serve_http on 127.0.0.1 with a
tiny app, and the helpers that build headers and compare tokens."""

from __future__ import annotations

import re
import urllib.parse

import pytest
import trio

from fabnode.node.runtime.addresses import bind_http
from fabnode.node.http.web import content_disposition, host_name, serve_http, token_matches


def _endless_app(ended: list[str], made: list[int] | None = None):
    """Streams 64 KiB pieces for ever; notes in ``ended`` when a stream stopped, and counts the
    pieces made in ``made``."""
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def endless(request):
        async def body():
            try:
                while True:
                    if made is not None:
                        made[0] += 1
                    yield b"x" * 65536
            finally:
                ended.append(request.url.path)
        return StreamingResponse(body())

    return Starlette(routes=[Route("/{name}", endless)])


async def _ask(port: int, name: str) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(f"GET /{name} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return stream


async def test_a_client_that_never_reads_is_dropped_and_its_slot_serves_the_next():
    """One connection allowed, 0.5 s per piece: a second client is not even accepted while the
    first holds the slot (the cap), and is answered once the first is dropped (the timeout)."""
    ended: list[str] = []
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(lambda task_status: serve_http(
            _endless_app(ended), bind_http("127.0.0.1:0", ""), task_status, max_connections=1, send_timeout=0.5))
        port = int(bound.rpartition(":")[2])
        stuck = await _ask(port, "stuck")
        honest = await _ask(port, "honest")
        with trio.move_on_after(0.3) as waited:
            await honest.receive_some(100)
        assert waited.cancelled_caught, "a second connection was served beyond the cap of one"
        with trio.fail_after(10):
            first = await honest.receive_some(100)
        assert first.startswith(b"HTTP/1.1 200")
        assert ended == ["/stuck"], "the client that stopped reading was not dropped"
        with trio.fail_after(10):  # what it had been sent, then the end
            while True:
                try:
                    if not await stuck.receive_some(1 << 20):
                        break
                except trio.BrokenResourceError:
                    break
        await honest.aclose()
        await stuck.aclose()
        nursery.cancel_scope.cancel()


async def test_a_stuck_client_does_not_hold_up_shutdown():
    """Hypercorn shields its sends from cancellation; ours are aborted when the server stops."""
    ended: list[str] = []
    made = [0]
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(lambda task_status: serve_http(
            _endless_app(ended, made), bind_http("127.0.0.1:0", ""), task_status, send_timeout=20))
        stuck = await _ask(int(bound.rpartition(":")[2]), "stuck")
        with trio.fail_after(10):
            await stuck.receive_some(100)  # the answer started; now nobody reads
            seen = []  # until the server is blocked in a send: no new piece over 5 polls
            while len(seen) < 5 or len(set(seen[-5:])) > 1:
                seen.append(made[0])
                await trio.sleep(0.05)
        start = trio.current_time()
        nursery.cancel_scope.cancel()
    assert trio.current_time() - start < 2
    await stuck.aclose()


HOSTILE = 'setup.exe";x=".html'


@pytest.mark.parametrize("name, fallback", [
    (HOSTILE, "setup.exe_;x=_.html"),
    ("plan ñandú €.svg", "plan _and_ _.svg"),
    ("a\\b\r\nSet-Cookie: x=1.html", "a_b__Set-Cookie: x=1.html"),
    ("100%.html", "100_.html"),
    ("", "download"),
])
def test_content_disposition_is_rfc_6266_whatever_the_name(name, fallback):
    value = content_disposition(name)
    assert value.startswith(f'attachment; filename="{fallback}"; filename*=UTF-8\'\'')
    assert all(0x20 <= b < 0x7F for b in value.encode("ascii"))  # one header line, ASCII only
    # RFC 6266 grammar: disposition-type, then ; name=(token | quoted-string): nothing smuggled in
    params = re.fullmatch(r'attachment((?:; [!#$%&\'*+.^_`|~0-9A-Za-z-]+=(?:"(?:[^"\\]|\\.)*"|[^";\s]+))*)', value)
    assert params, value
    assert [p.split("=", 1)[0] for p in params[1].split("; ")[1:]] == ["filename", "filename*"]
    encoded = value.split("; filename*=UTF-8''", 1)[1]
    assert re.fullmatch(r"[!#$&+.^_`|~0-9A-Za-z%-]*", encoded)  # RFC 5987 attr-chars and %XX only
    assert urllib.parse.unquote(encoded, errors="strict") == (name or "download")  # the exact name back


@pytest.mark.parametrize("given", ["é", "x" * 100_000, "\udc80", b"\xff\xfe", "", "wrong"])
def test_tokens_compare_as_bytes_and_never_raise(given):
    assert token_matches(given, "right-token") is False
    assert token_matches("right-token", "right-token") and token_matches(b"right-token", "right-token")


@pytest.mark.parametrize("header, name", [
    (b"127.0.0.1:8080", "127.0.0.1"), (b"LOCALHOST.", "localhost"), (b"[::1]:80", "[::1]"),
    (b"evil.example:8080", "evil.example"), (b"", ""), (b"[::1", "[::1"), (b"\xff:1", "\xff"),
])
def test_host_name_drops_port_and_case(header, name):
    assert host_name(header) == name
