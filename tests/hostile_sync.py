"""A hostile peer for the sync tests: speaks /fabnode/sync/1.0.0 correctly, but what it sends
is a forged record (a valid-looking vouch signed by the wrong key).

Usage: python tests/hostile_sync.py VICTIM_PEER_ID
It picks a peer ID greater than the victim's, so the victim starts the sync (the smaller ID
does), prints its address, serves until its stdin closes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import trio



async def main(victim: str) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID

    from fabnode.node.runtime.host import dial_address, quiet_library_logs, running_host
    from fabnode.node.runtime.sync import ItemCache, sync_over_stream
    from fabnode.protocol.cid import DAG_CBOR, make_cid
    from fabnode.protocol.fetch import PROTOCOL as FETCH
    from fabnode.protocol.identity import did_from_ed25519
    from fabnode.protocol.records import make_record
    from fabnode.protocol.sync import PROTOCOL as SYNC
    from fabnode.storage import BlockStore, open_db
    from fabnode.storage.records import RecordStore

    quiet_library_logs()
    db = open_db(memory=True)
    records = RecordStore(db.conn)
    store = BlockStore(db)
    victim_did = did_from_ed25519(b"\x01" * 32)
    forged = make_record("vouch", {"subject": victim_did, "trust": "trusted"}, author=victim_did,
                         ts=int(time.time() * 1000), sign=Ed25519PrivateKey.generate().sign).raw
    db.conn.execute("INSERT INTO records (cid, type, author, ts, data, received_ms) VALUES (?, 'vouch', ?, ?, ?, 0)",
                    (make_cid(DAG_CBOR, forged), victim_did, int(time.time() * 1000), forged))
    while True:
        key_pair = create_new_key_pair()
        if str(ID.from_pubkey(key_pair.public_key)) > victim:
            break

    async def handle_sync(stream) -> None:
        try:
            await sync_over_stream(stream, initiator=False, peer=victim, items=ItemCache(records), records=records,
                                   store=store, now_ms=lambda: int(time.time() * 1000))
        except Exception:
            pass

    async def handle_fetch(stream) -> None:
        await stream.reset()

    async with running_host(key_pair, ["/ip4/127.0.0.1/tcp/0"]) as host:
        host.set_stream_handler(SYNC, handle_sync)
        host.set_stream_handler(FETCH, handle_fetch)
        print(dial_address(host), flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
