"""The daemon's HTTP side (docs/protocol.md §11): an IPFS path and trustless gateway, safely.

Served by Hypercorn's trio worker inside the daemon's nursery (:func:`serve_http`), as a
Starlette app (:func:`make_app`). What it answers:

* ``GET /ipfs/CID[/PATH]?format=raw`` (or ``Accept: application/vnd.ipld.raw``): the one block
  the path resolves to, as ``application/vnd.ipld.raw`` (``dag-cbor`` likewise, for DAG-CBOR
  blocks such as signed records);
* ``GET /ipfs/CID[/PATH]?format=car`` (or ``Accept: application/vnd.ipld.car``): a CARv1 whose
  root is CID, holding the blocks from CID along PATH and then the DAG at PATH as ``dag-scope``
  and ``entity-bytes`` scope it, depth-first, each once unless ``dups=y`` — what a client needs
  to verify the answer from CID alone;
* ``GET /ipfs/CID[/PATH]?format=zip[&filename=NAME.zip]``: the files at PATH as a ZIP a lab
  without IPFS tools can open, streamed as the DAG is walked (node/http/zipstream.py);
* ``GET /ipfs/CID[/PATH]`` with none: the file's bytes (or the part a ``Range`` names), or a
  plain listing of a folder (whose URL must end with ``/``: 301 otherwise).

What the IPFS specifications ask of every answer (``If-None-Match`` → 304, ETags, ``Vary``, CORS,
``only-if-cached`` → 412, 405 for other methods) is decided in protocol/gateway.py; the choices
are in docs/design.md, "Gateway conformance (issue 16)".

Safety. Files come from other labs: every ``/ipfs/`` answer carries ``Content-Security-Policy:
sandbox`` and ``X-Content-Type-Options: nosniff``, and HTML, SVG and XML files are served as
attachments, so nothing from a bundle runs script in this origin. Paths are resolved only
through the DAG's own links, and a segment that is empty, ``.``, ``..`` or holds ``/``, ``\\``
or NUL is refused, so a path cannot leave its DAG. Only what this node holds is served; nothing
is fetched on a browser's behalf. ``/ipfs/`` answers any page (CORS) but only GET, HEAD and
OPTIONS; elsewhere any request that is not GET or HEAD needs the token in ``HOME/http.token``
(``Authorization: Bearer …``) and must come from this node's own pages; none changes the node yet.

Hostile clients (issue 12). Only requests whose ``Host`` names this node are answered
(:class:`HostAllowlist`: 127.0.0.1, localhost, [::1], the configured address and the config's
``http_hosts``), so a DNS-rebinding page cannot read the interface. Connections are capped and
every send must make progress (:func:`serve_http`), and large bodies stream a few at a time, so
clients that ask and never read cannot pin the node's memory; the budgets are in
docs/design.md, "HTTP budgets (issue 12)".
"""

from __future__ import annotations

import html
import itertools
import mimetypes
import secrets
import urllib.parse
from pathlib import Path

from fabnode.protocol.car import encode_section
from fabnode.protocol.cid import DAG_CBOR, DAG_PB, RAW as RAW_CODEC, cid_codec, cid_str, parse_cid
from fabnode.protocol.errors import FabnodeError, InvalidCID, MissingBlock, PathNotFound, human_size
from fabnode.protocol.gateway import (DAG_CBOR_TYPE, Refused, byte_range, car_etag, car_header, entity_range,
                                      etag_matches, expanded_count, file_parts, identity_block, identity_cid,
                                      negotiate, scoped_blocks)
from fabnode.protocol.paths import segment_problem
from fabnode.protocol.unixfs import (MAX_EXPANSION, dag_sizes, decode as decode_unixfs, directory_entries, iter_file,
                                     resolve_crossing)

from fabnode.node.http.zipstream import zip_download

