#!/usr/bin/env python3
"""Benchmark who can make what (issue 18's figures): 5,000 lab profiles and 20,000 designs.

The can-make rows of bench_labs.py (which calls :func:`can_make_rows` on its store); run alone,
this builds or reuses the same store (bench_labs.build: a real home whose lab is in Nakuru, 5,000
other labs' signed profiles, 20,000 designs, all through RecordStore.ingest). Designs there carry
no manifest, so each design's version gets seeded requirements (1-3 processes of the vocabulary,
1-3 materials) indexed by storage.making.index_requirements, as publish does.

Measured, each as a whole command (median of --runs processes after a warm-up, best run, CPU
time): `fabnode can-make DESIGN --near-me --radius 200` and `fabnode can-make DESIGN` for a
design needing 2 processes and 1 material (a common case) and one needing 1 process and 1
material (the widest candidate set), and `fabnode can-make` (no design); beside them the anchor
`fabnode designs --limit 50` (a reading command on the same store). In-process: the same calls
and the design page's server render (its "Labs that can make this"). Goals: can-make DESIGN
under 200 ms, can-make with no design under 1 s. The package's bytecode is compiled first, as an
installed wheel's is (this machine's shells set PYTHONDONTWRITEBYTECODE=1).

Usage:  .venv/bin/python bench/bench_canmake.py [--labs 5000] [--designs 20000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_add import FABNODE, WORK, machine  # noqa: E402
from bench_search import _command_ms, _median_ms  # noqa: E402

MATERIALS = ["pla", "petg", "plywood 6mm", "mdf 3mm", "acrylic 3mm", "mild steel", "aluminium sheet", "cotton",
             "copper clad board", "epoxy resin", "bamboo", "hdpe"]
"""bench_labs.py's materials, so designs and labs speak of the same things."""


def ensure_requirements(home: Path, seed: int) -> int:
    """Give every design of the store seeded requirements, once (what publish would have indexed
    from their okh.toml); returns how many designs have requirements."""
    from fabnode.node.home import Home
    from fabnode.protocol.processes import PROCESSES
    from fabnode.protocol.requirements import Requirements
    from fabnode.storage import open_db
    from fabnode.storage.making import index_requirements

    db = open_db(Home(home).db_path)
    conn = db.conn
    if conn.execute("SELECT count(*) FROM design_requirements").fetchone()[0] == 0:
        rng = random.Random(seed + 1)
        processes = list(PROCESSES)
        conn.execute("BEGIN IMMEDIATE")
        for version, design, ts in conn.execute("SELECT cid, design, ts FROM versions ORDER BY ts, cid").fetchall():
            needs = Requirements(tuple(sorted(rng.sample(processes, rng.randint(1, 3)))), (),
                                 tuple(sorted(rng.sample(MATERIALS, rng.randint(1, 3)))))
            index_requirements(conn, version, design, ts, needs)
        conn.execute("COMMIT")
    count = conn.execute("SELECT count(*) FROM design_requirements").fetchone()[0]
    db.close()
    return count


def _design_needing(conn, processes: int, materials: int) -> str:
    from fabnode.protocol.cid import cid_str

    row = conn.execute(
        "SELECT d.design FROM design_requirements d WHERE"
        " (SELECT count(*) FROM version_requirements r WHERE r.version = d.version AND r.kind = 'process') = ?"
        " AND (SELECT count(*) FROM version_requirements r WHERE r.version = d.version AND r.kind = 'material') = ?"
        " ORDER BY d.design LIMIT 1", (processes, materials)).fetchone()
    return cid_str(row[0])


