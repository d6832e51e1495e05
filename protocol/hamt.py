"""HAMT-sharded UnixFS directories (UnixFS spec, "HAMTDirectory"), as Helia and Kubo write them.

Theory of operation
-------------------
A directory too large for one block is a hash array mapped trie of dag-pb nodes. Each node's
UnixFS Data has Type 5, ``fanout`` (a power of two, 256 by default), ``hashType`` 0x22
(murmur3-x64-64) and, as its ``Data`` bytes, a bitfield saying which of the ``fanout`` buckets
are used (a big-endian integer, bit *i* for bucket *i*, leading zero bytes dropped). Each link's
name starts with its bucket index as upper-case hex, zero-padded to the width of ``fanout - 1``
(two digits for 256). A link whose name is only that prefix is a sub-shard holding every entry
whose hash shares the buckets chosen so far; a longer name is one directory entry, its name
after the prefix.

An entry's bucket at depth *d* is the *d*-th group of ``log2(fanout)`` bits of the first 64 bits
of murmur3-x64-128 over the name's UTF-8 bytes, taken from the most significant bit down (h1 of
the hash, which is what go-unixfs and ``hamt-sharding`` consume). 64 bits allow ``64 //
log2(fanout)`` levels; a HAMT deeper than that is refused (Helia would rehash; no real directory
gets there). Because an entry sits in a leaf exactly when no other name shares its buckets, the
trie for a set of names is unique, so building needs no insertion order.

This module is pure: it hashes, parses one node's shard fields against its links, and builds.
Walking a HAMT across blocks (listing, looking one name up) lives in :mod:`protocol.unixfs`,
which has the block reader.

When to shard (the ``unixfs-v1-2025`` default Helia applies, ipfs-unixfs-importer 17's
``links-bytes`` strategy): a directory becomes a HAMT once the sum, over its entries that are
files, of UTF-8 name bytes plus CID bytes exceeds 256 KiB. Sub-folders count nothing: the
importer decides while they are still unbuilt and have no CID. ipfs-car 3 shards by count
instead (more than 1,000 entries); fabnode follows Helia. (ipfs-unixfs-importer's own
``profile: "unixfs-v1-2025"`` would measure the exact node size, ``block-bytes``, but
@helia/unixfs does not pass a profile; Kubo's ``links-bytes`` estimate also counts sub-folders,
whose CIDs it has by then: not checked here, no Kubo binary is in the registries.)
"""

from __future__ import annotations

from dataclasses import dataclass

import mmh3

from .dagpb import PBLink
from .errors import InvalidBlock
from .varint import encode_varint

MURMUR3_X64_64 = 0x22
"""The only hashType fabnode reads or writes (the multicodec of murmur3-x64-64)."""
DEFAULT_FANOUT = 256
MIN_FANOUT = 8
MAX_FANOUT = 1024
"""Fanouts fabnode reads: a power of two in this range (Kubo and Helia write 256)."""
SHARD_SPLIT_THRESHOLD_BYTES = 256 * 1024
"""Helia's ``shardSplitThresholdBytes``: shard once the estimate below passes it."""
HASH_BITS = 64


def name_hash(name: str) -> int:
    """The 64 bits a name is bucketed by: h1 of murmur3-x64-128 (seed 0) over its UTF-8 bytes."""
    return mmh3.hash64(name.encode("utf-8"), seed=0, x64arch=True, signed=False)[0]


def bits_of(fanout: int) -> int:
    return fanout.bit_length() - 1


def max_levels(fanout: int) -> int:
    """Shard levels the 64 hash bits allow (8 for fanout 256)."""
    return HASH_BITS // bits_of(fanout)


def bucket_prefix(hash64: int, depth: int, fanout: int) -> int:
    """The buckets of levels 0..depth as one number (the last level in its low bits)."""
    bits = bits_of(fanout)
    return hash64 >> (HASH_BITS - bits * (depth + 1))


def bucket_index(hash64: int, depth: int, fanout: int) -> int:
    return bucket_prefix(hash64, depth, fanout) & (fanout - 1)


def label_width(fanout: int) -> int:
    return len(f"{fanout - 1:X}")


def estimated_links_bytes(entries: list[tuple[str, bytes, bool]]) -> int:
    """Helia's size estimate of a plain directory: (name, cid, is_directory) per entry; a
    sub-folder counts 0 (see the module docstring)."""
    return sum(len(name.encode("utf-8")) + len(cid) for name, cid, is_dir in entries if not is_dir)


