"""The libp2p host, configured the one way fabnode runs it (docs/protocol.md §6, docs/libp2p.md).

* TCP only, **Noise only** and **Yamux only**: py-libp2p's defaults also accept /plaintext and
  /secio connections (docs/libp2p.md pitfall 2), so the security and muxer options are given explicitly.
* The peer ID is the node key in the home (``node.key``), so it is the same across restarts and
  the one ``fabnode id`` shows.
* ``connect()`` no longer waits out a fixed 250 ms "happy eyeballs" delay after a dial that has
  already succeeded (docs/libp2p.md pitfall 3): the private constant is set to 0 here, which
  is why libp2p is pinned to 0.8.1 exactly.
* Yamux frames are sized to fit one Noise message (see below).
* :func:`running_host` always calls ``host.close()`` on the way out: leaving ``host.run()`` alone
  leaks every connection, and peers go on seeing us as connected (docs/libp2p.md pitfall 1).

Importing this module imports libp2p (~0.8 s): only the daemon and network commands do.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

import libp2p.network.swarm as _swarm
import libp2p.stream_muxer.yamux.yamux as _yamux
from libp2p import new_host
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_pair
from libp2p.security.noise.io import MAX_PLAINTEXT_LENGTH as _NOISE_MAX_PLAINTEXT
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from multiaddr import Multiaddr

from .home import NODE_KEY, Home

_swarm._HAPPY_EYEBALLS_DELAY = 0.0
# A Yamux frame of 64 KiB (header included) is 17 bytes over what one Noise message can carry,
# so every full frame left as two encrypted messages; frames sized to fit halve that work. A
# smaller frame is always valid Yamux, so this changes nothing for other implementations.
_yamux.MAX_MESSAGE_SIZE = _NOISE_MAX_PLAINTEXT


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


def make_host(key_pair: KeyPair):
    """A host that speaks only Noise over TCP, multiplexed with Yamux."""
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_ID: NoiseTransport(key_pair, noise_privkey=new_x25519_pair().private_key)},
        muxer_opt={YAMUX_ID: Yamux},
    )


@contextlib.asynccontextmanager
async def running_host(key_pair: KeyPair, listen: Sequence[str]) -> AsyncIterator:
    """Listen on ``listen`` (multiaddrs), yield the host, and close every connection on exit."""
    host = make_host(key_pair)
    async with host.run([Multiaddr(a) for a in listen]):
        try:
            yield host
        finally:
            await host.close()


def dial_address(host) -> str:
    """The host's first listen address with its peer ID, as a peer would dial it."""
    addr = str(host.get_addrs()[0])
    return addr if "/p2p/" in addr else f"{addr}/p2p/{host.get_id()}"
