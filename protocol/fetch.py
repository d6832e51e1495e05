"""The fetch protocol ``/fabnode/car/1.0.0`` (docs/protocol.md §9), without I/O.

Theory of operation: the asker opens a stream and sends one request frame — varint length, then
msgpack ``{"root": CID bytes, "path": [segments], "have": [CID bytes…]}`` — naming a DAG and the
blocks of it that it already holds (so an interrupted fetch resumes). The server answers with a
CAR stream whose header root is the requested root; then, for a path, the directory blocks from
the root along the path, in order (each names the next by a link of the path's next name); then
every block of the DAG the path resolves to (the *target*: the root itself without a path),
depth-first, leaving out the ones in ``have``; and closes the stream. This is the layout of the
trustless gateway's ``?format=car`` answer.

Only what changed travels (issue 20). A lab holding version 1 of a design asks for version 2,
whose root it does not hold, so it cannot yet name the blocks of version 2 it already has. It
first asks for the DAG's *interior* (request key ``"interior": true``): the same stream but only
the dag-pb nodes (directories and file nodes), which are about a thousandth of the bytes. Then
it knows every block of the DAG, and its second, ordinary request lists in ``have`` every one it
holds — from any design or version — and the server sends only the rest. ``have`` is exact (no
filter): a false positive could never lose a block, and its cost stays bounded by the frame
limits below (an asker with more held blocks than :data:`MAX_HAVE` lists that many; the rest
are sent again, which costs bytes, never correctness). ``interior`` travels only over
``/fabnode/car/1.1.0`` (:data:`PROTOCOL_INTERIOR`): a server from before issue 20 speaks only
1.0.0 and cuts off a peer that sends it an unknown key, so the asker offers 1.1.0 first and,
when multistream-select settles on 1.0.0, sends the plain request of old (docs/protocol.md §9.1).

The asker feeds the bytes to :class:`FetchSession`, which verifies each block against its CID
(through the CAR reader) and accepts only blocks it can prove it asked for: the requested root,
each directory of the path resolved from the last, then the target and the children of dag-pb
nodes it has seen (or already held). So a peer cannot make the asker store a DAG it did not ask
for by naming another root (issue 12). Anything else, a frame over the limits, or a stream that
ends before the DAG is complete, is the peer's fault (:class:`RemoteProtocolError`), raised before
the offending block is handed back to be stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from .car import Block, CarReader, Header, NEED_DATA, End, UnverifiedBlock
from .cid import DAG_PB, check_cid_bytes, cid_codec, cid_str
from .dagpb import decode_node
from .errors import InvalidBlock, InvalidCID, RemoteProtocolError

PROTOCOL = "/fabnode/car/1.0.0"
PROTOCOL_INTERIOR = "/fabnode/car/1.1.0"
"""The same stream, and a request may also carry ``interior`` (issue 20). A server before issue
20 speaks only :data:`PROTOCOL` and treats any other key as an offence (it cuts the asker
off), so an asker offers this id first and sends ``interior`` only when multistream-select
agreed on it; on :data:`PROTOCOL` a request is exactly root, path and have, as before."""
MAX_REQUEST_BYTES = 4 << 20
"""A request frame (docs/protocol.md §12: stream frames at most 4 MiB)."""
MAX_HAVE = 100_000
MAX_PATH = 64
MAX_SEGMENT_BYTES = 255
"""Longest name in a requested path (a file name on any common file system)."""


@dataclass(frozen=True, slots=True)
class FetchRequest:
    root: bytes
    path: tuple[str, ...] = ()
    have: tuple[bytes, ...] = ()
    interior: bool = False
    """Send only the DAG's dag-pb nodes (see the module docstring)."""


def encode_request(request: FetchRequest) -> bytes:
    from .varint import encode_varint

    fields = {"root": request.root, "path": list(request.path), "have": list(request.have)}
    if request.interior:  # only then: a plain request stays what servers before issue 20 read
        fields["interior"] = True
    body = msgpack.packb(fields, use_bin_type=True)
    if len(body) > MAX_REQUEST_BYTES:
        raise ValueError("request too large: ask for fewer held blocks")
    return encode_varint(len(body)) + body


