"""The rules of the IPFS path and trustless gateways, as pure functions (issue 16).

node/http/web.py asks these what a request means and which blocks answer it; nothing here
touches the network, the store or the clock (blocks come from a ``get(cid) -> bytes`` callable).
The specifications are IPFS's "Path Gateway" and "Trustless Gateway" (specs.ipfs.tech/http-gateways),
checked against the cases of ipfs/gateway-conformance; where they leave a choice, the choice and
its reason are in docs/design.md, "Gateway conformance (issue 16)".

* :func:`negotiate` — which response format a request asks for (``?format=`` before ``Accept``),
  and for a CAR its parameters (version, order, dups, ``dag-scope``, ``entity-bytes``);
* :func:`etag_matches` — ``If-None-Match`` (weak comparison, ``*``);
* :func:`byte_range` — an HTTP ``Range`` header against a file's size;
* :func:`entity_range` — ``entity-bytes`` against a file's size;
* :func:`file_parts` — the blocks of a UnixFS file that cover a byte range, and the bytes of the
  range they hold, reading no leaf outside it;
* :func:`scoped_blocks` — the blocks a CAR carries for the DAG at the end of its path;
* :func:`identity_cid` — identity CIDs (``bafkqaaa``), whose block is their own digest.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from .cid import DAG_PB, RAW, cid_codec, cid_str
from .dag import MAX_DEPTH, child_links, walk
from .errors import FabnodeError, InvalidBlock
from .unixfs import EXPANSION_SLACK, MAX_EXPANSION, decode

Get = Callable[[bytes], bytes]

RAW_TYPE = "application/vnd.ipld.raw"
CAR_TYPE = "application/vnd.ipld.car"
DAG_CBOR_TYPE = "application/vnd.ipld.dag-cbor"
FORMATS = {"raw": RAW_TYPE, "car": CAR_TYPE, "dag-cbor": DAG_CBOR_TYPE, "zip": "application/zip"}
"""``?format=`` values and the type each stands for (``zip`` is fabnode's own, not the spec's)."""
SCOPES = ("all", "entity", "block")

IDENTITY = 0x00
MAX_IDENTITY_BYTES = 128
"""Longest identity digest served: the block *is* the CID, so a long one is a request-sized
block the node never stored; 128 bytes is the bound Kubo and boxo apply (verifcid)."""


class Refused(FabnodeError):
    """A request the gateway answers with an HTTP error: ``status`` and a one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------ negotiation


@dataclass(frozen=True, slots=True)
class CarParams:
    """What a CAR answer holds and how it is laid out (trustless gateway spec, IPIP-402/412)."""

    scope: str = "all"
    """``dag-scope``: all of the DAG at the path's end, its ``entity`` (a whole file, a folder's
    own block) or just its ``block``."""
    entity_bytes: tuple[int, int | None] | None = None
    """``entity-bytes=from:to`` as given (``to`` None for ``*``); implies scope ``entity``."""
    dups: bool = False
    """``dups=y``: a block is sent every time the depth-first walk meets it."""

    @property
    def content_type(self) -> str:
        return f"{CAR_TYPE}; version=1; order=dfs; dups={'y' if self.dups else 'n'}"


def _media_ranges(accept: str) -> list[tuple[str, dict[str, str]]]:
    """``Accept`` as (type, parameters) in preference order (q, then order given); q=0 dropped."""
    ranges = []
    for position, item in enumerate(accept.split(",")[:32]):  # a browser sends < 10
        kind, *params = [p.strip() for p in item.split(";")]
        values = {}
        for param in params:
            name, _, value = param.partition("=")
            values[name.strip().lower()] = value.strip().strip('"').lower()
        try:
            q = float(values.pop("q", "1"))
        except ValueError:
            q = 1.0
        if kind and q > 0:
            ranges.append((-q, position, kind.lower(), values))
    return [(kind, values) for _, _, kind, values in sorted(ranges)]


def _car_params(version: str | None, order: str | None, dups: str | None) -> bool:
    """``dups`` as a bool, or Refused(400) for a variant this gateway cannot write."""
    if version not in (None, "", "1"):
        raise Refused(400, f"unsupported CAR version {version!r} (this gateway writes CARv1 only)")
    if order not in (None, "", "dfs", "unk"):
        raise Refused(400, f"unsupported CAR order {order!r} (this gateway writes order=dfs)")
    if dups not in (None, "", "y", "n"):
        raise Refused(400, f"unsupported CAR dups {dups!r} (y or n)")
    return dups == "y"


