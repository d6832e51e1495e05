#!/usr/bin/env python3
"""Benchmark the node online (issue 5): fetching between daemons, announcement latency, idle cost.

Everything runs on 127.0.0.1 (`fabnode run --listen /ip4/127.0.0.1/tcp/… --no-mdns`); every
process this script starts is stopped at the end, also when it fails. Each daemon's log is kept
in bench/work/network-logs/. Three parts:

1. **Fetch**: lab A publishes a generated tree of mixed file sizes (fixed seed, --size-mib,
   the generator and inputs folder of bench_add.py) and runs a daemon. Each run, interleaved,
   after an `os.sync()` so no step pays for the previous one's dirty pages:
   `rsync -a rsync://127.0.0.1:PORT/tree/ OUT/` from an rsync daemon on 127.0.0.1 (the anchor);
   a bare libp2p stream of the same byte count between two hosts configured as fabnode's
   (TCP, Noise, Yamux; nothing stored: the transport's own ceiling); `fabnode get BUNDLE -o OUT`
   through lab B's daemon (fresh home, bootstrapped to A, already connected as at a lab; timed
   from the command's start until the tree is written); and `fabnode get BUNDLE --peer A -o OUT`
   from a fresh home with no daemon. Every output is compared byte for byte with the input.
   Goal: fabnode within 2x of rsync's time.
2. **Announcement latency**: --nodes daemons in a mesh (a ring with chords, as labs that each
   list two others; and a line, the hardest case). Once all are connected and in each other's
   gossip mesh, node 0 runs `fabnode vouch DID` for --records distinct did:keys (after one
   warm-up), each timed until every other node has stored the record: `received_ms` in its
   SQLite `records` table, read-only (gossip also logs "record received"; a record that came
   by sync would not). Reported: command start to the last node (what the operator sees), the
   command's own run (~0.3 s, mostly Python start-up), and record made on node 0 to stored on
   the last node (the network part). Goal: median under 1 s.
3. **Idle cost**: lab A's daemon, freshly started, with two connected peers, left alone for
   --idle-seconds: resident memory (VmRSS, VmHWM) and CPU time (utime + stime) as a share of
   one core. Goal: under 150 MB.

Usage:  .venv/bin/python bench/bench_network.py [--runs 3] [--size-mib 256] [--records 30]
"""

from __future__ import annotations

import argparse
import atexit
import filecmp
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_add import FABNODE, ROOT, WORK, MiB, files_under, machine, make_file, make_tree, run  # noqa: E402


LOOPBACK = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOGS = WORK / "network-logs"
"""Each daemon's log lines, kept after the run (one file per home) to look for anything odd."""
STARTED: list[subprocess.Popen] = []
"""Every long-running process this script started (daemons, rsyncd): stopped by cleanup()."""


def env_for(home: Path) -> dict:
    return {**{k: v for k, v in os.environ.items() if k != "FABNODE_HOME"}, "FABNODE_HOME": str(home)}


