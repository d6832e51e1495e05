"""UnixFS v1 as the ``unixfs-v1-2025`` profile writes it (what ``ipfs-car pack`` 3.x makes).

Building
--------
Theory of operation: a file is cut into 1 MiB chunks, each stored as a *raw* block (codec 0x55).
A file of at most one chunk is that single raw block (the empty file is the raw block of zero
bytes). Longer files become a *balanced* tree of dag-pb File nodes at most 1024 links wide,
built level by level as chunks arrive: ``levels[0]`` collects leaves; whenever a level holds 1024
entries they become one node one level up. :meth:`FileBuilder.finish` then folds every partial
level upward, wrapping even a single leftover entry when a higher level exists, until one entry
remains: the root. This is the layout of ``@ipld/unixfs``'s ``balanced.js`` with width 1024, and
it keeps memory at O(depth x 1024) entries whatever the file size.

Directories are one dag-pb node with Data ``08 01`` and links sorted by the UTF-8 bytes of
their names, until Helia's size rule says to shard them: then they are a HAMT
(:mod:`protocol.hamt`; :func:`build_directory_blocks` decides). ipfs-car 3 shards by count (more
than 1,000 entries) instead, so for such folders fabnode's CID is Helia's and Kubo's, not ipfs-car's.

Reading
-------
Readers take a ``get(cid) -> bytes`` callable returning *verified* block bytes, so the same code
reads from the SQLite store, from a CAR file being imported or from a peer's stream. Every walk is
bounded in depth; names are checked with :mod:`protocol.paths` before anyone may write them.
A directory's entries are read with :func:`directory_entries` (a HAMT is flattened and checked
whole) and one name with :func:`lookup` (a HAMT is descended only along that name's buckets), so
no caller reads ``links`` of a directory node directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from . import hamt
from .cid import DAG_PB, RAW, check_cid_bytes, cid_codec, cid_str, make_cid
from .dag import MAX_DEPTH, walk
from .dagpb import PBLink, decode_node, encode_node
from .errors import InvalidBlock, InvalidCID, MissingBlock, PathNotFound
from .varint import decode_varint, encode_varint

CHUNK_SIZE = 1024 * 1024
"""Bytes per leaf: fixed 1 MiB chunks."""
MAX_LINKS = 1024
"""Children per dag-pb File node in the balanced layout."""

DIRECTORY_DATA = b"\x08\x01"

# UnixFS Data.Type values
T_RAW, T_DIRECTORY, T_FILE, T_METADATA, T_SYMLINK, T_HAMT = range(6)
_TYPE_NAMES = {T_RAW: "raw", T_DIRECTORY: "directory", T_FILE: "file", T_METADATA: "metadata",
               T_SYMLINK: "symlink", T_HAMT: "HAMT-sharded directory"}

Get = Callable[[bytes], bytes]


@dataclass(frozen=True, slots=True)
class Block:
    cid: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class Built:
    """The root of a DAG just built."""

    cid: bytes
    tsize: int
    """Cumulative bytes of every block in the DAG (the dag-pb link Tsize)."""
    size: int
    """Bytes of file content under it."""
    directory: bool = False
    """Whether it is a folder (Helia's shard rule counts only files' links)."""


def file_node_data(filesize: int, blocksizes: list[int]) -> bytes:
    """The UnixFS Data of a File node with these sizes, as ipfs-car writes it."""
    out = bytearray(b"\x08\x02\x18")
    out += encode_varint(filesize)
    for size in blocksizes:  # not packed: one key per value, as js-ipfs-unixfs writes them
        out += b"\x20"
        out += encode_varint(size)
    return bytes(out)


def _file_node(children: list[Built]) -> tuple[Block, Built]:
    links = [PBLink(child.cid, "", child.tsize) for child in children]
    data = file_node_data(sum(c.size for c in children), [c.size for c in children])
    block_bytes = encode_node(links, data)
    cid = make_cid(DAG_PB, block_bytes)
    built = Built(cid, len(block_bytes) + sum(c.tsize for c in children), sum(c.size for c in children))
    return Block(cid, block_bytes), built


class FileBuilder:
    """Incremental balanced-tree builder: feed chunks in order, then :meth:`finish`.

    Each call returns the blocks that became final, so a caller can store them at once and
    keep nothing of the content in memory.
    """

    def __init__(self, *, width: int = MAX_LINKS, chunk_size: int = CHUNK_SIZE) -> None:
        # width and chunk_size are parameters only so tests can build deep trees from small
        # inputs and compare them with @ipld/unixfs at the same settings.
        self.width = width
        self.chunk_size = chunk_size
        self._levels: list[list[Built]] = [[]]

    def add_chunk(self, chunk: bytes, cid: bytes | None = None) -> list[Block]:
        """``cid``: the chunk's raw CID when the caller hashed it already (in another thread)."""
        if len(chunk) > self.chunk_size:
            raise ValueError("chunk larger than the chunk size")
        if cid is None:
            cid = make_cid(RAW, chunk)
        out = [Block(cid, chunk)]
        self._levels[0].append(Built(cid, len(chunk), len(chunk)))
        level = 0
        while len(self._levels[level]) == self.width:
            block, built = _file_node(self._levels[level])
            out.append(block)
            self._levels[level] = []
            if level + 1 == len(self._levels):
                self._levels.append([])
            self._levels[level + 1].append(built)
            level += 1
        return out

    def finish(self) -> tuple[list[Block], Built]:
        out: list[Block] = []
        if not any(self._levels):  # the empty file
            out.extend(self.add_chunk(b""))
        for level in range(len(self._levels)):
            entries = self._levels[level]
            is_top = level == len(self._levels) - 1
            if is_top and len(entries) == 1:
                return out, entries[0]
            if entries:
                block, built = _file_node(entries)
                out.append(block)
                self._levels[level] = []
                if is_top:
                    return out, built
                self._levels[level + 1].append(built)
        raise AssertionError("unreachable: the top level always yields a root")


