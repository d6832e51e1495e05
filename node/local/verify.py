"""Verifying many records at once on every core.

Ed25519 verification is most of a record's cost (about 65 µs of ~140 µs here), and libsodium
holds the GIL, so a large batch — a sneakernet file, a sync after a week offline — is split
across worker processes. Small batches stay in-process: starting workers costs more than
verifying a few thousand records.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

from fabnode import interrupts
from fabnode.protocol.records import Record, RecordRejected, verify_record

PARALLEL_FROM = 5000
"""Batches at least this large are verified in worker processes."""


def _verify_chunk(args: tuple[list[tuple[bytes | None, bytes]], int]) -> list[Record | str]:
    blocks, now = args
    out: list[Record | str] = []
    for cid, raw in blocks:
        try:
            out.append(verify_record(raw, now_ms=now, cid=cid))
        except RecordRejected as exc:
            out.append(str(exc))
    return out


def verify_blocks(blocks: list[tuple[bytes | None, bytes]], now: int, workers: int | None = None) -> list[Record | str]:
    """Each block verified (a Record) or rejected (its one-line reason), in the order given."""
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(blocks) < PARALLEL_FROM:
        return _verify_chunk((blocks, now))
    size = -(-len(blocks) // (workers * 4))
    chunks = [(blocks[i:i + size], now) for i in range(0, len(blocks), size)]
    # Workers ignore Ctrl-C (it reaches the whole process group): on an interrupt this process
    # drops the chunks not started and waits only for those running, then stops them.
    pool = ProcessPoolExecutor(max_workers=workers, initializer=interrupts.ignore_in_worker)
    try:
        return [item for part in pool.map(_verify_chunk, chunks) for item in part]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
