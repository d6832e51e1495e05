"""Gossip on ``/fabnode/records/1`` over py-libp2p's gossipsub (what a record received means, and
what to announce when, is the service's: node/service/service.py).

:class:`GossipRuntime` installs the topic validator — it hands every message to the service,
and says yes only if the service forwards it — drains the library's 32-slot delivery queue (the
records were already taken at validation), stores what the service asks in batches of at most
:data:`STORE_BATCH` per transaction (one transaction per record would not keep up with a
burst), and publishes the service's announcements in order.
"""

from __future__ import annotations

import hashlib

import trio

from fabnode.node.service import effects as fx
from fabnode.node.service import events as ev


TOPIC = "/fabnode/records/1"
STORE_BATCH = 200
STORE_QUEUE = 10_000


class GossipRuntime:
    def __init__(self, feed, view, log, now_ms, pacer=None) -> None:
        """``pacer``: the node's shared upload cap (node/runtime/pacing.py); announcements go at
        the records' priority, counted once per mesh peer they are sent to."""
        from .pacing import LinkPacer

        self.feed, self.view, self.log, self.now_ms = feed, view, log, now_ms
        self.pacer = pacer or LinkPacer(0)
        self.host = self.pubsub = self.gossipsub = None
        self._to_store_send, self._to_store = trio.open_memory_channel(STORE_QUEUE)
        self._publish_send, self._publish = trio.open_memory_channel(float("inf"))  # paced by the service

    def make_services(self, host, rate: int):
        from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
        from libp2p.pubsub.pubsub import Pubsub

        self.host = host
        self.gossipsub = GossipSub(
            protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11, PROTOCOL_ID], degree=4, degree_low=2, degree_high=8,
            heartbeat_interval=1, eclipse_protection_enabled=False, spam_protection_enabled=True,
            max_messages_per_topic_per_second=float(rate * 2),
        )
        # message ids are the record's hash: one record announced by two nodes travels once
        self.pubsub = Pubsub(host, self.gossipsub, msg_id_constructor=lambda m: hashlib.sha256(m.data).digest())
        return self.pubsub, self.gossipsub

    async def subscribe(self):
        await self.pubsub.wait_until_ready()
        self.pubsub.set_topic_validator(TOPIC, self._validate, is_async_validator=False)
        return await self.pubsub.subscribe(TOPIC)

    def mesh_peers(self) -> int:
        return len(self.gossipsub.mesh.get(TOPIC, ())) if self.gossipsub else 0

    def _validate(self, forwarder, msg) -> bool:
        """Topic validator: the service's answer, before the message is delivered or forwarded."""
        from libp2p.peer.id import ID

        try:
            origin = str(ID(msg.from_id))  # the service shows it as its lab
        except Exception:
            origin = "?"
        done = self.feed(ev.GossipReceived(str(forwarder), bytes(msg.data), origin))
        return any(isinstance(e, fx.Forward) for e in done)

    # ------------------------------------------------------------------ effects

    def store(self, effect: fx.StoreRecords) -> None:
        try:
            self._to_store_send.send_nowait(effect)
        except trio.WouldBlock:  # ten thousand wait already: the next sync brings this record
            self.feed(ev.RecordsStored(effect.ticket))  # the service forgets the ticket

    def publish(self, data: bytes) -> None:
        self._publish_send.send_nowait(data)

    # ------------------------------------------------------------------ tasks

    async def drain_deliveries(self, subscription) -> None:
        """The library's delivery queue holds 32: empty it at once (the validator took the records)."""
        while True:
            await subscription.get()

    async def publisher(self) -> None:
        from .pacing import RECORDS

        async for data in self._publish:
            await self.pacer.acquire(RECORDS, len(data) * max(1, self.mesh_peers()), "gossip")
            await self.pubsub.publish(TOPIC, data)

    async def storer(self) -> None:
        while True:
            batch = [await self._to_store.receive()]
            while len(batch) < STORE_BATCH:
                try:
                    batch.append(self._to_store.receive_nowait())
                except trio.WouldBlock:
                    break
            now = self.now_ms()
            with self.view.store.write_transaction():
                results = [(e.ticket, self.view.store_records_in_transaction(e.blocks, e.peer, now, e.records)) for e in batch]
            for ticket, (new, over, reason) in results:
                self.feed(ev.RecordsStored(ticket, new, over, reason))
