"""A hostile peer for the tests: joins /fabnode/records/1 and publishes whatever it is given.

Usage: python tests/hostile_peer.py TARGET_ADDR MESSAGES_FILE
MESSAGES_FILE is a msgpack list of byte strings, published in order (no validation on this
side, spam protection off). Prints ``published N`` once done, then stays connected until its
stdin closes, so the test decides when it goes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import msgpack
import trio


TOPIC = "/fabnode/records/1"


async def main(target: str, messages: list[bytes]) -> None:
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
    from libp2p.pubsub.pubsub import Pubsub
    from libp2p.tools.anyio_service import background_trio_service
    from multiaddr import Multiaddr

    from fabnode.node.runtime.host import quiet_library_logs, running_host

    quiet_library_logs()
    info = info_from_p2p_addr(Multiaddr(target))
    async with running_host(create_new_key_pair(), ["/ip4/127.0.0.1/tcp/0"]) as host:
        gossipsub = GossipSub(protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11, PROTOCOL_ID], degree=4, degree_low=1,
                              degree_high=8, heartbeat_interval=1, eclipse_protection_enabled=False,
                              spam_protection_enabled=False)
        pubsub = Pubsub(host, gossipsub)
        async with background_trio_service(pubsub), background_trio_service(gossipsub):
            await pubsub.wait_until_ready()
            await pubsub.subscribe(TOPIC)
            with trio.fail_after(20):
                await host.connect(info)
                while info.peer_id not in gossipsub.mesh.get(TOPIC, set()):
                    await trio.sleep(0.05)
            for message in messages:
                await pubsub.publish(TOPIC, message)
                await trio.sleep(0.02)
            print(f"published {len(messages)}", flush=True)
            await trio.to_thread.run_sync(sys.stdin.read)
        await host.close()


if __name__ == "__main__":
    trio.run(main, sys.argv[1], msgpack.unpackb(Path(sys.argv[2]).read_bytes()))
