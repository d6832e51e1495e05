"""Which versions of a design are canonical, and which are its heads (docs/protocol.md §4.6).

A version of design D signed by one of D's maintainers (named on D's first version) is
*canonical*; anyone else's is a *proposal*. D's heads are its canonical versions with no
canonical child. Computed from whatever versions are known, so the answer is right whatever
order they arrived in; while D's first version is unknown nothing is canonical yet.

Retracted versions (issue 17, protocol/retractions.py decides which retractions count) stay in
the lineage and stay canonical (a maintainer did sign them) but are never heads. A version that
a live (not retracted) canonical version descends from is not a head either, and the walk up
from a live version passes *through* retracted canonical versions: so when v2 is retracted, v1
becomes a head again, unless a maintainer already built v3 on v2, in which case v3 is the head
(a child of a retracted version is judged on its own: a maintainer who built on it chose to).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple


class VersionNode(NamedTuple):
    cid: bytes
    author: str
    ts: int
    parents: tuple[bytes, ...]


def canonical_and_heads(versions: Iterable[VersionNode], maintainers: Iterable[str] | None,
                        retracted: Iterable[bytes] = ()) -> tuple[set[bytes], list[bytes]]:
    """(canonical version CIDs, heads ordered newest first); ``retracted``: the versions whose
    retraction counts, never heads (see the module docstring for their ancestors)."""
    nodes = list(versions)
    if maintainers is None:
        return set(), []
    allowed = set(maintainers)
    canonical = {v.cid for v in nodes if v.author in allowed}
    retracted = set(retracted) & canonical
    parents_of = {v.cid: v.parents for v in nodes}
    has_live_descendant: set[bytes] = set()
    for v in nodes:
        if v.cid not in canonical or v.cid in retracted:
            continue
        stack = list(v.parents)
        while stack:
            parent = stack.pop()
            if parent in has_live_descendant:
                continue
            has_live_descendant.add(parent)
            if parent in retracted:  # walk on through a retracted version to what it built on
                stack.extend(parents_of.get(parent, ()))
    heads = [v for v in nodes if v.cid in canonical and v.cid not in retracted and v.cid not in has_live_descendant]
    heads.sort(key=lambda v: (-v.ts, v.cid))
    return canonical, [v.cid for v in heads]
