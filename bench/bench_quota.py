"""What the strangers' quota costs when a sync brings many records by one untrusted key.

Stores 12,000 records (one key, as a catch-up would bring them) through the daemon's own path
(node/runtime/view.py: receive_records with the strangers' quota), in frames of 3,000 records,
into a fresh home each run; the anchor is the same path with the quota off. Reports the median
of 3 runs of each and their ratio.

    .venv/bin/python bench/bench_quota.py [--records 12000]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def run(records, quota_on: bool, now: int) -> float:
    from fabnode.node.config import daemon_options
    from fabnode.node.home import Home
    from fabnode.node.runtime.daemon import Daemon

    home_dir = Path(tempfile.mkdtemp(prefix="fabnode-bench-quota-")) / "home"
    subprocess.run([str(ROOT / ".venv" / "bin" / "fabnode"), "--home", str(home_dir), "init", "--name", "Bench"],
                   check=True, capture_output=True)
    with open(home_dir / "config.toml", "a") as f:  # room for all of them: only the bookkeeping is measured
        f.write("[limits]\nstranger_records_per_author_per_hour = 1000000\nstranger_storage_mib = 4000\n")
    home = Home(home_dir)
    daemon = Daemon(home, daemon_options(home, listen=[], bootstrap=[], http="off", mdns=False), log=lambda line: None)
    if not quota_on:
        daemon.view.quota = None
    start = time.perf_counter()
    for i in range(0, len(records), 3000):
        batch = records[i:i + 3000]
        daemon.view.store_records([r.raw for r in batch], "peer", now, batch)
    return time.perf_counter() - start


def main() -> None:
    from daemons import signing_key

    from fabnode.protocol.identity import did_from_ed25519
    from fabnode.protocol.records import make_record

    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=12_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    key, author = signing_key(42)
    now = int(time.time() * 1000)
    records = [make_record("vouch", {"subject": did_from_ed25519(i.to_bytes(32, "big")), "trust": "trusted"},
                           author=author, ts=now - i, sign=key.sign) for i in range(args.records)]
    on = [run(records, True, now) for _ in range(args.runs)]
    off = [run(records, False, now) for _ in range(args.runs)]
    print(f"| records | quota on (median s) | quota off (median s) | ratio |")
    print(f"|---:|---:|---:|---:|")
    print(f"| {args.records:,} | {statistics.median(on):.2f} | {statistics.median(off):.2f} | "
          f"{statistics.median(on) / statistics.median(off):.2f} |")


if __name__ == "__main__":
    main()
