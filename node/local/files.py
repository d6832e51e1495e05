"""Moving files between the filesystem and the block store: ``add``, ``ls``, ``cat``, ``get``.

What ``add`` takes from a folder (decided here, documented in README and docs/design.md):

* regular files and directories only; a **symlink, FIFO, socket or device inside the tree is
  refused** with its path named, so a bundle never silently differs from the folder and nothing
  outside the tree is ever read (the top-level path itself may be a symlink: you named it);
* names starting with ``.`` (``.git``, ``.DS_Store``) are **skipped**, as ``ipfs-car pack`` does,
  unless ``include_hidden``; empty directories are **dropped**, as ipfs-car does; both are
  counted in the result so the caller can say so. This keeps ``fabnode add DIR`` and
  ``ipfs-car pack DIR`` giving the same CID;
* a name that is not UTF-8, or that could not be written back safely (``\\``), is refused;
* a folder whose links pass Helia's 256 KiB estimate is written as a HAMT-sharded directory,
  as Helia and Kubo do (ipfs-car shards above 1,000 entries instead: there the CIDs differ).

The whole add is one write transaction: its blocks and its pin appear together or not at all.
``get`` checks every name of the DAG before writing anything, writes into a fresh temporary
directory beside the output with ``O_EXCL|O_NOFOLLOW``, and renames it into place at the end.
"""

from __future__ import annotations

import os
import queue
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from fabnode import interrupts
from fabnode.protocol.chunker import DEFAULT_PROFILE, profile_chunks
from fabnode.protocol.cid import RAW, cid_str, make_cid, parse_cid
from fabnode.protocol.dag import MAX_DEPTH
from fabnode.protocol.errors import DiskFull, FabnodeError, InvalidBlock, human_size
from fabnode.protocol.paths import directory_problem, segment_problem
from fabnode.protocol.unixfs import (
    CHUNK_SIZE,
    Built,
    FileBuilder,
    build_directory_blocks,
    decode,
    directory_entries,
    iter_file,
    resolve,
)
from fabnode.storage import BlockStore, Pin
from fabnode.storage.blocks import GROUP_BYTES
from fabnode.storage import check
from fabnode.storage.db import is_disk_full, reading

Progress = Callable[[int], None]
T = TypeVar("T")


def _noop(_: int) -> None:
    pass


# ------------------------------------------------------------------ add


@dataclass
class _FilePlan:
    path: Path
    size: int


@dataclass
class _DirPlan:
    path: Path
    entries: list[tuple[str, _FilePlan | _DirPlan]] = field(default_factory=list)


@dataclass(frozen=True)
class AddResult:
    cid: str
    size: int
    files: int
    skipped_hidden: int
    dropped_empty_dirs: int

    def as_json(self) -> dict:
        return {"cid": self.cid, "size": self.size, "files": self.files,
                "skipped_hidden": self.skipped_hidden, "dropped_empty_dirs": self.dropped_empty_dirs}


class _Scan:
    """First pass over the folder: decide everything, read no content, write nothing."""

    def __init__(self, include_hidden: bool) -> None:
        self.include_hidden = include_hidden
        self.files = 0
        self.bytes = 0
        self.skipped_hidden = 0
        self.dropped_empty_dirs = 0

    def _check_name(self, path: Path, name: str) -> None:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise FabnodeError(f"cannot add {path}: its name is not valid UTF-8") from None
        problem = segment_problem(name)
        if problem is not None:
            raise FabnodeError(f"cannot add {path}: {problem} cannot be written back safely")

    def file(self, path: Path, st: os.stat_result) -> _FilePlan:
        if not os.access(path, os.R_OK):
            raise FabnodeError(f"cannot read {path}: permission denied")
        self.files += 1
        self.bytes += st.st_size
        return _FilePlan(path, st.st_size)

    def directory(self, path: Path, depth: int = 0) -> _DirPlan | None:
        if depth > MAX_DEPTH:
            raise FabnodeError(f"cannot add {path}: folders nested deeper than {MAX_DEPTH}")
        try:
            with os.scandir(path) as it:
                dirents = sorted(it, key=lambda d: d.name)
        except PermissionError:
            raise FabnodeError(f"cannot read {path}: permission denied") from None
        plan = _DirPlan(path)
        for entry in dirents:
            child = Path(entry.path)
            if entry.name.startswith(".") and not self.include_hidden:
                self.skipped_hidden += 1
                continue
            self._check_name(child, entry.name)
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                raise FabnodeError(
                    f"cannot add {child}: it is a symlink (to {os.readlink(child)!r}); fabnode never "
                    "stores symlinks: replace it with the file itself, or move it out of the folder"
                )
            if stat.S_ISDIR(st.st_mode):
                sub = self.directory(child, depth + 1)
                if sub is None:
                    self.dropped_empty_dirs += 1
                else:
                    plan.entries.append((entry.name, sub))
            elif stat.S_ISREG(st.st_mode):
                plan.entries.append((entry.name, self.file(child, st)))
            else:
                raise FabnodeError(f"cannot add {child}: it is not a regular file or folder (a device, FIFO or socket)")
        return plan if plan.entries else None


