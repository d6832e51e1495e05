"""Disk use the operator controls (issue 15): ``du``, ``unpin`` and ``gc``.

* **Pin kinds** are read from what the store already says (no new bookkeeping): a pin whose
  source starts ``seeded:DESIGN`` is *followed* when that design is followed, else *seeded*;
  ``fetched:`` is *fetched*, ``import:`` is *imported*; any other pin is *published* when it is
  the bundle of a version this lab signed, else *added* (``add``, and attestation evidence).
* **du** splits the store's bytes three ways that add up to ``SUM(size)`` of the blocks table:
  *pinned* (reached from a pin), *partial* (reached only from a lease: a fetch in progress or
  interrupted less than a week ago) and *unreferenced* (what ``gc`` frees now). Per kind and per
  design a block counts once within that row; a block shared by two designs counts in both
  designs' ``bytes`` and in neither's ``own_bytes`` (what unpinning that design alone would free).
* **unpin** removes pins and never deletes a block; it says what ``gc`` would then free.
* **gc** holds ``HOME/gc.lock`` (one gc at a time, see storage/gc.py), marks, sweeps, drops
  expired leases and reports the bytes freed in the store and the file's size before and after.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fabnode.protocol.cid import cid_str, parse_cid
from fabnode.protocol.errors import FabnodeError
from fabnode.storage import BlockStore
from fabnode.storage import gc as storegc
from fabnode.storage import packs as storepacks
from fabnode.storage.records import RecordStore

from fabnode.node.home import Home

KINDS = ("added", "published", "followed", "seeded", "fetched", "imported")
GC_LOCK = "gc.lock"
TEST_BATCH_ENV = "FABNODE_TEST_GC_BATCH_ROWS"
"""Tests only: rows per sweep transaction, so that a small store takes many (the SIGKILL test)."""
TEST_NOW_ENV = "FABNODE_TEST_NOW_MS"
"""Tests only: the wall-clock time (ms) gc judges leases by, to show that interrupted fetches'
leftovers are kept for storage.gc.LEASE_KEEP_MS and collected after."""


def now_ms() -> int:
    forced = os.environ.get(TEST_NOW_ENV)
    return int(forced) if forced else time.time_ns() // 1_000_000


def pin_kind(source: str, cid: bytes, followed: set[bytes], mine: set[bytes]) -> str:
    if source.startswith("seeded:"):
        try:
            design = parse_cid(source[len("seeded:"):])
        except FabnodeError:
            return "seeded"
        return "followed" if design in followed else "seeded"
    if source.startswith("fetched:"):
        return "fetched"
    if source.startswith("import:"):
        return "imported"
    return "published" if cid in mine else "added"


def _open(home: Home) -> tuple[BlockStore, RecordStore]:
    store = home.open_store()
    return store, RecordStore(store.db.conn)


def _block_sizes(store: BlockStore) -> Iterator[tuple[bytes, int]]:
    yield from store.db.conn.execute("SELECT cid, size FROM blocks")


def _dag_of(store: BlockStore, root: bytes) -> set[bytes]:
    from fabnode.protocol.dag import DagTooDeep, walk
    from fabnode.protocol.errors import InvalidBlock

    out: set[bytes] = set()
    try:
        for visit in walk(store.get_unverified, root, has_block=lambda _c: True):
            out.add(visit.cid)
    except (DagTooDeep, InvalidBlock):
        pass
    return out


# ------------------------------------------------------------------ du


@dataclass
class DiskUse:
    blocks: int = 0
    total_bytes: int = 0
    pinned_bytes: int = 0
    partial_bytes: int = 0
    unreferenced_bytes: int = 0
    unreferenced_blocks: int = 0
    file_bytes: int = 0
    free_pages_bytes: int = 0
    kinds: dict = field(default_factory=dict)
    designs: list = field(default_factory=list)
    pins: list = field(default_factory=list)

    def as_json(self) -> dict:
        return {"blocks": self.blocks, "total_bytes": self.total_bytes, "pinned_bytes": self.pinned_bytes,
                "partial_bytes": self.partial_bytes, "unreferenced_bytes": self.unreferenced_bytes,
                "unreferenced_blocks": self.unreferenced_blocks, "file_bytes": self.file_bytes,
                "free_pages_bytes": self.free_pages_bytes, "kinds": self.kinds, "designs": self.designs,
                "pins": self.pins}


def file_size(store: BlockStore) -> tuple[int, int]:
    """(bytes of the database file, its write-ahead log and the pack files; bytes of those free
    for reuse: SQLite's free pages, pack bytes no block uses any more and pack tails past the
    committed end)."""
    from fabnode.storage.packs import pack_report

    path = store.db.path
    size = 0
    for p in (path, path.with_name(path.name + "-wal")):
        with contextlib.suppress(OSError):
            size += p.stat().st_size
    page, free = (store.db.conn.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_size", "freelist_count"))
    packs = pack_report(store)
    return size + packs.file_bytes, page * free + packs.dead_bytes + packs.tail_bytes


def disk_use(home: Home) -> DiskUse:
    store, records = _open(home)
    me = home.identity().did
    conn = store.db.conn
    report = DiskUse()
    conn.execute("BEGIN")  # one snapshot: the totals add up even while others write
    try:
        followed = set(records.follows())
        mine = {r[0] for r in conn.execute("SELECT bundle FROM versions WHERE author = ?", (me,))}
        pins = store.pins()
        pin_dags = {p.cid: _dag_of(store, p.cid) for p in pins}
        leased: set[bytes] = set()
        for root in storegc.live_leases(conn, now_ms() - storegc.LEASE_KEEP_MS):
            leased |= _dag_of(store, root)
        # design -> its bundles held here (any version whose bundle root is stored)
        design_bundles: dict[bytes, set[bytes]] = {}
        titles: dict[bytes, str] = {}
        for design, bundle, title in conn.execute(
                "SELECT v.design, v.bundle, coalesce(d.title, v.title) FROM versions v"
                " LEFT JOIN designs d ON d.design = v.design ORDER BY v.ts"):
            if store.has(bundle):
                design_bundles.setdefault(design, set()).add(bundle)
                titles[design] = title
        dag_cache = dict(pin_dags)
        design_dags = {}
        for design, bundles in design_bundles.items():
            cids: set[bytes] = set()
            for b in bundles:
                if b not in dag_cache:
                    dag_cache[b] = _dag_of(store, b)
                cids |= dag_cache[b]
            design_dags[design] = cids
        # owner of each block among designs: the one design, or None when shared
        owner: dict[bytes, bytes | None] = {}
        for design, cids in design_dags.items():
            for c in cids:
                owner[c] = design if c not in owner else (None if owner[c] != design else design)
        pinned = set().union(*pin_dags.values()) if pin_dags else set()
        kind_cids: dict[str, set[bytes]] = {k: set() for k in KINDS}
        kind_pins = {k: 0 for k in KINDS}
        pin_kinds = {}
        for p in pins:
            kind = pin_kind(p.source, p.cid, followed, mine)
            pin_kinds[p.cid] = kind
            kind_cids[kind] |= pin_dags[p.cid]
            kind_pins[kind] += 1
        sizes: dict[bytes, int] = {}
        design_bytes = {d: 0 for d in design_dags}
        design_own = {d: 0 for d in design_dags}
        kind_bytes = {k: 0 for k in KINDS}
        pin_bytes = {p.cid: 0 for p in pins}
        wanted = set(owner) | pinned | leased
        for cid, size in _block_sizes(store):
            report.blocks += 1
            report.total_bytes += size
            if cid in pinned:
                report.pinned_bytes += size
            elif cid in leased:
                report.partial_bytes += size
            else:
                report.unreferenced_bytes += size
                report.unreferenced_blocks += 1
            if cid in wanted:
                sizes[cid] = size
        pinned_by: dict[bytes, list[bytes]] = {}
        for root, cids in pin_dags.items():
            for c in cids:
                pinned_by.setdefault(c, []).append(root)
        for design, cids in design_dags.items():
            own_bundles = design_bundles[design]
            design_bytes[design] = sum(sizes.get(c, 0) for c in cids)
            # own: no other design has it, and no pin outside this design's bundles reaches it
            design_own[design] = sum(sizes.get(c, 0) for c in cids if owner.get(c) == design
                                     and all(r in own_bundles for r in pinned_by.get(c, ())))
        for kind, cids in kind_cids.items():
            kind_bytes[kind] = sum(sizes.get(c, 0) for c in cids)
        for p in pins:
            pin_bytes[p.cid] = sum(sizes.get(c, 0) for c in pin_dags[p.cid])
        report.file_bytes, report.free_pages_bytes = file_size(store)
    finally:
        conn.execute("COMMIT")
    report.kinds = {k: {"bytes": kind_bytes[k], "pins": kind_pins[k]} for k in KINDS}
    report.designs = sorted(({"design": cid_str(d), "title": titles[d], "bytes": design_bytes[d],
                              "own_bytes": design_own[d], "bundles": len(design_bundles[d]),
                              "pinned_bundles": sum(1 for b in design_bundles[d] if b in pin_dags)}
                             for d in design_dags), key=lambda r: (-r["bytes"], r["design"]))
    report.pins = [{"cid": cid_str(p.cid), "kind": pin_kinds[p.cid], "source": p.source, "bytes": pin_bytes[p.cid]}
                   for p in pins]
    return report


# ------------------------------------------------------------------ unpin


@dataclass
class Unpinned:
    pins: list[dict]
    would_free_bytes: int
    would_free_blocks: int
    warnings: list[str]

    def as_json(self) -> dict:
        return {"unpinned": self.pins, "gc_would_free_bytes": self.would_free_bytes,
                "gc_would_free_blocks": self.would_free_blocks, "warnings": self.warnings}


def unpin(home: Home, target: str) -> Unpinned:
    """Remove the pin ``target`` names (a pinned CID, a version: its bundle, a design: every
    pinned bundle of its versions); no block is deleted."""
    store, records = _open(home)
    cid = parse_cid(target)
    conn = store.db.conn
    followed = set(records.follows())
    warnings: list[str] = []
    design = None
    roots: list[bytes]
    version = records.version(cid)
    if conn.execute("SELECT 1 FROM pins WHERE cid = ?", (cid,)).fetchone():
        roots = [cid]
    elif version is not None and not version.is_first:
        roots = [version.bundle]
        design = version.design
    elif records.design(cid) is not None or (version is not None and version.is_first):
        design = cid
        roots = records.bundles(cid)
    else:
        raise FabnodeError(f"{cid_str(cid)} is not pinned here, and is no design or version known here "
                           "('fabnode du' lists the pins)")
    with store.write_transaction():
        rows = []
        for root in roots:
            row = conn.execute("SELECT cid, source FROM pins WHERE cid = ?", (root,)).fetchone()
            if row is not None:
                rows.append(row)
                conn.execute("DELETE FROM pins WHERE cid = ?", (root,))
    if not rows:
        raise FabnodeError(f"nothing of {'design' if design == cid else 'version'} {cid_str(cid)} is pinned here")
    if design is None:  # a bundle named directly: which design is it?
        row = conn.execute("SELECT design FROM versions WHERE bundle = ? LIMIT 1", (cid,)).fetchone()
        design = row[0] if row else None
    for root, _source in rows:  # one pin per CID: another design with the very same files loses it too
        others = {r[0] for r in conn.execute("SELECT design FROM versions WHERE bundle = ?", (root,))} - {design}
        for other in sorted(others):
            warnings.append(f"{cid_str(root)} is also the files of design {cid_str(other)}: unpinned there too")
    if design is not None and design in followed:
        warnings.append(f"design {cid_str(design)} is followed: the daemon will fetch it again; "
                        f"'fabnode unfollow {cid_str(design)}' stops that")
    elif design is not None and home.setting("seeding.follow_trusted_authors") and \
            any(r[1].startswith("seeded:") for r in rows):
        warnings.append("the daemon seeded it (a trusted author's design) and may fetch it again")
    marked = storegc.mark(store, now_ms())
    free_blocks = free_bytes = 0
    for c, size in _block_sizes(store):
        if c not in marked.cids:
            free_blocks += 1
            free_bytes += size
    return Unpinned([{"cid": cid_str(r[0]), "source": r[1]} for r in rows], free_bytes, free_blocks, warnings)


# ------------------------------------------------------------------ gc


@dataclass
class GcReport:
    freed_blocks: int
    freed_bytes: int
    kept_blocks: int
    kept_bytes: int
    partial_kept: int
    leases_dropped: int
    file_before: int
    file_after: int
    free_pages_bytes: int
    compacted: bool
    seconds: float

    def as_json(self) -> dict:
        return dict(self.__dict__)


@contextlib.contextmanager
def gc_lock(home_path: Path, *, wait: bool = False) -> Iterator[None]:
    """One sweep at a time per home (storage/gc.py's rowid argument needs it); the daemon's
    eviction ``wait``s for a running gc, the command line says one is running."""
    fd = os.open(home_path / GC_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise FabnodeError("another 'fabnode gc' is running on this home: wait for it to end") from None
        yield
    finally:
        os.close(fd)


def collect(home: Home, *, compact: bool = False, progress=lambda n: None) -> GcReport:
    """Delete every block no pin and no live lease reaches (storage/gc.py), move blocks a home
    from before migration 014 holds inline into packs, and compact the packs that are mostly
    dead (storage/packs.py); with ``compact``, every pack with a dead byte, then VACUUM the
    database so the file shrinks (refused while the daemon runs)."""
    started = time.monotonic()
    store = home.open_store()
    if os.environ.get(TEST_BATCH_ENV):
        storegc.BATCH_ROWS = int(os.environ[TEST_BATCH_ENV])
    with gc_lock(home.path):
        if compact:
            _refuse_compact_with_daemon(home)
        before, _ = file_size(store)
        now = now_ms()
        marked = storegc.mark(store, now)
        leased = marked.roots - set(storegc.pinned_roots(store.db.conn))
        swept = storegc.sweep(store, marked, progress=progress)
        dropped = storegc.drop_expired_leases(store, marked.lease_cutoff_ms)
        storepacks.move_inline_blocks(store)  # a home from before migration 014: resumable
        storepacks.compact(store, everything=compact)
        store.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if compact:
            store.db.conn.execute("VACUUM")
            store.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        after, free = file_size(store)
        kept_blocks, kept_bytes = store.count()
    return GcReport(swept.blocks, swept.bytes, kept_blocks, kept_bytes, len(leased), dropped, before, after,
                    free, compact, round(time.monotonic() - started, 3))


def _refuse_compact_with_daemon(home: Home) -> None:
    from fabnode.node.runtime.lock import LOCK_FILE

    fd = os.open(home.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except BlockingIOError:
        raise FabnodeError("gc --compact rewrites the whole database and would hold up the running daemon's "
                           "writes: stop 'fabnode run' first (plain 'fabnode gc' is safe while it runs)") from None
    finally:
        os.close(fd)


def evict_bundle(db_path: Path, bundle: bytes) -> int:
    """The daemon's seeding budget: unpin a seeded bundle and delete the blocks only it used (a
    sweep limited to its DAG), then compact the packs that left mostly unused. Runs in a worker
    thread with its own connection; returns bytes freed."""
    from fabnode.storage import open_db

    store = BlockStore(open_db(db_path))
    try:
        with gc_lock(db_path.parent, wait=True):
            cids = _dag_of(store, bundle)
            with store.write_transaction():
                store.db.conn.execute("DELETE FROM pins WHERE cid = ? AND source LIKE 'seeded:%'", (bundle,))
            marked = storegc.mark(store, now_ms())
            freed = storegc.sweep(store, marked, only=cids).bytes
            storepacks.compact(store)  # the freed bytes leave the disk once a pack is mostly unused
            return freed
    finally:
        store.close()
