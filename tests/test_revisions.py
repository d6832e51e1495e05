"""Revisions that cost only what changed (issue 20): a lab holding version 1 of a design gets
version 2 over the network (`get --peer` against a real daemon) and on a stick (`have` then
`export --for`), and only the new blocks travel — also blocks it holds from another source."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from conftest import Cli
from daemons import Daemon, wait_until

from fabnode.protocol.car import Header, read_car
from fabnode.protocol.cid import cid_str

MANIFEST = ('okhv = "OKH-LOSHv1.0"\nname = "Pump"\nversion = "1.0"\nrepo = "https://example.org/pump"\n'
            'license = "CERN-OHL-S-2.0"\nlicensor = "Lab A"\ndocumentation-language = "en"\nfunction = "pumps water"\n')


def _car_blocks(path: Path) -> dict[str, int]:
    """CID → size of every block in a CAR file."""
    return {cid_str(b.cid): len(b.data) for b in read_car([path.read_bytes()]) if not isinstance(b, Header)}


@pytest.fixture(scope="module")
def labs(tmp_path_factory):
    """Lab A publishes version 1 and 2 of a design (rabin-32k chunks; version 2 inserts 3 KB near
    the start of body.stl and adds extra.stl); lab B already holds version 1 (imported from a
    stick) and, from elsewhere, extra.stl. ``blocks``: each DAG's blocks as A holds them."""
    tmp = tmp_path_factory.mktemp("revisions")
    a, b = Cli(tmp / "a"), Cli(tmp / "b")
    a.run("init", "--name", "Lab A")
    b.run("init", "--name", "Lab B")
    rng = random.Random(20)
    folder = tmp / "pump"
    folder.mkdir()
    (folder / "okh.toml").write_text(MANIFEST)
    body, extra = rng.randbytes(900_000), rng.randbytes(300_000)
    (folder / "body.stl").write_bytes(body)
    v1 = a.json("publish", str(folder), "-m", "first", "--profile", "rabin-32k")
    a.run("export", str(tmp / "v1.car"))
    b.run("import", str(tmp / "v1.car"))
    (tmp / "extra.stl").write_bytes(extra)
    extra_cid = b.out("add", "--profile", "rabin-32k", str(tmp / "extra.stl"))
    (folder / "body.stl").write_bytes(body[:2000] + rng.randbytes(3000) + body[2000:])
    (folder / "extra.stl").write_bytes(extra)
    v2 = a.json("publish", str(folder), "-m", "thicker wall, and the extra part", "--design", v1["design"])
    blocks = {}
    for name, cid, lab in (("v1", v1["bundle"], a), ("v2", v2["bundle"], a), ("extra", extra_cid, b)):
        lab.run("export", "--bundle", cid, str(tmp / f"{name}.bundle.car"))
        blocks[name] = _car_blocks(tmp / f"{name}.bundle.car")
    new = {cid: size for cid, size in blocks["v2"].items() if cid not in blocks["v1"] and cid not in blocks["extra"]}
    assert 3 <= len(new) <= 10 and len(blocks["v2"]) >= 20  # the edit touched a few chunks of many
    return {"a": a, "b": b, "tmp": tmp, "v1": v1, "v2": v2, "new": new, "blocks": blocks,
            "body": (folder / "body.stl").read_bytes()}


def test_export_for_a_have_file_sends_only_new_blocks(labs):
    """B's have file lists every block it holds (version 1, and extra.stl that A never saw
    B add): A's export for it carries exactly version 2's new blocks, and B, importing it, holds
    version 2 whole."""
    a, b, tmp = labs["a"], labs["b"], labs["tmp"]
    have = b.json("have", str(tmp / "b.have"))
    assert have["blocks"] >= len(labs["blocks"]["v1"])
    a.run("export", "--for", str(tmp / "b.have"), str(tmp / "for-b.car"))
    sent = _car_blocks(tmp / "for-b.car")
    bundle_blocks = {cid for cid in sent if cid in labs["blocks"]["v2"]}
    assert bundle_blocks == set(labs["new"])
    # without the have file everything of version 2 would go
    assert len(labs["blocks"]["v2"]) > 2 * len(bundle_blocks)
    b.run("import", str(tmp / "for-b.car"))
    assert b.run("cat", f"{labs['v2']['bundle']}/body.stl").stdout == labs["body"]
    assert b.json("fsck")["ok"]


