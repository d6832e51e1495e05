"""HAMT-sharded directories, pure core: the hash, the size rule, building, reading, and each
kind of hostile shard refused in one line (issue 16). Parity with Helia is tests/test_hamt_parity.py."""

from __future__ import annotations

import pytest

from fabnode.protocol import hamt
from fabnode.protocol.car import encode_header, encode_section
from fabnode.protocol.cid import DAG_PB, RAW, cid_str, make_cid
from fabnode.protocol.dagpb import PBLink, decode_node, encode_node
from fabnode.protocol.errors import InvalidBlock, PathNotFound
from fabnode.protocol.fetch import FetchRequest, FetchSession, RemoteProtocolError
from fabnode.protocol.unixfs import (
    Built,
    build_directory_blocks,
    build_hamt_directory,
    decode,
    directory_entries,
    lookup,
    resolve_crossing,
)
from fabnode.protocol.varint import encode_varint


def raw_file(data: bytes) -> Built:
    return Built(make_cid(RAW, data), len(data), len(data))


def test_name_hash_is_murmur3_x64_64_as_helia_takes_it():
    # h1 of murmur3-x64-128, as @multiformats/murmur3's murmur3128 prints it (first 8 bytes,
    # big-endian) and hamt-sharding consumes it, most significant bits first
    assert hamt.name_hash("") == 0
    assert hamt.name_hash("hello") == 0xCBD8A7B341BD9B02
    assert hamt.name_hash("a.txt") == 0x59A0C46995547089
    assert [hamt.bucket_index(0xCBD8A7B341BD9B02, d, 256) for d in range(8)] == [
        0xCB, 0xD8, 0xA7, 0xB3, 0x41, 0xBD, 0x9B, 0x02]
    assert hamt.bucket_index(0xCBD8A7B341BD9B02, 0, 1024) == 0xCBD8A7B341BD9B02 >> 54
    assert hamt.max_levels(256) == 8 and hamt.max_levels(1024) == 6


def _entries(n: int, name_len: int) -> list[tuple[str, Built]]:
    return [(f"{i:0{name_len}d}", raw_file(str(i).encode())) for i in range(n)]


def test_size_rule_is_helias_links_bytes_estimate_and_counts_only_files():
    cid_len = 36  # CIDv1 + sha2-256: raw and dag-pb alike
    # 1024 entries of 220-byte names: 1024 * (220 + 36) = 262144 exactly: not yet past the threshold
    at = _entries(1024, 220)
    assert hamt.estimated_links_bytes([(n, c.cid, False) for n, c in at]) == 1024 * (220 + cid_len) == 262_144
    blocks, built = build_directory_blocks(at)
    assert len(blocks) == 1 and decode(built.cid, blocks[0].data).shard is None
    # one byte more in one name: past it, so a HAMT
    over = at[:-1] + [("x" * 221, at[-1][1])]
    blocks, built = build_directory_blocks(over)
    assert decode(built.cid, blocks[-1].data).shard is not None and blocks[-1].cid == built.cid
    # a sub-folder counts nothing however long its name: Helia decides before it has a CID
    folder = Built(make_cid(DAG_PB, b"some folder"), 10, 0, directory=True)
    blocks, _ = build_directory_blocks(at[:-1] + [("y" * 4000, folder)])
    assert len(blocks) == 1


def test_a_hamt_lists_everything_and_a_lookup_reads_only_its_buckets():
    entries = _entries(3000, 8)
    blocks, built = build_hamt_directory(entries)
    store = {b.cid: b.data for b in blocks}
    reads: list[bytes] = []

    def get(cid: bytes) -> bytes:
        reads.append(cid)
        return store[cid]

    root = decode(built.cid, store[built.cid])
    assert root.shard.fanout == 256 and len(blocks) > 1
    shards: set[bytes] = set()
    listed = directory_entries(get, built.cid, root, shards)
    assert [(l.name, l.cid) for l in listed] == [(n, c.cid) for n, c in sorted(entries)]
    assert shards == set(store) - {built.cid}
    for name, child in entries[::250]:
        reads.clear()
        found, crossed = lookup(get, built.cid, root, name)
        assert found == child.cid
        assert reads == crossed and 1 <= len(crossed) <= 3  # 3000 names: a sub-shard or two, never all
    assert lookup(get, built.cid, root, "absent.txt")[0] is None
    target, crossed = resolve_crossing(get, built.cid, [entries[42][0]])
    assert target == entries[42][1].cid and crossed[0] == built.cid and set(crossed[1:]) <= shards
    with pytest.raises(PathNotFound, match="no entry 'nope'"):
        resolve_crossing(get, built.cid, ["nope"])


def test_a_fetch_session_follows_a_path_through_hamt_shards():
    entries = _entries(3000, 8)
    blocks, built = build_hamt_directory(entries)
    store = {b.cid: b.data for b in blocks}
    target, crossed = resolve_crossing(store.get, built.cid, ["00000777"])
    session = FetchSession(FetchRequest(built.cid, ("00000777",)), set())
    stream = encode_header([built.cid]) + b"".join(encode_section(c, store[c]) for c in crossed)
    file_bytes = b"777"
    got = session.receive(stream + encode_section(target, file_bytes))
    assert [b.cid for b in got] == crossed + [target] and session.root == target
    # a peer that skips a sub-shard on the way is caught
    skipping = FetchSession(FetchRequest(built.cid, ("00000777",)), set())
    with pytest.raises(RemoteProtocolError, match="where the path needs"):
        skipping.receive(encode_header([built.cid]) + encode_section(built.cid, store[built.cid])
                         + encode_section(target, file_bytes))


