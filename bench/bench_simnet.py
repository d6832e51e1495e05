#!/usr/bin/env python3
"""Scale figures from the network simulator (issue 13): 50, 200 and 1,000 simulated labs.

For each size and seed (tests/simnet.py; the same NodeService the daemon runs):

* **the world**: a random graph where each lab's degree is drawn in 3–6 (bootstrap peers; the
  labs dial each other through the service's dialler); links of 20 ms each way, 10
  Mbit/s, no loss (``--latency-ms``, ``--mbps``, ``--loss`` change it); the service's default
  configuration (sync every 60 s) but seeding off and no outbox polling (the simulator pokes);
  30 s of simulated time to connect and do the first syncs;
* **spread**: ``--records`` records published one at a time, from random labs, 10 s apart: the
  simulated time until each reached 50 %, 99 % and 100 % of labs (medians over records, then
  seeds), and the bytes every lab sent per record during it (gossip; and sync, which at this
  point is the periodic rounds over equal sets);
* **partition**: the labs split into two random halves (connections across close, dials across
  fail) for ``--partition-min`` minutes while each half publishes ``--heal-records`` records;
  then joined: simulated time until every lab holds the same record-set digest, and the bytes
  per lab from the join until then (sync and gossip);
* the real (wall-clock) time of each phase.

Usage:  .venv/bin/python bench/bench_simnet.py [--sizes 50,200,1000] [--seeds 3] [--profile N]
"""

from __future__ import annotations

import argparse
import cProfile
import math
import pstats
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from simnet import MINUTE, SIM_CONFIG, Link, network  # noqa: E402


def percentile_times(arrivals: list[float], published: float, n: int) -> tuple[float, float, float]:
    out = []
    for share in (0.5, 0.99, 1.0):
        k = math.ceil(share * n)
        out.append(arrivals[k - 1] - published if len(arrivals) >= k else math.inf)
    return tuple(out)


def converged(sim) -> bool:
    first = len(sim.nodes[0].store.blocks)
    if any(len(n.store.blocks) != first for n in sim.nodes):
        return False
    return len({n.store.digest() for n in sim.nodes}) == 1


