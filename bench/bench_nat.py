#!/usr/bin/env python3
"""Benchmark a 16 MiB fetch between labs behind NAT (issue 21): hole-punched, relayed, direct.

Root only: it builds tests/nattopo.py's network namespaces (a public segment with a hub, labs A
and B each behind its own masquerading NAT that drops unsolicited SYNs, and a public node P).
Real `fabnode run` daemons run inside them, and B's `fabnode get` (run inside lab-b) is timed
from its start to the design written, then compared byte for byte with the original.

Modes, each with its own fresh hub and holder, and a fresh B for every run:

- **punched**: A (behind NAT) holds the design; A and B run DCUtR. B first gets a 1 KiB bundle
  from A (over the hub's relay), waits until `status` shows the link to A hole-punched, then
  the timed 16 MiB get runs over that direct connection.
- **relay**: the same with ``hole_punching = false`` on A and B: the 16 MiB cross the hub's relay.
- **direct**: the anchor: P (public, 198.18.0.4) holds the design; B dials it directly.

The hub relays without its bandwidth cap here (``limits.relay_bytes_per_second = 0``), to
measure the relay itself; with the default cap (4 MiB/s) a 16 MiB relayed fetch takes ≥ 4 s.
"Bytes through the hub" are the hub's public interface's rx+tx bytes during the timed get
(/sys/class/net/wan/statistics), so they include the hub's own DHT and sync traffic.

Usage:  sudo .venv/bin/python bench/bench_nat.py [--runs 3] [--mib 16]
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from conftest import Cli, write_random_file  # noqa: E402
from daemons import Daemon, wait_until  # noqa: E402
from nattopo import HUB_IP, LAB_A_IP, LAB_B_IP, PUB_IP, NatTopology, why_unavailable  # noqa: E402


def home(topo, role: str, path: Path, name: str, config: str) -> Cli:
    cli = Cli(path, prefix=topo.prefix(role))
    cli.run("init", "--name", name)
    with open(path / "config.toml", "a") as f:
        f.write(config)
    return cli


def run_mode(mode: str, topo: NatTopology, base: Path, mib: int, runs: int) -> list[tuple[float, int]]:
    punch = "true" if mode == "punched" else "false"
    work = base / mode
    hub = home(topo, "hub", work / "hub", "Hub", "[limits]\nrelay_bytes_per_second = 0\nrelay_circuit_mib = 1024\n"
                                                 "relay_peer_mib_per_hour = 4096\n")
    holder_role, holder_ip = ("pub", PUB_IP) if mode == "direct" else ("lab-a", LAB_A_IP)
    holder = home(topo, holder_role, work / "holder", "Holder", f"hole_punching = {punch}\n")
    daemons = []
    results = []
    try:
        dh = Daemon(hub, listen=f"/ip4/{HUB_IP}/tcp/4001", prefix=topo.prefix("hub"))
        daemons.append(dh)
        dholder = Daemon(holder, "--bootstrap", dh.addr, listen=f"/ip4/{holder_ip}/tcp/4001",
                         prefix=topo.prefix(holder_role))
        daemons.append(dholder)
        big = write_random_file(work / "design" / "body.bin", mib << 20, seed=21)
        (work / "small").mkdir(parents=True)
        (work / "small" / "note.txt").write_bytes(b"x" * 1024)
        small = holder.out("add", str(work / "small"))
        dholder.wait_for("as provider in the DHT", timeout=60)
        bundle = holder.out("add", str(big.parent))
        dholder.wait_for("as provider in the DHT", timeout=60)
        if mode != "direct":
            wait_until(lambda: dholder.said("relay: reachable through relay"), timeout=60, what="a relay slot")
        for run in range(runs):
            b = home(topo, "lab-b", work / f"b{run}", f"B{run}", f"hole_punching = {punch}\n")
            db = Daemon(b, "--bootstrap", dh.addr, listen=f"/ip4/{LAB_B_IP}/tcp/4001", prefix=topo.prefix("lab-b"))
            daemons.append(db)
            db.wait_for(f"peer connected: {dh.peer_id}", timeout=60)
            if mode == "punched":
                b.out("get", small, "-o", str(work / f"small-out{run}"), "--timeout", "60")
                wait_until(lambda: b.json("status")["nat"]["links"].get(dholder.peer_id) == "hole-punched",
                           timeout=60, what="a hole-punched link")
            out = work / f"out{run}"
            before = topo.wan_bytes("hub")
            start = time.perf_counter()
            b.out("get", bundle, "-o", str(out), "--timeout", "300")
            took = time.perf_counter() - start
            crossed = topo.wan_bytes("hub") - before
            if filecmp.cmp(big, out / "body.bin", shallow=False) is not True:
                raise SystemExit(f"{mode} run {run}: the design differs")
            link = b.json("status")["nat"]["links"].get(dholder.peer_id)
            print(f"{mode} run {run}: {took:.2f} s, {crossed / 2**20:.2f} MiB through the hub, link {link}",
                  flush=True)
            results.append((took, crossed))
            db.stop()
            daemons.remove(db)
    finally:
        for d in daemons:
            if d.proc.poll() is None:
                d.kill()
    return results


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--mib", type=int, default=16)
    a = p.parse_args()
    why = why_unavailable()
    if why:
        raise SystemExit(f"bench_nat: {why}")
    base = Path(tempfile.mkdtemp(prefix="bench-nat-"))
    topo = NatTopology(suffix=f"b{os.getpid():x}")
    try:
        table = {mode: run_mode(mode, topo, base, a.mib, a.runs) for mode in ("direct", "relay", "punched")}
    finally:
        topo.close()
        shutil.rmtree(base, ignore_errors=True)
    anchor = statistics.median(t for t, _ in table["direct"])
    print(f"\n| {a.mib} MiB, B behind NAT gets it | median s (of {a.runs}) | × direct | MiB through the hub (median) |")
    print("|---|---:|---:|---:|")
    for mode in ("direct", "relay", "punched"):
        med = statistics.median(t for t, _ in table[mode])
        hub = statistics.median(c for _, c in table[mode]) / 2**20
        runs = ", ".join(f"{t:.2f}" for t, _ in table[mode])
        print(f"| {mode} ({runs}) | {med:.2f} | {med / anchor:.2f} | {hub:.2f} |")


if __name__ == "__main__":
    main()
