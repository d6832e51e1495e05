#!/usr/bin/env python3
"""Benchmark adding a 20,000-entry folder (a HAMT) and looking one name up in it (issue 16).

Three tools add the same folder of tiny files, each as a separate process, interleaved, --runs
times: `fabnode add` (into a fresh home each run, the operator's command), Helia's @helia/unixfs
addAll at its defaults (test-tools/helia-add.mjs, Node 24, in-memory blockstore) and `ipfs-car
pack` (writing a CAR). All three hash every file and build the directory; fabnode also commits
to SQLite. Reported: medians, ratios to fabnode, and the root CIDs (fabnode's must be Helia's).

Then name lookup: `fabnode ls ROOT/NAME` (one name, descending only its shards) against `fabnode
ls ROOT` (the whole listing), as commands, and the same two in-process (`lookup` against
`directory_entries` over the store), medians over several names.

Usage:  .venv/bin/python bench/bench_hamt.py --runs 3 --entries 20000
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "work" / "hamt"
FABNODE = Path(sys.executable).parent / "fabnode"
NODE24 = ROOT / "test-tools" / "node_modules" / ".bin" / "node"
IPFS_CAR = ROOT / "test-tools" / "node_modules" / ".bin" / "ipfs-car"


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(cmd, env=env, capture_output=True, check=True)
    return time.perf_counter() - start, result.stdout.decode().strip()


def env_for(home: Path) -> dict:
    return {**os.environ, "FABNODE_HOME": str(home)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--entries", type=int, default=20000)
    parser.add_argument("--lookups", type=int, default=9)
    args = parser.parse_args()

    shutil.rmtree(WORK, ignore_errors=True)
    folder = WORK / "folder"
    folder.mkdir(parents=True)
    for i in range(args.entries):
        (folder / f"part-{i}.stl").write_bytes(b"%d\n" % i)

    times: dict[str, list[float]] = {"fabnode add": [], "Helia addAll": [], "ipfs-car pack": []}
    cids: dict[str, set[str]] = {name: set() for name in times}
    for run in range(args.runs):
        home = WORK / f"home-{run}"
        subprocess.run([str(FABNODE), "init"], env=env_for(home), capture_output=True, check=True)
        t, cid = timed([str(FABNODE), "add", str(folder)], env_for(home))
        times["fabnode add"].append(t)
        cids["fabnode add"].add(cid)
        t, cid = timed([str(NODE24), str(ROOT / "test-tools" / "helia-add.mjs"), str(folder)])
        times["Helia addAll"].append(t)
        cids["Helia addAll"].add(cid)
        t, cid = timed([str(IPFS_CAR), "pack", str(folder), "--output", str(WORK / "pack.car")])
        times["ipfs-car pack"].append(t)
        cids["ipfs-car pack"].add(cid)

    base = statistics.median(times["fabnode add"])
    print(f"add of a {args.entries}-entry folder, {args.runs} runs each, interleaved")
    print("| tool | median s | runs s | vs fabnode | root CID |")
    print("|---|---:|---|---:|---|")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.2f} | {', '.join(f'{v:.2f}' for v in values)} | {med / base:.2f}x | "
              f"{', '.join(sorted(cids[name]))} |")
    assert cids["fabnode add"] == cids["Helia addAll"], "fabnode's CID must be Helia's"

    home = WORK / "home-0"
    root = next(iter(cids["fabnode add"]))
    names = [f"part-{(i * 7919) % args.entries}.stl" for i in range(args.lookups)]
    one = [timed([str(FABNODE), "ls", f"{root}/{n}"], env_for(home))[0] for n in names]
    whole = [timed([str(FABNODE), "ls", root], env_for(home))[0] for _ in range(3)]
    floor = [timed([str(FABNODE), "--version"])[0] for _ in range(3)]

    from fabnode.node.home import Home
    from fabnode.protocol.cid import parse_cid
    from fabnode.protocol.unixfs import decode, directory_entries, lookup

    cid = parse_cid(root)
    store = Home(home).open_store()
    if True:  # the store's connection closes with the process
        reads = []

        def get(c: bytes) -> bytes:
            reads.append(c)
            return store.get(c)

        in_lookup, blocks_read = [], []
        for n in names:
            reads.clear()
            start = time.perf_counter()
            node = decode(cid, get(cid))
            found, _ = lookup(get, cid, node, n)
            in_lookup.append(time.perf_counter() - start)
            blocks_read.append(len(reads))
            assert found is not None
        in_list = []
        for _ in range(3):
            reads.clear()
            start = time.perf_counter()
            entries = directory_entries(get, cid)
            in_list.append(time.perf_counter() - start)
        assert len(entries) == args.entries
        whole_blocks = len(reads)

    print()
    print(f"lookup in the {args.entries}-entry HAMT {root}")
    print("| what | median ms | blocks read |")
    print("|---|---:|---:|")
    print(f"| `fabnode ls ROOT/NAME` (command, {len(names)} names) | {statistics.median(one) * 1000:.0f} | |")
    print(f"| `fabnode ls ROOT` (command, whole listing) | {statistics.median(whole) * 1000:.0f} | |")
    print(f"| `fabnode --version` (process floor) | {statistics.median(floor) * 1000:.0f} | |")
    print(f"| `lookup` in-process | {statistics.median(in_lookup) * 1000:.2f} | "
          f"{min(blocks_read)}-{max(blocks_read)} |")
    print(f"| `directory_entries` in-process | {statistics.median(in_list) * 1000:.1f} | {whole_blocks} |")
    print()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
