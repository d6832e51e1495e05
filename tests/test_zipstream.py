"""The ZIP writer's pure core (node/http/zipstream.py) over an in-memory DAG: what it plans,
what it writes, what it refuses. The daemon's ZIP against `fabnode get` and an independent
unzip is tests/test_design_page.py."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import zipfile

import pytest

from fabnode.node.http.zipstream import MAX_NAME_CHARS, plan_zip, safe_folder_name, zip_stream
from fabnode.protocol.dag import MAX_DEPTH
from fabnode.protocol.errors import InvalidBlock, MissingBlock
from fabnode.protocol.unixfs import FileBuilder, build_directory

UNZIP = shutil.which("unzip")


class Dag:
    """Blocks built here, by hand where a test needs a DAG `add` would never make."""

    def __init__(self) -> None:
        self.blocks: dict[bytes, bytes] = {}

    def get(self, cid: bytes) -> bytes:
        if cid not in self.blocks:
            raise MissingBlock("block not in this store")
        return self.blocks[cid]

    def file(self, data: bytes, chunk: int = 4):
        builder = FileBuilder(chunk_size=chunk)
        for start in range(0, len(data), chunk):
            self.blocks.update((b.cid, b.data) for b in builder.add_chunk(data[start:start + chunk]))
        blocks, built = builder.finish()
        self.blocks.update((b.cid, b.data) for b in blocks)
        return built

    def folder(self, entries):
        block, built = build_directory(entries)
        self.blocks[block.cid] = block.data
        return built


def design(dag: Dag):
    """README, an empty file, a file of several blocks, and folders two deep."""
    deep = dag.folder([("part.txt", dag.file(b"nested two folders down"))])
    docs = dag.folder([("assembly.md", dag.file(b"# Assembly\n\nStep 1.\n")), ("deep", deep),
                       ("empty.txt", dag.file(b"")), ("tolérance ±5 µm.txt", dag.file(b"non-ASCII name"))])
    return dag.folder([("README.md", dag.file(b"# Pump\n")), ("bom.csv", dag.file(bytes(range(256)) * 3)),
                       ("docs", docs)])


EXPECTED = {"Pump 1.0/README.md": b"# Pump\n", "Pump 1.0/bom.csv": bytes(range(256)) * 3,
            "Pump 1.0/docs/assembly.md": b"# Assembly\n\nStep 1.\n", "Pump 1.0/docs/deep/part.txt":
            b"nested two folders down", "Pump 1.0/docs/empty.txt": b"",
            "Pump 1.0/docs/tolérance ±5 µm.txt": b"non-ASCII name"}


def test_the_archive_holds_each_file_once_under_one_top_folder_and_always_the_same_bytes():
    dag = Dag()
    root = design(dag)
    entries = plan_zip(dag.get, root.cid, "Pump 1.0")
    # get's order: each folder's links in order, a subfolder's content where it is linked
    assert [e.path for e in entries] == ["Pump 1.0/", "Pump 1.0/README.md", "Pump 1.0/bom.csv", "Pump 1.0/docs/",
                                         "Pump 1.0/docs/assembly.md", "Pump 1.0/docs/deep/",
                                         "Pump 1.0/docs/deep/part.txt", "Pump 1.0/docs/empty.txt",
                                         "Pump 1.0/docs/tolérance ±5 µm.txt"]
    pieces = list(zip_stream(dag.get, entries))
    assert len(pieces) > len(entries)  # streamed as written, not built whole and handed over at the end
    data = b"".join(pieces)
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None
    assert {i.filename: archive.read(i) for i in archive.infolist() if not i.is_dir()} == EXPECTED
    for info in archive.infolist():
        assert info.date_time == (1980, 1, 1, 0, 0, 0) and info.compress_type == zipfile.ZIP_STORED
        assert info.external_attr >> 16 == (0o40755 if info.is_dir() else 0o100644)
        assert bool(info.flag_bits & 0x800) == (not info.filename.isascii())  # UTF-8 names say so
    assert b"".join(zip_stream(dag.get, plan_zip(dag.get, root.cid, "Pump 1.0"))) == data


@pytest.mark.skipif(UNZIP is None, reason="unzip is missing: .ci/run installs it")
def test_zip64_is_used_when_sizes_need_it_and_unzip_reads_it(tmp_path, monkeypatch):
    """ZIP64 begins at 4 GiB; lowering zipfile's threshold exercises the same code on small files,
    and Info-ZIP's unzip (an independent reader) must still extract them exactly."""
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 100)
    dag = Dag()
    root = design(dag)
    data = b"".join(zip_stream(dag.get, plan_zip(dag.get, root.cid, "Pump 1.0")))
    assert b"PK\x06\x06" in data  # the ZIP64 end of central directory record
    (tmp_path / "a.zip").write_bytes(data)
    # a UTF-8 locale, as a lab's desktop has: under LC_ALL=C, unzip escapes non-ASCII names
    subprocess.run([UNZIP, "-q", str(tmp_path / "a.zip"), "-d", str(tmp_path / "out")], check=True, timeout=30,
                   env={**os.environ, "LC_ALL": "C.UTF-8"})
    got = {str(p.relative_to(tmp_path / "out")): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert got == EXPECTED


def test_a_single_file_is_one_entry_named_after_it():
    dag = Dag()
    built = dag.file(b"only me")
    entries = plan_zip(dag.get, built.cid, "note.txt")
    archive = zipfile.ZipFile(io.BytesIO(b"".join(zip_stream(dag.get, entries))))
    assert archive.namelist() == ["note.txt"] and archive.read("note.txt") == b"only me"


@pytest.mark.parametrize("name, problem", [("..", "the name '..'"), ("a\\b", "the name 'a\\\\b', which contains '\\\\'"),
                                           ("", "an empty name")])
def test_names_get_would_refuse_are_refused_before_any_byte(name, problem):
    dag = Dag()
    root = dag.folder([("ok.txt", dag.file(b"fine")), ("sub", dag.folder([(name, dag.file(b"escape"))]))])
    with pytest.raises(InvalidBlock, match="refusing to zip .*the DAG contains " + re.escape(problem)):
        plan_zip(dag.get, root.cid, "top")


def test_a_name_repeated_in_a_folder_is_refused():
    dag = Dag()
    root = dag.folder([("a.txt", dag.file(b"1")), ("a.txt", dag.file(b"2"))])
    with pytest.raises(InvalidBlock, match="appears twice"):
        plan_zip(dag.get, root.cid, "top")


def test_a_folder_repeated_under_many_names_is_refused_at_the_entry_budget():
    """Ten links to one folder, five levels deep: 111,111 entries from six small blocks."""
    dag = Dag()
    level = dag.folder([("f.txt", dag.file(b"x"))])
    for _ in range(5):
        level = dag.folder([(f"d{i}", level) for i in range(10)])
    with pytest.raises(InvalidBlock, match="more than 500 files and folders"):
        plan_zip(dag.get, level.cid, "top", max_entries=500)


def test_folders_nested_too_deep_are_refused():
    dag = Dag()
    level = dag.folder([("f.txt", dag.file(b"x"))])
    for _ in range(MAX_DEPTH + 1):
        level = dag.folder([("d", level)])
    with pytest.raises(InvalidBlock, match=f"nested deeper than {MAX_DEPTH}"):
        plan_zip(dag.get, level.cid, "top")


def test_a_block_missing_midway_raises_and_what_was_sent_is_no_archive():
    """A leaf of the second file disappears after planning (as a concurrent gc could do it):
    the stream raises, and the bytes yielded before lack the central directory, so no reader
    takes them for a complete (shorter) archive."""
    dag = Dag()
    root = design(dag)
    entries = plan_zip(dag.get, root.cid, "Pump 1.0")
    bom = next(e for e in entries if e.path.endswith("bom.csv"))
    leaf = next(cid for cid, data in dag.blocks.items() if data == bytes(range(256))[4:8])
    del dag.blocks[leaf]
    sent = []
    with pytest.raises(MissingBlock):
        for piece in zip_stream(dag.get, entries):
            sent.append(piece)
    data = b"".join(sent)
    assert b"# Pump\n" in data and bom.size > 0  # the first file went out whole
    assert b"PK\x01\x02" not in data and b"PK\x05\x06" not in data  # no central directory, no end record
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(data))


@pytest.mark.parametrize("text, expected", [
    ("Direct-action PVC hand pump 1.1.0", "Direct-action PVC hand pump 1.1.0"),
    ("Bomba de mano (versión 2)", "Bomba de mano (versión 2)"),
    ("../../etc/passwd", "_.._etc_passwd"),
    ("<script>alert('x')</script>", "_script_alert(_x_)__script_"),
    ('a"b\\c\r\nd.zip', "a_b_c__d"),
    ("   ...   ", "bafyfallback"),
    ("CON", "_CON"),
    ("x" * 200, "x" * MAX_NAME_CHARS),
])
def test_folder_names_from_titles_are_safe(text, expected):
    assert safe_folder_name(text, "bafyfallback") == expected