def can_make_rows(home: Path, runs: int, seed: int = 18) -> None:
    """Print the can-make rows (a table, then the in-process figures) for the store at ``home``."""
    from fabnode.node.home import Home
    from fabnode.node.http.pages import Pages
    from fabnode.node.local.making import can_make_design, can_make_here

    with_needs = ensure_requirements(home, seed)
    # An installed fabnode has its bytecode compiled (pip does it); a source checkout run with
    # PYTHONDONTWRITEBYTECODE=1, as this machine's shells are, recompiles every module it imports
    # in every process (~100 ms here). Compile once, so the figures are those of an installed node.
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "compileall", "-q", *(str(root / d) for d in ("cli.py", "node", "protocol",
                                                                                      "storage"))],
                   check=True, capture_output=True)
    env = {**os.environ, "FABNODE_HOME": str(home)}
    h = Home(home)
    stores = h.open_stores()
    typical, wide = _design_needing(stores.db.conn, 2, 1), _design_needing(stores.db.conn, 1, 1)

    def count(*argv: str) -> int:
        out = json.loads(subprocess.run([str(FABNODE), *argv, "--json", "--limit", "100000"], env=env, check=True,
                                        capture_output=True).stdout)
        return len(out["labs"] if "labs" in out else out["designs"])

    rows = [
        ("`fabnode designs --limit 50` (anchor: a reading command)", ("designs", "--limit", "50")),
        ("`can-make DESIGN --near-me --radius 200` (2 processes, 1 material)",
         ("can-make", typical, "--near-me", "--radius", "200")),
        ("`can-make DESIGN` (2 processes, 1 material; every lab)", ("can-make", typical)),
        ("`can-make DESIGN --near-me --radius 200` (1 process, 1 material)",
         ("can-make", wide, "--near-me", "--radius", "200")),
        ("`can-make DESIGN` (1 process, 1 material; every lab)", ("can-make", wide)),
        ("`can-make` (no design: this lab's profile against every design)", ("can-make",)),
    ]
    print(f"\nCan-make ({with_needs} designs with requirements): whole commands, median of {runs} processes.\n")
    print("| command | labs or designs listed | median ms | best ms | CPU ms |")
    print("|---|---:|---:|---:|---:|")
    walls = {}
    for name, argv in rows:
        wall, best, cpu = _command_ms([str(FABNODE), *argv], env, runs)
        walls[name] = wall
        found = count(*argv) if argv[0] == "can-make" else ""
        print(f"| {name} | {found} | {wall:.0f} | {best:.0f} | {cpu:.0f} |")
    pages = Pages(h, h.open_store())
    pages.design_page(typical)  # the templates are compiled once per language in a daemon's life
    print("\n- in-process, median of 20: can_make_design (2 processes, 1 material, every lab) "
          f"{_median_ms(lambda: can_make_design(h, typical, stores=stores), 20):.1f} ms; (1 process, 1 material) "
          f"{_median_ms(lambda: can_make_design(h, wide, stores=stores), 20):.1f} ms; can_make_here "
          f"{_median_ms(lambda: can_make_here(h), 20):.1f} ms; design page server render with \"Labs that can make "
          f"this\" {_median_ms(lambda: pages.design_page(typical), 20):.1f} ms; requests page "
          f"{_median_ms(lambda: pages.requests_page(), 20):.1f} ms")
    design_worst = max(v for k, v in walls.items() if "DESIGN" in k)
    here = walls[rows[-1][0]]
    print(f"- slowest `can-make DESIGN` (median): {design_worst:.0f} ms (goal under 200 ms: "
          f"{'met' if design_worst < 200 else 'NOT met'}); `can-make` with no design: {here:.0f} ms "
          f"(goal under 1 s: {'met' if here < 1000 else 'NOT met'})")


def main() -> None:
    from bench_labs import build

    parser = argparse.ArgumentParser()
    parser.add_argument("--labs", type=int, default=5_000)
    parser.add_argument("--designs", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args()
    home = WORK / f"labs-home-{args.labs}-{args.designs}-{args.seed}"  # bench_labs.py's store
    if not home.exists():
        start = time.monotonic()
        partial = home.with_name(home.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        build(partial, args.labs, args.designs, args.seed)
        partial.rename(home)
        print(f"store built in {time.monotonic() - start:.0f} s", file=sys.stderr)
    print(f"Machine: {machine()}; load average {os.getloadavg()[0]:.1f} at the start")
    can_make_rows(home, args.runs, args.seed)
    print(f"- load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
