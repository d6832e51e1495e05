"""Labs behind NAT (issue 21): reachability by dial-back, circuit relay v2 with fabnode's limits,
reservations on public peers, relayed dials for `get`, and DCUtR hole punching.

Theory of operation
-------------------
The decisions are pure (protocol/nat.py); this module carries them out with py-libp2p 0.8.1,
wired by hand as the probes of the library found to work (docs/design.md, "Labs behind NAT"):

* **Where do I stand?** Every few seconds, :meth:`NatRuntime.check_reachability` asks up to two
  directly connected fabnode peers it has not asked lately to dial it back
  (``/fabnode/dialback/1.0.0``: the request names only the listen ports; the helper dials the
  IP it observes the asker at, on a fresh TCP connection, within 3 s). libp2p's AutoNAT answers
  from the existing connection and so cannot tell.
* **Relaying.** Once reachable, and unless ``relay = false``, the node serves the relay's hop
  protocol; every reservation, circuit and relayed chunk goes through :class:`RelayGate`
  first (its limits, bans, each peer's hourly bytes, the total bandwidth), and a refusal is
  logged once per peer per minute. The library's own relay loop is replaced by
  :meth:`_relay_data`, which asks the gate for each chunk.
* **Behind NAT**: the node reserves a slot on one or two directly connected peers that serve
  the hop protocol (the library refreshes it), and says so once per relay.
* **Dialling a peer for `get`** (:meth:`connect`): its addresses and a circuit race, happy-
  eyeballs style: a peer known to be behind NAT (every address it advertises is private, it was
  reached over a relay before, or a direct dial to it failed in the last
  :data:`DIRECT_FAILED_FOR_S`) is dialled both ways at once; any other peer gets
  :data:`DIRECT_HEAD_START_S` for its direct dial before the circuit starts too. The first that
  succeeds wins and the other is cancelled. A circuit goes through each directly connected peer
  that serves hop (in a region, the hub both know: the relay refuses at once when the holder
  holds no slot on it). A circuit that died is dialled again at the next attempt.
* **Saying why it is slow** (:meth:`link_note`): while a fetch runs over a circuit, `get` is told
  once which relay carries it, that a relay cuts a connection past its limits and shares its
  bandwidth, and which public node could seed the design; once DCUtR punched a hole, that the
  link is now direct.
* **Hole punching**: with ``hole_punching = true``, DCUtR runs on every node; once two NATed
  peers share a circuit it tries a direct connection, and new streams then use it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import time

import msgpack
import trio

from fabnode.node.service.pacing import BUNDLES
from fabnode.protocol.errors import FabnodeError
from fabnode.protocol.nat import (BEHIND_NAT, REACHABLE, DialbackBudget, Reachability, RelayGate, RelayLimits,
                                  link_note)

DIALBACK = "/fabnode/dialback/1.0.0"
DIALBACK_TIMEOUT_S = 3
"""A helper's TCP dial back; a NAT that drops the SYN makes it wait this long."""
ASK_AGAIN_S = 600
"""How long one helper's answer stands before it is asked again."""
CHECK_EVERY_S = 2
RESERVE_RETRY_S = 10
MAX_RELAYS = 2
DIRECT_DIAL_S = 5
DIRECT_HEAD_START_S = 1.0
"""A peer not known to be behind NAT: how long its direct dial runs alone before a circuit races it."""
DIRECT_FAILED_FOR_S = 600
"""A failed direct dial marks a peer as behind NAT for this long (its next dial races a circuit at once)."""
CIRCUIT_DIAL_S = 10
MAX_REQUEST = 256


def short(peer: str) -> str:
    from fabnode.protocol.labs import short_key

    return short_key(peer)


def _addresses(conn) -> list:
    try:
        return list(conn.get_transport_addresses())
    except Exception:
        return []


def is_relayed(conn) -> bool:
    return any("/p2p-circuit" in str(a) for a in _addresses(conn))


