"""protocol.car: the streaming CARv1 codec.

Round trips under every awkward split, independence against the npm CAR tools (`@ipld/car`,
`ipfs-car`) in both directions, a hostile corpus with the exact reason for each rejection, and
the memory bound. Randomness is seeded; hypothesis runs derandomized.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabnode.protocol import dagcbor
from fabnode.protocol.car import (
    MAX_BLOCK_BYTES,
    MAX_BUFFERED_BYTES,
    MAX_HEADER_BYTES,
    MAX_ROOTS,
    MAX_SECTION_BYTES,
    NEED_DATA,
    Block,
    CarError,
    CarReader,
    End,
    Header,
    encode_header,
    encode_section,
    read_car,
)
from fabnode.protocol.cid import DAG_CBOR, DAG_PB, RAW, cid_str, make_cid, parse_cid
from fabnode.protocol.dagcbor import Link
from fabnode.protocol.errors import InvalidBlock
from fabnode.protocol.varint import encode_varint

TOOLS = Path(__file__).resolve().parents[1] / "test-tools"
NODE_MODULES = TOOLS / "node_modules"
IPFS_CAR = NODE_MODULES / ".bin" / "ipfs-car"
CODECS = (RAW, DAG_PB, DAG_CBOR)

# ------------------------------------------------------------------------------------- helpers


def make_blocks(seed: int, sizes: list[int]) -> list[tuple[bytes, bytes]]:
    """Random blocks of the given sizes, codecs cycling through raw/dag-pb/dag-cbor (the CAR layer
    never decodes a block, so random bytes under any codec are fine here)."""
    rng = random.Random(seed)
    out = []
    for i, size in enumerate(sizes):
        data = rng.randbytes(size)
        out.append((make_cid(CODECS[i % 3], data), data))
    return out


def build_car(roots: list[bytes], blocks: list[tuple[bytes, bytes]]) -> bytes:
    return encode_header(roots) + b"".join(encode_section(cid, data) for cid, data in blocks)


def expected_events(roots, blocks) -> list:
    return [Header(tuple(roots)), *(Block(cid, data) for cid, data in blocks), End()]


def drain(reader: CarReader, out: list) -> None:
    while True:
        event = reader.next_event()
        if event is NEED_DATA:
            return
        out.append(event)
        if isinstance(event, End):
            return


def read_in_pieces(data: bytes, pieces) -> list:
    """Feed ``data`` cut into ``pieces`` (an iterable of byte strings), then EOF; all events."""
    reader = CarReader()
    events: list = []
    fed = 0
    for piece in pieces:
        reader.feed(piece)
        fed += len(piece)
        drain(reader, events)
        assert not events or not isinstance(events[-1], End), "End before EOF"
    assert fed == len(data)
    reader.feed_eof()
    drain(reader, events)
    assert isinstance(events[-1], End), "no End after EOF"
    assert reader.next_event() == End()  # End is sticky
    assert reader.buffered == 0
    return events


def fixed_chunks(data: bytes, size: int):
    return (data[i:i + size] for i in range(0, len(data), size))


def cut_at(data: bytes, cuts) -> list[bytes]:
    points = sorted({0, len(data), *cuts})
    return [data[a:b] for a, b in zip(points, points[1:])]


def first_error(data: bytes, chunk: int) -> CarError:
    """Feed ``data`` in ``chunk``-byte pieces (then EOF) until the reader raises; return the error."""
    reader = CarReader()
    events: list = []
    with pytest.raises(CarError) as info:
        for piece in fixed_chunks(data, chunk):
            reader.feed(piece)
            drain(reader, events)
        reader.feed_eof()
        drain(reader, events)
    err = info.value
    assert isinstance(err, InvalidBlock)
    # errors are sticky and the buffer is dropped
    with pytest.raises(CarError) as again:
        reader.next_event()
    assert str(again.value) == str(err)
    assert reader.buffered == 0
    return err


# A file with every kind of size boundary: empty block, varint length steps (a section of 127/128
# bytes), 1 MiB and the largest block allowed.
SIZES = [0, 1, 35, 36, 37, 91, 92, 127, 128, 1000, 16384, 1 << 20, (1 << 20) + 1, MAX_BLOCK_BYTES]


@pytest.fixture(scope="module")
def sample():
    blocks = make_blocks(7, SIZES)
    roots = [blocks[-1][0], blocks[3][0]]
    return roots, blocks, build_car(roots, blocks)


# ------------------------------------------------------------------------------------- writer


def test_header_bytes_are_canonical_dag_cbor():
    root = make_cid(RAW, b"root")
    body = bytes.fromhex("a265726f6f747381d82a5825") + b"\x00" + root + bytes.fromhex("6776657273696f6e01")
    assert encode_header([root]) == bytes([len(body)]) + body
    assert encode_header([]) == bytes.fromhex("11a265726f6f7473806776657273696f6e01")


def test_section_bytes():
    data = b"x" * 200
    cid = make_cid(DAG_PB, data)
    assert encode_section(cid, data) == encode_varint(236) + cid + data
    assert encode_section(make_cid(RAW, b""), b"") == b"\x24" + make_cid(RAW, b"")


def test_writer_refuses_what_no_reader_would_accept():
    cid = make_cid(RAW, b"a")
    with pytest.raises(CarError, match="uses codec 0x72"):
        encode_header([b"\x01\x72" + cid[2:]])
    with pytest.raises(CarError, match=f"at most {MAX_ROOTS} roots"):
        encode_header([cid] * (MAX_ROOTS + 1))
    with pytest.raises(CarError, match="only CIDv1 with sha2-256"):
        encode_section(cid[:-1], b"a")
    with pytest.raises(CarError, match="does not use a sha2-256 multihash"):
        encode_section(b"\x01\x55\x13\x20" + cid[4:], b"a")


# ------------------------------------------------------------------------------------- round trip


def test_round_trip_whole(sample):
    roots, blocks, car = sample
    assert read_in_pieces(car, [car]) == expected_events(roots, blocks)
    assert list(read_car([car])) == expected_events(roots, blocks)[:-1]


@pytest.mark.parametrize("size", [1, 2, 3])
def test_round_trip_tiny_chunks(size):
    """Byte by byte through every state change (the big blocks are covered by the 7-byte test)."""
    blocks = make_blocks(8, [s for s in SIZES if s < 1 << 20])
    roots = [blocks[0][0]]
    car = build_car(roots, blocks)
    assert read_in_pieces(car, fixed_chunks(car, size)) == expected_events(roots, blocks)


@pytest.mark.parametrize("size", [7, 36, 37, 4093, 65536, 65537, MAX_SECTION_BYTES + 3])
def test_round_trip_fixed_chunks(sample, size):
    roots, blocks, car = sample
    assert read_in_pieces(car, fixed_chunks(car, size)) == expected_events(roots, blocks)
    assert list(read_car(fixed_chunks(car, size))) == expected_events(roots, blocks)[:-1]


@pytest.mark.parametrize("seed", range(4))
def test_round_trip_random_splits(sample, seed):
    roots, blocks, car = sample
    rng = random.Random(seed)
    cuts = [rng.randrange(len(car)) for _ in range(300)]
    # some cuts right around every section boundary, where state changes
    pos = len(encode_header(roots))
    for cid, data in blocks:
        cuts += [pos + rng.randrange(-2, 3), pos + rng.randrange(1, 40)]
        pos += len(encode_section(cid, data))
    pieces = cut_at(car, [c for c in cuts if 0 <= c <= len(car)])
    assert read_in_pieces(car, pieces) == expected_events(roots, blocks)


@settings(max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    blocks=st.lists(st.tuples(st.sampled_from(CODECS), st.binary(max_size=400)), max_size=6),
    root_count=st.integers(0, 3),
    data=st.data(),
)
def test_round_trip_hypothesis_splits(blocks, root_count, data):
    blocks = [(make_cid(codec, raw), raw) for codec, raw in blocks]
    roots = [make_cid(RAW, bytes([i])) for i in range(root_count)]
    car = build_car(roots, blocks)
    cuts = data.draw(st.lists(st.integers(0, len(car)), max_size=60))
    assert read_in_pieces(car, cut_at(car, cuts)) == expected_events(roots, blocks)


def test_duplicate_blocks_and_no_roots_are_read_as_written():
    blocks = make_blocks(3, [10, 10, 0])
    blocks.append(blocks[0])
    car = build_car([], blocks)
    assert read_in_pieces(car, fixed_chunks(car, 3)) == expected_events([], blocks)


# ------------------------------------------------------------------------------------- independence


NODE_READER = r"""
// Read a CAR with @ipld/car, re-hash every block with multiformats' sha256, print what it saw.
import { CarBlockIterator } from '@ipld/car/iterator'
import { sha256 } from 'multiformats/hashes/sha2'
import { createReadStream } from 'node:fs'

