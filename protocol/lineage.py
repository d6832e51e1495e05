"""Which versions of a design are canonical, and which are its heads (docs/protocol.md §4.6).

A version of design D signed by one of D's maintainers (named on D's first version) is
*canonical*; anyone else's is a *proposal*. D's heads are its canonical versions with no
canonical child. Computed from whatever versions are known, so the answer is right whatever
order they arrived in; while D's first version is unknown nothing is canonical yet.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple


class VersionNode(NamedTuple):
    cid: bytes
    author: str
    ts: int
    parents: tuple[bytes, ...]


def canonical_and_heads(versions: Iterable[VersionNode], maintainers: Iterable[str] | None) -> tuple[set[bytes], list[bytes]]:
    """(canonical version CIDs, heads ordered newest first)."""
    nodes = list(versions)
    if maintainers is None:
        return set(), []
    allowed = set(maintainers)
    canonical = {v.cid for v in nodes if v.author in allowed}
    has_canonical_child = {p for v in nodes if v.cid in canonical for p in v.parents}
    heads = [v for v in nodes if v.cid in canonical and v.cid not in has_canonical_child]
    heads.sort(key=lambda v: (-v.ts, v.cid))
    return canonical, [v.cid for v in heads]
