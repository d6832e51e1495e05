"""The record format of docs/protocol.md §4: golden bytes, an independent decoder, and every rejection."""

from __future__ import annotations

import re
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from fabnode.protocol.cid import DAG_CBOR, DAG_PB, RAW, make_cid
from fabnode.protocol.dagcbor import Link, encode
from fabnode.protocol.identity import did_from_ed25519, ed25519_from_did
from fabnode.protocol.records import (
    MAX_RECORD_BYTES,
    PREDICATES,
    RESULTS,
    RecordRejected,
    make_record,
    signing_bytes,
    verify_record,
)

from conftest import TOOLS

KEY = SigningKey(bytes(range(32)))
DID = did_from_ed25519(bytes(KEY.verify_key))
OTHER = "did:key:z6MkerUqdQvoUr6p2tFTaRqCDX8nb4SUkkq7pgM9DxXui7YD"
TS = 1764081600000
BUNDLE = Link(make_cid(DAG_PB, b"golden bundle"))


def sign(message: bytes) -> bytes:
    return KEY.sign(message).signature


def golden_records():
    v = make_record("version", {"bundle": BUNDLE, "parents": [], "title": "Hand pump", "label": "1.0.0",
                                "message": "first design", "license": "CERN-OHL-S-2.0", "maintainers": [DID]},
                    author=DID, ts=TS, sign=sign)
    a = make_record("attestation", {"subject": Link(v.cid), "predicate": "built", "result": "passed",
                                    "lab": "Fab Lab Nairobi"}, author=DID, ts=TS + 1, sign=sign)
    w = make_record("vouch", {"subject": OTHER, "trust": "trusted"}, author=DID, ts=TS + 2, sign=sign)
    return v, a, w


# Fixed key (seed 00 01 … 1f), fixed timestamps: any change to encoding, signing or hashing
# changes these, so the format cannot drift unnoticed.
GOLDEN = [
    ("bafyreiddkgcaijpqyggenr26zjnhm776rfjvjcjdt2dsigrqhal4yyr27e",
     "a66274731b0000019abb750600637369675840e45b53f58405f1f164d381a79e86883b37cd4c9085b43110c1485ea5ec723ac1adb7561831df15d17c4df7590ff16dabfc937d990247604f84b991adc4686e0964626f6479a7656c6162656c65312e302e30657469746c656948616e642070756d706662756e646c65d82a58250001701220ed5fe86b44489992f2a7191dd11b369d70e063c830e62ea995fe1aab8bd86527676c6963656e73656e4345524e2d4f484c2d532d322e30676d6573736167656c66697273742064657369676e67706172656e7473806b6d61696e7461696e6572738178386469643a6b65793a7a364d6b656852676637794a62676147665973646f41734b6442504533646a324359686f775164636a71534a6776566464747970656776657273696f6e66617574686f7278386469643a6b65793a7a364d6b656852676637794a62676147665973646f41734b6442504533646a324359686f775164636a71534a67765664676661626e6f646501"),
    ("bafyreigwirlam73seobd5qb4snoipysh2z7dnt6alw6cnbdikv6oxulo4a",
     "a66274731b0000019abb7506016373696758405a72f710eb480a48ca2135209a14125c5a1955142a83dbefa74a2c2e887a3a452e203a145c25877e0be9ef34b0307e49f46225cb45323eb237a076525ce6b90364626f6479a4636c61626f466162204c6162204e6169726f626966726573756c7466706173736564677375626a656374d82a582500017112206351840425f0c18c46c75eca5a767ffe89535489239e87241a303817cc623af969707265646963617465656275696c7464747970656b6174746573746174696f6e66617574686f7278386469643a6b65793a7a364d6b656852676637794a62676147665973646f41734b6442504533646a324359686f775164636a71534a67765664676661626e6f646501"),
    ("bafyreigpskon7xgydefbphezq4vs5uq2ahldzqbwtexerpklsezn4j3ggq",
     "a66274731b0000019abb7506026373696758400a2c9a8c55a936630e660e8f724cbb2f7696b51c9a0fcbd0fa67bb202bc6b92d712b156c8e828ba268bf3cb2876f6458a98ad5fffc9c681bb19440fd9d40f40d64626f6479a26574727573746774727573746564677375626a65637478386469643a6b65793a7a364d6b657255716451766f5572367032744654615271434458386e623453556b6b713770674d394478587569375944647479706565766f75636866617574686f7278386469643a6b65793a7a364d6b656852676637794a62676147665973646f41734b6442504533646a324359686f775164636a71534a67765664676661626e6f646501"),
]