def build_directory(entries: list[tuple[str, Built]]) -> tuple[Block, Built]:
    """One plain UnixFS directory node over already-built children."""
    ordered = sorted(entries, key=lambda e: e[0].encode("utf-8"))
    links = [PBLink(child.cid, name, child.tsize) for name, child in ordered]
    block_bytes = encode_node(links, DIRECTORY_DATA)
    cid = make_cid(DAG_PB, block_bytes)
    tsize = len(block_bytes) + sum(child.tsize for _, child in ordered)
    return Block(cid, block_bytes), Built(cid, tsize, sum(child.size for _, child in ordered), True)


def build_hamt_directory(entries: list[tuple[str, Built]], fanout: int = hamt.DEFAULT_FANOUT) -> tuple[list[Block], Built]:
    """A HAMT-sharded directory over already-built children, as Helia writes it; sub-shards
    come before the shards linking them."""
    blocks: list[Block] = []
    width = hamt.label_width(fanout)

    def encode_shard(shard: hamt.ShardNode) -> Built:
        links = []
        bitfield = 0
        for index in sorted(shard.slots):
            bitfield |= 1 << index
            slot = shard.slots[index]
            label = f"{index:0{width}X}"
            if isinstance(slot, hamt.ShardNode):
                child = encode_shard(slot)
                links.append(PBLink(child.cid, label, child.tsize))
            else:
                name, child = slot
                links.append(PBLink(child.cid, label + name, child.tsize))
        block_bytes = encode_node(links, hamt.shard_data(bitfield, fanout))
        cid = make_cid(DAG_PB, block_bytes)
        blocks.append(Block(cid, block_bytes))
        return Built(cid, len(block_bytes) + sum(link.tsize for link in links), 0, True)

    root = encode_shard(hamt.plan_shards(entries, fanout))
    return blocks, Built(root.cid, root.tsize, sum(child.size for _, child in entries), True)


def build_directory_blocks(entries: list[tuple[str, Built]]) -> tuple[list[Block], Built]:
    """A directory by the profile's size rule: plain, or a HAMT once Helia would shard it."""
    if hamt.should_shard([(name, child.cid, child.directory) for name, child in entries]):
        return build_hamt_directory(entries)
    block, built = build_directory(entries)
    return [block], built


# ---------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class UnixFSNode:
    """A block seen as UnixFS: what kind of entry it is and what it links to."""

    kind: str
    """``"file"`` or ``"directory"`` (other UnixFS types are refused when decoded)."""
    links: tuple[PBLink, ...]
    data: bytes
    """Inline file bytes (the whole block for a raw leaf)."""
    filesize: int
    """Declared content size of a file; 0 for directories."""
    blocksizes: tuple[int, ...] = ()
    """Content size under each link of a file node."""
    shard: hamt.Shard | None = None
    """For a HAMT-sharded directory node: its buckets (its ``links`` are then shard links, not
    entries: read entries with :func:`directory_entries`)."""


