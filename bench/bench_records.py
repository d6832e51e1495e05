#!/usr/bin/env python3
"""Benchmark the signed-record commands on a large store (issue 3).

Builds (once, cached in bench/work/records-home) a node that knows 100,000 versions across
10,000 designs and 300,000 attestations from 1,000 labs, with a trust graph of ~5,000 vouches,
all real signed records ingested through the same code as any record. Then measures:

* record verification throughput (verify_record over stored blocks), single process;
* the real commands, each as the median of several runs of the `fabnode` process:
  `designs`, `search`, `log DESIGN`, `reputation VERSION` (plus `fabnode --help` and a bare
  `python -c pass` as the floor every command pays).

Usage:  .venv/bin/python bench/bench_records.py [--runs 7] [--designs 10000]

Search across languages and scripts (issue 19: 10,000 designs in three languages each, Latin,
Devanagari, Arabic and Chinese queries) is measured by bench/bench_search.py.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from nacl.signing import SigningKey  # noqa: E402

from fabnode.protocol.cid import DAG_PB, make_cid  # noqa: E402
from fabnode.protocol.dagcbor import Link  # noqa: E402
from fabnode.protocol.identity import did_from_ed25519  # noqa: E402
from fabnode.protocol.records import make_record  # noqa: E402
from fabnode.storage import BlockStore, open_db  # noqa: E402
from fabnode.storage.records import RecordStore  # noqa: E402

WORK = ROOT / "bench" / "work"
FABNODE = Path(sys.executable).parent / "fabnode"
THINGS = ["water pump", "solar dryer", "grain mill", "bicycle generator", "rocket stove", "cargo bike",
          "seed planter", "drip irrigation kit", "oil press", "loom", "3D printer", "CNC router",
          "wind turbine", "incubator", "microscope", "prosthetic hand", "brick press", "biogas digester"]
ADJECTIVES = ["low-cost", "rugged", "modular", "hand-powered", "portable", "village-scale", "open", "compact"]
LICENCES = ["CERN-OHL-S-2.0", "CERN-OHL-W-2.0", "CC-BY-SA-4.0", "MIT", "CC-BY-4.0"]


def build(home: Path, designs: int, versions_per_design: int, attestations_per_version: int, seed: int) -> dict:
    rng = random.Random(seed)
    env = {**os.environ, "FABNODE_HOME": str(home)}
    subprocess.run([str(FABNODE), "init", "--name", "Bench Lab"], env=env, check=True, capture_output=True)
    from cryptography.hazmat.primitives import serialization

    me_key = serialization.load_pem_private_key((home / "author.key").read_bytes(), password=None)
    me_seed = me_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                   serialization.NoEncryption())
    labs = [SigningKey(rng.randbytes(32)) for _ in range(1000)]
    me = SigningKey(me_seed)
    dids = [did_from_ed25519(bytes(k.verify_key)) for k in labs]
    me_did = did_from_ed25519(bytes(me.verify_key))
    store = BlockStore(open_db(home / "fabnode.db"))
    records = RecordStore(store.db.conn)
    ts = 1_700_000_000_000
    count = 0

    def put(rtype, body, key, did):
        nonlocal ts, count
        ts += 7
        record = make_record(rtype, body, author=did, ts=ts, sign=lambda m: key.sign(m).signature)
        records.ingest(record, received_ms=ts)
        count += 1
        return record

    started = time.perf_counter()
    with store.write_transaction():
        for lab in rng.sample(range(1000), 20):
            put("vouch", {"subject": dids[lab], "trust": "trusted"}, me, me_did)
        for i in range(1000):
            for j in rng.sample(range(1000), 5):
                if j != i:
                    put("vouch", {"subject": dids[j], "trust": "trusted"}, labs[i], dids[i])
    sample = {}
    for d in range(designs):
        with store.write_transaction():
            author = rng.randrange(1000)
            thing = f"{rng.choice(ADJECTIVES)} {rng.choice(THINGS)} {d}"
            licence = rng.choice(LICENCES)
            first = put("version", {"bundle": Link(make_cid(DAG_PB, f"b{d}.0".encode())), "parents": [],
                                    "title": thing, "message": f"first design of the {thing}", "license": licence,
                                    "maintainers": [dids[author]]}, labs[author], dids[author])
            parent = first
            versions = [first]
            for v in range(1, versions_per_design):
                parent = put("version", {"bundle": Link(make_cid(DAG_PB, f"b{d}.{v}".encode())),
                                         "parents": [Link(parent.cid)], "design": Link(first.cid), "title": thing,
                                         "label": f"1.{v}.0", "message": f"{rng.choice(ADJECTIVES)} change number {v}",
                                         "license": licence}, labs[author], dids[author])
                versions.append(parent)
            for version in versions:
                for _ in range(attestations_per_version):
                    who = rng.randrange(1000)
                    put("attestation", {"subject": Link(version.cid), "predicate": rng.choice(["built", "tested", "reviewed"]),
                                        "result": rng.choice(["passed", "passed", "passed", "warned", "failed"]),
                                        "lab": f"lab {who}"}, labs[who], dids[who])
            if d == designs // 2:
                sample = {"design": first.id, "version": parent.id}
                # the popular one: fifty more attestations on its newest version
                for who in rng.sample(range(1000), 50):
                    put("attestation", {"subject": Link(parent.cid), "predicate": "built", "result": "passed",
                                        "lab": f"lab {who}"}, labs[who], dids[who])
        if d % 1000 == 999:
            print(f"  built {d + 1} designs, {count} records, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    store.close()
    return sample


def median_run(cmd: list[str], env: dict, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def verification_rate(home: Path, n: int, workers: int) -> float:
    from fabnode.node.local.verify import verify_blocks

    db = open_db(home / "fabnode.db")
    rows = db.conn.execute("SELECT cid, data FROM records ORDER BY rowid LIMIT ?", (n,)).fetchall()
    db.close()
    now = time.time_ns() // 1_000_000
    start = time.perf_counter()
    results = verify_blocks(rows, now, workers=workers)
    elapsed = time.perf_counter() - start
    assert not any(isinstance(r, str) for r in results)
    return len(rows) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--designs", type=int, default=10_000)
    args = parser.parse_args()
    home = WORK / f"records-home-{args.designs}"
    sample_file = home / "bench-sample"
    if not sample_file.exists():
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        print("building the store (once)…", file=sys.stderr)
        sample = build(home, args.designs, 10, 3, seed=3)
        sample_file.write_text(f"{sample['design']} {sample['version']}")
    design, version = sample_file.read_text().split()
    env = {**os.environ, "FABNODE_HOME": str(home)}
    db = open_db(home / "fabnode.db")
    counts = dict(db.conn.execute("SELECT type, count(*) FROM records GROUP BY type").fetchall())
    db.close()
    rate = statistics.median(verification_rate(home, 20_000, 1) for _ in range(3))
    rate_all = statistics.median(verification_rate(home, 20_000, os.cpu_count() or 1) for _ in range(3))
    fab = [str(FABNODE)]
    rows = [
        ("python -c pass (floor)", [sys.executable, "-c", "pass"]),
        ("fabnode --help", fab + ["--help"]),
        ("fabnode designs", fab + ["designs"]),
        ("fabnode search \"water pump\"", fab + ["search", "water pump"]),
        ("fabnode log DESIGN", fab + ["log", design]),
        ("fabnode reputation VERSION", fab + ["reputation", version]),
    ]
    results = [(name, median_run(cmd, env, args.runs)) for name, cmd in rows]
    print(f"Store: {counts.get('version', 0)} versions in {args.designs} designs, {counts.get('attestation', 0)} "
          f"attestations, {counts.get('vouch', 0)} vouches ({home / 'fabnode.db'}: "
          f"{(home / 'fabnode.db').stat().st_size / 1e6:.0f} MB)\n")
    print(f"Record verification (strict decode, re-encode, Ed25519 via libsodium), median of 3 passes over "
          f"20,000 stored records (goal >= 10,000/s): one process {rate:,.0f} records/s; "
          f"{os.cpu_count()} worker processes (node/local/verify.py, as import and sync use it) {rate_all:,.0f} records/s\n")
    print("| command | median of %d runs (ms) | goal |" % args.runs)
    print("|---|---:|---|")
    goals = {"fabnode designs": "< 200", "fabnode search \"water pump\"": "< 200", "fabnode log DESIGN": "< 200",
             "fabnode reputation VERSION": "< 500"}
    for name, t in results:
        print(f"| `{name}` | {t * 1000:.0f} | {goals.get(name, '')} |")


if __name__ == "__main__":
    main()