def _read_chunks(path: Path) -> Iterator[bytes]:
    """Full 1 MiB chunks (a short read is retried) and then the remainder."""
    with open(path, "rb", buffering=0) as f:
        while True:
            chunk = f.read(CHUNK_SIZE)
            if not chunk:
                return
            while len(chunk) < CHUNK_SIZE:
                more = f.read(CHUNK_SIZE - len(chunk))
                if not more:
                    break
                chunk += more
            yield chunk


def in_thread(items: Iterator[T], depth: int = 8) -> Iterator[T]:
    """Run a producer in a thread, ``depth`` items ahead of the consumer.

    Reading and hashing (producer) and SQLite writes (consumer) both release the GIL, so a
    large file is read and hashed while the previous chunks are being stored.
    """
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                handoff.put((item, None))
            handoff.put((done, None))
        except BaseException as exc:  # handed to the consumer, raised there
            handoff.put((done, exc))
        finally:  # a generator's own clean-up (closing its connection) runs in its thread
            close = getattr(items, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="fabnode-read", daemon=True)
    worker.start()
    try:
        while True:
            item, error = handoff.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                handoff.get_nowait()
            except queue.Empty:
                worker.join(0.01)


@dataclass(frozen=True)
class _FileDone:
    """The end of one file in :func:`_hashed_files`' stream: its root."""

    built: Built


def _plan_files(plan: _FilePlan | _DirPlan) -> Iterator[_FilePlan]:
    """The files of a plan in the order :func:`_store_dir` builds them."""
    if isinstance(plan, _FilePlan):
        yield plan
        return
    for _, child in plan.entries:
        yield from _plan_files(child)


HASH_THREADS = max(2, min(4, os.cpu_count() or 2))
"""Threads hashing an add's chunks (and export's and fsck's blocks): SHA-256 is most of their
CPU, and hashlib releases the GIL on large buffers, so on two cores two threads hash about twice
as fast as one."""
UNIT_BYTES = 4 << 20
"""An add hands work between its threads in units of about this many bytes of chunks (or
:data:`UNIT_ITEMS` small files), not a chunk at a time: on a machine whose cores are busy, every
handoff waits for a thread to be scheduled, so fewer, larger ones keep the pipeline moving."""
UNIT_ITEMS = 256
UNITS_AHEAD = 2
"""Units being hashed while the reader reads the next (with :func:`in_thread`'s queue of
:data:`UNITS_QUEUED`, an add holds about (2 + 3) x 4 MiB of content in memory)."""
UNITS_QUEUED = 3


_END_OF_FILE = None
"""After each file's pieces in :func:`_chunks_in_order`'s and :func:`_read_ahead`'s streams."""


@dataclass(frozen=True)
class _FileStart:
    """The start of one file in :func:`_chunks_in_order`' stream."""

    chunk_size: int


def _chunks_in_order(plan: _FilePlan | _DirPlan, profile: str) -> Iterator[bytes | _FileStart | None]:
    """The content of every file of the plan in build order, cut by the profile: each file is a
    :class:`_FileStart`, its chunks, and :data:`_END_OF_FILE`."""
    for file in _plan_files(plan):
        chunks, largest = profile_chunks(profile, _read_chunks(file.path))
        yield _FileStart(largest)
        try:
            yield from chunks
        except PermissionError:
            raise FabnodeError(f"cannot read {file.path}: permission denied") from None
        yield _END_OF_FILE


def _units(items: Iterator[bytes | _FileStart | None]) -> Iterator[list]:
    """:func:`_chunks_in_order`'s stream cut into units (:data:`UNIT_BYTES`)."""
    unit: list = []
    size = 0
    for item in items:
        unit.append(item)
        if isinstance(item, bytes):
            size += len(item)
        if size >= UNIT_BYTES or len(unit) >= UNIT_ITEMS:
            yield unit
            unit, size = [], 0
    if unit:
        yield unit


