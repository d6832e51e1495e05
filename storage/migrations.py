"""Ordered, recorded schema migrations (sqlite-utils ``Migrations``).

Each migration runs in one transaction together with its row in ``_sqlite_migrations``; names
are numbered so their order is their name's order. Never edit an applied migration: add one,
and raise ``storage.db.SCHEMA_VERSION`` with it.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("fabnode")


def migration_names() -> list[str]:
    """The name of every migration defined here, in the order they apply."""
    return [m.name for m in migrations._migrations]  # sqlite-utils keeps them in order; no public accessor


@migrations(name="001_blocks")
def blocks(db: Database) -> None:
    # Blocks are immutable and keyed by their binary CID; `size` lets fsck and `have` report
    # without reading blobs. Rowid table: large blobs do not belong in a WITHOUT ROWID b-tree.
    db.execute(
        """CREATE TABLE blocks (
               cid BLOB PRIMARY KEY NOT NULL,
               size INTEGER NOT NULL,
               data BLOB NOT NULL
           )"""
    )


@migrations(name="002_pins")
def pins(db: Database) -> None:
    # A pin is a root this node keeps on purpose: added, published, fetched, imported or seeded.
    db.execute(
        """CREATE TABLE pins (
               cid BLOB PRIMARY KEY NOT NULL,
               kind TEXT NOT NULL,          -- 'file' or 'directory'
               size INTEGER NOT NULL,       -- bytes of file content
               files INTEGER NOT NULL,      -- number of files in it
               source TEXT NOT NULL,        -- the name it was added under
               added_ms INTEGER NOT NULL
           )"""
    )


@migrations(name="003_records")
def records(db: Database) -> None:
    # Every valid record, as received (data = its exact block). The typed tables below are an
    # index over it, rebuilt from `data` if ever needed; `outbox` marks records made here that
    # still wait to be announced (the daemon publishes them, and clears the mark after a sync).
    db.executescript(
        """
        CREATE TABLE records (
            cid BLOB PRIMARY KEY NOT NULL,
            type TEXT NOT NULL,
            author TEXT NOT NULL,
            ts INTEGER NOT NULL,
            design BLOB,                 -- versions: their design; attestations: the subject's design if known
            subject BLOB,                -- attestations: the version attested
            data BLOB NOT NULL,
            received_ms INTEGER NOT NULL,
            outbox INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX records_type_ts ON records (type, ts);
        CREATE INDEX records_author_ts ON records (author, ts);
        CREATE INDEX records_design_ts ON records (design, ts);
        CREATE INDEX records_subject ON records (subject);

        CREATE TABLE versions (
            cid BLOB PRIMARY KEY NOT NULL,
            design BLOB NOT NULL,        -- for a design's first version, its own CID
            is_first INTEGER NOT NULL,
            author TEXT NOT NULL,
            ts INTEGER NOT NULL,
            bundle BLOB NOT NULL,
            title TEXT NOT NULL,
            label TEXT NOT NULL,
            message TEXT NOT NULL,
            license TEXT NOT NULL
        );
        CREATE INDEX versions_design_ts ON versions (design, ts);

        CREATE TABLE version_parents (
            child BLOB NOT NULL,
            parent BLOB NOT NULL,
            PRIMARY KEY (child, parent)
        ) WITHOUT ROWID;
        CREATE INDEX version_parents_parent ON version_parents (parent);

        CREATE TABLE designs (
            design BLOB PRIMARY KEY NOT NULL,
            title TEXT NOT NULL,
            author TEXT,                 -- NULL until the first version is known
            maintainers TEXT,            -- JSON list of did:keys; NULL until the first version is known
            license TEXT NOT NULL,
            created_ts INTEGER,
            updated_ts INTEGER NOT NULL,
            versions INTEGER NOT NULL,
            manifest TEXT NOT NULL DEFAULT ''   -- name, function, keywords from okh.toml, when the bundle was here
        );
        CREATE INDEX designs_updated ON designs (updated_ts);

        CREATE TABLE attestations (
            cid BLOB PRIMARY KEY NOT NULL,
            subject BLOB NOT NULL,
            author TEXT NOT NULL,
            predicate TEXT NOT NULL,
            result TEXT NOT NULL,
            lab TEXT NOT NULL,
            ts INTEGER NOT NULL
        );
        CREATE INDEX attestations_subject ON attestations (subject, ts);

        CREATE TABLE vouches (
            cid BLOB PRIMARY KEY NOT NULL,
            author TEXT NOT NULL,
            subject TEXT NOT NULL,
            trust TEXT NOT NULL,
            ts INTEGER NOT NULL
        );
        CREATE INDEX vouches_author ON vouches (author, subject, ts);

        CREATE VIRTUAL TABLE design_search USING fts5 (
            design UNINDEXED, title, manifest, messages,
            tokenize = 'unicode61 remove_diacritics 2'
        );
        """
    )


@migrations(name="004_peers")
def peers(db: Database) -> None:
    # Peers this node has met (bootstrap list, mDNS, inbound), kept across restarts so the daemon
    # redials them. `next_dial_ms` is the backoff: a peer that failed `failures` dials in a row is
    # not tried again before then. `addrs` is a JSON list of multiaddrs (without /p2p/).
    db.executescript(
        """
        CREATE TABLE peers (
            peer_id TEXT PRIMARY KEY NOT NULL,
            addrs TEXT NOT NULL,
            source TEXT NOT NULL,          -- bootstrap | mdns | inbound
            first_seen_ms INTEGER NOT NULL,
            last_connected_ms INTEGER NOT NULL DEFAULT 0,
            failures INTEGER NOT NULL DEFAULT 0,
            next_dial_ms INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX records_outbox ON records (outbox) WHERE outbox = 1;
        """
    )


@migrations(name="005_follows")
def follows(db: Database) -> None:
    # Designs this lab follows: the daemon fetches their bundles on its own (seeding policy).
    db.execute("CREATE TABLE follows (design BLOB PRIMARY KEY NOT NULL, since_ms INTEGER NOT NULL)")


@migrations(name="006_stranger_quota")
def stranger_quota(db: Database) -> None:
    # Quotas for strangers (protocol/quota.py): rates are counted by time received, and records
    # evicted over the storage quota leave a tombstone so that sync does not fetch them again.
    db.executescript(
        """
        CREATE INDEX records_author_received ON records (author, received_ms);
        CREATE INDEX records_received ON records (received_ms);
        CREATE TABLE evicted (
            cid BLOB PRIMARY KEY NOT NULL,
            author TEXT NOT NULL,
            ts INTEGER NOT NULL,
            evicted_ms INTEGER NOT NULL
        );
        CREATE INDEX evicted_author ON evicted (author);
        """
    )


@migrations(name="007_leases")
def leases(db: Database) -> None:
    # Disk use (issue 15). A lease protects the blocks under `root` from gc while an operation
    # that has not pinned them yet uses them (a fetch in progress, a `get` writing files out),
    # and for a while after a fetch was interrupted, so it resumes: gc keeps leases touched less
    # than storage.gc.LEASE_KEEP_MS ago. `pins.wanted_ms` is when a seeded bundle was last served
    # to a peer: the seeding budget drops the least recently wanted first.
    db.executescript(
        """
        CREATE TABLE leases (
            id INTEGER PRIMARY KEY,
            root BLOB NOT NULL,
            what TEXT NOT NULL,          -- 'fetch' or 'get'
            touched_ms INTEGER NOT NULL
        );
        CREATE INDEX leases_root ON leases (root);
        ALTER TABLE pins ADD COLUMN wanted_ms INTEGER NOT NULL DEFAULT 0;
        """
    )


@migrations(name="008_lab_names")
def lab_names(db: Database) -> None:
    # Labs by name (issue 15). `labs`: the newest `lab` record of each author key (by ts, then
    # cid). `lab_nodes`: every node a valid lab record tied to its author (the node signed it),
    # the newest tie per (peer, lab); a peer shows as the lab of its newest tie. `local_names`:
    # what this node's operator calls a key (did:key or peer ID); never sent to anyone.
    db.executescript(
        """
        CREATE TABLE labs (
            author TEXT PRIMARY KEY NOT NULL,
            cid BLOB NOT NULL,
            ts INTEGER NOT NULL,
            name TEXT NOT NULL
        );
        CREATE TABLE lab_nodes (
            peer_id TEXT NOT NULL,
            author TEXT NOT NULL,
            ts INTEGER NOT NULL,
            PRIMARY KEY (peer_id, author)
        );
        CREATE TABLE local_names (
            key TEXT PRIMARY KEY NOT NULL,
            name TEXT NOT NULL,
            set_ms INTEGER NOT NULL
        );
        """
    )


@migrations(name="009_translations")
def translations(db: Database) -> None:
    # Translations (issue 19): a version's declared documentation language (BCP 47, NULL when
    # undeclared) and, for a translation, the version of the same design it translates. Records
    # stored before this migration carry neither (older nodes refused both fields).
    db.executescript(
        """
        ALTER TABLE versions ADD COLUMN language TEXT;
        ALTER TABLE versions ADD COLUMN translation_of BLOB;
        CREATE INDEX versions_translation_of ON versions (translation_of) WHERE translation_of IS NOT NULL;
        """
    )


@migrations(name="010_search_scripts")
def search_scripts(db: Database) -> None:
    # Search across languages and scripts (issue 19; storage/search.py has the theory).
    # `version_manifests`: the okh.toml text (name, function, keywords) of each version whose
    # bundle was here when it was indexed, so a translation's manifest is searched beside the
    # original's instead of replacing it. `design_trigram`: the designs' folded text again, for
    # substring matches in scripts written without spaces. `search_rows`: each design's rowid in
    # both FTS5 tables, so a design's rows are replaced without scanning them. Both indexes are
    # rebuilt from the versions held, with folded text, so a home made before this migration
    # finds what a new one does.
    from fabnode.storage.search import reindex

    db.executescript(
        """
        CREATE TABLE version_manifests (
            cid BLOB PRIMARY KEY NOT NULL,
            manifest TEXT NOT NULL
        );
        CREATE TABLE search_rows (
            id INTEGER PRIMARY KEY,
            design BLOB UNIQUE NOT NULL
        );
        DELETE FROM design_search;
        CREATE VIRTUAL TABLE design_trigram USING fts5 (
            design UNINDEXED, text,
            tokenize = 'trigram'
        );
        """
    )
    conn = db.conn
    for (design,) in conn.execute("SELECT design FROM designs").fetchall():
        reindex(conn, design)


@migrations(name="011_lab_profiles")
def lab_profiles(db: Database) -> None:
    # Lab profiles (issue 18; storage/labs.py has the theory). `lab_profiles`: the newest lab
    # record of each author as a profile (JSON of protocol.labs.LabProfile), with its rounded
    # coordinates as columns so "near" is a range scan, and its name folded (`name_key`) so
    # names several keys declare are found by the index. `lab_processes`: each profile's
    # process terms (canonical ids, and unknown terms folded), so "--process P" is an index
    # lookup. Filled from the lab records already here.
    from fabnode.storage.labs import reindex_all

    db.executescript(
        """
        CREATE TABLE lab_profiles (
            author TEXT PRIMARY KEY NOT NULL,
            cid BLOB NOT NULL,
            ts INTEGER NOT NULL,
            lat REAL,
            lon REAL,
            name_key TEXT NOT NULL,
            profile TEXT NOT NULL
        );
        CREATE INDEX lab_profiles_lat ON lab_profiles (lat, lon) WHERE lat IS NOT NULL;
        CREATE INDEX lab_profiles_name_key ON lab_profiles (name_key);
        CREATE TABLE lab_processes (
            process TEXT NOT NULL,
            author TEXT NOT NULL,
            PRIMARY KEY (process, author)
        ) WITHOUT ROWID;
        """
    )
    reindex_all(db.conn)


@migrations(name="012_design_requirements")
def design_requirements(db: Database) -> None:
    # What designs need (issue 18; storage/making.py has the theory). `requirements_read`: each
    # version whose okh.toml was read (has_manifest 0: its bundle had none), with its BOM item
    # names and tools (JSON lists, shown, never matched). `version_requirements`: the processes
    # (known 1: a canonical id of protocol/processes.py; 0: a term outside the vocabulary, folded)
    # and materials (folded) it needs. `design_requirements`: the version whose needs stand for the
    # design (its newest read) and how many needs it has, for can-make's filter. `versions_bundle`:
    # which versions a pinned bundle belongs to, so finding versions to read starts from the pins.
    # `lab_materials`: each lab profile's materials (storage/labs.py keeps its processes in
    # `lab_processes`), so can-make finds who stocks what through an index.
    # Versions stored before this migration are read when first asked for (their bundles may be here).
    db.executescript(
        """
        CREATE TABLE requirements_read (
            version BLOB PRIMARY KEY NOT NULL,
            design BLOB NOT NULL,
            ts INTEGER NOT NULL,
            has_manifest INTEGER NOT NULL,
            parts INTEGER NOT NULL,
            tools TEXT NOT NULL,
            bom_items TEXT NOT NULL
        );
        CREATE INDEX requirements_read_design ON requirements_read (design, ts);
        CREATE TABLE version_requirements (
            version BLOB NOT NULL,
            kind TEXT NOT NULL,          -- 'process' or 'material'
            term TEXT NOT NULL,
            known INTEGER NOT NULL,
            PRIMARY KEY (version, kind, term)
        ) WITHOUT ROWID;
        CREATE INDEX version_requirements_term ON version_requirements (kind, term);
        CREATE TABLE design_requirements (
            design BLOB PRIMARY KEY NOT NULL,
            version BLOB NOT NULL,
            ts INTEGER NOT NULL,
            needs INTEGER NOT NULL
        );
        CREATE INDEX design_requirements_version ON design_requirements (version);
        CREATE INDEX design_requirements_needs ON design_requirements (needs);
        CREATE INDEX versions_bundle ON versions (bundle);
        CREATE TABLE lab_materials (
            material TEXT NOT NULL,
            author TEXT NOT NULL,
            PRIMARY KEY (material, author)
        ) WITHOUT ROWID;
        CREATE INDEX lab_materials_author ON lab_materials (author);
        """
    )
    from fabnode.storage.making import reindex_lab_materials

    reindex_lab_materials(db.conn)


@migrations(name="013_requests")
def requests(db: Database) -> None:
    # Requests and offers (issue 18; protocol/requests.py computes their state). `requests`: each
    # request record that asks for something (design: the design or version it names);
    # `request_closes`: each request record that closes one (counted only when its author is the
    # request's); `offers`: each offer. Rows follow records in any order: an offer may name a
    # request not here yet.
    db.executescript(
        """
        CREATE TABLE requests (
            cid BLOB PRIMARY KEY NOT NULL,
            author TEXT NOT NULL,
            ts INTEGER NOT NULL,
            design BLOB NOT NULL,
            quantity INTEGER NOT NULL,
            needed_by TEXT NOT NULL,
            note TEXT NOT NULL
        );
        CREATE INDEX requests_design ON requests (design);
        CREATE INDEX requests_author ON requests (author, ts);
        CREATE TABLE request_closes (
            cid BLOB PRIMARY KEY NOT NULL,
            request BLOB NOT NULL,
            author TEXT NOT NULL,
            ts INTEGER NOT NULL
        );
        CREATE INDEX request_closes_request ON request_closes (request);
        CREATE TABLE offers (
            cid BLOB PRIMARY KEY NOT NULL,
            request BLOB NOT NULL,
            author TEXT NOT NULL,
            ts INTEGER NOT NULL,
            quantity INTEGER NOT NULL,
            note TEXT NOT NULL
        );
        CREATE INDEX offers_request ON offers (request, ts);
        """
    )


@migrations(name="014_packs")
def packs(db: Database) -> None:
    # Issue 20: block bytes move to append-only pack files (storage/blocks.py); a row keeps only
    # where they are. `data` stays for rows not moved yet (x'' once moved) and in-memory stores.
    # `packs.size` is each pack's committed length: bytes past it are garbage.
    db.executescript(
        """
        ALTER TABLE blocks ADD COLUMN pack INTEGER;
        ALTER TABLE blocks ADD COLUMN pack_offset INTEGER;
        CREATE INDEX blocks_place ON blocks (pack, pack_offset) WHERE pack IS NOT NULL;
        CREATE TABLE packs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: a reader's open pack stays its own
            size INTEGER NOT NULL
        );
        """
    )


@migrations(name="015_design_profiles")
def design_profiles(db: Database) -> None:
    # Content-defined chunking (issue 20): the chunking profile each design's files were stored
    # with here (protocol/chunker.py PROFILES), so a later `publish --design D` cuts the new
    # version's files the same way and only what changed is new. Designs without a row use the
    # home's `add.profile` (default unixfs-v1-2025).
    db.executescript(
        """
        CREATE TABLE design_profiles (
            design BLOB PRIMARY KEY NOT NULL,
            profile TEXT NOT NULL
        );
        """
    )


@migrations(name="016_keys")
def keys(db: Database) -> None:
    # Issue 17: chains of keys (protocol/keys.py). `key_records` keeps the fields of lab records
    # that commit a recovery key, successions, revocations and members, so the resolver runs
    # without decoding blocks; `key_authors` the earliest ts each author signed (a key cannot be
    # rotated *to* once it signed anything before); `key_refused` the ids of records a chain
    # refuses (not stored, counted as held in sync so peers do not resend them); `key_state`
    # a version bumped whenever the resolver's input changes (the cached Identities' marker).
    db.executescript(
        """
        CREATE TABLE key_records (
            cid BLOB PRIMARY KEY NOT NULL,
            type TEXT NOT NULL,             -- lab | succession | revocation | member
            author TEXT NOT NULL,
            ts INTEGER NOT NULL,
            lab TEXT,                       -- revocation: identity; member: lab
            revoked TEXT,                   -- revocation: the revoked key
            next TEXT,                      -- succession, revocation: next key; member: the member
            role TEXT,                      -- member: maintainer | member | removed
            cutoff INTEGER,                 -- revocation
            recovery BLOB                   -- lab, revocation: a recovery key's SHA-256
        );
        CREATE INDEX key_records_next ON key_records (next);
        CREATE TABLE key_authors (
            author TEXT PRIMARY KEY NOT NULL,
            first_ts INTEGER NOT NULL
        ) WITHOUT ROWID;
        INSERT INTO key_authors (author, first_ts) SELECT author, min(ts) FROM records GROUP BY author;
        CREATE TABLE key_refused (
            cid BLOB PRIMARY KEY NOT NULL,
            author TEXT NOT NULL,
            ts INTEGER NOT NULL,
            reason TEXT NOT NULL,
            refused_ms INTEGER NOT NULL
        );
        CREATE INDEX key_refused_author ON key_refused (author, ts);
        CREATE TABLE key_state (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            version INTEGER NOT NULL
        );
        INSERT INTO key_state (id, version) VALUES (1, 0);
        """
    )


@migrations(name="017_retractions")
def retractions(db: Database) -> None:
    # Issue 17: retractions (subject: a version) and withdrawals (subject: an attestation),
    # indexed by subject so that a page, `log` or `reputation` asks for its versions' and
    # attestations' take-backs in one indexed look-up. Who may take back what is decided when
    # asked (protocol/retractions.py), not here: a record may arrive before its subject.
    # records.subject/design are filled for them too, so a design's export carries them.
    db.executescript(
        """
        CREATE TABLE takebacks (
            cid BLOB PRIMARY KEY NOT NULL,
            kind TEXT NOT NULL,           -- 'retraction' or 'withdrawal'
            subject BLOB NOT NULL,        -- the version or attestation taken back
            author TEXT NOT NULL,
            ts INTEGER NOT NULL,
            reason TEXT NOT NULL
        );
        CREATE INDEX takebacks_subject ON takebacks (subject, ts);
        """
    )