def test_golden_vectors():
    assert DID == "did:key:z6MkehRgf7yJbgaGfYsdoAsKdBPE3dj2CYhowQdcjqSJgvVd"
    for record, (cid, hexbytes) in zip(golden_records(), GOLDEN):
        assert record.id == cid
        assert record.raw.hex() == hexbytes
        assert verify_record(bytes.fromhex(hexbytes), now_ms=TS) == record


def test_an_independent_decoder_agrees(ipfs_car):
    """@ipld/dag-cbor (strict) decodes and re-encodes each golden record to the same bytes and CID."""
    lines = "\n".join(h for _, h in GOLDEN) + "\n"
    out = subprocess.run(["node", str(TOOLS / "dagcbor-roundtrip.mjs")], input=lines.encode(), capture_output=True,
                         check=True, timeout=60).stdout.decode().split("\n")
    assert [line.split() for line in out if line] == [[h, c] for c, h in GOLDEN]


def test_signature_is_domain_separated():
    v = golden_records()[0]
    unsigned = signing_bytes(v.type, v.author, v.ts, v.body)
    assert unsigned.startswith(b"fabnode-record-v1\x00")
    KEY.verify_key.verify(unsigned, v.sig)  # raises if not


texts = st.text(max_size=40)
links = st.binary(min_size=1, max_size=16).map(lambda b: Link(make_cid(RAW, b)))


@st.composite
def bodies(draw):
    rtype = draw(st.sampled_from(["version", "attestation", "vouch"]))
    if rtype == "version":
        body = {"bundle": draw(links), "parents": draw(st.lists(links, max_size=3)), "title": draw(texts),
                "message": draw(texts), "license": "MIT"}
        if draw(st.booleans()):
            body["design"] = draw(links)
        else:
            body["maintainers"] = [DID] + draw(st.lists(st.just(OTHER), max_size=1))
        if draw(st.booleans()):
            body["label"] = draw(texts)
    elif rtype == "attestation":
        body = {"subject": draw(links), "predicate": draw(st.sampled_from(PREDICATES)),
                "result": draw(st.sampled_from(RESULTS))}
        for name, strategy in (("lab", texts), ("notes", texts), ("tests", st.lists(texts, max_size=3)),
                               ("evidence", st.lists(links, max_size=3))):
            if draw(st.booleans()):
                body[name] = draw(strategy)
    else:
        body = {"subject": OTHER, "trust": draw(st.sampled_from(["trusted", "distrusted"]))}
        if draw(st.booleans()):
            body["note"] = draw(texts)
    return rtype, body


@settings(max_examples=200, deadline=None)
@given(bodies(), st.integers(0, TS))
def test_any_valid_record_round_trips(spec, ts):
    rtype, body = spec
    record = make_record(rtype, body, author=DID, ts=ts, sign=sign)
    again = verify_record(record.raw, now_ms=TS, cid=record.cid)
    assert again == record and again.cid == make_cid(DAG_CBOR, record.raw)


def _resign(value: dict) -> bytes:
    """Encode an arbitrary (possibly invalid) record value with a valid signature over it."""
    unsigned = {k: v for k, v in value.items() if k != "sig"}
    value = {**value, "sig": sign(b"fabnode-record-v1\x00" + encode(unsigned))}
    return encode(value)


def _value(record) -> dict:
    return {"fabnode": 1, "type": record.type, "author": record.author, "ts": record.ts, "body": record.body,
            "sig": record.sig}


