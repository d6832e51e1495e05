"""Carrying designs without a network: ``export``, ``have`` and ``import`` (docs/protocol.md §10).

An export is a CARv1 file whose single root is an *export index* block (DAG-CBOR)::

    {"type": "fabnode-export", "version": 1, "records": [Link…], "bundles": [Link…],
     "created": <ms>, "exporter": "did:key:…"}

followed by the index, the records, and every block of the chosen bundles, each DAG depth-first.
``export --bundle CID`` writes a plain CAR rooted at that bundle, which ``ipfs-car unpack`` reads.

A *have* file tells another lab what this node holds, so that its ``export --for`` sends only
what is missing::

    {"type": "fabnode-have", "version": 1, "node": "did:key:…", "created": <ms>,
     "records": <bytes: the sorted 32-byte sha2-256 digests of every record id, concatenated>,
     "bundles": [Link…],          # bundles held completely
     "blocks": <bytes: the sorted sha2-256 digests of every block held of every kept DAG>}

One DAG-CBOR block, about 32 bytes per record and per block. The exporting lab expands each
listed bundle it can walk into block CIDs, and skips every block whose digest ``blocks`` lists
(issue 20: from any design or version, complete or not, also ones the exporter does not hold),
so a new version sends only its new blocks. ``blocks`` is exact, never a filter: on a stick there
is no second round trip to repair a false positive. Have files without it (older) still work.

Import streams the CAR (bounded memory), verifies every block as it arrives, and writes inside
one transaction; records are staged, all verified, and only then indexed. Anything wrong —
a bad block, a bad record, a hostile name, a block nobody asked for — rolls the whole file
back, so the store is exactly as before; a file imported twice changes nothing the second time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fabnode import interrupts
from fabnode.protocol.car import CarError, Header, encode_header, encode_section, encode_section_head, read_car
from fabnode.protocol.cid import DAG_CBOR, RAW, cid_codec, cid_str, make_cid, parse_cid
from fabnode.protocol.dagcbor import Link, decode, encode
from fabnode.protocol.errors import DiskFull, FabnodeError, InvalidBlock, MissingBlock
from fabnode.protocol.paths import directory_problem
from fabnode.protocol import dag
from fabnode.protocol.dag import MAX_DEPTH
from fabnode.protocol.unixfs import dag_sizes, decode as decode_unixfs, directory_entries
from fabnode.storage import BlockStore, Pin
from fabnode.storage.blocks import WRITEBACK_BYTES, start_writeback
from fabnode.storage.db import is_disk_full, room_for
from fabnode.storage.records import RecordStore

from fabnode.node.home import Home

EXPORT_TYPE = "fabnode-export"
HAVE_TYPE = "fabnode-have"
FORMAT_VERSION = 1
MAX_HAVE_BYTES = 64 << 20
MAX_HAVE_BLOCKS = 1_500_000
"""Block digests a have file lists at most (48 MB); a larger home lists that many, and the
exporter sends the rest again (bytes, never correctness)."""
MAX_LINKS_PER_NODE = 20_000
"""Widest dag-pb node an import accepts; a 2 MiB block could otherwise carry ~50,000 links."""
READ_CHUNK = 1 << 20

Progress = Callable[[int], None]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _open(home: Home) -> tuple[BlockStore, RecordStore]:
    stores = home.open_stores()
    return stores.blocks, stores.records


# ------------------------------------------------------------------ walking stored DAGs


def walk_dag(store: BlockStore, root: bytes, *, skip: set[bytes] = frozenset()) -> Iterator[tuple[bytes, bytes]]:
    """Every block of a stored UnixFS DAG, depth-first, each once (verified as read); the DAGs
    under blocks in ``skip`` are left out."""
    for visit in dag.walk(store.get, root, skip=skip):
        yield visit.cid, visit.data


def verified_ahead(store: BlockStore, blocks: Iterable[tuple[bytes, bytes | None]]) -> Iterator[tuple[bytes, bytes]]:
    """(cid, data) of each of ``blocks`` in order, every one verified: a block given as
    (cid, None) is read here and re-hashed by a pool of threads (hashlib releases the GIL) while
    the next ones are read and the caller writes the previous ones, a unit of about 4 MiB at a
    time (node/local/files.py: UNIT_BYTES); a block given with its data was verified already
    (dag-pb nodes, read by the walk). A missing or damaged block raises as
    :meth:`BlockStore.get` does."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from fabnode.node.local.files import HASH_THREADS, UNITS_AHEAD, _block_units

    def read(pairs: Iterable[tuple[bytes, bytes | None]]) -> Iterator[tuple[bytes, bytes, bool]]:
        """(cid, data, whether it is verified already)."""
        for cid, data in pairs:
            if data is not None:
                yield cid, data, True
                continue
            data = store.get_unverified(cid)
            if data is None:
                raise MissingBlock(f"block {cid_str(cid)} is not in this store")
            yield cid, data, False

    def verify(unit: list[tuple[bytes, bytes, bool]]) -> list[tuple[bytes, bytes]]:
        return [(cid, data if checked else store.verified(cid, data)) for cid, data, checked in unit]

    window: deque = deque()
    with ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="fabnode-verify") as pool:
        for unit in _block_units(read(blocks)):
            window.append(pool.submit(verify, unit))
            if len(window) > UNITS_AHEAD:
                yield from window.popleft().result()
        while window:
            yield from window.popleft().result()