TOKEN_FILE = "http.token"
RAW = "application/vnd.ipld.raw"
CAR = "application/vnd.ipld.car"
IMMUTABLE = "public, max-age=29030400, immutable"
DIR_INDEX_VERSION = "fabnode-1"
"""Part of a folder listing's ETag (the path gateway spec's ``"DirIndex-VERSION_CID-CID"``): change
it whenever the listing's HTML changes, so browsers do not keep the old page for a year."""
READ_METHODS = "GET, HEAD, OPTIONS"
"""What ``/ipfs/`` answers; any other method there is 405 with this as ``Allow``."""
CORS_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", READ_METHODS.encode()),
    (b"access-control-allow-headers", b"Accept, Cache-Control, Content-Type, If-None-Match, Range, User-Agent, "
                                      b"X-Requested-With"),
    (b"access-control-expose-headers", b"Content-Range, Content-Length, Content-Type, Content-Disposition, ETag, "
                                       b"X-Ipfs-Path, X-Ipfs-Roots, X-Chunked-Output, X-Stream-Output"),
]
"""CORS on every ``/ipfs/`` answer (content-addressed, public, read-only): any page may read it, as
browser-side verified fetch needs. The lab's pages and anything that changes the node get none."""
TEXT_TYPES = {".toml": "text/plain; charset=utf-8", ".md": "text/markdown; charset=utf-8",
              ".csv": "text/csv; charset=utf-8", ".scad": "text/plain; charset=utf-8"}
"""Types the files of an open-hardware bundle often have and ``mimetypes`` does not know."""
ATTACHMENT_TYPES = ("text/html", "image/svg+xml", "application/xhtml+xml", "text/xml", "application/xml",
                    "application/javascript", "text/javascript")

# HTTP budgets (docs/design.md, "HTTP budgets (issue 12)")
MAX_CONNECTIONS = 64
"""Open HTTP connections at once; further ones wait in the listen backlog until one closes."""
BACKLOG = 64
"""The listening socket's backlog: connections the kernel holds while the cap is reached."""
SEND_PIECE = 64 * 1024
"""Bodies are cut into pieces of this size, and each piece is sent under SEND_TIMEOUT."""
SEND_TIMEOUT = 15.0
"""Seconds a client may take to accept one SEND_PIECE (so at least ~4 KiB/s) before the
connection is dropped: a client that asks and never reads frees its slot and memory."""
BIG_BODY = 256 * 1024
"""Bodies larger than this (files, CARs) are streamed, and count against MAX_BIG_STREAMS."""
MAX_BIG_STREAMS = 16
"""Large bodies streamed at once; a further one answers 503 with Retry-After. Each holds at most
one block (1 MiB) and one piece in memory."""
KEEP_ALIVE_TIMEOUT = 5.0
"""Seconds an idle connection stays open, and the most a client may take to send its request
headers (Hypercorn's idle timer runs until a whole request has arrived)."""
MAX_HEADER_BYTES = 16 * 1024
"""Hypercorn's h11_max_incomplete_size: request line and headers larger than this answer 400."""
MAX_TOKEN_BYTES = 1024
"""A bearer token longer than this is refused without comparing it."""
MAX_QUERY_CHARS = 200
"""A search longer than this answers 400."""
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
"""Host names always answered; the configured address and ``http_hosts`` are added."""


def http_token(home_path: Path) -> str:
    """The token that guards anything that would change the node (created once, mode 0600)."""
    import os

    path = home_path / TOKEN_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def content_disposition(name: str) -> str:
    """``attachment`` naming ``name`` per RFC 6266 and RFC 5987: a quoted ASCII fallback in
    which quotes, backslashes, ``%``, control and non-ASCII characters became ``_``, and the
    exact name percent-encoded in UTF-8 as ``filename*`` (what current browsers use)."""
    name = name or "download"
    fallback = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\%' else "_" for c in name)
    encoded = urllib.parse.quote(name, safe="!#$&+-.^_`|~", encoding="utf-8", errors="replace")
    return f'attachment; filename="{fallback}"; filename*=UTF-8\'\'{encoded}'


def token_matches(given: str | bytes, token: str) -> bool:
    """Constant-time comparison of bytes: any header value or JSON string (non-ASCII, very
    long, lone surrogates) is simply a wrong token, never an exception."""
    if isinstance(given, str):
        given = given.encode("utf-8", "surrogatepass")
    if len(given) > MAX_TOKEN_BYTES:
        return False
    return secrets.compare_digest(given, token.encode())


def host_name(host_header: bytes) -> str:
    """The host part of a Host header, lower-case, without port or trailing dot ("" if absent)."""
    text = host_header.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[: text.find("]") + 1] if "]" in text else text
    return text.rpartition(":")[0].rstrip(".") if ":" in text else text.rstrip(".")