def _hash_unit(unit: list) -> list[bytes]:
    """The raw CIDs of a unit's chunks, in order."""
    return [make_cid(RAW, item) for item in unit if isinstance(item, bytes)]


def _hashed_files(plan: _FilePlan | _DirPlan, profile: str) -> Iterator[list[tuple[list, int] | _FileDone]]:
    """Every file of the plan read, cut and hashed into its blocks, in build order, a unit at a
    time: lists of (blocks ready to store, content bytes they cover), each file closed by a
    :class:`_FileDone`.

    Reads and builds in the calling thread (:func:`store_planned` runs it in its own, beside the
    thread that writes), while :data:`UNITS_AHEAD` units are hashed by :data:`HASH_THREADS`
    threads; blocks come out in order, so CIDs are as one thread makes them. No store is touched
    here."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    builder = FileBuilder()

    def settle(unit: list, hashing) -> list[tuple[list, int] | _FileDone]:
        nonlocal builder
        out: list[tuple[list, int] | _FileDone] = []
        cids = iter(hashing.result())
        for item in unit:
            if isinstance(item, _FileStart):
                builder = FileBuilder(chunk_size=item.chunk_size)
            elif item is _END_OF_FILE:
                blocks, built = builder.finish()
                out.append((blocks, 0))
                out.append(_FileDone(built))
            else:
                out.append((builder.add_chunk(item, next(cids)), len(item)))
        return out

    window: deque = deque()
    with ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="fabnode-hash") as pool:
        for unit in _units(_chunks_in_order(plan, profile)):
            window.append((unit, pool.submit(_hash_unit, unit)))
            if len(window) > UNITS_AHEAD:
                yield settle(*window.popleft())
        while window:
            yield settle(*window.popleft())


def _flat(units: Iterator[list[T]]) -> Iterator[T]:
    for unit in units:
        yield from unit


class _BlockSink:
    """Blocks on their way into the store, handed over about :data:`GROUP_BYTES` at a time, so
    each group costs one index query and one write (:meth:`BlockStore.put_many`)."""

    def __init__(self, store: BlockStore) -> None:
        self.store = store
        self._pending: list[tuple[bytes, bytes]] = []
        self._bytes = 0

    def add(self, blocks: list) -> None:
        for block in blocks:
            self._pending.append((block.cid, block.data))
            self._bytes += len(block.data)
        if self._bytes >= GROUP_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self.store.put_many(self._pending)
            self._pending, self._bytes = [], 0


def _store_file(sink: _BlockSink, hashed: Iterator[tuple[list, int] | _FileDone], progress: Progress) -> Built:
    """Store the next file's blocks from the stream; returns its root."""
    for item in hashed:
        if isinstance(item, _FileDone):
            return item.built
        blocks, nbytes = item
        sink.add(blocks)
        progress(nbytes)
    raise AssertionError("unreachable: the stream closes every file it opens")


def _store_dir(sink: _BlockSink, plan: _DirPlan, hashed: Iterator[tuple[list, int] | _FileDone],
               progress: Progress) -> Built:
    children: list[tuple[str, Built]] = []
    for name, child in plan.entries:
        if isinstance(child, _DirPlan):
            children.append((name, _store_dir(sink, child, hashed, progress)))
        else:
            children.append((name, _store_file(sink, hashed, progress)))
    blocks, built = build_directory_blocks(children)
    sink.add(blocks)
    return built


def plan_add(path: Path, include_hidden: bool = False) -> tuple[_Scan, _FilePlan | _DirPlan | None]:
    """Check ``path`` and everything under it; returns the plan and the byte total for progress."""
    try:
        st = path.stat()  # follows a top-level symlink: the operator named it
    except FileNotFoundError:
        raise FabnodeError(f"cannot add {path}: no such file or folder") from None
    except PermissionError:
        raise FabnodeError(f"cannot add {path}: permission denied") from None
    scan = _Scan(include_hidden)
    if stat.S_ISDIR(st.st_mode):
        return scan, scan.directory(path)
    if stat.S_ISREG(st.st_mode):
        return scan, scan.file(path, st)
    raise FabnodeError(f"cannot add {path}: it is not a regular file or folder")


