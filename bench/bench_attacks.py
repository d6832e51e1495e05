"""The node under attack (issue 12): each attack of tests/attacker.py against a real daemon on
127.0.0.1, while an honest client keeps asking. Reports, per attack (median of RUNS runs): the
daemon's RSS at idle and its peak during the attack (VmHWM), the slowest honest web page, and an
honest `get --peer` of a 3 MiB bundle during the attack against the same without attack.

Run: .venv/bin/python bench/bench_attacks.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from daemons import Daemon, make_labs  # noqa: E402

ATTACKER = ROOT / "tests" / "attacker.py"
ATTACKS = [("none", []), ("16 hogged fetch slots", ["hog-fetch", "{addr}", "4", "4"]),
           ("sync rounds flood", ["sync-rounds", "{addr}"]), ("4 MiB junk sync frame", ["sync-junk", "{addr}"]),
           ("60 stalled sync streams", ["sync-streams", "{addr}", "60"])]


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def one_run(name: str, argv: list[str], base: Path) -> dict:
    a, b = make_labs(base, 2)
    design = base / "design"
    design.mkdir()
    (design / "part.bin").write_bytes(random.Random(5).randbytes(3 << 20))
    bundle = a.out("add", str(design))
    server = Daemon(a)
    http = "http://" + json.loads((a.home / "daemon.json").read_text())["http"]
    idle = status_kb(server.proc.pid, "VmRSS")
    attacker = None
    if argv:
        attacker = subprocess.Popen([sys.executable, str(ATTACKER), *[x.format(addr=server.addr) for x in argv]],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        attacker.stdout.readline()
    pages = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # five seconds of honest page loads during the attack
        start = time.monotonic()
        with urllib.request.urlopen(http + "/", timeout=30) as response:
            response.read()
        pages.append(time.monotonic() - start)
    start = time.monotonic()
    b.run("get", bundle, "--peer", server.addr, "-o", str(base / "out"), timeout=120)
    got = time.monotonic() - start
    peak = status_kb(server.proc.pid, "VmHWM")
    if attacker:
        attacker.stdin.close()
        attacker.wait(timeout=20)
    server.stop()
    return {"idle_mb": idle / 1024, "peak_mb": peak / 1024, "page_max_ms": max(pages) * 1000, "get_s": got,
            "alive": True}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for name, argv in ATTACKS:
        results = []
        for _ in range(args.runs):
            base = Path(tempfile.mkdtemp(prefix="fabnode-attack-"))
            try:
                results.append(one_run(name, argv, base))
            finally:
                shutil.rmtree(base, ignore_errors=True)
        rows.append((name, {k: statistics.median(r[k] for r in results) for k in ("idle_mb", "peak_mb",
                                                                                   "page_max_ms", "get_s")}))
    baseline = rows[0][1]["get_s"]
    print("| attack | RSS idle | peak RSS | peak − idle | slowest page | honest get (3 MiB) | × no attack |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['idle_mb']:.0f} MB | {r['peak_mb']:.0f} MB | {r['peak_mb'] - r['idle_mb']:.0f} MB | "
              f"{r['page_max_ms']:.0f} ms | {r['get_s']:.2f} s | {r['get_s'] / baseline:.1f}x |")


if __name__ == "__main__":
    main()
