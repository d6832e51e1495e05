"""`fabnode status` and `fabnode peers`: what the database knows, plus what a running daemon says."""

from __future__ import annotations

import time

from fabnode.node.runtime.control import ask_daemon, read_state
from fabnode.node.home import Home


def _stores(home: Home):
    stores = home.open_stores()
    return stores.records, stores.peers


def records_digest(records) -> str:
    """SHA-256 over the sorted ids of every record: two nodes holding the same records show the
    same digest (compare them to see whether two labs are in sync)."""
    import hashlib

    h = hashlib.sha256()
    for digest in records.record_digests():
        h.update(digest)
    return h.hexdigest()[:32]


def status(home: Home) -> dict:
    """Identity, whether the daemon runs, its addresses, peers, transfers, and the outbox."""
    records, peers = _stores(home)
    ident = home.identity()
    info = {"name": ident.name, "did": ident.did, "peer_id": ident.peer_id, "running": False,
            "records": records.count(), "records_digest": records_digest(records),
            "outbox": records.outbox_size(), "known_peers": len(peers.all())}
    live = ask_daemon(home.path, "status", timeout=5) if read_state(home.path) else None
    if live is not None:
        info.update(running=True, pid=live["pid"], uptime_s=live["uptime_s"], addrs=live["addrs"],
                    connected=len(live["connected"]), peers=live["connected"], mesh_peers=live["mesh_peers"],
                    fetching=live["fetching"], serving=live["serving"], mdns=live["mdns"], http=live["http"],
                    last_syncs=live["last_syncs"], seeding=live["seeding"],
                    waiting=live.get("waiting", {}), sent=live.get("sent", {}), bitswap=live.get("bitswap", {}),
                    nat=live.get("nat"))
    return info


def peers(home: Home) -> list[dict]:
    """Every peer: the remembered ones (with backoff state) and whoever is connected now."""
    _, store = _stores(home)
    live = ask_daemon(home.path, "peers", timeout=5) if read_state(home.path) else None
    connected: dict[str, str] = live["connected"] if live else {}
    cut_off: dict[str, dict] = live.get("cut_off", {}) if live else {}
    now = time.time_ns() // 1_000_000
    rows = []
    for row in store.all():
        rows.append({"peer_id": row.peer_id, "source": row.source, "addrs": row.addrs,
                     "connected": row.peer_id in connected, "address": connected.get(row.peer_id, ""),
                     "last_connected_ms": row.last_connected_ms, "failures": row.failures,
                     "next_dial_in_s": max(0, (row.next_dial_ms - now) // 1000),
                     "cut_off": cut_off.get(row.peer_id)})
    known = {r["peer_id"] for r in rows}
    for peer_id, addr in connected.items():
        if peer_id not in known:  # connected, but not (yet) known to speak fabnode
            rows.append({"peer_id": peer_id, "source": "inbound", "addrs": [], "connected": True, "address": addr,
                         "last_connected_ms": now, "failures": 0, "next_dial_in_s": 0, "cut_off": cut_off.get(peer_id)})
    known = {r["peer_id"] for r in rows}
    for peer_id, offence in cut_off.items():
        if peer_id not in known:  # a stranger that broke a rule: shown while it is kept away
            rows.append({"peer_id": peer_id, "source": "inbound", "addrs": [], "connected": False, "address": "",
                         "last_connected_ms": 0, "failures": 0, "next_dial_in_s": 0, "cut_off": offence})
    return rows
