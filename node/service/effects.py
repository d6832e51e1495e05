"""What a node does: the outputs of :class:`node.service.service.NodeService`.

Frozen, slotted values (heartwood's ``Io``) queued in the service's outbox and drained by the
runtime, which carries them out in order: bytes on streams, dials, SQLite writes, log lines.
The simulator (tests/simnet.py) carries out the same effects over simulated links.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Dial:
    peer: str
    addrs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Close every connection to ``peer`` (it broke a rule, or one too many is open)."""

    peer: str
    reason: str


@dataclass(frozen=True, slots=True)
class OpenStream:
    """Open ``stream`` (the service's name for it) to ``peer`` for ``protocol``; the answer is
    :class:`node.service.events.StreamOpened` or :class:`node.service.events.StreamFailed`."""

    stream: object
    peer: str
    protocol: str


@dataclass(frozen=True, slots=True)
class SendFrame:
    """Write ``data`` (a whole frame, length prefix included) on ``stream``."""

    stream: object
    data: bytes


@dataclass(frozen=True, slots=True)
class CloseStream:
    """The session on ``stream`` is over: close it politely."""

    stream: object


@dataclass(frozen=True, slots=True)
class ResetStream:
    """Abort ``stream`` (refused, failed, or the peer broke a rule)."""

    stream: object


@dataclass(frozen=True, slots=True)
class StoreRecords:
    """Store these verified record blocks received from ``peer`` (the strangers' quota applies);
    answer with :class:`node.service.events.RecordsStored` carrying ``ticket``."""

    ticket: int
    peer: str
    blocks: tuple[bytes, ...]
    gossip: bool = False
    """From gossip (the daemon stores these in batches) rather than a sync session (stored at once)."""
    records: tuple = ()
    """The blocks as verified :class:`protocol.records.Record` values, in the same order: the
    store need not check the signatures again."""


@dataclass(frozen=True, slots=True)
class Publish:
    """Announce a record made here on the gossip topic."""

    cid: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class Forward:
    """A gossip record passed validation: pass it on to the other mesh peers (in the daemon,
    gossipsub does this itself once its validator says yes)."""

    data: bytes
    forwarder: str


@dataclass(frozen=True, slots=True)
class MarkAnnounced:
    """These records left the outbox: announced, or held by a peer we synced with."""

    cids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class RememberPeer:
    """Persist what the service knows of ``peer`` (node/service/peers.py's book) in the peers table."""

    peer: str
    addrs: tuple[str, ...]
    source: str
    first_seen_ms: int
    last_connected_ms: int
    failures: int
    next_dial_ms: int


@dataclass(frozen=True, slots=True)
class ForgetPeer:
    peer: str


@dataclass(frozen=True, slots=True)
class Fetch:
    """Fetch a bundle (seeding); the answer is :class:`node.service.events.FetchFinished`."""

    root: bytes
    source: str


@dataclass(frozen=True, slots=True)
class DropBundle:
    """Unpin a seeded bundle and delete what only it used (the seeding budget); the answer is
    :class:`node.service.events.BundleDropped`."""

    root: bytes


@dataclass(frozen=True, slots=True)
class Log:
    line: str


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Call ``service.tick(now)`` at ``at_ms`` (or earlier: ticking early is harmless)."""

    at_ms: int
