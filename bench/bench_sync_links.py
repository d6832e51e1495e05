#!/usr/bin/env python3
"""Benchmark a sync catch-up over a poor link (issue 14, item 6).

Lab A holds N signed records (default 10,000); lab B starts empty, listens nowhere (it dials
out, as behind a NAT) and reaches A only through tests/linkshaper.py at 256 kbit/s each way with
600 ms round trips (rate 32,000 B/s, 300 ms one way). Measured, each several times:

* **no cut**: from B's start until B holds exactly A's records; bytes the link carried;
* **cut at half**: the link is reset (and refuses connections for 8 s) once B holds half; B
  redials by itself; time until done, bytes carried after the cut against the bytes of the
  records still missing then, and whether any record came twice ("already held");
* **rsync** (the anchor): `rsync -a` of one file as large as all N records, from an rsync
  daemon on 127.0.0.1 through an identical link.

Usage:  .venv/bin/python bench/bench_sync_links.py [--runs 3] [--records 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_add import machine  # noqa: E402
from conftest import Cli  # noqa: E402
from daemons import Daemon, record_count, wait_until  # noqa: E402
from linkshaper import LinkShaper  # noqa: E402
from test_links_sync import make_vouches  # noqa: E402
from test_sync import digest  # noqa: E402

RATE, DELAY, DOWN = 32_000, 0.3, 8.0
WORK = ROOT / "bench" / "work" / "sync_links"


def fresh_lab(path: Path, name: str, nat: bool) -> Cli:
    shutil.rmtree(path, ignore_errors=True)
    lab = Cli(path)
    lab.run("init", "--name", name)
    if nat:
        with open(path / "config.toml", "a") as f:
            f.write("listen = []\n[limits]\nstranger_records_per_author_per_hour = 1000000\n"
                    "stranger_storage_mib = 1000\n")
    return lab


def one_sync(a: Cli, da: Daemon, n: int, size: int, cut: bool) -> dict:
    b = fresh_lab(WORK / "b", "Lab B", nat=True)
    want = digest(a.home)
    with LinkShaper(da.port, rate=RATE, delay=DELAY) as link:
        start = time.monotonic()
        db = Daemon(b, "--bootstrap", f"/ip4/127.0.0.1/tcp/{link.port}/p2p/{da.peer_id}", listen=None)
        try:
            row: dict = {}
            if cut:
                wait_until(lambda: record_count(b.home) >= n // 2, timeout=900, what="half the records")
                link.cut(down=DOWN)
                row["carried_before_cut"] = link.total
                db.wait_for("interrupted", timeout=60)
                held = record_count(b.home)
                row["held_at_cut"] = held
                row["missing_bytes_at_cut"] = round((n - held) * size / n)
            wait_until(lambda: digest(b.home) == want, timeout=1800, what="the catch-up")
            row["wall_s"] = time.monotonic() - start
            line = db.wait_for("synced with", timeout=60)
            row["line"] = line
            took = re.search(r", ([\d.]+) s\b", line)
            row["reported_s"] = float(took[1]) if took else None
            row["carried"] = link.total
            if cut:
                row["carried_after_cut"] = link.total - row["carried_before_cut"]
                row["already_held"] = "already held" in line
                assert row["carried_after_cut"] >= row["missing_bytes_at_cut"], "the records went around the link"
            assert link.carried["down"] >= size, "the records went around the link"
            return row
        finally:
            db.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rsync_anchor(size: int, runs: int) -> list[float]:
    tree = WORK / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    (tree / "records.bin").write_bytes(os.urandom(size))
    port = free_port()
    conf = WORK / "rsyncd.conf"
    conf.write_text(f"use chroot = no\nuid = {os.getuid()}\ngid = {os.getgid()}\nlog file = {WORK / 'rsyncd.log'}\n"
                    f"[tree]\n    path = {tree}\n    read only = yes\n")
    proc = subprocess.Popen(["rsync", "--daemon", "--no-detach", f"--config={conf}", f"--port={port}",
                             "--address=127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    times = []
    try:
        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_until(listening, 10, "rsyncd")
        for _ in range(runs):
            out = WORK / "rsync-out"
            shutil.rmtree(out, ignore_errors=True)
            with LinkShaper(port, rate=RATE, delay=DELAY) as link:
                start = time.monotonic()
                subprocess.run(["rsync", "-a", f"rsync://127.0.0.1:{link.port}/tree/", f"{out}/"], check=True)
                times.append(time.monotonic() - start)
                assert link.total >= size
            assert (out / "records.bin").read_bytes() == (tree / "records.bin").read_bytes()
    finally:
        proc.terminate()
        proc.wait(10)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--records", type=int, default=10_000)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    a = fresh_lab(WORK / "a", "Lab A", nat=False)
    size = make_vouches(a.home, args.records)
    print(f"{args.records} records, {size} bytes; link {RATE} B/s each way, {DELAY * 2000:.0f} ms round trips")
    da = Daemon(a)
    results: dict[str, list] = {"no cut": [], "cut at half": []}
    try:
        for _ in range(args.runs):
            for name in results:
                row = one_sync(a, da, args.records, size, cut=name != "no cut")
                print(name, json.dumps({k: (round(v, 1) if isinstance(v, float) else v) for k, v in row.items()}),
                      flush=True)
                results[name].append(row)
    finally:
        da.stop()
    rsync = rsync_anchor(size, args.runs)
    print("rsync", [round(t, 1) for t in rsync])
    anchor = statistics.median(rsync)
    print(f"\n{machine()}\n")
    print("| run | time (median) | vs rsync | bytes carried | after the cut | missing at the cut | resent |")
    print("|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        t = statistics.median(r["wall_s"] for r in rows)
        carried = statistics.median(r["carried"] for r in rows)
        after = statistics.median(r["carried_after_cut"] for r in rows) if name != "no cut" else None
        missing = statistics.median(r["missing_bytes_at_cut"] for r in rows) if name != "no cut" else None
        resent = any(r.get("already_held") for r in rows)
        each = ", ".join(f"{r['wall_s']:.1f}" for r in rows)
        print(f"| {name} | {t:.1f} s (runs: {each}) | {t / anchor:.2f}x | "
              f"{carried:,.0f} | {'' if after is None else f'{after:,.0f}'} | "
              f"{'' if missing is None else f'{missing:,.0f}'} | {'yes' if resent else 'no'} |")
    each = ", ".join(f"{t:.1f}" for t in rsync)
    print(f"| rsync, one {size:,}-byte file | {anchor:.1f} s (runs: {each}) | 1.00x | | | | |")


if __name__ == "__main__":
    main()
