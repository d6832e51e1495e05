"""A bug behind an HTTP request is one log line and a one-line "internal error" page, never a
blank 500 that nobody hears about (issue 11). The test suite's daemon helpers fail any test in
which a daemon logged such a line (tests/daemons.py, tests/conftest.py)."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from fabnode.node.http.web import INTERNAL_ERROR, LogInternalErrors


def _app(lines: list[str]):
    def broken(request):
        return {}["no such key"]

    async def broken_mid_stream(request):
        async def body():
            yield b"first part\n"
            raise ValueError("the file went away")
        return StreamingResponse(body())

    app = Starlette(routes=[Route("/broken", broken), Route("/stream", broken_mid_stream),
                            Route("/fine", lambda r: PlainTextResponse("fine"))],
                    exception_handlers={Exception: lambda r, e: PlainTextResponse(f"{INTERNAL_ERROR}\n", 500)})
    return LogInternalErrors(app, lines.append)


async def test_a_handler_that_raises_is_logged_with_the_request_and_answers_one_line():
    lines: list[str] = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app(lines)), base_url="http://t") as client:
        fine = await client.get("/fine")
        broken = await client.get("/broken?q=1")
    assert fine.status_code == 200 and lines[:-1] == []
    assert broken.status_code == 500 and broken.text == "internal error\n"
    assert len(lines) == 1
    line = lines[0]
    assert line.startswith("http internal error: GET /broken?q=1: KeyError: 'no such key' (at test_http_errors.py:")


async def test_an_error_after_the_answer_started_is_still_logged():
    lines: list[str] = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app(lines)), base_url="http://t") as client:
        try:
            await client.get("/stream")
        except Exception:
            pass  # the body was cut: what the client sees depends on the transport
    assert len(lines) == 1 and "GET /stream: ValueError: the file went away" in lines[0]
