"""Sync on a poor link (issue 14, item 6): a catch-up over 256 kbit/s with 600 ms round trips,
cut in the middle, finishes by itself and does not resend what was stored before the cut.

The link is tests/linkshaper.py between two real daemons. B, the lab catching up, listens
nowhere (``listen = []``: it only dials out, as a lab behind a NAT or a phone's data link does),
so A can never reach it but through the link; B dials A only at the bootstrap address it was
given, the link's (docs/design.md, "Records first on thin links (issue 14)"). Every byte of the
sync is therefore carried by the link, which the test checks. The full 10,000 records are a
benchmark (bench/bench_sync_links.py), not a test.
"""

from __future__ import annotations

import re
import time

from linkshaper import LinkShaper

from daemons import Daemon, make_labs, record_count, signing_key, start, wait_until
from test_sync import NOT_LABS, digest

RATE, DELAY = 32_000, 0.3  # 256 kbit/s, 600 ms round trips
RECORDS = 1_500


def make_vouches(home, count: int, seed: int = 42) -> int:
    """``count`` signed vouch records in A's store, made in one transaction; their total bytes."""
    from fabnode.node.home import Home
    from fabnode.protocol.identity import did_from_ed25519
    from fabnode.protocol.records import make_record
    from fabnode.storage import open_db
    from fabnode.storage.records import RecordStore

    key, author = signing_key(seed)
    now = int(time.time() * 1000)
    db = open_db(Home(home).db_path)
    store, size = RecordStore(db.conn), 0
    db.conn.execute("BEGIN IMMEDIATE")
    for i in range(count):
        record = make_record("vouch", {"subject": did_from_ed25519(i.to_bytes(32, "big")), "trust": "trusted"},
                             author=author, ts=now - i, sign=key.sign)
        store.ingest(record, received_ms=now)
        size += len(record.raw)
    db.conn.execute("COMMIT")
    db.close()
    return size


def behind_a_nat(lab) -> None:
    """B takes any number of an untrusted key's records, and listens nowhere (dials out only)."""
    with open(lab.home / "config.toml", "a") as f:
        f.write("listen = []\n[limits]\nstranger_records_per_author_per_hour = 100000\nstranger_storage_mib = 1000\n")


def synced_line(daemon: Daemon, timeout: float) -> str:
    return daemon.wait_for("synced with", timeout=timeout)


def test_a_catch_up_cut_in_the_middle_resumes_without_resending_what_was_stored(tmp_path, daemons):
    a, b = make_labs(tmp_path, 2)
    size = make_vouches(a.home, RECORDS)
    per_record = size / RECORDS
    behind_a_nat(b)
    want = digest(a.home, NOT_LABS)
    da = start(daemons, a)
    with LinkShaper(da.port, rate=RATE, delay=DELAY) as link:
        db = Daemon(b, "--bootstrap", f"/ip4/127.0.0.1/tcp/{link.port}/p2p/{da.peer_id}", listen=None)
        daemons.append(db)
        # cut once B holds about a third: the records arrive and are stored frame by frame
        wait_until(lambda: record_count(b.home) >= RECORDS // 3, timeout=60, what="B's first third")
        link.cut(down=3)
        cut_at = link.carried["down"]
        db.wait_for("interrupted", timeout=30)
        before = record_count(b.home)
        assert RECORDS // 3 <= before < RECORDS, before
        assert digest(b.home, NOT_LABS) != want
        # the link comes back by itself; B redials through it and the next sync carries the rest
        wait_until(lambda: digest(b.home, NOT_LABS) == want, timeout=90, what="B to finish the catch-up")
        after_cut = link.carried["down"] - cut_at
        line = synced_line(db, timeout=30)
        total = link.carried["down"]
    missing = RECORDS + 2 - before  # B ends with A's records and both labs' own
    # (less one if gossip brought A's lab record meanwhile)
    assert any(f"received {n} new record(s)" in line or f"sent {n}," in line for n in (missing, missing - 1)), line
    assert "already held" not in line, line  # nothing stored before the cut came again
    # every byte went through the link (no direct connection around it) ...
    assert total >= size and link.connections >= 2
    # ... and after the cut only what was missing, plus reconciliation and framing
    assert after_cut <= missing * per_record * 1.1 + 16_000, (after_cut, missing, per_record)
    assert after_cut < size * 0.8
    took = float(re.search(r"([\d.]+) s$", line)[1])  # its time is reported
    assert took > 0
    assert b.json("fsck")["ok"]


def test_a_session_that_moves_is_not_stalled_however_long_its_frames_take():
    """Pure: the frame timeout counts from the last bytes moved, not the last whole frame."""
    from fabnode.node.service import events as ev
    from fabnode.node.service import effects as fx
    from fabnode.node.service.service import NodeService, ServiceConfig
    from fabnode.node.service.sync import FRAME_TIMEOUT_MS

    from test_service import MemoryRecords, T0, connect

    svc = NodeService("a", MemoryRecords(), ServiceConfig(outbox_poll_ms=None, seeding=False))
    stream = next(e.stream for e in connect(svc, "b") if isinstance(e, fx.OpenStream))
    svc.handle(ev.StreamOpened(stream), T0)
    now = T0
    for _ in range(10):  # ten frame timeouts' worth of a slow frame, bytes trickling in
        now += FRAME_TIMEOUT_MS - 1000
        svc.handle(ev.StreamProgress(stream), now)
        svc.tick(now)
        assert stream in svc.sessions
    svc.tick(now + FRAME_TIMEOUT_MS)
    assert stream not in svc.sessions  # silence for a whole timeout still ends it
    assert any(isinstance(e, fx.ResetStream) for e in svc.drain())


def test_libp2p_reads_a_frame_that_arrives_in_many_small_pieces():
    """py-libp2p's read_exactly gave up after 100 partial reads, closing any connection whose
    64 KiB Noise message came over a slow link in small segments; patched to count only empty
    reads (node/runtime/pacing.py)."""
    import trio
    from libp2p.io.exceptions import IncompleteReadError
    from libp2p.io.utils import read_exactly

    import fabnode.node.runtime.host  # noqa: F401 (applies the patch)

    class Trickle:
        def __init__(self, data: bytes, piece: int) -> None:
            self.data, self.piece = data, piece

        async def read(self, n: int) -> bytes:
            out, self.data = self.data[:min(n, self.piece)], self.data[min(n, self.piece):]
            return out

    frame = bytes(range(256)) * 256
    assert trio.run(read_exactly, Trickle(frame, 100), len(frame)) == frame  # 656 reads
    try:
        trio.run(read_exactly, Trickle(frame[:1000], 100), len(frame))
    except IncompleteReadError as exc:
        assert "received 1000 bytes" in str(exc)
    else:
        raise AssertionError("a reader at its end must still fail")
