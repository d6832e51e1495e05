"""This lab's own chain of keys (issue 17): rotating its author key, revoking it with the
recovery key, delegating to members, and telling where the chain stands.

Thin use cases for the commands ``key rotate``, ``key revoke``, ``key status``, ``member
add/remove`` and ``members``: each builds
and signs one record, checks it with the rules a peer applies, stores it in the outbox (the
daemon announces it) and reports what it did. The chain rules themselves are protocol/keys.py's.

Rotation order, so that a crash never leaves a key in use that no succession names: the new key
is written to ``author.key.next`` first, then the succession is committed, then the files are
swapped (``author.key`` becomes ``author.key.retired-<ts>``, ``author.key.next`` becomes
``author.key``). A rotation cut short after its commit is finished by the next call. A
revocation follows the same order (its ``next`` is always a key made for it, never one that
signed anything: the resolver refuses a revocation to a key already in use).

Restoring on a new machine (the laptop was stolen): ``init --restore DID`` makes a home whose
author key signs nothing (``restore.json`` names the identity it will speak for; no lab
record, no recovery key); the node syncs or imports the lab's records to learn its chain, then
``key revoke --recovery WORDS`` revokes the stolen key and makes this home's key the lab's.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from fabnode.protocol.errors import FabnodeError

if TYPE_CHECKING:
    from fabnode.node.home import Home

NEXT_KEY = "author.key.next"
RETIRED_PREFIX = "author.key.retired-"
RESTORING = "restore.json"
"""Present while a home made by ``init --restore`` waits for its revocation: names the identity."""


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
    row = records._conn.execute("SELECT ts FROM key_records WHERE type IN ('succession', 'revocation') AND next = ?",
                                (nxt,)).fetchone()
    if row is None:
        path.unlink()
    else:
        _swap_keys(home, row[0])


def rotate_key(home: "Home") -> dict:
    """Generate a new author key, sign a succession with the old key and the new one, store and
    announce it, and make the new key this lab's ``author.key`` (the old one kept beside it)."""
    from fabnode.node.home import AUTHOR_KEY
    from fabnode.node.local.commons import _announce, _open, now_ms
    from fabnode.protocol.keys import succession_statement
    from fabnode.protocol.records import make_record, verify_record

    _refuse_while_restoring(home, "key rotate")
    store, records = _open(home)
    _finish_interrupted_rotation(home, records)
    old = _load(home.path / AUTHOR_KEY)
    old_did = _did_of(old)
    ts = now_ms()
    ids = records.keys.identities()
    standing = ids.standing(old_did, ts)
    if standing.kind in ("refused", "conflict"):
        raise FabnodeError(f"this lab's key cannot rotate: {standing.reason}")
    new = _new_next_key(home)
    new_did = _did_of(new)
    body = {"next": new_did, "next_sig": new.sign(succession_statement(old_did, new_did, ts))}
    record = verify_record(make_record("succession", body, author=old_did, ts=ts, sign=old.sign).raw, now_ms=ts)
    try:
        _commit_standing(store, records, record, ts, "rotation")
    except BaseException:
        (home.path / NEXT_KEY).unlink(missing_ok=True)
        raise
    retired = _swap_keys(home, ts)
    from fabnode.node.local.names import ensure_lab_record

    ensure_lab_record(home, announce=False)  # the new key's lab record: name, profile, recovery, this node
    _announce(home)
    identity = records.keys.identities().identity_of(new_did)
    return {"identity": identity, "old": old_did, "new": new_did, "succession": record.id, "ts": ts,
            "retired_key_file": retired}