def parse_entity_bytes(text: str) -> tuple[int, int | None]:
    """``from:to`` (``to`` may be ``*``; either may be negative, counting from the end)."""
    match = re.fullmatch(r"(-?\d{1,18}):(\*|-?\d{1,18})", text)
    if not match:
        raise Refused(400, f"entity-bytes {text[:40]!r} is not FROM:TO (integers, TO may be *)")
    start = int(match[1])
    end = None if match[2] == "*" else int(match[2])
    if end is not None and start >= 0 and end >= 0 and start > end:
        raise Refused(400, f"entity-bytes {text!r} ends before it starts")
    return start, end


def negotiate(query: Mapping[str, str], accept: str) -> tuple[str | None, CarParams | None]:
    """(format, CAR parameters) a request asks for: ``raw``, ``car``, ``dag-cbor``, ``zip`` or
    None (the deserialized file or folder listing). ``?format=`` wins over ``Accept``, and the
    ``car-*`` query parameters over ``Accept``'s; a CAR variant this gateway cannot write is
    Refused(400) in one line, as the spec allows."""
    fmt = query.get("format")
    accept_params: dict[str, str] = {}
    if fmt is not None and fmt not in FORMATS:
        raise Refused(400, f"unsupported format {fmt[:40]!r} (this gateway serves raw, car, dag-cbor and zip)")
    if fmt is None:
        refusal = None
        for kind, values in _media_ranges(accept):
            if kind == CAR_TYPE:
                try:
                    _car_params(values.get("version"), values.get("order"), values.get("dups"))
                except Refused as exc:
                    refusal = refusal or exc  # a later, plainer choice may still do
                    continue
                fmt, accept_params = "car", values
            elif kind in (RAW_TYPE, DAG_CBOR_TYPE):
                fmt = "raw" if kind == RAW_TYPE else "dag-cbor"
            else:
                refusal = None  # text/html, */*, anything else: the deserialized answer will do
            break
        if fmt is None and refusal is not None:
            raise refusal
    if fmt != "car":
        return fmt, None
    dups = _car_params(query.get("car-version", accept_params.get("version")),
                       query.get("car-order", accept_params.get("order")),
                       query.get("car-dups", accept_params.get("dups")))
    scope = query.get("dag-scope", "all")
    if scope not in SCOPES:
        raise Refused(400, f"unsupported dag-scope {scope[:40]!r} (all, entity or block)")
    entity_bytes = None
    if "entity-bytes" in query:
        entity_bytes = parse_entity_bytes(query["entity-bytes"])
        scope = "entity"
    return fmt, CarParams(scope, entity_bytes, dups)


def car_etag(root: bytes, segments: list[str], params: CarParams) -> str:
    """A strong ETag for a CAR: the CAR depends on the CID asked for, the path (whose blocks it
    carries) and every parameter, and this gateway writes it byte for byte the same each time."""
    said = "\0".join([*segments, params.scope, repr(params.entity_bytes), "y" if params.dups else "n"])
    return f'"{cid_str(root)}.car.{hashlib.sha256(said.encode("utf-8", "surrogatepass")).hexdigest()[:16]}"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (RFC 9110, section 13.1.2: weak comparison, so
    ``W/"x"`` matches ``"x"``; ``*`` matches anything that exists)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    ours = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == ours for tag in if_none_match.split(",")[:64])


# ------------------------------------------------------------------ ranges


def byte_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """An HTTP ``Range`` header against a file of ``size`` bytes (RFC 9110, section 14): (first, last)
    inclusive; None to answer the whole file (no header, a syntax this gateway ignores, or
    several ranges — answered whole, as RFC 9110 allows); ``"unsatisfiable"`` for 416."""
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    match = re.fullmatch(r"\s*(\d{0,18})-(\d{0,18})\s*", spec)
    if not match or not (match[1] or match[2]):
        return None
    if not match[1]:  # -N: the last N bytes
        length = int(match[2])
        if length == 0 or size == 0:
            return "unsatisfiable"
        return max(size - length, 0), size - 1
    first = int(match[1])
    if match[2] and int(match[2]) < first:
        return None  # invalid, so ignored (RFC 9110, section 14.2)
    if first >= size:
        return "unsatisfiable"
    return first, min(int(match[2]) if match[2] else size - 1, size - 1)


