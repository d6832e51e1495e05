"""The gateway's pure rules (protocol/gateway.py, issue 16): negotiation, conditional requests,
ranges, entity-bytes and CAR scopes, on DAGs built in memory. tests/test_gateway.py asserts the
same rules on a real daemon's answers."""

from __future__ import annotations

import random

import pytest

from fabnode.protocol.cid import DAG_PB, RAW, make_cid
from fabnode.protocol.dagpb import PBLink, encode_node
from fabnode.protocol.errors import InvalidBlock
from fabnode.protocol.gateway import (CarParams, Refused, byte_range, car_etag, entity_range, etag_matches,
                                      expanded_count, file_parts, identity_block, identity_cid, negotiate,
                                      parse_entity_bytes, scoped_blocks, walk_with_dups)
from fabnode.protocol.unixfs import DIRECTORY_DATA, FileBuilder, build_directory, file_node_data, iter_file


def build_file(content: bytes, *, chunk: int = 10, width: int = 3) -> tuple[dict[bytes, bytes], bytes, list[bytes]]:
    """(blocks, root, leaves in order) of a file cut in ``chunk``-byte leaves, ``width`` links a node:
    a deep tree from a few bytes."""
    builder = FileBuilder(width=width, chunk_size=chunk)
    blocks, leaves = {}, []
    for start in range(0, len(content), chunk):
        for block in builder.add_chunk(content[start:start + chunk]):
            blocks[block.cid] = block.data
        leaves.append(make_cid(RAW, content[start:start + chunk]))
    finished, root = builder.finish()
    blocks.update({block.cid: block.data for block in finished})
    return blocks, root.cid, leaves


CONTENT = bytes(random.Random(16).randbytes(95))  # ten leaves (the last of five bytes), three levels
BLOCKS, ROOT, LEAVES = build_file(CONTENT)


def test_the_test_file_is_deep():
    assert b"".join(iter_file(BLOCKS.__getitem__, ROOT)) == CONTENT and len(LEAVES) == 10
    assert len(BLOCKS) > len(set(LEAVES)) + 3  # inner nodes on two levels


