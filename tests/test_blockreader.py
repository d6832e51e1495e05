"""Serving's read-ahead (node/runtime/blockreader.py): real SQLite files, real trio and threads."""

from __future__ import annotations

import threading
from contextlib import aclosing

import pytest
import trio

from fabnode.node.local.files import add_path
from fabnode.node.runtime.blockreader import GROUP_BYTES, sections_ahead
from fabnode.node.runtime.fetch import dag_in_order
from fabnode.protocol.car import encode_section
from fabnode.protocol.cid import cid_str
from fabnode.protocol.errors import DamagedBlock
from fabnode.storage import BlockStore, open_db

from conftest import write_random_file

WAIT = 30


@pytest.fixture
def bundle(tmp_path):
    """A stored tree of 10 MiB (more than two groups) with small files between large ones."""
    src = tmp_path / "src"
    write_random_file(src / "a.bin", 6 << 20, seed=21)
    for i in range(30):
        write_random_file(src / "notes" / f"{i:02d}.txt", 3000 + i, seed=22 + i)
    write_random_file(src / "z.bin", (4 << 20) + 7, seed=60)
    store = BlockStore(open_db(tmp_path / "fabnode.db"))
    root = add_path(store, src, now_ms=0).cid
    yield store, root
    store.close()


def root_bytes(cid_text: str) -> bytes:
    from fabnode.protocol.cid import parse_cid

    return parse_cid(cid_text)


async def collect(store, root, skip=frozenset(), stop_after=None):
    out = []
    async with aclosing(sections_ahead(store, lambda s: dag_in_order(s, root, set(skip)))) as it:
        async for item in it:
            out.append(item)
            if stop_after is not None and len(out) >= stop_after:
                break
    return out


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "fabnode-blockreader"]


async def test_the_same_sections_in_the_same_order_as_reading_on_the_trio_thread(bundle):
    store, cid = bundle
    root = root_bytes(cid)
    skip = {next(iter(dag_in_order(store, root, set())))[0]}  # as a request's `have` would
    with trio.fail_after(WAIT):
        got = await collect(store, root, skip)
    expected = [(c, len(d), encode_section(c, d)) for c, d in dag_in_order(store, root, skip)]
    assert got == expected and sum(size for _, size, _ in got) > 2 * GROUP_BYTES


async def test_a_damaged_block_is_raised_where_it_would_have_been_sent(bundle):
    store, cid = bundle
    root = root_bytes(cid)
    order = [c for c, _ in dag_in_order(store, root, set())]
    victim = order[len(order) // 2]
    with store.write_transaction():
        store.db.conn.execute("UPDATE blocks SET data = ?, pack = NULL WHERE cid = ?", (b"not the block", victim))
    got = []
    with pytest.raises(DamagedBlock, match=cid_str(victim)):
        with trio.fail_after(WAIT):
            async with aclosing(sections_ahead(store, lambda s: dag_in_order(s, root, set()))) as it:
                async for item in it:
                    got.append(item[0])
    assert got == order[:len(order) // 2]  # everything before the damaged block, nothing after


async def test_a_stream_that_stops_early_stops_the_reading_thread(bundle):
    store, cid = bundle
    root = root_bytes(cid)
    with trio.fail_after(WAIT):
        got = await collect(store, root, stop_after=1)
        assert len(got) == 1
        while reader_threads():  # ends by itself within its put timeout
            await trio.sleep(0.05)
