#!/usr/bin/env python3
"""Bytes on the wire for a revised CAD file (issue 20), against rsync.

A 50 MB CAD-like file — a STEP-like text and an STL-like binary, generated from a seed — is
published by lab A as version 1 of a design; lab B holds version 1. Version 2 is version 1
edited by (a) a 1 % insertion near the start (new content of the same kind at 1 % into the
file), or (b) 20 scattered small changes (40 bytes replaced by 44 in the text; 48 bytes
overwritten in place in the binary, as moving a vertex does). B then fetches version 2 from A's
daemon (`fabnode get --peer`), once with the default fixed-chunk profile (`unixfs-v1-2025`)
and once with content-defined chunks (`--profile rabin-32k`); and, for the same update, rsync
fetches version 2 from an `rsync --daemon` onto a copy of version 1 (`--no-whole-file`, the
delta algorithm). Every byte of both goes through one counting TCP relay on 127.0.0.1, both
directions added up, so the two are measured alike (fabnode's include the Noise handshake,
identify and the fetch requests; rsync's its checksums). Bytes are deterministic for a seed up
to a few hundred bytes of handshake, so one run is reported; ``--runs`` repeats the fetches.

Usage:  .venv/bin/python bench/bench_revisions.py [--size-mb 50] [--runs 1]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from bench_add import WORK, machine  # noqa: E402
from conftest import Cli  # noqa: E402
from daemons import Daemon  # noqa: E402

MANIFEST = ('okhv = "OKH-LOSHv1.0"\nname = "Bracket"\nversion = "1.0"\nrepo = "https://example.org/bracket"\n'
            'license = "CERN-OHL-S-2.0"\nlicensor = "Lab A"\ndocumentation-language = "en"\n'
            'function = "holds the pump"\n')
PROFILES = ("unixfs-v1-2025", "rabin-32k")


# ------------------------------------------------------------------ inputs


def step_like(size: int, rng: random.Random, first: int = 1) -> bytes:
    """ISO 10303-21 entity lines (points, directions, edges) of about ``size`` bytes."""
    out, n, total = [], first, 0
    kinds = ("CARTESIAN_POINT('',({:.6f},{:.6f},{:.6f}));", "DIRECTION('',({:.6f},{:.6f},{:.6f}));",
             "VERTEX_POINT('',#{:.0f});", "EDGE_CURVE('',#{:.0f},#{:.0f},#{:.0f},.T.);")
    while total < size:
        kind = rng.choice(kinds)
        line = f"#{n}=" + kind.format(*(rng.uniform(-500, 500) if "." in kind else rng.randint(1, n + 1)
                                        for _ in range(kind.count("{")))) + "\n"
        out.append(line)
        total += len(line)
        n += 1
    return "".join(out).encode()[:size]


def stl_like(size: int, rng: random.Random) -> bytes:
    """Binary STL triangles (normal, three vertices, attribute) of about ``size`` bytes."""
    count = max((size - 84) // 50, 1)
    pack = struct.Struct("<12fH").pack
    tris = [pack(*(round(rng.uniform(-100, 100), 2) for _ in range(12)), 0) for _ in range(count)]
    return b"\0" * 80 + struct.pack("<I", count) + b"".join(tris)


def inserted(v1: bytes, kind: str, rng: random.Random) -> bytes:
    """(a) 1 % of new content of the same kind, inserted 1 % into the file."""
    at, size = len(v1) // 100, len(v1) // 100
    if kind == "step":
        at = v1.index(b"\n", at) + 1
        return v1[:at] + step_like(size, rng, first=10_000_000) + v1[at:]
    at = 84 + (at - 84) // 50 * 50
    return v1[:at] + stl_like(size + 84, rng)[84:] + v1[at:]


def scattered(v1: bytes, kind: str, rng: random.Random) -> bytes:
    """(b) 20 small changes spread over the file."""
    out = bytearray(v1)
    for at in sorted((rng.randrange(100, len(v1) - 100) for _ in range(20)), reverse=True):
        if kind == "step":
            out[at:at + 40] = rng.randbytes(22).hex().encode()  # 44 bytes for 40: later ones shift
        else:
            at = 84 + (at - 84) // 50 * 50 + 12
            out[at:at + 48] = rng.randbytes(48)  # a triangle's three vertices, in place
    return bytes(out)


# ------------------------------------------------------------------ counting relay


class Relay:
    """A TCP relay on 127.0.0.1 that counts every byte in both directions."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.bytes = 0
        self._lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                with self._lock:
                    self.bytes += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def take(self) -> int:
        """Bytes relayed since the last call (after the connections settle)."""
        last = -1
        while last != self.bytes:  # the relay threads may still be forwarding the last bytes
            last = self.bytes
            time.sleep(0.2)
        with self._lock:
            n, self.bytes = self.bytes, 0
        return n

    def close(self) -> None:
        self.sock.close()


# ------------------------------------------------------------------ the two transports


