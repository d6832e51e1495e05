#!/usr/bin/env python3
"""Benchmark the gateway's ZIP download against its CAR and `fabnode get` (issue 15).

A design of `--mib` MiB (random, so nothing compresses: eight large files, a hundred small ones
in nested folders, an empty file) is added to a fresh home; a real `fabnode run` serves it on
127.0.0.1. For each of `?format=zip`, `?format=car` and `fabnode get` (to a temporary folder),
the wall time and MiB/s of the best of `--runs`, and the daemon's peak RSS (VmHWM) before and
after the downloads: the ZIP is written while the DAG is walked, so its memory must not grow
with the design.

Usage:  .venv/bin/python bench/bench_zip.py [--mib 256] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_add import FABNODE, WORK, machine  # noqa: E402

MiB = 1 << 20


def make_design(folder: Path, mib: int) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    rng = random.Random(15)
    big = (mib * MiB - 100 * 4096) // 8
    for i in range(8):
        path = folder / "cad" / f"part-{i}.step"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            left = big
            while left:
                n = min(left, 4 * MiB)
                f.write(rng.randbytes(n))
                left -= n
    for i in range(100):
        path = folder / "docs" / f"section-{i // 10}" / f"step-{i}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(4096))
    (folder / "empty.txt").write_bytes(b"")


def peak_rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def download(url: str) -> int:
    total = 0
    with urllib.request.urlopen(url, timeout=300) as r:
        while chunk := r.read(1 << 20):
            total += len(chunk)
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    home, folder = WORK / "zip-home", WORK / "zip-design"
    shutil.rmtree(home, ignore_errors=True)
    make_design(folder, args.mib)
    env = {**os.environ, "FABNODE_HOME": str(home)}
    subprocess.run([str(FABNODE), "init", "--name", "Bench Lab"], env=env, check=True, capture_output=True)
    bundle = json.loads(subprocess.run([str(FABNODE), "add", str(folder), "--json"], env=env, check=True,
                                       capture_output=True).stdout)["cid"]
    proc = subprocess.Popen([str(FABNODE), "run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--http",
                             "127.0.0.1:0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    results: dict[str, tuple[float, int]] = {}
    try:
        deadline = time.monotonic() + 60
        while "web interface on" not in proc.stdout.readline():
            assert time.monotonic() < deadline, "daemon did not start"
        base = "http://" + json.loads((home / "daemon.json").read_text())["http"]
        idle_rss = peak_rss_mib(proc.pid)
        for name, url in (("zip", f"{base}/ipfs/{bundle}?format=zip"), ("car", f"{base}/ipfs/{bundle}?format=car")):
            best = None
            for _ in range(args.runs):
                t = time.perf_counter()
                size = download(url)
                took = time.perf_counter() - t
                best = took if best is None or took < best else best
            results[name] = (best, size)
        after_rss = peak_rss_mib(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    best = None
    for _ in range(args.runs):
        out = WORK / "zip-get"
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        subprocess.run([str(FABNODE), "get", bundle, "-o", str(out)], env=env, check=True, capture_output=True)
        took = time.perf_counter() - t
        best = took if best is None or took < best else best
    results["fabnode get"] = (best, sum(p.stat().st_size for p in out.rglob("*") if p.is_file()))
    shutil.rmtree(out, ignore_errors=True)

    print(f"Machine: {machine()}\n")
    print(f"A design of {args.mib} MiB of random bytes (8 large files, 100 small ones in 10 folders, an empty "
          f"file); best of {args.runs}.\n")
    print("| download | bytes | seconds | MiB/s |")
    print("|---|---:|---:|---:|")
    for name, (took, size) in results.items():
        print(f"| {name} | {size:,} | {took:.2f} | {size / MiB / took:.0f} |")
    print(f"\n- daemon peak RSS: {idle_rss:.0f} MiB before the downloads, {after_rss:.0f} MiB after them")


if __name__ == "__main__":
    main()