def _as_pairs(visits: Iterable[dag.Visit]) -> Iterator[tuple[bytes, bytes | None]]:
    """A walk's visits as :func:`verified_ahead` takes them (a leaf the walk did not read: None)."""
    return ((visit.cid, visit.data) for visit in visits)


def _always(_: bytes) -> bool:
    """For a walk of a DAG known to be complete: leaves are not looked up, :func:`verified_ahead`
    reads them (and says so if one is gone after all)."""
    return True


def dag_cids(store: BlockStore, root: bytes) -> tuple[set[bytes], bool]:
    """(every CID of the DAG this store can see, whether the DAG is complete) without reading leaves."""
    return dag.dag_cids(store.get_unverified, store.has, root)


# ------------------------------------------------------------------ have


@dataclass(frozen=True)
class Have:
    node: str
    created: int
    records: frozenset[bytes]
    bundles: tuple[bytes, ...]
    blocks: frozenset[bytes] = frozenset()
    """sha2-256 digests of blocks held (empty in have files written before issue 20)."""

    def holds(self, cid: bytes) -> bool:
        return _sha256_digest(cid) in self.blocks


def _sha256_digest(cid: bytes) -> bytes | None:
    """The 32-byte digest of a CIDv1 with a one-byte codec and sha2-256 (what fabnode stores)."""
    return cid[4:] if len(cid) == 36 and cid[0] == 1 and cid[2:4] == b"\x12\x20" else None


def held_digests(store: BlockStore, roots: list[bytes], limit: int = MAX_HAVE_BLOCKS) -> list[bytes]:
    """Sorted digests of the blocks held of the DAGs under ``roots`` (complete or not), at most
    ``limit``; only dag-pb nodes are read."""
    out: set[bytes] = set()
    for root in roots:
        for visit in dag.walk(store.get_unverified, root, has_block=store.has):
            digest = _sha256_digest(visit.cid)
            if visit.present and digest is not None:
                out.add(digest)
    return sorted(out)[:limit]


def write_have(home: Home, out: Path) -> dict:
    store, records = _open(home)
    kept = list(dict.fromkeys(records.bundles() + [p.cid for p in store.pins()]))
    complete = [b for b in kept if dag_cids(store, b)[1]]
    digests = records.record_digests()
    blocks = held_digests(store, kept)
    block = encode({"type": HAVE_TYPE, "version": FORMAT_VERSION, "node": home.identity().did, "created": _now_ms(),
                    "records": b"".join(digests), "bundles": [Link(b) for b in complete], "blocks": b"".join(blocks)})
    _write_atomically(out, [block])
    return {"path": str(out), "records": len(digests), "bundles": len(complete), "blocks": len(blocks),
            "bytes": len(block)}


