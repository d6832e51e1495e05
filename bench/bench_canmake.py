#!/usr/bin/env python3
"""Benchmark who can make what (issue 18's figures): 5,000 lab profiles and 20,000 designs.

The store (built once per size and seed, cached in bench/work/canmake-home-…) gets LABS signed
``lab`` records (each by its own key, scattered over East Africa, with 2-6 processes of the
vocabulary and 2-6 materials) and DESIGNS designs (one signed version each, whose requirements
of 1-3 processes and 1-3 materials are indexed as publish indexes them), all through the real
ingest code (RecordStore.ingest, storage.making.index_requirements). The bench's own lab gets a
profile in Nairobi.

Then, each as a whole command (median of --runs processes after a warm-up, best run, CPU
time): `fabnode can-make DESIGN --near-me --radius 200` and `fabnode can-make DESIGN` for a
design needing 2 processes and 1 material (a common case) and one needing 1 process and 1
material (the widest candidate set), and `fabnode can-make` (no design); beside them the
anchors `python -c pass` and `fabnode designs --limit 50` (a reading command of the same
store). Goals: can-make DESIGN under 200 ms, can-make with no design under 1 s.

Usage:  .venv/bin/python bench/bench_canmake.py [--labs 5000] [--designs 20000] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_add import FABNODE, WORK, machine  # noqa: E402
from bench_search import _command_ms  # noqa: E402

PROCESSES = ["3d-printing-fdm", "laser-cutting", "cnc-milling", "cnc-turning", "welding", "metalworking",
             "woodworking", "pcb-assembly", "sewing", "mechanical-assembly", "vinyl-cutting", "casting"]
MATERIALS = ["pla", "petg", "plywood 6 mm", "mdf 3 mm", "acrylic 3 mm", "steel tube", "aluminium sheet", "hdpe",
             "epdm", "pvc u", "cotton canvas", "fr4"]
NAIROBI = (-1.2864, 36.8172)


def build(home: Path, labs: int, designs: int, seed: int) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from fabnode.node.home import Home
    from fabnode.protocol.cid import RAW, make_cid
    from fabnode.protocol.dagcbor import Link
    from fabnode.protocol.identity import did_from_ed25519
    from fabnode.protocol.labs import profile_body
    from fabnode.protocol.records import make_record
    from fabnode.protocol.requirements import Requirements
    from fabnode.storage import open_db
    from fabnode.storage.making import index_requirements
    from fabnode.storage.records import RecordStore

    env = {**os.environ, "FABNODE_HOME": str(home)}
    subprocess.run([str(FABNODE), "init", "--name", "Bench Lab"], env=env, check=True, capture_output=True)
    subprocess.run([str(FABNODE), "lab", "set", "--place", "Nairobi", "--lat", str(NAIROBI[0]), "--lon",
                    str(NAIROBI[1]), "--process", "laser-cutting", "--process", "welding", "--material", "plywood 6 mm",
                    "--material", "steel tube", "--yes"], env=env, check=True, capture_output=True)
    h = Home(home)
    key = serialization.load_pem_private_key((home / "author.key").read_bytes(), password=None)
    me = h.identity().did
    rng = random.Random(seed)
    db = open_db(h.db_path)
    records = RecordStore(db.conn)
    ts = 1_764_000_000_000
    db.conn.execute("BEGIN IMMEDIATE")
    for i in range(labs):
        lab_key = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
        did = did_from_ed25519(lab_key.public_key().public_bytes(serialization.Encoding.Raw,
                                                                  serialization.PublicFormat.Raw))
        body = {"name": f"Lab {i}", "nodes": [], **profile_body(
            place=f"Town {i}", lat=rng.uniform(-12, 5), lon=rng.uniform(28, 42), bioregion=f"Basin {i % 40}",
            processes=rng.sample(PROCESSES, rng.randint(2, 6)), materials=rng.sample(MATERIALS, rng.randint(2, 6)),
            taking_requests=True)}
        ts += 1
        records.ingest(make_record("lab", body, author=did, ts=ts, sign=lab_key.sign), received_ms=ts)
    for i in range(designs):
        ts += 1
        body = {"bundle": Link(make_cid(RAW, b"bundle %d" % i)), "parents": [], "title": f"Design {i}",
                "message": "first", "license": "CERN-OHL-S-2.0", "maintainers": [me]}
        record = make_record("version", body, author=me, ts=ts, sign=key.sign)
        records.ingest(record, received_ms=ts)
        needs = Requirements(tuple(sorted(rng.sample(PROCESSES, rng.randint(1, 3)))), (),
                             tuple(sorted(rng.sample(MATERIALS, rng.randint(1, 3)))))
        index_requirements(db.conn, record.cid, record.cid, ts, needs)
    db.conn.execute("COMMIT")
    db.close()


def _design_needing(conn, processes: int, materials: int) -> str:
    from fabnode.protocol.cid import cid_str

    row = conn.execute(
        "SELECT d.design FROM design_requirements d WHERE"
        " (SELECT count(*) FROM version_requirements r WHERE r.version = d.version AND r.kind = 'process') = ?"
        " AND (SELECT count(*) FROM version_requirements r WHERE r.version = d.version AND r.kind = 'material') = ?"
        " ORDER BY d.design LIMIT 1", (processes, materials)).fetchone()
    return cid_str(row[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--labs", type=int, default=5_000)
    parser.add_argument("--designs", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args()
    home = WORK / f"canmake-home-{args.labs}-{args.designs}-{args.seed}"
    if not home.exists():  # built aside, then renamed: an interrupted build is never reused
        start = time.monotonic()
        partial = home.with_name(home.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        build(partial, args.labs, args.designs, args.seed)
        partial.rename(home)
        print(f"store built in {time.monotonic() - start:.0f} s", file=sys.stderr)
    env = {**os.environ, "FABNODE_HOME": str(home)}

    from fabnode.node.home import Home

    conn = Home(home).open_stores().db.conn
    typical, wide = _design_needing(conn, 2, 1), _design_needing(conn, 1, 1)
    size = (home / "fabnode.db").stat().st_size / 2**20

    def command(*argv: str) -> tuple[float, float, float]:
        return _command_ms([str(FABNODE), *argv], env, args.runs)

    def count(*argv: str) -> int:
        import json

        out = json.loads(subprocess.run([str(FABNODE), *argv, "--json", "--limit", "100000"], env=env, check=True,
                                        capture_output=True).stdout)
        return len(out["labs"] if "labs" in out else out["designs"])

    print(f"Machine: {machine()}; load average {os.getloadavg()[0]:.1f} at the start\n")
    print(f"Store: {args.labs} lab profiles, {args.designs} designs with requirements, {size:.0f} MiB database. "
          f"Whole commands: median of {args.runs} processes after a warm-up.\n")
    rows = [
        ("`python -c pass` (floor)", [sys.executable, "-c", "pass"], None),
        ("`fabnode designs --limit 50` (anchor: a reading command)", None, ("designs", "--limit", "50")),
        ("`can-make DESIGN --near-me --radius 200` (2 processes, 1 material)", None,
         ("can-make", typical, "--near-me", "--radius", "200")),
        ("`can-make DESIGN` (2 processes, 1 material; all labs)", None, ("can-make", typical)),
        ("`can-make DESIGN --near-me --radius 200` (1 process, 1 material)", None,
         ("can-make", wide, "--near-me", "--radius", "200")),
        ("`can-make DESIGN` (1 process, 1 material; all labs)", None, ("can-make", wide)),
        ("`can-make` (no design: this lab's profile against every design)", None, ("can-make",)),
    ]
    print("| command | results | median ms | best ms | CPU ms |")
    print("|---|---:|---:|---:|---:|")
    results = {}
    for name, raw, argv in rows:
        wall, best, cpu = _command_ms(raw, env, args.runs) if raw else command(*argv)
        found = count(*argv) if argv and argv[0] == "can-make" else ""
        results[name] = wall
        print(f"| {name} | {found} | {wall:.0f} | {best:.0f} | {cpu:.0f} |")
    from fabnode.node.http.pages import Pages
    from fabnode.node.local.making import can_make_design, can_make_here
    from bench_search import _median_ms

    h = Home(home)
    stores = h.open_stores()
    pages = Pages(h, h.open_store())
    pages.design_page(typical)  # the templates are compiled once per language in a daemon's life
    print("\nIn-process (median of 20): "
          f"can_make_design (2 processes, 1 material, all labs) {_median_ms(lambda: can_make_design(h, typical, stores=stores), 20):.1f} ms; "
          f"can_make_design (1 process, 1 material, all labs) {_median_ms(lambda: can_make_design(h, wide, stores=stores), 20):.1f} ms; "
          f"can_make_here {_median_ms(lambda: can_make_here(h), 20):.1f} ms; "
          f"design page server render (with \"Labs that can make this\") {_median_ms(lambda: pages.design_page(typical), 20):.1f} ms; "
          f"requests page (no requests) {_median_ms(lambda: pages.requests_page(), 20):.1f} ms")
    design_worst = max(v for k, v in results.items() if "DESIGN" in k)
    print(f"\n- load average {os.getloadavg()[0]:.1f} at the end")
    print(f"- slowest `can-make DESIGN` (median): {design_worst:.0f} ms (goal under 200 ms: "
          f"{'met' if design_worst < 200 else 'NOT met'}); `can-make` with no design: "
          f"{results[rows[-1][0]]:.0f} ms (goal under 1 s: {'met' if results[rows[-1][0]] < 1000 else 'NOT met'})")


if __name__ == "__main__":
    main()
