#!/usr/bin/env python3
"""Benchmark the block store's data path (issue 20) against its anchors, side by side in one run.

On the ~1 GiB mixed tree of bench/bench_add.py: `dd conv=fsync` of the same bytes (the floor of
a durable write) and `ipfs-car pack` against `fabnode add`; `ipfs-car unpack` against `fabnode
import` (full verification) of the same plain CAR; `fabnode export --bundle` and `fabnode fsck`
as throughput. Each runs --runs times, interleaved; we report medians of wall time, CPU seconds
(user + system), peak resident memory and bytes written to the disk, all from wait4 (its
``ru_oublock`` is the kernel's per-process ``write_bytes`` counter of /proc/PID/io, in 512-byte
units, read after the process has ended), and the load average (the machine is shared: ratios
under load are noisy). fabnode's bytecode is compiled first, as an installed fabnode has it.

Usage:  .venv/bin/python bench/bench_store.py --runs 3 --size-mib 1024
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
from bench_add import IPFS_CAR, WORK, files_under, machine, make_tree  # noqa: E402

FABNODE = Path(sys.executable).parent / "fabnode"
MiB = 1 << 20


def run(cmd: list[str] | str, *, env=None, shell=False) -> dict:
    """Wall seconds, CPU seconds, peak RSS and bytes written of one command (its whole tree)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, shell=shell, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd} failed: {proc.stderr.read().decode()}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss * 1024,
            "written": usage.ru_oublock * 512, "out": out.decode().strip()}


def fresh_home(name: str) -> dict:
    home = WORK / name
    shutil.rmtree(home, ignore_errors=True)
    env = {**os.environ, "FABNODE_HOME": str(home)}
    run([str(FABNODE), "init"], env=env)
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    # An installed fabnode has its bytecode compiled (pip does it); a checkout run with
    # PYTHONDONTWRITEBYTECODE=1 (as on the shared machine) would compile ~0.2 s of source in every
    # timed command. Compile once here, so the commands are timed as a user runs them.
    package = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-x", r"/(\.venv|bench/work|test-tools|tests)/",
                    str(package)], check=True, stdout=subprocess.DEVNULL)
    loads = [os.getloadavg()[0]]
    tree = WORK / f"store-tree-{args.size_mib}"
    if not tree.exists():
        make_tree(tree, args.size_mib * MiB, seed=20261127)
    files = files_under(tree)
    nbytes = sum(os.path.getsize(f) for f in files)
    flat = WORK / "store-tree.cat"  # the same bytes in one file, for dd
    if not flat.exists() or flat.stat().st_size != nbytes:
        with open(flat, "wb") as out:
            for f in files:
                with open(f, "rb") as src:
                    shutil.copyfileobj(src, out, 4 * MiB)
    results: dict[str, list[dict]] = {k: [] for k in ("dd conv=fsync", "ipfs-car pack", "fabnode add",
                                                       "ipfs-car unpack", "fabnode import", "fabnode export",
                                                       "fabnode fsck")}
    car_bytes = 0
    for r in range(args.runs):
        results["dd conv=fsync"].append(run(["dd", f"if={flat}", f"of={WORK / 'dd.out'}", "bs=4M", "conv=fsync",
                                             "status=none"]))
        (WORK / "dd.out").unlink()
        car = WORK / "ipfs-car.car"
        results["ipfs-car pack"].append(run([str(IPFS_CAR), "pack", str(tree), "--output", str(car)]))
        car.unlink()
        env = fresh_home("store-home")
        results["fabnode add"].append(add := run([str(FABNODE), "add", str(tree)], env=env))
        cid = add["out"]
        bundle = WORK / "bundle.car"
        bundle.unlink(missing_ok=True)
        results["fabnode export"].append(run([str(FABNODE), "export", "--bundle", cid, str(bundle)], env=env))
        car_bytes = bundle.stat().st_size
        results["fabnode fsck"].append(run([str(FABNODE), "fsck"], env=env))
        unpacked = WORK / "unpacked"
        shutil.rmtree(unpacked, ignore_errors=True)
        results["ipfs-car unpack"].append(run([str(IPFS_CAR), "unpack", str(bundle), "--output", str(unpacked)]))
        shutil.rmtree(unpacked)
        env2 = fresh_home("store-import")
        results["fabnode import"].append(run([str(FABNODE), "import", str(bundle)], env=env2))
        loads.append(os.getloadavg()[0])
        print(f"  run {r + 1}/{args.runs}: " + ", ".join(f"{k} {v[-1]['wall']:.2f}s" for k, v in results.items())
              + f"; add/dd {results['fabnode add'][-1]['wall'] / results['dd conv=fsync'][-1]['wall']:.2f}"
              + f"; load {loads[-1]:.1f}", file=sys.stderr)
    for name in ("store-home", "store-import"):
        shutil.rmtree(WORK / name, ignore_errors=True)
    (WORK / "bundle.car").unlink(missing_ok=True)

    def med(name: str, key: str) -> float:
        return statistics.median(x[key] for x in results[name])

    data_for = {"fabnode export": car_bytes, "ipfs-car unpack": car_bytes, "fabnode import": car_bytes}
    lines = [f"Machine: {machine()}; commit {subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()}.",
             f"Input: {nbytes / MiB:.0f} MiB in {len(files)} files (bench_add.py's mixed tree); its bundle CAR "
             f"{car_bytes / MiB:.0f} MiB. Medians of {args.runs} interleaved runs; 1-minute load average "
             f"{min(loads):.1f}-{max(loads):.1f} (2 cores).", "",
             "| step | wall s | MB/s | CPU s | peak RSS MiB | written MiB (x data) |", "|---|---|---|---|---|---|"]
    for name in results:
        data = data_for.get(name, nbytes)
        wall, written = med(name, "wall"), med(name, "written")
        lines.append(f"| {name} | {wall:.2f} | {data / wall / 1e6:.0f} | {med(name, 'cpu'):.2f} | "
                     f"{max(x['rss'] for x in results[name]) / MiB:.0f} | {written / MiB:.0f} ({written / data:.2f}) |")
    add = med("fabnode add", "wall")
    per_run = [a["wall"] / d["wall"] for a, d in zip(results["fabnode add"], results["dd conv=fsync"])]
    lines += ["", f"Ratios: add / dd conv=fsync = {add / med('dd conv=fsync', 'wall'):.2f} (goal <= 1.3; per run "
              f"{', '.join(f'{x:.2f}' for x in per_run)}); "
              f"add / ipfs-car pack = {add / med('ipfs-car pack', 'wall'):.2f} (goal <= 0.7); "
              f"import / ipfs-car unpack = {med('fabnode import', 'wall') / med('ipfs-car unpack', 'wall'):.2f} "
              f"(goal <= 1.0); export {car_bytes / med('fabnode export', 'wall') / 1e6:.0f} MB/s (goal >= 300); "
              f"fsck {nbytes / med('fabnode fsck', 'wall') / 1e6:.0f} MB/s (goal >= 500)."]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
