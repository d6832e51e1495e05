"""Content-defined chunking: the rabin chunker of ``ipfs-unixfs-importer`` (``rabin-wasm``), in Python.

Why: with fixed 1 MiB chunks an insertion near the start of a file shifts every later chunk, so a
revised CAD file costs its whole size again. A content-defined chunker cuts where the content says
(a rolling fingerprint of the last 16 bytes has its low bits zero), so after an edit the cuts fall
back into step and only the chunks around the edit are new. Implementing *exactly* the chunker the
JavaScript IPFS importer ships gives an independent oracle: the same options give the same CIDs
(tests/test_chunker.py runs test-tools/rabin-file.mjs).

Theory of operation. ``rabin-wasm`` keeps a Rabin fingerprint (polynomial 0x3DA3358B4DC173, degree
53) of a 16-byte window, reset after every cut; a chunk ends at the first byte where at least
``min`` bytes were taken and ``fingerprint & mask == 0`` (``mask = 2**floor(log2(avg)) - 1``), or
at ``max`` bytes. The fingerprint is linear over GF(2) and, once 16 bytes followed the reset (``min``
is at least 16), depends only on those 16 bytes: fp = XOR over the window's slot i of
``T_i[byte]``, with ``T_i[b] = b * x**(8*(15-i)) mod P``. So instead of a byte-at-a-time loop (some
MB/s in CPython) each chunk's candidate region is filtered whole: for each window slot
``bytes.translate`` maps every byte to its contribution to the fingerprint's low byte, the 16
results are XORed as big integers, and ``bytes.find`` finds the positions where that byte is zero
(one in 256) at C speed; only there is the whole masked fingerprint computed, byte by byte.
Pure: bytes in, chunks out.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

POLYNOMIAL = 0x3DA3358B4DC173
"""rabin-wasm's irreducible polynomial (degree 53)."""
WINDOW = 16
"""Bytes in the rolling window (ipfs-unixfs-importer's default)."""


def _degree(p: int) -> int:
    return p.bit_length() - 1


def _mod(x: int, p: int) -> int:
    dp = _degree(p)
    while x and _degree(x) >= dp:
        x ^= p << (_degree(x) - dp)
    return x


def importer_sizes(avg: int) -> tuple[int, int, int]:
    """(bits, min, max) as ipfs-unixfs-importer's ``rabin({avgChunkSize: avg})`` derives them:
    min = avg / 3 (truncated when handed to the wasm), max = avg * 1.5, mask bits floor(log2 avg)."""
    minimum, maximum = int(avg / 3), int(avg + avg / 2)
    if minimum < WINDOW:
        raise ValueError(f"average chunk size {avg} is too small (min {minimum} must be at least {WINDOW})")
    return max(avg, minimum).bit_length() - 1, minimum, maximum


class RabinChunker:
    """Cuts a stream of bytes as ``rabin-wasm`` does (see the module docstring)."""

    def __init__(self, avg: int) -> None:
        self.bits, self.min, self.max = importer_sizes(avg)
        mask = (1 << self.bits) - 1
        self._slots = [[_mod(b << (8 * (WINDOW - 1 - i)), POLYNOMIAL) & mask for b in range(256)]
                       for i in range(WINDOW)]
        self._low = [bytes(value & 0xFF for value in slot) for slot in self._slots]
        """Per window slot: each byte's contribution to the fingerprint's low byte (the filter)."""

    def _cut(self, buf: bytes | bytearray | memoryview, start: int, end: int) -> int | None:
        """Length of the chunk starting at ``start`` if a cut point lies before ``end``, else None."""
        first = start + self.min - 1  # the first byte a chunk may end at
        if end <= first:
            return None
        region = bytes(buf[first - (WINDOW - 1):end])
        length = len(region) - (WINDOW - 1)
        low = 0  # the low byte of every position's fingerprint, at C speed
        for i, table in enumerate(self._low):
            low ^= int.from_bytes(memoryview(region.translate(table))[i:i + length], "little")
        lows = low.to_bytes(length, "little")
        slots = self._slots
        at = lows.find(0)
        while at >= 0:  # about one position in 256: check the whole mask there
            fingerprint = 0
            for i in range(WINDOW):
                fingerprint ^= slots[i][region[at + i]]
            if fingerprint == 0:
                return first + at - start + 1
            at = lows.find(0, at + 1)
        return None

    def chunks(self, pieces: Iterable[bytes]) -> Iterator[bytes]:
        """The chunks of the concatenation of ``pieces`` (any sizes), in order; memory stays
        within a few ``max``-sized buffers."""
        buf = bytearray()
        for piece in pieces:
            buf += piece
            while len(buf) >= self.max:
                size = self._cut(buf, 0, self.max) or self.max
                yield bytes(buf[:size])
                del buf[:size]
        while buf:
            size = self._cut(buf, 0, len(buf)) or len(buf)
            yield bytes(buf[:size])
            del buf[:size]


def rabin_chunks(data: bytes, avg: int) -> list[bytes]:
    """All chunks of ``data`` (tests and small inputs)."""
    return list(RabinChunker(avg).chunks([data]))


# ------------------------------------------------------------------ profiles

DEFAULT_PROFILE = "unixfs-v1-2025"
PROFILES: dict[str, int | None] = {
    DEFAULT_PROFILE: None,
    "rabin-32k": 32 << 10,
}
"""How files are cut, by profile name: None is fixed 1 MiB chunks (``ipfs-car pack``'s CIDs);
a number is rabin with that average (ipfs-unixfs-importer's ``rabin({avgChunkSize})``), the
rest of the layout unchanged (raw leaves, balanced, 1024 links wide)."""


def check_profile(name: str) -> str:
    """``name`` if it is a known profile; ValueError naming the known ones otherwise."""
    if name not in PROFILES:
        raise ValueError(f"unknown chunking profile {name!r} (known: {', '.join(PROFILES)})")
    return name


def profile_chunks(name: str, pieces: Iterable[bytes]) -> tuple[Iterator[bytes], int]:
    """(chunks, largest chunk) of ``pieces`` (fixed 1 MiB reads) under profile ``name``."""
    avg = PROFILES[check_profile(name)]
    if avg is None:
        return iter(pieces), 1 << 20
    chunker = RabinChunker(avg)
    return chunker.chunks(pieces), chunker.max
