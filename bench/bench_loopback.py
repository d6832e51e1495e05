#!/usr/bin/env python3
"""Fetch CPU per byte on loopback (issue 14, must-have 5): fabnode against rsync, 256 MiB.

On a lab's small machine CPU, not the link, limits a fetch; over loopback the link costs
nothing, so what is left is each side's CPU per byte. One run of this script, on 127.0.0.1 only:

* a seeded tree of --size-mib (default 256) MiB: the mixed sizes of bench_add.py's generator (a
  few large files, photos and meshes) for 7/8 of the bytes, plus many small files (200 B–32 KiB,
  ~2,000 for 256 MiB) spread over folders for the rest, so per-file costs show too;
* lab A `add`s it and serves it from a running daemon; an rsync daemon on 127.0.0.1 serves the
  same folder;
* then, alternating, --runs times each, after an `os.sync()` so no step pays for the dirty
  pages of the one before:
  - **rsync**: `rsync -a rsync://127.0.0.1:PORT/tree/ OUT/` (the anchor);
  - **get --peer**: `fabnode get BUNDLE --peer A -o OUT` from a fresh home, no daemon;
  - **get via daemon**: `fabnode get BUNDLE -o OUT` through lab B's running daemon (a fresh
    home, bootstrapped to A and connected before the clock starts).
* each is timed from the command's start until it exits with the tree written; CPU seconds are
  counted on both sides: the client (the command's own rusage from wait4, children included,
  plus lab B's daemon's utime+stime over the run for the via-daemon case) and the server (lab
  A's daemon, or the rsync daemon with the children it forked and reaped, from
  /proc/PID/stat over the run). Every output is compared byte for byte with the input.

Reports medians, the ratio of each median to rsync's, and a markdown table. Goal (issue 14):
both fabnode rows ≤ 4× rsync's time. The machine is shared, so read ratios, not seconds.

With ``--baseline REV`` the two fabnode rows also run as of commit REV (unpacked with `git
archive` into bench/work and run from the same virtual environment through PYTHONPATH, with a
serving lab of its own), in the same interleaved runs: before and after side by side.

Usage:  .venv/bin/python bench/bench_loopback.py [--runs 3] [--size-mib 256] [--only peer,daemon]
                                                 [--baseline 0519a84]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_add import FABNODE, WORK, MiB, files_under, machine, make_tree, run  # noqa: E402
from bench_network import (  # noqa: E402
    CLK_TCK, Daemon, cleanup, env_for, init_home, same_tree, start_rsyncd, wait_until,
)

TOOLS = ("rsync", "get --peer", "get via daemon")


def make_mixed_tree(root: Path, total: int, seed: int) -> int:
    """bench_add's mixed sizes for 7/8 of ``total``, then small files (200 B–32 KiB) for the
    rest, at most 200 to a folder (a plain directory holds at most 1000 entries)."""
    written = make_tree(root / "big", total - total // 8, seed)
    rng = random.Random(seed + 1)
    small_total = total - written
    i = 0
    while small_total > 0:
        size = min(rng.randint(200, 32 * 1024), small_total)
        folder = root / "small" / f"set-{i // 200:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"note-{i:05d}.txt").write_bytes(rng.randbytes(size))
        small_total -= size
        written += size
        i += 1
    return written


def tree_for(size: int, seed: int) -> tuple[Path, int]:
    """The tree, made once per (size, seed) and kept in bench/work for later runs."""
    tree = WORK / f"loopback-tree-{size >> 20}m-{seed}"
    done = tree.with_name(tree.name + ".done")
    if not done.exists():
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        make_mixed_tree(tree, size, seed)
        done.write_text("")
    return tree, sum(os.path.getsize(p) for p in files_under(tree))


def cpu_of(pid: int, children: bool = False) -> float:
    """utime + stime of a live process (and, with ``children``, of the children it has reaped)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime (16, 17)
    return ticks / CLK_TCK


def live_children(pid: int) -> list[str]:
    out: list[str] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += (task / "children").read_text().split()
        except OSError:
            pass
    return out