def _decode_unixfs_data(buf: bytes) -> tuple[int, bytes, int | None, list[int], int | None, int | None]:
    pos = 0
    utype = None
    data = b""
    filesize = None
    hash_type = fanout = None
    blocksizes: list[int] = []
    while pos < len(buf):
        key, pos = decode_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = decode_varint(buf, pos)
            if field == 1:
                utype = value
            elif field == 3:
                filesize = value
            elif field == 4:
                blocksizes.append(value)
            elif field == 5:
                hash_type = value
            elif field == 6:
                fanout = value
            # mode (7): no bearing on content
        elif wire == 2:
            length, pos = decode_varint(buf, pos)
            chunk = buf[pos:pos + length]
            if len(chunk) != length:
                raise InvalidBlock("UnixFS Data field runs past the end of the block")
            pos += length
            if field == 2:
                data = chunk
            elif field == 4:  # packed blocksizes, which some writers emit
                p = 0
                while p < len(chunk):
                    value, p = decode_varint(chunk, p)
                    blocksizes.append(value)
            # mtime (8) and others: ignored
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise InvalidBlock(f"UnixFS Data has unsupported wire type {wire}")
    if utype is None:
        raise InvalidBlock("UnixFS Data has no Type")
    return utype, data, filesize, blocksizes, hash_type, fanout


def decode(cid: bytes, block: bytes) -> UnixFSNode:
    """Interpret a verified block as UnixFS; refuse types fabnode will not read or write."""
    codec = cid_codec(cid)
    if codec == RAW:
        return UnixFSNode("file", (), block, len(block))
    if codec != DAG_PB:
        raise InvalidBlock(f"{cid_str(cid)} is not a UnixFS node (codec 0x{codec:x})")
    node = decode_node(block)
    for link in node.links:
        try:
            check_cid_bytes(link.cid)
        except InvalidCID as exc:
            raise InvalidBlock(f"{cid_str(cid)}: link {link.name!r} is not a usable CID ({exc})") from None
    if node.data is None:
        raise InvalidBlock(f"{cid_str(cid)} is a dag-pb node without UnixFS Data")
    utype, data, filesize, blocksizes, hash_type, fanout = _decode_unixfs_data(node.data)
    if utype == T_DIRECTORY:
        return UnixFSNode("directory", node.links, b"", 0)
    if utype == T_HAMT:
        shard = hamt.parse_shard(cid_str(cid), node.links, data, hash_type, fanout)
        return UnixFSNode("directory", node.links, b"", 0, (), shard)
    if utype in (T_FILE, T_RAW):
        if node.links and len(blocksizes) != len(node.links):
            raise InvalidBlock(f"{cid_str(cid)}: file node has {len(node.links)} links but {len(blocksizes)} blocksizes")
        declared = filesize if filesize is not None else len(data) + sum(blocksizes)
        if declared != len(data) + sum(blocksizes):
            raise InvalidBlock(f"{cid_str(cid)}: file node declares {declared} bytes but its parts hold {len(data) + sum(blocksizes)}")
        return UnixFSNode("file", node.links, data, declared, tuple(blocksizes))
    raise InvalidBlock(f"{cid_str(cid)} is a UnixFS {_TYPE_NAMES.get(utype, f'type {utype}')}, which fabnode does not read")


def resolve(get: Get, root: bytes, segments: list[str]) -> bytes:
    """Follow directory names from ``root``; return the CID the path names."""
    return resolve_crossing(get, root, segments)[0]


def resolve_crossing(get: Get, root: bytes, segments: list[str]) -> tuple[bytes, list[bytes]]:
    """Like :func:`resolve`, and also the CIDs of the directories crossed on the way (what a
    verifier needs, besides the target's DAG, to check the path from ``root``): for a HAMT,
    its root and the sub-shards on the name's buckets, in the order they are descended."""
    cid = root
    walked: list[str] = []
    crossed: list[bytes] = []
    for segment in segments:
        node = decode(cid, get(cid))
        crossed.append(cid)
        if node.kind != "directory":
            raise PathNotFound(f"{cid_str(root)}/{'/'.join(walked)} is a file, not a directory")
        found, shards = lookup(get, cid, node, segment)
        crossed.extend(shards)
        if found is None:
            raise PathNotFound(f"no entry {segment!r} in {cid_str(root)}/{'/'.join(walked)}".rstrip("/"))
        cid = found
        walked.append(segment)
    return cid, crossed