def hostile_cases():
    """(name, raw record bytes, expected rejection) for records a peer must not get accepted;
    shared with test_commons and test_verify."""
    v, a, w = golden_records()
    forged = bytearray(v.raw)
    forged[forged.index(b"first design")] ^= 0x20  # "First design": signed bytes changed
    wrong_key = _value(w) | {"author": OTHER}
    # "fabnode": 1 (the last item) re-encoded with a two-byte integer head: same value, not canonical
    overlong = w.raw[:-1] + b"\x18\x01"
    return [
        ("forged signature", bytes(forged), "signature does not verify"),
        ("signed by another key", encode(wrong_key), "signature does not verify"),
        ("non-canonical integer", overlong, "not canonical"),
        ("unknown top-level key", _resign(_value(v) | {"extra": 1}), "unknown top-level key(s): extra"),
        ("missing top-level key", encode({k: x for k, x in _value(v).items() if k != "ts"}), "missing top-level key(s): ts"),
        ("unknown body field", _resign(_value(w) | {"body": w.body | {"weight": 5}}), "unknown body field(s) for a vouch: weight"),
        ("title is a number", _resign(_value(v) | {"body": v.body | {"title": 7}}), "body.title must be text"),
        ("parents not a list", _resign(_value(v) | {"body": v.body | {"parents": Link(v.cid)}}), "body.parents must be a list"),
        ("bundle is text", _resign(_value(v) | {"body": v.body | {"bundle": "bafy"}}), "body.bundle must be a CID link"),
        ("ts is text", _resign(_value(v) | {"ts": "yesterday"}), "ts must be a non-negative integer"),
        ("ts far in the future", _resign(_value(v) | {"ts": TS + 11 * 60 * 1000}), "660 s in the future"),
        ("unknown predicate", _resign(_value(a) | {"body": a.body | {"predicate": "liked"}}), "body.predicate must be one of"),
        ("unknown type", _resign(_value(w) | {"type": "like"}), "unknown record type 'like'"),
        ("format version 2", _resign(_value(w) | {"fabnode": 2}), "unsupported record format version 2"),
        ("author did too short", _resign(_value(w) | {"author": "did:key:z6MkehRgf7yJbgaGfYsdoAsKdBPE3dj2CYhowQdcjqSJgv"}),
         "is 54 characters long, not 56"),
        ("author did of the right length but not Ed25519",
         _resign(_value(w) | {"author": "did:key:z" + "1" * 47}), "does not hold 0xed01 + 32 bytes"),
        ("author did of 60,000 characters (refused before decoding)",
         _resign(_value(w) | {"author": "did:key:z6Mk" + "Z" * 59_988}), "is 60000 characters long, not 56"),
        ("vouch subject not a did", _resign(_value(w) | {"body": {"subject": "alice", "trust": "trusted"}}),
         "must start with 'did:key:z6Mk'"),
        ("first version without the author as maintainer", _resign(_value(v) | {"body": v.body | {"maintainers": [OTHER]}}),
         "must list its author among body.maintainers"),
        ("oversized", _resign(_value(v) | {"body": v.body | {"message": "x" * 16384, "title": "y" * 16384,
                                                               "license": "z" * 16384, "label": "w" * 16384}}),
         "over the 65536-byte limit"),
        ("not a map", encode([1, 2, 3]), "a record is a DAG-CBOR map"),
        ("not DAG-CBOR", b"\xff\x00garbage", "not valid DAG-CBOR"),
        ("a CBOR sequence", v.raw + v.raw, "not valid DAG-CBOR"),
    ]


@pytest.mark.parametrize("name, raw, reason", hostile_cases(), ids=[c[0] for c in hostile_cases()])
def test_hostile_records_are_rejected_with_a_reason(name, raw, reason):
    with pytest.raises(RecordRejected) as info:
        verify_record(raw, now_ms=TS)
    message = str(info.value)
    assert reason in message and "\n" not in message, message
    assert message.startswith("record rejected: ")


def test_wrong_cid_for_the_bytes_is_rejected():
    v, a, _ = golden_records()
    with pytest.raises(RecordRejected, match=f"hash to {v.id}, not {a.id}"):
        verify_record(v.raw, now_ms=TS, cid=a.cid)


def test_size_limit_is_exact():
    assert MAX_RECORD_BYTES == 65536
    with pytest.raises(RecordRejected, match="over the 65536-byte limit"):
        verify_record(b"\xa0" * 65537, now_ms=TS)


@pytest.mark.parametrize("did, reason", [
    ("did:key:z6MkehRgf7yJbgaGfYsdoAsKdBPE3dj2CYhowQdcjqSJgvVdX", "is 57 characters long, not 56"),
    ("did:key:z6Mk", "is 12 characters long, not 56"),
    ("did:web:example.org", "must start with 'did:key:z6Mk'"),
    ("did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBm", "does not hold 0xed01"),  # secp256k1, cut to 56
    ("did:key:z0OIl" + "1" * 43, "not valid base58btc"),
    ("did:key:z" + "1" * 47, "does not hold 0xed01 + 32 bytes"),
])
def test_did_key_checks(did, reason):
    from fabnode.protocol.errors import FabnodeError

    with pytest.raises(FabnodeError, match=re.escape(reason)):
        ed25519_from_did(did)


@given(st.binary(min_size=32, max_size=32))
def test_did_key_round_trip(public_key):
    did = did_from_ed25519(public_key)
    assert did.startswith("did:key:z6Mk") and ed25519_from_did(did) == public_key