def test_get_of_version_2_fetches_only_new_blocks(labs, tmp_path):
    """A fresh lab C holding version 1 fetches version 2 from A's daemon: it first learns the
    DAG's interior, then names every block it holds, so A sends only the new blocks (counted
    by A's own log, in bytes, and by C's report, in blocks)."""
    a, tmp = labs["a"], labs["tmp"]
    c = Cli(tmp_path / "c")
    c.run("init", "--name", "Lab C")
    c.run("import", str(tmp / "v1.car"))
    daemon = Daemon(a)
    try:
        got = c.run("get", labs["v2"]["bundle"], "--peer", daemon.addr, "-o", str(tmp_path / "v2"))
        assert (tmp_path / "v2" / "body.stl").read_bytes() == labs["body"]
        wait_until(lambda: len(daemon.said(f"served {labs['v2']['bundle']}")) == 2, what="both requests logged")
        served = [int(re.search(r": (\d+) bytes", line).group(1))
                  for line in daemon.said(f"served {labs['v2']['bundle']}")]
    finally:
        daemon.stop()
    new_v1 = {cid: size for cid, size in labs["blocks"]["v2"].items() if cid not in labs["blocks"]["v1"]}
    assert sum(served) == sum(new_v1.values())  # the interior, then the new leaves: nothing else
    assert sum(served) < sum(labs["blocks"]["v2"].values()) / 2
    fetched = re.search(r"fetched (\d+) block\(s\)", got.stderr.decode())
    assert fetched and int(fetched.group(1)) == len(new_v1), got.stderr.decode()
    assert c.json("fsck")["ok"]


def test_a_lab_holding_version_1_still_gets_version_2_from_a_server_before_issue_20(labs, tmp_path, attackers):
    """A server from before issue 20 speaks only /fabnode/car/1.0.0 and cuts off a peer sending
    ``interior``. A lab holding version 1 offers 1.1.0 first, settles on 1.0.0 and sends the
    plain request of old on the same stream: version 2 arrives whole, byte for byte, and the
    old server counted no offence."""
    from test_hostile_peers import Attacker

    tmp = labs["tmp"]
    c = Cli(tmp_path / "c")
    c.run("init", "--name", "Lab C")
    c.run("import", str(tmp / "v1.car"))
    old = Attacker("serve-car", str(tmp / "v2.bundle.car"), "--old")
    attackers.append(old)
    c.run("get", labs["v2"]["bundle"], "--peer", old.addr, "-o", str(tmp_path / "v2"))
    assert (tmp_path / "v2" / "body.stl").read_bytes() == labs["body"]
    assert c.run("cat", f"{labs['v2']['bundle']}/body.stl").stdout == labs["body"]
    old.stop()
    assert "offences" not in old.proc.stderr.read().decode()
    assert c.json("fsck")["ok"]


def test_an_interior_request_is_checked_and_carries_no_leaves():
    """The wire: ``interior`` round-trips, must be a boolean, and a session asking for the
    interior refuses a leaf the server should have left out (one clear line)."""
    import msgpack

    from fabnode.protocol.car import encode_header, encode_section
    from fabnode.protocol.cid import DAG_PB, RAW, make_cid
    from fabnode.protocol.dagpb import PBLink, encode_node
    from fabnode.protocol.errors import RemoteProtocolError
    from fabnode.protocol.fetch import FetchRequest, FetchSession, decode_request, encode_request
    from fabnode.protocol.unixfs import file_node_data
    from fabnode.protocol.varint import decode_varint

    leaf = b"x" * 100
    leaf_cid = make_cid(RAW, leaf)
    node = encode_node([PBLink(leaf_cid, "", 100), PBLink(leaf_cid, "", 100)], file_node_data(200, [100, 100]))
    root = make_cid(DAG_PB, node)
    request = FetchRequest(root, (), (), interior=True)
    frame = encode_request(request)
    assert decode_request(frame[decode_varint(frame, 0)[1]:]) == request
    assert b"interior" not in encode_request(FetchRequest(root))  # plain requests are unchanged
    with pytest.raises(RemoteProtocolError, match="not part of /fabnode/car/1.0.0"):
        decode_request(frame[decode_varint(frame, 0)[1]:], interior_allowed=False)  # only over 1.1.0
    bad = msgpack.packb({"root": root, "path": [], "have": [], "interior": 1}, use_bin_type=True)
    with pytest.raises(RemoteProtocolError, match="interior must be true or false"):
        decode_request(bad)
    session = FetchSession(request, set())
    assert [b.cid for b in session.receive(encode_header([root]) + encode_section(root, node))] == [root]
    assert not session.missing()  # the leaves are not wanted in an interior stream
    with pytest.raises(RemoteProtocolError, match="does not need"):
        session.receive(encode_section(leaf_cid, leaf))
