"""Names for labs (issue 15): this lab's own ``lab`` record, local names, and showing keys.

* :func:`ensure_lab_record` signs this lab's ``lab`` record (its configured name and this node's
  peer ID, tied by the node key's signature, and the recovery commitment of issue 17) whenever
  the newest one known here says otherwise: on ``init`` and when the daemon starts. It goes into the outbox like any record.
* :func:`set_name` / :func:`names` keep what this operator calls a key. Local names live in one
  SQLite table and are never sent anywhere.
* :class:`Names` shows a did:key or a peer ID the one way every command and page uses
  (:func:`fabnode.protocol.labs.lab_label`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fabnode.protocol.errors import FabnodeError
from fabnode.protocol.labs import UNVERIFIED, check_name, lab_label, node_tie_statement, short_key

if TYPE_CHECKING:
    from fabnode.node.home import Home
    from fabnode.storage.records import RecordStore


class Names:
    """Shows keys as labs for one command or page: its answers are cached, so build one per use.

    ``me``/``my_name``: this lab's own key and configured name (shown without a mark: it is ours).
    """

    def __init__(self, records: "RecordStore", me: str | None = None, my_name: str | None = None) -> None:
        self._records, self._me, self._my_name = records, me, my_name
        self._cache: dict[str, dict] = {}

    def fields(self, key: str) -> dict:
        """``{"name", "name_source"}`` for ``--json``: source is local, own, declared or None; a
        peer ID tied to a lab also gets ``"lab"`` (its did:key)."""
        if not isinstance(key, str):
            return {"name": None, "name_source": None}
        if key in self._cache:
            return self._cache[key]
        out: dict = {"name": None, "name_source": None}
        if key.startswith("did:key:"):
            chain = self._chain_keys(key)
            local = next((name for name in map(self._records.local_name, chain) if name), None)
            if local:
                out = {"name": local, "name_source": "local"}
            elif self._me in chain and self._my_name:
                out = {"name": self._my_name, "name_source": "own"}
            else:
                declared = [lab for lab in map(self._records.lab, chain) if lab is not None]
                if declared:  # the newest lab record of the identity's keys names it
                    out = {"name": max(declared, key=lambda lab: lab[1])[0], "name_source": "declared"}
        else:  # a peer ID: its lab's name, else what the operator calls this node
            lab = self._me if key == self._my_peer_id() else self._records.lab_of_peer(key)
            lab_fields = self.fields(lab) if lab is not None else {"name_source": None}
            local = self._records.local_name(key)
            if lab is not None and (lab_fields["name_source"] == "local" or not local):
                out = {"name": lab_fields["name"], "name_source": lab_fields["name_source"], "lab": lab}
            elif local:
                out = {"name": local, "name_source": "local", **({"lab": lab} if lab else {})}
        self._cache[key] = out
        return out

    def _chain_keys(self, key: str) -> list[str]:
        """``key`` and the other keys of its identity, newest first (issue 17: names carry over a
        rotation and a recovery; a local name given to the old key still shows for the new one)."""
        if not hasattr(self, "_ids"):
            self._ids = self._records.keys.identities()
        identity = self._ids.identity_of(key)
        if identity == key and len(self._ids.chain(key)) == 1:
            return [key]
        return [key, *(link.key for link in reversed(self._ids.chain(identity)) if link.key != key)]

    def json_fields(self, key, prefix: str = "") -> dict:
        """``{prefix+"name", prefix+"name_source"}`` for a ``--json`` answer beside the full key."""
        f = self.fields(key)
        return {f"{prefix}name": f["name"], f"{prefix}name_source": f["name_source"]}

    def _my_peer_id(self) -> str | None:
        return getattr(self, "my_peer_id", None)

    def label(self, key) -> str:
        """A lab as shown in a line or a page: local name, else declared name + mark, else key."""
        if not isinstance(key, str):
            return repr(key)
        f = self.fields(key)
        if f["name"] is None:
            return short_key(f.get("lab") or key)
        if f["name_source"] in ("local", "own"):
            return lab_label(key, local=f["name"])
        return lab_label(key, declared=f["name"])


def names_for(home: "Home", records: "RecordStore") -> Names:
    """A :class:`Names` for this home's own lab."""
    identity = home.identity()
    names = Names(records, identity.did, identity.name)
    names.my_peer_id = identity.peer_id
    return names


def _node_signer(home: "Home"):
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key((home.path / "node.key").read_bytes(), password=None)
    return key.sign


def sign_lab_body(home: "Home", records: "RecordStore", *, name: str, profile: dict | None = None) -> dict:
    """The body of this lab's next ``lab`` record: ``name``, the node entries of the newest
    record known here plus this node's own (freshly signed by the node key), and ``profile``
    (the profile fields, protocol/labs.py) or else the newest record's profile fields, kept as
    they were signed: renewing the name or the node never drops what ``lab set`` published."""
    from fabnode.protocol.dagcbor import decode
    from fabnode.protocol.labs import PROFILE_FIELDS

    identity = home.identity()
    latest = records.lab(identity.did)
    earlier_key = latest is None
    if earlier_key:
        latest = _chain_lab(records, identity.did)
    old: dict = {}
    if latest is not None:
        raw = records.raw(latest[2])
        if raw is not None:
            old = decode(raw)["body"]
    # an earlier key's node entries were signed for that key: each node ties itself to the new one
    nodes = {} if earlier_key else {n["peer"]: n for n in old.get("nodes", ())}
    nodes[identity.peer_id] = {"peer": identity.peer_id,
                               "sig": _node_signer(home)(node_tie_statement(identity.did))}
    kept = profile if profile is not None else {k: old[k] for k in PROFILE_FIELDS if k in old}
    recovery = lab_recovery(home, records, identity.did)
    return {"name": name, "nodes": [nodes[p] for p in sorted(nodes)], **kept,
            **({"recovery": recovery} if recovery is not None else {})}


