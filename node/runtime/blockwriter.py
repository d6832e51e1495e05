"""Storing fetched blocks in a worker thread, so SQLite's work overlaps the network's.

A fetch used to commit each batch of verified blocks on the trio thread: while SQLite inserted
8 MiB and, every few batches, checkpointed its write-ahead log (two fsyncs), nothing was read
from the stream and the peer's sends stalled on Yamux's window. :class:`BlockWriter` takes the
batches instead and commits them, in the order given, from one worker thread with its own
SQLite connection (SQLite releases the GIL while it works, so the trio thread goes on reading,
decrypting and verifying). It holds at most :data:`DEPTH` batches waiting: a slow disk slows
the fetch down rather than filling memory.

What it keeps from the old way:

* nothing unverified is ever stored: it is handed blocks ``FetchSession.receive`` verified,
  and raw leaves the session was told to leave unhashed (``defer_leaf_hashing``), which it
  hashes itself, in its thread, before the batch is committed (so the hashing, ~0.5 s of CPU per
  256 MiB, runs beside the trio thread too); a leaf that does not match its CID raises
  ``refuse`` (the fetch's PeerFailed) with the session's own message, and what came before
  it in the batch is committed, as a bad stream always kept what came before;
* each batch is one transaction: a batch is stored whole or not at all, whatever stops the
  process (SIGKILL included);
* :meth:`BlockWriter.finish` waits, shielded from cancellation, until every batch handed over
  is committed, so Ctrl-C (which cancels the fetch) keeps every block that arrived verified,
  as the old ``finally`` did; the caller reads the store only after it;
* an error in the worker (a full disk, a damaged database) is raised in the trio task, at the
  next :meth:`~BlockWriter.put` or at :meth:`~BlockWriter.finish`; batches after a failed one
  are not stored.

A store without a file (``open_db(memory=True)``, in tests) cannot be opened a second time, so
there the batches are committed inline, as before.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Sequence

import trio

from fabnode.protocol.car import Block
from fabnode.protocol.errors import RemoteProtocolError
from fabnode.protocol.fetch import verified
from fabnode.storage import BlockStore
from fabnode.storage.db import open_db

DEPTH = 2
"""Batches that may wait for the worker: one being committed, two more queued."""

_DONE = object()


class BlockWriter:
    """Commits batches of verified blocks (objects with ``cid`` and ``data``) in a worker thread."""

    def __init__(self, store: BlockStore, *, depth: int = DEPTH,
                 refuse: Callable[[str], BaseException] = RemoteProtocolError) -> None:
        """``refuse(message)`` is raised for a raw leaf that does not match its CID (the fetch
        passes its PeerFailed, so a forged leaf ends the attempt as a bad stream always has)."""
        self.store = store
        self._refuse = refuse
        self.stored_blocks = 0
        """Blocks committed so far (the worker's count; read it after :meth:`finish`)."""
        self.stored_bytes = 0
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._finished = False
        self._inline = store.db.path is None

    # ---------------------------------------------------------------- trio side

    async def put(self, blocks: Sequence) -> None:
        """Hand over a batch of verified blocks; returns once it is queued (waiting while
        :data:`DEPTH` batches already are). Raises the error of an earlier batch, if any."""
        self._raise_error()
        await self._hand(blocks)
        self._raise_error()

    async def finish(self, last: Sequence = ()) -> None:
        """Hand over ``last`` too, then wait until everything handed over is committed and the
        worker has stopped. Shielded: runs to the end even when the fetch is being cancelled
        (an interrupted fetch keeps what arrived). Raises the worker's error, if any."""
        if self._finished:
            return
        self._finished = True
        with trio.CancelScope(shield=True):
            try:
                if self._error is None:
                    await self._hand(last)
            finally:
                if self._thread is not None:
                    await trio.to_thread.run_sync(self._queue.put, _DONE)
                    await trio.to_thread.run_sync(self._thread.join)
        self._raise_error()

    async def _hand(self, blocks: Sequence) -> None:
        if not blocks:
            return
        if self._inline:
            self._commit(self.store, blocks)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="fabnode-blockwriter", daemon=True)
            self._thread.start()
        batch = list(blocks)
        try:
            self._queue.put_nowait(batch)
        except queue.Full:
            await trio.to_thread.run_sync(self._queue.put, batch)

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    # ---------------------------------------------------------------- worker thread

    def _commit(self, store: BlockStore, blocks: Iterable) -> None:
        """Hash the raw leaves the session left unverified (``defer_leaf_hashing``: here they are
        hashed beside the trio thread), then commit the batch; a leaf that fails stops the batch
        there: the blocks before it are committed, as a bad stream always kept what came before."""
        good: list[Block] = []
        refused: RemoteProtocolError | None = None
        for block in blocks:
            try:
                good.append(verified(block))
            except RemoteProtocolError as exc:
                refused = exc
                break
        if good:
            with store.write_transaction():
                store.put_many((b.cid, b.data) for b in good)
            self.stored_blocks += len(good)
            self.stored_bytes += sum(len(b.data) for b in good)
        if refused is not None:
            raise self._refuse(str(refused))

    def _work(self) -> None:
        store = None
        try:
            while True:
                batch = self._queue.get()
                if batch is _DONE:
                    return
                if self._error is not None:
                    continue  # after a failure, take (and drop) batches so put() never blocks for ever
                try:
                    if store is None:
                        store = BlockStore(open_db(self.store.db.path))
                    self._commit(store, batch)
                except BaseException as exc:  # handed to the trio task, raised there
                    self._error = exc
        finally:
            if store is not None:
                store.close()
