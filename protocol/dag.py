"""Walking a stored DAG: the one walker every reader of whole DAGs uses.

Theory of operation: :func:`walk` goes depth-first from a root, children in link order, and
yields one :class:`Visit` per distinct block. Blocks come from a ``get_block(cid) -> bytes | None``
callable, so the same walk runs over the SQLite store (verified or not), a CAR file being imported
or a dict in a test. The rules are the same for every caller:

* **Each block once.** A sub-DAG linked from several places (two identical files, a file of
  zeros) is visited the first time it is reached and never again, so a walk is linear in the
  number of distinct blocks whatever the DAG expands to. Its ``depth`` is that of the first path
  that reached it.
* **One depth limit.** A block more than :data:`MAX_DEPTH` links below the root raises
  :class:`DagTooDeep` (an :class:`~protocol.errors.InvalidBlock`): such trees are hostile or broken,
  never a real bundle. Callers that only ask "is it all here?" catch it and answer no.
* **Missing blocks are reported, not guessed.** When ``get_block`` returns None the block is
  yielded with ``data=None`` and ``present=False`` and the walk goes on beside it; a caller that
  wants an exception instead passes a ``get_block`` that raises (the store's verified ``get``).
* **Leaves need not be read.** With ``has_block``, blocks that cannot link (any codec but dag-pb)
  are only checked for presence: ``data`` is None and ``present`` says whether the block is here.
  This keeps memory small for a many-gigabyte bundle whose links all live in its dag-pb nodes.
* **Skipping.** Blocks in ``skip`` are not yielded; with ``descend_skipped`` the walk still goes
  through them (to send what lies below a block the other side already holds), without it their
  sub-DAG is left out (the other side holds it whole).

Walks that must visit every *path* rather than every block (listing a folder's files, writing a
bundle out, reading a file's bytes in order) repeat shared sub-DAGs on purpose; they live in
:mod:`protocol.unixfs` and the callers that write files, and obey the same :data:`MAX_DEPTH`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

from .cid import DAG_PB, cid_codec, cid_str
from .dagpb import decode_node
from .errors import InvalidBlock

MAX_DEPTH = 128
"""Deepest DAG any reader follows: deeper trees are hostile or broken, never a real bundle."""

GetBlock = Callable[[bytes], "bytes | None"]


class DagTooDeep(InvalidBlock):
    """A DAG with a block more than :data:`MAX_DEPTH` links below its root."""

    def __init__(self, root: bytes, cid: bytes, parent: bytes | None, name: str) -> None:
        self.root, self.cid, self.parent, self.name = root, cid, parent, name
        super().__init__(f"DAG under {cid_str(root)} is deeper than {MAX_DEPTH}")


@dataclass(frozen=True, slots=True)
class Visit:
    """One distinct block of a walked DAG."""

    cid: bytes
    data: bytes | None
    """The block's bytes; None if it is missing or is a leaf only checked with ``has_block``."""
    present: bool
    """Whether the block is here (False: ``get_block`` or ``has_block`` said it is not)."""
    depth: int
    """Links from the root along the first path that reached this block (the root is 0)."""
    parent: bytes | None
    """The block whose link first reached this one (None for the root)."""
    name: str
    """That link's name ("" for the root and for unnamed links, such as a file's parts)."""


def child_links(cid: bytes, data: bytes) -> list[tuple[bytes, str]]:
    """(CID, name) of each link in a block, in order; blocks of other codecs than dag-pb have none."""
    if cid_codec(cid) != DAG_PB:
        return []
    return [(link.cid, link.name) for link in decode_node(data).links]


def walk(get_block: GetBlock, root: bytes, *, skip: Collection[bytes] = frozenset(), descend_skipped: bool = False,
         has_block: Callable[[bytes], bool] | None = None) -> Iterator[Visit]:
    """Every distinct block of the DAG under ``root``, depth-first in link order (see the module
    docstring for the rules). Raises :class:`DagTooDeep` on reaching a block beyond :data:`MAX_DEPTH`,
    and :class:`~protocol.errors.InvalidBlock` if a dag-pb block does not decode."""
    seen: set[bytes] = set()
    stack: list[tuple[bytes, int, bytes | None, str]] = [(root, 0, None, "")]
    while stack:
        cid, depth, parent, name = stack.pop()
        if cid in seen:
            continue
        seen.add(cid)
        skipped = cid in skip
        if skipped and not descend_skipped:
            continue
        if depth > MAX_DEPTH:
            raise DagTooDeep(root, cid, parent, name)
        if has_block is not None and cid_codec(cid) != DAG_PB:
            if not skipped:
                yield Visit(cid, None, has_block(cid), depth, parent, name)
            continue
        data = get_block(cid)
        if not skipped:
            yield Visit(cid, data, data is not None, depth, parent, name)
        if data is not None:
            stack.extend((child, depth + 1, cid, link_name) for child, link_name in reversed(child_links(cid, data)))


def dag_cids(get_block: GetBlock, has_block: Callable[[bytes], bool], root: bytes) -> tuple[set[bytes], bool]:
    """(every CID of the DAG that can be seen from what is here, whether the DAG is all here),
    reading only the dag-pb nodes. A DAG deeper than :data:`MAX_DEPTH` is not complete."""
    cids: set[bytes] = set()
    complete = True
    try:
        for visit in walk(get_block, root, has_block=has_block):
            cids.add(visit.cid)
            complete = complete and visit.present
    except DagTooDeep:
        complete = False
    return cids, complete
