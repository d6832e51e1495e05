#!/usr/bin/env python3
"""Benchmark importing CARs from other IPFS tools (issue 16), against fabnode's own CARv1 path.

One mixed tree (bench_add.make_tree, 128 MiB by default) becomes three files of the same
content: ipfs-car's CARv1 (`ipfs-car pack --output`), the same CARv1 wrapped as a CARv2 with
an index (test-tools/car-foreign.mjs v2), and a Kubo-style CIDv0 CAR (car-foreign.mjs kubo:
dag-pb leaves, 256 KiB chunks, so more and smaller blocks). Several interleaved runs of
`fabnode import` of each into a fresh home, and `ipfs-car unpack` of the CARv1 as the anchor.
Also the cost of checking one okh.toml against the OKH-LOSH schema, in process: the first call
(imports jsonschema, compiles the validator) and each call after.

Usage:  .venv/bin/python bench/bench_car_input.py [--runs 3] [--size-mib 128]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_add import FABNODE, IPFS_CAR, ROOT, WORK, MiB, files_under, machine, make_tree, run  # noqa: E402

NODE = ROOT / "test-tools" / "node_modules" / ".bin" / "node"
FOREIGN = ROOT / "test-tools" / "car-foreign.mjs"


def schema_cost(calls: int = 200) -> tuple[float, float]:
    """(first call ms, median ms of the next ``calls``) of schema_violations on the example manifest,
    in a fresh interpreter so the first call pays the import and compile."""
    code = (
        "import time, tomllib, statistics\n"
        "t = time.perf_counter()\n"
        "from fabnode.protocol.okh import schema_violations\n"
        f"m = tomllib.load(open({str(ROOT / 'examples' / 'hand-pump' / 'okh.toml')!r}, 'rb'))\n"
        "assert schema_violations(m) == []\n"
        "first = (time.perf_counter() - t) * 1000\n"
        "times = []\n"
        f"for _ in range({calls}):\n"
        "    t = time.perf_counter(); schema_violations(m); times.append((time.perf_counter() - t) * 1000)\n"
        "print(first, statistics.median(times))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, timeout=120)
    first, later = out.stdout.split()
    return float(first), float(later)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=128)
    args = parser.parse_args()
    inputs = WORK / f"car-input-{args.size_mib}MiB"
    tree = inputs / "tree"
    cars = {"CARv1 (ipfs-car)": inputs / "v1.car", "CARv2 (same, wrapped)": inputs / "v2.car",
            "CIDv0 CARv1 (Kubo-style)": inputs / "kubo.car"}
    if not (inputs / "complete").exists():
        shutil.rmtree(inputs, ignore_errors=True)
        make_tree(tree, args.size_mib * MiB, seed=1616)
        run([str(IPFS_CAR), "pack", str(tree), "--output", str(cars["CARv1 (ipfs-car)"])])
        run([str(NODE), str(FOREIGN), "v2", str(cars["CARv1 (ipfs-car)"]), str(cars["CARv2 (same, wrapped)"])])
        run([str(NODE), "--max-old-space-size=4096", str(FOREIGN), "kubo", str(tree),
             str(cars["CIDv0 CARv1 (Kubo-style)"])])
        (inputs / "complete").touch()
    nbytes = sum(os.path.getsize(f) for f in files_under(tree))
    results: dict[str, list[tuple[float, int]]] = {f"fabnode import {k}": [] for k in cars}
    results["ipfs-car unpack CARv1"] = []
    home = WORK / "car-input-home"
    for r in range(args.runs):
        for name, car in cars.items():
            shutil.rmtree(home, ignore_errors=True)
            env = {**os.environ, "FABNODE_HOME": str(home)}
            run([str(FABNODE), "init", "--name", "Bench Lab"], env=env)
            results[f"fabnode import {name}"].append(run([str(FABNODE), "import", str(car)], env=env)[:2])
        out = WORK / "car-input-unpacked"
        shutil.rmtree(out, ignore_errors=True)
        results["ipfs-car unpack CARv1"].append(
            run([str(IPFS_CAR), "unpack", str(cars["CARv1 (ipfs-car)"]), "--output", str(out)])[:2])
        shutil.rmtree(out, ignore_errors=True)
        print(f"  run {r + 1}/{args.runs}: " + ", ".join(f"{k} {v[-1][0]:.2f}s" for k, v in results.items()),
              file=sys.stderr)
    shutil.rmtree(home, ignore_errors=True)
    med = {k: statistics.median(t for t, _ in v) for k, v in results.items()}
    peak = {k: max(m for _, m in v) for k, v in results.items()}
    anchor = med["fabnode import CARv1 (ipfs-car)"]
    print(f"Machine: {machine()}\n")
    print(f"Tree: {len(files_under(tree))} files, {nbytes / 1e6:.0f} MB; " + ", ".join(
        f"{k} {c.stat().st_size / 1e6:.0f} MB" for k, c in cars.items()) + f"; {args.runs} runs, medians\n")
    print("| step | median s | MB/s of content | vs import of the CARv1 | peak RSS MB |")
    print("|---|---:|---:|---:|---:|")
    for k in results:
        print(f"| {k} | {med[k]:.2f} | {nbytes / 1e6 / med[k]:.0f} | {med[k] / anchor:.2f}x | {peak[k] / 1e6:.0f} |")
    first, later = schema_cost()
    print(f"\nOKH-LOSH schema check of examples/hand-pump/okh.toml: first call {first:.0f} ms "
          f"(import jsonschema, compile), then {later:.2f} ms per call (median of 200)")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"(benchmark took {time.perf_counter() - started:.0f} s)", file=sys.stderr)
