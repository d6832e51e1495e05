"""Content-defined chunking (issue 20): rabin-wasm's cuts in Python, CID parity with
ipfs-unixfs-importer's rabin chunker, and the chunking profile a design keeps across versions."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from conftest import TOOLS, Cli

from fabnode.protocol.chunker import POLYNOMIAL, WINDOW, RabinChunker, importer_sizes, profile_chunks, rabin_chunks
from fabnode.protocol.cid import cid_str
from fabnode.protocol.unixfs import FileBuilder

NODE24 = TOOLS / "node_modules" / ".bin" / "node"


def _reference_cuts(data: bytes, avg: int) -> list[int]:
    """rabin-wasm's loop transcribed byte by byte (assembly/index.ts): tables, slide, reset."""
    bits, minimum, maximum = importer_sizes(avg)
    mask = (1 << bits) - 1

    def mod(x: int) -> int:
        while x.bit_length() - 1 >= 53:
            x ^= POLYNOMIAL << (x.bit_length() - 1 - 53)
        return x

    out_table = []
    for b in range(256):
        h = mod(b)
        for _ in range(WINDOW - 1):
            h = mod(h << 8)
        out_table.append(h)
    mod_table = [mod(b << 53) | (b << 53) for b in range(256)]
    window, wpos, digest, count = [0] * WINDOW, 0, 0, 0

    def slide(b: int) -> None:
        nonlocal wpos, digest
        out = window[wpos]
        window[wpos] = b
        digest ^= out_table[out]
        wpos = (wpos + 1) % WINDOW
        digest = ((digest << 8) | b) ^ mod_table[digest >> 45]

    def reset() -> None:
        nonlocal wpos, digest, count
        window[:] = [0] * WINDOW
        wpos = digest = count = 0
        slide(1)

    reset()
    sizes = []
    for b in data:
        slide(b)
        count += 1
        if (count >= minimum and digest & mask == 0) or count >= maximum:
            sizes.append(count)
            reset()
    if count:
        sizes.append(count)
    return sizes


def _inputs(tmp_path: Path) -> list[Path]:
    """Seeded random bytes, a STEP-like text and an STL-like binary, a few hundred KiB each,
    plus edge sizes (tiny, exactly one chunk's minimum). (The empty file is the empty raw block
    whatever the chunker: ipfs-unixfs-importer with rabin yields no entry at all for it.)"""
    rng = random.Random(20)
    out = {"random.bin": rng.randbytes(700_000), "tiny.txt": b"hello",
           "min.bin": rng.randbytes(importer_sizes(4096)[1])}
    lines = [f"#{i}=CARTESIAN_POINT('',({rng.uniform(-500, 500):.6f},{rng.uniform(-500, 500):.6f},"
             f"{rng.uniform(0, 90):.6f}));\n" for i in range(9000)]
    out["part.step"] = ("ISO-10303-21;\nHEADER;\nENDSEC;\nDATA;\n" + "".join(lines) + "ENDSEC;\n").encode()
    import struct
    tris = b"".join(struct.pack("<12fH", *(rng.uniform(-100, 100) for _ in range(12)), 0) for _ in range(12000))
    out["part.stl"] = b"\0" * 80 + struct.pack("<I", 12000) + tris
    paths = []
    for name, data in out.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    return paths


def _python_cid(data: bytes, avg: int) -> str:
    chunker = RabinChunker(avg)
    builder = FileBuilder(chunk_size=chunker.max)
    for chunk in chunker.chunks(data[i:i + 100_003] for i in range(0, len(data), 100_003)):
        builder.add_chunk(chunk)
    return cid_str(builder.finish()[1].cid)


@pytest.mark.parametrize("avg", [4096, 65536])
def test_cuts_match_rabin_wasm_transcribed(avg):
    """The C-speed filter cuts exactly where the byte-at-a-time loop of rabin-wasm does."""
    rng = random.Random(avg)
    data = rng.randbytes(300_000) + b"\0" * 50_000 + b"ab" * 40_000  # runs of zeros and periodic text too
    chunks = rabin_chunks(data, avg)
    assert b"".join(chunks) == data
    assert [len(c) for c in chunks] == _reference_cuts(data, avg)