def fabnode_bytes(a: Cli, b_template: Path, bundle: str, expected: bytes, name: str, runs: int) -> tuple[int, int]:
    """(bytes on the wire, block bytes A served) for B, holding version 1, to get ``bundle``."""
    daemon = Daemon(a)
    relay = Relay(daemon.port)
    wire, served = [], []
    try:
        for _ in range(runs):
            b_home = WORK / "rev-b-run"
            shutil.rmtree(b_home, ignore_errors=True)
            shutil.copytree(b_template, b_home)
            out = WORK / "rev-out"
            shutil.rmtree(out, ignore_errors=True)
            before = len(daemon.said(f"served {bundle}"))
            Cli(b_home).run("get", bundle, "--peer", f"/ip4/127.0.0.1/tcp/{relay.port}/p2p/{daemon.peer_id}",
                            "-o", str(out))
            assert (out / name).read_bytes() == expected, "the fetched file differs"
            deadline = time.monotonic() + 30
            while len(daemon.said(f"served {bundle}")) < before + 2 and time.monotonic() < deadline:
                daemon._pump(0.2)
            lines = daemon.said(f"served {bundle}")[before:]
            served.append(sum(int(re.search(r": (\d+) bytes", line).group(1)) for line in lines))
            wire.append(relay.take())
    finally:
        relay.close()
        daemon.stop()
    return int(statistics.median(wire)), int(statistics.median(served))


def rsync_bytes(v1: bytes, v2: bytes, name: str, runs: int) -> tuple[int, int]:
    """(bytes on the wire, rsync's own --stats total) to update a copy of v1 to v2."""
    base = WORK / "rev-rsync"
    shutil.rmtree(base, ignore_errors=True)
    (base / "src").mkdir(parents=True)
    (base / "src" / name).write_bytes(v2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = base / "rsyncd.conf"
    conf.write_text(f"uid = {os.getuid()}\ngid = {os.getgid()}\nuse chroot = false\naddress = 127.0.0.1\n"
                    f"pid file = {base / 'rsyncd.pid'}\n[design]\npath = {base / 'src'}\nread only = true\n")
    daemon = subprocess.Popen(["rsync", "--daemon", "--no-detach", "--port", str(port), "--config", str(conf)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"rsync --daemon did not start: {daemon.stderr.read().decode()}")
            time.sleep(0.05)
    relay = Relay(port)
    wire, stats = [], []
    try:
        for _ in range(runs):
            dest = base / "dest"
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            (dest / name).write_bytes(v1)
            result = subprocess.run(["rsync", "--stats", "--no-whole-file", "--ignore-times",
                                     f"rsync://127.0.0.1:{relay.port}/design/{name}", str(dest / name)],
                                    capture_output=True, check=True, timeout=600)
            assert (dest / name).read_bytes() == v2, "rsync's result differs"
            text = result.stdout.decode()
            sent = int(re.search(r"Total bytes sent: ([\d,]+)", text).group(1).replace(",", ""))
            received = int(re.search(r"Total bytes received: ([\d,]+)", text).group(1).replace(",", ""))
            stats.append(sent + received)
            wire.append(relay.take())
    finally:
        relay.close()
        daemon.terminate()
        daemon.wait(10)
    return int(statistics.median(wire)), int(statistics.median(stats))


# ------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    size = args.size_mb * 1_000_000
    if shutil.which("rsync") is None:
        raise SystemExit("rsync is not installed (apt-get install rsync)")
    WORK.mkdir(parents=True, exist_ok=True)
    print(machine())
    print(subprocess.run(["rsync", "--version"], capture_output=True).stdout.decode().splitlines()[0])
    rows = []
    for kind, name in (("step", "bracket.step"), ("stl", "bracket.stl")):
        rng = random.Random(f"{kind}-2026")
        v1 = step_like(size, rng) if kind == "step" else stl_like(size, rng)
        edits = {"a) 1 % inserted near the start": inserted(v1, kind, random.Random(1)),
                 "b) 20 scattered small changes": scattered(v1, kind, random.Random(2))}
        rsync = {edit: rsync_bytes(v1, v2, name, args.runs) for edit, v2 in edits.items()}
        for profile in PROFILES:
            a_home, b_home = WORK / "rev-a", WORK / "rev-b"
            for home in (a_home, b_home):
                shutil.rmtree(home, ignore_errors=True)
            a, b = Cli(a_home), Cli(b_home)
            a.run("init", "--name", "Lab A")
            b.run("init", "--name", "Lab B")
            folder = WORK / "rev-design"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            (folder / "okh.toml").write_text(MANIFEST)
            (folder / name).write_bytes(v1)
            started = time.perf_counter()
            first = a.json("publish", str(folder), "-m", "version 1", "--profile", profile)
            add_s = time.perf_counter() - started
            car = WORK / "rev-v1.car"
            car.unlink(missing_ok=True)
            a.run("export", str(car))
            b.run("import", str(car))
            for edit, v2 in edits.items():
                (folder / name).write_bytes(v2)
                bundle = a.json("publish", str(folder), "-m", edit, "--design", first["design"])["bundle"]
                wire, served = fabnode_bytes(a, b_home, bundle, v2, name, args.runs)
                rs_wire, rs_stats = rsync[edit]
                rows.append((kind, edit, profile, wire, served, rs_wire, rs_stats, add_s))
                print(f"{kind:4} | {edit:31} | {profile:14} | fabnode {wire:>11,} B on the wire "
                      f"({served:>11,} B of blocks) | rsync {rs_wire:>9,} B ({rs_stats:,} by --stats) | "
                      f"{wire / rs_wire:6.2f}x rsync | publish v1 {add_s:.1f} s", flush=True)
    print()
    print("| file | edit | profile | fabnode bytes on the wire | of which blocks | rsync bytes on the wire "
          "| fabnode / rsync |")
    print("|---|---|---|---:|---:|---:|---:|")
    for kind, edit, profile, wire, served, rs_wire, _, _ in rows:
        print(f"| {kind} {args.size_mb} MB | {edit} | {profile} | {wire:,} | {served:,} | {rs_wire:,} | "
              f"{wire / rs_wire:.2f}x |")


if __name__ == "__main__":
    main()