def _chain_lab(records: "RecordStore", did: str):
    """The newest lab record by an earlier key of ``did``'s chain (issue 17): a rotated or
    recovered key's first lab record keeps the profile and nodes the lab published before."""
    ids = records.keys.identities()
    newest = None
    for link in ids.chain(did):
        if link.key != did:
            row = records.lab(link.key)
            if row is not None and (newest is None or row[1] > newest[1]):
                newest = row
    return newest


def lab_recovery(home: "Home", records: "RecordStore", did: str) -> bytes | None:
    """The ``recovery`` every lab record this node signs carries (issue 17): the commitment kept
    in the home (node/local/recovery.py), else the one the lab's earlier records carry (a second
    node of the lab, with only the author key), so no re-signing ever drops it."""
    from fabnode.node.local.recovery import committed, published_commitment

    return (committed(home) or published_commitment(records, did)
            or published_commitment(records, records.keys.identities().identity_of(did)))  # after a rotation


def ensure_lab_record(home: "Home", *, announce: bool = True) -> str | None:
    """Sign and queue this lab's ``lab`` record if the newest one here lacks its configured name
    or this node; returns the new record's id, or None when nothing changed.

    The node entries of the newest record known here are kept (a lab with two nodes), with this
    node's own entry added. A configured name that is not safe to show is an error.
    ``announce=False``: the caller is the daemon itself (it reads its outbox; nobody to poke)."""
    from fabnode.node.local.commons import _announce, _open, _record, now_ms
    from fabnode.node.local.keys import restoring

    if restoring(home.path):  # init --restore: this key signs nothing until its revocation
        return None
    identity = home.identity()
    name = check_name(identity.name, "the lab's name in config.toml")
    store, records = _open(home)
    latest = records.lab(identity.did)
    if latest is not None and latest[0] == name and identity.peer_id in records.nodes_of(identity.did) \
            and _carries_recovery(home, records, latest[2]):
        return None
    body = sign_lab_body(home, records, name=name)
    ts = now_ms()
    if latest is not None and ts <= latest[1]:
        ts = latest[1] + 1  # newer than the one it replaces, even if this clock is behind
    with store.write_transaction(final=True):
        record = _record(home, "lab", body, ts)
        records.ingest(record, received_ms=ts, outbox=True)
    if announce:
        _announce(home)
    return record.id


def _carries_recovery(home: "Home", records: "RecordStore", cid: bytes) -> bool:
    """Whether the lab record ``cid`` carries the home's recovery commitment (issue 17: a home
    that just made one re-signs, so the commitment reaches peers)."""
    from fabnode.node.local.recovery import committed

    wanted = committed(home)
    if wanted is None:
        return True
    from fabnode.protocol.dagcbor import decode

    raw = records.raw(cid)
    return raw is not None and decode(raw)["body"].get("recovery") == wanted


def _check_key(key: str) -> str:
    from fabnode.protocol.identity import ed25519_from_did
    from fabnode.protocol.labs import ed25519_from_peer_id

    if key.startswith("did:"):
        ed25519_from_did(key)
    else:
        try:
            ed25519_from_peer_id(key)
        except FabnodeError:
            raise FabnodeError(f"not a did:key or a peer ID: {key[:60]!r}") from None
    return key


def set_name(home: "Home", key: str, name: str | None) -> dict:
    """Call ``key`` (a lab's did:key or a node's peer ID) ``name`` here; None removes the name."""
    from fabnode.node.local.commons import _open, now_ms

    _check_key(key)
    store, records = _open(home)
    with store.write_transaction():
        if name is None:
            if not records.clear_local_name(key):
                raise FabnodeError(f"{short_key(key)} has no local name here")
        else:
            records.set_local_name(key, check_name(name), now_ms())
    return _entry(names_for(home, records), records, key)


def _entry(names: Names, records: "RecordStore", key: str) -> dict:
    lab = records.lab(key) if key.startswith("did:") else None
    return {"key": key, "local": records.local_name(key), "declared": lab[0] if lab else None,
            "shown": names.label(key)}


def names(home: "Home") -> list[dict]:
    """Every key this node has a name for: local names and names labs declare, by key."""
    _, records = _open_records(home)
    shown = names_for(home, records)
    keys = {k for k, _, _ in records.local_names()} | {a for a, _, _ in records.labs()}
    return [_entry(shown, records, k) for k in sorted(keys)]


def _open_records(home: "Home"):
    from fabnode.node.local.commons import _open

    return _open(home)


__all__ = ["Names", "UNVERIFIED", "ensure_lab_record", "names", "names_for", "set_name"]