def hamt_step(cid: bytes, node: UnixFSNode, name: str, depth: int) -> tuple[str, bytes] | None:
    """One level of a HAMT lookup: ``("shard", sub-shard CID)`` to descend, ``("entry", CID)``
    when found, None when ``name`` is not in this directory. ``depth`` is the node's level
    below the HAMT's root (0 for the root)."""
    shard = node.shard
    if depth >= hamt.max_levels(shard.fanout):
        raise InvalidBlock(f"{cid_str(cid)}: HAMT deeper than its {hamt.HASH_BITS} hash bits allow "
                           f"({hamt.max_levels(shard.fanout)} levels at fanout {shard.fanout})")
    link = shard.slots.get(hamt.bucket_index(hamt.name_hash(name), depth, shard.fanout))
    if link is None:
        return None
    if shard.is_subshard(link):
        return "shard", link.cid
    return ("entry", link.cid) if shard.entry_name(link) == name else None


def _subshard(get: Get, parent: UnixFSNode, cid: bytes, seen: set[bytes]) -> UnixFSNode:
    if cid in seen:
        raise InvalidBlock(f"{cid_str(cid)}: HAMT shard linked twice (a cycle or a repeated sub-shard)")
    seen.add(cid)
    child = decode(cid, get(cid))
    if child.shard is None:
        raise InvalidBlock(f"{cid_str(cid)}: HAMT sub-shard link leads to a {child.kind}, not a shard")
    if child.shard.fanout != parent.shard.fanout:
        raise InvalidBlock(f"{cid_str(cid)}: HAMT sub-shard has fanout {child.shard.fanout} under a "
                           f"shard of fanout {parent.shard.fanout}")
    return child


def lookup(get: Get, cid: bytes, node: UnixFSNode, name: str) -> tuple[bytes | None, list[bytes]]:
    """The CID ``name`` names in the directory ``node`` (None if absent), and the HAMT
    sub-shards read on the way. A HAMT is descended along ``name``'s buckets only."""
    if node.shard is None:
        return next((link.cid for link in node.links if link.name == name), None), []
    crossed: list[bytes] = []
    seen = {cid}
    depth = 0
    current, current_cid = node, cid
    while True:
        step = hamt_step(current_cid, current, name, depth)
        if step is None:
            return None, crossed
        what, child = step
        if what == "entry":
            return child, crossed
        current, current_cid = _subshard(get, current, child, seen), child
        crossed.append(child)
        depth += 1


def directory_entries(get: Get, cid: bytes, node: UnixFSNode | None = None,
                      shards: set[bytes] | None = None) -> list[PBLink]:
    """A directory's entries (name, CID, Tsize), sorted by the UTF-8 bytes of their names.

    A HAMT is read whole and checked: every sub-shard once, no deeper than its hash bits
    allow, each entry in the bucket its name hashes to. ``shards``, when given, collects the
    sub-shard CIDs read."""
    if node is None:
        node = decode(cid, get(cid))
    if node.shard is None:
        return list(node.links)
    out: list[PBLink] = []
    seen = {cid}
    fanout = node.shard.fanout
    stack: list[tuple[bytes, UnixFSNode, int, int]] = [(cid, node, 0, 0)]  # (cid, node, depth, buckets above)
    while stack:
        shard_cid, shard_node, depth, above = stack.pop()
        if depth >= hamt.max_levels(fanout):
            raise InvalidBlock(f"{cid_str(shard_cid)}: HAMT deeper than its {hamt.HASH_BITS} hash bits allow "
                               f"({hamt.max_levels(fanout)} levels at fanout {fanout})")
        for index, link in shard_node.shard.slots.items():
            prefix = (above << hamt.bits_of(fanout)) | index
            if shard_node.shard.is_subshard(link):
                stack.append((link.cid, _subshard(get, shard_node, link.cid, seen), depth + 1, prefix))
                if shards is not None:
                    shards.add(link.cid)
                continue
            name = shard_node.shard.entry_name(link)
            if hamt.bucket_prefix(hamt.name_hash(name), depth, fanout) != prefix:
                raise InvalidBlock(f"{cid_str(shard_cid)}: HAMT entry {name!r} is in the wrong bucket "
                                   f"(its name hashes elsewhere)")
            out.append(PBLink(link.cid, name, link.tsize))
    out.sort(key=lambda link: link.name.encode("utf-8"))
    return out