def read_have(path: Path) -> Have:
    size = path.stat().st_size
    if size > MAX_HAVE_BYTES:
        raise FabnodeError(f"{path} is {size} bytes: a have file is at most {MAX_HAVE_BYTES >> 20} MiB")
    try:
        value = decode(path.read_bytes())
    except InvalidBlock as exc:
        raise FabnodeError(f"{path} is not a fabnode have file ({exc})") from None
    if not isinstance(value, dict) or value.get("type") != HAVE_TYPE:
        raise FabnodeError(f"{path} is not a fabnode have file (no type '{HAVE_TYPE}')")
    if value.get("version") != FORMAT_VERSION:
        raise FabnodeError(f"{path} is a have file of version {value.get('version')!r}; this fabnode reads version 1")
    digests, bundles = value.get("records"), value.get("bundles")
    if not isinstance(digests, bytes) or len(digests) % 32 or not isinstance(bundles, list):
        raise FabnodeError(f"{path}: malformed have file (records must be 32-byte digests, bundles a list)")
    blocks = value.get("blocks", b"")
    if not isinstance(blocks, bytes) or len(blocks) % 32:
        raise FabnodeError(f"{path}: malformed have file (blocks must be 32-byte digests)")
    return Have(str(value.get("node", "")), int(value.get("created", 0) or 0),
                frozenset(digests[i:i + 32] for i in range(0, len(digests), 32)),
                tuple(b for b in bundles if isinstance(b, bytes)),
                frozenset(blocks[i:i + 32] for i in range(0, len(blocks), 32)))


# ------------------------------------------------------------------ export


@dataclass
class ExportSummary:
    path: str
    records: int = 0
    bundles: int = 0
    blocks: int = 0
    bytes: int = 0

    def as_json(self) -> dict:
        return {"path": self.path, "records": self.records, "bundles": self.bundles, "blocks": self.blocks,
                "bytes": self.bytes}


def _write_atomically(out: Path, pieces) -> int:
    """Write ``pieces`` to a temporary sibling, fsync, and rename into place; returns bytes.

    Whatever stops it (a full disk, Ctrl-C, SIGTERM) removes the temporary sibling. On a full
    disk the rest of ``pieces`` is counted, not written, so the message can say how large the
    whole file would have been."""
    from fabnode.node.local.files import output_full_message

    if not out.parent.is_dir():  # else the error would name the hidden temporary file below
        raise FabnodeError(f"cannot write {out}: folder {out.parent} does not exist (create it, or choose another path)")
    tmp = out.with_name(f".{out.name}.fabnode-partial")
    pieces = iter(pieces)
    written = written_out = 0
    try:
        with open(tmp, "wb") as f:
            for piece in pieces:
                written += len(piece)
                f.write(piece)
                if written - written_out >= WRITEBACK_BYTES:  # the disk writes while we read and hash
                    f.flush()
                    start_writeback(f.fileno(), written_out, written - written_out)
                    written_out = written
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise DiskFull(output_full_message(out, written + sum(len(p) for p in pieces))) from None
    finally:
        with interrupts.deferred():
            if tmp.exists():
                tmp.unlink()
    return written