def private_address(addr: str) -> bool:
    """Whether a multiaddr names an address that cannot be dialled from the Internet."""
    for proto in ("ip4", "ip6"):
        if f"/{proto}/" in addr:
            try:
                ip = ipaddress.ip_address(addr.split(f"/{proto}/", 1)[1].split("/", 1)[0])
            except ValueError:
                return False
            return ip.is_private or ip.is_loopback or ip.is_link_local or ip in ipaddress.ip_network("100.64.0.0/10")
    return False


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class NatRuntime:
    def __init__(self, host, log, *, relay: bool, hole_punching: bool, limits: RelayLimits,
                 confirmations: int, banned, announce=(), pacer=None) -> None:
        """``banned(peer)``: whether this node refuses the peer (node/service/peers.py);
        ``announce``: the addresses peers are told (``--announce``), whose ports are dialled back;
        ``pacer``: the node's upload pacer (node/runtime/pacing.py), which relayed bytes go through."""
        from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
        from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
        from libp2p.relay.circuit_v2.resources import RelayLimits as LibLimits
        from libp2p.relay.circuit_v2.transport import CircuitV2Transport

        self.host, self.log, self.banned, self.announce = host, log, banned, tuple(announce)
        self.pacer = pacer
        self.limits = limits
        self.relay_enabled, self.hole_punching = relay, hole_punching
        self.reach = Reachability(confirmations=max(1, confirmations))
        self.budget = DialbackBudget()
        self.gate = RelayGate(limits)
        self._said_at: dict[str, tuple[float, int]] = {}
        """peer -> (when its last refusal was logged, refusals left out since)."""
        lib_limits = LibLimits(duration=limits.circuit_seconds, data=limits.circuit_bytes,
                               max_circuit_conns=limits.circuits_per_peer, max_reservations=limits.reservations)
        self.proto = CircuitV2Protocol(host, limits=lib_limits, allow_hop=False)
        self.transport = CircuitV2Transport(host, self.proto, RelayConfig(
            roles=RelayRole.STOP | RelayRole.CLIENT, limits=lib_limits))
        self._orig_reserve, self._orig_connect = self.proto._handle_reserve, self.proto._handle_connect
        self.proto._handle_reserve = self._gated_reserve
        self.proto._handle_connect = self._gated_connect
        self.proto._relay_data = self._relay_data
        self.dcutr = None
        if hole_punching:
            from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol

            self.dcutr = DCUtRProtocol(host, dial_timeout=2)
        self.offering = False
        self.relays: dict[str, str] = {}
        """relay peer -> our relayed address through it (reservations held)."""
        self._tried_relay: dict[str, float] = {}
        self._wake = trio.Event()
        self._asked: dict[str, float] = {}
        self._circuit_of: dict[int, int] = {}
        self._said = ""
        self.ever_relayed: set[str] = set()
        self.relayed_via: dict[str, str] = {}
        """peer -> the relay we last reached it through."""
        self._direct_failed: dict[str, float] = {}
        """peer -> when (monotonic) a direct dial to it last failed."""
        self.nursery: trio.Nursery | None = None
        host.set_stream_handler(DIALBACK, self.handle_dialback)

    def services(self) -> list:
        """The libp2p services to run (background_trio_service): the relay, and DCUtR."""
        return [self.proto] + ([self.dcutr] if self.dcutr is not None else [])

    # ------------------------------------------------------------------ reachability

    def _listen_ports(self) -> list[int]:
        from multiaddr import Multiaddr

        ports = []
        for addr in [Multiaddr(a) for a in self.announce] or self.host.get_transport_addrs():
            try:
                ports.append(int(addr.value_for_protocol("tcp")))
            except Exception:
                pass
        return sorted(set(ports))[:2]

    async def handle_dialback(self, stream) -> None:
        """Helper side: dial the asker back at its observed IP, each port it names (at most 2)."""
        peer = str(stream.muxed_conn.peer_id)
        reason = self.budget.take(peer, _now_ms())
        if reason is not None:
            self._say(peer, f"dial-back for {short(peer)} refused: {reason}")
            await stream.reset()
            return
        try:
            with trio.fail_after(DIALBACK_TIMEOUT_S + 5):
                request = await stream.read(MAX_REQUEST)
                ports = msgpack.unpackb(request).get("ports", []) if request else []
                remote = stream.get_remote_address()
                if is_relayed(stream.muxed_conn) or not remote or not isinstance(ports, list):
                    await stream.reset()
                    return
                ip = remote[0]
                answers = []
                for port in [p for p in ports if isinstance(p, int) and 0 < p < 65536][:2]:
                    reached = False
                    with trio.move_on_after(DIALBACK_TIMEOUT_S):
                        try:
                            sock = await trio.open_tcp_stream(ip, port)
                            await sock.aclose()
                            reached = True
                        except OSError:
                            pass
                    answers.append([f"/ip{6 if ':' in ip else 4}/{ip}/tcp/{port}", reached])
                await stream.write(msgpack.packb({"answers": answers}))
                await stream.close()
        except Exception:
            try:
                await stream.reset()
            except Exception:
                pass
        finally:
            self.budget.done()

    async def _ask(self, peer_id) -> None:
        peer = str(peer_id)
        try:
            with trio.fail_after(DIALBACK_TIMEOUT_S * 2 + 5):
                stream = await self.host.new_stream(peer_id, [DIALBACK])
                await stream.write(msgpack.packb({"ports": self._listen_ports()}))
                reply = msgpack.unpackb(await stream.read(4096))
                await stream.close()
            answers = reply.get("answers") or []
            reached = [a for a, ok in answers if ok]
            self.reach.heard(peer, bool(reached), (reached or [a for a, _ in answers] or ["?"])[0])
        except Exception:
            self._asked[peer] = time.monotonic() - ASK_AGAIN_S + 30  # ask it again in 30 s
            return
        self._verdict_changed()

    def _verdict_changed(self) -> None:
        verdict, addrs = self.reach.verdict()
        said = f"{verdict} {addrs}"
        if said == self._said:
            return
        self._said = said
        self._wake.set()  # reserve (or offer) now, not at the next check
        if verdict == REACHABLE:
            self.log(f"reachability: reachable at {', '.join(addrs)} (dialled back by a peer)")
            if self.relay_enabled and not self.offering:
                from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP

                self.host.set_stream_handler(HOP, self.proto._handle_hop_stream)
                self.offering = True
                self.log("relay: offering circuit relay to peers behind NAT")
        elif verdict == BEHIND_NAT:
            self.log(f"reachability: behind NAT ({', '.join(addrs)} could not be dialled back); "
                     "looking for a relay among the peers reached")
            if self.hole_punching:
                from .host import share_listening_ports

                share_listening_ports(self.host)

    def direct_peers(self) -> list:
        """Connected peers with at least one direct (not relayed) connection."""
        out = []
        for peer_id, conns in self.host.get_network().get_connections_map().items():
            if any(not is_relayed(c) for c in conns):
                out.append(peer_id)
        return out

    def _speaks(self, peer_id, protocol: str) -> bool:
        try:
            return protocol in self.host.get_peerstore().get_protocols(peer_id)
        except Exception:
            return False

    async def check_reachability(self) -> None:
        """Ask new helpers every few seconds; keep relay reservations while behind NAT."""
        while True:
            now = time.monotonic()
            asking = 0
            for peer_id in self.direct_peers():
                peer = str(peer_id)
                if asking >= 2 or now - self._asked.get(peer, -1e9) < ASK_AGAIN_S or not self._speaks(peer_id, DIALBACK):
                    continue
                self._asked[peer] = now
                asking += 1
                self.nursery.start_soon(self._ask, peer_id)
            connected = {str(p) for p in self.host.get_network().get_connections_map()}
            for helper in [h for h in self.reach.answers if h not in connected]:
                self.reach.forget(helper)
                self._asked.pop(helper, None)  # asked again when it is back
            for gone in [p for p in self._tried_relay if p not in connected]:
                del self._tried_relay[gone]  # when it is back it may relay (restarted with relay = true)
            for relay in [r for r in self.relays if r not in connected]:
                del self.relays[relay]
                self.log(f"relay: lost the relay {short(relay)}; looking for another")
            for peer in [p for p in self.gate.reservations if p not in connected]:
                self.gate.release(peer)
            if self.reach.verdict()[0] == BEHIND_NAT and len(self.relays) < MAX_RELAYS:
                await self._reserve_some(now)
            self._track_links()
            with trio.move_on_after(CHECK_EVERY_S):
                await self._wake.wait()
            self._wake = trio.Event()

    async def _reserve_some(self, now: float) -> None:
        from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP

        for peer_id in self.direct_peers():
            peer = str(peer_id)
            if len(self.relays) >= MAX_RELAYS or peer in self.relays or now - self._tried_relay.get(peer, -1e9) < RESERVE_RETRY_S:
                continue
            self._tried_relay[peer] = now
            try:
                with trio.fail_after(CIRCUIT_DIAL_S):
                    stream = await self.host.new_stream(peer_id, [HOP])
                    try:
                        ok = await self.transport.reserve(stream, peer_id, self.nursery)
                    finally:
                        await stream.close()
            except Exception:
                continue
            if ok:
                addr = self._relay_addr(peer_id)
                self.relays[peer] = f"{addr}/p2p-circuit/p2p/{self.host.get_id()}"
                self.log(f"relay: reachable through relay {peer} as {self.relays[peer]}")

    def _relay_addr(self, peer_id) -> str:
        for conn in self.host.get_network().get_connections(peer_id):
            if not is_relayed(conn):
                try:
                    return f"{conn.get_transport_addresses()[0]}/p2p/{peer_id}"
                except Exception:
                    pass
        return f"/p2p/{peer_id}"

    # ------------------------------------------------------------------ links, for status

    def _track_links(self) -> None:
        for peer_id, conns in self.host.get_network().get_connections_map().items():
            if any(is_relayed(c) for c in conns):
                self.ever_relayed.add(str(peer_id))

    def links(self) -> dict[str, str]:
        """Each connected peer: "direct", "relayed" (only through a relay) or "hole-punched"
        (direct, after it was reached over a relay)."""
        out = {}
        for peer_id, conns in self.host.get_network().get_connections_map().items():
            if not conns:
                continue
            peer = str(peer_id)
            if all(is_relayed(c) for c in conns):
                self.ever_relayed.add(peer)
                out[peer] = "relayed"
            else:
                out[peer] = "hole-punched" if peer in self.ever_relayed else "direct"
        return out

    def status(self) -> dict:
        verdict, addrs = self.reach.verdict()
        return {"reachability": verdict, "addrs": addrs, "relays": dict(self.relays),
                "relay": {"offering": self.offering, **self.gate.status()} if self.relay_enabled else None,
                "hole_punching": self.hole_punching, "links": self.links()}

    # ------------------------------------------------------------------ dialling for `get`

    def known_behind_nat(self, peer: str, addrs: list[str]) -> bool:
        """Whether a direct dial to ``peer`` is unlikely to answer: it advertises only private
        addresses, was reached over a relay before, or a direct dial failed lately."""
        failed = self._direct_failed.get(peer)
        return (all(private_address(a) for a in addrs) or peer in self.ever_relayed
                or (failed is not None and time.monotonic() - failed < DIRECT_FAILED_FOR_S))

    async def connect(self, info) -> None:
        """Reach ``info``'s peer directly or through a relay, whichever answers first (the
        theory above); a FabnodeError says why neither did."""
        network = self.host.get_network()
        if network.get_connections(info.peer_id):
            return
        peer = str(info.peer_id)
        advertised = [str(a) for a in info.addrs if "/p2p-circuit" in str(a)]
        addrs = [str(a) for a in info.addrs if "/p2p-circuit" not in str(a)]
        if not addrs:
            await self.dial_circuit(info.peer_id, addrs, advertised)
            return
        head_start = 0.0 if self.known_behind_nat(peer, addrs) else DIRECT_HEAD_START_S
        direct_failed = trio.Event()
        outcome: dict = {}

        from libp2p.peer.peerinfo import PeerInfo
        from multiaddr import Multiaddr

        async def direct(race) -> None:
            try:
                network.unblock_peer(info.peer_id)
                with trio.fail_after(DIRECT_DIAL_S):
                    await self.host.connect(PeerInfo(info.peer_id, [Multiaddr(a) for a in addrs]))
            except Exception:
                self._direct_failed[peer] = time.monotonic()
                direct_failed.set()
                return
            self._direct_failed.pop(peer, None)
            outcome["reached"] = "direct"
            race.cancel_scope.cancel()

        async def relayed(race) -> None:
            with trio.move_on_after(head_start):
                await direct_failed.wait()
            try:
                await self.dial_circuit(info.peer_id, addrs, advertised)
            except FabnodeError as exc:
                outcome["error"] = exc
                return
            outcome["reached"] = "relay"
            race.cancel_scope.cancel()

        async with trio.open_nursery() as race:
            race.start_soon(direct, race)
            race.start_soon(relayed, race)
        if "reached" not in outcome:
            raise outcome.get("error") or FabnodeError(f"cannot reach {short(peer)}")

    async def dial_circuit(self, peer_id, addrs=(), advertised=()) -> None:
        """Reach ``peer_id`` through a relay: first those it advertised (``advertised``: circuit
        addresses from its provider records, the relay dialled first if need be), then each
        directly connected peer that relays. A FabnodeError says why none did."""
        from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP
        from multiaddr import Multiaddr

        tried, over_limits = [], []
        for relay_addr, relay in circuit_relays(advertised, str(peer_id), str(self.host.get_id())):
            tried.append(relay)
            try:
                with trio.fail_after(CIRCUIT_DIAL_S):
                    if not self.host.get_network().get_connections(_peer_id(relay)):
                        from libp2p.peer.peerinfo import info_from_p2p_addr

                        await self.host.connect(info_from_p2p_addr(Multiaddr(relay_addr)))
                    await self.transport.dial(Multiaddr(f"{relay_addr}/p2p-circuit/p2p/{peer_id}"))
            except Exception as exc:
                if _relay_status(exc) == "RESOURCE_LIMIT_EXCEEDED":
                    over_limits.append(relay)
                continue
            self.ever_relayed.add(str(peer_id))
            self.relayed_via[str(peer_id)] = relay
            self.log(f"relay: reached {short(str(peer_id))} through its advertised relay {short(relay)}")
            return
        for relay in self.direct_peers():
            if relay == peer_id or str(relay) in tried:
                continue
            try:  # does it relay? (identify's list may be stale: a peer restarted without relay)
                with trio.fail_after(CIRCUIT_DIAL_S):
                    await (await self.host.new_stream(relay, [HOP])).reset()
            except Exception:
                continue
            tried.append(str(relay))
            try:
                with trio.fail_after(CIRCUIT_DIAL_S):
                    await self.transport.dial(Multiaddr(f"{self._relay_addr(relay)}/p2p-circuit/p2p/{peer_id}"))
                self.ever_relayed.add(str(peer_id))
                self.relayed_via[str(peer_id)] = str(relay)
                return
            except Exception as exc:
                if _relay_status(exc) == "RESOURCE_LIMIT_EXCEEDED":
                    over_limits.append(str(relay))
                continue
        peer = str(peer_id)
        if over_limits:
            relays = ", ".join(short(r) for r in over_limits)
            raise FabnodeError(f"the holder {short(peer)} is reachable only through the relay {relays}, which refuses "
                               f"more for now (over its limits for relayed bytes or connections); ask a public node "
                               f"({relays}) to seed it")
        natted = not addrs or all(private_address(a) for a in addrs)
        why = "is behind NAT" if natted else f"cannot be dialled at {', '.join(addrs[:2])}"
        public = ", ".join(short(str(p)) for p in self.direct_peers() if p != peer_id) or "none connected"
        relays = f"none of the relays reached ({', '.join(short(r) for r in tried)}) holds a slot for it" if tried \
            else "no relay is reachable"
        raise FabnodeError(f"the holder {short(peer)} {why} and {relays}; ask a public node "
                           f"({public}) to seed it")

    def explain(self, peer: str) -> str:
        """Why a fetch from ``peer`` may have been cut: said when it was reached through a relay
        (whose limits cut large or long transfers) and no direct connection is up now."""
        relay = self.relayed_via.get(peer)
        if relay is None or self.links().get(peer) in ("direct", "hole-punched"):
            return ""
        return (f" (reached through the relay {short(relay)}, which cuts a relayed connection past its limits; "
                f"ask a public node ({short(relay)}) to seed it)")

    def link_note(self, peer: str) -> str:
        """What `get` tells the operator about the link to ``peer`` while fetching from it: going
        through a relay (why that is slow, who could seed it), or direct after hole punching; ""
        for an ordinary direct link."""
        relay = self.relayed_via.get(peer) or self._relay_of(peer)
        return link_note(short(peer), short(relay) if relay else "", self.links().get(peer), self.hole_punching,
                         RelayLimits())

    def _relay_of(self, peer: str) -> str:
        """The relay of a circuit ``peer`` dialled us through (its connection's address names it)."""
        for peer_id, conns in self.host.get_network().get_connections_map().items():
            if str(peer_id) != peer:
                continue
            for conn in conns:
                for addr in (str(a) for a in _addresses(conn)):
                    if "/p2p-circuit" in addr and "/p2p/" in addr.split("/p2p-circuit")[0]:
                        return addr.split("/p2p-circuit")[0].rsplit("/p2p/", 1)[1]
        return ""

    # ------------------------------------------------------------------ the relay's gate

    def _say(self, peer: str, line: str) -> None:
        """At most one line per peer per minute: a flood of requests is one line, not thousands."""
        now = time.monotonic()
        at, left_out = self._said_at.get(peer, (-1e9, 0))
        if now - at < 60:
            self._said_at[peer] = (at, left_out + 1)
            return
        more = f" ({left_out} more refused in the minute before)" if left_out else ""
        self._said_at[peer] = (now, 0)
        if len(self._said_at) > 10_000:
            del self._said_at[next(iter(self._said_at))]
        self.log(line + more)

    async def _gated_reserve(self, stream, msg) -> None:
        from libp2p.relay.circuit_v2.protocol_buffer import StatusCode

        peer = str(stream.muxed_conn.peer_id)
        if msg.HasField("peer") and msg.peer.id and msg.peer.id != stream.muxed_conn.peer_id.to_bytes():
            reason = "a reservation for another peer"
        else:
            reason = self.gate.reserve(peer, _now_ms(), self.banned(peer))
        if reason is not None:
            self._say(peer, f"relay: refused {short(peer)}: {reason}")
            await self.proto._send_status(stream, StatusCode.RESOURCE_LIMIT_EXCEEDED, reason)
            return
        await self._orig_reserve(stream, msg)

    async def _gated_connect(self, stream, msg) -> None:
        from libp2p.peer.id import ID
        from libp2p.relay.circuit_v2.protocol_buffer import StatusCode

        source = str(stream.muxed_conn.peer_id)
        try:
            target = str(ID(msg.peer.id))
        except Exception:
            target = "?"
        circuit, reason = self.gate.open(source, target, _now_ms(), self.banned)
        if circuit is None:
            self._say(source, f"relay: refused a circuit from {short(source)} to {short(target)}: {reason}")
            code = StatusCode.NO_RESERVATION if "no reservation" in reason else StatusCode.RESOURCE_LIMIT_EXCEEDED
            await self.proto._send_status(stream, code, reason)
            await stream.reset()
            return
        self._circuit_of[id(stream)] = circuit
        try:
            await self._orig_connect(stream, msg)
        finally:
            self._circuit_of.pop(id(stream), None)
            self.gate.close(circuit)

    async def _relay_data(self, src, dst, peer_id, deadline=None, data_left=None) -> None:
        """One direction of a circuit, each chunk counted by the gate (replaces the library's)."""
        circuit = self._circuit_of.get(id(src)) or self._circuit_of.get(id(dst))
        ends = self.gate.circuits.get(circuit)
        to_peer = "" if ends is None else (ends.target if id(src) in self._circuit_of else ends.source)
        try:
            while True:
                data = await src.read(65536)
                if not data:
                    break
                wait, stop = self.gate.carried(circuit, len(data), _now_ms()) if circuit else (0.0, "unknown circuit")
                if stop is not None:
                    self._say(str(peer_id), f"relay: cut a circuit of {short(str(peer_id))}: {stop}")
                    await src.reset()
                    await dst.reset()
                    return
                if wait:
                    await trio.sleep(wait)
                if self.pacer is not None:  # the node's upload cap, counted for the peer it goes to
                    await self.pacer.acquire(BUNDLES, len(data), "relay", to_peer)
                await dst.write(data)
        except Exception:
            pass
        for s in (src, dst):
            try:
                await s.close()
            except Exception:
                pass



