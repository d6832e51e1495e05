#!/usr/bin/env python3
"""Benchmark `fabnode add` against its anchors on the same files, in one run.

Anchors: `sha256sum` and `openssl dgst -sha256` (reading and hashing every byte: the hashing
limit) and `ipfs-car pack` (the reference UnixFS packer, writing a CAR). Two inputs: a ~1 GiB
tree of mixed file sizes, and one 1 GiB + 1 byte file (1025 chunks: a two-level tree). Each tool
runs --runs times, interleaved, on a warm page cache; we report medians, throughput, ratios and
peak resident memory (from wait4). `fabnode add` is timed as the operator runs it; a second
figure adds the deferred WAL checkpoint that makes the data durable in the main database file.

Usage:  make bench      (or: .venv/bin/python bench/bench_add.py --runs 3 --size-mib 1024)
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "work"
FABNODE = Path(sys.executable).parent / "fabnode"
IPFS_CAR = ROOT / "test-tools" / "node_modules" / ".bin" / "ipfs-car"
MiB = 1 << 20


def run(cmd: list[str] | str, *, env=None, shell=False, stdout=subprocess.DEVNULL) -> tuple[float, int, bytes]:
    """(wall seconds, peak RSS in bytes of the process tree, stdout)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, shell=shell, stdout=stdout, stderr=subprocess.PIPE)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed: {proc.stderr.read().decode()}")
    return elapsed, usage.ru_maxrss * 1024, out


def make_tree(root: Path, total: int, seed: int) -> int:
    """Mixed sizes as a design repository has them: many small text/CAD files, some photos and
    meshes of a few MiB, a few large scans or videos. Returns the byte count."""
    rng = random.Random(seed)
    written = 0
    i = 0
    while written < total:
        kind = rng.random()
        if kind < 0.80:
            size = rng.randint(200, 64 * 1024)
        elif kind < 0.97:
            size = rng.randint(256 * 1024, 8 * MiB)
        else:
            size = rng.randint(32 * MiB, 160 * MiB)
        size = min(size, total - written)
        folder = root / f"part-{i % 17:02d}" / f"rev-{(i // 17) % 23:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"file-{i:05d}.bin", "wb") as f:
            left = size
            while left:
                n = min(left, 4 * MiB)
                f.write(rng.randbytes(n))
                left -= n
        written += size
        i += 1
    return written


def make_file(path: Path, size: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 * MiB)
            f.write(rng.randbytes(n))
            left -= n


def files_under(path: Path) -> list[str]:
    if path.is_file():
        return [str(path)]
    return sorted(str(p) for p in path.rglob("*") if p.is_file())


def bench_input(name: str, path: Path, nbytes: int, runs: int, is_file: bool) -> dict:
    listing = WORK / f"{name.replace(' ', '-')}.files"
    listing.write_text("\0".join(files_under(path)))
    results: dict[str, list[tuple[float, int]]] = {k: [] for k in
                                                    ("sha256sum", "openssl", "ipfs-car", "fabnode add", "until commit",
                                                     "checkpoint (fsync, copy, fsync)")}
    cids = set()
    for r in range(runs):
        results["sha256sum"].append(run(f"xargs -0 sha256sum < '{listing}'", shell=True)[:2])
        results["openssl"].append(run(f"xargs -0 openssl dgst -sha256 < '{listing}'", shell=True)[:2])
        car = WORK / "out.car"
        args = [str(IPFS_CAR), "pack", str(path), "--output", str(car)]
        if is_file:
            args.insert(3, "--no-wrap")
        t, rss, out = run(args, stdout=subprocess.PIPE)
        results["ipfs-car"].append((t, rss))
        cids.add(("ipfs-car", out.decode().strip()))
        car.unlink()
        home = WORK / "home"
        shutil.rmtree(home, ignore_errors=True)
        env = {**os.environ, "FABNODE_HOME": str(home)}
        run([str(FABNODE), "init"], env=env)
        t, rss, out = run([str(FABNODE), "add", str(path)], env=env, stdout=subprocess.PIPE)
        results["fabnode add"].append((t, rss))
        cids.add(("fabnode", out.decode().strip()))
        # The same add in-process, split into its phases (fresh home again).
        shutil.rmtree(home)
        run([str(FABNODE), "init"], env=env)
        _, _, out = run([sys.executable, str(ROOT / "bench" / "add_phases.py"), str(path)], env=env,
                        stdout=subprocess.PIPE)
        commit, close, cid = out.decode().split()
        cids.add(("phases", cid))
        results["until commit"].append((float(commit), 0))
        results["checkpoint (fsync, copy, fsync)"].append((float(close), 0))
        print(f"  {name} run {r + 1}/{runs}: " + ", ".join(f"{k} {v[-1][0]:.2f}s" for k, v in results.items()),
              file=sys.stderr)
    shutil.rmtree(WORK / "home", ignore_errors=True)
    if len({cid for _, cid in cids}) != 1:
        raise SystemExit(f"CID mismatch on {name}: {sorted(cids)}")
    med = {k: statistics.median(t for t, _ in v) for k, v in results.items()}
    peak = {k: max(m for _, m in v) for k, v in results.items()}
    return {"name": name, "bytes": nbytes, "files": len(files_under(path)), "median": med, "peak": peak,
            "cid": cids.pop()[1], "runs": runs}