def export(home: Home, out: Path, *, designs: list[str] = (), records_only: bool = False, bundle: str | None = None,
           for_have: Path | None = None, progress: Progress = lambda n: None) -> ExportSummary:
    """Write a CAR for another lab (docs/protocol.md §10.1); see the module docstring for its layout."""
    store, records = _open(home)
    summary = ExportSummary(str(out))
    have = read_have(for_have) if for_have is not None else None
    if bundle is not None:
        root = _files_root(store, records, bundle)
        if not dag_cids(store, root)[1]:
            what = bundle if cid_str(root) in bundle else f"{bundle} ({cid_str(root)})"
            raise FabnodeError(f"the files {what} are not all held here: fetch them first with "
                               f"'fabnode get {bundle}' (through the daemon or --peer), then export again")
        summary.bundles = 1

        def plain() -> Iterator[bytes]:
            yield encode_header([root])
            for cid, data in verified_ahead(store, _as_pairs(dag.walk(store.get, root, has_block=_always))):
                summary.blocks += 1
                progress(len(data))
                yield encode_section_head(cid, len(data))
                yield data

        summary.bytes = _write_atomically(out, plain())
        return summary

    # which records and bundles
    if designs:
        design_cids = []
        for text in designs:
            cid = parse_cid(text)
            row = records.version(cid)
            design = row.design if row else (cid if records.design(cid) else None)
            if design is None:
                raise FabnodeError(f"no design {cid_str(cid)} is known here")
            design_cids.append(design)
        chosen = [r for d in design_cids for r in records.records_of(d)]
        bundle_roots = [b for d in design_cids for b in records.bundles(d)]
    else:
        chosen = list(records.records_of())
        bundle_roots = records.bundles() + [p.cid for p in store.pins()]
    if have is not None:
        chosen = [(cid, data) for cid, data in chosen if cid[4:] not in have.records]
    bundle_roots = [] if records_only else [b for b in dict.fromkeys(bundle_roots) if dag_cids(store, b)[1]]
    skip: set[bytes] = set()
    """Blocks left out: of their complete bundles, and (issue 20) every block they hold at all."""
    if have is not None:
        for theirs in have.bundles:
            skip |= dag_cids(store, theirs)[0]
        bundle_roots = [b for b in bundle_roots if b not in skip]
        if have.blocks:  # of any design or version, complete or not
            for root in bundle_roots:
                skip |= {cid for cid in dag_cids(store, root)[0] if have.holds(cid)}
    index = encode({"type": EXPORT_TYPE, "version": FORMAT_VERSION, "created": _now_ms(),
                    "exporter": home.identity().did, "records": [Link(cid) for cid, _ in chosen],
                    "bundles": [Link(b) for b in bundle_roots]})
    if len(index) > 2 << 20:
        raise FabnodeError(f"the export index would be {len(index)} bytes (over the 2 MiB block limit): "
                           "export fewer designs at a time, or use --for with the other lab's have file")
    index_cid = make_cid(DAG_CBOR, index)
    summary.records, summary.bundles = len(chosen), len(bundle_roots)

    def sections() -> Iterator[bytes]:
        yield encode_header([index_cid])
        yield encode_section(index_cid, index)
        for cid, data in chosen:
            summary.blocks += 1
            yield encode_section(cid, data)
        sent: set[bytes] = set(skip)
        for root in bundle_roots:
            # through the blocks left out to their children (a node they hold may still lack
            # some), reading only dag-pb nodes until a block is to be written
            visits = dag.walk(store.get, root, skip=sent, descend_skipped=True, has_block=store.has)
            for cid, data in verified_ahead(store, _as_pairs(visits)):
                sent.add(cid)
                summary.blocks += 1
                progress(len(data))
                yield encode_section_head(cid, len(data))
                yield data

    summary.bytes = _write_atomically(out, sections())
    return summary


def _files_root(store: BlockStore, records: RecordStore, text: str) -> bytes:
    """The DAG ``export --bundle`` writes: a files CID, a version's or a design's bundle, or a
    path inside one (node/local/resolve.py)."""
    from fabnode.node.local.resolve import resolve_files
    from fabnode.protocol.unixfs import resolve

    files = resolve_files(records, text, held=store.has)
    return resolve(store.get, files.root, files.segments) if files.segments else files.root


def export_size_estimate(home: Home) -> int:
    store = home.open_store()
    return store.count()[1]


# ------------------------------------------------------------------ import


@dataclass
class ImportSummary:
    blocks_new: int = 0
    blocks_known: int = 0
    duplicates: int = 0
    records_new: list[str] = field(default_factory=list)
    records_known: int = 0
    bundles: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    refused_by_chain: list[tuple[str, str]] = field(default_factory=list)
    """(record id, reason): records their author's chain of keys refuses (issue 17), not stored."""

    def as_json(self) -> dict:
        return {"blocks": {"new": self.blocks_new, "known": self.blocks_known, "duplicates": self.duplicates},
                "records": {"new": len(self.records_new), "known": self.records_known},
                "bundles": self.bundles, "rejected": self.rejected,
                "refused_by_chain": [{"record": r, "reason": why} for r, why in self.refused_by_chain]}


