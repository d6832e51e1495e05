"""Builders for chains of keys in tests (issue 17): seeded keys and signed key records."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fabnode.protocol.identity import did_from_ed25519
from fabnode.protocol.keys import KeyRecord, recovery_commitment, revocation_statement, succession_statement
from fabnode.protocol.records import Record, make_record

T0 = 1_750_000_000_000
"""A ts in 2025 (lab records must be dated after 2020)."""


class Key:
    """An Ed25519 key from a seed: the same seed, the same key, on every run."""

    def __init__(self, seed: int) -> None:
        self.private = Ed25519PrivateKey.from_private_bytes(seed.to_bytes(32, "big"))
        self.public = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.did = did_from_ed25519(self.public)
        self.sign = self.private.sign

    def __repr__(self) -> str:
        return f"Key({self.did[-6:]})"


def lab(author: Key, ts: int, recovery: Key | None = None, name: str = "Lab") -> Record:
    """A lab record, committing to ``recovery`` when given (the recovery branch's ``recovery`` field)."""
    body = {"name": name, "nodes": []}
    if recovery is not None:
        body["recovery"] = recovery_commitment(recovery.public)
    return make_record("lab", body, author=author.did, ts=ts, sign=author.sign)


def succession(old: Key, new: Key, ts: int) -> Record:
    next_sig = new.sign(succession_statement(old.did, new.did, ts))
    return make_record("succession", {"next": new.did, "next_sig": next_sig}, author=old.did, ts=ts, sign=old.sign)


def revocation(recovery: Key, identity: Key, revoked: Key, new: Key, cutoff: int, ts: int,
               fresh_recovery: Key | None = None) -> Record:
    body = {"identity": identity.did, "revoked": revoked.did, "cutoff": cutoff, "next": new.did,
            "next_sig": new.sign(revocation_statement(identity.did, revoked.did, new.did, cutoff))}
    if fresh_recovery is not None:
        body["recovery"] = recovery_commitment(fresh_recovery.public)
    return make_record("revocation", body, author=recovery.did, ts=ts, sign=recovery.sign)


def member(author: Key, lab_key: Key, who: Key, role: str, ts: int) -> Record:
    return make_record("member", {"lab": lab_key.did, "member": who.did, "role": role}, author=author.did, ts=ts,
                       sign=author.sign)


def vouch(author: Key, subject: Key, ts: int) -> Record:
    return make_record("vouch", {"subject": subject.did, "trust": "trusted"}, author=author.did, ts=ts, sign=author.sign)


def key_records(records) -> list[KeyRecord]:
    """The KeyRecords of the key records among ``records`` (what storage hands the resolver)."""
    return [KeyRecord(r.cid, r.type, r.author, r.ts, r.body) for r in records
            if r.type in ("lab", "succession", "revocation", "member")]