def one_run(n: int, seed: int, args) -> dict:
    link = Link(latency_ms=args.latency_ms, bits_per_second=args.mbps * 1e6, loss=args.loss)
    wall = time.perf_counter()
    sim = network(n, seed=seed, link=link, config=replace(SIM_CONFIG))
    sim.run_for(30_000)
    out = {"setup_s": time.perf_counter() - wall, "edges": len(sim.edges),
           "degree": 2 * len(sim.edges) / n}

    # ---- spread of single records
    wall = time.perf_counter()
    gossip0 = sum(x.bytes_gossip for x in sim.nodes)
    sync0 = sum(x.bytes_sync for x in sim.nodes)
    start = sim.now
    published = []
    for k in range(args.records):
        sim.run(start + k * 10_000)
        lab = sim.rng.randrange(n)
        published.append((sim.now, sim.publish(lab)[0]))
    sim.run_until(lambda s: all(s.holders(c) >= n for _, c in published), 10 * MINUTE, step_ms=1_000)
    times = [percentile_times(sim.arrivals[c], t, n) for t, c in published]
    out["t50"], out["t99"], out["t100"] = (statistics.median(col) for col in zip(*times))
    out["gossip_per_lab_record"] = (sum(x.bytes_gossip for x in sim.nodes) - gossip0) / n / args.records
    out["sync_per_lab_window"] = (sum(x.bytes_sync for x in sim.nodes) - sync0) / n
    out["window_s"] = (sim.now - start) / 1000
    out["spread_s"] = time.perf_counter() - wall

    # ---- partition, then heal
    wall = time.perf_counter()
    labs = list(range(n))
    sim.rng.shuffle(labs)
    left, right = sorted(labs[: n // 2]), sorted(labs[n // 2:])
    sim.partition(left, right)
    across = sum(1 for a, b in sim.edges if (a in left) != (b in left))
    span = args.partition_min * MINUTE
    for k in range(args.heal_records):
        sim.at(sim.now + (k + 0.5) * span / args.heal_records, lambda s: s.publish(s.rng.choice(left)))
        sim.at(sim.now + (k + 0.6) * span / args.heal_records, lambda s: s.publish(s.rng.choice(right)))
    sim.run_for(span)
    before_sync = sum(x.bytes_sync for x in sim.nodes)
    before_gossip = sum(x.bytes_gossip for x in sim.nodes)
    sim.heal()
    healed = sim.now
    left_set = set(left)

    def rejoined(s) -> bool:
        return any((i in left_set) != (j in left_set) for i in left for j in s.nodes[i].conns)

    sim.run_until(rejoined, 30 * MINUTE, step_ms=1_000)
    out["rejoin_s"] = (sim.now - healed) / 1000
    ok = sim.run_until(converged, 30 * MINUTE, step_ms=1_000)
    out["heal_ok"] = ok
    out["heal_s"] = (sim.now - healed) / 1000
    out["heal_sync_per_lab"] = (sum(x.bytes_sync for x in sim.nodes) - before_sync) / n
    out["heal_gossip_per_lab"] = (sum(x.bytes_gossip for x in sim.nodes) - before_gossip) / n
    out["edges_across"] = across
    out["partition_wall_s"] = time.perf_counter() - wall
    q = sim.max_queues()
    out["max_sessions"], out["max_pending_syncs"] = q.get("sessions", 0), q.get("pending_syncs", 0)
    out["max_inbox"] = sim.max_pending
    out["events"] = sim.events
    out["wall_s"] = out["setup_s"] + out["spread_s"] + out["partition_wall_s"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="50,200,1000")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--records", type=int, default=5)
    p.add_argument("--heal-records", type=int, default=10)
    p.add_argument("--partition-min", type=float, default=10)
    p.add_argument("--latency-ms", type=float, default=20)
    p.add_argument("--mbps", type=float, default=10)
    p.add_argument("--loss", type=float, default=0.0)
    p.add_argument("--profile", type=int, default=0, help="profile one run of this many labs and print the top")
    args = p.parse_args()

    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        one_run(args.profile, 1, args)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        return

    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        runs = []
        for seed in range(1, args.seeds + 1):
            r = one_run(n, seed, args)
            runs.append(r)
            print(f"# {n} labs, seed {seed}: " + ", ".join(
                f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()), file=sys.stderr, flush=True)
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "heal_ok"}
        med["heal_ok"] = all(r["heal_ok"] for r in runs)
        rows.append((n, med))

    print(f"Links: {args.latency_ms:g} ms each way, {args.mbps:g} Mbit/s, loss {args.loss:g}; "
          f"{args.records} records spread one at a time; partition of {args.partition_min:g} min with "
          f"{args.heal_records} records published on each side; medians of {args.seeds} seeds.\n")
    print("| labs | edges (mean degree) | record reaches 50 % | 99 % | 100 % | gossip B / lab / record "
          "| sync B / lab in that window | partition: edges across | converged after join (first redial across) | "
          "B / lab to converge (sync + gossip) | events | wall s (setup + spread + partition) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, m in rows:
        heal = f"{m['heal_s']:.0f} s ({m['rejoin_s']:.0f} s)" if m["heal_ok"] else "not within 30 min"
        print(f"| {n} | {m['edges']:.0f} ({m['degree']:.1f}) | {m['t50']:.0f} ms | {m['t99']:.0f} ms | "
              f"{m['t100']:.0f} ms | {m['gossip_per_lab_record']:.0f} | {m['sync_per_lab_window']:.0f} "
              f"({m['window_s']:.0f} s) | {m['edges_across']:.0f} | {heal} | "
              f"{m['heal_sync_per_lab']:.0f} + {m['heal_gossip_per_lab']:.0f} | {m['events']:.0f} | "
              f"{m['wall_s']:.1f} ({m['setup_s']:.1f} + {m['spread_s']:.1f} + {m['partition_wall_s']:.1f}) |")


if __name__ == "__main__":
    main()