def run_timed(cmd: list[str], env: dict | None = None) -> dict:
    """Wall seconds and CPU seconds of one command (its own and its reaped children's, from wait4)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err.decode(errors='replace')}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "out": out.decode().strip(),
            "err": err.decode(errors="replace").strip()}


def baseline_code(rev: str) -> Path:
    """fabnode's code at ``rev``, unpacked as a ``fabnode`` package: with PYTHONPATH set to the
    returned folder, the same virtual environment runs that version (the anchor for before/after)."""
    where = WORK / f"baseline-{rev}"
    if not (where / "fabnode" / "cli.py").exists():
        shutil.rmtree(where, ignore_errors=True)
        (where / "fabnode").mkdir(parents=True)
        archive = subprocess.run(["git", "archive", rev], cwd=Path(__file__).resolve().parent, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(where / "fabnode")], input=archive, check=True)
    return where


class Variant:
    """One version of fabnode under test: the working tree, or the code at a baseline commit
    (run from the same virtual environment through PYTHONPATH). Each has its own serving lab."""

    def __init__(self, label: str, pythonpath: Path | None) -> None:
        self.label = label
        self.pythonpath = pythonpath

    def env(self, home: Path) -> dict:
        env = env_for(home)
        env.pop("PYTHONPATH", None)
        if self.pythonpath is not None:
            env["PYTHONPATH"] = str(self.pythonpath)
        return env

    def daemon(self, home: Path, *args: str) -> Daemon:
        saved = os.environ.get("PYTHONPATH")
        os.environ.pop("PYTHONPATH", None)
        if self.pythonpath is not None:
            os.environ["PYTHONPATH"] = str(self.pythonpath)
        try:
            return Daemon(home, *args)
        finally:
            os.environ.pop("PYTHONPATH", None)
            if saved is not None:
                os.environ["PYTHONPATH"] = saved


def bench(tree: Path, nbytes: int, runs: int, only: set[str], base: Path, variants: list[Variant]) -> dict:
    tmp = base / "rsyncd"
    tmp.mkdir(parents=True, exist_ok=True)
    rsyncd, url = start_rsyncd(tree, tmp)
    servers: dict[str, Daemon] = {}
    bundle = ""
    for v in variants:
        lab_a = base / f"lab-a{v.label}"
        init_home(lab_a, "Lab A")
        added = json.loads(run([str(FABNODE), "add", str(tree), "--json"], env=v.env(lab_a),
                               stdout=subprocess.PIPE)[2])
        bundle = added["cid"]
        servers[v.label] = v.daemon(lab_a)
    rows: dict[str, list[dict]] = {}
    if "rsync" in only:
        rows["rsync"] = []
    for v in variants:
        for tool in TOOLS[1:]:
            if tool in only:
                rows[tool + v.label] = []
    out = base / "out"
    try:
        for r in range(runs):
            if "rsync" in rows:
                shutil.rmtree(out, ignore_errors=True)
                os.sync()
                server0 = cpu_of(rsyncd.pid, children=True)
                got = run_timed(["rsync", "-a", url, f"{out}/"])
                # the daemon's forked child ends with the connection; wait until it is reaped
                wait_until(lambda: not live_children(rsyncd.pid), 10, "the rsync daemon's child to end")
                got["server_cpu"] = cpu_of(rsyncd.pid, children=True) - server0
                got["client_cpu"] = got["cpu"]
                if not same_tree(tree, out):
                    raise RuntimeError("rsync's output differs from the input")
                rows["rsync"].append(got)
                shutil.rmtree(out)

            for v in variants:
                da = servers[v.label]
                if "get --peer" + v.label in rows:
                    lab_c = base / "lab-c"
                    init_home(lab_c, "Lab C")
                    os.sync()
                    server0 = cpu_of(da.pid)
                    got = run_timed([str(FABNODE), "get", bundle, "--peer", da.addr, "-o", str(out)], v.env(lab_c))
                    da.wait_for(f"served {bundle}", timeout=30)
                    got["server_cpu"] = cpu_of(da.pid) - server0
                    got["client_cpu"] = got["cpu"]
                    if got["out"] != str(out) or not same_tree(tree, out):
                        raise RuntimeError(f"get --peer{v.label}: output differs from the input ({got['out']!r})")
                    rows["get --peer" + v.label].append(got)
                    shutil.rmtree(out)
                    shutil.rmtree(lab_c)
                    da.lines.clear()

                if "get via daemon" + v.label in rows:
                    lab_b = base / "lab-b"
                    init_home(lab_b, "Lab B")
                    db = v.daemon(lab_b, "--bootstrap", da.addr)
                    try:
                        db.wait_for(f"peer connected: {da.peer_id}")
                        da.wait_for(f"peer connected: {db.peer_id}")
                        os.sync()
                        server0, daemon0 = cpu_of(da.pid), cpu_of(db.pid)
                        got = run_timed([str(FABNODE), "get", bundle, "-o", str(out)], v.env(lab_b))
                        db.wait_for(f"fetch finished: {bundle}", timeout=30)
                        da.wait_for(f"served {bundle}", timeout=30)
                        got["daemon_cpu"] = cpu_of(db.pid) - daemon0
                        got["server_cpu"] = cpu_of(da.pid) - server0
                        got["client_cpu"] = got["cpu"] + got["daemon_cpu"]
                    finally:
                        db.stop()
                    if got["out"] != str(out) or not same_tree(tree, out):
                        raise RuntimeError(f"get via daemon{v.label}: output differs from the input ({got['out']!r})")
                    rows["get via daemon" + v.label].append(got)
                    shutil.rmtree(out)
                    shutil.rmtree(lab_b)
                    da.lines.clear()
            print(f"  run {r + 1}/{runs}: " + ", ".join(
                f"{k} {v[-1]['wall']:.2f}s (cpu {v[-1]['client_cpu']:.2f}+{v[-1]['server_cpu']:.2f})"
                for k, v in rows.items()), file=sys.stderr, flush=True)
    finally:
        for da in servers.values():
            da.stop()
    return {"bundle": bundle, "rows": rows}


def report(res: dict, nbytes: int, files: int, runs: int) -> list[str]:
    rows = res["rows"]
    med = {k: {f: statistics.median(r[f] for r in v) for f in ("wall", "client_cpu", "server_cpu")}
           for k, v in rows.items()}
    anchor = med.get("rsync", {}).get("wall")
    lines = [f"{files} files, {nbytes / 1e6:.0f} MB (bundle {res['bundle']}), {runs} runs interleaved, "
             "every output byte-identical to the input", "",
             "| tool | median s | MB/s | time / rsync time | client CPU s | server CPU s | runs (s) |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for tool, m in med.items():
        ratio = f"{m['wall'] / anchor:.2f}" if anchor else "-"
        each = ", ".join(f"{r['wall']:.2f}" for r in rows[tool])
        lines.append(f"| {tool} | {m['wall']:.2f} | {nbytes / 1e6 / m['wall']:.0f} | {ratio} | "
                     f"{m['client_cpu']:.2f} | {m['server_cpu']:.2f} | {each} |")
    if anchor:
        lines.append("")
        for tool in med:
            if tool != "rsync":
                ratio = med[tool]["wall"] / anchor
                lines.append(f"- {tool}: {ratio:.2f}x rsync's time (goal <= 4x: {'met' if ratio <= 4 else 'NOT met'});"
                             f" per-run ratios to the rsync run beside it: " + ", ".join(
                                 f"{a['wall'] / b['wall']:.2f}" for a, b in zip(rows[tool], rows["rsync"])))
    lines.append("")
    lines.append("client CPU: the command (and for 'via daemon' lab B's daemon over the run); server CPU: "
                 "lab A's daemon, or the rsync daemon and its reaped children")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--baseline", metavar="REV",
                        help="also run fabnode as of this commit (its own serving lab), interleaved: before/after")
    parser.add_argument("--only", default=",".join(TOOLS),
                        help=f"comma-separated subset of: {', '.join(TOOLS)} (or: peer, daemon)")
    args = parser.parse_args()
    aliases = {"peer": "get --peer", "daemon": "get via daemon"}
    only = {aliases.get(t.strip(), t.strip()) for t in args.only.split(",") if t.strip()}
    unknown = only - set(TOOLS)
    if unknown:
        raise SystemExit(f"unknown tool(s): {', '.join(sorted(unknown))}")
    if shutil.which("rsync") is None and "rsync" in only:
        raise SystemExit("rsync is not installed (Debian package: rsync)")
    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    WORK.mkdir(parents=True, exist_ok=True)
    tree, nbytes = tree_for(args.size_mib * MiB, args.seed)
    files = len(files_under(tree))
    base = WORK / "loopback"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    started = time.monotonic()
    load0 = os.getloadavg()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent).stdout.strip()
    variants = [Variant("", None)]
    if args.baseline:
        variants.append(Variant(f" @{args.baseline}", baseline_code(args.baseline)))
    res = bench(tree, nbytes, args.runs, only, base, variants)
    lines = [f"Machine: {machine()}; commit {commit}", ""] + report(res, nbytes, files, args.runs)
    lines.append(f"(whole benchmark: {time.monotonic() - started:.0f} s; load average before "
                 f"{' '.join(f'{x:.2f}' for x in load0)}, after {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    print("\n".join(lines))
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
