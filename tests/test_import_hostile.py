"""A corpus of hostile and broken CAR files: each is refused with one clear line (or, for
duplicated blocks, handled) and leaves the store exactly as it was."""

from __future__ import annotations

import time

import pytest
from nacl.signing import SigningKey

from fabnode.protocol.car import encode_header, encode_section
from fabnode.protocol.cid import DAG_CBOR, DAG_PB, RAW, make_cid
from fabnode.protocol.dagcbor import Link, encode
from fabnode.protocol.dagpb import PBLink, encode_node
from fabnode.protocol.identity import did_from_ed25519
from fabnode.protocol.records import make_record
from fabnode.protocol.unixfs import DIRECTORY_DATA
from fabnode.protocol.varint import encode_varint

from conftest import Cli, write_random_file
from test_hamt import hostile_hamts
from test_sneakernet import state

KEY = SigningKey(bytes(range(1, 33)))
DID = did_from_ed25519(bytes(KEY.verify_key))


def car(roots, blocks) -> bytes:
    return encode_header(roots) + b"".join(encode_section(cid, data) for cid, data in blocks)


def raw(data: bytes):
    return make_cid(RAW, data), data


def pb(links, data=DIRECTORY_DATA):
    block = encode_node(links, data)
    return make_cid(DAG_PB, block), block


def directory(entries: dict):
    """A directory block linking name -> (cid, data) blocks; returns (dir, [all blocks])."""
    links = [PBLink(cid, name, len(data)) for name, (cid, data) in sorted(entries.items(), key=lambda e: e[0].encode())]
    d = pb(links)
    return d, [d, *entries.values()]


def export_file(records, bundles_blocks=(), bundle_roots=(), extra_roots=()):
    index = encode({"type": "fabnode-export", "version": 1, "created": 1, "exporter": DID,
                    "records": [Link(r.cid) for r in records], "bundles": [Link(b) for b in bundle_roots]})
    index_cid = make_cid(DAG_CBOR, index)
    blocks = [(index_cid, index)] + [(r.cid, r.raw) for r in records] + list(bundles_blocks)
    return car([index_cid, *extra_roots], blocks)


def sign(m):
    return KEY.sign(m).signature


def _version(ts=None, **body):
    base = {"bundle": Link(make_cid(DAG_PB, b"x")), "parents": [], "title": "t", "message": "m", "license": "MIT",
            "maintainers": [DID]}
    return make_record("version", base | body, author=DID, ts=ts or 1764081600000, sign=sign)