def should_shard(entries: list[tuple[str, bytes, bool]]) -> bool:
    return estimated_links_bytes(entries) > SHARD_SPLIT_THRESHOLD_BYTES


def shard_data(bitfield: int, fanout: int) -> bytes:
    """UnixFS Data of a HAMT node, byte for byte as ipfs-unixfs writes it: Type, Data (the
    bitfield), hashType, fanout."""
    raw = bitfield.to_bytes(max(1, (bitfield.bit_length() + 7) // 8), "big")
    return (b"\x08\x05\x12" + encode_varint(len(raw)) + raw + b"\x28" + encode_varint(MURMUR3_X64_64)
            + b"\x30" + encode_varint(fanout))


@dataclass(frozen=True, slots=True)
class Shard:
    """One HAMT node's shard fields, checked against its links."""

    fanout: int
    slots: dict[int, PBLink]
    """Bucket index -> the link in it."""

    def width(self) -> int:
        return label_width(self.fanout)

    def is_subshard(self, link: PBLink) -> bool:
        return len(link.name) == self.width()

    def entry_name(self, link: PBLink) -> str:
        return link.name[self.width():]


def parse_shard(where: str, links: tuple[PBLink, ...], bitfield: bytes, hash_type: int | None,
                fanout: int | None) -> Shard:
    """Check a HAMT node's own fields (cheap checks first); raises one-line :class:`InvalidBlock`."""
    if hash_type != MURMUR3_X64_64:
        shown = "none" if hash_type is None else f"0x{hash_type:x}"
        raise InvalidBlock(f"{where}: HAMT directory uses hash type {shown}; fabnode reads only "
                           f"murmur3-x64-64 (0x{MURMUR3_X64_64:x})")
    if fanout is None or fanout < MIN_FANOUT or fanout > MAX_FANOUT or fanout & (fanout - 1):
        raise InvalidBlock(f"{where}: HAMT directory has fanout {fanout}; fabnode reads a power of two "
                           f"from {MIN_FANOUT} to {MAX_FANOUT}")
    if len(bitfield) > fanout // 8:
        raise InvalidBlock(f"{where}: HAMT bitfield is {len(bitfield)} bytes, more than fanout {fanout} needs")
    width = label_width(fanout)
    slots: dict[int, PBLink] = {}
    for link in links:
        prefix = link.name[:width]
        if len(prefix) != width or any(c not in "0123456789ABCDEF" for c in prefix):
            raise InvalidBlock(f"{where}: HAMT link {link.name!r} does not start with a {width}-digit "
                               f"upper-case hex bucket index")
        index = int(prefix, 16)
        if index >= fanout:
            raise InvalidBlock(f"{where}: HAMT link {link.name!r} names bucket {index}, beyond fanout {fanout}")
        if index in slots:
            raise InvalidBlock(f"{where}: HAMT has two links in bucket {prefix} ({slots[index].name!r}, {link.name!r})")
        slots[index] = link
    used = int.from_bytes(bitfield, "big")
    linked = sum(1 << i for i in slots)
    if used != linked:
        raise InvalidBlock(f"{where}: HAMT bitfield disagrees with its links (bitfield marks "
                           f"{bin(used).count('1')} buckets, links fill {len(slots)}, "
                           f"{bin(used ^ linked).count('1')} differ)")
    return Shard(fanout, slots)


# ---------------------------------------------------------------- building


@dataclass(frozen=True, slots=True)
class ShardNode:
    """A HAMT node to encode: the caller turns it into a block (children first)."""

    slots: dict[int, tuple[str, object] | "ShardNode"]
    """Bucket -> (entry name, child) or a sub-shard."""


def plan_shards(entries: list[tuple[str, object]], fanout: int = DEFAULT_FANOUT) -> ShardNode:
    """Place each (name, child) in the unique trie for these names."""
    hashed = [(name_hash(name), name, child) for name, child in entries]

    def place(group: list[tuple[int, str, object]], depth: int) -> ShardNode:
        if depth >= max_levels(fanout):
            names = sorted(name for _, name, _ in group)
            raise ValueError(f"names {names[:2]} share all {HASH_BITS} hash bits: cannot shard them")
        buckets: dict[int, list[tuple[int, str, object]]] = {}
        for item in group:
            buckets.setdefault(bucket_index(item[0], depth, fanout), []).append(item)
        slots: dict[int, tuple[str, object] | ShardNode] = {}
        for index, members in buckets.items():
            if len(members) == 1:
                slots[index] = (members[0][1], members[0][2])
            else:
                slots[index] = place(members, depth + 1)
        return ShardNode(slots)

    return place(hashed, 0)
