"""The daemon's HTTP side (docs/protocol.md §11): an IPFS trustless-gateway subset, safely.

Served by Hypercorn's trio worker inside the daemon's nursery (:func:`serve_http`), as a
Starlette app (:func:`make_app`). What it answers:

* ``GET /ipfs/CID[/PATH]?format=raw`` (or ``Accept: application/vnd.ipld.raw``): the one block
  the path resolves to, as ``application/vnd.ipld.raw``;
* ``GET /ipfs/CID[/PATH]?format=car`` (or ``Accept: application/vnd.ipld.car``): a CARv1 whose
  root is CID, holding the blocks from CID along PATH and then the whole DAG at PATH,
  depth-first, each once — what a client needs to verify the answer from CID alone;
* ``GET /ipfs/CID[/PATH]`` with neither: the file's bytes, or a plain listing of a folder.

Safety. Files come from other labs: every ``/ipfs/`` answer carries ``Content-Security-Policy:
sandbox`` and ``X-Content-Type-Options: nosniff``, and HTML, SVG and XML files are served as
attachments, so nothing from a bundle runs script in this origin. Paths are resolved only
through the DAG's own links, and a segment that is empty, ``.``, ``..`` or holds ``/``, ``\\``
or NUL is refused, so a path cannot leave its DAG. Only what this node holds is served; nothing
is fetched on a browser's behalf. Any request that is not GET or HEAD needs the token in
``HOME/http.token`` (``Authorization: Bearer …``); none changes the node yet.
"""

from __future__ import annotations

import html
import mimetypes
import secrets
from pathlib import Path

from fabnode.protocol.car import encode_header, encode_section
from fabnode.protocol.cid import cid_str, parse_cid
from fabnode.protocol.errors import FabnodeError, InvalidCID, MissingBlock, PathNotFound
from fabnode.protocol.paths import segment_problem
from fabnode.protocol.unixfs import decode as decode_unixfs, iter_file, resolve_crossing

from .fetch import dag_in_order

TOKEN_FILE = "http.token"
RAW = "application/vnd.ipld.raw"
CAR = "application/vnd.ipld.car"
IMMUTABLE = "public, max-age=29030400, immutable"
TEXT_TYPES = {".toml": "text/plain; charset=utf-8", ".md": "text/markdown; charset=utf-8",
              ".csv": "text/csv; charset=utf-8", ".scad": "text/plain; charset=utf-8"}
"""Types the files of an open-hardware bundle often have and ``mimetypes`` does not know."""
ATTACHMENT_TYPES = ("text/html", "image/svg+xml", "application/xhtml+xml", "text/xml", "application/xml",
                    "application/javascript", "text/javascript")


def http_token(home_path: Path) -> str:
    """The token that guards anything that would change the node (created once, mode 0600)."""
    import os

    path = home_path / TOKEN_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


class GatewayError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _parse(cid_path: str) -> tuple[bytes, list[str]]:
    cid_text, _, rest = cid_path.partition("/")
    try:
        root = parse_cid(cid_text)
    except (InvalidCID, FabnodeError) as exc:
        raise GatewayError(400, str(exc)) from None
    segments = rest.split("/") if rest else []
    if segments and segments[-1] == "":
        segments.pop()  # a trailing slash names the same folder
    for segment in segments:
        problem = segment_problem(segment)
        if problem:
            raise GatewayError(400, f"refusing a path with {problem}")
    return root, segments


def _walk(store, root: bytes, segments: list[str]) -> tuple[bytes, list[bytes]]:
    """(CID the path names, CIDs of the blocks crossed from root to it) — DAG links only."""
    try:
        return resolve_crossing(store.get, root, segments)
    except PathNotFound as exc:
        raise GatewayError(404, str(exc)) from None


def _wanted_format(request) -> str | None:
    fmt = request.query_params.get("format")
    if fmt is not None:
        if fmt not in ("raw", "car"):
            raise GatewayError(400, f"unsupported format {fmt!r} (this gateway serves raw and car)")
        return fmt
    accept = request.headers.get("accept", "")
    if RAW in accept:
        return "raw"
    if CAR in accept:
        return "car"
    return None


INTERNAL_ERROR = "internal error"
"""What a request that hit a bug answers, and the phrase its log line carries (the test suite
fails any test in which a daemon logged it)."""


