#!/usr/bin/env python3
"""Benchmark the lab's web pages with a large store (issue 7): 10,000 designs.

The store gets 10,000 designs (one first version each, titles and messages from a seeded word
list, every tenth with a second version, every hundredth adapted by another design, attestations
on a thousand versions) plus the example bundle, so one design page has real files. With
``--languages 3`` (the default, issue 19) every design also has translations of its first version
into Swahili and Spanish, so it exists in three languages, and every page is rendered in three
interface languages (English, Spanish, Arabic). Then, for each page kind, the server time to render it (in-process, the daemon's own `Pages`), and the
time a client sees through a real `fabnode run` on 127.0.0.1 (which adds HTTP, Starlette and
Hypercorn). Medians and 95th percentiles over many requests. Goal: under 100 ms of server time.

Usage:  .venv/bin/python bench/bench_web.py [--designs 10000] [--requests 30] [--languages 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_add import FABNODE, ROOT, WORK, machine  # noqa: E402

WORDS = ("pump water solar dryer loom press mill kiln oven filter bike cart frame gear crank valve pipe clamp "
         "bamboo steel wood clay seed grain honey milk tool bench drill lathe saw").split()


def build(home: Path, designs: int, languages: int = 1) -> dict:
    from cryptography.hazmat.primitives import serialization

    from fabnode.node.local.commons import publish
    from fabnode.node.home import Home
    from fabnode.protocol.cid import RAW, make_cid
    from fabnode.protocol.dagcbor import Link
    from fabnode.protocol.records import make_record
    from fabnode.storage import open_db
    from fabnode.storage.records import RecordStore

    shutil.rmtree(home, ignore_errors=True)
    subprocess.run([str(FABNODE), "init", "--name", "Bench Lab"], env={**os.environ, "FABNODE_HOME": str(home)},
                   check=True, capture_output=True)
    h = Home(home)
    real = publish(h, ROOT / "examples" / "hand-pump", message="the real one, with files")
    key = serialization.load_pem_private_key((home / "author.key").read_bytes(), password=None)
    me = h.identity().did
    rng = random.Random(7)
    db = open_db(h.db_path)
    records = RecordStore(db.conn)
    now = 1_764_000_000_000
    db.conn.execute("BEGIN IMMEDIATE")
    firsts = []
    for i in range(designs):
        title = " ".join(rng.choice(WORDS) for _ in range(3)).capitalize() + f" {i}"
        body = {"bundle": Link(make_cid(RAW, b"bundle %d" % i)), "parents": [], "title": title,
                "message": " ".join(rng.choice(WORDS) for _ in range(8)), "license": "CERN-OHL-S-2.0",
                "maintainers": [me]}
        if i % 100 == 99:  # an adaptation of an earlier design
            body["parents"] = [Link(firsts[rng.randrange(len(firsts))])]
        body["language"] = "en"
        record = make_record("version", body, author=me, ts=now + i, sign=key.sign)
        records.ingest(record, received_ms=now)
        firsts.append(record.cid)
        for lang in TRANSLATIONS[:languages - 1]:  # issue 19: the design in three languages
            words = TRANSLATED_WORDS[lang]
            translated = make_record("version", {
                "bundle": Link(make_cid(RAW, b"bundle %d %s" % (i, lang.encode()))), "parents": [Link(record.cid)],
                "design": Link(record.cid), "title": " ".join(rng.choice(words) for _ in range(3)).capitalize() + f" {i}",
                "message": " ".join(rng.choice(words) for _ in range(8)), "license": "CERN-OHL-S-2.0",
                "language": lang, "translation_of": Link(record.cid)}, author=me, ts=now + 3 * designs + i, sign=key.sign)
            records.ingest(translated, received_ms=now)
        if i % 10 == 0:
            second = make_record("version", {"bundle": Link(make_cid(RAW, b"bundle %d b" % i)), "parents": [Link(record.cid)],
                                             "design": Link(record.cid), "title": title, "label": "1.1.0",
                                             "message": "improved", "license": "CERN-OHL-S-2.0"},
                                 author=me, ts=now + designs + i, sign=key.sign)
            records.ingest(second, received_ms=now)
        if i % 10 == 5:
            att = make_record("attestation", {"subject": Link(record.cid), "predicate": "built", "result": "passed",
                                              "lab": "Bench Lab"}, author=me, ts=now + 2 * designs + i, sign=key.sign)
            records.ingest(att, received_ms=now)
    db.conn.execute("COMMIT")
    db.close()
    from fabnode.protocol.cid import cid_str

    return {"real": real.design, "busy": cid_str(firsts[0]), "version": cid_str(firsts[10]),
            "query": "solar pump"}


TRANSLATIONS = ("sw", "es")
TRANSLATED_WORDS = {
    "sw": "pampu maji jua kikaushio kitanzi mashine kinu tanuri chujio baiskeli gari fremu gia bomba mianzi chuma mbao udongo mbegu nafaka asali maziwa zana".split(),
    "es": "bomba agua solar secador telar prensa molino horno filtro bicicleta carro marco engranaje válvula tubo bambú acero madera arcilla semilla grano miel".split(),
}
UI_LANGUAGES = ("en", "es", "ar")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--designs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--languages", type=int, default=3, choices=(1, 2, 3),
                        help="languages each design exists in (its own plus translations)")
    args = parser.parse_args()
    home = WORK / f"web-home-{args.designs}-{args.languages}"
    start = time.monotonic()
    ids = build(home, args.designs, args.languages)
    print(f"store with {args.designs} designs built in {time.monotonic() - start:.1f} s", file=sys.stderr)

    from fabnode.node.home import Home
    from fabnode.node.http.pages import Pages

    h = Home(home)
    pages = Pages(h, h.open_store())
    kinds = {
        "home": ("/", lambda: pages.home_page()),
        "designs": ("/designs", lambda: pages.designs_page(None)),
        "search": (f"/designs?q={ids['query'].replace(' ', '+')}", lambda: pages.designs_page(ids["query"])),
        "design (with files, lineage)": (f"/design/{ids['real']}", lambda: pages.design_page(ids["real"])),
        "design (busy lineage)": (f"/design/{ids['busy']}", lambda: pages.design_page(ids["busy"])),
        "version": (f"/version/{ids['version']}", lambda: pages.version_page(ids["version"])),
    }
    for lang in UI_LANGUAGES:  # each language's templates are compiled once, at its first page: not timed
        pages.lang = lang
        for _, render in kinds.values():
            render()
    server: dict[str, list[float]] = {k: [] for k in kinds}
    for i in range(args.requests):
        pages.lang = UI_LANGUAGES[i % len(UI_LANGUAGES)]  # the interface's language, as web.py sets it
        for name, (_, render) in kinds.items():
            t = time.perf_counter()
            render()
            server[name].append((time.perf_counter() - t) * 1000)

    proc = subprocess.Popen([str(FABNODE), "run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--http",
                             "127.0.0.1:0"], env={**os.environ, "FABNODE_HOME": str(home)},
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    client: dict[str, list[float]] = {k: [] for k in kinds}
    try:
        deadline = time.monotonic() + 60
        while "web interface on" not in proc.stdout.readline():
            assert time.monotonic() < deadline, "daemon did not start"
        base = "http://" + json.loads((home / "daemon.json").read_text())["http"]
        for i in range(args.requests):
            lang = UI_LANGUAGES[i % len(UI_LANGUAGES)]
            for name, (path, _) in kinds.items():
                t = time.perf_counter()
                request = urllib.request.Request(base + path, headers={"Accept-Language": lang})
                with urllib.request.urlopen(request, timeout=30) as r:
                    assert r.status == 200
                    r.read()
                client[name].append((time.perf_counter() - t) * 1000)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)

    print(f"Machine: {machine()}\n")
    print(f"{args.designs} designs in {args.languages} language(s) "
          f"({args.designs * args.languages + args.designs // 10} versions, {args.designs // 10} attestations); "
          f"{args.requests} requests per page kind, the interface in {', '.join(UI_LANGUAGES)} in turn.\n")
    print("| page | server render: median ms | p95 ms | through the daemon (HTTP): median ms | p95 ms |")
    print("|---|---:|---:|---:|---:|")
    for name in kinds:
        print(f"| {name} | {statistics.median(server[name]):.1f} | {percentile(server[name], 0.95):.1f} | "
              f"{statistics.median(client[name]):.1f} | {percentile(client[name], 0.95):.1f} |")
    worst = max(percentile(v, 0.95) for v in server.values())
    print(f"\n- slowest page's p95 server time: {worst:.1f} ms (goal: every page under 100 ms: "
          f"{'met' if worst < 100 else 'NOT met'})")


if __name__ == "__main__":
    main()
