#!/usr/bin/env python3
"""Benchmark the gateway's partial answers (issue 16): Range and entity-bytes read only the
leaves they need, so their time must not grow with the file.

A file of `--mib` MiB (random) is added to a fresh home and served by a real `fabnode run` on
127.0.0.1. The anchor is a plain static file server (Node's http + fs, Range by byte offsets in
the file on disk: what any web server does) serving the same file. For each request, the median
and spread of `--runs` wall times over a fresh connection, for both servers; CAR answers
(`entity-bytes`, whole CAR) and a 304 revalidation only for fabnode.

Usage:  .venv/bin/python bench/bench_gateway.py [--mib 256] [--runs 9]
"""

from __future__ import annotations

import argparse
import http.client
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

from bench_add import FABNODE, ROOT, WORK, machine  # noqa: E402

MiB = 1 << 20
STATIC_SERVER = r"""
const http = require('http'), fs = require('fs')
const file = process.argv[1], size = fs.statSync(file).size
const server = http.createServer((req, res) => {
  const m = /^bytes=(\d*)-(\d*)$/.exec(req.headers.range || '')
  if (!m) { res.writeHead(200, {'content-length': size}); fs.createReadStream(file).pipe(res); return }
  let start, end
  if (m[1] === '') { start = Math.max(size - Number(m[2]), 0); end = size - 1 }
  else { start = Number(m[1]); end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1) }
  res.writeHead(206, {'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${size}`})
  fs.createReadStream(file, {start, end}).pipe(res)
})
server.listen(0, '127.0.0.1', () => console.log(server.address().port))
"""


def timed(host: str, path: str, headers: dict) -> tuple[float, int, int]:
    """(seconds, status, body bytes) of one request on a fresh connection, body read to the end."""
    t = time.perf_counter()
    conn = http.client.HTTPConnection(host, timeout=300)
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    total = 0
    while chunk := response.read(MiB):
        total += len(chunk)
    conn.close()
    return time.perf_counter() - t, response.status, total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    home, folder = WORK / "gateway-home", WORK / "gateway-file"
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    big = folder / "big.bin"
    rng = random.Random(16)
    with open(big, "wb") as f:
        for _ in range(args.mib):
            f.write(rng.randbytes(MiB))
    env = {**os.environ, "FABNODE_HOME": str(home)}
    subprocess.run([str(FABNODE), "init", "--name", "Bench Lab"], env=env, check=True, capture_output=True)
    bundle = json.loads(subprocess.run([str(FABNODE), "add", str(folder), "--json"], env=env, check=True,
                                       capture_output=True).stdout)["cid"]
    daemon = subprocess.Popen([str(FABNODE), "run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--http",
                               "127.0.0.1:0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    static = subprocess.Popen([str(ROOT / "test-tools" / "node_modules" / ".bin" / "node"), "-e", STATIC_SERVER,
                               str(big)], stdout=subprocess.PIPE, text=True)
    size = args.mib * MiB
    requests = [
        ("whole file", "", {}),
        ("Range: first 64 KiB", "", {"Range": "bytes=0-65535"}),
        ("Range: 1 MiB in the middle", "", {"Range": f"bytes={size // 2 - MiB // 2}-{size // 2 + MiB // 2 - 1}"}),
        ("Range: last 1 MiB", "", {"Range": f"bytes=-{MiB}"}),
        ("CAR, entity-bytes: last 1 MiB", f"?format=car&entity-bytes=-{MiB}:*", None),
        ("CAR, whole file", "?format=car", None),
        ("If-None-Match → 304", "", "etag"),
    ]
    rows = []
    try:
        deadline = time.monotonic() + 60
        while "web interface on" not in daemon.stdout.readline():
            assert time.monotonic() < deadline, "daemon did not start"
        fabnode_host = json.loads((home / "daemon.json").read_text())["http"]
        static_host = f"127.0.0.1:{static.stdout.readline().strip()}"
        path = f"/ipfs/{bundle}/big.bin"
        etag = None
        for name, query, headers in requests:
            if headers == "etag":
                conn = http.client.HTTPConnection(fabnode_host, timeout=60)
                conn.request("HEAD", path)
                etag = conn.getresponse().getheader("ETag")
                conn.close()
                headers = {"If-None-Match": etag}
            row = {"name": name}
            for server, host, p in (("fabnode", fabnode_host, path + query), ("static", static_host, "/big.bin")):
                if server == "static" and (query or "If-None-Match" in (headers or {})):
                    continue
                timed(host, p, headers or {})  # warm: the file in the page cache for both
                times = []
                for _ in range(args.runs):
                    took, status, got = timed(host, p, headers or {})
                    assert status in (200, 206, 304), (server, name, status)
                    times.append(took)
                row[server] = (statistics.median(times), min(times), max(times), got)
            rows.append(row)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=20)
        static.terminate()
        static.wait(timeout=10)
    shutil.rmtree(folder, ignore_errors=True)

    print(f"Machine: {machine()}\n")
    print(f"One file of {args.mib} MiB of random bytes ({args.mib} leaves of 1 MiB); {args.runs} runs each on a "
          "fresh connection, after one warm-up; ms as median (min–max).\n")
    print("| request | bytes | fabnode ms | static server ms | fabnode / static |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        med, lo, hi, got = row["fabnode"]
        cells = [row["name"], f"{got:,}", f"{med * 1000:.1f} ({lo * 1000:.1f}–{hi * 1000:.1f})"]
        if "static" in row:
            smed, slo, shi, _ = row["static"]
            cells += [f"{smed * 1000:.1f} ({slo * 1000:.1f}–{shi * 1000:.1f})", f"{med / smed:.1f}"]
        else:
            cells += ["—", "—"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