class LogInternalErrors:
    """ASGI middleware: a request that raises is logged in one line (method, path, exception and
    where it was raised) and answered ``500 internal error`` in one line, never a traceback.

    Hypercorn would otherwise swallow the exception into its own (silenced) error log, and the
    operator would see a blank 500 with no trace of why (issue 11)."""

    def __init__(self, app, log) -> None:
        self.app, self.log = app, log

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            import traceback

            frame = traceback.extract_tb(exc.__traceback__)[-1]
            query = scope.get("query_string", b"").decode("latin-1")
            target = scope.get("path", "") + (f"?{query}" if query else "")
            self.log(f"http {INTERNAL_ERROR}: {scope.get('method')} {target[:200]}: {type(exc).__name__}: "
                     f"{str(exc)[:200]} (at {Path(frame.filename).name}:{frame.lineno})")
            if not started:
                body = f"{INTERNAL_ERROR}\n".encode()
                await send({"type": "http.response.start", "status": 500,
                            "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})


def make_app(store, *, token: str, pages=None, log=print):
    """The ASGI app: ``pages`` (:class:`fabnode.node.pages.Pages`) serves the lab's web pages;
    ``log`` takes one line per request that failed with a bug."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    def safe_headers(extra: dict | None = None) -> dict:
        return {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox", **(extra or {})}

    async def ipfs(request):
        cid_path = request.path_params["cid_path"]
        try:
            root, segments = _parse(cid_path)
            fmt = _wanted_format(request)
            target, crossed = _walk(store, root, segments)
            roots = " ".join(cid_str(c) for c in crossed + [target])
            common = {"X-Ipfs-Path": "/ipfs/" + cid_path, "X-Ipfs-Roots": roots, "Cache-Control": IMMUTABLE}
            if fmt == "raw":
                data = store.get(target)
                return Response(data, media_type=RAW, headers=safe_headers({
                    **common, "Etag": f'"{cid_str(target)}.raw"',
                    "Content-Disposition": f'attachment; filename="{cid_str(target)}.bin"'}))
            if fmt == "car":
                store.get(target)  # 404 now rather than a broken stream later

                async def car():  # async: the store's connection belongs to the trio thread
                    yield encode_header([root])
                    for cid in crossed:
                        yield encode_section(cid, store.get(cid))
                    for cid, data in dag_in_order(store, target, set(crossed)):
                        yield encode_section(cid, data)

                return StreamingResponse(car(), media_type=f"{CAR}; version=1; order=dfs; dups=n", headers=safe_headers({
                    **common, "Etag": f'"{cid_str(target)}.car"',
                    "Content-Disposition": f'attachment; filename="{cid_str(target)}.car"'}))
            node = decode_unixfs(target, store.get(target))
            if node.kind == "directory":
                base = "/ipfs/" + cid_path.rstrip("/")
                rows = "".join(f'<li><a href="{html.escape(base)}/{html.escape(link.name)}">{html.escape(link.name)}</a>'
                               f" ({link.tsize} bytes)</li>" for link in node.links)
                page = (f"<!doctype html><meta charset=utf-8><title>{html.escape(cid_path)}</title>"
                        f"<h1>/ipfs/{html.escape(cid_path)}</h1><ul>{rows}</ul>")
                return HTMLResponse(page, headers=safe_headers({**common, "Etag": f'"{cid_str(target)}.dir"'}))
            name = segments[-1] if segments else cid_str(target)
            media = TEXT_TYPES.get(Path(name).suffix.lower()) or mimetypes.guess_type(name)[0] \
                or "application/octet-stream"
            headers = safe_headers({**common, "Etag": f'"{cid_str(target)}"', "Content-Length": str(node.filesize)})
            if media.split(";")[0] in ATTACHMENT_TYPES:
                headers["Content-Disposition"] = f'attachment; filename="{name}"'
            async def body():
                for piece in iter_file(store.get, target):
                    yield piece

            return StreamingResponse(body(), media_type=media, headers=headers)
        except GatewayError as exc:
            return PlainTextResponse(str(exc) + "\n", status_code=exc.status, headers=safe_headers())
        except MissingBlock as exc:
            return PlainTextResponse(f"not held on this node: {exc}\n", status_code=404, headers=safe_headers())
        except FabnodeError as exc:
            return PlainTextResponse(f"{exc}\n", status_code=502, headers=safe_headers())

    page_headers = {"Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
                                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
                    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}

    def page(render):
        async def handler(request):
            if pages is None:
                return PlainTextResponse("fabnode: see /ipfs/CID for content this node holds\n")
            try:
                return HTMLResponse(render(request), headers=page_headers)
            except (FabnodeError, ValueError) as exc:
                return HTMLResponse(f"<!doctype html><meta charset=utf-8><title>Not found</title><p>{html.escape(str(exc))}"
                                    '</p><p><a href="/">Home</a></p>', status_code=404, headers=page_headers)
        return handler

    index = page(lambda r: pages.home_page())
    designs_page = page(lambda r: pages.designs_page(r.query_params.get("q") or None))
    design_page = page(lambda r: pages.design_page(r.path_params["cid"]))
    version_page = page(lambda r: pages.version_page(r.path_params["cid"]))

    class TokenForChanges(BaseHTTPMiddleware):
        """Whatever is not a read needs the home's token."""

        async def dispatch(self, request, call_next):
            if request.method not in ("GET", "HEAD"):
                given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
                if not secrets.compare_digest(given, token):
                    return PlainTextResponse("this needs the token from the node's home folder\n", status_code=403)
            return await call_next(request)

    app = Starlette(routes=[Route("/", index), Route("/designs", designs_page), Route("/design/{cid}", design_page),
                            Route("/version/{cid}", version_page), Route("/ipfs/{cid_path:path}", ipfs)],
                    middleware=[Middleware(TokenForChanges)],
                    exception_handlers={Exception: lambda request, exc: PlainTextResponse(f"{INTERNAL_ERROR}\n", 500)})
    return LogInternalErrors(app, log)


async def serve_http(app, sock, task_status) -> None:
    """Serve ``app`` on ``sock`` (bound and listening, node/addresses.py) until cancelled; reports
    the address through ``task_status``. The daemon binds the socket before it starts, so an
    address in use is refused in one line at once, and port 0 works."""
    import logging

    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve

    host, port = sock.getsockname()[:2]
    bound = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # Hypercorn owns (and closes) the listening socket
    config.graceful_timeout = 1  # the daemon must stop within 2 s
    config.accesslog = None
    config.errorlog = logging.getLogger("fabnode.http.quiet")
    config.errorlog.setLevel(logging.CRITICAL)
    task_status.started(bound)
    await serve(app, config, shutdown_trigger=trio.sleep_forever)
