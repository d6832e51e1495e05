"""The read-ahead thread used by add: order kept, errors surface, early exit does not hang."""

from __future__ import annotations

import pytest

from fabnode.node.local.files import in_thread


def test_items_arrive_in_order():
    assert list(in_thread(iter(range(1000)), depth=3)) == list(range(1000))


def test_producer_error_is_raised_in_the_consumer():
    def broken():
        yield 1
        raise PermissionError("disk said no")

    got = []
    with pytest.raises(PermissionError, match="disk said no"):
        for item in in_thread(broken()):
            got.append(item)
    assert got == [1]


def test_consumer_leaving_early_stops_the_producer():
    produced = []

    def endless():
        n = 0
        while True:
            produced.append(n)
            yield n
            n += 1

    stream = in_thread(endless(), depth=2)
    assert next(stream) == 0
    stream.close()  # must return, not wait forever on a full queue
    assert len(produced) < 10


@pytest.mark.parametrize("unit_bytes, unit_items", [(1, 2), (3 << 20, 256)])
def test_add_pipeline_gives_each_file_the_cid_one_thread_gives(tmp_path, monkeypatch, unit_bytes, unit_items):
    """Chunks hashed by a pool in units (here also cut between a file's start, its chunks and its
    end) come back in order: every file gets the root a plain serial build gives it."""
    from conftest import write_random_file

    from fabnode.node.local import files
    from fabnode.protocol.unixfs import FileBuilder

    monkeypatch.setattr(files, "UNIT_BYTES", unit_bytes)
    monkeypatch.setattr(files, "UNIT_ITEMS", unit_items)
    sizes = [0, 1, (5 << 19) + 7, 300, 1 << 20, 2000, (1 << 20) + 1]
    for i, size in enumerate(sizes):
        write_random_file(tmp_path / "tree" / f"f{i}.bin", size, seed=i)
    _, plan = files.plan_add(tmp_path / "tree")
    got = [item.built.cid for unit in files._hashed_files(plan, files.DEFAULT_PROFILE) for item in unit
           if isinstance(item, files._FileDone)]
    expected = []
    for i in range(len(sizes)):
        builder = FileBuilder()
        for chunk in files._read_chunks(tmp_path / "tree" / f"f{i}.bin"):
            builder.add_chunk(chunk)
        expected.append(builder.finish()[1].cid)
    assert got == expected