def entity_range(entity_bytes: tuple[int, int | None], size: int) -> tuple[int, int] | None:
    """``entity-bytes`` against a file of ``size`` bytes: (first, last) inclusive, clamped to the
    file; None when it comes to no bytes (the answer is then as for ``dag-scope=block``);
    Refused(400) when it lies wholly after the end, which the root block already tells."""
    start, end = entity_bytes
    if start >= 0 and start >= size > 0:
        raise Refused(400, f"entity-bytes starts at {start}, past the end of a {size}-byte file")
    first = start if start >= 0 else max(size + start, 0)
    last = size - 1 if end is None else (end if end >= 0 else size + end)
    last = min(last, size - 1)
    if size == 0 or last < first:
        return None
    return first, last


@dataclass(frozen=True, slots=True)
class FilePart:
    """One block met while reading a byte range of a file."""

    cid: bytes
    block: bytes
    content: bytes
    """The bytes of the range this block holds itself (empty for a node that only links)."""


def file_parts(get: Get, cid: bytes, first: int, last: int) -> Iterator[FilePart]:
    """The blocks of the file ``cid`` needed to read and verify bytes ``first..last`` (inclusive),
    depth-first in file order: every node on the way down, and only the leaves that overlap the
    range — a node's ``blocksizes`` say where its children start, so no other leaf is read.

    Each node's size is checked against what its parent declared (as :func:`iter_file` does), the
    depth is bounded, and the bytes handed out may be at most :data:`MAX_EXPANSION` times the
    distinct bytes read plus :data:`EXPANSION_SLACK`: a tree repeating one block a million times
    is a bomb here too (InvalidBlock)."""
    stack: list[tuple[bytes, int, int | None, int]] = [(cid, 0, None, 0)]
    distinct: set[bytes] = set()
    read = given = 0
    while stack:
        current, offset, expected, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidBlock(f"file DAG under {cid_str(cid)} is deeper than {MAX_DEPTH}")
        block = get(current)
        if current not in distinct:
            distinct.add(current)
            read += len(block)
        node = decode(current, block)
        if node.kind != "file":
            raise InvalidBlock(f"{cid_str(current)} is a directory inside a file")
        if expected is not None and node.filesize != expected:
            raise InvalidBlock(f"{cid_str(current)} holds {node.filesize} bytes but its parent says {expected}")
        content = node.data[max(first - offset, 0): max(last + 1 - offset, 0)]
        given += len(content)
        if given > MAX_EXPANSION * read + EXPANSION_SLACK:
            raise InvalidBlock(f"{cid_str(cid)} repeats its blocks beyond {MAX_EXPANSION}x: refused as a "
                               "decompression bomb")
        yield FilePart(current, block, content)
        child_start = offset + len(node.data)
        children = []
        for link, size in zip(node.links, node.blocksizes):
            if child_start <= last and child_start + size > first:
                children.append((link.cid, child_start, size, depth + 1))
            child_start += size
        stack.extend(reversed(children))


# ------------------------------------------------------------------ CAR scopes


def expanded_count(get: Get, root: bytes, has: Callable[[bytes], bool]) -> tuple[int, int]:
    """(distinct blocks, blocks a walk that repeats duplicates sends) of the DAG under ``root``:
    the cost of ``dups=y``, known before the first byte goes out. Reads only dag-pb nodes."""
    links: dict[bytes, list[bytes]] = {}
    for visit in walk(get, root, has_block=has):
        if not visit.present:
            from .errors import MissingBlock

            raise MissingBlock(f"block {cid_str(visit.cid)} is not in this store")
        links[visit.cid] = [c for c, _ in child_links(visit.cid, visit.data)] if visit.data is not None else []
    count: dict[bytes, int] = {}
    stack: list[tuple[bytes, bool]] = [(root, False)]
    while stack:
        cid, children_done = stack.pop()
        if cid in count:
            continue
        if not children_done:
            stack.append((cid, True))
            stack.extend((c, False) for c in links[cid] if c not in count)
            continue
        count[cid] = 1 + sum(count[c] for c in links[cid])
    return len(links), count[root]