def decode_request(body: bytes, interior_allowed: bool = True) -> FetchRequest:
    """Check a request frame's body (the length prefix already read and bounded).
    ``interior_allowed``: False on :data:`PROTOCOL` (1.0.0), whose map has exactly three keys."""
    try:
        value = msgpack.unpackb(body, raw=False, strict_map_key=True, max_bin_len=MAX_REQUEST_BYTES)
    except Exception as exc:
        raise RemoteProtocolError(f"fetch request is not msgpack ({exc})") from None
    if not isinstance(value, dict) or set(value) - {"interior"} != {"root", "path", "have"}:
        raise RemoteProtocolError("fetch request must be a map of exactly root, path and have (and interior)")
    if "interior" in value and not interior_allowed:
        raise RemoteProtocolError(f"fetch request: interior is not part of {PROTOCOL} (ask over {PROTOCOL_INTERIOR})")
    root, path, have = value["root"], value["path"], value["have"]
    interior = value.get("interior", False)
    if not isinstance(interior, bool):
        raise RemoteProtocolError("fetch request: interior must be true or false")
    if not isinstance(path, list) or len(path) > MAX_PATH or not all(isinstance(p, str) for p in path) \
            or any(len(p.encode("utf-8", "surrogatepass")) > MAX_SEGMENT_BYTES for p in path):
        raise RemoteProtocolError(f"fetch request path must be at most {MAX_PATH} names of at most "
                                  f"{MAX_SEGMENT_BYTES} bytes")
    if not isinstance(have, list) or len(have) > MAX_HAVE:
        raise RemoteProtocolError(f"fetch request may list at most {MAX_HAVE} held blocks")
    try:
        check_cid_bytes(root if isinstance(root, bytes) else b"")
        for cid in have:
            check_cid_bytes(cid if isinstance(cid, bytes) else b"")
    except InvalidCID as exc:
        raise RemoteProtocolError(f"fetch request: {exc}") from None
    return FetchRequest(root, tuple(path), tuple(have), interior)


