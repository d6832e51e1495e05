"""A bundle as a ZIP archive, written while its DAG is walked (issue 15: downloads a lab can open).

A lab without IPFS tools cannot open a CAR; every operating system opens a ZIP. The archive is
made by the standard library's :mod:`zipfile` writing to a sink that is never seekable, so
``zipfile`` itself puts each entry's CRC and sizes in a data descriptor after its bytes, and
switches an entry (and the central directory) to ZIP64 when sizes or offsets need it. Nothing
is written to disk and at most one block (1 MiB) and what ``zipfile`` wrote for it are held at
once: :func:`zip_stream` yields the archive's bytes as each block is read.

Theory of operation: :func:`plan_zip` first walks the *folders* (never the files' contents),
checking every name with :mod:`protocol.paths` exactly as ``fabnode get`` does, the depth and
the number of entries; whatever is wrong is refused there, before the first byte is sent, as
one :class:`~fabnode.protocol.errors.InvalidBlock` line. :func:`zip_stream` then writes the
planned entries in order. A block that goes missing or turns out damaged *while* streaming
raises out of the iterator: the caller must end the response as broken (the central directory
is never written), never as a short archive that looks whole.

The archive is a function of the DAG and the top folder's name only: entries are stored
(not compressed: the daemon's one thread serves the network too, and a lab's pictures and PDFs
are compressed already), dated 1980-01-01 00:00 (the earliest date a ZIP can carry), files
0644 and folders 0755.
"""

from __future__ import annotations

import unicodedata
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from fabnode.protocol.cid import RAW, cid_codec, cid_str
from fabnode.protocol.dag import MAX_DEPTH
from fabnode.protocol.errors import InvalidBlock
from fabnode.protocol.paths import directory_problem
from fabnode.protocol.unixfs import decode, directory_entries, iter_file

Get = Callable[[bytes], bytes]

ZIP_TIME = (1980, 1, 1, 0, 0, 0)
"""Every entry's date: the earliest a ZIP can hold, so the same bundle always zips the same."""
MAX_ZIP_ENTRIES = 10_000
"""Files and folders in one archive. zipfile keeps one small record per entry until the central
directory is written at the end (~0.5 KiB each), so this bounds a download's memory; a DAG that
repeats one folder under many names (cheap to make, huge to expand) is refused by it."""
MAX_NAME_CHARS = 80
"""The top folder's (and the download's) name is cut to this many characters."""
_NAME_PUNCTUATION = " -_.,()+"
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


@dataclass(frozen=True, slots=True)
class ZipEntry:
    """One entry of the archive, in the order it is written."""

    path: str
    """Its name in the archive: ``TOP/cad/part.scad``, or ``TOP/cad/`` for a folder."""
    cid: bytes | None
    """The file's root block; None for a folder."""
    size: int
    """The file's bytes (0 for a folder)."""


def safe_folder_name(text: str, fallback: str) -> str:
    """A name fit for the archive's top folder and the downloaded file, from a design's title
    (written by someone else): letters, digits, marks and `` -_.,()+`` are kept, anything else
    (slashes, quotes, control characters, ``..``) becomes ``_``; no leading or trailing dots or
    spaces, no Windows device name, at most :data:`MAX_NAME_CHARS`; ``fallback`` if nothing is left."""
    if text.lower().endswith(".zip"):
        text = text[:-4]
    kept = "".join(c if unicodedata.category(c)[0] in "LNM" or c in _NAME_PUNCTUATION else "_" for c in text)
    name = " ".join(kept.split())[:MAX_NAME_CHARS].strip(" .")
    if name.split(".")[0].upper() in _WINDOWS_RESERVED:
        name = "_" + name
    return name or fallback