def set_member(home: "Home", member: str, role: str, *, lab: str | None = None) -> dict:
    """Delegate to ``member`` (a person's did:key) as ``maintainer`` or ``member`` of this lab
    (or of ``lab``, for a maintainer acting for it), or end the delegation (``removed``): one
    signed ``member`` record by this home's key."""
    from fabnode.node.local.commons import _announce, _open, _record, now_ms
    from fabnode.protocol.records import MEMBER_ROLES

    if role not in MEMBER_ROLES:
        raise FabnodeError(f"role {role!r}: one of {', '.join(MEMBER_ROLES)}")
    store, records = _open(home)
    me = home.identity().did
    lab = records.keys.identities().identity_of(lab or me)
    ts = now_ms()
    record = _record(home, "member", {"lab": lab, "member": member, "role": role}, ts)
    _commit_standing(store, records, record, ts, "delegation")
    _announce(home)
    return {"lab": lab, "member": member, "role": role, "record": record.id, "ts": ts}


# ------------------------------------------------------------------ restore, revoke


def restoring(home_path) -> str | None:
    """The identity a home made by ``init --restore`` is waiting to speak for, or None."""
    import json

    path = home_path / RESTORING
    try:
        return json.loads(path.read_text(encoding="utf-8"))["identity"]
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise FabnodeError(f"{path} is damaged: it should name the identity this home restores") from None


def _refuse_while_restoring(home: "Home", what: str) -> None:
    """A restoring home's key is no one's yet: it must not start a chain of its own."""
    identity = restoring(home.path)
    if identity is not None:
        raise FabnodeError(f"{what}: this home is restoring {identity}; run 'fabnode key revoke --recovery WORDS' first")


def mark_restoring(home_path, identity: str) -> None:
    """Write ``restore.json`` (mode 0600): until ``key revoke``, this home signs no lab record."""
    import json

    fd = os.open(home_path / RESTORING, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"identity": identity}, f)



def _commit_standing(store, records, record, ts: int, what: str) -> None:
    """Store and announce this lab's own key record, in one transaction that is rolled back when
    the chain rules would refuse it (the caller then removes any key it made for it)."""
    with store.write_transaction(final=True):
        records.ingest(record, received_ms=ts, outbox=True)
        refused = records.keys.identities().refused_records().get(record.cid)
        if refused is not None:
            raise FabnodeError(f"the {what} would not stand: {refused}")

def _new_next_key(home: "Home"):
    """A fresh key in ``author.key.next`` (mode 0600, never replacing a file)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    new = Ed25519PrivateKey.generate()
    pem = new.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(home.path / NEXT_KEY, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    return new


def _forked_keys(records, ids, identity: str) -> list[str]:
    """Keys of ``identity``'s chain with two or more standing successions (a fork)."""
    refused = ids.refused_records()
    counts: dict[str, int] = {}
    for r in records.keys.key_records():
        if r.type == "succession" and r.cid not in refused and ids.identity_of(r.author) == identity:
            counts[r.author] = counts.get(r.author, 0) + 1
    return sorted(k for k, n in counts.items() if n > 1)


def key_to_revoke(ids, records, identity: str, cutoff: int) -> str:
    """The key a revocation at ``cutoff`` should name: the forked key while the chain is forked
    (the recovery key settles the fork), else the key that was signing for the lab at the
    cut-off (the one on the lost laptop: revoking it also refuses whatever a thief rotated it
    to afterwards), else the current key."""
    forked = _forked_keys(records, ids, identity)
    if len(forked) == 1:
        return forked[0]
    if forked:
        raise FabnodeError(f"{identity}'s chain is forked at several keys ({', '.join(forked)}): "
                           "name the one to revoke with --revoked")
    chain = ids.chain(identity)
    covering = [link for link in chain if link.since_ts <= cutoff and link.revoked_cutoff is None]
    return (covering or chain)[-1].key