class ImportRejected(FabnodeError):
    """The file fails a rule; nothing of it was stored."""


def _file_chunks(path: Path, progress: Progress) -> Iterator[bytes]:
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(READ_CHUNK):
            progress(len(chunk))
            yield chunk


def _is_record(value) -> bool:
    return isinstance(value, dict) and "fabnode" in value and "sig" in value


def _check_bundle(store: BlockStore, root: bytes, where: str) -> set[bytes]:
    """Walk an imported UnixFS DAG: every block present, names safe, bounded; returns its CIDs."""
    paths: dict[bytes, str] = {}
    sub_shards: set[bytes] = set()  # HAMT sub-shards, checked with their HAMT's root

    def get(cid: bytes) -> bytes:
        data = store.get_unverified(cid)
        if data is None:
            raise InvalidBlock(f"block {cid_str(cid)} is neither in the file nor in this store")
        return data

    def path_of(parent: bytes | None, name: str) -> str:
        if parent is None:
            return where
        return f"{paths[parent]}/{name}" if name else paths[parent]

    try:
        for visit in dag.walk(store.get_unverified, root):
            path = paths[visit.cid] = path_of(visit.parent, visit.name)
            if visit.data is None:
                raise ImportRejected(f"{path}: block {cid_str(visit.cid)} is neither in the file nor in this store")
            if cid_codec(visit.cid) == RAW:
                continue
            try:
                node = decode_unixfs(visit.cid, visit.data)
            except InvalidBlock as exc:
                raise ImportRejected(f"{path}: {exc}") from None
            if len(node.links) > MAX_LINKS_PER_NODE:
                raise ImportRejected(f"{path}: a node with {len(node.links)} links (at most {MAX_LINKS_PER_NODE})")
            if node.kind == "directory" and visit.cid not in sub_shards:  # a HAMT is checked whole from its root
                try:
                    entries = directory_entries(get, visit.cid, node, sub_shards)
                except InvalidBlock as exc:
                    raise ImportRejected(f"{path}: {exc}") from None
                problem = directory_problem(link.name for link in entries)
                if problem is not None:
                    raise ImportRejected(f"{path}: the bundle contains {problem}")
    except dag.DagTooDeep as exc:
        raise ImportRejected(f"{path_of(exc.parent, exc.name)}: the DAG is deeper than {MAX_DEPTH} levels") from None
    try:  # sizes that agree with the children, and no decompression bomb
        dag_sizes(store.get_unverified, root, raw_size=store.size)
    except InvalidBlock as exc:
        raise ImportRejected(f"{where}: {exc}") from None
    return set(paths)


def import_car(home: Home, path: Path, *, progress: Progress = lambda n: None, now: int | None = None,
               root: str | None = None) -> ImportSummary:
    """Verify and store a CAR file: all of it, or (on any problem, a full disk, an interrupt
    before the commit) none of it.

    CARv2 and CIDv0 (Kubo) are read too (protocol/car.py ``ipfs_tools``). ``root`` names the DAG
    to keep in place of the header's roots, for a CAR that names none (``ipfs-car pack`` writing
    to stdout); it must be in the file, and every block must belong to it, as with a header root."""
    if not path.is_file():
        raise FabnodeError(f"cannot import {path}: no such file")
    chosen = None
    if root is not None:
        try:
            chosen = parse_cid(root)
        except FabnodeError as exc:
            raise FabnodeError(f"--root: {exc}") from None
    with room_for(home.db_path, f"importing {path.name}", path.stat().st_size):
        return _import_car(home, path, progress, now, chosen)


