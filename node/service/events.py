"""What happens to a node: the inputs of :class:`node.service.service.NodeService`.

Each is a frozen, slotted value named in the past tense (h11, aioquic). The runtime
(node/runtime) or the simulator (tests/simnet.py) builds them from what the network, the store
and the operator did, and hands them over with the time: ``service.handle(event, now_ms)``.
Stream ids are opaque to the service: the runtime names inbound streams, the service names the
streams it asks for (:class:`node.service.effects.OpenStream`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PeerDiscovered:
    """A peer's addresses were learnt: from the configuration (``bootstrap``), mDNS (``mdns``),
    or because it dialled us and speaks fabnode (``inbound``)."""

    peer: str
    addrs: tuple[str, ...]
    source: str


@dataclass(frozen=True, slots=True)
class PeerConnected:
    """A connection to ``peer`` is open (either side dialled). ``addr``: its address, for the log."""

    peer: str
    addr: str = "?"


@dataclass(frozen=True, slots=True)
class PeerSpeaksFabnode:
    """``peer`` (connected) announced the fabnode protocols: it is a fabnode peer to sync with.
    ``addrs``: where it listens, to dial it again later."""

    peer: str
    addrs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PeerDisconnected:
    """The last connection to ``peer`` closed."""

    peer: str


@dataclass(frozen=True, slots=True)
class DialFailed:
    """A :class:`node.service.effects.Dial` did not connect; ``error`` names why."""

    peer: str
    error: str


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """An :class:`node.service.effects.OpenStream` we asked for is open."""

    stream: object


@dataclass(frozen=True, slots=True)
class InboundStream:
    """``peer`` opened ``stream`` for ``protocol``; the service accepts it or resets it."""

    stream: object
    peer: str
    protocol: str


@dataclass(frozen=True, slots=True)
class FrameReceived:
    """One length-delimited frame's body arrived on ``stream`` (its length already bounded by the
    runtime to the protocol's largest frame)."""

    stream: object
    body: bytes


@dataclass(frozen=True, slots=True)
class StreamProgress:
    """Bytes of ``stream`` moved, either way (a frame part-read or part-written): on a slow link
    a frame takes long, and a session that moves is not stalled (issue 14)."""

    stream: object


@dataclass(frozen=True, slots=True)
class StreamFailed:
    """``stream`` could not be opened, ended early, or was reset. ``remote_fault``: the peer broke
    a rule doing so (a frame over the limit); otherwise it simply went away."""

    stream: object
    error: str
    remote_fault: bool = False


@dataclass(frozen=True, slots=True)
class GossipReceived:
    """A record arrived on the gossip topic, passed on by ``forwarder`` and first published by
    ``origin``. The service validates it; it is forwarded only if the service says
    :class:`node.service.effects.Forward`."""

    forwarder: str
    data: bytes
    origin: str = "?"


@dataclass(frozen=True, slots=True)
class RecordsStored:
    """The answer to a :class:`node.service.effects.StoreRecords`: which records were new here,
    and how many the strangers' quota refused (with one reason)."""

    ticket: int
    new: tuple[bytes, ...] = ()
    over_quota: int = 0
    quota_reason: str = ""


@dataclass(frozen=True, slots=True)
class OutboxChanged:
    """A record was made here (the CLI pokes the daemon): announce it."""


@dataclass(frozen=True, slots=True)
class MeshChanged:
    """Gossip mesh peers on the records topic (announcing waits for at least one)."""

    peers: int


@dataclass(frozen=True, slots=True)
class FetchFinished:
    """A :class:`node.service.effects.Fetch` ended; ``error`` is empty on success."""

    root: bytes
    error: str = ""


@dataclass(frozen=True, slots=True)
class BundleDropped:
    """A :class:`node.service.effects.DropBundle` ended: ``freed`` bytes were deleted."""

    root: bytes
    freed: int = 0
    error: str = ""