def corpus() -> list[tuple[str, bytes, str]]:
    hello = raw(b"hello pump\n")
    good_dir, good_blocks = directory({"a.txt": hello})
    good = car([good_dir[0]], good_blocks)
    cases = []

    flipped = bytearray(good)
    flipped[-3] ^= 0x01
    cases.append(("flipped bit in a block", bytes(flipped), "does not match"))
    cases.append(("truncated in a section", good[:-4], "truncated"))
    cases.append(("truncated in the header", good[:5], "truncated"))
    cases.append(("huge section length", encode_header([hello[0]]) + encode_varint(1 << 40) + b"\x01", "section"))
    cases.append(("oversized header", encode_varint(2 << 20) + b"\xa2", "header"))
    cases.append(("header with no roots", car([], good_blocks), "no root"))
    cases.append(("root not in the file", car([raw(b"elsewhere")[0]], good_blocks), "is not in the file"))
    cases.append(("zero-length input", b"", "empty"))
    cases.append(("not a CAR at all", b"# Hand pump\nThis is a README, not a CAR.\n", "header"))
    header_v2 = encode({"roots": [Link(hello[0])], "version": 2})
    cases.append(("header version 2", encode_varint(len(header_v2)) + header_v2 + encode_section(*hello), "version"))
    not_map = encode([1, 2])
    cases.append(("header not a map", encode_varint(len(not_map)) + not_map, "header"))
    blake = bytes([0x01, 0x55, 0xA0, 0xE4, 0x02, 0x20]) + bytes(32)  # CIDv1 raw, blake2b-256
    cases.append(("unknown hash function", encode_header([hello[0]]) + encode_varint(len(blake) + 3) + blake + b"abc",
                  "hash"))
    big = raw(b"\0" * ((2 << 20) + 1))
    cases.append(("block over 2 MiB", car([big[0]], [big]), "2"))

    for name, label in (("..", "the name '..'"), ("a/b", "contains '/'"), ("nul\x00", "contains '\\x00'"),
                        ("", "an empty name")):
        d, blocks = directory({name: hello})
        cases.append((f"bundle with {label}", car([d[0]], blocks), label))
    twice = pb([PBLink(hello[0], "same", 11), PBLink(hello[0], "same", 11)])
    cases.append(("one name twice in a folder", car([twice[0]], [twice, hello]), "appears twice"))

    deep, blocks = hello, [hello]
    for i in range(200):
        deep, more = directory({f"d{i}": deep})
        blocks = more[:1] + blocks
    cases.append(("very deep DAG", car([deep[0]], blocks), "deeper than"))
    wide = pb([PBLink(hello[0], f"f{i:05d}", 11) for i in range(20_001)])
    cases.append(("very wide DAG", car([wide[0]], [wide, hello]), "20001 links"))
    cases.append(("blocks unrelated to the roots", car([good_dir[0]], good_blocks + [raw(b"stowaway")]),
                  "not part of anything"))
    symlink = pb([], b"\x08\x04\x12\x0b/etc/passwd")
    d, blocks = directory({"innocent": symlink})
    cases.append(("a symlink entry", car([d[0]], blocks), "symlink"))
    hamt = pb([], b"\x08\x05")
    d, blocks = directory({"shard": hamt})
    cases.append(("a HAMT shard with no hash type", car([d[0]], blocks), "HAMT directory uses hash type none"))
    for name, root, hamt_blocks, reason in hostile_hamts():  # each kind of hostile HAMT (issue 16)
        cases.append((name, car([root], hamt_blocks), reason))
    no_data = pb([PBLink(hello[0], "x", 11)], None)
    cases.append(("dag-pb node without UnixFS data", car([no_data[0]], [no_data, hello]), "without UnixFS Data"))
    missing_child = pb([PBLink(raw(b"absent")[0], "gone.txt", 6)])
    cases.append(("a bundle with a block neither in the file nor here", car([missing_child[0]], [missing_child]),
                  "neither in the file nor in this store"))

    v = _version()
    forged = bytearray(v.raw)
    forged[forged.index(b"title") + 6] ^= 0x01
    bad_sig = bytes(forged)
    bad_cid = make_cid(DAG_CBOR, bad_sig)
    index = encode({"type": "fabnode-export", "version": 1, "created": 1, "exporter": DID,
                    "records": [Link(bad_cid)], "bundles": []})
    cases.append(("forged record signature",
                  car([make_cid(DAG_CBOR, index)], [(make_cid(DAG_CBOR, index), index), (bad_cid, bad_sig)]),
                  "signature does not verify"))
    future = _version(ts=int(time.time() * 1000) + 3_600_000)
    cases.append(("record from the future", export_file([future]), "in the future"))
    overlong = v.raw[:-1] + b"\x18\x01"  # "fabnode": 1 with a two-byte head
    oc = make_cid(DAG_CBOR, overlong)
    index = encode({"type": "fabnode-export", "version": 1, "created": 1, "exporter": DID,
                    "records": [Link(oc)], "bundles": []})
    cases.append(("non-canonical record", car([make_cid(DAG_CBOR, index)], [(make_cid(DAG_CBOR, index), index),
                                                                          (oc, overlong)]), "not canonical"))
    listed_only = encode({"type": "fabnode-export", "version": 1, "created": 1, "exporter": DID,
                          "records": [Link(v.cid)], "bundles": []})
    cases.append(("index lists a record not in the file",
                  car([make_cid(DAG_CBOR, listed_only)], [(make_cid(DAG_CBOR, listed_only), listed_only)]),
                  "is not in the file"))
    bad_index = encode({"type": "fabnode-export", "version": 1, "records": "all of them", "bundles": []})
    cases.append(("index with a wrong field type",
                  car([make_cid(DAG_CBOR, bad_index)], [(make_cid(DAG_CBOR, bad_index), bad_index)]),
                  "must be a list of CID links"))
    cases.append(("export with two roots", export_file([v], extra_roots=[hello[0]]) , "exactly one root"))
    return cases


CASES = corpus()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> Cli:
    """A home holding a design, its records and a vouch: all of it must survive every case."""
    root = tmp_path_factory.mktemp("hostile")
    cli = Cli(root / "home")
    cli.run("init", "--name", "Careful Lab")
    write_random_file(root / "design" / "part.scad", 40_000, seed=5)
    (root / "design" / "README.md").write_text("# part\n")
    v = cli.json("publish", str(root / "design"), "-m", "first", "--license", "MIT")["version"]
    cli.out("attest", v, "--result", "passed")
    return cli


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 25


@pytest.mark.parametrize("name, data, reason", CASES, ids=[c[0] for c in CASES])
def test_hostile_file_is_refused_and_changes_nothing(seeded: Cli, tmp_path, name, data, reason):
    path = tmp_path / "hostile.car"
    path.write_bytes(data)
    before = state(seeded)
    line = seeded.fails("import", str(path))
    assert reason in line, line
    assert line.startswith("error: hostile.car: "), line  # the file is named in the one line
    assert state(seeded) == before


def test_duplicated_blocks_are_stored_once(seeded: Cli, tmp_path):
    hello = raw(b"hello duplicate\n")
    d, blocks = directory({"a.txt": hello})
    path = tmp_path / "dup.car"
    path.write_bytes(car([d[0]], blocks + blocks + [hello]))
    result = seeded.json("import", str(path))
    assert result["blocks"]["duplicates"] == 3 and result["blocks"]["new"] == 2
    assert seeded.run("cat", f"{__import__('fabnode.protocol.cid', fromlist=['cid_str']).cid_str(d[0])}/a.txt").stdout == b"hello duplicate\n"