def circuit_relays(advertised, peer: str, me: str) -> list[tuple[str, str]]:
    """(the relay's address ``/ip4/…/tcp/…/p2p/RELAY``, RELAY) of each well-formed circuit address
    ``…/p2p/RELAY/p2p-circuit/p2p/PEER`` that ``peer`` advertised, each relay once, at most
    :data:`MAX_RELAYS` × 2 (a provider record is the peer's word: anything else is dropped)."""
    out, seen = [], set()
    for addr in advertised:
        head, sep, tail = str(addr).partition("/p2p-circuit")
        if not sep or tail not in ("", f"/p2p/{peer}") or "/p2p/" not in head or not head.startswith("/ip"):
            continue
        relay = head.rsplit("/p2p/", 1)[1]
        if relay in seen or relay in (peer, me) or "/" in relay:
            continue
        seen.add(relay)
        out.append((head, relay))
    return out[:MAX_RELAYS * 2]


def _peer_id(text: str):
    from libp2p.peer.id import ID

    return ID.from_base58(text)


def _relay_status(exc: BaseException) -> str | None:
    """The relay's status code (its name) behind a failed circuit dial, if it gave one: the
    library wraps the error that carries it."""
    seen = 0
    while exc is not None and seen < 8:
        code = getattr(exc, "status_code", None)
        if code is not None:
            return getattr(code, "name", str(code))
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


@contextlib.asynccontextmanager
async def running(nat: NatRuntime):
    """Run the relay protocol (and DCUtR) as libp2p services for the daemon's lifetime."""
    from libp2p.tools.anyio_service import background_trio_service

    async with contextlib.AsyncExitStack() as stack:
        for service in nat.services():
            await stack.enter_async_context(background_trio_service(service))
        yield nat
