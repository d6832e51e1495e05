"""Every decoder a peer or a file can reach, fuzzed (issue 12): random bytes and mutations of
valid inputs never raise anything but fabnode's own one-line errors (FabnodeError and its
kinds), which the callers turn into a refusal. Linearity is measured by bench/bench_decoders.py
(speed is a benchmark's business, never a test's)."""

from __future__ import annotations

import msgpack
from hypothesis import HealthCheck, given, settings, strategies as st

from fabnode.protocol.car import CarReader, NEED_DATA, End, encode_header, encode_section
from fabnode.protocol.cid import RAW, make_cid, parse_cid
from fabnode.protocol.dagcbor import decode as decode_cbor
from fabnode.protocol.dagpb import PBLink, decode_node, encode_node
from fabnode.protocol.errors import FabnodeError
from fabnode.protocol.fetch import FetchRequest, FetchSession, decode_request, encode_request
from fabnode.protocol.identity import ed25519_from_did
from fabnode.protocol.reconcile import ItemSet, Reconciler, decode_message
from fabnode.protocol.records import verify_record
from fabnode.protocol.sync import decode_frame, encode_frame
from fabnode.protocol.unixfs import decode as decode_unixfs

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
LEAF = b"hello fuzz"
LEAF_CID = make_cid(RAW, LEAF)
NODE = encode_node([PBLink(LEAF_CID, "a.txt", len(LEAF))], b"\x08\x01")
NODE_CID = make_cid(0x70, NODE)
CAR = encode_header([NODE_CID]) + encode_section(NODE_CID, NODE) + encode_section(LEAF_CID, LEAF)
RECONCILE = Reconciler(ItemSet((i * 1000, bytes([i]) * 32) for i in range(1, 50))).initiate()


def _body(frame: bytes) -> bytes:
    """A frame without its varint length prefix."""
    from fabnode.protocol.varint import decode_varint

    length, start = decode_varint(frame, 0)
    assert len(frame) - start == length
    return frame[start:]


SYNC_FRAME = _body(encode_frame({"type": "want", "ids": [b"\x01" * 8, b"\x02" * 8]}))
REQUEST = _body(encode_request(FetchRequest(NODE_CID, ("a.txt",), (LEAF_CID,))))


@st.composite
def mutated(draw, valid: bytes):
    """A valid input with a few bytes flipped, cut, or grown: the inputs that reach deepest."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert"]))
        if kind == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= draw(st.integers(1, 255))
        elif kind == "cut" and data:
            del data[draw(st.integers(0, len(data) - 1)):]
        else:
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(max_size=16))
    return bytes(data)


def inputs(valid: bytes):
    return st.one_of(st.binary(max_size=512), mutated(valid))


def _only_our_errors(fn, data) -> None:
    try:
        fn(data)
    except FabnodeError as exc:
        assert "\n" not in str(exc)


@FUZZ
@given(inputs(NODE))
def test_dagpb_and_unixfs(data):
    _only_our_errors(decode_node, data)
    _only_our_errors(lambda d: decode_unixfs(make_cid(0x70, d), d), data)


@FUZZ
@given(inputs(CAR))
def test_car_reader_in_random_pieces(data):
    def read(d):
        reader = CarReader()
        for i in range(0, len(d), 7):
            reader.feed(d[i:i + 7])
            while (event := reader.next_event()) is not NEED_DATA:
                assert not isinstance(event, End)
        reader.feed_eof()
        while not isinstance(reader.next_event(), End):
            pass
    _only_our_errors(read, data)


@FUZZ
@given(inputs(CAR))
def test_fetch_session(data):
    session = FetchSession(FetchRequest(NODE_CID, ("a.txt",)), set())
    _only_our_errors(lambda d: (session.receive(d), session.receive(b"")), data)


@FUZZ
@given(inputs(RECONCILE))
def test_reconcile_messages(data):
    _only_our_errors(decode_message, data)
    _only_our_errors(Reconciler(ItemSet([(5, b"\x07" * 32)])).respond, data)


@FUZZ
@given(inputs(SYNC_FRAME))
def test_sync_frames(data):
    _only_our_errors(lambda d: decode_frame(d, {"reconcile", "want", "records", "end"}), data)


def test_the_seeds_are_valid():
    """The mutations start from inputs that decode, so they reach past the first check."""
    assert decode_request(REQUEST).root == NODE_CID
    assert decode_frame(SYNC_FRAME, {"want"})["ids"] == [b"\x01" * 8, b"\x02" * 8]
    assert decode_message(RECONCILE)
    assert decode_unixfs(NODE_CID, NODE).kind == "directory"


@FUZZ
@given(inputs(REQUEST))
def test_fetch_requests(data):
    _only_our_errors(decode_request, data)


@FUZZ
@given(st.one_of(st.binary(max_size=600), mutated(msgpack.packb({"a": 1}))))
def test_records_and_dag_cbor(data):
    _only_our_errors(lambda d: verify_record(d, now_ms=1 << 41), data)
    _only_our_errors(decode_cbor, data)


@FUZZ
@given(st.text(max_size=120))
def test_did_keys_and_cids(text):
    _only_our_errors(ed25519_from_did, "did:key:z" + text)
    _only_our_errors(parse_cid, text)
