#!/usr/bin/env python3
"""Benchmark range-based sync (issue 6): two stores of 100,000 records differing by 1, 100 and
10,000 records, against the naive exchange of every record id.

For each difference, several times:

* the reconciliation alone, run over the two real stores' record sets (protocol/reconcile.py):
  messages, round trips, bytes each way, CPU time;
* the naive alternative: each side sends all its ids (32 bytes each) — its bytes;
* a real sync between two `fabnode run` daemons on 127.0.0.1 over those stores: time from the
  connection to "synced", and the sync's own report (round trips, bytes, records moved).

Usage:  .venv/bin/python bench/bench_sync.py [--runs 3] [--records 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_add import FABNODE, WORK, machine  # noqa: E402

DIFFERENCES = (1, 100, 10_000)


def make_records(db_path: Path, seed: int, count: int, start_ts: int, spread: int = 0) -> None:
    """Insert ``count`` signed vouch records into the store at ``db_path`` in one transaction;
    with ``spread``, their timestamps are scattered (seeded) over [start_ts, start_ts + spread)."""
    import random

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives import serialization

    from fabnode.protocol.identity import did_from_ed25519
    from fabnode.protocol.records import make_record
    from fabnode.storage import open_db
    from fabnode.storage.records import RecordStore

    key = Ed25519PrivateKey.from_private_bytes(seed.to_bytes(32, "big"))
    author = did_from_ed25519(key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    db = open_db(db_path)
    store = RecordStore(db.conn)
    rng = random.Random(seed)
    db.conn.execute("BEGIN IMMEDIATE")
    for i in range(count):
        subject = did_from_ed25519((seed * 10_000_000 + i).to_bytes(32, "big"))
        ts = start_ts + (rng.randrange(spread) if spread else i)
        record = make_record("vouch", {"subject": subject, "trust": "trusted"}, author=author, ts=ts, sign=key.sign)
        store.ingest(record, received_ms=start_ts)
    db.conn.execute("COMMIT")
    db.close()


def fresh_home(path: Path, base_db: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run([str(FABNODE), "init", "--name", path.name], env={**os.environ, "FABNODE_HOME": str(path)},
                   check=True, capture_output=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path / 'fabnode.db'}{suffix}").unlink(missing_ok=True)
    shutil.copy(base_db, path / "fabnode.db")


def item_set(db_path: Path):
    from fabnode.protocol.reconcile import MAX_TS, ItemSet

    conn = sqlite3.connect(db_path)
    rows = conn.execute("SELECT ts, cid FROM records").fetchall()
    conn.close()
    return ItemSet((min(ts, MAX_TS), cid[4:]) for ts, cid in rows)


def reconcile_only(a_db: Path, b_db: Path) -> dict:
    from fabnode.protocol.reconcile import Reconciler

    a, b = item_set(a_db), item_set(b_db)
    start = time.process_time()
    sides = [Reconciler(a), Reconciler(b)]
    message = sides[0].initiate()
    out_bytes, in_bytes, messages = len(message), 0, 1
    turn, named = 1, 0
    while message is not None:
        outcome = sides[turn].respond(message)
        named += len(outcome.send) + len(outcome.ask)
        message = outcome.reply
        if message is not None:
            messages += 1
            if turn == 0:
                out_bytes += len(message)
            else:
                in_bytes += len(message)
        turn = 1 - turn
    cpu = time.process_time() - start
    return {"messages": messages, "round_trips": (messages + 1) // 2, "bytes_a_to_b": out_bytes,
            "bytes_b_to_a": in_bytes, "cpu_s": cpu, "named": named, "naive_bytes_each_way": 32 * len(a)}


def daemon(home: Path, *args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([str(FABNODE), "run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", *args],
                            env={**os.environ, "FABNODE_HOME": str(home)}, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "listening on " in line:
            return proc, line.split("listening on ", 1)[1].strip()
    proc.kill()
    raise RuntimeError("daemon did not start")


def real_sync(a_home: Path, b_home: Path, expected: int) -> dict:
    """Start A, then B bootstrapping A; time until B's log says it synced; B's sync report."""
    pa, addr = daemon(a_home)
    try:
        pb, _ = daemon(b_home, "--bootstrap", addr)
        try:
            start = time.monotonic()
            connected = None
            deadline = start + 300
            while time.monotonic() < deadline:
                line = pb.stdout.readline()
                if "peer connected" in line and connected is None:
                    connected = time.monotonic()
                if "synced with" in line or "sync with" in line:
                    break
            took = time.monotonic() - (connected or start)
            status = json.loads(subprocess.run([str(FABNODE), "status", "--json"], capture_output=True, text=True,
                                               env={**os.environ, "FABNODE_HOME": str(b_home)}).stdout)
            report = status["last_syncs"][0] if status.get("last_syncs") else {}
            return {"wall_s": took, **report, "line": line.strip()}
        finally:
            pb.send_signal(signal.SIGTERM)
            pb.wait(timeout=20)
    finally:
        pa.send_signal(signal.SIGTERM)
        pa.wait(timeout=20)


def measure(base: Path, args, layout: str, difference: int) -> dict:
    """``recent``: the differing records are newer than all shared ones (a lab back from a week
    offline); ``scattered``: their timestamps fall anywhere among the shared ones."""
    recon, real = [], []
    for run in range(args.runs):
        a_home, b_home = WORK / "sync-a", WORK / "sync-b"
        fresh_home(a_home, base)
        fresh_home(b_home, base)
        start, spread = (1_765_000_000_000, 0) if layout == "recent" else (1_764_000_000_000, args.records)
        make_records(a_home / "fabnode.db", seed=100 + run, count=difference // 2, start_ts=start, spread=spread)
        make_records(b_home / "fabnode.db", seed=200 + run, count=difference - difference // 2, start_ts=start,
                     spread=spread)
        recon.append(reconcile_only(a_home / "fabnode.db", b_home / "fabnode.db"))
        real.append(real_sync(a_home, b_home, difference))
    med = lambda key, xs: statistics.median(x.get(key, 0) for x in xs)  # noqa: E731
    return {
        "layout": layout, "difference": difference,
        "round_trips": med("round_trips", recon),
        "bytes_a_to_b": med("bytes_a_to_b", recon), "bytes_b_to_a": med("bytes_b_to_a", recon),
        "naive_each_way": recon[0]["naive_bytes_each_way"],
        "cpu_s": med("cpu_s", recon), "named": recon[0]["named"],
        "sync_wall_s": med("wall_s", real), "sync_round_trips": med("round_trips", real),
        "sync_bytes": statistics.median(r.get("bytes_out", 0) + r.get("bytes_in", 0) for r in real),
        "sync_moved": statistics.median(r.get("sent", 0) + r.get("new", 0) for r in real),
        "lines": [r["line"] for r in real],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    base = WORK / f"sync-base-{args.records}.db"
    if not base.exists():
        print(f"building a store of {args.records} signed records (once)…", file=sys.stderr)
        tmp = WORK / "sync-base-building"
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run([str(FABNODE), "init"], env={**os.environ, "FABNODE_HOME": str(tmp)}, check=True,
                       capture_output=True)
        make_records(tmp / "fabnode.db", seed=1, count=args.records, start_ts=1_764_000_000_000)
        conn = sqlite3.connect(tmp / "fabnode.db")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        shutil.copy(tmp / "fabnode.db", base)
        shutil.rmtree(tmp)
    rows = []
    for layout in ("recent", "scattered"):
        for difference in DIFFERENCES:
            rows.append(measure(base, args, layout, difference))
    print(f"Machine: {machine()}\n")
    print(f"{args.records} records on each side; medians of {args.runs} runs.\n")
    print("| layout | differing records | reconciliation round trips | reconciliation bytes A→B / B→A | naive ids each way | "
          "reconciliation CPU s | real sync: wall s | real sync: round trips (incl. exchange) | real sync: all bytes | records moved |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['layout']} | {r['difference']} | {r['round_trips']:.0f} | {r['bytes_a_to_b']:,.0f} / {r['bytes_b_to_a']:,.0f} | "
              f"{r['naive_each_way']:,} | {r['cpu_s']:.2f} | {r['sync_wall_s']:.2f} | {r['sync_round_trips']:.0f} | "
              f"{r['sync_bytes']:,.0f} | {r['sync_moved']:.0f} |")
    for r in rows:
        total = r["bytes_a_to_b"] + r["bytes_b_to_a"]
        print(f"- {r['layout']}, {r['difference']} differences: reconciliation named {r['named']} records; "
              f"{total:,.0f} bytes in all vs {2 * r['naive_each_way']:,} for the naive exchange "
              f"({2 * r['naive_each_way'] / max(total, 1):.0f}x less)")
        print(f"  daemon said: {r['lines'][0]}")


if __name__ == "__main__":
    main()