def _import_car(home: Home, path: Path, progress: Progress, now: int | None, chosen: bytes | None = None) -> ImportSummary:
    from fabnode.node.local.commons import receive_records

    store, records = _open(home)
    now = now if now is not None else _now_ms()
    summary = ImportSummary()
    name = path.name
    try:
        with store.write_transaction(final=True):
            records.clear_staged()
            roots: tuple[bytes, ...] = ()
            in_file: set[bytes] = set()
            index = None
            index_cid = None
            for event in read_car(_file_chunks(path, progress), ipfs_tools=True):
                if isinstance(event, Header):
                    roots = event.roots if chosen is None else (chosen,)
                    continue
                cid, data = event.cid, event.data
                if cid in in_file:
                    summary.duplicates += 1
                    continue
                in_file.add(cid)
                if cid_codec(cid) == DAG_CBOR:
                    value = decode(data)
                    if _is_record(value):
                        records.stage(cid, data)
                        continue
                    if isinstance(value, dict) and value.get("type") == EXPORT_TYPE and cid in roots:
                        index, index_cid = value, cid
                        continue
                if store.has(cid):
                    summary.blocks_known += 1
                else:
                    store.put(cid, data)
                    summary.blocks_new += 1
            if not roots:
                raise ImportRejected("the CAR header names no root (ipfs-car pack writes none when its output "
                                     "goes to stdout): pack again with 'ipfs-car pack DIR --output FILE.car', or "
                                     f"name the root: 'fabnode import {name} --root CID'")
            if index is not None and len(roots) != 1:
                raise ImportRejected("an export file has exactly one root, its index")
            for root in roots:
                if root not in in_file:
                    named = "named in the header" if chosen is None else "given with --root"
                    raise ImportRejected(f"root {cid_str(root)} {named} is not in the file")
            if index is not None:
                wanted_records = _links(index.get("records"), "records")
                bundle_roots = _links(index.get("bundles"), "bundles")
            else:
                wanted_records, bundle_roots = [], list(roots)
            staged = records.staged()
            staged_cids = {cid for cid, _ in staged}
            missing = [c for c in wanted_records if c not in staged_cids]
            if missing:
                raise ImportRejected(f"record {cid_str(missing[0])} listed in the index is not in the file")
            received = receive_records(records, staged, now=now)
            if received.rejected:
                where, why = received.rejected[0]
                raise ImportRejected(f"{where}: {why}")
            summary.records_new, summary.records_known = received.new, len(received.known)
            summary.refused_by_chain = list(received.refused_by_chain)
            reachable: set[bytes] = set(staged_cids) | ({index_cid} if index_cid else set())
            for root in bundle_roots:
                bundle_cids = _check_bundle(store, root, f"{name}: bundle {cid_str(root)}")
                reachable |= bundle_cids
                node = decode_unixfs(root, store.get(root))
                # a folder's size is the bytes of all its blocks, as for an add or a fetch (a
                # directory node itself has no file size: `ls` showed imported folders as "0 B")
                size = node.filesize if node.kind == "file" else store.total_size(bundle_cids)
                store.pin(Pin(root, node.kind, size, 0, f"import:{name}", now), replace=False)
                summary.bundles.append(cid_str(root))
            unrelated = in_file - reachable
            if unrelated:
                first = min(unrelated)
                raise ImportRejected(f"{len(unrelated)} block(s) in the file are not part of anything it exports "
                                     f"(first: {cid_str(first)})")
            records.clear_staged()
    except CarError as exc:
        if _is_have_file(path):
            raise ImportRejected(f"{name} is a have file (the list of what a lab holds), not an export: on the lab "
                                 f"that has the designs run 'fabnode export OUT.car --for {name}', then import "
                                 "OUT.car here") from None
        raise ImportRejected(f"{name}: {exc}") from None
    except (ImportRejected, MissingBlock) as exc:
        raise ImportRejected(str(exc) if str(exc).startswith(name) else f"{name}: {exc}") from None
    return summary


def _is_have_file(path: Path) -> bool:
    """Whether a file that is no CAR is a `fabnode have` file (a common mix-up on a stick)."""
    try:
        read_have(path)
    except (FabnodeError, OSError):
        return False
    return True


def _links(value, what: str) -> list[bytes]:
    if not isinstance(value, list) or not all(isinstance(v, bytes) for v in value):
        raise ImportRejected(f"the export index's {what} must be a list of CID links")
    return value
