"""Batch verification across processes gives exactly what one process gives."""

from __future__ import annotations

from fabnode.node.local import verify
from fabnode.node.local.verify import verify_blocks

from test_records import _hostile_cases, golden_records


def test_parallel_and_serial_agree(monkeypatch):
    good = [(r.cid, r.raw) for r in golden_records()]
    bad = [(None, raw) for _, raw, _ in _hostile_cases()]
    blocks = (good + bad) * 20
    serial = verify_blocks(blocks, now=1764081600000, workers=1)
    monkeypatch.setattr(verify, "PARALLEL_FROM", 10)
    parallel = verify_blocks(blocks, now=1764081600000, workers=2)
    assert parallel == serial
    assert [isinstance(x, str) for x in serial] == [False] * 3 * 1 + [True] * len(bad) + ([False] * 3 + [True] * len(bad)) * 19
