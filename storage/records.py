"""The record index: signed records and the tables that make them quick to query.

Records arrive in any order (a version before its parent, an attestation before the version it
is about, a later version before its design's first one). Nothing here assumes an order: every
record is stored and indexed on its own, and what depends on several records (which versions
are canonical, a design's heads, adaptations) is computed when asked, from indexed rows, so it is
right as soon as the last piece arrives. :meth:`RecordStore.ingest` must be given records that
:func:`protocol.records.verify_record` accepted (or that :func:`make_record` made).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator

from typing import TYPE_CHECKING, NamedTuple

from fabnode.storage import making, search
from fabnode.storage.keys import KEY_TYPES, KeyIndex


if TYPE_CHECKING:
    from fabnode.protocol.records import Record
    from fabnode.protocol.retractions import TakeBack


class VersionRow(NamedTuple):
    cid: bytes
    design: bytes
    is_first: bool
    author: str
    ts: int
    bundle: bytes
    title: str
    label: str
    message: str
    license: str
    parents: tuple[bytes, ...]
    language: str | None = None
    """The declared documentation language (BCP 47), None when undeclared."""
    translation_of: bytes | None = None
    """For a translation: the version (of the same design) it translates."""

    @property
    def is_translation(self) -> bool:
        return self.translation_of is not None


_VERSION_COLUMNS = "cid, design, is_first, author, ts, bundle, title, label, message, license, language, translation_of"


class DesignRow(NamedTuple):
    design: bytes
    title: str
    author: str | None
    maintainers: tuple[str, ...] | None
    """None while the design's first version has not arrived."""
    license: str
    created_ts: int | None
    updated_ts: int
    versions: int


class AttestationRow(NamedTuple):
    cid: bytes
    subject: bytes
    author: str
    predicate: str
    result: str
    lab: str
    ts: int


class VouchRow(NamedTuple):
    cid: bytes
    author: str
    subject: str
    trust: str
    ts: int