def walk_with_dups(get: Get, root: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(cid, block) of the DAG under ``root`` depth-first, each block every time it is met
    (``dups=y``). Bounded by :data:`MAX_DEPTH`; the caller bounds the count (:func:`expanded_count`)."""
    stack = [(root, 0)]
    while stack:
        cid, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidBlock(f"DAG under {cid_str(root)} is deeper than {MAX_DEPTH}")
        block = get(cid)
        yield cid, block
        stack.extend((child, depth + 1) for child, _ in reversed(child_links(cid, block)))


def _directory_blocks(get: Get, cid: bytes, block: bytes, node) -> Iterator[tuple[bytes, bytes]]:
    """A folder's own blocks, depth-first: its node and, for a HAMT, every sub-shard (not entries)."""
    yield cid, block
    if node.shard is None:
        return
    for _index, link in sorted(node.shard.slots.items()):
        if node.shard.is_subshard(link):
            child_block = get(link.cid)
            yield from _directory_blocks(get, link.cid, child_block, decode(link.cid, child_block))


def scoped_blocks(get: Get, target: bytes, params: CarParams, skip: set[bytes]) -> Iterator[tuple[bytes, bytes]]:
    """(cid, block) a CAR carries for the DAG at the end of its path, after the path's own blocks
    (``skip``, not sent again), depth-first:

    * ``block`` — the target's block only;
    * ``entity`` — a file: every block of the file (with ``entity-bytes``, only those covering the
      range, :func:`file_parts`); a folder: its own block (and a HAMT's sub-shards), not its entries; anything that is not
      UnixFS (a signed record): its block;
    * ``all`` — the whole DAG under the target.

    Blocks repeat only with ``dups=y``."""
    sent = set(skip)

    def once(pairs):
        for cid, block in pairs:
            if params.dups or cid not in sent:
                sent.add(cid)
                yield cid, block

    if params.scope == "block" or cid_codec(target) not in (DAG_PB, RAW):
        yield from once([(target, get(target))])
        return
    if params.scope == "entity":
        block = get(target)
        node = decode(target, block)
        if node.kind == "directory":
            yield from once(_directory_blocks(get, target, block, node))
            return
        if params.entity_bytes is not None:
            span = entity_range(params.entity_bytes, node.filesize)
            if span is None:
                yield from once([(target, block)])
                return
            yield from once((part.cid, part.block) for part in file_parts(get, target, *span))
            return
    if params.dups:
        yield from walk_with_dups(get, target)
    else:
        yield from once((visit.cid, visit.data) for visit in walk(get, target, skip=skip, descend_skipped=True))


# ------------------------------------------------------------------ identity CIDs


def identity_cid(text: str) -> bytes | None:
    """The binary CID of an identity CID text (``bafkqaaa`` is the empty raw block), None if the
    text is not one; Refused(400) for one too long or of a codec that is not raw or dag-pb."""
    if len(text) > 2 * MAX_IDENTITY_BYTES + 16 or not text.startswith(("b", "B", "z", "f")):
        return None
    from multiformats import CID

    try:
        cid = CID.decode(text)
    except Exception:  # the library raises many kinds; all mean "not a CID"
        return None
    if cid.hashfun.code != IDENTITY:
        return None
    if cid.codec.code not in (RAW, DAG_PB):
        raise Refused(400, f"identity CID {text[:40]} uses codec {cid.codec.name}; only raw and dag-pb are served")
    if len(cid.raw_digest) > MAX_IDENTITY_BYTES:
        raise Refused(400, f"identity CID holds {len(cid.raw_digest)} bytes (at most {MAX_IDENTITY_BYTES})")
    return bytes(cid.set(version=1))


def car_header(roots: list[bytes]) -> bytes:
    """A CARv1 header naming ``roots``, which may be identity CIDs (the probe's CAR is rooted at
    ``bafkqaaa``); :func:`protocol.car.encode_header` accepts only CIDs fabnode stores."""
    from .dagcbor import Link, encode
    from .varint import encode_varint

    body = encode({"roots": [Link(bytes(root)) for root in roots], "version": 1})
    return encode_varint(len(body)) + body


def identity_block(cid: bytes) -> bytes | None:
    """The block an identity CID (binary, CIDv1, codec < 0x80) carries; None for any other CID."""
    if len(cid) < 4 or cid[0] != 0x01 or cid[2] != IDENTITY:
        return None
    length, pos = cid[3], 4
    if length >= 0x80:  # a two-byte varint: lengths 128..MAX_IDENTITY_BYTES never need more
        length, pos = (cid[3] & 0x7F) | (cid[4] << 7), 5
    digest = cid[pos:]
    return digest if len(digest) == length else None
