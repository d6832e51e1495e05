#!/usr/bin/env python3
"""Bitswap against Helia (issue 16): the same tree fetched three ways, on 127.0.0.1 only.

* **Helia ← Helia** (the anchor): `test-tools/helia-serve.mjs` serves the tree from memory,
  `helia-fetch.mjs` fetches it (ls, stat, cat every file into a folder);
* **Helia ← fabnode**: the same `helia-fetch.mjs` against a `fabnode run` daemon that `add`ed it;
* **fabnode ← Helia**: fabnode's Bitswap client (node/runtime/bitswap.py) fetches it from
  `helia-serve.mjs` into a fresh SQLite store, then writes the files out as `get` does.

The tree (seeded): one 16 MiB file and --small small files (200 B–32 KiB) in two folders. Each
case runs --runs times, interleaved. Timed: dialling the peer until every file is written; the
processes' start-up is left out on both sides (Node ~0.3 s, fabnode's imports ~1 s, which move
with the machine's load), so the figures compare the transfers. The whole `fabnode get --peer`
command is timed as well, for what an operator waits. Every output is compared byte for byte.

Usage:  .venv/bin/python bench/bench_bitswap.py [--runs 3] [--big-mib 16] [--small 40]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_add import FABNODE, ROOT, WORK, MiB, machine  # noqa: E402
from bench_network import Daemon, cleanup, env_for, init_home, same_tree  # noqa: E402

TOOLS = ROOT / "test-tools"
NODE = TOOLS / "node_modules" / ".bin" / "node"
CASES = ("Helia ← Helia (anchor)", "Helia ← fabnode", "fabnode ← Helia")


def make_tree(root: Path, big: int, small: int, seed: int) -> int:
    rng = random.Random(seed)
    shutil.rmtree(root, ignore_errors=True)
    (root / "cad").mkdir(parents=True)
    (root / "docs").mkdir()  # removed again if left empty (empty folders: Helia keeps them, fabnode does not)
    (root / "cad" / "body.step").write_bytes(rng.randbytes(big))
    total = big
    for i in range(small):
        data = rng.randbytes(rng.randint(200, 32 * 1024))
        (root / ("docs" if i % 2 else "cad") / f"part-{i:03d}.txt").write_bytes(data)
        total += len(data)
    if not small:
        (root / "docs").rmdir()
    return total


class HeliaServer:
    def __init__(self, tree: Path) -> None:
        self.proc = subprocess.Popen([str(NODE), str(TOOLS / "helia-serve.mjs"), str(tree), "--exit-after", "900"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        said = {}
        while "ready" not in said:
            line = self.proc.stdout.readline().decode().strip()
            if not line:
                raise RuntimeError(f"helia-serve ended: {self.proc.stderr.read().decode()[-500:]}")
            key, _, value = line.partition(" ")
            said[key] = value
        self.addr, self.cid = said["multiaddr"], said["cid"]

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def helia_fetch(addr: str, cid: str, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    result = subprocess.run([str(NODE), str(TOOLS / "helia-fetch.mjs"), addr, cid, str(out), "--timeout", "300"],
                            capture_output=True, timeout=600)
    if result.returncode:
        raise RuntimeError(result.stderr.decode())
    return json.loads(result.stdout)["seconds"]


def fabnode_fetch(addr: str, cid: str, home: Path, out: Path) -> float:
    """fabnode's Bitswap client in this process: dial, walk and store, write the files."""
    import trio
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from multiaddr import Multiaddr

    from fabnode.node.home import Home
    from fabnode.node.local.files import get_path, plan_get
    from fabnode.node.runtime.bitswap import Bitswap, fetch_over_bitswap
    from fabnode.node.runtime.host import quiet_library_logs, running_host
    from fabnode.protocol.cid import parse_cid

    quiet_library_logs()
    init_home(home, "bench")
    shutil.rmtree(out, ignore_errors=True)
    store = Home(home).open_store()
    root = parse_cid(cid)

    async def main() -> float:
        async with running_host(create_new_key_pair(), ["/ip4/127.0.0.1/tcp/0"]) as host:
            swap = Bitswap(host, store, serve=False, log=lambda line: None)
            swap.register()
            start = time.perf_counter()
            await fetch_over_bitswap(swap, store, root, [], [info_from_p2p_addr(Multiaddr(addr))], timeout_s=300)
            target, tree, _ = plan_get(store, root, [], out)
            get_path(store, target, tree)
            return time.perf_counter() - start

    return trio.run(main)


def whole_get(addr: str, cid: str, home: Path, out: Path) -> float:
    init_home(home, "bench")
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run([str(FABNODE), "get", cid, "--peer", addr, "-o", str(out)], env=env_for(home),
                   capture_output=True, timeout=600, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--big-mib", type=int, default=16)
    parser.add_argument("--small", type=int, default=40)
    args = parser.parse_args()
    base = WORK / "bitswap"
    tree = base / "tree"
    nbytes = make_tree(tree, args.big_mib * MiB, args.small, seed=16)
    lab = base / "lab"
    init_home(lab, "serving lab")
    cid = subprocess.run([str(FABNODE), "add", str(tree)], env=env_for(lab), capture_output=True,
                         check=True).stdout.decode().strip()
    times: dict[str, list[float]] = {case: [] for case in (*CASES, "fabnode get --peer (whole command)")}
    daemon = Daemon(lab)
    helia = None
    try:
        helia = HeliaServer(tree)
        assert helia.cid == cid, f"Helia's CID {helia.cid} is not fabnode's {cid}"
        for run in range(args.runs):
            for case in CASES:
                out = base / "out"
                if case == CASES[0]:
                    seconds = helia_fetch(helia.addr, cid, out)
                elif case == CASES[1]:
                    seconds = helia_fetch(daemon.addr, cid, out)
                else:
                    seconds = fabnode_fetch(helia.addr, cid, base / "fetching-home", out)
                assert same_tree(tree, out), f"{case}: the output differs from the tree"
                times[case].append(seconds)
                print(f"run {run + 1} {case}: {seconds:.3f} s", flush=True)
            seconds = whole_get(helia.addr, cid, base / "get-home", base / "out")
            assert same_tree(tree, base / "out")
            times["fabnode get --peer (whole command)"].append(seconds)
            print(f"run {run + 1} whole get: {seconds:.3f} s", flush=True)
    finally:
        if helia is not None:
            helia.stop()
        cleanup()  # the daemon too, whatever failed
    anchor = statistics.median(times[CASES[0]])
    print()
    print(f"Machine: {machine()}")
    print(f"Tree: {nbytes / MiB:.1f} MiB ({args.big_mib} MiB file + {args.small} small files), {args.runs} runs each")
    print()
    print("| case | median s | runs s | MB/s | time / Helia ← Helia |")
    print("|---|---:|---|---:|---:|")
    for case, values in times.items():
        med = statistics.median(values)
        print(f"| {case} | {med:.3f} | {', '.join(f'{v:.2f}' for v in values)} | {nbytes / med / 1e6:.1f} | "
              f"{med / anchor:.2f} |")


if __name__ == "__main__":
    main()
