"""Reading a DAG to serve in a worker thread, ahead of the stream (the serving side's twin of
blockwriter.py).

Serving used to read each block from SQLite, re-hash it against its CID and build its CAR
section on the trio thread, between two writes to the stream: on a 2-core machine that was
about a third of the serving daemon's CPU, during which nothing was encrypted or sent.
:func:`sections_ahead` runs the same walk (``dag_in_order``: depth-first, each block once,
every block verified) in a worker thread with its own read connection (SQLite's write-ahead log
lets it read beside the daemon's connection), and hands the trio task the CAR sections in groups
of about :data:`GROUP_BYTES`, at most :data:`DEPTH` groups ahead. SQLite reads and hashing
release the GIL, so they run beside Noise and Yamux.

Nothing changes on the wire: the same sections, in the same order. A damaged or missing block
raises in the trio task, at the point of the stream where it would have been sent, exactly as
before. When the trio task stops early (the asker went away, a cancelled scope), the worker is
told to stop and ends by itself after at most the group it is reading.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator

import trio

from fabnode.protocol.car import encode_section
from fabnode.storage import BlockStore
from fabnode.storage.db import open_db

GROUP_BYTES = 4 << 20
"""Sections handed over together: one thread hand-off per few MiB, not one per block."""
DEPTH = 2
"""Groups read ahead of the stream (memory: about DEPTH + 1 groups per serving stream)."""

Walk = Callable[[BlockStore], Iterator[tuple[bytes, bytes]]]
"""Given a store, the (cid, data) pairs to send, in order, each verified (``dag_in_order``)."""


async def sections_ahead(store: BlockStore, walk: Walk) -> AsyncIterator[tuple[bytes, int, bytes]]:
    """(cid, block size, CAR section) for every block ``walk`` yields, read in a worker thread
    ahead of the caller. A store without a file (tests) is read on the calling thread."""
    if store.db.path is None:
        for cid, data in walk(store):
            yield cid, len(data), encode_section(cid, data)
        return
    handoff: queue.Queue = queue.Queue(maxsize=DEPTH)
    stop = threading.Event()
    done = object()

    def hand(item) -> bool:
        """Queue ``item`` unless the trio task has stopped; False once it has."""
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        reader = None
        error: BaseException | None = None
        group: list[tuple[bytes, int, bytes]] = []
        try:
            reader = BlockStore(open_db(store.db.path))
            size = 0
            for cid, data in walk(reader):
                group.append((cid, len(data), encode_section(cid, data)))
                size += len(data)
                if size >= GROUP_BYTES:
                    if not hand((group, None)):
                        return
                    group, size = [], 0
        except BaseException as exc:  # raised in the trio task, after the blocks read before it
            error = exc
        finally:
            if reader is not None:
                reader.close()
        if group and not hand((group, None)):
            return
        hand((done, error))

    threading.Thread(target=produce, name="fabnode-blockreader", daemon=True).start()
    try:
        while True:
            try:
                group, error = handoff.get_nowait()
            except queue.Empty:
                group, error = await trio.to_thread.run_sync(handoff.get, abandon_on_cancel=True)
            if group is done:
                if error is not None:
                    raise error
                return
            for item in group:
                yield item
    finally:
        stop.set()
        try:  # a producer waiting on a full queue sees the stop within its timeout
            while True:
                handoff.get_nowait()
        except queue.Empty:
            pass
        try:  # and a hand-off abandoned by a cancellation gets something to end on
            handoff.put_nowait((done, None))
        except queue.Full:
            pass
