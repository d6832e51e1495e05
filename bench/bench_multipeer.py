#!/usr/bin/env python3
"""Several peers at once, and a cut at half (issue 14, items 2 and 3): `get --peer` timed as an
operator runs it.

Two labs hold the same generated tree (random bytes, fixed seed), each runs a daemon behind its
own shaped link (tests/linkshaper.py: a TCP proxy on 127.0.0.1; default 1 MB/s each way, 40 ms
one way). Each round, interleaved, from a fresh home: `get --peer LINK1` (one peer) and `get
--peer LINK1 --peer LINK2` (two peers), each through fresh links; then `get --peer LINK1` with the
link cut when half the tree has crossed and down for --down seconds. Every output is compared
byte for byte with the tree, and the bytes each link carried are counted (a transfer that went
around the links would show). Prints the median of --runs rounds and the ratios.

    .venv/bin/python bench/bench_multipeer.py [--mib 16] [--runs 3] [--rate 1000000] [--delay-ms 40] [--down 8]

Goals: two peers ≤ 0.6× one peer's time; the cut run carries ≤ 1.1× the tree.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import FABNODE, Cli, cli_env, write_random_file  # noqa: E402
from daemons import Daemon  # noqa: E402
from linkshaper import LinkShaper  # noqa: E402

MiB = 1 << 20


def make_tree(path: Path, size: int) -> Path:
    write_random_file(path / "frame.step", size * 3 // 4, seed=1)
    write_random_file(path / "parts" / "bracket.stl", size // 8, seed=2)
    write_random_file(path / "parts" / "base.stl", size - size * 3 // 4 - size // 8, seed=3)
    return path


def same_tree(a: Path, b: Path) -> bool:
    names = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    return names == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) and \
        all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


def get(work: Path, cid: str, links: list[tuple[LinkShaper, Daemon]], cut_down: float = 0.0,
        size: int = 0) -> dict:
    home = work / f"asker-{time.monotonic_ns()}"
    Cli(home).run("init", "--name", "Bench")
    out = work / f"out-{time.monotonic_ns()}"
    args = [str(FABNODE), "get", cid, "-o", str(out), "--timeout", "10m"]
    for link, d in links:
        args += ["--peer", f"/ip4/127.0.0.1/tcp/{link.port}/p2p/{d.peer_id}"]
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=cli_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if cut_down:
        while links[0][0].carried["down"] < size // 2 and proc.poll() is None:
            time.sleep(0.01)
        links[0][0].cut(down=cut_down)
    _, err = proc.communicate(timeout=900)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"get failed: {err.decode()}")
    if not same_tree(work / "tree", out):
        raise SystemExit("the output differs from the tree")
    carried = [link.carried["down"] for link, _ in links]
    shutil.rmtree(home)
    shutil.rmtree(out)
    return {"s": took, "carried": carried}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=1_000_000)
    parser.add_argument("--delay-ms", type=float, default=40)
    parser.add_argument("--down", type=float, default=8)
    args = parser.parse_args()
    size = args.mib * MiB
    work = Path(tempfile.mkdtemp(prefix="fabnode-bench-multipeer-"))
    daemons: list[Daemon] = []
    try:
        tree = make_tree(work / "tree", size)
        cid = None
        for name in ["one", "two"]:
            lab = Cli(work / name)
            lab.run("init", "--name", name)
            cid = lab.out("add", str(tree))
            daemons.append(Daemon(lab, "--http", "off"))
        rows: dict[str, list[dict]] = {"one peer": [], "two peers": [], "one peer, cut at half": []}

        def shaped(d: Daemon) -> LinkShaper:
            return LinkShaper(d.port, rate=args.rate, delay=args.delay_ms / 1000)

        for _ in range(args.runs):
            with shaped(daemons[0]) as l1:
                rows["one peer"].append(get(work, cid, [(l1, daemons[0])]))
            with shaped(daemons[0]) as l1, shaped(daemons[1]) as l2:
                rows["two peers"].append(get(work, cid, [(l1, daemons[0]), (l2, daemons[1])]))
            if args.down:
                with shaped(daemons[0]) as l1:
                    rows["one peer, cut at half"].append(get(work, cid, [(l1, daemons[0])], args.down, size))
        print(f"{args.mib} MiB tree; links {args.rate / 1e6:g} MB/s each way, {2 * args.delay_ms:g} ms RTT; "
              f"median of {args.runs}")
        for name, results in rows.items():
            if not results:
                continue
            s = statistics.median(r["s"] for r in results)
            carried = [statistics.median(r["carried"][i] for r in results) for i in range(len(results[0]["carried"]))]
            shares = " + ".join(f"{c / size:.2f}" for c in carried)
            runs = ", ".join(f"{r['s']:.2f}" for r in results)
            print(f"  {name:24s} {s:6.2f} s   carried {shares} × the tree   (runs: {runs})")
        one = statistics.median(r["s"] for r in rows["one peer"])
        two = statistics.median(r["s"] for r in rows["two peers"])
        print(f"  two peers / one peer: {two / one:.2f}× (goal ≤ 0.6×)")
    finally:
        for d in daemons:
            d.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
