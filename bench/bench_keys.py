#!/usr/bin/env python3
"""Benchmark the chains of keys (issue 17): the resolver and what it adds to every ingest.

Workload (seeded): L labs, each a lab record committing a recovery key, each rotating its key R
times (L*R successions), a quarter of them recovered by a revocation (the stolen current key is
revoked, a fresh one takes over), and M member records per lab (a maintainer, members, a removal).
With the defaults: 400 labs, 1,200 keys rotated to, 100 revocations, 1,200 members: ~2,900 key
records over ~1,700 keys.

Measured (median and best of --runs): protocol.keys.resolve over the set, in-process;
KeyIndex.identities() cold from a real SQLite file (loading the rows, then resolving); the
standing() lookup; and the ingest of --vouches vouches by keys of those chains into that store,
against the same ingest with the chain check switched off (the anchor: the store before issue 17).

Usage:  .venv/bin/python bench/bench_keys.py [--labs 400] [--rotations 3] [--vouches 3000] [--runs 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bench_add import WORK, machine  # noqa: E402
from keychains import T0, Key, key_records, lab, member, revocation, succession, vouch  # noqa: E402

from fabnode.protocol.keys import resolve  # noqa: E402
from fabnode.storage import BlockStore, open_db  # noqa: E402
from fabnode.storage.records import RecordStore  # noqa: E402

MIN = 60_000


def workload(labs: int, rotations: int, seed: int = 7):
    rng = random.Random(seed)
    records, signers = [], []
    next_seed = 10_000
    for i in range(labs):
        chain = [Key(next_seed + j) for j in range(rotations + 1)]
        recovery, fresh = Key(next_seed + rotations + 1), Key(next_seed + rotations + 2)
        people = [Key(next_seed + rotations + 3 + j) for j in range(3)]
        next_seed += rotations + 6
        ts = T0 + i
        records.append(lab(chain[0], ts, recovery=recovery, name=f"Lab {i}"))
        for old, new in zip(chain, chain[1:]):
            ts += rng.randint(1, 60) * MIN
            records.append(succession(old, new, ts))
        current = chain[-1]
        if i % 4 == 0:
            records.append(revocation(recovery, chain[0], current, fresh, cutoff=ts + MIN, ts=ts + 2 * MIN))
            current = fresh
        ts += 3 * MIN
        records.append(member(current, chain[0], people[0], "maintainer", ts))
        records.append(member(people[0], chain[0], people[1], "member", ts + 1))
        records.append(member(people[0], chain[0], people[2], "member", ts + 2))
        if i % 3 == 0:
            records.append(member(people[0], chain[0], people[2], "removed", ts + 3))
        signers.append((current, ts + 10))
    return records, signers


def _timed(fn, runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--labs", type=int, default=400)
    parser.add_argument("--rotations", type=int, default=3)
    parser.add_argument("--vouches", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    records, signers = workload(args.labs, args.rotations)
    kinds = {t: sum(r.type == t for r in records) for t in ("lab", "succession", "revocation", "member")}
    WORK.mkdir(exist_ok=True)
    print(f"machine: {machine()}")
    print(f"workload: {len(records)} key records {kinds}")
    as_key_records = key_records(records)
    median, best = _timed(lambda: resolve(as_key_records), args.runs)
    print(f"resolve (in-process): median {median:.1f} ms, best {best:.1f} ms")
    ids = resolve(as_key_records)
    authors = [(k.did, ts) for k, ts in signers]
    median, best = _timed(lambda: [ids.standing(a, t) for a, t in authors], args.runs)
    print(f"standing x{len(authors)}: median {median:.2f} ms ({median * 1000 / len(authors):.2f} us each)")

    with tempfile.TemporaryDirectory() as tmp:
        blocks = BlockStore(open_db(Path(tmp) / "keys.db"))
        store = RecordStore(blocks.db.conn)
        start = time.perf_counter()
        with blocks.write_transaction(), store.batch():
            for n, record in enumerate(records):
                store.ingest(record, received_ms=n)
        print(f"ingest of the {len(records)} key records (one batch, as sync stores them): "
              f"{(time.perf_counter() - start) * 1000:.0f} ms")

        def cold() -> None:
            store.keys._cached = None
            store.keys.identities()

        median, best = _timed(cold, args.runs)
        print(f"KeyIndex.identities() cold from SQLite: median {median:.1f} ms, best {best:.1f} ms")
        blocks.db.close()

    rng = random.Random(3)
    vouches = []
    for i in range(args.vouches):
        key, ts = signers[i % len(signers)]
        vouches.append(vouch(key, signers[rng.randrange(len(signers))][0], ts + i))

    def ingest(check: bool) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            blocks = BlockStore(open_db(Path(tmp) / "v.db"))
            store = RecordStore(blocks.db.conn)
            with blocks.write_transaction(), store.batch():
                for n, record in enumerate(records):
                    store.ingest(record, received_ms=n)
            if not check:
                store.keys.admit = lambda *a: None
            try:
                start = time.perf_counter()
                with blocks.write_transaction():
                    for n, record in enumerate(vouches):
                        store.ingest(record, received_ms=10**6 + n)
                return (time.perf_counter() - start) * 1000
            finally:
                blocks.db.close()

    with_chain = [ingest(True) for _ in range(args.runs)]
    anchor = [ingest(False) for _ in range(args.runs)]
    m_with, m_anchor = statistics.median(with_chain), statistics.median(anchor)
    print(f"ingest of {args.vouches} vouches: with chain checks median {m_with:.0f} ms, without (anchor) "
          f"{m_anchor:.0f} ms, ratio {m_with / m_anchor:.2f}x")


if __name__ == "__main__":
    main()
