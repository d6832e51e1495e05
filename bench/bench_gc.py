#!/usr/bin/env python3
"""Benchmark `fabnode gc` on a large store (issue 15).

Builds once (cached in /tmp/fabnode-bench-gc/base) a node with 50 published designs holding
4 GiB of blocks (each bundle a folder of four ~20 MiB files of seeded random bytes, so 1 MiB
leaves) and 100,000 records (the 50 versions and 99,950 attestations on them from 200 labs),
written straight through storage/ with a seeded RNG. Half the designs are then unpinned with
`fabnode unpin`. Each run copies the base to a fresh home and times the real command
(`fabnode gc --json`), with the child's peak RSS from wait4; then, on the same copy, a second
gc that finds nothing to free (the mark alone, plus a process start). Also `fabnode du --json`
on the base (read only).

Anchor: on another fresh copy, SQLite's own `DELETE FROM blocks WHERE cid IN (…)` of exactly the
rows gc deletes, in one transaction, from Python's sqlite3 (the floor of deleting these rows
from this table: no walking, no batching, no catch-up).

Usage:  .venv/bin/python bench/bench_gc.py [--runs 3] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

from nacl.signing import SigningKey

from fabnode.protocol.cid import cid_str
from fabnode.protocol.dagcbor import Link
from fabnode.protocol.identity import did_from_ed25519
from fabnode.protocol.records import make_record
from fabnode.protocol.unixfs import CHUNK_SIZE, FileBuilder, build_directory
from fabnode.storage import BlockStore, Pin, open_db
from fabnode.storage.records import RecordStore

WORK = Path("/tmp/fabnode-bench-gc")
FABNODE = Path(sys.executable).parent / "fabnode"
DESIGNS = 50
FILES_PER_DESIGN = 4
TOTAL_BYTES = 4 << 30
RECORDS = 100_000
SEED = 15


def build(home: Path) -> list[str]:
    """Build the base store; returns the design ids."""
    rng = random.Random(SEED)
    env = {**os.environ, "FABNODE_HOME": str(home)}
    subprocess.run([str(FABNODE), "init", "--name", "Bench Lab"], env=env, check=True, capture_output=True)
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key((home / "author.key").read_bytes(), password=None)
    me = SigningKey(key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                      serialization.NoEncryption()))
    me_did = did_from_ed25519(bytes(me.verify_key))
    labs = [SigningKey(rng.randbytes(32)) for _ in range(200)]
    lab_dids = [did_from_ed25519(bytes(k.verify_key)) for k in labs]
    store = BlockStore(open_db(home / "fabnode.db"))
    records = RecordStore(store.db.conn)
    file_size = TOTAL_BYTES // (DESIGNS * FILES_PER_DESIGN)
    ts = 1_760_000_000_000
    versions = []
    started = time.perf_counter()
    for d in range(DESIGNS):
        with store.write_transaction():
            children = []
            for f in range(FILES_PER_DESIGN):
                builder = FileBuilder()
                left = file_size
                while left:
                    n = min(left, CHUNK_SIZE)
                    for block in builder.add_chunk(rng.randbytes(n)):
                        store.put(block.cid, block.data)
                    left -= n
                tail, built = builder.finish()
                for block in tail:
                    store.put(block.cid, block.data)
                children.append((f"part-{f}.bin", built))
            block, root = build_directory(children)
            store.put(block.cid, block.data)
            ts += 1000
            store.pin(Pin(root.cid, "directory", root.size, FILES_PER_DESIGN, f"design-{d}", ts))
            record = make_record("version", {"bundle": Link(root.cid), "parents": [], "title": f"design {d}",
                                             "message": "bench", "license": "CERN-OHL-S-2.0",
                                             "maintainers": [me_did]},
                                 author=me_did, ts=ts, sign=lambda m: me.sign(m).signature)
            records.ingest(record, received_ms=ts)
            versions.append(record)
        print(f"  design {d + 1}/{DESIGNS}, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    count = DESIGNS
    while count < RECORDS:
        with store.write_transaction():
            for _ in range(min(5000, RECORDS - count)):
                who = rng.randrange(len(labs))
                ts += 3
                record = make_record("attestation", {"subject": Link(rng.choice(versions).cid), "predicate": "built",
                                                     "result": rng.choice(["passed", "warned", "failed"]),
                                                     "lab": f"lab {who}"},
                                     author=lab_dids[who], ts=ts, sign=lambda m, k=labs[who]: k.sign(m).signature)
                records.ingest(record, received_ms=ts)
                count += 1
    store.close()
    print(f"  {count} records, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return [v.id for v in versions]


def run_gc(home: Path) -> tuple[float, int, dict]:
    """(seconds, peak RSS in KiB, gc's JSON) of one `fabnode gc --json` process."""
    env = {**os.environ, "FABNODE_HOME": str(home)}
    start = time.perf_counter()
    proc = subprocess.Popen([str(FABNODE), "gc", "--json"], env=env, stdout=subprocess.PIPE)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, proc.returncode
    return took, usage.ru_maxrss, json.loads(out)


def fresh_copy(base: Path, name: str) -> Path:
    home = WORK / name
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(base, home)
    return home


def sqlite_delete(home: Path, doomed: list[bytes]) -> float:
    conn = sqlite3.connect(home / "fabnode.db", isolation_level=None)
    start = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    for i in range(0, len(doomed), 500):
        part = doomed[i:i + 500]
        conn.execute(f"DELETE FROM blocks WHERE cid IN ({','.join('?' * len(part))})", part)
    conn.execute("COMMIT")
    took = time.perf_counter() - start
    conn.close()
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the cached base store in /tmp")
    args = parser.parse_args()
    base = WORK / "base"
    marker = WORK / "base.json"
    if not marker.exists():
        shutil.rmtree(base, ignore_errors=True)
        WORK.mkdir(parents=True, exist_ok=True)
        designs = build(base)
        env = {**os.environ, "FABNODE_HOME": str(base)}
        for design in designs[::2]:
            subprocess.run([str(FABNODE), "unpin", design], env=env, check=True, capture_output=True)
        marker.write_text(json.dumps({"designs": designs}))
    conn = sqlite3.connect(f"file:{base / 'fabnode.db'}?mode=ro", uri=True)
    blocks, total = conn.execute("SELECT count(*), sum(size) FROM blocks").fetchone()
    records = conn.execute("SELECT count(*) FROM records").fetchone()[0]
    pinned = set(r[0] for r in conn.execute("SELECT cid FROM pins"))
    conn.close()
    print(f"store: {blocks} blocks, {total / (1 << 30):.2f} GiB, {records} records, {len(pinned)} pins left of "
          f"{DESIGNS}; file {(base / 'fabnode.db').stat().st_size / (1 << 30):.2f} GiB")

    gc_times, rss, idle_times, idle_rss = [], [], [], []
    freed = None
    for i in range(args.runs):
        home = fresh_copy(base, "run")
        took, peak, report = run_gc(home)
        gc_times.append(took)
        rss.append(peak)
        freed = report
        took, peak, again = run_gc(home)
        assert again["freed_blocks"] == 0
        idle_times.append(took)
        idle_rss.append(peak)
        print(f"  run {i + 1}: gc {gc_times[-1]:.2f} s, peak RSS {rss[-1] / 1024:.0f} MiB, freed "
              f"{report['freed_bytes'] / (1 << 30):.2f} GiB in {report['freed_blocks']} blocks; nothing-to-free gc "
              f"{took:.2f} s, {peak / 1024:.0f} MiB", flush=True)
        kept = {r[0] for r in sqlite3.connect(home / "fabnode.db").execute("SELECT cid FROM blocks")}
        shutil.rmtree(home)

    anchor_times = []
    conn = sqlite3.connect(f"file:{base / 'fabnode.db'}?mode=ro", uri=True)
    doomed = [r[0] for r in conn.execute("SELECT cid FROM blocks") if r[0] not in kept]
    conn.close()
    for i in range(args.runs):
        home = fresh_copy(base, "anchor")
        anchor_times.append(sqlite_delete(home, doomed))
        print(f"  anchor {i + 1}: SQLite DELETE of the same {len(doomed)} rows {anchor_times[-1]:.2f} s", flush=True)
        shutil.rmtree(home)

    du_times = []
    for _ in range(args.runs):  # read-only: on the base itself
        start = time.perf_counter()
        subprocess.run([str(FABNODE), "du", "--json"], env={**os.environ, "FABNODE_HOME": str(base)}, check=True,
                       stdout=subprocess.DEVNULL)
        du_times.append(time.perf_counter() - start)
    print(f"  du: {', '.join(f'{t:.2f}' for t in du_times)} s", flush=True)

    gc_median = statistics.median(gc_times)
    anchor = statistics.median(anchor_times)
    print(json.dumps({"blocks": blocks, "bytes": total, "records": records,
                      "freed_blocks": freed["freed_blocks"], "freed_bytes": freed["freed_bytes"],
                      "gc_s": gc_times, "gc_median_s": gc_median, "gc_peak_rss_mib": max(rss) / 1024,
                      "idle_gc_median_s": statistics.median(idle_times), "idle_peak_rss_mib": max(idle_rss) / 1024,
                      "sqlite_delete_s": anchor_times, "sqlite_delete_median_s": anchor,
                      "ratio": gc_median / anchor, "du_s": du_times, "du_median_s": statistics.median(du_times), "machine": f"{platform.platform()}, {os.cpu_count()} cores"},
                     indent=1))
    if not args.keep:
        shutil.rmtree(WORK)


if __name__ == "__main__":
    main()