def store_planned(store: BlockStore, path: Path, plan: tuple[_Scan, _FilePlan | _DirPlan | None], *,
                  now_ms: int, progress: Progress = _noop, profile: str = DEFAULT_PROFILE) -> AddResult:
    """Store and pin a planned add; the caller holds the write transaction."""
    scan, root_plan = plan
    if root_plan is None:
        raise FabnodeError(f"cannot add {path}: the folder holds no files (empty folders and dotfiles are not stored)")
    units = in_thread(_hashed_files(root_plan, profile), depth=UNITS_QUEUED)
    hashed = _flat(units)
    sink = _BlockSink(store)
    try:
        if isinstance(root_plan, _DirPlan):
            built = _store_dir(sink, root_plan, hashed, progress)
            kind = "directory"
        else:
            built = _store_file(sink, hashed, progress)
            kind = "file"
    finally:
        units.close()
    sink.flush()
    store.pin(Pin(built.cid, kind, built.size, scan.files, path.name or str(path), now_ms))
    return AddResult(cid_str(built.cid), built.size, scan.files, scan.skipped_hidden, scan.dropped_empty_dirs)


def planned_paths(plan: tuple[_Scan, _FilePlan | _DirPlan | None]) -> set[str]:
    """Every file path the add will store, relative to its root, '/'-separated (for manifest lint)."""
    out: set[str] = set()

    def walk(node, prefix: str) -> None:
        for name, child in node.entries:
            if isinstance(child, _DirPlan):
                walk(child, prefix + name + "/")
            else:
                out.add(prefix + name)

    if isinstance(plan[1], _DirPlan):
        walk(plan[1], "")
    return out


def add_path(
    store: BlockStore,
    path: Path,
    *,
    now_ms: int,
    include_hidden: bool = False,
    progress: Progress = _noop,
    plan: tuple[_Scan, _FilePlan | _DirPlan | None] | None = None,
    profile: str = DEFAULT_PROFILE,
) -> AddResult:
    """Store a file (as ``ipfs-car pack --no-wrap FILE``) or a folder's contents (as
    ``ipfs-car pack DIR``) and pin the root, all in one transaction: a failure (a full disk)
    or an interrupt before the commit leaves nothing of it. ``profile`` (protocol/chunker.py)
    says how files are cut; only the default gives ipfs-car's CIDs."""
    plan = plan or plan_add(path, include_hidden)
    with store.write_transaction(final=True):
        return store_planned(store, path, plan, now_ms=now_ms, progress=progress, profile=profile)


# ------------------------------------------------------------------ reading


@dataclass(frozen=True)
class Entry:
    name: str
    cid: str
    kind: str
    size: int | None
    """Bytes of content for a file (or a pinned root); None for a directory inside a DAG."""

    def as_json(self) -> dict:
        return {"name": self.name, "cid": self.cid, "type": self.kind, "size": self.size}


def _kind_and_size(store: BlockStore, cid: bytes) -> tuple[str, int | None]:
    node = decode(cid, store.get(cid))
    return node.kind, (node.filesize if node.kind == "file" else None)


def list_path(store: BlockStore, root: bytes, segments: list[str]) -> list[Entry]:
    """A directory's entries (a file lists as itself)."""
    cid = resolve(store.get, root, segments)
    node = decode(cid, store.get(cid))
    if node.kind == "file":
        name = segments[-1] if segments else cid_str(cid)
        return [Entry(name, cid_str(cid), "file", node.filesize)]
    entries = []
    for link in directory_entries(store.get, cid, node):
        kind, size = _kind_and_size(store, link.cid)
        entries.append(Entry(link.name, cid_str(link.cid), kind, size))
    return entries


def list_pins(store: BlockStore) -> list[Entry]:
    """What this node keeps, each by the title of the design whose files it is (else by where it
    came from: the folder added, ``import:FILE``, ``fetched:CID``), with its size."""
    from fabnode.storage import Stores

    records = Stores.of(store).records
    return [Entry(records.title_of_bundle(p.cid) or p.source, cid_str(p.cid), p.kind, _pin_size(store, p))
            for p in store.pins()]


def _pin_size(store: BlockStore, pin: Pin) -> int | None:
    """A pin's recorded size; for a folder recorded as 0 (imports before issue 15 did), the bytes
    of its blocks held here, or None (shown "-") if it is not complete."""
    if pin.size or pin.kind != "directory":
        return pin.size
    from fabnode.protocol.dag import dag_cids

    cids, complete = dag_cids(store.get_unverified, store.has, pin.cid)
    return store.total_size(cids) if complete else None


