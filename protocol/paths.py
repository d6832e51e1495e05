"""Which names may become files on disk (docs/protocol.md §3.5).

A name in a DAG is written by someone else. ``ipfs get`` once wrote outside its output directory
through ``..`` names (CVE-2020-26279), so every segment is checked before it reaches the
filesystem, and the same rule refuses such names when a bundle is built.
"""

from __future__ import annotations


_FORBIDDEN_CHARS = ("/", "\\", "\x00")


def segment_problem(name: str) -> str | None:
    """Why ``name`` may not be a path segment, or ``None`` if it may."""
    if name == "":
        return "an empty name"
    if name in (".", ".."):
        return f"the name {name!r}"
    for ch in _FORBIDDEN_CHARS:
        if ch in name:
            return f"the name {name!r}, which contains {ch!r}"
    return None


def directory_problem(names) -> str | None:
    """Why a folder with these entry names may not be written out (bad or repeated name), or None."""
    seen: set[str] = set()
    for name in names:
        problem = segment_problem(name)
        if problem is not None:
            return problem
        if name in seen:
            return f"the name {name!r}, which appears twice in one folder"
        seen.add(name)
    return None