const iterator = await CarBlockIterator.fromIterable(createReadStream(process.argv[2]))
for (const root of await iterator.getRoots()) console.log('root', root.toString())
for await (const { cid, bytes } of iterator) {
  if (cid.version !== 1 || cid.multihash.code !== sha256.code) throw new Error(`unexpected CID ${cid}`)
  const digest = await sha256.digest(bytes)
  const same = Buffer.compare(Buffer.from(digest.digest), Buffer.from(cid.multihash.digest)) === 0
  console.log('block', cid.toString(), bytes.length, same ? 'verified' : 'MISMATCH')
}
"""


def _node() -> str:
    node = shutil.which("node")
    if node is None or not NODE_MODULES.is_dir():
        pytest.fail(f"node and {NODE_MODULES} are needed: run 'make test' (it installs test-tools with npm ci)")
    return node


def node_read(tmp_path: Path, car: Path) -> tuple[list[str], list[tuple[str, int, str]]]:
    """Run the @ipld/car reader on ``car``. The script lives in tmp_path; a node_modules symlink
    beside it lets Node's ESM resolver find the test-tools packages without touching the repo."""
    work = tmp_path / "node-reader"
    work.mkdir(exist_ok=True)
    if not (work / "node_modules").exists():
        (work / "node_modules").symlink_to(NODE_MODULES, target_is_directory=True)
    script = work / "read-car.mjs"
    script.write_text(NODE_READER)
    result = subprocess.run([_node(), str(script), str(car)], capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    roots, blocks = [], []
    for line in result.stdout.decode().splitlines():
        kind, *rest = line.split()
        if kind == "root":
            roots.append(rest[0])
        else:
            blocks.append((rest[0], int(rest[1]), rest[2]))
    return roots, blocks


def ipfs_car(*args: str) -> str:
    if not IPFS_CAR.exists():
        pytest.fail(f"{IPFS_CAR} is missing: run 'make test' (it installs test-tools with npm ci)")
    result = subprocess.run([str(IPFS_CAR), *map(str, args)], capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def test_ipld_car_reads_what_we_write(tmp_path, sample):
    roots, blocks, car = sample
    path = tmp_path / "ours.car"
    path.write_bytes(car)
    node_roots, node_blocks = node_read(tmp_path, path)
    assert node_roots == [cid_str(r) for r in roots]
    assert node_blocks == [(cid_str(cid), len(data), "verified") for cid, data in blocks]
    assert ipfs_car("roots", path).split() == [cid_str(r) for r in roots]
    assert ipfs_car("blocks", path).split() == [cid_str(cid) for cid, _ in blocks]


def test_ipld_car_reads_a_rootless_header(tmp_path):
    blocks = make_blocks(11, [5, 0, 300])
    path = tmp_path / "rootless.car"
    path.write_bytes(build_car([], blocks))
    node_roots, node_blocks = node_read(tmp_path, path)
    assert node_roots == []
    assert node_blocks == [(cid_str(cid), len(data), "verified") for cid, data in blocks]
    assert ipfs_car("blocks", path).split() == [cid_str(cid) for cid, _ in blocks]


def test_we_read_what_ipfs_car_packs(tmp_path):
    rng = random.Random(5)
    src = tmp_path / "design"
    (src / "cad" / "parts").mkdir(parents=True)
    (src / "frame.step").write_bytes(rng.randbytes(2_600_000))  # 3 raw leaves under a dag-pb node
    (src / "README.md").write_text("# a bracket\n")
    (src / "empty.txt").write_bytes(b"")
    (src / "cad" / "parts" / "bolt.scad").write_bytes(rng.randbytes(70_000))
    out = tmp_path / "packed.car"
    root = parse_cid(ipfs_car("pack", src, "--output", out).strip())
    car = out.read_bytes()
    events = read_in_pieces(car, cut_at(car, [rng.randrange(len(car)) for _ in range(200)]))
    assert events[0] == Header((root,))
    blocks = events[1:-1]
    assert all(isinstance(b, Block) for b in blocks)
    cids = [b.cid for b in blocks]
    assert root in cids
    assert {RAW, DAG_PB} == {cid[1] for cid in cids}
    assert [cid_str(c) for c in cids] == ipfs_car("blocks", out).split()
    assert sum(len(b.data) for b in blocks if b.cid[1] == RAW) >= 2_600_000 + 70_000
    # and our header is byte-for-byte the one ipfs-car wrote
    assert car.startswith(encode_header([root]))
    # ipfs-car without --output streams a CAR whose header has no root: same bytes as ours
    streamed = subprocess.run([str(IPFS_CAR), "pack", str(src)], capture_output=True, timeout=120, check=True).stdout
    assert streamed.startswith(encode_header([]))
    streamed_events = list(read_car(fixed_chunks(streamed, 65536)))
    assert streamed_events[0] == Header(())
    assert {e.cid for e in streamed_events[1:]} == set(cids)


# ------------------------------------------------------------------------------------- hostile input


def _header_body(value) -> bytes:
    body = dagcbor.encode(value)
    return encode_varint(len(body)) + body


def _hostile_corpus():
    """(id, bytes, substrings the one-line message must contain)."""
    blocks = make_blocks(21, [1000, 40, 5000])
    (c1, d1), (c2, d2), (c3, d3) = blocks
    roots = [c1, c2, make_cid(DAG_CBOR, b"\xa0")]  # three roots: the header length takes 2 bytes
    header = encode_header(roots)
    assert header[0] & 0x80 and len(header) == 2 + 140
    s1, s2, s3 = (encode_section(c, d) for c, d in blocks)
    at1, at2, at3 = len(header), len(header) + len(s1), len(header) + len(s1) + len(s2)
    good = header + s1 + s2 + s3
    end = len(good)
    block_tail = (make_cid(RAW, b"abc"), b"abc")
    tail = encode_section(*block_tail)

    def with_cid(cid: bytes, data: bytes) -> bytes:
        return header + encode_varint(len(cid) + len(data)) + cid + data

    flipped = bytearray(good)
    flipped[at2 + 1 + 36 + 7] ^= 0x04
    non_minimal_header = bytes([0x80 | 17, 0x00]) + encode_header([])[1:]
    big = bytes(MAX_BLOCK_BYTES + 1)
    blake = hashlib.blake2b(d1, digest_size=32).digest()
    cidv0 = b"\x12\x20" + hashlib.sha256(d1).digest()
    one = (Link(c1),)
    cases = [
        ("flipped-bit", bytes(flipped),
         [f"section 2 at byte {at2}: block {cid_str(c2)} does not match its CID"]),
        ("empty-file", b"", ["empty CAR file"]),
        ("truncated-in-header-varint", good[:1],
         ["truncated CAR: file ends inside the header length varint (after 1 byte)"]),
        ("truncated-in-header", good[:50], ["truncated CAR: header ends after 48 of 140 bytes"]),
        ("truncated-in-section-varint", good[:at1 + 1],
         [f"truncated CAR: file ends inside the length varint of section 1 at byte {at1} (after 1 byte)"]),
        ("truncated-in-cid", good[:at1 + 2 + 20],
         [f"truncated CAR: section 1 at byte {at1} ends after 20 of 1036 bytes (inside its CID)"]),
        ("truncated-in-data", good[:at3 + 2 + 100],
         [f"truncated CAR: section 3 at byte {at3} ends after 100 of 5036 bytes"]),
        ("truncated-last-byte", good[:-1],
         [f"truncated CAR: section 3 at byte {at3} ends after 5035 of 5036 bytes"]),
        ("trailing-partial-varint", good + b"\x85",
         [f"truncated CAR: file ends inside the length varint of section 4 at byte {end} (after 1 byte)"]),
        ("trailing-section-header-only", good + tail[:1],
         [f"truncated CAR: section 4 at byte {end} ends after 0 of 39 bytes (inside its CID)"]),
        ("huge-section-claim", header + encode_varint(1 << 40) + c1 + d1,
         [f"section 1 length at byte {at1} claims", f"more than the {MAX_SECTION_BYTES}-byte limit"]),
        ("block-over-2MiB", header + encode_section(make_cid(RAW, big), big),  # the writer does not refuse it
         [f"section 1 length at byte {at1} claims {MAX_SECTION_BYTES + 1} bytes, more than the "
          f"{MAX_SECTION_BYTES}-byte limit (a 36-byte CID plus a 2 MiB block)"]),
        ("zero-length-section", header + b"\x00" + s1,
         [f"section 1 at byte {at1} has zero length"]),
        ("oversized-header-claim", encode_varint(MAX_HEADER_BYTES + 1) + b"\xa2" * 100,
         [f"CAR header length at byte 0 claims {MAX_HEADER_BYTES + 1} bytes, "
          f"more than the {MAX_HEADER_BYTES}-byte limit (1 MiB)"]),
        ("huge-header-claim", encode_varint(1 << 50), ["CAR header length at byte 0 claims"]),
        ("zero-length-header", b"\x00" + s1, ["CAR header has zero length"]),
        ("header-not-cbor", b"\x03\xff\xff\xff" + s1, ["CAR header is not valid DAG-CBOR"]),
        ("header-not-a-map", _header_body([1, [Link(c1)]]) + s1,
         ["CAR header is not a DAG-CBOR map (it is a list)"]),
        ("header-version-2", _header_body({"roots": list(one), "version": 2}) + s1,
         ["CAR header has version 2; only CARv1 (version 1) is read here"]),
        ("header-version-true", _header_body({"roots": list(one), "version": True}) + s1,
         ["CAR header has version True"]),
        ("header-extra-key", _header_body({"roots": list(one), "version": 1, "extra": 0}) + s1,
         ["CAR header must have exactly the keys 'roots' and 'version' (unexpected 'extra')"]),
        ("header-no-roots", _header_body({"version": 1}) + s1,
         ["CAR header must have exactly the keys 'roots' and 'version' (missing 'roots')"]),
        ("header-roots-not-list", _header_body({"roots": Link(c1), "version": 1}) + s1,
         ["CAR header roots is a byte string, not a list of CIDs"]),
        ("header-root-integer", _header_body({"roots": [1], "version": 1}) + s1,
         ["CAR header root 1 is an integer, not a CID"]),
        ("header-root-garbage-link", _header_body({"roots": [Link(c1), Link(b"\x01\x55\x12\x20abc")], "version": 1}),
         ["CAR header is not valid DAG-CBOR", "Invalid CID"]),
        ("header-root-short-digest", _header_body({"roots": [Link(c1), Link(b"\x01\x55\x12\x14" + c1[4:24])], "version": 1}),
         ["CAR header root 2: unsupported CID bytes"]),
        ("header-root-unknown-codec", _header_body({"roots": [Link(b"\x01\x72" + c1[2:])], "version": 1}),
         ["CAR header root 1: CID", "uses codec 0x72"]),
        ("header-roots-untagged-bytes", _header_body({"roots": [c1], "version": 1}) + s1,
         ["CAR header roots are byte strings, not CID links (tag 42)"]),
        ("header-non-canonical-int",
         _header_body({"roots": [], "version": 1})[:-1].replace(b"\x11", b"\x12", 1) + b"\x18\x01",
         ["CAR header is not canonical DAG-CBOR"]),
        ("header-too-many-roots", _header_body({"roots": [Link(c1)] * (MAX_ROOTS + 1), "version": 1}),
         [f"CAR header names {MAX_ROOTS + 1} roots; at most {MAX_ROOTS} are accepted"]),
        ("non-minimal-header-varint", non_minimal_header + s1,
         ["CAR header length at byte 0: non-minimal varint"]),
        ("non-minimal-section-varint", header + bytes([0x80 | 39, 0x00]) + tail[1:],
         [f"section 1 length at byte {at1}: non-minimal varint"]),
        ("non-minimal-cid-codec-varint", with_cid(b"\x01\xd5\x00\x12\x20" + c1[4:], d1),
         [f"section 1 at byte {at1}: CID codec: non-minimal varint"]),
        ("unknown-hash-blake2b-256", with_cid(b"\x01\x55" + encode_varint(0xB220) + b"\x20" + blake, d1),
         [f"section 1 at byte {at1}: CID uses hash function 0xb220 (blake2b-256); fabnode verifies only sha2-256"]),
        ("unknown-hash-unnamed", with_cid(b"\x01\x55" + encode_varint(0x3FFF) + b"\x20" + blake, d1),
         ["CID uses hash function 0x3fff; fabnode verifies only sha2-256"]),
        ("unknown-codec", with_cid(b"\x01\x72" + c1[2:], d1),
         [f"section 1 at byte {at1}: CID uses codec 0x72; fabnode stores only raw, dag-pb and dag-cbor"]),
        ("cidv0-section", with_cid(cidv0, d1),
         [f"section 1 at byte {at1} holds a CIDv0 (bare sha2-256 multihash); fabnode reads only CIDv1 sections"]),
        ("cid-version-2", with_cid(b"\x02" + c1[1:], d1),
         [f"section 1 at byte {at1}: CID version 2 is not supported (only CIDv1)"]),
        ("short-digest", with_cid(b"\x01\x55\x12\x14" + c1[4:24], d1),
         [f"section 1 at byte {at1}: CID has a 20-byte sha2-256 digest, not 32 bytes"]),
        ("section-shorter-than-cid", header + b"\x0a" + c1[:10],
         [f"section 1 at byte {at1}: its CID runs past the end of the 10-byte section"]),
        ("section-shorter-than-digest", header + b"\x10" + c1[:16],
         [f"section 1 at byte {at1}: its CID runs past the end of the 16-byte section"]),
        ("bad-block-after-good-ones", good + encode_varint(39) + block_tail[0] + b"abd",
         [f"section 4 at byte {end}: block {cid_str(block_tail[0])} does not match its CID"]),
    ]
    return cases


HOSTILE = _hostile_corpus()


@pytest.mark.parametrize(("data", "reasons"), [pytest.param(d, r, id=i) for i, d, r in HOSTILE])
@pytest.mark.parametrize("chunk", [1 << 30, 1, 7], ids=["whole", "bytewise", "7-bytes"])
def test_hostile_input_is_refused_with_its_reason(data, reasons, chunk):
    err = first_error(data, chunk)
    message = str(err)
    assert "\n" not in message
    for reason in reasons:
        assert reason in message


def test_hostile_errors_carry_section_and_offset():
    blocks = make_blocks(2, [10, 20])
    car = build_car([], blocks)
    bad = bytearray(car)
    bad[-1] ^= 1
    err = first_error(bytes(bad), 1 << 20)
    assert (err.section, err.offset) == (2, len(car) - len(encode_section(*blocks[1])))
    err = first_error(b"", 1)
    assert err.section is None and err.offset == 0


def _header_then(reader: CarReader) -> None:
    reader.feed(encode_header([]))
    assert isinstance(reader.next_event(), Header)
    assert reader.next_event() is NEED_DATA


@pytest.mark.parametrize("claim", [MAX_SECTION_BYTES + 1, 3 << 20, 1 << 40, (1 << 63) - 1])
def test_huge_section_claim_fails_before_its_bytes_arrive(claim):
    varint = encode_varint(claim)
    reader = CarReader()
    _header_then(reader)
    for i, byte in enumerate(varint):
        reader.feed(bytes([byte]))
        try:
            assert reader.next_event() is NEED_DATA
        except CarError as exc:
            assert "section 1 length at byte 18 claims" in str(exc)
            break
    else:
        pytest.fail("no error")
    assert i <= 4  # at most the 4 bytes a 2 MiB claim needs; never waiting for the data or EOF


@pytest.mark.parametrize("claim", [MAX_HEADER_BYTES + 1, 1 << 40])
def test_huge_header_claim_fails_before_its_bytes_arrive(claim):
    reader = CarReader()
    varint = encode_varint(claim)
    reader.feed(varint[:3])  # 3 continuation bytes (or the whole varint) already exceed 1 MiB
    with pytest.raises(CarError, match="CAR header length at byte 0 claims"):
        reader.next_event()


def test_largest_allowed_section_is_accepted():
    data = bytes(MAX_BLOCK_BYTES)
    cid = make_cid(RAW, data)
    section = encode_section(cid, data)
    assert len(section) == 4 + MAX_SECTION_BYTES
    assert list(read_car([encode_header([cid]), section[:100], section[100:]])) == [Header((cid,)), Block(cid, data)]


# ------------------------------------------------------------------------------------- memory bound


def test_memory_stays_bounded_by_one_section():
    chunk = 64 << 10
    block_size = 1 << 20
    rng = random.Random(99)

    def stream():
        pending = bytearray(encode_header([]))
        for _ in range(50):
            data = rng.randbytes(block_size)
            pending += encode_section(make_cid(RAW, data), data)
            while len(pending) >= chunk:
                yield bytes(pending[:chunk])
                del pending[:chunk]
        yield bytes(pending)

    reader = CarReader()
    events: list = []
    peak = 0
    for piece in stream():
        reader.feed(piece)
        peak = max(peak, reader.buffered)
        drain(reader, events)
        assert reader.buffered < block_size + 36 + 3  # after draining: less than one whole section
    reader.feed_eof()
    drain(reader, events)
    assert len(events) == 52 and isinstance(events[-1], End)
    assert all(len(e.data) == block_size for e in events[1:-1])
    section = 3 + 36 + block_size
    assert section <= peak <= section + chunk  # one section plus one chunk, far below 2 sections
    assert reader.offset == len(encode_header([])) + 50 * section


def test_feed_refuses_to_buffer_without_draining():
    reader = CarReader()
    reader.feed(bytes(MAX_BUFFERED_BYTES + 1))
    with pytest.raises(RuntimeError, match="call next_event"):
        reader.feed(b"\x00")
    reader = CarReader()
    reader.feed_eof()
    with pytest.raises(RuntimeError, match="after feed_eof"):
        reader.feed(b"\x00")


def test_read_car_is_lazy():
    """read_car yields each block as soon as its section is complete, before later chunks are read."""
    blocks = make_blocks(4, [10, 20, 30])
    car = build_car([], blocks)
    consumed = []

    def chunks():
        for piece in fixed_chunks(car, 5):
            consumed.append(len(piece))
            yield piece

    it = read_car(chunks())
    assert next(it) == Header(())
    first = next(it)
    assert first == Block(*blocks[0])
    assert sum(consumed) < len(car)
    with pytest.raises(CarError):  # and it raises on truncation at the end of a lazy stream
        list(read_car(fixed_chunks(car[:-1], 5)))


def test_a_reader_told_not_to_hash_raw_leaves_hands_them_over_to_be_checked():
    """verify_raw=False (a fetch hashes leaves in its writer thread): raw sections come out as
    UnverifiedBlock, whose check() refuses a forged one in the verifying reader's own words;
    dag-pb nodes, whose links steer the reader's caller, are still verified as they are read."""
    from fabnode.protocol.car import UnverifiedBlock
    from fabnode.protocol.dagpb import PBLink, encode_node

    leaf = b"a leaf" * 100
    leaf_cid = make_cid(RAW, leaf)
    node = encode_node([PBLink(leaf_cid, "x", len(leaf))], b"")
    node_cid = make_cid(DAG_PB, node)
    forged = encode_header([node_cid]) + encode_section(node_cid, node) + encode_section(leaf_cid, leaf[:-1] + b"!")
    reader = CarReader(verify_raw=False)
    reader.feed(forged)
    reader.feed_eof()
    events = [reader.next_event() for _ in range(4)]
    assert isinstance(events[1], Block) and isinstance(events[2], UnverifiedBlock) and isinstance(events[3], End)
    with pytest.raises(CarError) as unhashed:
        events[2].check()
    with pytest.raises(CarError) as hashed:
        list(read_car([forged]))
    assert str(unhashed.value) == str(hashed.value) and unhashed.value.section == 2
    good = CarReader(verify_raw=False)
    good.feed(encode_header([node_cid]) + encode_section(leaf_cid, leaf))
    good.next_event()
    assert good.next_event().check() == Block(leaf_cid, leaf)
    bad_node = CarReader(verify_raw=False)  # a dag-pb node is never handed over unhashed
    bad_node.feed(encode_header([node_cid]) + encode_section(node_cid, node + b"\0"))
    bad_node.next_event()
    with pytest.raises(CarError, match="does not match its CID"):
        bad_node.next_event()