class HostAllowlist:
    """ASGI middleware: a request whose ``Host`` is not one of this node's names is answered
    ``421`` in one line. A DNS-rebinding page (a hostile name resolving to 127.0.0.1) sends its
    own name as Host, so it is refused before reaching the lab's pages."""

    def __init__(self, app, hosts) -> None:
        self.app = app
        self.hosts = frozenset(h.strip().lower().rstrip(".") for h in hosts)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            host = next((v for k, v in scope.get("headers", ()) if k == b"host"), b"")
            if host_name(host) not in self.hosts:
                body = b"this node does not answer for that host name (see http_hosts in config.toml)\n"
                await send({"type": "http.response.start", "status": 421,
                            "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class GatewayMethods:
    """ASGI middleware for ``/ipfs/``: CORS for reads, 405 for everything else (issue 16).

    Content-addressed answers are public and read-only, so every GET and HEAD answer carries
    :data:`CORS_HEADERS` (``Access-Control-Allow-Origin: *``) and OPTIONS (a preflight or not) is
    answered 204 with them. POST, PUT, DELETE, PATCH… on ``/ipfs/`` are 405 with ``Allow``: nothing
    there can change, with or without the token. Written by hand rather than Starlette's
    CORSMiddleware, which passes an OPTIONS without ``Access-Control-Request-Method`` on to the
    routes and puts no ``Access-Control-Allow-Methods`` on GET answers (the gateway conformance
    suite checks both), and which would have to be kept off the lab's pages."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/ipfs/"):
            return await self.app(scope, receive, send)
        method = scope["method"]
        if method == "OPTIONS":
            await send({"type": "http.response.start", "status": 204,
                        "headers": [*CORS_HEADERS, (b"access-control-max-age", b"86400"),
                                    (b"allow", READ_METHODS.encode())]})
            await send({"type": "http.response.body", "body": b""})
            return
        if method not in ("GET", "HEAD"):
            body = f"{method[:20]} is not allowed here: /ipfs/ answers {READ_METHODS}\n".encode("latin-1", "replace")
            await send({"type": "http.response.start", "status": 405,
                        "headers": [(b"allow", READ_METHODS.encode()), (b"content-type", b"text/plain; charset=utf-8"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return

        async def with_cors(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *CORS_HEADERS]}
            await send(message)

        await self.app(scope, receive, with_cors)


def same_origin(headers) -> bool:
    """Whether a request comes from this node's own pages, or from no page at all (a command
    line client sends no ``Origin``): a browser names the page's origin on every write, and
    ``Sec-Fetch-Site`` where it supports it."""
    if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = headers.get("origin")
    if origin is None:
        return True
    parsed = urllib.parse.urlsplit(origin)
    return parsed.scheme in ("http", "https") and parsed.netloc.lower() == headers.get("host", "").lower()


def allowed_hosts(address: str | None, extra=()) -> list[str]:
    """LOCAL_HOSTS, the host of the configured ``address`` (HOST:PORT) and ``extra`` names."""
    hosts = list(LOCAL_HOSTS) + [h for h in extra if h]
    if address and address != "off":
        host = address.rpartition(":")[0] if ":" in address else address
        hosts.append(host)
        if ":" in host and not host.startswith("["):
            hosts.append(f"[{host}]")
    return hosts


class DownloadBroken(Exception):
    """A streamed body that cannot be finished (a block went missing or bad after the head went
    out): raised through the middleware so the server closes the connection without the body's
    end, and the client sees a broken download, never a short one that looks whole (issue 15).
    Logged once where it happens; not a bug, so not an internal error."""


class GatewayError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _parse(cid_path: str) -> tuple[bytes, list[str]]:
    cid_text, _, rest = cid_path.partition("/")
    try:
        root = parse_cid(cid_text)
    except (InvalidCID, FabnodeError) as exc:
        root = identity_cid(cid_text)  # bafkqaaa, the gateway probe, and other identity CIDs
        if root is None:
            raise GatewayError(400, str(exc)) from None
    segments = rest.split("/") if rest else []
    if segments and segments[-1] == "":
        segments.pop()  # a trailing slash names the same folder
    for segment in segments:
        problem = segment_problem(segment)
        if problem:
            raise GatewayError(400, f"refusing a path with {problem}")
    return root, segments


def _walk(blocks, root: bytes, segments: list[str]) -> tuple[bytes, list[bytes]]:
    """(CID the path names, CIDs of the blocks crossed from root to it) — DAG links only."""
    try:
        return resolve_crossing(blocks.get, root, segments)
    except PathNotFound as exc:
        raise GatewayError(404, str(exc)) from None


class GatewayBlocks:
    """The blocks ``/ipfs/`` serves: the store's, identity CIDs' own bytes (never stored), and
    signed records, which are DAG-CBOR blocks kept in the records table (issue 16)."""

    def __init__(self, store) -> None:
        self.store = store

    def record(self, cid: bytes) -> bytes | None:
        if cid_codec(cid) != DAG_CBOR or identity_block(cid) is not None:
            return None
        from fabnode.storage import Stores

        return Stores.of(self.store).records.raw(cid)

    def get(self, cid: bytes) -> bytes:
        data = identity_block(cid)
        if data is not None:
            return data
        try:
            return self.store.get(cid)
        except MissingBlock:
            record = self.record(cid)
            if record is None:
                raise
            return record

    def has(self, cid: bytes) -> bool:
        return identity_block(cid) is not None or self.store.has(cid) or self.record(cid) is not None

    def size(self, cid: bytes) -> int | None:
        data = identity_block(cid)
        return self.store.size(cid) if data is None else len(data)


def files_redirect(store, root: bytes, segments: list[str], query: str = "") -> tuple[str, str] | None:
    """Where ``/ipfs/VERSION_OR_DESIGN[/PATH]`` is answered: (``/ipfs/BUNDLE[/PATH][?query]``, its
    Cache-Control), or None for a CID that is itself files. A version's files never change, so
    that redirect is permanent and cacheable; a design's head moves, so its redirect is
    ``no-cache`` (node/local/resolve.py; docs/protocol.md §11)."""
    from fabnode.node.local.resolve import DESIGN, FILES, NotFiles, resolve_files
    from fabnode.storage import Stores

    if cid_codec(root) != DAG_CBOR or store.has(root):
        return None
    try:
        files = resolve_files(Stores.of(store).records, cid_str(root), held=store.has)
    except NotFiles as exc:
        raise GatewayError(404, str(exc)) from None
    if files.named == FILES:
        return None
    location = "/ipfs/" + cid_str(files.root) + "".join("/" + urllib.parse.quote(s, safe="") for s in segments)
    if query:
        location += "?" + query
    return location, ("no-cache" if files.named == DESIGN else IMMUTABLE)


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
        started = client_gone = False

        async def tracking_send(message):
            nonlocal started, client_gone
            if message["type"] == "http.response.start":
                started = True
            try:
                await send(message)
            except Exception:
                # a body that could not be sent after the head went out: the client went (or
                # was dropped); a head the server refuses (bad header) is still our bug
                client_gone = message["type"] == "http.response.body"
                raise

        try:
            await self.app(scope, receive, tracking_send)
        except DownloadBroken:
            return  # logged already; returning without the body's end makes the server close the connection
        except Exception as exc:
            if client_gone:
                return  # not a bug of ours, and nobody left to answer
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


def make_app(store, *, token: str, pages=None, log=print, hosts=LOCAL_HOSTS):
    """The ASGI app: ``pages`` (:class:`fabnode.node.http.pages.Pages`) serves the lab's web pages;
    ``log`` takes one line per request that failed with a bug; only requests whose Host is in
    ``hosts`` are answered (:func:`allowed_hosts`)."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    def safe_headers(extra: dict | None = None) -> dict:
        return {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox", **(extra or {})}

    big_streams = 0

    class BigStream(StreamingResponse):
        """A large body: one of at most MAX_BIG_STREAMS at once, else 503 (come back soon)."""

        async def __call__(self, scope, receive, send):
            nonlocal big_streams
            if big_streams >= MAX_BIG_STREAMS:
                busy = PlainTextResponse("too many downloads at once; try again in a few seconds\n", 503,
                                         headers=safe_headers({"Retry-After": "5"}))
                return await busy(scope, receive, send)
            big_streams += 1
            try:
                await super().__call__(scope, receive, send)
            finally:
                big_streams -= 1

        async def stream_response(self, send) -> None:
            """A block found missing or damaged after the head went out ends the response without
            its last chunk (:class:`DownloadBroken`)."""
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            try:
                async for chunk in self.body_iterator:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except FabnodeError as exc:
                log(f"http download broken off: {str(exc)[:200]}")
                raise DownloadBroken(str(exc)) from None
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    def pieces(chunks):
        """Chunks cut to SEND_PIECE, so each send is small and timed (serve_http)."""
        for chunk in chunks:
            for start in range(0, len(chunk), SEND_PIECE):
                yield chunk[start:start + SEND_PIECE]

    blocks = GatewayBlocks(store)

    def conditional(request, headers: dict, answer):
        """304 with no body when ``If-None-Match`` names the ETag in ``headers``, else ``answer()``."""
        if etag_matches(request.headers.get("if-none-match"), headers["Etag"]):
            return Response(status_code=304, headers=safe_headers(headers))
        return answer()

    def block_answer(request, fmt: str, cid: bytes, data: bytes, common: dict):
        """One block as itself: ``raw`` (any codec) or ``dag-cbor`` (DAG-CBOR blocks only)."""
        if fmt == "dag-cbor" and cid_codec(cid) != DAG_CBOR:
            raise GatewayError(406, f"{cid_str(cid)} is not a DAG-CBOR block; ask for format=raw "
                                    "(this gateway converts nothing)")
        media = RAW if fmt == "raw" else DAG_CBOR_TYPE
        headers = {**common, "Etag": f'"{cid_str(cid)}.{fmt}"',
                   "Content-Disposition": content_disposition(f"{cid_str(cid)}.bin")}
        return conditional(request, headers, lambda: Response(data, media_type=media, headers=safe_headers(headers)))

    def car_answer(request, root: bytes, segments: list[str], crossed: list[bytes], target: bytes, params,
                   common: dict):
        """A CARv1 rooted at ``root``: the path's blocks, then the target's as ``params`` scope them."""
        block = blocks.get(target)  # 404 now rather than a broken stream later
        if params.entity_bytes is not None and cid_codec(target) in (DAG_PB, RAW_CODEC):
            node = decode_unixfs(target, block)
            if node.kind == "file":
                entity_range(params.entity_bytes, node.filesize)  # 400 now for a range past the end
        headers = {**common, "Etag": car_etag(root, segments, params), "Accept-Ranges": "none",
                   "Content-Disposition": content_disposition(f"{cid_str(root)}.car")}
        walks_with_dups = params.dups and params.entity_bytes is None and (
            params.scope == "all" or (params.scope == "entity" and cid_codec(target) in (DAG_PB, RAW_CODEC)
                                      and decode_unixfs(target, block).kind == "file"))

        def sections():
            yield car_header([root])
            path_blocks = ((cid, blocks.get(cid)) for cid in crossed)
            for cid, data in itertools.chain(path_blocks, scoped_blocks(blocks.get, target, params, set(crossed))):
                if identity_block(cid) is None:  # the spec: identity blocks are never sent
                    yield encode_section(cid, data)

        async def car():  # async: the store's connection belongs to the trio thread
            for piece in pieces(sections()):
                yield piece

        def answer():
            if walks_with_dups:  # a few blocks linked a million times would be a million sections
                distinct, total = expanded_count(blocks.get, target, blocks.has)
                if total > MAX_EXPANSION * distinct + 1024:
                    raise GatewayError(400, f"this DAG repeats its {distinct} blocks {total} times; ask car-dups=n")
            return BigStream(car(), media_type=params.content_type, headers=safe_headers(headers))

        return conditional(request, headers, answer)

    def file_answer(request, target: bytes, node, name: str, common: dict):
        """A file's bytes, or the part a ``Range`` names (206; 416 when outside the file)."""
        media = TEXT_TYPES.get(Path(name).suffix.lower()) or mimetypes.guess_type(name)[0] \
            or "application/octet-stream"
        headers = {**common, "Etag": f'"{cid_str(target)}"', "Accept-Ranges": "bytes",
                   "Content-Length": str(node.filesize)}
        if media.split(";")[0] in ATTACHMENT_TYPES:
            headers["Content-Disposition"] = content_disposition(name)
        if etag_matches(request.headers.get("if-none-match"), headers["Etag"]):
            del headers["Content-Length"]
            return Response(status_code=304, headers=safe_headers(headers))
        span = byte_range(request.headers.get("range"), node.filesize)
        if span == "unsatisfiable":
            del headers["Content-Length"]
            return PlainTextResponse(f"range not satisfiable: the file holds {node.filesize} bytes\n", 416,
                                     headers=safe_headers({**headers, "Content-Range": f"bytes */{node.filesize}"}))
        if span is None:
            dag_sizes(blocks.get, target, raw_size=blocks.size)  # sizes that lie, or a bomb: 502, not 1 TiB
            status, content = 200, (lambda: iter_file(blocks.get, target))
        else:  # only the blocks covering the range are read (protocol/gateway.py file_parts)
            first, last = span
            headers.update({"Content-Length": str(last - first + 1),
                            "Content-Range": f"bytes {first}-{last}/{node.filesize}"})
            status = 206
            content = lambda: (part.content for part in file_parts(blocks.get, target, first, last) if part.content)  # noqa: E731
        if int(headers["Content-Length"]) <= BIG_BODY:
            return Response(b"".join(content()), status_code=status, media_type=media, headers=safe_headers(headers))

        async def body():
            for piece in pieces(content()):
                yield piece

        return BigStream(body(), status_code=status, media_type=media, headers=safe_headers(headers))

    async def ipfs(request):
        cid_path = request.path_params["cid_path"]
        try:
            root, segments = _parse(cid_path)
            fmt, car_params = negotiate(request.query_params, request.headers.get("accept", ""))
            if "only-if-cached" in request.headers.get("cache-control", "").lower() and not blocks.has(root):
                # the path gateway spec: 412, no body, for what this node would have to fetch
                return Response(status_code=412, headers=safe_headers({"Vary": "Accept"}))
            # header values are latin-1: the path as it travels in a URL, percent-encoded
            common = {"X-Ipfs-Path": urllib.parse.quote("/ipfs/" + cid_path, errors="replace"),
                      "Cache-Control": IMMUTABLE, "Vary": "Accept"}
            record = blocks.record(root) if fmt in ("raw", "car", "dag-cbor") and not segments \
                and not store.has(root) else None
            if record is not None:  # a signed record is IPLD too: served as the block it is
                common["X-Ipfs-Roots"] = cid_str(root)
                if fmt == "car":
                    return car_answer(request, root, [], [], root, car_params, common)
                return block_answer(request, fmt, root, record, common)
            moved = files_redirect(store, root, segments, request.url.query)
            if moved is not None:
                location, cache = moved
                return PlainTextResponse(f"see {location}\n", status_code=301 if cache == IMMUTABLE else 302,
                                         headers=safe_headers({"Location": location, "Cache-Control": cache,
                                                               "Vary": "Accept"}))
            target, crossed = _walk(blocks, root, segments)
            common["X-Ipfs-Roots"] = " ".join(cid_str(c) for c in crossed + [target])
            if fmt in ("raw", "dag-cbor"):
                return block_answer(request, fmt, target, blocks.get(target), common)
            if fmt == "car":
                return car_answer(request, root, segments, crossed, target, car_params, common)
            if fmt == "zip":
                return zip_download(store, target, segments, request.query_params.get("filename", ""), common,
                                    BigStream, pieces, safe_headers)
            node = decode_unixfs(target, blocks.get(target))
            if node.kind == "directory":
                if not cid_path.endswith("/"):  # the spec: a folder's URL ends with /, so relative links work
                    location = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1") + "/" + \
                        (f"?{request.url.query}" if request.url.query else "")
                    return PlainTextResponse(f"see {location}\n", status_code=301, headers=safe_headers(
                        {**common, "Location": location}))
                # hrefs are URLs: each name percent-encoded (a "#", "?" or "%" in a file name is
                # part of the name, not a fragment or a query), then HTML-escaped
                base = urllib.parse.quote("/ipfs/" + cid_path.rstrip("/"), safe="/")
                rows = "".join(f'<li><a href="{html.escape(base)}/{html.escape(urllib.parse.quote(link.name, safe=""))}">'
                               f'{html.escape(link.name)}</a>'
                               f" ({human_size(link.tsize)})</li>"
                               for link in directory_entries(blocks.get, target, node))
                page = (f"<!doctype html><meta charset=utf-8><title>{html.escape(cid_path)}</title>"
                        f"<h1>/ipfs/{html.escape(cid_path)}</h1><ul>{rows}</ul>")
                headers = {**common, "Etag": f'"DirIndex-{DIR_INDEX_VERSION}_CID-{cid_str(target)}"'}
                return conditional(request, headers, lambda: HTMLResponse(page, headers=safe_headers(headers)))
            return file_answer(request, target, node, segments[-1] if segments else cid_str(target), common)
        except (GatewayError, Refused) as exc:
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
            from fabnode.node.http.i18n import COOKIE, choose, direction, translations

            if pages is None:
                return PlainTextResponse("fabnode: see /ipfs/CID for content this node holds\n")
            # the page's language (node/http/i18n.py): the header's switch, its cookie, Accept-Language
            asked = request.query_params.get("lang")
            lang = choose(asked, request.cookies.get(COOKIE), request.headers.get("accept-language"))
            headers = {**page_headers, "Content-Language": lang.replace("_", "-"),
                       "Vary": "Accept-Language, Cookie"}
            pages.lang = lang
            pages.path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            try:
                response = HTMLResponse(render(request), headers=headers)
            except (FabnodeError, ValueError) as exc:
                _ = translations(lang).gettext
                title, home = html.escape(_("Not found")), html.escape(_("Home"))
                response = HTMLResponse(
                    f'<!doctype html><html lang="{lang}" dir="{direction(lang)}"><meta charset=utf-8>'
                    f"<title>{title}</title><p>{html.escape(str(exc))}"
                    f'</p><p><a href="/">{home}</a></p>', status_code=404, headers=headers)
            if asked == lang:  # the switch was used: remember it for the pages that follow
                response.set_cookie(COOKIE, lang, max_age=365 * 24 * 3600, httponly=True, samesite="lax")
            return response
        return handler

    def search_text(request) -> str | None:
        """``q`` as text, or GatewayError(400): bad UTF-8, control characters, too long."""
        raw = [v for k, v in urllib.parse.parse_qsl(request.scope.get("query_string", b"").decode("latin-1"),
                                                    encoding="latin-1") if k == "q"]
        if not raw or not raw[-1]:
            return None
        try:
            text = raw[-1].encode("latin-1").decode("utf-8")
        except UnicodeDecodeError:
            raise GatewayError(400, "the search is not valid UTF-8") from None
        if len(text) > MAX_QUERY_CHARS:
            raise GatewayError(400, f"the search is longer than {MAX_QUERY_CHARS} characters")
        if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text):
            raise GatewayError(400, "the search holds control characters")
        return text

    async def designs_page(request):
        try:
            query = search_text(request)
        except GatewayError as exc:
            return PlainTextResponse(f"{exc}\n", status_code=exc.status)
        request.state.search = query
        return await designs_listing(request)

    index = page(lambda r: pages.home_page())
    designs_listing = page(lambda r: pages.designs_page(r.state.search))
    design_page = page(lambda r: pages.design_page(r.path_params["cid"]))
    version_page = page(lambda r: pages.version_page(r.path_params["cid"]))
    labs_page = page(lambda r: pages.labs_page(r.query_params.get("process", "")[:64]))
    requests_page = page(lambda r: pages.requests_page())

    class TokenForChanges:
        """Whatever is not a read needs the home's token. Plain ASGI, not Starlette's
        BaseHTTPMiddleware: that one re-streams every body and, when the app fails midway,
        still ends the body cleanly, so a broken download would look whole (issue 15)."""

        def __init__(self, app) -> None:
            self.app = app

        async def __call__(self, scope, receive, send):
            if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD"):
                from starlette.datastructures import Headers

                headers = Headers(scope=scope)
                if not same_origin(headers):  # CORS opens reads of /ipfs/ only; changes stay this origin's
                    refusal = PlainTextResponse("changes are refused from another site's page\n", status_code=403)
                    return await refusal(scope, receive, send)
                given = headers.get("authorization", "").removeprefix("Bearer ").strip()
                # headers are latin-1 text: back to the bytes that were sent, compared as bytes
                if not token_matches(given.encode("latin-1"), token):
                    refusal = PlainTextResponse("this needs the token from the node's home folder\n", status_code=401,
                                                headers={"WWW-Authenticate": "Bearer"})
                    return await refusal(scope, receive, send)
            await self.app(scope, receive, send)

    app = Starlette(routes=[Route("/", index), Route("/designs", designs_page), Route("/design/{cid}", design_page),
                            Route("/version/{cid}", version_page), Route("/labs", labs_page),
                            Route("/requests", requests_page),
                            Route("/ipfs/{cid_path:path}", ipfs)],
                    middleware=[Middleware(TokenForChanges)],
                    exception_handlers={Exception: lambda request, exc: PlainTextResponse(f"{INTERNAL_ERROR}\n", 500)})
    return LogInternalErrors(HostAllowlist(GatewayMethods(app), hosts), log)


class _TimedStream:
    """A connection's stream whose sends must make progress: each SEND_PIECE has ``timeout``
    seconds to go out, else the connection is dropped (BrokenResourceError, which Hypercorn
    takes as the client gone). Hypercorn shields its sends from cancellation, so the timeout
    has to live here, inside the shield; :meth:`abort` ends a stuck send at shutdown."""

    def __init__(self, inner, timeout: float) -> None:
        self.inner, self.timeout = inner, timeout
        self.socket = inner.socket
        self._sending = None

    async def send_all(self, data) -> None:
        import trio

        view = memoryview(data)
        for start in range(0, max(len(view), 1), SEND_PIECE):
            with trio.move_on_after(self.timeout) as self._sending:
                await self.inner.send_all(view[start:start + SEND_PIECE])
            if self._sending.cancelled_caught:
                await trio.aclose_forcefully(self.inner)
                raise trio.BrokenResourceError("the client stopped reading")
        self._sending = None

    def abort(self) -> None:
        if self._sending is not None:
            self._sending.cancel()

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes=None):
        return await self.inner.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def serve_http(app, sock, task_status, *, max_connections: int = MAX_CONNECTIONS,
                     send_timeout: float = SEND_TIMEOUT) -> None:
    """Serve ``app`` on ``sock`` (bound and listening, node/runtime/addresses.py) until cancelled; reports
    the address through ``task_status``. The daemon binds the socket before it starts, so an
    address in use is refused in one line at once, and port 0 works.

    Hypercorn's own trio server has no connection cap and no send timeout, so this runs its
    per-connection protocol (``TCPServer``) on a listener of our own: at most
    ``max_connections`` are accepted at once (the rest wait in the kernel's backlog), and each
    connection's sends go through :class:`_TimedStream`."""
    import logging

    import trio
    from hypercorn.config import Config
    from hypercorn.trio.tcp_server import TCPServer
    from hypercorn.trio.worker_context import WorkerContext
    from hypercorn.typing import ConnectionState
    from hypercorn.utils import wrap_app

    host, port = sock.getsockname()[:2]
    bound = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    config = Config()
    config.keep_alive_timeout = KEEP_ALIVE_TIMEOUT
    config.h11_max_incomplete_size = MAX_HEADER_BYTES
    config.accesslog = None
    config.errorlog = logging.getLogger("fabnode.http.quiet")
    config.errorlog.setLevel(logging.CRITICAL)
    asgi = wrap_app(app, config.wsgi_max_body_size, "asgi")
    context = WorkerContext(None)
    slots = trio.Semaphore(max_connections)
    live: set[_TimedStream] = set()
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))

    async def connection(stream: _TimedStream) -> None:
        live.add(stream)
        try:
            await TCPServer(asgi, config, context, ConnectionState({}), stream)
        finally:
            live.discard(stream)
            slots.release()

    async def abort_sends_on_shutdown() -> None:
        try:
            await trio.sleep_forever()
        finally:  # the daemon is stopping: stuck sends must not hold it up
            for stream in list(live):
                stream.abort()

    async with listener, trio.open_nursery() as nursery:
        nursery.start_soon(abort_sends_on_shutdown)
        task_status.started(bound)
        while True:
            await slots.acquire()
            try:
                stream = await listener.accept()
            except OSError:  # out of file descriptors, a reset before accept: try again soon
                slots.release()
                await trio.sleep(0.1)
                continue
            except BaseException:
                slots.release()
                raise
            nursery.start_soon(connection, _TimedStream(stream, send_timeout))
