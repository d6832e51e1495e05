"""dag-pb and UnixFS encoding: golden bytes, strict decoding, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabnode.protocol.cid import DAG_PB, RAW, cid_str, make_cid, parse_cid, parse_cid_path
from fabnode.protocol.dagpb import PBLink, decode_node, encode_node
from fabnode.protocol.errors import InvalidBlock, InvalidCID
from fabnode.protocol.unixfs import FileBuilder, build_directory, decode
from fabnode.protocol.varint import decode_varint, encode_varint

# The folder {a.txt: "hello\n", sub/b: "x\n"} as ipfs-car 3.1.0 packs it (checked by hand with
# `ipfs-car pack` and `ipfs-car ls --verbose`); pins the whole encoding path without node.
HELLO = b"hello\n"
X = b"x\n"
GOLDEN_ROOT = "bafybeibmd2ygsg5gzbc3sgytmwm6efugldwegnrv5n2lgx7dyoey6wzgsa"
GOLDEN_SUB = "bafybeid3jyaq52i6tosoyqebq3vah6ioz3z77db5nvsk7g5sbf56z4akla"


def _file(data: bytes):
    b = FileBuilder()
    b.add_chunk(data)
    return b.finish()[1]


def test_golden_directory():
    assert cid_str(_file(HELLO).cid) == "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"
    sub_block, sub = build_directory([("b", _file(X))])
    assert cid_str(sub.cid) == GOLDEN_SUB
    assert sub_block.data.endswith(b"\x0a\x02\x08\x01")  # Links first, then Data 08 01
    root_block, root = build_directory([("sub", sub), ("a.txt", _file(HELLO))])  # sorted by name bytes
    assert cid_str(root.cid) == GOLDEN_ROOT
    assert [link.name for link in decode_node(root_block.data).links] == ["a.txt", "sub"]
    # Tsize: a raw leaf counts its length; a node its own bytes plus its children's Tsize.
    assert sub.tsize == len(sub_block.data) + len(X)
    assert root.tsize == len(root_block.data) + len(HELLO) + sub.tsize


def test_file_node_layout_and_sizes():
    b = FileBuilder(width=2, chunk_size=4)
    for chunk in (b"abcd", b"efgh", b"ij"):
        b.add_chunk(chunk)
    blocks, root = b.finish()
    assert root.size == 10
    node = decode(root.cid, blocks[-1].data)
    assert node.kind == "file" and node.filesize == 10 and node.blocksizes == (8, 2)
    # UnixFS Data: Type=File, filesize, then one unpacked blocksizes key per child
    assert decode_node(blocks[-1].data).data == b"\x08\x02\x18\x0a\x20\x08\x20\x02"


def test_empty_file_is_the_empty_raw_block():
    blocks, root = FileBuilder().finish()
    assert root.cid == make_cid(RAW, b"") and [b.data for b in blocks] == [b""]
    assert cid_str(root.cid) == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


links = st.builds(PBLink, cid=st.builds(lambda d: make_cid(RAW, d), st.binary(max_size=8)),
                  name=st.text(max_size=20), tsize=st.integers(0, 2**40))


@given(st.lists(links, max_size=8), st.one_of(st.none(), st.binary(max_size=64)))
def test_dagpb_roundtrip(link_list, data):
    encoded = encode_node(link_list, data)
    node = decode_node(encoded)
    assert list(node.links) == link_list and node.data == data
    assert encode_node(node.links, node.data) == encoded


@pytest.mark.parametrize("bad, reason", [
    (b"\x0a\x00\x12\x00", "Links after Data"),
    (b"\x1a\x00", "unknown field"),
    (b"\x12\x05\x0a\x05abc", "runs past"),
    (b"\x12\x02\x12\x00", "no Hash"),
    (b"\x12\x04\x12\x00\x0a\x00", "out of order"),
    (b"\x0a\x01\x00\x0a\x01\x00", "two Data"),
    (b"\x0a\x80", "truncated varint"),
])
def test_strict_dagpb_decoding(bad, reason):
    with pytest.raises(InvalidBlock, match=reason):
        decode_node(bad)


def test_unixfs_refuses_symlinks_and_reads_hamt_shards():
    block = encode_node([], bytes([0x08, 4]))
    with pytest.raises(InvalidBlock, match="symlink"):
        decode(make_cid(DAG_PB, block), block)
    # a HAMT node is read as a directory (tests/test_hamt.py), once its shard fields are sound
    block = encode_node([], bytes([0x08, 5]))
    with pytest.raises(InvalidBlock, match="HAMT directory uses hash type none"):
        decode(make_cid(DAG_PB, block), block)
    block = encode_node([], b"\x08\x05\x12\x01\x00\x28\x22\x30\x80\x02")
    assert decode(make_cid(DAG_PB, block), block).kind == "directory"


def test_unixfs_refuses_links_that_are_not_acceptable_cids():
    block = encode_node([PBLink(b"\x01\x55\x12\x02ab", "x", 1)], b"\x08\x01")
    with pytest.raises(InvalidBlock, match="link 'x'.*CID"):
        decode(make_cid(DAG_PB, block), block)


def test_unixfs_refuses_lying_sizes():
    child = make_cid(RAW, b"abc")
    block = encode_node([PBLink(child, "", 3)], b"\x08\x02\x18\x09\x20\x03")
    with pytest.raises(InvalidBlock, match="declares 9 bytes"):
        decode(make_cid(DAG_PB, block), block)


@given(st.integers(0, 2**63 - 1))
def test_varint_roundtrip(n):
    enc = encode_varint(n)
    assert decode_varint(enc, 0) == (n, len(enc))


def test_varint_rejects_non_minimal_and_long():
    with pytest.raises(InvalidBlock, match="non-minimal"):
        decode_varint(b"\x81\x00", 0)
    with pytest.raises(InvalidBlock, match="too long"):
        decode_varint(b"\xff" * 10 + b"\x01", 0)


def test_parse_cid_accepts_v0_and_other_bases_and_prints_base32():
    v0 = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
    assert cid_str(parse_cid(v0)).startswith("bafybei")
    b58 = "zdj7WWeQ43G6JJvLWQWZpyHuAMq6uYWRjkBXFad11vE2LHhQ7"
    assert cid_str(parse_cid(b58)) == cid_str(parse_cid(cid_str(parse_cid(b58))))
    assert parse_cid_path(f"/ipfs/{GOLDEN_ROOT}/sub//b/") == (parse_cid(GOLDEN_ROOT), ["sub", "b"])


@pytest.mark.parametrize("text, reason", [
    ("bafyxx", "not a valid CID"),
    ("hello", "not a valid CID"),
    ("", "empty"),
    # a valid CID with a blake2b-256 multihash
    ("bafk2bzacedn5ddgz5eqpkwr3ewwnuhgcjyiylqrb43u6cxkfnzhegypbhhfyu", "hash blake2b-256"),
    (f"{GOLDEN_ROOT}/../etc", "never climb"),
])
def test_parse_cid_rejections(text, reason):
    with pytest.raises(InvalidCID, match=reason):
        parse_cid_path(text)