def iter_file(get: Get, cid: bytes) -> Iterator[bytes]:
    """Yield a file's content in order, one leaf at a time (bounded memory, bounded depth).

    Checks that each node's parts add up to what its parent declared, so a tree that lies about
    sizes fails instead of giving a short or long file.
    """
    stack: list[tuple[bytes, int | None, int]] = [(cid, None, 0)]
    while stack:
        current, expected, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidBlock(f"file DAG under {cid_str(cid)} is deeper than {MAX_DEPTH}")
        node = decode(current, get(current))
        if node.kind != "file":
            raise InvalidBlock(f"{cid_str(current)} is a directory inside a file")
        if expected is not None and node.filesize != expected:
            raise InvalidBlock(f"{cid_str(current)} holds {node.filesize} bytes but its parent says {expected}")
        if node.data:
            yield node.data
        for link, size in reversed(list(zip(node.links, node.blocksizes))):
            stack.append((link.cid, size, depth + 1))


MAX_EXPANSION = 64
"""A DAG may repeat blocks (two identical files, a file of zeros), but the content it expands to
may be at most this many times its unique bytes, plus :data:`EXPANSION_SLACK`. Beyond that it is
a decompression bomb: issue 12 saw a 1.1 MB bundle declare a 1 TiB file (a node linking 1,024
times to a node linking 1,024 times to one 1 MiB block), which filled a disk on `get`."""
EXPANSION_SLACK = 64 << 20


@dataclass(frozen=True, slots=True)
class DagSizes:
    unique_bytes: int
    """Bytes of the distinct blocks: what storing or sending the DAG costs."""
    content_bytes: int
    """Bytes of file content the DAG expands to, every repetition counted: what `get` writes."""


def dag_sizes(get: Get, root: bytes, raw_size: Callable[[bytes], int] | None = None) -> DagSizes:
    """Measure a UnixFS DAG and check every file node's sizes against its children's.

    Linear in the number of distinct blocks: each node's content size is computed once (children
    before parents, without recursion) and reused wherever the node is linked again. A file node
    whose blocksizes differ from its children's real sizes is refused, as is a DAG deeper than
    :data:`MAX_DEPTH` or expanding beyond :data:`MAX_EXPANSION` (:func:`check_expansion`).
    ``raw_size``, when given, tells a raw leaf's length without reading it (a store's index).
    """
    size_of: dict[bytes, int] = {}
    nodes: dict[bytes, UnixFSNode] = {}
    unique = 0
    has_raw = None if raw_size is None else (lambda cid: cid_codec(cid) != RAW or raw_size(cid) is not None)
    for visit in walk(get, root, has_block=has_raw):  # each distinct block once, depth bounded
        if not visit.present:
            raise MissingBlock(f"block {cid_str(visit.cid)} is not in this store")
        data = visit.data
        if data is None and cid_codec(visit.cid) == RAW:  # a raw leaf measured by the store's index, not read
            size_of[visit.cid] = raw_size(visit.cid)
            unique += size_of[visit.cid]
            continue
        if data is None:  # a leaf of another codec: read it, so that decode() says what it is
            data = get(visit.cid)
        unique += len(data)
        node = decode(visit.cid, data)
        if not node.links:  # a leaf: keep its size, not its bytes (Kubo's dag-pb leaves hold 256 KiB each)
            size_of[visit.cid] = len(node.data) if node.kind == "file" else 0
            continue
        nodes[visit.cid] = node
    # children before parents, without recursion; a link back up the path cannot be (hashes)
    stack: list[tuple[bytes, bool]] = [(root, False)]
    while stack:
        cid, children_done = stack.pop()
        if cid in size_of:
            continue
        node = nodes[cid]
        if not children_done:
            stack.append((cid, True))
            stack.extend((link.cid, False) for link in node.links if link.cid not in size_of)
            continue
        children = [size_of[link.cid] for link in node.links]
        if node.kind == "file":
            for link, declared, actual in zip(node.links, node.blocksizes, children):
                if declared != actual:
                    raise InvalidBlock(f"{cid_str(cid)} declares {declared} bytes under {cid_str(link.cid)}, "
                                       f"which holds {actual}")
            size_of[cid] = len(node.data) + sum(children)
        else:
            size_of[cid] = sum(children)
    sizes = DagSizes(unique, size_of[root])
    check_expansion(root, sizes)
    return sizes


def check_expansion(root: bytes, sizes: DagSizes) -> None:
    limit = MAX_EXPANSION * sizes.unique_bytes + EXPANSION_SLACK
    if sizes.content_bytes > limit:
        raise InvalidBlock(f"{cid_str(root)} expands to {sizes.content_bytes} bytes of files from only "
                           f"{sizes.unique_bytes} distinct bytes (more than {MAX_EXPANSION}x + "
                           f"{EXPANSION_SLACK >> 20} MiB): refused as a decompression bomb")