def current_commitment(records, ids, identity: str) -> bytes | None:
    """The recovery commitment a revocation for ``identity`` must match now, as the resolver
    counts it: the root's first published one, replaced by each standing revocation's
    ``recovery`` in (ts, CID) order."""
    from fabnode.node.local.recovery import published_commitment

    value = published_commitment(records, identity)
    refused = ids.refused_records()
    for r in sorted(records.keys.key_records(), key=lambda r: (r.ts, r.cid)):
        if (r.type == "revocation" and r.body["identity"] == identity and r.cid not in refused
                and r.body.get("recovery") is not None):
            value = r.body["recovery"]
    return value


def revoke_key(home: "Home", kept, *, cutoff_ms: int | None = None, revoked: str | None = None,
               new_recovery: bool = False, backup_file=None) -> dict:
    """``key revoke``: the recovery key (read from ``kept``: the words or the backup file) signs
    a revocation of the lost or stolen key from ``cutoff_ms`` (default now) and names a fresh
    key, which becomes this home's ``author.key``; then this lab's record is signed anew.

    ``new_recovery``: the revocation also commits a fresh recovery key (for words that may have
    been seen, or a recovery.key kept on the stolen machine); returned as ``recovery_key`` to be
    shown once, and written to ``backup_file`` if given. The old words stop working."""
    import json
    import secrets

    from fabnode.protocol.recovery import RecoveryKey

    from fabnode.node.local.commons import _announce, _open, now_ms
    from fabnode.node.local.names import ensure_lab_record
    from fabnode.node.local.recovery import RECOVERY_COMMITMENT, _write_private, committed, read_recovery_key
    from fabnode.protocol.identity import did_from_ed25519
    from fabnode.protocol.keys import revocation_statement
    from fabnode.protocol.records import make_record, verify_record

    store, records = _open(home)
    _finish_interrupted_rotation(home, records)
    ts = now_ms()
    if cutoff_ms is None:
        cutoff_ms = ts
    elif cutoff_ms > ts:
        raise FabnodeError("the cut-off is in the future: give the time the key was lost (or leave it out: now)")
    ids = records.keys.identities()
    identity = ids.identity_of(restoring(home.path) or home.identity().did)  # the root, whichever key was named
    commitment = current_commitment(records, ids, identity) or (committed(home) if identity == ids.identity_of(
        home.identity().did) else None)
    if commitment is None:
        raise FabnodeError(f"no recovery key is known for {identity} here: sync or import the lab's records "
                           "first (fabnode run --bootstrap …, or fabnode import)")
    recovery = read_recovery_key(kept, commitment=commitment)
    recovery_public = recovery.public_key().public_bytes_raw()
    recovery_did = did_from_ed25519(recovery_public)
    if revoked is None:
        revoked = key_to_revoke(ids, records, identity, cutoff_ms)
    elif ids.identity_of(revoked) != identity:
        raise FabnodeError(f"--revoked {revoked}: not a key of {identity}'s chain (see 'fabnode key status')")
    fresh = RecoveryKey(secrets.token_bytes(32)) if new_recovery else None
    if backup_file is not None:
        from fabnode.node.local.recovery import check_backup_path

        check_backup_path(backup_file)  # before anything: never replace a file
    new = _new_next_key(home)
    new_did = _did_of(new)
    body = {"identity": identity, "revoked": revoked, "cutoff": cutoff_ms, "next": new_did,
            "next_sig": new.sign(revocation_statement(identity, revoked, new_did, cutoff_ms))}
    if fresh is not None:
        body["recovery"] = fresh.commitment
    try:
        if backup_file is not None:  # written before the commitment is signed: never words committed but lost
            from types import SimpleNamespace

            from fabnode.node.local.recovery import write_backup

            write_backup(backup_file, fresh, SimpleNamespace(name=home.identity().name, did=identity))
        record = verify_record(make_record("revocation", body, author=recovery_did, ts=ts, sign=recovery.sign).raw,
                               now_ms=ts)
        _commit_standing(store, records, record, ts, "revocation")
    except BaseException:
        (home.path / NEXT_KEY).unlink(missing_ok=True)
        if backup_file is not None:
            backup_file.unlink(missing_ok=True)  # the words of a key that was never committed
        raise
    retired = _swap_keys(home, ts)
    if fresh is not None:  # the new commitment replaces the old one; a kept old recovery key is retired
        from fabnode.node.local.recovery import RECOVERY_KEY

        if (home.path / RECOVERY_KEY).exists():
            os.replace(home.path / RECOVERY_KEY, home.path / f"{RECOVERY_KEY}.retired-{ts}")
        (home.path / RECOVERY_COMMITMENT).unlink(missing_ok=True)
        commitment, recovery_did = fresh.commitment, fresh.did
    if committed(home) is None:  # a restored home, or a new recovery key: its lab records carry it from now on
        _write_private(home.path / RECOVERY_COMMITMENT, (json.dumps(
            {"commitment": commitment.hex(), "did": recovery_did, "created_ms": ts}, indent=1) + "\n").encode())
    (home.path / RESTORING).unlink(missing_ok=True)
    ensure_lab_record(home, announce=False)
    _announce(home)
    return {"identity": identity, "revoked": revoked, "cutoff": cutoff_ms, "new": new_did,
            "revocation": record.id, "ts": ts, "retired_key_file": retired, "recovery_key": fresh}