def help_latency(runs: int = 15) -> tuple[float, float]:
    fab = statistics.median(run([str(FABNODE), "--help"])[0] for _ in range(runs))
    bare = statistics.median(run([sys.executable, "-c", "pass"])[0] for _ in range(runs))
    return fab, bare


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    disk = subprocess.run(["df", "-h", str(WORK)], capture_output=True, text=True).stdout.splitlines()[-1].split()[0]
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, data on {disk}")


def report(rows: list[dict], help_times: tuple[float, float]) -> str:
    out = [f"Machine: {machine()}", ""]
    out.append("| input | tool | median s | MB/s | peak RSS MB | time / fabnode add time |")
    out.append("|---|---|---:|---:|---:|---|")
    for row in rows:
        mb = row["bytes"] / 1e6
        fab = row["median"]["fabnode add"]
        for tool in ("fabnode add", "until commit", "checkpoint (fsync, copy, fsync)", "sha256sum", "openssl", "ipfs-car"):
            t, rss = row["median"][tool], row["peak"][tool]
            ratio = f"{t / fab:.2f}"
            if tool in ("until commit", "checkpoint (fsync, copy, fsync)"):
                tool = f"  ↳ add phase: {tool}"
                rss = None
            label = f"{row['name']} ({row['files']} files, {mb:.0f} MB)"
            rss_text = "" if rss is None else f"{rss / 1e6:.0f}"
            out.append(f"| {label} | {tool} | {t:.2f} | {mb / t:.0f} | {rss_text} | {ratio} |")
    out.append("")
    for row in rows:
        m = row["median"]
        out.append(f"- {row['name']}: add vs ipfs-car pack: {m['ipfs-car'] / m['fabnode add']:.2f}x faster "
                   f"(goal >= 2x); add throughput / sha256sum throughput: {m['sha256sum'] / m['fabnode add']:.2f} "
                   f"(goal >= 0.5); until commit (before the fsyncs that ipfs-car never does): "
                   f"{m['ipfs-car'] / m['until commit']:.2f}x faster than ipfs-car, "
                   f"{m['sha256sum'] / m['until commit']:.2f}x sha256sum's throughput; "
                   f"peak RSS {row['peak']['fabnode add'] / 1e6:.0f} MB (goal < 200 MB); same root CID {row['cid']}")
    out.append(f"- `fabnode --help`: median {help_times[0] * 1000:.0f} ms (bare `python -c pass`: "
               f"{help_times[1] * 1000:.0f} ms; goal well under 300 ms)")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    if not IPFS_CAR.exists():
        raise SystemExit("ipfs-car is missing: run `make tools` first")
    WORK.mkdir(parents=True, exist_ok=True)
    total = args.size_mib * MiB
    inputs = WORK / f"inputs-{args.size_mib}MiB"
    tree, big = inputs / "tree", inputs / "one-file.bin"
    marker = inputs / "complete"
    if not marker.exists():
        print("generating inputs (seeded)…", file=sys.stderr)
        shutil.rmtree(inputs, ignore_errors=True)
        make_tree(tree, total, seed=2026)
        make_file(big, total + 1, seed=7)
        marker.touch()
    rows = [
        bench_input("mixed tree", tree, sum(os.path.getsize(f) for f in files_under(tree)), args.runs, False),
        bench_input("one file", big, big.stat().st_size, args.runs, True),
    ]
    print(report(rows, help_latency()))


if __name__ == "__main__":
    main()
