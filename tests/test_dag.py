"""protocol.dag: the one DAG walker (order, each block once, the depth limit, missing blocks)."""

from __future__ import annotations

import pytest

from fabnode.protocol.cid import DAG_PB, RAW, make_cid
from fabnode.protocol.dag import MAX_DEPTH, DagTooDeep, dag_cids, walk
from fabnode.protocol.dagpb import PBLink, encode_node
from fabnode.protocol.errors import InvalidBlock
from fabnode.protocol.unixfs import DIRECTORY_DATA


class Blocks(dict):
    """A dict store: ``put`` returns the CID; ``get`` is the walker's ``get_block``."""

    def put(self, codec: int, data: bytes) -> bytes:
        cid = make_cid(codec, data)
        self[cid] = data
        return cid

    def leaf(self, data: bytes) -> bytes:
        return self.put(RAW, data)

    def folder(self, **children: bytes) -> bytes:
        return self.put(DAG_PB, encode_node([PBLink(c, n, 1) for n, c in sorted(children.items())], DIRECTORY_DATA))


def test_depth_first_in_link_order_with_parents_and_names():
    s = Blocks()
    a, b, c = s.leaf(b"a"), s.leaf(b"b"), s.leaf(b"c")
    sub = s.folder(b=b, c=c)
    root = s.folder(a=a, sub=sub)
    visits = list(walk(s.get, root))
    assert [v.cid for v in visits] == [root, a, sub, b, c]
    assert [(v.depth, v.parent, v.name) for v in visits] == [
        (0, None, ""), (1, root, "a"), (1, root, "sub"), (2, sub, "b"), (2, sub, "c")]
    assert all(v.present and v.data == s[v.cid] for v in visits)


def test_a_shared_sub_dag_is_visited_once():
    s = Blocks()
    shared = s.folder(x=s.leaf(b"x"), y=s.leaf(b"y"))
    root = s.folder(one=shared, two=shared, three=s.folder(again=shared))
    reads: list[bytes] = []

    def get(cid: bytes) -> bytes | None:
        reads.append(cid)
        return s.get(cid)

    cids = [v.cid for v in walk(get, root)]
    assert len(cids) == len(set(cids)) == len(s) == 5
    assert len(reads) == 5  # each block read once, however often it is linked


def test_a_missing_block_is_reported_and_its_siblings_still_walked():
    s = Blocks()
    here, gone = s.leaf(b"here"), s.leaf(b"gone")
    sub = s.folder(deep=s.leaf(b"deep"))
    root = s.folder(a=gone, b=here, c=sub)
    del s[gone]
    visits = {v.cid: v for v in walk(s.get, root)}
    assert visits[gone].present is False and visits[gone].data is None
    assert visits[here].present and len(visits) == 5
    assert dag_cids(s.get, s.__contains__, root) == (set(visits), False)
    del s[sub]  # a missing node hides what is below it
    assert len(list(walk(s.get, root))) == 4


def test_a_raising_get_block_makes_a_missing_block_an_error():
    s = Blocks()
    root = s.folder(a=s.leaf(b"a"))
    s.pop(next(c for c in s if c != root))

    def get(cid: bytes) -> bytes:
        if cid not in s:
            raise KeyError(cid)
        return s[cid]

    with pytest.raises(KeyError):
        list(walk(get, root))


def test_leaves_are_only_checked_for_presence_with_has_block():
    s = Blocks()
    leaf = s.leaf(b"big leaf")
    root = s.folder(f=leaf)
    read = []
    visits = list(walk(lambda c: read.append(c) or s.get(c), root, has_block=s.__contains__))
    assert read == [root]
    assert (visits[1].cid, visits[1].data, visits[1].present) == (leaf, None, True)
    assert dag_cids(s.get, s.__contains__, root) == ({root, leaf}, True)


def _chain(s: Blocks, levels: int) -> bytes:
    """A folder nested ``levels`` deep with one file at the bottom."""
    cid = s.leaf(b"bottom")
    for _ in range(levels):
        cid = s.folder(d=cid)
    return cid


def test_the_depth_limit():
    s = Blocks()
    ok = _chain(s, MAX_DEPTH)  # the leaf sits exactly MAX_DEPTH links down
    assert max(v.depth for v in walk(s.get, ok)) == MAX_DEPTH
    too_deep = _chain(s, MAX_DEPTH + 1)
    with pytest.raises(DagTooDeep, match=f"deeper than {MAX_DEPTH}") as caught:
        list(walk(s.get, too_deep))
    assert isinstance(caught.value, InvalidBlock)
    assert caught.value.root == too_deep and caught.value.name == "d"
    cids, complete = dag_cids(s.get, s.__contains__, too_deep)
    assert not complete  # too deep is never "all here"


def test_skip_prunes_or_walks_through():
    s = Blocks()
    a, b = s.leaf(b"a"), s.leaf(b"b")
    sub = s.folder(b=b)
    root = s.folder(a=a, sub=sub)
    assert [v.cid for v in walk(s.get, root, skip={sub})] == [root, a]
    assert [v.cid for v in walk(s.get, root, skip={sub}, descend_skipped=True)] == [root, a, b]


def test_a_block_that_does_not_decode_is_invalid():
    s = Blocks()
    bad = s.put(DAG_PB, b"\xff\xff")
    with pytest.raises(InvalidBlock):
        list(walk(s.get, bad))


def test_dag_sizes_walks_once_and_reads_only_what_it_must():
    from fabnode.protocol.cid import DAG_CBOR
    from fabnode.protocol.unixfs import dag_sizes

    s = Blocks()
    leaf = s.leaf(b"12345")
    root = s.folder(a=leaf, b=leaf, c=s.folder(d=leaf))
    sizes = dag_sizes(s.__getitem__, root, raw_size=lambda c: len(s[c]) if c in s else None)
    assert sizes.content_bytes == 15 and sizes.unique_bytes == sum(len(b) for b in s.values())
    odd = s.folder(x=s.put(DAG_CBOR, b"\xa0"))  # not UnixFS: refused by name, whatever raw_size says
    with pytest.raises(InvalidBlock, match="not a UnixFS node"):
        dag_sizes(s.__getitem__, odd, raw_size=lambda c: len(s[c]))
