#!/usr/bin/env python3
"""Benchmark fetching over slow, far and broken links (issue 14), side by side with rsync.

Every transfer goes through tests/linkshaper.py, a TCP proxy on 127.0.0.1 that imposes a rate per
direction and a one-way delay, and can cut the link; fabnode and rsync each get an identical,
fresh link per run. Lab A holds a generated tree (fixed seed, the generator of bench_add.py,
`fabnode add`) and runs a daemon; rsync serves the same folder from an rsync daemon. Each run,
interleaved: `rsync -a rsync://LINK/tree/ OUT/` (the anchor) and `fabnode get CID --peer
/ip4/127.0.0.1/tcp/LINK/p2p/A -o OUT` from a fresh home. Every output is compared byte for byte
with the input, and the bytes the link carried are counted (a transfer that went around the link
would show here).

Scenarios (the issue's list):

- **a, steady**: 16 MiB over 2 MB/s with 80 ms round trips. Goal: ≤ 1.15× rsync.
- **b, thin**: 4 MiB over 256 kbit/s with 600 ms round trips. Goal: ≤ 1.2× rsync.
- **c, cut**: 24 MiB over 2 MB/s / 80 ms, the link cut when half has crossed and down for 8 s.
  fabnode must finish by itself with at most 1.1× the tree's bytes carried. The anchor is what
  an operator would script for rsync: `rsync -a --partial --timeout=10` retried every second
  until it succeeds.
- **d, two peers**: 16 MiB; lab A and lab A2 hold the same tree, each behind its own 1 MB/s
  link; `get --peer A --peer A2` against `get --peer A` alone. Goal: two ≤ 0.6× one.

The 256 MiB loopback CPU comparison (the issue's part e) is bench/bench_loopback.py.

Usage:  .venv/bin/python bench/bench_links.py [--runs 3] [--only a,b,c,d] [--scale 1.0]
(--scale shrinks every tree and down time for a quick look; the figures in docs/benchmarks.md use 1.)
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from bench_add import FABNODE, WORK, MiB, machine, make_tree  # noqa: E402
from bench_network import Daemon, cleanup, env_for, init_home, same_tree, start_rsyncd, stop  # noqa: E402
from linkshaper import LinkShaper  # noqa: E402

SCENARIOS = {
    "a": {"title": "steady: 16 MiB over 2 MB/s, 80 ms RTT", "mib": 16, "rate": 2_000_000, "delay": 0.040,
          "goal": "≤ 1.15× rsync"},
    "b": {"title": "thin: 4 MiB over 256 kbit/s, 600 ms RTT", "mib": 4, "rate": 32_000, "delay": 0.300,
          "goal": "≤ 1.2× rsync"},
    "c": {"title": "cut: 24 MiB over 2 MB/s, 80 ms RTT, cut at half for 8 s", "mib": 24, "rate": 2_000_000,
          "delay": 0.040, "cut_down": 8.0, "goal": "finishes by itself, carried ≤ 1.1× the tree"},
    "d": {"title": "two peers: 16 MiB, each peer behind its own 1 MB/s, 80 ms RTT link", "mib": 16,
          "rate": 1_000_000, "delay": 0.040, "goal": "two peers ≤ 0.6× one"},
}


def timed(cmd: list[str], env: dict | None = None, on_start=None) -> dict:
    """Run ``cmd`` to its end: wall seconds, CPU seconds, exit code, stderr's last lines."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if on_start:
        on_start(proc)
    err = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    return {"seconds": time.perf_counter() - start, "cpu": usage.ru_utime + usage.ru_stime,
            "code": os.waitstatus_to_exitcode(status), "stderr": err.strip().splitlines()[-3:]}


def cut_at_half(link: LinkShaper, nbytes: int, down: float, done: threading.Event) -> threading.Thread:
    """Cut ``link`` for ``down`` seconds once half of ``nbytes`` has crossed it (towards the asker)."""
    def watch() -> None:
        while not done.is_set():
            if link.carried["down"] >= nbytes // 2:
                link.cut(down=down)
                return
            time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def port_of(daemon: Daemon) -> int:
    return int(daemon.addr.split("/tcp/", 1)[1].split("/", 1)[0])


def fabnode_get(cid: str, peers: list[tuple[LinkShaper, str]], out: Path, home: Path) -> dict:
    init_home(home, "Asking lab")
    args = [str(FABNODE), "get", cid, "-o", str(out)]
    for link, peer_id in peers:
        args += ["--peer", f"/ip4/127.0.0.1/tcp/{link.port}/p2p/{peer_id}"]
    result = timed(args, env_for(home))
    shutil.rmtree(home, ignore_errors=True)
    return result


def rsync_get(url_port: int, out: Path, retry: bool) -> dict:
    url = f"rsync://127.0.0.1:{url_port}/tree/"
    if not retry:
        return timed(["rsync", "-a", url, f"{out}/"])
    script = f"until rsync -a --partial --timeout=10 '{url}' '{out}/'; do sleep 1; done"
    return timed(["bash", "-c", script])


