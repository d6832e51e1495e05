"""This lab's own chain of keys (issue 17): rotating its author key, delegating to members.

Thin use cases for the commands of wave 2 (``key rotate``, ``member add/remove``): each builds
and signs one record, checks it with the rules a peer applies, stores it in the outbox (the
daemon announces it) and reports what it did. The chain rules themselves are protocol/keys.py's.

Rotation order, so that a crash never leaves a key in use that no succession names: the new key
is written to ``author.key.next`` first, then the succession is committed, then the files are
swapped (``author.key`` becomes ``author.key.retired-<ts>``, ``author.key.next`` becomes
``author.key``). A rotation cut short after its commit is finished by the next call.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from fabnode.protocol.errors import FabnodeError

if TYPE_CHECKING:
    from fabnode.node.home import Home

NEXT_KEY = "author.key.next"
RETIRED_PREFIX = "author.key.retired-"


def _load(path):
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def _did_of(key) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from fabnode.protocol.identity import did_from_ed25519

    return did_from_ed25519(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def _swap_keys(home: "Home", ts: int) -> str:
    """Retire author.key and put author.key.next in its place; returns the retired file's name."""
    from fabnode.node.home import AUTHOR_KEY

    retired = f"{RETIRED_PREFIX}{ts}"
    os.link(home.path / AUTHOR_KEY, home.path / retired)  # the old key is kept, never overwritten
    os.replace(home.path / NEXT_KEY, home.path / AUTHOR_KEY)
    return retired


def _finish_interrupted_rotation(home: "Home", records) -> None:
    """An ``author.key.next`` left by a crash: swap it in if its succession was committed,
    else drop it (nothing was said about it)."""
    path = home.path / NEXT_KEY
    if not path.exists():
        return
    nxt = _did_of(_load(path))
    row = records._conn.execute("SELECT ts FROM key_records WHERE type = 'succession' AND next = ?",
                                (nxt,)).fetchone()
    if row is None:
        path.unlink()
    else:
        _swap_keys(home, row[0])


def rotate_key(home: "Home") -> dict:
    """Generate a new author key, sign a succession with the old key and the new one, store and
    announce it, and make the new key this lab's ``author.key`` (the old one kept beside it)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from fabnode.node.home import AUTHOR_KEY
    from fabnode.node.local.commons import _announce, _open, now_ms
    from fabnode.protocol.keys import succession_statement
    from fabnode.protocol.records import make_record, verify_record

    store, records = _open(home)
    _finish_interrupted_rotation(home, records)
    old = _load(home.path / AUTHOR_KEY)
    old_did = _did_of(old)
    ts = now_ms()
    ids = records.keys.identities()
    standing = ids.standing(old_did, ts)
    if standing.kind in ("refused", "conflict"):
        raise FabnodeError(f"this lab's key cannot rotate: {standing.reason}")
    new = Ed25519PrivateKey.generate()
    new_did = _did_of(new)
    pem = new.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(home.path / NEXT_KEY, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    body = {"next": new_did, "next_sig": new.sign(succession_statement(old_did, new_did, ts))}
    record = verify_record(make_record("succession", body, author=old_did, ts=ts, sign=old.sign).raw, now_ms=ts)
    try:
        with store.write_transaction(final=True):
            records.ingest(record, received_ms=ts, outbox=True)
            refused = records.keys.identities().refused_records().get(record.cid)
            if refused is not None:
                raise FabnodeError(f"the rotation would not stand: {refused}")
    except BaseException:
        (home.path / NEXT_KEY).unlink(missing_ok=True)
        raise
    retired = _swap_keys(home, ts)
    _announce(home)
    identity = records.keys.identities().identity_of(new_did)
    return {"identity": identity, "old": old_did, "new": new_did, "succession": record.id, "ts": ts,
            "retired_key_file": retired}


def set_member(home: "Home", member: str, role: str) -> dict:
    """Delegate to ``member`` (a person's did:key) as ``maintainer`` or ``member`` of this lab,
    or end the delegation (``removed``): one signed ``member`` record by this lab's key."""
    from fabnode.node.local.commons import _announce, _open, _record, now_ms
    from fabnode.protocol.records import MEMBER_ROLES

    if role not in MEMBER_ROLES:
        raise FabnodeError(f"role {role!r}: one of {', '.join(MEMBER_ROLES)}")
    store, records = _open(home)
    me = home.identity().did
    lab = records.keys.identities().identity_of(me)
    ts = now_ms()
    with store.write_transaction(final=True):
        record = _record(home, "member", {"lab": lab, "member": member, "role": role}, ts)
        records.ingest(record, received_ms=ts, outbox=True)
        refused = records.keys.identities().refused_records().get(record.cid)
        if refused is not None:
            raise FabnodeError(f"the delegation would not stand: {refused}")
    _announce(home)
    return {"lab": lab, "member": member, "role": role, "record": record.id, "ts": ts}