def init_home(home: Path, name: str) -> dict:
    shutil.rmtree(home, ignore_errors=True)
    out = run([str(FABNODE), "init", "--name", name, "--json"], env=env_for(home), stdout=subprocess.PIPE)[2]
    return json.loads(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    if proc in STARTED:
        STARTED.remove(proc)


def cleanup() -> None:
    for proc in STARTED.copy():
        try:
            stop(proc, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def proc_memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    if len(out) != 2:
        raise RuntimeError(f"process {pid} has exited (or is exiting): no memory figures")
    return out


class Daemon:
    """`fabnode run` on 127.0.0.1 without mDNS. A thread reads its log lines and notes when each
    arrived, so several daemons can be watched at once; every wait has a deadline."""

    def __init__(self, home: Path, *args: str, port: int = 0, timeout: float = 60) -> None:
        self.home = home
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [str(FABNODE), "run", "--listen", f"/ip4/{LOOPBACK}/tcp/{port}", "--no-mdns",
             *([] if "--http" in args else ["--http", f"{LOOPBACK}:0"]), *args],
            env=env_for(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        STARTED.append(self.proc)
        self.lines: list[tuple[float, str]] = []
        self.errors: list[str] = []
        self.eof = False
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_errors, daemon=True).start()
        self.up_at, line = self.wait_for("listening on ", timeout=timeout)
        self.addr = line.split("listening on ", 1)[1]
        self.peer_id = self.addr.rsplit("/", 1)[1]

    def _read(self) -> None:
        for raw in self.proc.stdout:
            with self._cond:
                self.lines.append((time.monotonic(), raw.decode(errors="replace").rstrip("\n")))
                self._cond.notify_all()
        with self._cond:
            self.eof = True
            self._cond.notify_all()

    def _read_errors(self) -> None:
        for raw in self.proc.stderr:
            self.errors.append(raw.decode(errors="replace").rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def find(self, text: str) -> tuple[float, str] | None:
        with self._cond:
            return next(((t, line) for t, line in self.lines if text in line), None)

    def wait_for(self, text: str, timeout: float = 30) -> tuple[float, str]:
        """(arrival time, line) of the first line containing ``text``, within a deadline."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = next(((t, line) for t, line in self.lines if text in line), None)
                if found:
                    return found
                if self.eof:
                    raise RuntimeError(f"daemon {self.home.name} exited ({self.proc.returncode}); it said "
                                       f"{[line for _, line in self.lines]} {self.errors}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"daemon {self.home.name} never said {text!r} within {timeout} s; it said "
                                       f"{[line for _, line in self.lines][-20:]} {self.errors[-20:]}")
                self._cond.wait(min(left, 0.5))

    def said(self, text: str) -> list[str]:
        with self._cond:
            return [line for _, line in self.lines if text in line]

    def control(self, cmd: str, timeout: float = 10) -> dict:
        """One request on the daemon's local control channel (node/runtime/control.py), as `fabnode
        status` sends it, without starting a CLI process."""
        state = json.loads((self.home / "daemon.json").read_text())
        with socket.create_connection((LOOPBACK, state["control"]), timeout=timeout) as sock:
            sock.sendall(json.dumps({"token": state["token"], "cmd": cmd}).encode() + b"\n")
            with sock.makefile("rb") as f:
                return json.loads(f.readline())

    def stop(self) -> None:
        stop(self.proc)
        time.sleep(0.1)  # the reader thread takes the last lines ("stopping …")
        LOGS.mkdir(parents=True, exist_ok=True)
        with self._cond, open(LOGS / f"{self.home.name}.log", "a") as f:
            f.write(f"--- {self.home.name} pid {self.pid}, exit {self.proc.returncode}\n")
            f.writelines(f"{line}\n" for _, line in self.lines)
            f.writelines(f"stderr: {line}\n" for line in self.errors)


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def median(values) -> float:
    return statistics.median(values)


def p99(values) -> float:
    """Nearest-rank 99th percentile: with 30 samples, the largest."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, -(-99 * len(ordered) // 100) - 1))]


def same_tree(a: Path, b: Path) -> bool:
    left = [Path(p).relative_to(a) for p in files_under(a)]
    right = [Path(p).relative_to(b) for p in files_under(b)]
    if left != right:
        return False
    return all(filecmp.cmp(a / rel, b / rel, shallow=False) for rel in left)


def timed_get(args: list[str], env: dict) -> dict:
    """Run `fabnode get`, noting when it says it has fetched (stderr) and when it exits."""
    start = time.perf_counter()
    proc = subprocess.Popen([str(FABNODE), "get", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    fetched_at = None
    err = []
    for raw in proc.stderr:
        line = raw.decode(errors="replace")
        err.append(line)
        if line.startswith("fetched ") and fetched_at is None:
            fetched_at = time.perf_counter() - start
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    total = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"fabnode get {args} failed: {''.join(err)}")
    return {"total": total, "fetched": fetched_at or total, "rss": usage.ru_maxrss * 1024,
            "cpu": usage.ru_utime + usage.ru_stime, "out": out.decode().strip(), "stderr": "".join(err).strip()}


# ------------------------------------------------------------------ 1. fetch

RAW_PROTOCOL = "/fabnode-bench/raw/1"


def libp2p_serve(nbytes: int) -> None:
    """Transport-only anchor, server side: a host configured as fabnode's (node/runtime/host.py: TCP,
    Noise, Yamux) that answers each stream with ``nbytes`` random bytes in 1 MiB writes."""
    import trio
    from libp2p.crypto.ed25519 import create_new_key_pair

    from fabnode.node.runtime.host import dial_address, quiet_library_logs, running_host

    async def main() -> None:
        quiet_library_logs()
        async with running_host(create_new_key_pair(), [f"/ip4/{LOOPBACK}/tcp/0"]) as host:
            payload = os.urandom(MiB)

            async def handle(stream) -> None:
                sent = 0
                while sent < nbytes:
                    n = min(MiB, nbytes - sent)
                    await stream.write(payload[:n])
                    sent += n
                await stream.close()

            host.set_stream_handler(RAW_PROTOCOL, handle)
            print(dial_address(host), flush=True)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    break

    trio.run(main)


def libp2p_fetch(addr: str) -> None:
    """Transport-only anchor, asking side: dial, open one stream, read it to the end, discard."""
    import trio
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.network.stream.exceptions import StreamEOF
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from multiaddr import Multiaddr

    from fabnode.node.runtime.host import quiet_library_logs, running_host

    async def main() -> None:
        quiet_library_logs()
        async with running_host(create_new_key_pair(), [f"/ip4/{LOOPBACK}/tcp/0"]) as host:
            info = info_from_p2p_addr(Multiaddr(addr))
            await host.connect(info)
            start = time.perf_counter()
            stream = await host.new_stream(info.peer_id, [RAW_PROTOCOL])
            got = 0
            while True:
                try:
                    data = await stream.read(MiB)
                except StreamEOF:
                    break
                if not data:
                    break
                got += len(data)
            print(json.dumps({"bytes": got, "transfer": time.perf_counter() - start}), flush=True)

    trio.run(main)


def start_libp2p_server(nbytes: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, __file__, "--libp2p-serve", str(nbytes)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    STARTED.append(proc)
    line = proc.stdout.readline().decode().strip()
    if "/p2p/" not in line:
        raise RuntimeError(f"the libp2p anchor server did not start: {line!r}")
    return proc, line


def start_rsyncd(tree: Path, tmp: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    conf = tmp / "rsyncd.conf"
    conf.write_text(f"use chroot = no\nuid = {os.getuid()}\ngid = {os.getgid()}\nlog file = {tmp / 'rsyncd.log'}\n"
                    f"[tree]\n    path = {tree}\n    read only = yes\n")
    proc = subprocess.Popen(["rsync", "--daemon", "--no-detach", f"--config={conf}", f"--port={port}",
                             f"--address={LOOPBACK}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    STARTED.append(proc)

    def listening() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"rsync daemon exited: {proc.stderr.read().decode()}")
        try:
            socket.create_connection((LOOPBACK, port), timeout=1).close()
            return True
        except OSError:
            return False

    wait_until(listening, 10, "the rsync daemon to listen")
    return proc, f"rsync://{LOOPBACK}:{port}/tree/"


def bench_fetch(tree: Path, nbytes: int, runs: int, base: Path) -> dict:
    lab_a = base / "lab-a"
    init_home(lab_a, "Lab A")
    published = json.loads(run([str(FABNODE), "publish", str(tree), "-m", "a big collection", "--license",
                                "CC-BY-SA-4.0", "--json"], env=env_for(lab_a), stdout=subprocess.PIPE)[2])
    bundle = published["bundle"]
    tmp = Path(tempfile.mkdtemp(prefix="rsyncd-", dir=base))
    rsyncd, url = start_rsyncd(tree, tmp)
    raw_server, raw_addr = start_libp2p_server(nbytes)
    da = Daemon(lab_a)
    rows: dict[str, list[dict]] = {"rsync": [], "libp2p stream only": [], "fabnode get (via daemon)": [],
                                   "fabnode get --peer": []}
    extra = {"connect": [], "daemon_fetch": [], "b_hwm": [], "b_rss": [], "b_cpu": [], "raw_transfer": []}
    out = base / "out"
    try:
        for r in range(runs):
            # rsync (the anchor): a fresh destination each run
            shutil.rmtree(out, ignore_errors=True)
            os.sync()  # start each timed step with no dirty pages left by the one before
            t, rss, _ = run(["rsync", "-a", url, f"{out}/"])
            assert r or same_tree(tree, out), "rsync output differs from the input"
            rows["rsync"].append({"total": t, "fetched": t, "rss": rss})
            shutil.rmtree(out)

            # the transport alone, as fabnode configures it (no store, no CAR, nothing written)
            os.sync()
            t, rss, said = run([sys.executable, __file__, "--libp2p-fetch", raw_addr], stdout=subprocess.PIPE)
            raw = json.loads(said)
            if raw["bytes"] != nbytes:
                raise RuntimeError(f"the libp2p anchor received {raw['bytes']} of {nbytes} bytes")
            rows["libp2p stream only"].append({"total": t, "fetched": t, "rss": rss})
            extra["raw_transfer"].append(raw["transfer"])

            # through lab B's daemon, bootstrapped to A; B's home is fresh so it holds nothing
            lab_b = base / "lab-b"
            init_home(lab_b, "Lab B")
            db = Daemon(lab_b, "--bootstrap", da.addr)
            try:
                connected_at, _ = db.wait_for(f"peer connected: {da.peer_id}")
                extra["connect"].append(connected_at - db.started)
                da.wait_for(f"peer connected: {db.peer_id}")
                cpu0 = proc_cpu_seconds(db.pid)
                os.sync()
                start = time.monotonic()
                got = timed_get([bundle, "-o", str(out)], env_for(lab_b))
                if got["out"] != str(out):
                    raise RuntimeError(f"fabnode get printed {got['out']!r}")
                finished_at, _ = db.wait_for(f"fetch finished: {bundle}")
                extra["daemon_fetch"].append(finished_at - start)
                extra["b_cpu"].append(proc_cpu_seconds(db.pid) - cpu0)
                memory = proc_memory(db.pid)
                extra["b_hwm"].append(memory["VmHWM"])
                extra["b_rss"].append(memory["VmRSS"])
            finally:
                db.stop()
            if not same_tree(tree, out):
                raise RuntimeError("fabnode get (via daemon) output differs from the input")
            rows["fabnode get (via daemon)"].append(got)
            shutil.rmtree(out)
            shutil.rmtree(lab_b)

            # no daemon on the asking side: its own short-lived host dials A
            lab_c = base / "lab-c"
            init_home(lab_c, "Lab C")
            os.sync()
            got = timed_get([bundle, "--peer", da.addr, "-o", str(out)], env_for(lab_c))
            if not same_tree(tree, out):
                raise RuntimeError("fabnode get --peer output differs from the input")
            rows["fabnode get --peer"].append(got)
            shutil.rmtree(out)
            shutil.rmtree(lab_c)
            print(f"  fetch run {r + 1}/{runs}: " + ", ".join(f"{k} {v[-1]['total']:.2f}s" for k, v in rows.items()),
                  file=sys.stderr)
        a_memory = proc_memory(da.pid)
        served = len(da.said(f"served {bundle}"))
    finally:
        da.stop()
        stop(rsyncd)
        stop(raw_server)
        shutil.rmtree(tmp, ignore_errors=True)
    return {"rows": rows, "extra": extra, "bytes": nbytes, "files": len(files_under(tree)), "bundle": bundle,
            "a_memory": a_memory, "served": served, "lab_a": lab_a, "a_peer": da.peer_id}


def report_fetch(res: dict) -> list[str]:
    mb = res["bytes"] / 1e6
    rows = res["rows"]
    anchor = median(r["total"] for r in rows["rsync"])
    out = [(f"Fetch: {res['files']} files, {mb:.0f} MB (bundle {res['bundle']}), {len(rows['rsync'])} runs, all "
            f"outputs byte-identical to the input"), "",
           "| tool | median s | MB/s | start → fetched s | writing the tree s | peak RSS MB | time / rsync time |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for tool, values in rows.items():
        t = median(v["total"] for v in values)
        f = median(v["fetched"] for v in values)
        fetch_cell, write_cell = ("", "") if not tool.startswith("fabnode") else (f"{f:.2f}", f"{t - f:.2f}")
        out.append(f"| {tool} | {t:.2f} | {mb / t:.0f} | {fetch_cell} | {write_cell} | "
                   f"{max(v['rss'] for v in values) / 1e6:.0f} | {t / anchor:.2f} |")
    out.append("")
    via = median(v["total"] for v in rows["fabnode get (via daemon)"])
    peer = median(v["total"] for v in rows["fabnode get --peer"])
    ex = res["extra"]
    out.append(f"- fetch via daemon: {mb / via:.0f} MB/s, {via / anchor:.2f}x rsync's time "
               f"(goal <= 2x: {'met' if via <= 2 * anchor else 'NOT met'}); rsync {mb / anchor:.0f} MB/s")
    out.append(f"- fetch with --peer (no daemon): {mb / peer:.0f} MB/s, {peer / anchor:.2f}x rsync's time "
               f"(goal <= 2x: {'met' if peer <= 2 * anchor else 'NOT met'})")
    raw = median(v["total"] for v in rows["libp2p stream only"])
    out.append(f"- the transport alone (py-libp2p as fabnode configures it: TCP, Noise, Yamux; one stream, "
               f"nothing stored): {raw / anchor:.2f}x rsync's time; the transfer itself (stream open to end) "
               f"median {median(ex['raw_transfer']):.2f} s = {mb / median(ex['raw_transfer']):.0f} MB/s")
    out.append(f"- inside the via-daemon runs: command start to the daemon's 'fetch finished' line "
               f"median {median(ex['daemon_fetch']):.2f} s, the daemon using {median(ex['b_cpu']):.1f} s of CPU; the asking "
               f"daemon's peak RSS (VmHWM) {max(ex['b_hwm']) / 1e6:.0f} MB, {median(ex['b_rss']) / 1e6:.0f} MB right after; its start until connected to A median "
               f"{median(ex['connect']):.2f} s (not in the timings)")
    out.append(f"- lab A's daemon after serving {res['served']} fetches: VmRSS {res['a_memory']['VmRSS'] / 1e6:.0f} MB, "
               f"VmHWM {res['a_memory']['VmHWM'] / 1e6:.0f} MB")
    return out


# ------------------------------------------------------------------ 2. announcement latency


def topology(kind: str, n: int) -> dict[int, list[int]]:
    """Whom each node lists as --bootstrap. ring+chords: i -> i+1 and i+3 (mod n), so each
    node has up to four neighbours and any node is at most three hops from any other; line:
    i -> i-1, nine hops end to end."""
    if kind == "ring":
        return {i: sorted({(i + 1) % n, (i + 3) % n} - {i}) for i in range(n)}
    return {i: [i - 1] if i else [] for i in range(n)}


def hops(neighbours: dict[int, set[int]]) -> int:
    """The mesh's diameter (breadth-first from every node)."""
    worst = 0
    for start in neighbours:
        seen, frontier, depth = {start}, {start}, 0
        while len(seen) < len(neighbours):
            frontier = {j for i in frontier for j in neighbours[i]} - seen
            seen |= frontier
            depth += 1
        worst = max(worst, depth)
    return worst


def did_keys(count: int, seed: int) -> list[str]:
    from nacl.signing import SigningKey

    from fabnode.protocol.identity import did_from_ed25519

    rng = random.Random(seed)
    return [did_from_ed25519(SigningKey(rng.randbytes(32)).verify_key.encode()) for _ in range(count)]


def stored_ms(home: Path, cid: str) -> int | None:
    """``received_ms`` of a record in a node's database (read-only), or None."""
    from fabnode.protocol.cid import parse_cid

    conn = sqlite3.connect(f"file:{home / 'fabnode.db'}?mode=ro", uri=True, timeout=10)
    try:
        row = conn.execute("SELECT received_ms FROM records WHERE cid = ?", (parse_cid(cid),)).fetchone()
        return row[0] if row else None
    finally:
        conn.close()


def bench_announce(kind: str, n: int, records: int, base: Path) -> dict:
    homes = [base / f"{kind}-{i}" for i in range(n)]
    ids = [init_home(h, f"Lab {i}") for i, h in enumerate(homes)]
    ports = [free_port() for _ in range(n)]
    addrs = [f"/ip4/{LOOPBACK}/tcp/{p}/p2p/{i['peer_id']}" for p, i in zip(ports, ids)]
    edges = topology(kind, n)
    neighbours = {i: set(edges[i]) | {j for j in range(n) if i in edges[j]} for i in range(n)}
    nodes: list[Daemon] = []
    try:
        t0 = time.monotonic()
        for i in range(n):
            boot = [x for j in edges[i] for x in ("--bootstrap", addrs[j])]
            nodes.append(Daemon(homes[i], *boot, port=ports[i]))
        for i, d in enumerate(nodes):
            for j in neighbours[i]:
                d.wait_for(f"peer connected: {ids[j]['peer_id']}", timeout=60)
        connected = time.monotonic() - t0

        def meshed() -> bool:
            return all(d.control("status").get("mesh_peers", 0) >= min(len(neighbours[i]), 4)
                       for i, d in enumerate(nodes))

        wait_until(meshed, 30, "every node's gossip mesh to hold its neighbours")
        meshed_after = time.monotonic() - t0
        keys = did_keys(records + 1, seed=5)
        samples = []
        for k, did in enumerate(keys):
            start = time.monotonic()
            start_ms = time.time_ns() // 1_000_000
            proc = subprocess.run([str(FABNODE), "vouch", did, "-m", f"bench {k}"], env=env_for(homes[0]),
                                  capture_output=True, check=False)
            exited = time.monotonic()
            if proc.returncode != 0:
                raise RuntimeError(f"fabnode vouch failed: {proc.stderr.decode()}")
            cid = proc.stdout.decode().strip()
            announced = nodes[0].wait_for(f"announced {cid}", timeout=30)[0] - start
            # Gossip logs "record received"; a record that came by sync instead (on meeting a
            # peer, every minute) logs no such line, so the database is what counts: every
            # figure below is from received_ms, each node's own clock of when it stored it.
            by_sync = 0
            for d, h in zip(nodes[1:], homes[1:]):
                try:
                    d.wait_for(f"record received: vouch {cid}", timeout=10)
                except RuntimeError:
                    by_sync += 1
                wait_until(lambda h=h, cid=cid: stored_ms(h, cid), 30, f"record {cid} in {h.name}'s database")
            made = (stored_ms(homes[0], cid) - start_ms) / 1000
            stored = [(stored_ms(h, cid) - start_ms) / 1000 for h in homes[1:]]
            if k == 0:
                continue  # the first record is a warm-up, not counted
            samples.append({"total": max(stored), "cli": exited - start, "announce": announced,
                            "after_announce": max(stored) - announced, "network_db": max(stored) - made,
                            "made": made, "first": min(stored) - announced, "by_sync": by_sync})
            time.sleep(0.2)
        cpu = [proc_cpu_seconds(d.pid) for d in nodes]
        rss = [proc_memory(d.pid)["VmRSS"] for d in nodes]
    finally:
        for d in nodes:
            d.stop()
    for h in homes:
        shutil.rmtree(h, ignore_errors=True)
    return {"kind": kind, "n": n, "hops": hops(neighbours), "samples": samples, "connected": connected, "meshed": meshed_after,
            "edges": edges, "cpu": cpu, "rss": rss}


def report_announce(results: list[dict]) -> list[str]:
    out = [("| mesh | records | command start → all stored: median s | p99 s | `fabnode vouch` run: median s | "
            "record made → all stored (SQLite received_ms): median s | p99 s | announced → all stored: median s |"),
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    names = {r["kind"]: (f"ring of {r['n']} with chords" if r["kind"] == "ring" else f"line of {r['n']}")
             + f" ({r['hops']} hops at most)" for r in results}
    for res in results:
        s = res["samples"]
        col = {k: [x[k] for x in s] for k in s[0]}
        out.append(f"| {names[res['kind']]} | {len(s)} | {median(col['total']):.3f} | {p99(col['total']):.3f} | "
                   f"{median(col['cli']):.3f} | {median(col['network_db']):.3f} | {p99(col['network_db']):.3f} | "
                   f"{median(col['after_announce']):.3f} |")
    out.append("")
    for res in results:
        s = res["samples"]
        col = {k: [x[k] for x in s] for k in s[0]}
        total = median(col["total"])
        out.append(f"- {names[res['kind']]}: publish (`fabnode vouch` start) to all {res['n'] - 1} others: median {total:.3f} s, "
                   f"p99 {p99(col['total']):.3f} s (goal: median < 1 s: {'met' if total < 1 else 'NOT met'}); "
                   f"network part (record stored on node 0 → stored on the last node) median "
                   f"{median(col['network_db']):.3f} s, p99 {p99(col['network_db']):.3f} s; the command itself "
                   f"{median(col['cli']):.3f} s (record made {median(col['made']):.3f} s after its start); node 0's "
                   f"'announced' line {median(col['announce']):.3f} s after the start, the first other node stored it "
                   f"{median(col['first']) * 1000:.0f} ms later; all {res['n']} daemons connected "
                   f"{res['connected']:.1f} s and meshed {res['meshed']:.1f} s after the first was started; "
                   f"their RSS at the end {min(res['rss']) / 1e6:.0f}–{max(res['rss']) / 1e6:.0f} MB; "
                   f"{sum(col['by_sync'])} of {len(s) * (res['n'] - 1)} arrivals came by sync rather than gossip")
    return out


# ------------------------------------------------------------------ 3. idle


def bench_idle(lab_a: Path, seconds: float, base: Path) -> dict:
    peers_homes = [base / "idle-peer-1", base / "idle-peer-2"]
    for i, h in enumerate(peers_homes):
        init_home(h, f"Idle peer {i + 1}")
    daemons: list[Daemon] = []
    try:
        da = Daemon(lab_a)
        daemons.append(da)
        for h in peers_homes:
            daemons.append(Daemon(h, "--bootstrap", da.addr))
        for d in daemons[1:]:
            da.wait_for(f"peer connected: {d.peer_id}")
        wait_until(lambda: da.control("status").get("mesh_peers", 0) >= 2, 30, "both peers in the gossip mesh")
        time.sleep(5)  # let the start-up work (DHT provide, first heartbeats) pass
        after_start = proc_memory(da.pid)
        cpu0 = [proc_cpu_seconds(d.pid) for d in daemons]
        t0 = time.monotonic()
        rss_samples = []
        while time.monotonic() - t0 < seconds:
            time.sleep(min(5, seconds - (time.monotonic() - t0)) if seconds > 0 else 0)
            for d in daemons:
                if d.proc.poll() is not None:
                    raise RuntimeError(f"daemon {d.home.name} stopped during the idle period (exit "
                                       f"{d.proc.returncode}; it said {d.said('')[-3:]}): stopped from outside?")
            rss_samples.append(proc_memory(da.pid)["VmRSS"])
        elapsed = time.monotonic() - t0
        cpu = [(proc_cpu_seconds(d.pid) - c) / elapsed for d, c in zip(daemons, cpu0)]
        memory = proc_memory(da.pid)
        status = da.control("status")
        lines = len(da.lines)
        connected = len(status.get("connected", {}))
    finally:
        for d in daemons:
            d.stop()
    for h in peers_homes:
        shutil.rmtree(h, ignore_errors=True)
    return {"seconds": elapsed, "cpu": cpu, "memory": memory, "after_start": after_start, "rss_samples": rss_samples,
            "connected": connected, "log_lines": lines}


def report_idle(res: dict) -> list[str]:
    m = res["memory"]
    cpu = res["cpu"]
    return [
        "| daemon | idle s | VmRSS MB | VmHWM MB | CPU % of one core |",
        "|---|---:|---:|---:|---:|",
        (f"| lab A (holds the bundle), {res['connected']} peers connected | {res['seconds']:.0f} | "
         f"{m['VmRSS'] / 1e6:.0f} | {m['VmHWM'] / 1e6:.0f} | {cpu[0] * 100:.2f} |"),
        f"| its two peers (fresh homes) | {res['seconds']:.0f} | | | {cpu[1] * 100:.2f}, {cpu[2] * 100:.2f} |",
        "",
        (f"- idle daemon with two peers: VmRSS {m['VmRSS'] / 1e6:.0f} MB, VmHWM {m['VmHWM'] / 1e6:.0f} MB (goal < 150 MB: "
        f"{'met' if m['VmHWM'] < 150e6 else 'NOT met'}); RSS over the idle period "
        f"{min(res['rss_samples']) / 1e6:.0f}–{max(res['rss_samples']) / 1e6:.0f} MB "
        f"({res['after_start']['VmRSS'] / 1e6:.0f} MB 5 s after the peers connected); CPU "
        f"{cpu[0] * 100:.2f} % of one core ({cpu[0] * res['seconds']:.2f} s over {res['seconds']:.0f} s); "
        f"{res['log_lines']} log lines in all"),
    ]


# ------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--records", type=int, default=30, help="records announced per mesh")
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--only", choices=["fetch", "announce", "idle"], action="append",
                        help="run only these parts (repeat; idle needs fetch's lab A)")
    parser.add_argument("--libp2p-serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--libp2p-fetch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.libp2p_serve is not None:
        return libp2p_serve(args.libp2p_serve)
    if args.libp2p_fetch is not None:
        return libp2p_fetch(args.libp2p_fetch)
    parts = set(args.only or ["fetch", "announce", "idle"])
    if "idle" in parts:
        parts.add("fetch")
    if shutil.which("rsync") is None:
        raise SystemExit("rsync is missing: apt-get install -y rsync")
    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    WORK.mkdir(parents=True, exist_ok=True)
    inputs = WORK / f"inputs-{args.size_mib}MiB"
    tree = inputs / "tree"
    if not (inputs / "complete").exists():  # the same inputs as bench_add.py makes
        print("generating inputs (seeded)…", file=sys.stderr)
        shutil.rmtree(inputs, ignore_errors=True)
        make_tree(tree, args.size_mib * MiB, seed=2026)
        make_file(inputs / "one-file.bin", args.size_mib * MiB + 1, seed=7)
        (inputs / "complete").touch()
    base = WORK / "network"
    shutil.rmtree(base, ignore_errors=True)
    shutil.rmtree(LOGS, ignore_errors=True)
    base.mkdir()
    began = time.monotonic()
    load_before = os.getloadavg()

    def show(lines: list[str]) -> None:  # each part as soon as it is done: a later failure keeps it
        print("\n".join(lines) + "\n", flush=True)

    show([f"Machine: {machine()}"])
    try:
        if "fetch" in parts:
            fetch = bench_fetch(tree, sum(os.path.getsize(f) for f in files_under(tree)), args.runs, base)
            show(report_fetch(fetch))
        if "announce" in parts:
            results = []
            for kind in ("ring", "line"):
                results.append(bench_announce(kind, args.nodes, args.records, base))
                print(f"  announce on {kind}: median {median(x['total'] for x in results[-1]['samples']):.3f} s",
                      file=sys.stderr)
            show(report_announce(results))
        if "idle" in parts:
            show(report_idle(bench_idle(fetch["lab_a"], args.idle_seconds, base)))
    finally:
        cleanup()
    shutil.rmtree(base, ignore_errors=True)
    load = os.getloadavg()
    out = []
    out.append(f"(whole benchmark: {time.monotonic() - began:.0f} s; load average (1, 5, 15 min) before "
               f"{load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, after {load[0]:.2f} {load[1]:.2f} "
               f"{load[2]:.2f}; daemon logs in {LOGS.relative_to(ROOT)})")
    print("\n".join(out))


if __name__ == "__main__":
    main()
