"""The dag-pb codec (IPLD spec ``codecs/dag-pb``), byte-exact with js ``@ipld/dag-pb``.

A PBNode is protobuf ``{ Links [2] repeated PBLink, Data [1] optional bytes }`` but is always
*written* Links first, then Data; a PBLink is ``{ Hash [1], Name [2], Tsize [3] }`` written in
that order, with Name always present. The decoder is strict in the way the spec asks (field order,
no unknown fields, Hash present) so that one node has exactly one encoding and a hostile block
cannot make two readers disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidBlock
from .varint import decode_varint, encode_varint


@dataclass(frozen=True, slots=True)
class PBLink:
    cid: bytes
    """Binary CID of the child."""
    name: str
    """Entry name in a directory; ``""`` for the chunks of a file."""
    tsize: int
    """Cumulative size of the child's DAG: what a fetcher will download for it."""


@dataclass(frozen=True, slots=True)
class PBNode:
    links: tuple[PBLink, ...]
    data: bytes | None


def _field(tag: int, payload: bytes) -> bytes:
    return bytes([tag]) + encode_varint(len(payload)) + payload


def encode_link(link: PBLink) -> bytes:
    name = link.name.encode("utf-8")
    return _field(0x0A, link.cid) + _field(0x12, name) + b"\x18" + encode_varint(link.tsize)


def encode_node(links: list[PBLink] | tuple[PBLink, ...], data: bytes | None) -> bytes:
    parts = [_field(0x12, encode_link(link)) for link in links]
    if data is not None:
        parts.append(_field(0x0A, data))
    return b"".join(parts)


def _read_bytes(buf: bytes, pos: int, what: str) -> tuple[bytes, int]:
    length, pos = decode_varint(buf, pos)
    end = pos + length
    if end > len(buf):
        raise InvalidBlock(f"dag-pb {what} runs past the end of the block")
    return buf[pos:end], end


def _decode_link(buf: bytes) -> PBLink:
    pos = 0
    cid = name = tsize = None
    last = 0
    while pos < len(buf):
        key, pos = decode_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if field <= last:
            raise InvalidBlock("dag-pb link fields out of order or repeated")
        last = field
        if field == 1 and wire == 2:
            cid, pos = _read_bytes(buf, pos, "link hash")
        elif field == 2 and wire == 2:
            raw, pos = _read_bytes(buf, pos, "link name")
            try:
                name = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidBlock("dag-pb link name is not UTF-8") from None
        elif field == 3 and wire == 0:
            tsize, pos = decode_varint(buf, pos)
        else:
            raise InvalidBlock(f"dag-pb link has unknown field {field} (wire type {wire})")
    if cid is None:
        raise InvalidBlock("dag-pb link has no Hash")
    if len(cid) == 34 and cid[0] == 0x12 and cid[1] == 0x20:
        # a CIDv0 (Kubo's links): always dag-pb + sha2-256, so the CIDv1 0x01 0x70 + the same
        # multihash names the same block (issue 16); everything past here sees CIDv1 only
        cid = b"\x01\x70" + cid
    return PBLink(cid=cid, name=name if name is not None else "", tsize=tsize or 0)


def decode_node(buf: bytes) -> PBNode:
    """Decode a dag-pb block; raises :class:`InvalidBlock` on anything non-canonical."""
    pos = 0
    links: list[PBLink] = []
    data: bytes | None = None
    while pos < len(buf):
        key, pos = decode_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if field == 2 and wire == 2:
            if data is not None:
                raise InvalidBlock("dag-pb Links after Data")
            raw, pos = _read_bytes(buf, pos, "link")
            links.append(_decode_link(raw))
        elif field == 1 and wire == 2:
            if data is not None:
                raise InvalidBlock("dag-pb node has two Data fields")
            data, pos = _read_bytes(buf, pos, "Data")
        else:
            raise InvalidBlock(f"dag-pb node has unknown field {field} (wire type {wire})")
    return PBNode(links=tuple(links), data=data)