def cat_path(store: BlockStore, root: bytes, segments: list[str]) -> Iterator[bytes]:
    """The file's bytes, streamed one verified block at a time."""
    cid = resolve(store.get, root, segments)
    node = decode(cid, store.get(cid))
    if node.kind != "file":
        raise FabnodeError(f"{cid_str(root)}{''.join('/' + s for s in segments)} is a directory: use 'fabnode ls' or 'fabnode get'")
    return iter_file(store.get, cid)


@dataclass
class _OutDir:
    name: str
    children: list = field(default_factory=list)


@dataclass
class _OutFile:
    name: str
    cid: bytes
    size: int


def _plan_get(store: BlockStore, cid: bytes, name: str, depth: int, where: str, totals: list[int]) -> _OutDir | _OutFile:
    """Check the whole DAG before writing anything: every name, every type, the depth."""
    if depth > MAX_DEPTH:
        raise InvalidBlock(f"refusing {where}: directories nested deeper than {MAX_DEPTH}")
    node = decode(cid, store.get(cid))
    if node.kind == "file":
        totals[0] += node.filesize
        return _OutFile(name, cid, node.filesize)
    out = _OutDir(name)
    links = directory_entries(store.get, cid, node)
    problem = directory_problem(link.name for link in links)
    if problem is not None:
        raise InvalidBlock(f"refusing {where}: the DAG contains {problem}; nothing was written")
    for link in links:
        out.children.append(_plan_get(store, link.cid, link.name, depth + 1, f"{where}/{link.name}", totals))
    return out


_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _files_in_order(tree: _OutDir | _OutFile) -> Iterator[_OutFile]:
    """The files of a planned tree in the order :func:`_write_dir` writes them."""
    if isinstance(tree, _OutFile):
        yield tree
        return
    for child in tree.children:
        yield from _files_in_order(child)


def _read_ahead(db_path: Path, tree: _OutDir | _OutFile) -> Iterator[bytes | None]:
    """Every file's content in write order, each file followed by :data:`_END_OF_FILE`, read
    and verified over a connection of its own: run by :func:`in_thread`, it reads SQLite and
    re-hashes (both release the GIL) while the writing thread writes the previous pieces."""
    from fabnode.storage.db import open_db

    reader = BlockStore(open_db(db_path))
    try:
        for entry in _files_in_order(tree):
            yield from iter_file(reader.get, entry.cid)
            yield _END_OF_FILE
    finally:
        reader.close()


def _pieces_of_one_file(pieces: Iterator[bytes | None]) -> Iterator[bytes]:
    for piece in pieces:
        if piece is _END_OF_FILE:
            return
        yield piece


def _write_file(store: BlockStore, entry: _OutFile, dir_fd: int, progress: Progress,
                pieces: Iterator[bytes | None] | None = None) -> None:
    fd = os.open(entry.name, _WRITE_FLAGS, 0o644, dir_fd=dir_fd)
    with os.fdopen(fd, "wb") as f:
        for piece in iter_file(store.get, entry.cid) if pieces is None else _pieces_of_one_file(pieces):
            f.write(piece)
            progress(len(piece))


