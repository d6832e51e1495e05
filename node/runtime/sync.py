"""Sync sessions' bytes over libp2p streams (the sessions themselves: node/service/sync.py).

:class:`SyncStreams` carries out the service's stream effects for ``/fabnode/sync/1.0.0``: it
opens the streams the service asks for, hands every inbound stream to it, reads frames (never
longer than the service's :meth:`NodeService.frame_limit` for that stream) and writes the
service's frames in order, one writer per stream. It decides nothing: a refused stream, a
finished session or a peer's offence arrive here as ResetStream / CloseStream effects.

:func:`sync_over_stream` runs one session directly over a stream, without a service: for tools
that play a single peer (tests/hostile_sync.py).
"""

from __future__ import annotations

import trio

from fabnode.node.service import events as ev
from fabnode.node.service.sync import MAX_SESSION_MS, SyncReport, SyncSession  # noqa: F401 (SyncReport re-exported)
from fabnode.protocol.errors import RemoteProtocolError
from fabnode.protocol.sync import PROTOCOL as SYNC, SyncProtocolError

from .wire import StreamEnded, read_frame, write_all
from .view import ItemCache  # noqa: F401 (re-exported for tools)

DIAL_TIMEOUT = 5


class SyncStreams:
    def __init__(self, host, feed, frame_limit) -> None:
        """``feed(event)``: hand an event to the service; ``frame_limit(stream)``: the service's
        limit for the next frame on a stream (0: the session is over)."""
        self.host, self.feed, self.frame_limit = host, feed, frame_limit
        self.nursery: trio.Nursery | None = None
        self._streams: dict[object, object] = {}
        self._writers: dict[object, trio.MemorySendChannel] = {}
        self._scopes: dict[object, tuple[trio.CancelScope, trio.CancelScope]] = {}  # reader's, writer's
        self._inbound = 0

    # ------------------------------------------------------------------ effects

    def open(self, stream_id, peer: str) -> None:
        self.nursery.start_soon(self._open, stream_id, peer)

    def send(self, stream_id, data: bytes) -> None:
        writer = self._writers.get(stream_id)
        if writer is not None:
            writer.send_nowait(data)

    def close(self, stream_id) -> None:
        writer = self._writers.pop(stream_id, None)
        if writer is not None:
            writer.send_nowait(None)  # the writer closes the stream after the frames before it

    def reset(self, stream_id) -> None:
        self._writers.pop(stream_id, None)
        for scope in self._scopes.pop(stream_id, ()):
            scope.cancel()
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            self.nursery.start_soon(_reset, stream)

    # ------------------------------------------------------------------ streams

    async def handle_inbound(self, stream) -> None:
        """The stream handler: the service accepts or resets; an accepted stream is read here."""
        self._inbound += 1
        stream_id = ("in", self._inbound)
        self._attach(stream_id, stream)
        self.feed(ev.InboundStream(stream_id, str(stream.muxed_conn.peer_id), SYNC))
        if stream_id in self._streams:
            await self._read(stream_id, stream)

    async def _open(self, stream_id, peer: str) -> None:
        from libp2p.peer.id import ID

        try:
            with trio.fail_after(DIAL_TIMEOUT):
                stream = await self.host.new_stream(ID.from_base58(peer), [SYNC])
        except Exception as exc:
            self.feed(ev.StreamFailed(stream_id, type(exc).__name__))
            return
        self._attach(stream_id, stream)
        self.feed(ev.StreamOpened(stream_id))
        if stream_id in self._streams:
            await self._read(stream_id, stream)

    def _attach(self, stream_id, stream) -> None:
        send, receive = trio.open_memory_channel(float("inf"))  # bounded by the session's own frames
        self._streams[stream_id] = stream
        self._writers[stream_id] = send
        self._scopes[stream_id] = (trio.CancelScope(), scope := trio.CancelScope())
        self.nursery.start_soon(self._write, stream_id, stream, receive, scope)

    async def _read(self, stream_id, stream) -> None:
        scopes = self._scopes.get(stream_id)
        if scopes is None:
            return
        with scopes[0]:
            while True:
                limit = self.frame_limit(stream_id)
                if not limit:
                    return
                try:
                    body = await read_frame(stream, limit)
                except StreamEnded as exc:
                    self._gone(stream_id, type(exc).__name__)
                    return
                except RemoteProtocolError as exc:  # over the frame limit: the peer's fault
                    self._gone(stream_id, str(exc), remote_fault=True)
                    return
                except Exception as exc:
                    self._gone(stream_id, type(exc).__name__)
                    return
                self.feed(ev.FrameReceived(stream_id, body))

    async def _write(self, stream_id, stream, frames, scope: trio.CancelScope) -> None:
        with scope:
            async for data in frames:
                try:
                    if data is None:
                        with trio.move_on_after(1):
                            await stream.close()
                        break
                    await write_all(stream, data)
                except Exception as exc:
                    self._gone(stream_id, type(exc).__name__)
                    return
        if not scope.cancelled_caught:
            self._scopes.pop(stream_id, None)
            self._streams.pop(stream_id, None)

    def _gone(self, stream_id, error: str, remote_fault: bool = False) -> None:
        if stream_id in self._streams:
            self.feed(ev.StreamFailed(stream_id, error, remote_fault))
            self.reset(stream_id)


async def _reset(stream) -> None:
    with trio.move_on_after(1):
        try:
            await stream.reset()
        except Exception:
            pass


async def sync_over_stream(stream, *, initiator: bool, peer: str, items: ItemCache, records, store, now_ms,
                           quota=None) -> SyncReport:
    """Run one session over ``stream`` without a service, storing what arrives (for tools).
    Raises SyncProtocolError if the peer breaks a rule."""
    from fabnode.node.local.commons import receive_records

    session = SyncSession(peer=peer, initiator=initiator, items=items.get(), raw=records.raw, now_ms=now_ms())
    with trio.fail_after(MAX_SESSION_MS / 1000):
        for frame in session.start():
            await write_all(stream, frame)
        while True:
            body = await read_frame(stream, session.frame_limit())
            step = session.receive(body, now_ms())
            if step.records:
                with store.write_transaction():
                    result = receive_records(records, [(None, b) for b in step.records], now=now_ms(),
                                             all_or_nothing=False, quota=quota, peer=peer, verified=step.verified)
                session.report.new += len(result.new)
            if step.error is not None:
                raise step.error
            for frame in step.frames:
                await write_all(stream, frame)
            if step.done:
                return session.report


__all__ = ["SyncStreams", "sync_over_stream", "ItemCache", "SyncReport", "SyncProtocolError"]