def plan_zip(get: Get, root: bytes, top: str, *, raw_size: Callable[[bytes], int | None] | None = None,
             max_entries: int = MAX_ZIP_ENTRIES) -> list[ZipEntry]:
    """The archive's entries for the DAG at ``root``, all under the folder ``top`` (a file at
    ``root`` is the one entry ``top``), in the order ``fabnode get`` writes them: each folder's
    links in order, a subfolder's whole content where it is linked. Reads folder nodes and
    files' root nodes only (a one-block file's size comes from ``raw_size``, the store's index,
    when given); refuses a bad or repeated name, folders nested deeper than MAX_DEPTH, or more
    than ``max_entries`` entries."""
    node = decode(root, get(root))
    if node.kind == "file":
        return [ZipEntry(top, root, node.filesize)]
    entries = [ZipEntry(top + "/", None, 0)]
    stack = [(top, iter(_checked_entries(get, root, root, node)), 0)]  # folders being listed, innermost last
    while stack:
        prefix, links, depth = stack[-1]
        link = next(links, None)
        if link is None:
            stack.pop()
            continue
        if len(entries) >= max_entries:
            raise InvalidBlock(f"refusing to zip {cid_str(root)}: more than {max_entries} files and folders")
        path = f"{prefix}/{link.name}"
        size = raw_size(link.cid) if raw_size is not None and cid_codec(link.cid) == RAW else None
        if size is not None:
            entries.append(ZipEntry(path, link.cid, size))
            continue
        child = decode(link.cid, get(link.cid))
        if child.kind == "file":
            entries.append(ZipEntry(path, link.cid, child.filesize))
            continue
        if depth + 1 > MAX_DEPTH:
            raise InvalidBlock(f"refusing to zip {cid_str(root)}: folders nested deeper than {MAX_DEPTH}")
        links = _checked_entries(get, root, link.cid, child)
        entries.append(ZipEntry(path + "/", None, 0))
        stack.append((path, iter(links), depth + 1))
    return entries


def _checked_entries(get: Get, root: bytes, cid: bytes, folder) -> list:
    links = directory_entries(get, cid, folder)
    problem = directory_problem(link.name for link in links)
    if problem is not None:
        raise InvalidBlock(f"refusing to zip {cid_str(root)}: the DAG contains {problem}")
    return links


class _Sink:
    """Where zipfile writes: it only collects, and :meth:`drain` hands the bytes on. It has no
    ``tell`` or ``seek``, so zipfile writes data descriptors instead of seeking back."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data) -> int:
        self.parts.append(data if isinstance(data, bytes) else bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def drain(self) -> list[bytes]:
        parts, self.parts = self.parts, []
        return parts


def zip_stream(get: Get, entries: list[ZipEntry]) -> Iterator[bytes]:
    """The archive of ``entries`` (from :func:`plan_zip`), yielded as it is written: one block's
    bytes at a time, each file verified block by block as it is read. A block missing or
    damaged midway raises (MissingBlock, DamagedBlock, InvalidBlock) before the central
    directory is written, so what was sent is never a complete archive."""
    sink = _Sink()
    archive = zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
    finished = False
    try:
        for entry in entries:
            info = zipfile.ZipInfo(entry.path, ZIP_TIME)
            info.create_system = 3  # Unix, so the modes below are read
            if entry.cid is None:
                info.external_attr = (0o40755 << 16) | 0x10  # a folder, and MS-DOS's folder flag
                info.CRC = info.compress_size = info.file_size = 0  # Python 3.11's mkdir() expects them set
                archive.mkdir(info)
            else:
                info.external_attr = 0o100644 << 16
                info.file_size = entry.size  # known before the bytes: zipfile picks ZIP64 from it
                with archive.open(info, "w") as out:
                    written = 0
                    for piece in iter_file(get, entry.cid):
                        out.write(piece)
                        written += len(piece)
                        yield from sink.drain()
                    if written != entry.size:
                        raise InvalidBlock(f"{cid_str(entry.cid)} holds {written} bytes, not the {entry.size} it declares")
            yield from sink.drain()
        archive.close()
        finished = True
        yield from sink.drain()
    finally:
        if not finished:
            archive.fp = None  # broken off: no central directory, not even into the sink


def zip_download(store, target: bytes, segments: list[str], filename: str, headers: dict, stream_class, pieces,
                 safe_headers):
    """The gateway's ``?format=zip`` answer for the DAG at ``target`` (web.py passes its
    streaming response class, which counts against MAX_BIG_STREAMS and ends a broken download
    as broken, and its piece cutter and headers). ``filename`` (the ``?filename=`` parameter)
    names the download and the top folder, after :func:`safe_folder_name`; else the path's last
    segment, else the CID. Everything that can be refused is refused before the first byte:
    a block not held here (404), a bad name, a DAG too deep, too many entries or a
    decompression bomb (502)."""
    from fabnode.protocol.unixfs import dag_sizes

    from fabnode.node.http.web import content_disposition  # here: web.py imports this module

    dag_sizes(store.get, target, raw_size=store.size)  # every block held, and no bomb
    top = safe_folder_name(filename or (segments[-1] if segments else ""), cid_str(target))
    entries = plan_zip(store.get, target, top, raw_size=store.size)

    async def body():  # async: the store's connection belongs to the trio thread
        for piece in pieces(zip_stream(store.get, entries)):
            yield piece

    return stream_class(body(), media_type="application/zip", headers=safe_headers({
        **headers, "Content-Disposition": content_disposition(f"{top}.zip")}))