@pytest.mark.parametrize("first, last", [(0, 0), (0, 94), (9, 10), (10, 19), (37, 61), (90, 94), (94, 94), (50, 50)])
def test_file_parts_give_the_range_and_read_only_its_leaves(first, last):
    read = []

    def get(cid):
        read.append(cid)
        return BLOCKS[cid]

    parts = list(file_parts(get, ROOT, first, last))
    assert b"".join(part.content for part in parts) == CONTENT[first:last + 1]
    wanted_leaves = LEAVES[first // 10: last // 10 + 1]
    assert [cid for cid in read if cid in LEAVES] == wanted_leaves  # no other leaf was even read
    assert read[0] == ROOT and [part.cid for part in parts] == read


def test_file_parts_refuse_a_node_that_lies_about_its_size():
    leaf = b"x" * 10
    liar = encode_node([PBLink(make_cid(RAW, leaf), "", 10)], file_node_data(10, [12]))
    blocks = {make_cid(RAW, leaf): leaf, make_cid(DAG_PB, liar): liar}
    with pytest.raises(InvalidBlock):
        list(file_parts(blocks.__getitem__, make_cid(DAG_PB, liar), 0, 11))


def test_file_parts_refuse_a_bomb():
    """A node linking one 1 MiB leaf 1,000 times over two levels declares a TiB: a range over it
    stops once the bytes handed out pass 64x the distinct bytes read plus 64 MiB."""
    leaf = b"\0" * (1 << 20)
    leaf_cid = make_cid(RAW, leaf)
    mid = encode_node([PBLink(leaf_cid, "", len(leaf))] * 1000, file_node_data(1000 << 20, [1 << 20] * 1000))
    mid_cid = make_cid(DAG_PB, mid)
    top = encode_node([PBLink(mid_cid, "", 1)] * 1000, file_node_data(1000 * 1000 << 20, [1000 << 20] * 1000))
    blocks = {leaf_cid: leaf, mid_cid: mid, make_cid(DAG_PB, top): top}
    with pytest.raises(InvalidBlock, match="bomb"):
        for _ in file_parts(blocks.__getitem__, make_cid(DAG_PB, top), 0, (1 << 40) - 1):
            pass


@pytest.mark.parametrize("header, size, expected", [
    ("bytes=0-9", 100, (0, 9)), ("bytes=90-", 100, (90, 99)), ("bytes=-10", 100, (90, 99)),
    ("bytes=-1000", 100, (0, 99)), ("bytes=50-5000", 100, (50, 99)), (" bytes = 3-4", 100, (3, 4)),
    ("bytes=100-", 100, "unsatisfiable"), ("bytes=-0", 100, "unsatisfiable"), ("bytes=0-", 0, "unsatisfiable"),
    ("bytes=5-3", 100, None), ("bytes=0-1,4-5", 100, None), ("items=0-1", 100, None), ("bytes=-", 100, None),
    ("bytes=a-b", 100, None), (None, 100, None), ("bytes=" + "9" * 30 + "-", 100, None),
])
def test_byte_range(header, size, expected):
    assert byte_range(header, size) == expected


@pytest.mark.parametrize("text, size, expected", [
    ("0:*", 95, (0, 94)), ("0:0", 95, (0, 0)), ("-5:*", 95, (90, 94)), ("-9999:*", 95, (0, 94)),
    ("-9999:-3", 95, (0, 92)), ("10:-10", 95, (10, 85)), ("50:-60", 95, None), ("0:9999", 95, (0, 94)),
    ("0:*", 0, None),
])
def test_entity_range(text, size, expected):
    assert entity_range(parse_entity_bytes(text), size) == expected


@pytest.mark.parametrize("text", ["95:*", "1000:1001"])
def test_entity_range_wholly_past_the_end_is_400(text):
    with pytest.raises(Refused) as caught:
        entity_range(parse_entity_bytes(text), 95)
    assert caught.value.status == 400


@pytest.mark.parametrize("text", ["", "1", "a:b", "1:2:3", "5:3", "1:**", "0x1:2", "1" * 30 + ":*"])
def test_entity_bytes_that_are_not_from_to_are_400(text):
    with pytest.raises(Refused):
        parse_entity_bytes(text)


@pytest.mark.parametrize("header, tag, matches", [
    ('"a"', '"a"', True), ('W/"a"', '"a"', True), ('"b", W/"a"', '"a"', True), ("*", '"a"', True),
    ('"b"', '"a"', False), ("", '"a"', False), (None, '"a"', False), ('"a.raw"', '"a"', False),
])
def test_etag_matches_weakly(header, tag, matches):
    assert etag_matches(header, tag) is matches


@pytest.mark.parametrize("query, accept, expected", [
    ({}, "", (None, None)),
    ({}, "text/html,application/xhtml+xml,*/*;q=0.8", (None, None)),
    ({}, "application/vnd.ipld.raw", ("raw", None)),
    ({}, "application/vnd.ipld.dag-cbor", ("dag-cbor", None)),
    ({"format": "raw"}, "application/vnd.ipld.car", ("raw", None)),  # the query wins
    ({}, "application/vnd.ipld.car", ("car", CarParams())),
    ({}, "application/vnd.ipld.car; version=1; order=dfs; dups=y", ("car", CarParams(dups=True))),
    ({}, "application/vnd.ipld.car;order=foo, application/vnd.ipld.car;order=dfs;dups=y;q=0.5",
     ("car", CarParams(dups=True))),
    ({}, "application/vnd.ipld.raw;q=0.1, application/vnd.ipld.car", ("car", CarParams())),
    ({"car-dups": "n"}, "application/vnd.ipld.car; dups=y", ("car", CarParams())),
    ({"format": "car", "dag-scope": "block"}, "", ("car", CarParams(scope="block"))),
    ({"format": "car", "entity-bytes": "0:*"}, "", ("car", CarParams(scope="entity", entity_bytes=(0, None)))),
    ({"format": "car", "car-order": "unk"}, "", ("car", CarParams())),
    ({"format": "raw", "dag-scope": "nonsense"}, "", ("raw", None)),  # CAR parameters only matter for CARs
])
def test_negotiate(query, accept, expected):
    assert negotiate(query, accept) == expected


@pytest.mark.parametrize("query, accept", [
    ({"format": "tar"}, ""), ({"format": "car", "car-version": "2"}, ""), ({"format": "car", "car-order": "bfs"}, ""),
    ({"format": "car", "car-dups": "maybe"}, ""), ({}, "application/vnd.ipld.car; version=2"),
    ({"format": "car", "dag-scope": "most"}, ""), ({"format": "car", "entity-bytes": "x"}, ""),
])
def test_negotiate_refuses_what_it_cannot_write(query, accept):
    with pytest.raises(Refused) as caught:
        negotiate(query, accept)
    assert caught.value.status == 400 and "\n" not in str(caught.value)


def test_content_type_names_every_parameter():
    assert CarParams().content_type == "application/vnd.ipld.car; version=1; order=dfs; dups=n"
    assert CarParams(dups=True).content_type.endswith("dups=y")


def test_car_etags_differ_by_path_and_every_parameter():
    tags = {car_etag(ROOT, segments, params) for segments, params in [
        ([], CarParams()), (["a"], CarParams()), ([], CarParams(scope="block")), ([], CarParams(scope="entity")),
        ([], CarParams(dups=True)), ([], CarParams("entity", (0, None))), ([], CarParams("entity", (0, 10)))]}
    assert len(tags) == 7 and all(t.startswith('"b') and t.endswith('"') for t in tags)


def _folder():
    """A folder holding the test file twice (as a and b) and a small file: a DAG with duplicates."""
    blocks = dict(BLOCKS)
    small = b"small\n"
    blocks[make_cid(RAW, small)] = small
    from fabnode.protocol.unixfs import Built

    file_built = Built(ROOT, sum(len(blocks[c]) for c in BLOCKS), len(CONTENT))
    small_built = Built(make_cid(RAW, small), len(small), len(small))
    block, built = build_directory([("a", file_built), ("b", file_built), ("c", small_built)])
    blocks[block.cid] = block.data
    return blocks, block.cid


def test_scopes_of_a_folder():
    blocks, folder = _folder()
    get = blocks.__getitem__
    assert [c for c, _ in scoped_blocks(get, folder, CarParams(scope="block"), set())] == [folder]
    assert [c for c, _ in scoped_blocks(get, folder, CarParams(scope="entity"), set())] == [folder]
    assert [c for c, _ in scoped_blocks(get, folder, CarParams("entity", (0, 5)), set())] == [folder]
    all_once = [c for c, _ in scoped_blocks(get, folder, CarParams(), set())]
    assert len(all_once) == len(set(all_once)) == len(blocks)
    all_dups = [c for c, _ in scoped_blocks(get, folder, CarParams(dups=True), set())]
    assert len(all_dups) == 1 + 2 * len(BLOCKS) + 1 and all_dups.count(ROOT) == 2
    assert expanded_count(get, folder, lambda cid: cid in blocks) == (len(blocks), len(all_dups))
    assert list(walk_with_dups(get, folder)) == list(scoped_blocks(get, folder, CarParams(dups=True), set()))


def test_scopes_of_a_file():
    get = BLOCKS.__getitem__
    assert [c for c, _ in scoped_blocks(get, ROOT, CarParams(scope="block"), set())] == [ROOT]
    entity = [c for c, _ in scoped_blocks(get, ROOT, CarParams(scope="entity"), set())]
    assert set(entity) == set(BLOCKS) and [c for c in entity if c in LEAVES] == LEAVES
    ranged = [c for c, _ in scoped_blocks(get, ROOT, CarParams("entity", (25, 44)), set())]
    assert [c for c in ranged if c in LEAVES] == LEAVES[2:5] and ranged[0] == ROOT
    assert [c for c, _ in scoped_blocks(get, ROOT, CarParams("entity", (50, -60)), set())] == [ROOT]  # no bytes


def test_a_directory_block_is_not_read_as_a_file_by_entity_bytes():
    node = encode_node([], DIRECTORY_DATA)
    cid = make_cid(DAG_PB, node)
    assert [c for c, _ in scoped_blocks({cid: node}.__getitem__, cid, CarParams("entity", (0, 9)), set())] == [cid]


def test_identity_cids():
    assert identity_block(identity_cid("bafkqaaa")) == b""
    assert identity_block(identity_cid("bafkqabtimvwgy3yk")) == b"hello\n"
    assert identity_cid("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyka") is None  # sha2-256
    assert identity_cid("not a cid") is None
    assert identity_block(make_cid(RAW, b"x")) is None
    from multiformats import CID, multihash

    longest = str(CID("base32", 1, "raw", multihash.wrap(b"y" * 128, "identity")))
    assert identity_block(identity_cid(longest)) == b"y" * 128
    for refused in (str(CID("base32", 1, "raw", multihash.wrap(b"y" * 129, "identity"))),
                    str(CID("base32", 1, "dag-cbor", multihash.wrap(b"\xa0", "identity")))):
        with pytest.raises(Refused):
            identity_cid(refused)