# ------------------------------------------------------------------ members, status


def add_member(home: "Home", member: str, role: str, *, lab: str | None = None) -> dict:
    """``member add`` / ``member remove``: like :func:`set_member`, and for another lab
    (``lab``) when this home's key is one of its maintainers. Refused in one line, before
    anything is signed, when this key may not (as far as the records here tell)."""
    from fabnode.node.local.commons import _open, now_ms

    _refuse_while_restoring(home, "member")
    _, records = _open(home)
    ids = records.keys.identities()
    me = home.identity().did
    target = ids.identity_of(lab or me)
    now = now_ms()
    standing = ids.role(me, target, now)
    if standing == "member":
        raise FabnodeError(f"this key is a member, not a maintainer, of {target}: it cannot add or remove members")
    if standing is None:
        raise FabnodeError(f"this key is neither {target}'s key nor one of its maintainers (as far as this node "
                           "knows: sync or import the lab's records first)")
    if role == "removed" and ids._role_of_identity(ids.identity_of(member), target, now) is None:
        raise FabnodeError(f"{member} is not a member of {target}")
    return set_member(home, member, role, lab=target)


def key_status(home: "Home", did: str | None = None) -> dict:
    """``key status``: the chain of ``did``'s identity (this lab's by default), its committed
    recovery key, its members and, in plain words, its conflicts and what settles them."""
    from fabnode.node.local.commons import _open
    from fabnode.node.local.recovery import RECOVERY_KEY, committed

    _, records = _open(home)
    ids = records.keys.identities()
    me = home.identity().did
    restored = restoring(home.path)
    identity = ids.identity_of(did or restored or me)
    mine = identity in (ids.identity_of(me), restored)
    recovery = current_commitment(records, ids, identity) or (committed(home) if mine else None)
    conflict = ids.conflicts().get(identity)
    return {
        "identity": identity, "this_lab": mine, "current_key": ids.current_key(identity),
        "this_key": me if mine else None,
        "chain": [{"key": link.key, "since": link.since_ts, "until": link.until_ts, "how": link.how,
                   "revoked_cutoff": link.revoked_cutoff} for link in ids.chain(identity)],
        "recovery": {"committed": recovery.hex() if recovery else None,
                     "kept_here": mine and (home.path / RECOVERY_KEY).exists()},
        "members": [{"did": m.did, "role": m.role, "since": m.since_ts, "until": m.until_ts}
                    for m in ids.members(identity)],
        "conflict": None if conflict is None else (
            f"{conflict}: run 'fabnode key revoke --recovery WORDS' on a node of this lab to settle it"),
        "restoring": restored is not None and identity == restored,
    }