class FetchSession:
    """The asker's side: feed it response bytes; it returns verified blocks the DAG needs."""

    def __init__(self, request: FetchRequest, held: frozenset[bytes] | set[bytes], *,
                 defer_leaf_hashing: bool = False) -> None:
        """``defer_leaf_hashing``: raw leaves come back as :class:`~protocol.car.UnverifiedBlock`
        (everything else about them checked: wanted, in place), for the caller to pass through
        :func:`verified` before storing them, in another thread if it likes."""
        self._reader = CarReader(verify_raw=not defer_leaf_hashing)
        self._request = request
        self._held = set(held)
        self._expected: set[bytes] = set()
        self._seen: set[bytes] = set()
        self._path_left = list(request.path)
        self._next_on_path: bytes | None = None
        """While the path is being resolved: the one block the stream must carry next."""
        self._shard_depth = 0
        """Levels below a HAMT directory's root the next path block is (0: not inside a HAMT)."""
        self.root: bytes | None = None
        """The DAG the request resolves to (the target), once the stream has proven it."""
        self.blocks = 0

    def _wanted(self, cid: bytes) -> bool:
        """Whether the stream must carry ``cid`` (an interior request: only dag-pb nodes)."""
        return cid not in self._seen and (not self._request.interior or cid_codec(cid) == DAG_PB)

    def _expect_children(self, cid: bytes, data: bytes) -> None:
        if cid_codec(cid) == DAG_PB:
            for link in decode_node(data).links:
                if self._wanted(link.cid):
                    self._expected.add(link.cid)

    def held_block(self, cid: bytes, data: bytes) -> None:
        """Tell the session about a block we already had (its children are wanted too)."""
        self._seen.add(cid)
        self._expected.discard(cid)
        self._expect_children(cid, data)

    def _target_known(self, target: bytes) -> None:
        self.root = target
        if self._wanted(target):
            self._expected.add(target)

    def _path_block(self, block: Block) -> None:
        """One directory on the way to the target: it must be the one expected, and name the next."""
        from .unixfs import decode as decode_unixfs, hamt_step

        if block.cid != self._next_on_path:
            raise RemoteProtocolError(f"the peer sent block {cid_str(block.cid)} where the path needs "
                                      f"{cid_str(self._next_on_path)}")
        try:
            node = decode_unixfs(block.cid, block.data)
        except InvalidBlock as exc:
            raise RemoteProtocolError(f"the peer sent a bad node {cid_str(block.cid)}: {exc}") from None
        name = self._path_left[0]
        if node.kind != "directory":
            raise RemoteProtocolError(f"{cid_str(block.cid)} is a file: the path has no {name!r} there")
        if node.shard is None:
            if self._shard_depth:
                raise RemoteProtocolError(f"{cid_str(block.cid)} is linked as a HAMT sub-shard but is not one")
            following = next((link.cid for link in node.links if link.name == name), None)
        else:  # a HAMT: the stream carries the sub-shards on the name's buckets, one by one
            try:
                step = hamt_step(block.cid, node, name, self._shard_depth)
            except InvalidBlock as exc:
                raise RemoteProtocolError(f"the peer sent a bad node {cid_str(block.cid)}: {exc}") from None
            following = None if step is None else step[1]
            if step is not None and step[0] == "shard":
                self._shard_depth += 1
                self._next_on_path = following
                return
            self._shard_depth = 0
        if following is None:
            raise RemoteProtocolError(f"no {name!r} in {cid_str(block.cid)}")
        self._path_left.pop(0)
        if self._path_left:
            self._next_on_path = following
        else:
            self._next_on_path = None
            self._target_known(following)

    def receive(self, data: bytes) -> list[Block | UnverifiedBlock]:
        """Verified, wanted blocks contained in ``data`` (b"" means the stream ended); raw
        leaves still to be hashed with ``defer_leaf_hashing``."""
        if data:
            self._reader.feed(data)
        else:
            self._reader.feed_eof()
        out: list[Block] = []
        while True:
            try:
                event = self._reader.next_event()
            except InvalidBlock as exc:
                raise RemoteProtocolError(f"bad CAR stream from the peer: {exc}") from None
            if event is NEED_DATA or isinstance(event, End):
                return out
            if isinstance(event, Header):
                if len(event.roots) != 1:
                    raise RemoteProtocolError("the peer's CAR stream must name exactly one root")
                if event.roots[0] != self._request.root:
                    raise RemoteProtocolError(f"the peer answered with {cid_str(event.roots[0])}, "
                                              f"not the requested {cid_str(self._request.root)}")
                if self._path_left:
                    self._next_on_path = self._request.root
                else:
                    self._target_known(self._request.root)
                continue
            assert isinstance(event, (Block, UnverifiedBlock))
            if self._next_on_path is not None:
                if isinstance(event, UnverifiedBlock):  # a leaf where a directory must come
                    event = verified(event)
                self._path_block(event)
                self.blocks += 1
                out.append(event)
                continue
            if event.cid not in self._expected:
                raise RemoteProtocolError(f"the peer sent block {cid_str(event.cid)}, which the DAG does not need")
            self._expected.discard(event.cid)
            self._seen.add(event.cid)
            try:
                self._expect_children(event.cid, event.data)
            except InvalidBlock as exc:
                raise RemoteProtocolError(f"the peer sent a bad node {cid_str(event.cid)}: {exc}") from None
            self.blocks += 1
            out.append(event)

    def missing(self) -> set[bytes]:
        """Blocks still needed (empty once the DAG is complete, given the held ones)."""
        return set(self._expected)


def verified(block: Block | UnverifiedBlock) -> Block:
    """``block`` as a verified :class:`~protocol.car.Block`: an unverified raw leaf from a session
    with ``defer_leaf_hashing`` is hashed now, and one that does not match its CID is the peer's
    fault, in the words the session itself would have used."""
    if isinstance(block, Block):
        return block
    try:
        return block.check()
    except InvalidBlock as exc:
        raise RemoteProtocolError(f"bad CAR stream from the peer: {exc}") from None