def test_cids_equal_ipfs_unixfs_importer(tmp_path):
    """The independent oracle: ipfs-unixfs-importer 17.1.1's rabin chunker (rabin-wasm) with the
    same average gives the same root CIDs, for random, text and binary CAD-like inputs."""
    paths = _inputs(tmp_path)
    for avg in (4096, 65536):
        result = subprocess.run([str(NODE24), str(TOOLS / "rabin-file.mjs"), str(avg), *map(str, paths)],
                                capture_output=True, check=True, timeout=120)
        expected = result.stdout.decode().split()
        assert [_python_cid(p.read_bytes(), avg) for p in paths] == expected, avg


def test_edit_costs_about_the_change():
    """Why the profile exists: after an insertion near the start, fixed chunks are all new;
    content-defined ones fall back into step within a chunk or two."""
    rng = random.Random(7)
    v1 = rng.randbytes(3 << 20)
    v2 = v1[:1000] + rng.randbytes(3000) + v1[1000:]

    def reads(data: bytes) -> list[bytes]:  # as files.py reads a file: 1 MiB at a time
        return [data[i:i + (1 << 20)] for i in range(0, len(data), 1 << 20)]

    for name, most_new in (("rabin-32k", 4), ("unixfs-v1-2025", None)):
        old = set(profile_chunks(name, reads(v1))[0])
        new = [c for c in profile_chunks(name, reads(v2))[0] if c not in old]
        if most_new is None:
            assert len(new) == 4  # every 1 MiB chunk shifted
        else:
            assert 1 <= len(new) <= most_new


def test_profile_is_recorded_and_kept_across_versions(cli: Cli, tmp_path):
    """publish --profile rabin-32k records the profile for the design; the next publish of the
    design (no --profile) uses it, so the revised file shares all but the edited chunks; an
    unknown profile is one clear error that stores nothing."""
    folder = tmp_path / "pump"
    folder.mkdir()
    (folder / "okh.toml").write_text('okhv = "OKH-LOSHv1.0"\nname = "Pump"\nversion = "1.0"\n'
                                     'repo = "https://example.org/pump"\nlicense = "CERN-OHL-S-2.0"\n'
                                     'licensor = "Test Lab"\ndocumentation-language = "en"\nfunction = "pumps water"\n')
    rng = random.Random(3)
    body = rng.randbytes(600_000)
    (folder / "body.stl").write_bytes(body)
    first = cli.json("publish", str(folder), "-m", "first", "--profile", "rabin-32k")
    design = first["design"]
    (folder / "body.stl").write_bytes(body[:5000] + b"a small change" + body[5000:])
    second = cli.json("publish", str(folder), "-m", "thicker wall", "--design", design)

    def leaves(bundle: str) -> set[str]:
        file_cid = next(e["cid"] for e in cli.json("ls", bundle) if e["name"] == "body.stl")
        car = tmp_path / f"{bundle}.car"
        cli.run("export", "--bundle", f"{bundle}/body.stl", str(car))
        from fabnode.protocol.car import read_car
        data = car.read_bytes()
        return {cid_str(b.cid) for b in read_car([data]) if hasattr(b, "cid") and cid_str(b.cid) != file_cid}

    old, new = leaves(first["bundle"]), leaves(second["bundle"])
    assert len(old) >= 6 and len(new - old) <= 3  # content-defined: most chunks shared
    # the same folder with the default profile gives ipfs-car's fixed 1 MiB layout: another root
    assert cli.out("add", str(folder / "body.stl")) != cli.out("add", "--profile", "rabin-32k", str(folder / "body.stl"))
    assert "unknown chunking profile 'fastcdc'" in cli.fails("publish", str(folder), "-m", "x", "--design", design,
                                                              "--profile", "fastcdc")