def _write_dir(store: BlockStore, entry: _OutDir, dir_fd: int, progress: Progress,
               pieces: Iterator[bytes | None] | None = None) -> None:
    for child in entry.children:
        if isinstance(child, _OutFile):
            _write_file(store, child, dir_fd, progress, pieces)
        else:
            os.mkdir(child.name, 0o755, dir_fd=dir_fd)
            sub_fd = os.open(child.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
            try:
                _write_dir(store, child, sub_fd, progress, pieces)
            finally:
                os.close(sub_fd)


def peers_would_refuse(store: BlockStore, cid_text: str) -> str | None:
    """Why other nodes would refuse a bundle added here (sizes, decompression bomb), or None:
    `add` keeps what the operator asked for, but says so rather than let it fail elsewhere."""
    from fabnode.protocol.cid import parse_cid
    from fabnode.protocol.unixfs import dag_sizes

    conn = store.db.conn
    conn.execute("BEGIN")  # one read snapshot: SQLite locks once, not for each of the DAG's blocks
    try:
        dag_sizes(store.get, parse_cid(cid_text), raw_size=store.size)
    except InvalidBlock as exc:
        return str(exc)
    finally:
        conn.execute("COMMIT")
    return None


def plan_get(store: BlockStore, root: bytes, segments: list[str], out: Path | None) -> tuple[Path, _OutDir | _OutFile, int]:
    from fabnode.protocol.unixfs import dag_sizes

    cid = resolve(store.get, root, segments)
    dag_sizes(store.get, cid, raw_size=store.size)  # sizes that lie, or a decompression bomb: refused
    if out is None:
        out = Path(segments[-1] if segments else cid_str(cid))
    if os.path.lexists(out):
        raise FabnodeError(f"{out} already exists: fabnode get writes a new file or folder; choose another -o")
    if not out.parent.is_dir():
        raise FabnodeError(f"cannot write {out}: folder {out.parent} does not exist")
    totals = [0]
    tree = _plan_get(store, cid, out.name, 0, cid_str(root) + "".join("/" + s for s in segments), totals)
    # refuse before writing a byte what cannot fit (issue 12: a get once wrote until 72 GB were full)
    import shutil

    if shutil.disk_usage(out.parent).free < totals[0] + GET_SPACE_MARGIN:
        raise DiskFull(output_full_message(out, totals[0]))
    return out, tree, totals[0]


GET_SPACE_MARGIN = 1 << 20
"""Room `get` leaves on top of the files' own bytes (file system blocks, folders)."""


def _tree_size(tree: _OutDir | _OutFile) -> int:
    return tree.size if isinstance(tree, _OutFile) else sum(_tree_size(c) for c in tree.children)


def output_full_message(out: Path, size: int) -> str:
    """The one line for a write out of the store (``get``, ``export``) that found no room."""
    return (f"disk full: writing {out} needs {human_size(size)} on the output's filesystem "
            f"({out.parent.resolve()}); nothing was written")


def get_path(store: BlockStore, out: Path, tree: _OutDir | _OutFile, progress: Progress = _noop) -> Path:
    """Write a planned DAG to ``out`` through a temporary sibling, renamed into place at the end.

    Whatever stops it (a full disk, Ctrl-C, SIGTERM) removes the temporary sibling."""
    try:
        return _get_path(store, out, tree, progress)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise DiskFull(output_full_message(out, _tree_size(tree))) from None


READ_AHEAD_MIN_BYTES = 8 * CHUNK_SIZE
"""Trees at least this large are read and verified in a second thread while they are written."""


def _get_path(store: BlockStore, out: Path, tree: _OutDir | _OutFile, progress: Progress) -> Path:
    parent = out.parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.fabnode-partial-", dir=parent))
    pieces = None
    try:
        if store.db.path is not None and _tree_size(tree) >= READ_AHEAD_MIN_BYTES:
            pieces = in_thread(_read_ahead(store.db.path, tree), depth=16)
        tmp_fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            if isinstance(tree, _OutFile):
                _write_file(store, _OutFile("content", tree.cid, tree.size), tmp_fd, progress, pieces)
            else:
                os.mkdir("content", 0o755, dir_fd=tmp_fd)
                sub_fd = os.open("content", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=tmp_fd)
                try:
                    _write_dir(store, tree, sub_fd, progress, pieces)
                finally:
                    os.close(sub_fd)
        finally:
            os.close(tmp_fd)
            if pieces is not None:
                pieces.close()  # stops the reading thread, also when writing failed half-way
        if os.path.lexists(out):  # someone created it while we wrote
            raise FabnodeError(f"{out} appeared while writing; nothing was replaced")
        os.rename(tmp / "content", out)
    finally:
        _remove_tree(tmp)
    return out


def _remove_tree(path: Path) -> None:
    """Remove a temporary folder whole: a second Ctrl-C waits until it is gone."""
    import shutil

    with interrupts.deferred():
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------ fsck


@dataclass
class FsckReport:
    blocks: int = 0
    bytes: int = 0
    pins: int = 0
    damaged: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """Blocks a pinned DAG needs that the store lacks, as 'root: cid'."""
    records: int = 0
    invalid_records: list[str] = field(default_factory=list)
    """Stored records that no longer pass verification, as 'cid: reason'."""
    index_damage: list[str] = field(default_factory=list)
    """SQLite indexes that disagree with their tables: the data is intact, `fsck --repair`
    rebuilds them."""
    database_damage: list[str] = field(default_factory=list)
    """What SQLite's integrity check found wrong in the tables themselves, and schema problems."""
    unindexed: list[str] = field(default_factory=list)
    """Blocks a pinned DAG needs that are in the table but not found through the index."""
    repaired: list[str] = field(default_factory=list)
    pack_damage: list[str] = field(default_factory=list)
    """Index rows a pack cannot back: a pack file missing or shorter than its committed length,
    a row pointing past a pack's committed end or at a pack no row of ``packs`` names."""
    reclaimable: list[str] = field(default_factory=list)
    """Pack bytes no block uses (garbage, not damage): what gc frees, and orphan pack files."""

    @property
    def ok(self) -> bool:
        return not (self.damaged or self.missing or self.invalid_records or self.index_damage
                    or self.database_damage or self.unindexed or self.pack_damage)

    def as_json(self) -> dict:
        return {"ok": self.ok, "blocks": self.blocks, "bytes": self.bytes, "pins": self.pins,
                "damaged": self.damaged, "missing": self.missing, "records": self.records,
                "invalid_records": self.invalid_records, "index_damage": self.index_damage,
                "database_damage": self.database_damage, "unindexed": self.unindexed,
                "repaired": self.repaired, "pack_damage": self.pack_damage, "reclaimable": self.reclaimable}


INDEX_PROBLEM = ("missing from index", "wrong # of entries in index", "non-unique entry in index")


def fsck(store: BlockStore, progress: Progress = _noop, *, repair: bool = False) -> FsckReport:
    """SQLite's own integrity check and the schema's record first, then re-hash every block,
    check that every pinned DAG is complete and readable, and re-verify every record. If SQLite
    finds the file itself damaged, :class:`DamagedDatabase` names the part being read.

    Index damage is told apart from missing data: a block a DAG needs that the index does not
    find is looked for in the table itself. With ``repair``, damaged indexes are rebuilt
    (REINDEX) when the tables are sound, and the check runs again."""
    report = FsckReport()
    with reading(store.db, "the database's structure"):
        _check_sqlite(store, report)
    if repair and report.index_damage and not report.database_damage:
        with store.write_transaction():
            check.reindex(store.db)
        repaired = report.index_damage
        report = FsckReport(repaired=repaired)
        _check_sqlite(store, report)
    with reading(store.db, "blocks table"):
        _check_packs(store, report)
        damaged = _check_blocks(store, report, progress)
    with reading(store.db, "pins or the blocks of a pinned DAG"):
        _check_pins(store, report, damaged)
    with reading(store.db, "records table"):
        _check_records(store, report)
    if report.index_damage and report.missing:  # an index that lies, or data that is gone?
        still_missing = []
        for item in report.missing:
            root, _, cid = item.partition(": ")
            found = check.block_in_table(store.db, parse_cid(cid))
            (report.unindexed if found else still_missing).append(item)
        report.missing = still_missing
    return report


def _check_sqlite(store: BlockStore, report: FsckReport) -> None:
    """PRAGMA integrity_check (structure, indexes against tables), then the migrations record:
    a byte flipped in the schema's own bookkeeping is not something integrity_check sees."""
    from fabnode.storage.db import SCHEMA_VERSION

    for message in check.integrity_problems(store.db, 100):
        if any(problem in message for problem in INDEX_PROBLEM):
            report.index_damage.append(message)
        else:
            report.database_damage.append(message)
    expected, recorded = check.migration_record(store.db)
    if recorded != sorted(expected):
        unknown = sorted(set(recorded) - set(expected))
        lost = sorted(set(expected) - set(recorded))
        report.database_damage.append("the schema's migration record is damaged"
                                      + (f": unknown {', '.join(map(repr, unknown))}" if unknown else "")
                                      + (f"; missing {', '.join(map(repr, lost))}" if lost else ""))
    version = check.schema_version(store.db)
    if version != SCHEMA_VERSION:
        report.database_damage.append(f"the schema version is {version}, not {SCHEMA_VERSION}")


def _check_packs(store: BlockStore, report: FsckReport) -> None:
    """Every pack file against the index: long enough for its committed length, no row past that
    end; and what is garbage in them (freed blocks, tails past the end, orphan files)."""
    from fabnode.storage.packs import pack_report

    packs = pack_report(store)
    for use in packs.packs:
        name = f"{use.pack:06d}.pack"
        if use.file_bytes is None:
            if use.live_blocks:
                report.pack_damage.append(f"pack {name} is missing ({use.live_blocks} block(s) in it)")
        elif use.file_bytes < use.size:
            report.pack_damage.append(f"pack {name} is truncated: {use.file_bytes} of {use.size} committed bytes")
        elif use.file_bytes > use.size:
            report.reclaimable.append(f"pack {name}: {use.file_bytes - use.size} byte(s) past its committed end "
                                      "(an interrupted write; cut off by the next one)")
        if use.size > use.live_bytes:
            report.reclaimable.append(f"pack {name}: {use.size - use.live_bytes} of {use.size} byte(s) no longer "
                                      "used ('fabnode gc' compacts it once most are)")
    for name in packs.orphan_files:
        report.reclaimable.append(f"pack file {name} has no index row (an interrupted gc or write; 'fabnode gc' removes it)")
    for cid, pack, end, committed in store.db.conn.execute(
            "SELECT b.cid, b.pack, b.pack_offset + b.size, p.size FROM blocks b LEFT JOIN packs p ON p.id = b.pack"
            " WHERE b.pack IS NOT NULL AND (p.id IS NULL OR b.pack_offset + b.size > p.size)"):
        where = "an unknown pack" if committed is None else f"past the committed end ({committed}) of"
        report.pack_damage.append(f"block {cid_str(cid)} is indexed at {where} pack {pack:06d}.pack")


def _check_blocks(store: BlockStore, report: FsckReport, progress: Progress) -> set[bytes]:
    from fabnode.protocol.cid import block_matches

    import collections
    from concurrent.futures import ThreadPoolExecutor

    def check(unit: list[tuple[bytes, bytes]]) -> list[tuple[bytes, int, bool]]:
        return [(cid, len(data), block_matches(cid, data)) for cid, data in unit]

    def note(results: list[tuple[bytes, int, bool]]) -> None:
        for cid, size, sound in results:
            report.blocks += 1
            report.bytes += size
            if not sound:
                damaged.add(cid)
                report.damaged.append(cid_str(cid))
            progress(size)

    # Blocks are read in pack order here and hashed by a pool (hashlib releases the GIL), handed
    # over in units of about UNIT_BYTES (one handoff per unit: see UNIT_BYTES), a few units in
    # flight, reported in the order read.
    damaged: set[bytes] = set()
    in_flight: collections.deque = collections.deque()
    with ThreadPoolExecutor(max_workers=HASH_THREADS, thread_name_prefix="fabnode-fsck") as pool:
        for unit in _block_units(store.iter_all()):
            in_flight.append(pool.submit(check, unit))
            if len(in_flight) > UNITS_AHEAD + 1:
                note(in_flight.popleft().result())
        while in_flight:
            note(in_flight.popleft().result())
    return damaged


def _block_units(blocks: Iterator[tuple]) -> Iterator[list[tuple]]:
    """``blocks`` (tuples whose second element is the block's bytes) in units of about
    :data:`UNIT_BYTES` (or :data:`UNIT_ITEMS` blocks)."""
    unit: list = []
    size = 0
    for block in blocks:
        unit.append(block)
        size += len(block[1])
        if size >= UNIT_BYTES or len(unit) >= UNIT_ITEMS:
            yield unit
            unit, size = [], 0
    if unit:
        yield unit


def _check_pins(store: BlockStore, report: FsckReport, damaged: set[bytes]) -> None:
    from fabnode.protocol.dag import DagTooDeep, child_links, walk

    unreadable: set[bytes] = set()  # not walked below: damaged, or not a valid node

    def get_block(cid: bytes) -> bytes | None:
        data = store.get_unverified(cid)
        if data is None or cid in unreadable:
            return None
        try:
            child_links(cid, data)
        except InvalidBlock as exc:
            report.damaged.append(f"{cid_str(cid)} ({exc})")
            unreadable.add(cid)
            return None
        return data

    for pin in store.pins():
        report.pins += 1
        unreadable.clear()
        unreadable.update(damaged)
        try:
            # raw leaves: only whether they are here (_check_blocks re-hashed every one already)
            for visit in walk(get_block, pin.cid, has_block=store.has):
                if not visit.present and visit.cid not in unreadable:
                    report.missing.append(f"{cid_str(pin.cid)}: {cid_str(visit.cid)}")
        except DagTooDeep as exc:
            report.damaged.append(f"{cid_str(pin.cid)} ({exc})")


def _check_records(store: BlockStore, report: FsckReport) -> None:
    """Re-verify every stored record by the rules it was accepted under (time = its arrival)."""
    from fabnode.protocol.records import RecordRejected, verify_record
    from fabnode.storage import Stores

    for cid, data, received_ms in Stores.of(store).records.iter_raw():
        report.records += 1
        try:
            verify_record(data, now_ms=received_ms, cid=cid)
        except RecordRejected as exc:
            report.invalid_records.append(f"{cid_str(cid)}: {exc}")