class RecordStore:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.keys = KeyIndex(conn)
        """The chains of keys (issue 17): their records, refusals and resolved Identities."""
        self._settling_deferred = 0
        self._settle_due: int | None = None

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Ingest many records, settling the chains of keys once at the end instead of after
        each key record (resolving is O(key records); a sync batch may bring thousands)."""
        self._settling_deferred += 1
        try:
            yield
        finally:
            self._settling_deferred -= 1
        if not self._settling_deferred and self._settle_due is not None:
            due, self._settle_due = self._settle_due, None
            self.keys.settle(self._drop, due)

    # ------------------------------------------------------------ writing

    def has(self, cid: bytes) -> bool:
        return self._conn.execute("SELECT 1 FROM records WHERE cid = ?", (cid,)).fetchone() is not None

    def ingest(self, record: "Record", *, received_ms: int, outbox: bool = False, manifest: str = "") -> bool:
        """Store and index one verified record; returns False if it was already here.

        Call inside the caller's write transaction, so a batch is all-or-nothing. A record its
        author's chain of keys refuses raises :class:`protocol.keys.ChainRefused` (one line) and
        is not stored (its id is kept in ``key_refused``); one refused before returns False.
        """
        if self._conn.execute("SELECT 1 FROM records WHERE cid = ? UNION ALL SELECT 1 FROM key_refused WHERE cid = ?",
                              (record.cid, record.cid)).fetchone() is not None:
            return False
        chains_changed = self.keys.admit(record, received_ms)
        body = record.body
        design = subject = None
        if record.type == "version":
            design = body["design"].cid if "design" in body else record.cid
        elif record.type in ("attestation", "retraction"):
            subject = body["subject"].cid
            row = self._conn.execute("SELECT design FROM versions WHERE cid = ?", (subject,)).fetchone()
            design = row[0] if row else None
        elif record.type == "withdrawal":
            subject = body["subject"].cid
            row = self._conn.execute("SELECT design FROM records WHERE cid = ? AND type = 'attestation'",
                                     (subject,)).fetchone()
            design = row[0] if row else None
        self._conn.execute(
            "INSERT INTO records (cid, type, author, ts, design, subject, data, received_ms, outbox)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.cid, record.type, record.author, record.ts, design, subject, record.raw, received_ms, int(outbox)),
        )
        if record.type == "version":
            self._index_version(record, design, manifest)
        elif record.type == "attestation":
            self._conn.execute(
                "INSERT INTO attestations (cid, subject, author, predicate, result, lab, ts) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (record.cid, subject, record.author, body["predicate"], body["result"], body.get("lab", ""), record.ts),
            )
            if design is not None:  # withdrawals that arrived before this attestation learn their design
                self._conn.execute("UPDATE records SET design = ? WHERE type = 'withdrawal' AND subject = ?",
                                   (design, record.cid))
        elif record.type in ("retraction", "withdrawal"):
            self._conn.execute("INSERT INTO takebacks (cid, kind, subject, author, ts, reason) VALUES (?, ?, ?, ?, ?, ?)",
                               (record.cid, record.type, subject, record.author, record.ts, body["reason"]))
        elif record.type == "vouch":
            self._conn.execute(
                "INSERT INTO vouches (cid, author, subject, trust, ts) VALUES (?, ?, ?, ?, ?)",
                (record.cid, record.author, body["subject"], body["trust"], record.ts),
            )
        elif record.type == "lab":
            self._index_lab(record)
        elif record.type == "request":
            making.index_request(self._conn, record)
        elif record.type == "offer":
            making.index_offer(self._conn, record)
        if record.type in KEY_TYPES or record.type == "lab":
            chains_changed = self.keys.add(record) or chains_changed
        if chains_changed:
            if self._settling_deferred:
                self._settle_due = max(self._settle_due or 0, received_ms)
            else:
                self.keys.settle(self._drop, received_ms)
        return True

    def _index_lab(self, record: Record) -> None:
        """The newest lab record by its author names the lab; every tie counts (newest per lab)."""
        self._conn.execute(
            "INSERT INTO labs (author, cid, ts, name) VALUES (?, ?, ?, ?) ON CONFLICT (author) DO UPDATE SET"
            " cid = excluded.cid, ts = excluded.ts, name = excluded.name"
            " WHERE excluded.ts > labs.ts OR (excluded.ts = labs.ts AND excluded.cid > labs.cid)",
            (record.author, record.cid, record.ts, record.body["name"]))
        self._conn.executemany(
            "INSERT INTO lab_nodes (peer_id, author, ts) VALUES (?, ?, ?) ON CONFLICT (peer_id, author) DO UPDATE"
            " SET ts = max(ts, excluded.ts)",
            [(node["peer"], record.author, record.ts) for node in record.body["nodes"]])
        from fabnode.storage.labs import index_profile

        index_profile(self._conn, record)
        making.index_lab_materials(self._conn, record.author)

    def _rebuild_lab(self, author: str) -> None:
        """Index an author's lab records again (after one was evicted)."""
        from fabnode.protocol.records import verify_record

        self._conn.execute("DELETE FROM labs WHERE author = ?", (author,))
        self._conn.execute("DELETE FROM lab_nodes WHERE author = ?", (author,))
        from fabnode.storage.labs import drop_profile

        self._conn.execute("DELETE FROM lab_materials WHERE author = ?", (author,))

        drop_profile(self._conn, author)
        rows = self._conn.execute("SELECT data FROM records WHERE type = 'lab' AND author = ?", (author,)).fetchall()
        for (data,) in rows:
            self._index_lab(verify_record(data, now_ms=1 << 62))

    # ------------------------------------------------------------ names (protocol/labs.py)

    def lab(self, author: str) -> tuple[str, int, bytes] | None:
        """(declared name, ts, record id) of the newest lab record by ``author``."""
        row = self._conn.execute("SELECT name, ts, cid FROM labs WHERE author = ?", (author,)).fetchone()
        return tuple(row) if row else None

    def lab_records(self, author: str) -> list[bytes]:
        """The raw blocks of every lab record by ``author`` held here, oldest first (ties: smallest
        record id): issue 17's committed recovery is the earliest one that carries it."""
        return [bytes(r[0]) for r in self._conn.execute(
            "SELECT data FROM records WHERE type = 'lab' AND author = ? ORDER BY ts, cid", (author,))]

    def labs(self) -> list[tuple[str, str, int]]:
        """(author, declared name, ts) of every lab that declared a name, by name."""
        return [tuple(r) for r in self._conn.execute("SELECT author, name, ts FROM labs ORDER BY name, author")]

    def lab_of_peer(self, peer_id: str) -> str | None:
        """The lab (did:key) whose newest lab record tying this node is the newest of all."""
        row = self._conn.execute("SELECT author FROM lab_nodes WHERE peer_id = ? ORDER BY ts DESC, author LIMIT 1",
                                 (peer_id,)).fetchone()
        return row[0] if row else None

    def nodes_of(self, author: str) -> list[str]:
        """Peer IDs tied to lab ``author`` (by any of its lab records), sorted."""
        return [r[0] for r in self._conn.execute("SELECT peer_id FROM lab_nodes WHERE author = ? ORDER BY peer_id",
                                                 (author,))]

    def local_name(self, key: str) -> str | None:
        row = self._conn.execute("SELECT name FROM local_names WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def local_names(self) -> list[tuple[str, str, int]]:
        """(key, name, set_ms) of every local name, by name."""
        return [tuple(r) for r in self._conn.execute("SELECT key, name, set_ms FROM local_names ORDER BY name, key")]

    def set_local_name(self, key: str, name: str, now_ms: int) -> None:
        self._conn.execute("INSERT INTO local_names (key, name, set_ms) VALUES (?, ?, ?) ON CONFLICT (key)"
                           " DO UPDATE SET name = excluded.name, set_ms = excluded.set_ms", (key, name, now_ms))

    def clear_local_name(self, key: str) -> bool:
        return self._conn.execute("DELETE FROM local_names WHERE key = ?", (key,)).rowcount == 1

    def _index_version(self, record: Record, design: bytes, manifest: str) -> None:
        body = record.body
        is_first = "design" not in body
        translation_of = body["translation_of"].cid if "translation_of" in body else None
        self._conn.execute(
            "INSERT INTO versions (cid, design, is_first, author, ts, bundle, title, label, message, license,"
            " language, translation_of) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.cid, design, int(is_first), record.author, record.ts, body["bundle"].cid, body["title"],
             body.get("label", ""), body["message"], body["license"], body.get("language"), translation_of),
        )
        self._conn.executemany(
            "INSERT OR IGNORE INTO version_parents (child, parent) VALUES (?, ?)",
            [(record.cid, p.cid) for p in body["parents"]],
        )
        # attestations that arrived before this version learn their design now
        # attestations and retractions that arrived before this version learn their design now,
        # and so do withdrawals of those attestations (a design's export carries them all)
        self._conn.execute("UPDATE records SET design = ? WHERE type IN ('attestation', 'retraction') AND subject = ?",
                           (design, record.cid))
        self._conn.execute("UPDATE records SET design = ? WHERE type = 'withdrawal' AND subject IN"
                           " (SELECT cid FROM attestations WHERE subject = ?)", (design, record.cid))
        row = self._conn.execute("SELECT title, author, maintainers, created_ts, updated_ts, versions, manifest, license"
                                 " FROM designs WHERE design = ?", (design,)).fetchone()
        if row is None:
            self._conn.execute(
                "INSERT INTO designs (design, title, author, maintainers, license, created_ts, updated_ts, versions, manifest)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?)",
                (design, body["title"], record.author if is_first else None,
                 json.dumps(body["maintainers"]) if is_first else None, body["license"],
                 record.ts if is_first else None, record.ts, manifest),
            )
        else:
            title, author, maintainers, created_ts, updated_ts, versions, old_manifest, license_ = row
            newer = record.ts >= updated_ts and translation_of is None  # a translation's title is not the design's
            if is_first:
                author, maintainers, created_ts = record.author, json.dumps(body["maintainers"]), record.ts
            self._conn.execute(
                "UPDATE designs SET title = ?, author = ?, maintainers = ?, license = ?, created_ts = ?, updated_ts = ?,"
                " versions = ?, manifest = ? WHERE design = ?",
                (body["title"] if newer else title, author, maintainers, body["license"] if newer else license_,
                 created_ts, max(updated_ts, record.ts), versions + 1, manifest or old_manifest, design),
            )
        if manifest:  # the first manifest known for a version stays (a rebuild passes the design's)
            self._conn.execute("INSERT OR IGNORE INTO version_manifests (cid, manifest) VALUES (?, ?)",
                               (record.cid, manifest))
        search.reindex(self._conn, design)

    # ------------------------------------------------------------ reading

    def raw(self, cid: bytes) -> bytes | None:
        row = self._conn.execute("SELECT data FROM records WHERE cid = ?", (cid,)).fetchone()
        return row[0] if row else None


    def outbox(self, limit: int = 100) -> list[tuple[bytes, bytes]]:
        """Records made here that still wait to be announced, oldest first: (cid, data)."""
        return self._conn.execute("SELECT cid, data FROM records WHERE outbox = 1 ORDER BY received_ms, cid LIMIT ?",
                                  (limit,)).fetchall()

    def outbox_cids(self) -> set[bytes]:
        return {row[0] for row in self._conn.execute("SELECT cid FROM records WHERE outbox = 1")}

    def outbox_size(self) -> int:
        return self._conn.execute("SELECT count(*) FROM records WHERE outbox = 1").fetchone()[0]

    def announced(self, cids: Iterable[bytes]) -> None:
        self._conn.executemany("UPDATE records SET outbox = 0 WHERE cid = ?", [(c,) for c in cids])

    def count(self) -> int:
        return self._conn.execute("SELECT count(*) FROM records").fetchone()[0]

    def iter_raw(self) -> Iterable[tuple[bytes, bytes, int]]:
        """(cid, data, received_ms) of every record, for fsck."""
        yield from self._conn.execute("SELECT cid, data, received_ms FROM records ORDER BY rowid")

    def version(self, cid: bytes) -> VersionRow | None:
        row = self._conn.execute(f"SELECT {_VERSION_COLUMNS}"
                                 " FROM versions WHERE cid = ?", (cid,)).fetchone()
        return self._version_row(row) if row else None

    def _version_row(self, row) -> VersionRow:
        parents = tuple(r[0] for r in self._conn.execute(
            "SELECT parent FROM version_parents WHERE child = ? ORDER BY parent", (row[0],)))
        return VersionRow(row[0], row[1], bool(row[2]), row[3], row[4], row[5], row[6], row[7], row[8], row[9], parents,
                          row[10], row[11])

    def versions_of(self, design: bytes) -> list[VersionRow]:
        rows = self._conn.execute(f"SELECT {_VERSION_COLUMNS}"
                                  " FROM versions WHERE design = ? ORDER BY ts, cid", (design,)).fetchall()
        return [self._version_row(r) for r in rows]

    def children_of(self, versions: Iterable[bytes]) -> list[tuple[bytes, bytes]]:
        """(parent, child) for every known child of the given versions."""
        out = []
        for v in versions:
            out.extend((v, r[0]) for r in self._conn.execute("SELECT child FROM version_parents WHERE parent = ?", (v,)))
        return out

    def design(self, design: bytes) -> DesignRow | None:
        row = self._conn.execute("SELECT design, title, author, maintainers, license, created_ts, updated_ts, versions"
                                 " FROM designs WHERE design = ?", (design,)).fetchone()
        return self._design_row(row) if row else None

    @staticmethod
    def _design_row(row) -> DesignRow:
        maintainers = tuple(json.loads(row[3])) if row[3] is not None else None
        return DesignRow(row[0], row[1], row[2], maintainers, row[4], row[5], row[6], row[7])

    def designs(self, limit: int = 100, offset: int = 0) -> list[DesignRow]:
        rows = self._conn.execute("SELECT design, title, author, maintainers, license, created_ts, updated_ts, versions"
                                  " FROM designs ORDER BY updated_ts DESC, design LIMIT ? OFFSET ?", (limit, offset))
        return [self._design_row(r) for r in rows]


    def search(self, text: str, limit: int = 50) -> list[DesignRow]:
        """Designs whose text (any version's, any language) matches ``text``: whole words first,
        then substrings (storage/search.py)."""
        rows = [self.design(d) for d in search.find(self._conn, text, limit)]
        return [r for r in rows if r is not None]

    def attestations_on(self, versions: Iterable[bytes]) -> list[AttestationRow]:
        out = []
        for v in versions:
            rows = self._conn.execute("SELECT cid, subject, author, predicate, result, lab, ts FROM attestations"
                                      " WHERE subject = ? ORDER BY ts", (v,))
            out.extend(AttestationRow(*r) for r in rows)
        return out

    def takebacks_of(self, subjects: Iterable[bytes], kind: str) -> dict[bytes, list[TakeBack]]:
        """subject -> its retractions (``kind`` "retraction") or withdrawals ("withdrawal"), every
        one whoever signed it (protocol/retractions.py judges which count), oldest first."""
        from fabnode.protocol.retractions import TakeBack

        wanted = list(dict.fromkeys(subjects))
        out: dict[bytes, list[TakeBack]] = {}
        for start in range(0, len(wanted), 500):  # under SQLite's limit on bound parameters
            chunk = wanted[start:start + 500]
            for subject, cid, author, ts, reason in self._conn.execute(
                    f"SELECT subject, cid, author, ts, reason FROM takebacks WHERE kind = ? AND subject IN"
                    f" ({','.join('?' * len(chunk))}) ORDER BY ts, cid", (kind, *chunk)):
                out.setdefault(subject, []).append(TakeBack(cid, author, ts, reason))
        return out

    def takeback(self, cid: bytes) -> tuple[str, bytes] | None:
        """(kind, subject) of the retraction or withdrawal ``cid``, or None."""
        row = self._conn.execute("SELECT kind, subject FROM takebacks WHERE cid = ?", (cid,)).fetchone()
        return tuple(row) if row else None

    def attestation(self, cid: bytes) -> AttestationRow | None:
        row = self._conn.execute("SELECT cid, subject, author, predicate, result, lab, ts FROM attestations"
                                 " WHERE cid = ?", (cid,)).fetchone()
        return AttestationRow(*row) if row else None

    def vouches(self) -> list[VouchRow]:
        return [VouchRow(*r) for r in self._conn.execute("SELECT cid, author, subject, trust, ts FROM vouches")]

    def revocations_learned(self) -> dict[bytes, int]:
        """revocation CID -> when this node got it: records by the revoked key received before
        that are "signed by a key later revoked", after it "doubtful" (issue 17)."""
        return dict(self._conn.execute("SELECT cid, received_ms FROM records WHERE type = 'revocation'"))

    def received_at(self, cids: Iterable[bytes]) -> dict[bytes, int]:
        """cid -> when this node got it, for the given records held here."""
        wanted = list(dict.fromkeys(cids))
        out: dict[bytes, int] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            out.update(self._conn.execute(f"SELECT cid, received_ms FROM records WHERE cid IN ({','.join('?' * len(chunk))})",
                                          chunk))
        return out

    # ------------------------------------------------------------ seeding policy

    def follow(self, design: bytes, now_ms: int) -> bool:
        return self._conn.execute("INSERT OR IGNORE INTO follows (design, since_ms) VALUES (?, ?)",
                                  (design, now_ms)).rowcount == 1

    def unfollow(self, design: bytes) -> bool:
        return self._conn.execute("DELETE FROM follows WHERE design = ?", (design,)).rowcount == 1

    def follows(self) -> list[bytes]:
        return [row[0] for row in self._conn.execute("SELECT design FROM follows ORDER BY since_ms, design")]

    def seed_candidates(self, trusted_authors: Iterable[str]) -> list[tuple[bytes, bytes, bytes]]:
        """(bundle, design, version) of every version in a followed design or by a trusted
        author, newest first: what the seeding policy would like to hold."""
        trusted = list(trusted_authors)
        marks = ",".join("?" * len(trusted)) or "NULL"
        rows = self._conn.execute(
            f"SELECT bundle, design, cid FROM versions WHERE design IN (SELECT design FROM follows)"
            f" OR author IN ({marks}) ORDER BY ts DESC, cid", trusted)
        return [tuple(row) for row in rows]

    def sync_items(self) -> list[tuple[int, bytes]]:
        """(ts, id digest) of every record, and of every tombstone: what set reconciliation works
        over (a record evicted over the strangers' quota, or refused by its chain of keys, counts
        as held, so no peer resends it)."""
        return [(ts, cid[4:]) for ts, cid in self._conn.execute("SELECT ts, cid FROM records UNION ALL "
                                                                "SELECT ts, cid FROM evicted UNION ALL "
                                                                "SELECT ts, cid FROM key_refused")]

    def change_marker(self) -> tuple[int, int, int, int]:
        """Changes whenever a record is added, evicted or refused by its chain: for caching derived sets."""
        return tuple(self._conn.execute("SELECT count(*), coalesce(max(rowid), 0), (SELECT count(*) FROM evicted),"
                                        " (SELECT count(*) FROM key_refused) FROM records").fetchone())

    # ------------------------------------------------------------ strangers (protocol/quota.py)

    def received_since(self, author: str, since_ms: int) -> int:
        return self._conn.execute("SELECT count(*) FROM records WHERE author = ? AND received_ms >= ?",
                                  (author, since_ms)).fetchone()[0]

    # ------------------------------------------------------------ staging an import

    def clear_staged(self) -> None:
        """Empty the import's staging table (a temporary table: this connection only)."""
        self._conn.execute("CREATE TEMP TABLE IF NOT EXISTS import_records (cid BLOB PRIMARY KEY, data BLOB NOT NULL)")
        self._conn.execute("DELETE FROM import_records")

    def stage(self, cid: bytes, data: bytes) -> None:
        """Keep a record read from a file until the whole file is checked (:meth:`clear_staged` first)."""
        self._conn.execute("INSERT INTO import_records (cid, data) VALUES (?, ?)", (cid, data))

    def staged(self) -> list[tuple[bytes, bytes]]:
        """(cid, data) of every staged record."""
        return self._conn.execute("SELECT cid, data FROM import_records").fetchall()

    def records_of(self, design: bytes | None = None):
        """(cid, data) of every record, or of one design's versions and their attestations."""
        return records_query(self._conn, design)

    # ------------------------------------------------------------ the strangers' quota

    def set_quota_trusted(self, authors: Iterable[str]) -> None:
        """Remember the keys the strangers' quota treats as trusted (a temporary table: this
        connection only), for :meth:`trusted_vouch_marker`."""
        self._conn.execute("CREATE TEMP TABLE IF NOT EXISTS quota_trusted (author TEXT PRIMARY KEY)")
        self._conn.execute("DELETE FROM quota_trusted")
        self._conn.executemany("INSERT INTO quota_trusted VALUES (?)", [(a,) for a in authors])

    def trusted_vouch_marker(self) -> tuple[int, int]:
        """(how many, newest rowid) of the vouches by the keys of :meth:`set_quota_trusted`: it
        changes exactly when one of them adds a vouch (a stranger's vouch carries no weight)."""
        return tuple(self._conn.execute("SELECT count(*), coalesce(max(v.rowid), 0) FROM vouches v "
                                        "JOIN quota_trusted t ON v.author = t.author").fetchone())

    def _mark_trusted(self, trusted: Iterable[str]) -> None:
        self._conn.execute("CREATE TEMP TABLE IF NOT EXISTS trusted_now (author TEXT PRIMARY KEY)")
        self._conn.execute("DELETE FROM trusted_now")
        self._conn.executemany("INSERT OR IGNORE INTO trusted_now VALUES (?)", [(a,) for a in trusted])

    def strangers(self, trusted: Iterable[str]) -> tuple[int, list[tuple[bytes, int]]]:
        """(total bytes, [(id, size)] oldest received first) of records by authors not in
        ``trusted`` that are not waiting in our outbox."""
        self._mark_trusted(trusted)
        rows = self._conn.execute(
            "SELECT cid, length(data) FROM records WHERE outbox = 0 AND author NOT IN (SELECT author FROM trusted_now)"
            " ORDER BY received_ms, rowid").fetchall()
        return sum(size for _, size in rows), [(cid, size) for cid, size in rows]

    def is_evicted(self, cid: bytes) -> bool:
        return self._conn.execute("SELECT 1 FROM evicted WHERE cid = ?", (cid,)).fetchone() is not None

    def forget_tombstones(self, authors: Iterable[str]) -> int:
        """Authors now trusted: their evicted records may come back with the next sync."""
        self._mark_trusted(authors)
        return self._conn.execute("DELETE FROM evicted WHERE author IN (SELECT author FROM trusted_now)").rowcount

    def evict(self, cids: list[bytes], now_ms: int) -> None:
        """Remove records (and everything indexed from them), leaving a tombstone for each.
        Call inside the caller's write transaction."""
        keys_changed = False
        for cid in cids:
            row = self._drop(cid)
            if row is None:
                continue
            author, ts, rtype, _design = row
            keys_changed = keys_changed or rtype in KEY_TYPES or rtype == "lab"
            self._conn.execute("INSERT OR IGNORE INTO evicted (cid, author, ts, evicted_ms) VALUES (?, ?, ?, ?)",
                               (cid, author, ts, now_ms))
        if keys_changed:
            self.keys.settle(self._drop, now_ms)

    def _drop(self, cid: bytes) -> tuple | None:
        """Remove one record and everything indexed from it; (author, ts, type, design) or None."""
        row = self._conn.execute("SELECT author, ts, type, design FROM records WHERE cid = ?", (cid,)).fetchone()
        if row is not None:
            author, ts, rtype, design = row
            self._conn.execute("DELETE FROM records WHERE cid = ?", (cid,))
            if rtype == "attestation":
                self._conn.execute("DELETE FROM attestations WHERE cid = ?", (cid,))
            elif rtype == "vouch":
                self._conn.execute("DELETE FROM vouches WHERE cid = ?", (cid,))
            elif rtype in ("retraction", "withdrawal"):
                self._conn.execute("DELETE FROM takebacks WHERE cid = ?", (cid,))
            elif rtype == "version":
                making.forget_version_requirements(self._conn, [cid])
                self._rebuild_design(design)
            elif rtype in ("request", "offer"):
                making.forget_request_records(self._conn, cid)
            elif rtype == "lab":
                self._rebuild_lab(author)
            if rtype in KEY_TYPES or rtype == "lab":
                self.keys.forget(cid)
        return row

    def _rebuild_design(self, design: bytes) -> None:
        """Index a design again from the version records still here (after one was evicted)."""
        from fabnode.protocol.records import verify_record

        self._conn.execute("DELETE FROM version_parents WHERE child IN (SELECT cid FROM versions WHERE design = ?)",
                           (design,))
        manifest_row = self._conn.execute("SELECT manifest FROM designs WHERE design = ?", (design,)).fetchone()
        self._conn.execute("DELETE FROM versions WHERE design = ?", (design,))
        self._conn.execute("DELETE FROM designs WHERE design = ?", (design,))
        search.drop(self._conn, design)
        rows = self._conn.execute("SELECT data FROM records WHERE type = 'version' AND design = ? ORDER BY ts, cid",
                                  (design,)).fetchall()
        for (data,) in rows:  # already verified once; ts in the future is no reason to drop them now
            self._index_version(verify_record(data, now_ms=1 << 62), design, manifest_row[0] if manifest_row else "")

    def record_digests(self) -> list[bytes]:
        """The sha2-256 digest of every record id, sorted (what a `have` file lists)."""
        return sorted(row[0][4:] for row in self._conn.execute("SELECT cid FROM records"))

    def bundles(self, design: bytes | None = None) -> list[bytes]:
        """Bundle CIDs named by versions (of one design, or all), oldest first, each once."""
        if design is None:
            rows = self._conn.execute("SELECT bundle FROM versions ORDER BY ts, cid")
        else:
            rows = self._conn.execute("SELECT bundle FROM versions WHERE design = ? ORDER BY ts, cid", (design,))
        return list(dict.fromkeys(r[0] for r in rows))

    def title_of_bundle(self, bundle: bytes) -> str | None:
        """The title of the newest version whose files are ``bundle`` (None: no version names it)."""
        row = self._conn.execute("SELECT title FROM versions WHERE bundle = ? ORDER BY ts DESC, cid LIMIT 1",
                                 (bundle,)).fetchone()
        return row[0] if row else None

    def recent_attestations(self, limit: int = 20) -> list[AttestationRow]:
        rows = self._conn.execute("SELECT cid, subject, author, predicate, result, lab, ts FROM attestations"
                                  " ORDER BY ts DESC, cid LIMIT ?", (limit,)).fetchall()
        return [AttestationRow(*r) for r in rows]

    def recent_attestations_split(self, trusted: Iterable[str], limit: int = 20
                                  ) -> tuple[list[AttestationRow], list[tuple[bytes, str, str, int, int, int]]]:
        """The newest attestations by ``trusted`` authors, and those by everyone else summed up per
        (subject, predicate, result) as (subject, predicate, result, count, distinct authors, newest ts),
        newest first: a flood of attestations from unknown keys cannot push out the trusted ones."""
        keys = json.dumps(sorted(set(trusted)))
        mine = self._conn.execute("SELECT cid, subject, author, predicate, result, lab, ts FROM attestations"
                                  " WHERE author IN (SELECT value FROM json_each(?))"
                                  " ORDER BY ts DESC, cid LIMIT ?", (keys, limit)).fetchall()
        others = self._conn.execute("SELECT subject, predicate, result, count(*), count(DISTINCT author), max(ts)"
                                    " FROM attestations WHERE author NOT IN (SELECT value FROM json_each(?))"
                                    " GROUP BY subject, predicate, result ORDER BY max(ts) DESC, subject LIMIT ?",
                                    (keys, limit)).fetchall()
        return [AttestationRow(*r) for r in mine], [tuple(r) for r in others]

    def recent_versions(self, limit: int = 50) -> list[VersionRow]:
        rows = self._conn.execute(f"SELECT {_VERSION_COLUMNS}"
                                  " FROM versions ORDER BY ts DESC, cid LIMIT ?", (limit,)).fetchall()
        return [self._version_row(r) for r in rows]

    def translations_of_design(self, design: bytes) -> list[VersionRow]:
        """The design's translations whose target is held and fits (a non-translation version of
        the same design), oldest first. One that points elsewhere, or at nothing held yet, is
        left out: it shows once its target arrives, if that target fits."""
        rows = self._conn.execute(
            f"SELECT {', '.join('t.' + c.strip() for c in _VERSION_COLUMNS.split(','))} FROM versions t"
            " JOIN versions o ON o.cid = t.translation_of"
            " WHERE t.design = ? AND o.design = t.design AND o.translation_of IS NULL ORDER BY t.ts, t.cid",
            (design,)).fetchall()
        return [self._version_row(r) for r in rows]

    def record_kind(self, cid: bytes) -> str | None:
        """The type of the record stored under ``cid``, or None."""
        row = self._conn.execute("SELECT type FROM records WHERE cid = ?", (cid,)).fetchone()
        return row[0] if row else None

    def adaptations_of(self, versions: Iterable[bytes]) -> list[VersionRow]:
        """First versions of other designs whose parents include one of ``versions``."""
        out = []
        for _parent, child in self.children_of(versions):
            row = self.version(child)
            if row is not None and row.is_first:
                out.append(row)
        return out


def records_query(conn: sqlite3.Connection, design: bytes | None = None):
    """(cid, data) of every record, or of one design's versions and their attestations."""
    if design is None:
        return conn.execute("SELECT cid, data FROM records ORDER BY ts, cid")
    return conn.execute("SELECT cid, data FROM records WHERE design = ? ORDER BY ts, cid", (design,))
