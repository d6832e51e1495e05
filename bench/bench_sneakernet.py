#!/usr/bin/env python3
"""Benchmark sneakernet export and import of a ~1 GiB collection (issue 4), against anchors.

Uses the mixed ~1 GiB tree of bench_add.py (generated there if missing). Lab A publishes it;
then, several times and interleaved:

* `fabnode export OUT.car` (everything: records, index and every block, fsynced) vs
  `ipfs-car pack TREE --output OUT.car` vs `cat OUT.car > /dev/null` (the I/O floor);
* `fabnode import OUT.car` into a fresh home (full verification, one transaction, durable) vs
  `ipfs-car unpack OUT.car --output DIR`.

Reports medians, MB/s, ratios and peak resident memory.
Usage:  .venv/bin/python bench/bench_sneakernet.py [--runs 3] [--size-mib 1024]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_add import FABNODE, IPFS_CAR, WORK, MiB, files_under, machine, make_file, make_tree, run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    inputs = WORK / f"inputs-{args.size_mib}MiB"
    tree = inputs / "tree"
    if not (inputs / "complete").exists():
        shutil.rmtree(inputs, ignore_errors=True)
        make_tree(tree, args.size_mib * MiB, seed=2026)
        make_file(inputs / "one-file.bin", args.size_mib * MiB + 1, seed=7)
        (inputs / "complete").touch()
    nbytes = sum(os.path.getsize(f) for f in files_under(tree))
    a = WORK / "sneaker-a"
    shutil.rmtree(a, ignore_errors=True)
    env_a = {**os.environ, "FABNODE_HOME": str(a)}
    run([str(FABNODE), "init", "--name", "Lab A"], env=env_a)
    run([str(FABNODE), "publish", str(tree), "-m", "a big collection", "--license", "CC-BY-SA-4.0"], env=env_a)
    results: dict[str, list[tuple[float, int]]] = {k: [] for k in
                                                    ("fabnode export", "ipfs-car pack", "cat (I/O floor)",
                                                     "fabnode import", "ipfs-car unpack")}
    car, car2 = WORK / "export.car", WORK / "packed.car"
    for r in range(args.runs):
        for path in (car, car2):
            path.unlink(missing_ok=True)
        results["fabnode export"].append(run([str(FABNODE), "export", str(car)], env=env_a)[:2])
        results["ipfs-car pack"].append(run([str(IPFS_CAR), "pack", str(tree), "--output", str(car2)])[:2])
        results["cat (I/O floor)"].append(run(f"cat '{car}' > /dev/null", shell=True)[:2])
        b = WORK / "sneaker-b"
        shutil.rmtree(b, ignore_errors=True)
        env_b = {**os.environ, "FABNODE_HOME": str(b)}
        run([str(FABNODE), "init", "--name", "Lab B"], env=env_b)
        results["fabnode import"].append(run([str(FABNODE), "import", str(car)], env=env_b)[:2])
        out = WORK / "unpacked"
        shutil.rmtree(out, ignore_errors=True)
        results["ipfs-car unpack"].append(run([str(IPFS_CAR), "unpack", str(car2), "--output", str(out)])[:2])
        shutil.rmtree(out, ignore_errors=True)
        print(f"  run {r + 1}/{args.runs}: " + ", ".join(f"{k} {v[-1][0]:.2f}s" for k, v in results.items()),
              file=sys.stderr)
    size = car.stat().st_size
    med = {k: statistics.median(t for t, _ in v) for k, v in results.items()}
    peak = {k: max(m for _, m in v) for k, v in results.items()}
    print(f"Machine: {machine()}\n")
    print(f"Collection: {len(files_under(tree))} files, {nbytes / 1e6:.0f} MB of content; export file {size / 1e6:.0f} MB\n")
    print("| step | median s | MB/s | peak RSS MB |")
    print("|---|---:|---:|---:|")
    for k in results:
        print(f"| {k} | {med[k]:.2f} | {size / 1e6 / med[k]:.0f} | {peak[k] / 1e6:.0f} |")
    print()
    print(f"- export: {size / 1e6 / med['fabnode export']:.0f} MB/s (goal >= 300), "
          f"{med['ipfs-car pack'] / med['fabnode export']:.2f}x faster than ipfs-car pack, "
          f"{med['cat (I/O floor)'] / med['fabnode export']:.2f}x the speed of cat")
    print(f"- import with full verification: {size / 1e6 / med['fabnode import']:.0f} MB/s (goal >= 150), "
          f"{med['ipfs-car unpack'] / med['fabnode import']:.2f}x faster than ipfs-car unpack; "
          f"peak RSS {peak['fabnode import'] / 1e6:.0f} MB (goal < 200 MB)")
    for path in (car, car2):
        path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