def run_scenario(key: str, spec: dict, runs: int, scale: float, base: Path) -> dict:
    nbytes_goal = int(spec["mib"] * MiB * scale)
    tree = base / f"tree-{key}"
    if not tree.exists():
        make_tree(tree, nbytes_goal, seed=14)
    nbytes = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
    lab_a = base / f"lab-a-{key}"
    init_home(lab_a, "Lab A")
    cid = json.loads(subprocess.run([str(FABNODE), "add", str(tree), "--json"], env=env_for(lab_a), check=True,
                                    capture_output=True).stdout)["cid"]
    daemons = [Daemon(lab_a)]
    if key == "d":
        lab_a2 = base / f"lab-a2-{key}"
        init_home(lab_a2, "Lab A2")
        cid2 = json.loads(subprocess.run([str(FABNODE), "add", str(tree), "--json"], env=env_for(lab_a2),
                                         check=True, capture_output=True).stdout)["cid"]
        assert cid2 == cid, "the same tree must give the same CID on both labs"
        daemons.append(Daemon(lab_a2))
    tmp = Path(tempfile.mkdtemp(prefix="rsyncd-", dir=base))
    rsyncd, url = start_rsyncd(tree, tmp)
    rsync_port = int(url.split(":")[2].split("/")[0])
    rows: dict[str, list[dict]] = {}
    out = base / "out"
    down = spec.get("cut_down", 0) * scale

    def shaped(port: int) -> LinkShaper:
        return LinkShaper(port, rate=spec["rate"], delay=spec["delay"])

    def record(name: str, result: dict, links: list[LinkShaper]) -> None:
        ok = result["code"] == 0 and same_tree(tree, out)
        result.update(ok=ok, carried=sum(link.carried["down"] + link.carried["up"] for link in links),
                      shares=[link.carried["down"] for link in links])
        rows.setdefault(name, []).append(result)
        shutil.rmtree(out, ignore_errors=True)

    try:
        for r in range(runs):
            if key != "d":
                with shaped(rsync_port) as link:
                    done = threading.Event()
                    if down:
                        cut_at_half(link, nbytes, down, done)
                    result = rsync_get(link.port, out, retry=bool(down))
                    done.set()
                    record("rsync" + (" (retried)" if down else ""), result, [link])
            with shaped(port_of(daemons[0])) as link:
                done = threading.Event()
                if down:
                    cut_at_half(link, nbytes, down, done)
                result = fabnode_get(cid, [(link, daemons[0].peer_id)], out, base / "lab-b")
                done.set()
                record("fabnode get --peer", result, [link])
            if key == "d":
                with shaped(port_of(daemons[0])) as one, shaped(port_of(daemons[1])) as two:
                    result = fabnode_get(cid, [(one, daemons[0].peer_id), (two, daemons[1].peer_id)], out,
                                         base / "lab-b")
                    record("fabnode get, two peers", result, [one, two])
            print(f"  {key} run {r + 1}/{runs}: " + ", ".join(
                f"{name} {v[-1]['seconds']:.1f}s{'' if v[-1]['ok'] else ' FAILED'}" for name, v in rows.items()),
                file=sys.stderr)
    finally:
        for d in daemons:
            d.stop()
        stop(rsyncd)
        shutil.rmtree(tmp, ignore_errors=True)
    return {"key": key, "spec": spec, "bytes": nbytes, "rows": rows}


def report(results: list[dict], runs: int, scale: float, at_commit: str) -> str:
    lines = [f"Machine: {machine()}", f"Commit: {at_commit} (at the start); runs: {runs} (medians); scale {scale}", ""]
    for res in results:
        spec, rows, nbytes = res["spec"], res["rows"], res["bytes"]
        lines += [f"#### {res['key']}. {spec['title']} — goal {spec['goal']}", "",
                  f"Tree: {nbytes / MiB:.1f} MiB.", "",
                  "| | median time | all runs (carried / tree) | finished | bytes carried / tree | CPU s (asker) |",
                  "|---|---|---|---|---|---|"]
        anchor = None
        for name, values in rows.items():
            med = statistics.median(v["seconds"] for v in values)
            anchor = anchor or med
            ok = sum(v["ok"] for v in values)
            carried = statistics.median(v["carried"] for v in values) / nbytes
            lines.append(f"| {name} | {med:.2f} s ({med / anchor:.2f}×) | "
                         + ", ".join(f"{v['seconds']:.1f} ({v['carried'] / nbytes:.2f})" for v in values)
                         + f" | {ok}/{len(values)} | {carried:.3f} | "
                         f"{statistics.median(v['cpu'] for v in values):.2f} |")
        failures = [f"{name}: {v['stderr']}" for name, values in rows.items() for v in values if not v["ok"]]
        if failures:
            lines += ["", "Failures: " + "; ".join(str(f) for f in failures[:3])]
        if res["key"] == "d":
            shares = [v["shares"] for v in rows.get("fabnode get, two peers", [])]
            lines += ["", "Bytes each link carried towards the asker (two peers): "
                      + "; ".join(" / ".join(f"{s / MiB:.1f} MiB" for s in share) for share in shares)]
        lines.append("")
    return "\n".join(lines)


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                              text=True).stdout.strip()
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="a,b,c,d")
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    if not shutil.which("rsync"):
        raise SystemExit("rsync is needed as the anchor: apt-get install rsync")
    atexit.register(cleanup)
    base = WORK / f"links-{args.only.replace(',', '')}"  # runs of different scenarios may overlap
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    at_commit = commit()  # the code under test may change while a long run goes on: say where it began
    results = [run_scenario(key, SCENARIOS[key], args.runs, args.scale, base) for key in args.only.split(",")]
    print(report(results, args.runs, args.scale, at_commit))


if __name__ == "__main__":
    main()