# ---------------------------------------------------------------- hostile shards


def shard_block(links: list[PBLink], *, bitfield: int | None = None, hash_type: int = 0x22,
                fanout: int = 256) -> tuple[bytes, bytes]:
    """A HAMT node with chosen fields; the bitfield defaults to what the links' prefixes say."""
    width = hamt.label_width(fanout)
    if bitfield is None:
        bitfield = sum(1 << int(link.name[:width], 16) for link in links)
    raw = bitfield.to_bytes(max(1, (bitfield.bit_length() + 7) // 8), "big")
    data = (b"\x08\x05\x12" + encode_varint(len(raw)) + raw + b"\x28" + encode_varint(hash_type)
            + b"\x30" + encode_varint(fanout))
    block = encode_node(sorted(links, key=lambda l: l.name.encode()), data)
    return make_cid(DAG_PB, block), block


HELLO = (make_cid(RAW, b"hello\n"), b"hello\n")


def _entry_link(name: str, bucket: int | None = None, depth: int = 0) -> PBLink:
    index = hamt.bucket_index(hamt.name_hash(name), depth, 256) if bucket is None else bucket
    return PBLink(HELLO[0], f"{index:02X}{name}", 6)


def hostile_hamts() -> list[tuple[str, bytes, list[tuple[bytes, bytes]], str]]:
    """(case, root CID, blocks, words the refusal must contain): each a HAMT folder a peer or a
    CAR might carry. Shared with tests/test_import_hostile.py, which imports them as CARs."""
    cases = []
    good = [_entry_link("a.txt"), _entry_link("b.txt")]

    def case(name, root_block, reason, more=()):
        cases.append((name, root_block[0], [root_block, *more, HELLO], reason))

    case("HAMT with an unknown hash type", shard_block(good, hash_type=0x23), "hash type 0x23")
    case("HAMT fanout not a power of two", shard_block(good, fanout=200), "fanout 200")
    case("HAMT fanout too large", shard_block([PBLink(HELLO[0], "000a.txt", 6)], fanout=1 << 16),
         "fanout 65536")
    bits = sum(1 << int(l.name[:2], 16) for l in good)
    case("HAMT bitfield disagreeing with its links", shard_block(good, bitfield=bits | 1 << 7),
         "bitfield disagrees with its links")
    case("HAMT link name without a bucket prefix",
         shard_block(good + [PBLink(HELLO[0], "zzc.txt", 6)], bitfield=bits), "does not start with")
    right = hamt.bucket_index(hamt.name_hash("a.txt"), 0, 256)
    case("HAMT entry in the wrong bucket", shard_block([_entry_link("a.txt", bucket=(right + 1) % 256)]),
         "in the wrong bucket")
    # nine levels of sub-shards along one name's buckets: fanout 256 has hash bits for eight
    name = "deep.txt"
    h = hamt.name_hash(name)
    inner = shard_block([_entry_link(name, bucket=0)])
    chain = [inner]
    for depth in range(8, -1, -1):
        index = hamt.bucket_index(h, depth, 256) if depth < 8 else 0
        chain.append(shard_block([PBLink(chain[-1][0], f"{index:02X}", 100)]))
    case("HAMT deeper than its hash bits", chain[-1], "deeper than its 64 hash bits", chain[:-1])
    sub = shard_block([_entry_link("a.txt", depth=1), _entry_link("b.txt", depth=1)])
    twice = shard_block([PBLink(sub[0], "00", 100), PBLink(sub[0], "01", 100)])
    case("HAMT linking one sub-shard twice", twice, "linked twice", [sub])
    plain = encode_node([PBLink(HELLO[0], "a.txt", 6)], b"\x08\x01")
    to_plain = shard_block([PBLink(make_cid(DAG_PB, plain), "00", 50)])
    case("HAMT sub-shard that is a plain folder", to_plain, "not a shard", [(make_cid(DAG_PB, plain), plain)])
    return cases


HOSTILE = hostile_hamts()


@pytest.mark.parametrize("case, root, blocks, reason", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_a_hostile_hamt_is_refused_in_one_line(case, root, blocks, reason):
    store = dict(blocks)
    with pytest.raises(InvalidBlock, match=reason) as caught:
        directory_entries(store.__getitem__, root)
    assert "\n" not in str(caught.value) and "bafy" in str(caught.value)  # one line, naming the block


def test_hostile_depth_is_refused_on_lookup_too():
    case = next(c for c in HOSTILE if "deeper" in c[0])
    store = dict(case[2])
    with pytest.raises(InvalidBlock, match="deeper than its 64 hash bits"):
        lookup(store.__getitem__, case[1], decode(case[1], store[case[1]]), "deep.txt")


def test_the_helia_layout_of_a_shard_node():
    """Data is Type 5, the bitfield (big-endian, leading zero bytes dropped), hashType 0x22,
    fanout 256; links are two upper-case hex digits + the name, sorted."""
    blocks, built = build_hamt_directory([("a.txt", raw_file(b"1")), ("b.txt", raw_file(b"2"))])
    node = decode_node(blocks[-1].data)
    a, b = (hamt.bucket_index(hamt.name_hash(n), 0, 256) for n in ("a.txt", "b.txt"))
    bitfield = (1 << a) | (1 << b)
    raw = bitfield.to_bytes((bitfield.bit_length() + 7) // 8, "big")
    assert node.data == b"\x08\x05\x12" + bytes([len(raw)]) + raw + b"\x28\x22\x30\x80\x02"
    assert [l.name for l in node.links] == sorted([f"{a:02X}a.txt", f"{b:02X}b.txt"])
