"""Are the peer-facing decoders linear? Each is fed hostile inputs of growing size (n, 2n, 4n,
8n) and timed (median of 5); the ratio time(8n)/time(n) is about 8 for a linear decoder and 64
for a quadratic one. Run: .venv/bin/python bench/bench_decoders.py
"""

from __future__ import annotations

import random
import statistics
import time

from fabnode.protocol.car import CarReader, NEED_DATA, encode_header, encode_section
from fabnode.protocol.cid import RAW, make_cid, parse_cid
from fabnode.protocol.errors import FabnodeError
from fabnode.protocol.reconcile import Reconciler, ItemSet, decode_message
from fabnode.protocol.records import verify_record
from fabnode.protocol.sync import decode_frame
import msgpack


def timed(fn, data) -> float:
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        try:
            fn(data)
        except FabnodeError:
            pass
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def long_author(n: int) -> bytes:  # a record whose author is an n-character did:key (was quadratic)
    from fabnode.protocol.dagcbor import encode

    return encode({"fabnode": 1, "type": "vouch", "author": "did:key:z6Mk" + "Z" * n, "ts": 1,
                   "body": {}, "sig": b"\0" * 64})


def junk_want(n: int) -> bytes:
    return msgpack.packb({"type": "want", "ids": [random.Random(i).randbytes(8) for i in range(n)]})


def many_sections(n: int) -> bytes:
    blocks = [bytes([i % 256]) * 8 + i.to_bytes(4, "big") for i in range(n)]
    return encode_header([make_cid(RAW, blocks[0])]) + b"".join(encode_section(make_cid(RAW, b), b) for b in blocks)


def read_car(data: bytes) -> None:  # fed as a peer's stream arrives, 64 KiB at a time
    reader = CarReader()
    for i in range(0, len(data), 65536):
        reader.feed(data[i:i + 65536])
        while reader.next_event() is not NEED_DATA:
            pass


def reconcile_message(n: int) -> bytes:
    rng = random.Random(n)
    return Reconciler(ItemSet((rng.randrange(1 << 40), rng.randbytes(32)) for _ in range(n)),
                      initial_branches=n // 2).initiate()


CASES = [
    ("verify_record, long author (chars)", lambda n: long_author(n), lambda d: verify_record(d, now_ms=10), 7_500),
    ("parse_cid, long base58 text (chars)", lambda n: "z" + "2" * n, parse_cid, 7_500),
    ("sync want frame (ids)", junk_want, lambda d: decode_frame(d, {"want"}), 25_000),
    ("CAR reader (sections)", many_sections, read_car, 5_000),
    ("reconcile message (ranges)", reconcile_message, decode_message, 2_000),
]

if __name__ == "__main__":
    print("| decoder | n | t(n) | t(8n) | t(8n)/t(n) |")
    print("|---|---:|---:|---:|---:|")
    for name, make, fn, n in CASES:
        small, large = timed(fn, make(n)), timed(fn, make(8 * n))
        print(f"| {name} | {n:,} | {small * 1000:.2f} ms | {large * 1000:.2f} ms | {large / max(small, 1e-9):.1f} |")
