"""The libp2p host, configured the one way fabnode runs it (docs/protocol.md §6, docs/libp2p.md).

* TCP only, **Noise only** and **Yamux only**: py-libp2p's defaults also accept /plaintext and
  /secio connections (docs/libp2p.md pitfall 2), so the security and muxer options are given explicitly.
* The peer ID is the node key in the home (``node.key``), so it is the same across restarts and
  the one ``fabnode id`` shows.
* ``connect()`` no longer waits out a fixed 250 ms "happy eyeballs" delay after a dial that has
  already succeeded (docs/libp2p.md pitfall 3): the private constant is set to 0 here, which
  is why libp2p is pinned to 0.8.1 exactly.
* Yamux frames are sized to fit one Noise message (see below).
* **Listeners do not share their port.** 0.8.1 sets SO_REUSEPORT on every listening socket (for
  TCP hole punching, which fabnode does not use), so a second node, or any program of the same
  user that also sets it, could listen on the node's port and the kernel would share the
  incoming connections between them. Its private ``_open_reuseport_listeners`` is replaced by
  :func:`_open_listeners` (SO_REUSEADDR only), and :func:`running_host` refuses, in one line, an
  address that did not become a listener (another reason for the exact pin).
* :func:`running_host` always calls ``host.close()`` on the way out: leaving ``host.run()`` alone
  leaks every connection, and peers go on seeing us as connected (docs/libp2p.md pitfall 1).

Importing this module imports libp2p (~0.8 s): only the daemon and network commands do.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Sequence

import libp2p.network.swarm as _swarm
import libp2p.stream_muxer.yamux.yamux as _yamux
import libp2p.transport.tcp.tcp as _tcp
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_pair
from libp2p.security.noise.io import MAX_PLAINTEXT_LENGTH as _NOISE_MAX_PLAINTEXT
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.transport.exceptions import OpenConnectionError
from multiaddr import Multiaddr

from fabnode.protocol.errors import FabnodeError

from fabnode.node.runtime.addresses import listen_host_port, why_not
from fabnode.node.runtime.pacing import patch_libp2p_for_thin_links
from fabnode.node.home import NODE_KEY, Home

_swarm._HAPPY_EYEBALLS_DELAY = 0.0
# A Yamux frame of 64 KiB (header included) is 17 bytes over what one Noise message can carry,
# so every full frame left as two encrypted messages; frames sized to fit halve that work. A
# smaller frame is always valid Yamux, so this changes nothing for other implementations.
_yamux.MAX_MESSAGE_SIZE = _NOISE_MAX_PLAINTEXT
# By default 0.8.1 sends a Yamux WINDOW_UPDATE after every read (PY_YAMUX_RELEASE_ON_READ=1): one
# encrypted frame back per ~64 KiB received, each decrypted and handled by the sender, ~15 % of
# a fetch's CPU on the asking side. Off, it credits the window as go-yamux does (once half the
# window is consumed): 5x fewer updates for the same bytes (docs/design.md, "Fetch CPU per byte").
# The library reads the variable at each call; an operator's own setting wins.
os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")
patch_libp2p_for_thin_links()  # two limits that cut every transfer over 256 kbit/s (node/runtime/pacing.py)

_listen_errors: dict[tuple[str, int], OSError] = {}
"""Why each (host, port) last failed to listen: the swarm only logs it, at debug level."""


async def _open_listeners(host: str | None, port: int) -> list[trio.SocketListener]:
    """libp2p's ``_open_reuseport_listeners`` without SO_REUSEPORT: a port in use is refused."""
    import socket

    host = host or "0.0.0.0"
    sock = trio.socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # reuse a port in TIME_WAIT
        await sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        _listen_errors[(host, port)] = exc
        raise OpenConnectionError(f"Failed to listen on {host}:{port}: {exc}") from exc
    return [trio.SocketListener(sock)]


_tcp._open_reuseport_listeners = _open_listeners


def share_listening_ports(host) -> int:
    """Let TCP hole punching (DCUtR) dial out *from* the listening port: Linux allows that only
    when the listener has SO_REUSEPORT, which :func:`_open_listeners` leaves off so that no other
    program can share the port. Called only once the node is found behind NAT (node/runtime/nat.py):
    a node nobody can dial in to gives up that guard to be reachable at all. Returns the
    listeners changed."""
    import socket

    changed = 0
    for listener in host.get_network().listeners.values():
        for sock in getattr(listener, "listeners", []):
            try:
                sock.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                changed += 1
            except (OSError, AttributeError):
                pass
    return changed


def quiet_library_logs() -> None:
    """py-libp2p logs normal events (a refused dial, a closed stream) at WARNING and ERROR
    (docs/libp2p.md pitfall 9); fabnode says what matters itself, in one line."""
    import logging

    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("libp2p"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def node_key_pair(home: Home) -> KeyPair:
    """The libp2p key pair of this node, from ``HOME/node.key`` (PKCS#8 PEM, Ed25519)."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key((home.path / NODE_KEY).read_bytes(), password=None)
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    private = Ed25519PrivateKey.from_bytes(seed)
    return KeyPair(private, private.get_public_key())


def make_host(key_pair: KeyPair, announce: Sequence[str] = ()):
    """A host that speaks only Noise over TCP, multiplexed with Yamux; ``announce``: the
    addresses peers are told instead of the listen addresses."""
    return new_host(
        key_pair=key_pair,
        announce_addrs=[Multiaddr(a) for a in announce] or None,
        sec_opt={NOISE_ID: NoiseTransport(key_pair, noise_privkey=new_x25519_pair().private_key)},
        muxer_opt={YAMUX_ID: Yamux},
    )


@contextlib.asynccontextmanager
async def running_host(key_pair: KeyPair, listen: Sequence[str], *, change: str = "with --listen",
                       announce: Sequence[str] = ()) -> AsyncIterator:
    """Listen on ``listen`` (multiaddrs), yield the host, and close every connection on exit.

    An address that did not become a listener is a FabnodeError (the library would run on,
    listening elsewhere or nowhere); ``change`` says how the operator picks another one."""
    host = make_host(key_pair, announce)
    addrs = [Multiaddr(a) for a in listen]
    async with host.run(addrs):
        try:
            for addr in addrs:
                if str(addr) not in host.get_network().listeners:
                    why = why_not(_listen_errors.get(listen_host_port(str(addr))), change)
                    raise FabnodeError(f"cannot listen on {addr}: {why}")
            yield host
        finally:
            await host.close()


def dial_address(host) -> str:
    """The host's first listen address with its peer ID, as a peer would dial it."""
    addr = str(host.get_addrs()[0])
    return addr if "/p2p/" in addr else f"{addr}/p2p/{host.get_id()}"
