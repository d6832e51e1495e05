"""The fetch's block writer (node/runtime/blockwriter.py): real SQLite files, real trio and threads."""

from __future__ import annotations

import random
import sqlite3
import threading

import pytest
import trio

from fabnode.node.runtime.blockwriter import BlockWriter
from fabnode.protocol.car import Block
from fabnode.protocol.cid import RAW, make_cid
from fabnode.storage import BlockStore, open_db

WAIT = 30
"""Bound on every wait for the worker thread."""


def batches(count: int, per: int, seed: int, size: int = 1000) -> list[list[Block]]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        batch = []
        for _ in range(per):
            data = rng.randbytes(size)
            batch.append(Block(make_cid(RAW, data), data))
        out.append(batch)
    return out


def stored_in_order(path) -> list[bytes]:
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute("SELECT cid FROM blocks ORDER BY rowid")]
    finally:
        conn.close()


@pytest.fixture
def store(tmp_path):
    store = BlockStore(open_db(tmp_path / "fabnode.db"))
    yield store
    store.close()


class Locker:
    """Another connection holding SQLite's write lock until released: the worker's commit must
    wait for it, which shows whether the trio task waits too."""

    def __init__(self, path) -> None:
        self.release = threading.Event()
        self.holding = threading.Event()
        self.thread = threading.Thread(target=self._hold, args=(path,), daemon=True)
        self.thread.start()
        assert self.holding.wait(WAIT)

    def _hold(self, path) -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        self.holding.set()
        self.release.wait(WAIT)
        conn.execute("COMMIT")
        conn.close()

    def done(self) -> None:
        self.release.set()
        self.thread.join(WAIT)


async def test_batches_are_committed_in_order_by_a_worker_while_the_trio_task_goes_on(store):
    path = store.db.path
    handed = batches(3, 4, seed=1)
    locker = Locker(path)  # the worker's first commit waits on this lock
    writer = BlockWriter(store)
    try:
        with trio.fail_after(WAIT):
            for batch in handed:
                await writer.put(batch)  # queued: an inline commit would wait on the lock here
        assert stored_in_order(path) == []  # nothing committed while the lock is held
    finally:
        locker.done()
    with trio.fail_after(WAIT):
        await writer.finish()
    assert stored_in_order(path) == [b.cid for batch in handed for b in batch]
    assert (writer.stored_blocks, writer.stored_bytes) == (12, 12 * 1000)
    assert all(store.get(b.cid) == b.data for batch in handed for b in batch)


async def test_a_failed_batch_is_raised_in_the_trio_task_and_nothing_after_it_is_stored(store):
    path = store.db.path
    with store.write_transaction():  # a database that refuses one block, as a full disk would
        store.db.conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON blocks WHEN NEW.size = 13 "
                              "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
    good, after = batches(2, 3, seed=2)
    bad = batches(1, 2, seed=3)[0] + [Block(make_cid(RAW, b"thirteen byte"), b"thirteen byte")]
    writer = BlockWriter(store)
    with pytest.raises(sqlite3.IntegrityError, match="refused by the test"):
        with trio.fail_after(WAIT):
            await writer.put(good)
            await writer.put(bad)
            await writer.finish(after)
    assert stored_in_order(path) == [b.cid for b in good]  # the failed batch is rolled back whole
    with pytest.raises(sqlite3.IntegrityError):  # and the writer stays failed
        await writer.put(after)


async def test_a_cancelled_fetch_still_commits_every_batch_it_handed_over(store):
    """Ctrl-C cancels the fetch: what was verified and handed over is stored, as before."""
    path = store.db.path
    handed = batches(3, 2, seed=4)
    locker = Locker(path)
    writer = BlockWriter(store)
    with trio.CancelScope() as scope:
        try:
            await writer.put(handed[0])
            await writer.put(handed[1])
            scope.cancel()
            await trio.sleep(0)  # the cancellation lands here
            raise AssertionError("not cancelled")
        finally:
            locker.done()
            await writer.finish(handed[2])  # shielded: runs to the end under the cancelled scope
    assert scope.cancelled_caught
    assert stored_in_order(path) == [b.cid for batch in handed for b in batch]


async def test_without_a_database_file_the_batches_are_committed_inline():
    store = BlockStore(open_db(memory=True))
    handed = batches(2, 2, seed=5)
    writer = BlockWriter(store)
    await writer.put(handed[0])
    assert [store.has(b.cid) for b in handed[0]] == [True, True]  # committed before put returned
    await writer.finish(handed[1])
    assert writer.stored_blocks == 4 and all(store.get(b.cid) == b.data for b in handed[1])


class Refused(Exception):
    pass


async def test_an_unhashed_leaf_that_does_not_match_is_refused_and_only_what_came_before_is_stored(store):
    """Leaves a session left unhashed (defer_leaf_hashing) are hashed by the writer before they
    are stored: a forged one raises ``refuse`` with the reader's message, and of its batch only
    the blocks before it are committed."""
    from fabnode.protocol.car import UnverifiedBlock

    path = store.db.path
    first, second = batches(2, 3, seed=6)
    unhashed = [UnverifiedBlock(b.cid, b.data, 10 + i, 1000 * i) for i, b in enumerate(second)]
    forged = UnverifiedBlock(unhashed[1].cid, b"not those bytes", 11, 1000)
    writer = BlockWriter(store, refuse=Refused)
    with pytest.raises(Refused, match=r"bad CAR stream from the peer: section 11 at byte 1000: block \S+ does not "
                                      r"match its CID"):
        with trio.fail_after(WAIT):
            await writer.put(first)
            await writer.put([unhashed[0], forged, unhashed[2]])
            await writer.finish()
    assert stored_in_order(path) == [b.cid for b in first] + [second[0].cid]
