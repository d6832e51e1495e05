"""The node's home directory: configuration, keys and the database.

Layout (the home itself is mode 0700)::

    HOME/config.toml    the operator's settings (see config.example.toml)
    HOME/author.key     the lab's signing key (Ed25519, PKCS#8 PEM, mode 0600)
    HOME/node.key       this node's libp2p key (Ed25519, PKCS#8 PEM, mode 0600)
    HOME/fabnode.db     SQLite, WAL mode (with its -wal and -shm files): blocks, pins, every
                        record with its index (versions, designs, attestations, vouches, search)
                        and the outbox mark, peers met, followed designs (storage/migrations.py)
    HOME/daemon.json    written by a running daemon, removed when it stops: pid, addresses,
                        control port and token (mode 0600; node/runtime/control.py)
    HOME/http.token     the token for any HTTP request that is not a read (mode 0600, made on
                        the daemon's first start with HTTP on; node/http/web.py)
    HOME/recovery.json  the lab's recovery commitment (issue 17; public facts, mode 0600)
    HOME/recovery.key   the recovery private key, ONLY if kept (``init --keep-recovery``; mode
                        0600); by default it is shown once and never written here
                        (node/local/recovery.py)
    HOME/author.key.retired-<ts>  an author key rotated or revoked at <ts> (mode 0600), kept
                        for the record; author.key.next: a new key waiting for its record to
                        be committed (node/local/keys.py)
    HOME/restore.json   only between ``init --restore DID`` and ``key revoke``: the identity
                        this home will speak for; it signs nothing meanwhile

The home is mode 0700; the keys, config.toml and fabnode.db (with its -wal and -shm) are 0600.

The author key is the lab's identity and may be copied to a second node; the node key is this
machine's. :func:`init_home` never overwrites an existing key.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tomllib
from typing import NamedTuple
from functools import cached_property
from pathlib import Path

from fabnode.protocol.errors import FabnodeError

from fabnode.node.config import CONFIG_KEYS, CONFIG_NAME, DEFAULTS, config_warnings
from fabnode.protocol.identity import did_from_ed25519, peer_id_from_ed25519

_TABLE_DEFAULT = object()
"""Home.setting's ``default`` when none is given: the key's default in node/config.py."""
_printed_warnings: set[str] = set()
"""Config warnings this process has printed: each once, however many Home objects read the file."""
AUTHOR_KEY = "author.key"
NODE_KEY = "node.key"
DB_NAME = "fabnode.db"


def default_home() -> Path:
    """``$FABNODE_HOME``, else the platform's user data directory (XDG on Linux)."""
    env = os.environ.get("FABNODE_HOME")
    if env:
        return Path(env)
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data) / "fabnode"


class Identity(NamedTuple):
    did: str
    peer_id: str
    name: str

    def as_json(self) -> dict:
        return {"did": self.did, "peer_id": self.peer_id, "name": self.name}


def _write_key(path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # O_EXCL: never replace a key, even if two inits race.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


_ED25519_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
"""DER of an Ed25519 PKCS#8 private key (RFC 8410) up to its 32-byte seed: what init writes."""


def _public_key(path: Path) -> bytes:
    """The Ed25519 public key of a PEM private key file. The PKCS#8 form init writes is read
    directly and its public key derived by libsodium (PyNaCl: ~15 ms to import, where
    cryptography's serialization takes ~50 ms, a quarter of a reading command's time); any other
    form goes through cryptography, which also gives the one-line errors."""
    import base64
    import binascii

    try:
        lines = path.read_bytes().strip().splitlines()
    except FileNotFoundError:
        raise FabnodeError(f"key file {path} is missing; run 'fabnode init' to create it") from None
    if len(lines) == 3 and lines[0] == b"-----BEGIN PRIVATE KEY-----" and lines[2] == b"-----END PRIVATE KEY-----":
        try:
            der = base64.b64decode(lines[1], validate=True)
        except binascii.Error:
            der = b""
        if len(der) == 48 and der.startswith(_ED25519_PKCS8_PREFIX):
            from nacl.signing import SigningKey

            return bytes(SigningKey(der[16:]).verify_key)
    return _public_key_slow(path)


def _public_key_slow(path: Path) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise FabnodeError(f"key file {path} is missing; run 'fabnode init' to create it") from None
    except ValueError:
        raise FabnodeError(f"key file {path} is not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise FabnodeError(f"key file {path} is not an Ed25519 key")
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _config_text(name: str) -> str:
    # json.dumps(ensure_ascii=False) writes a valid TOML basic string.
    return (
        "# fabnode configuration: every key is explained in config.example.toml\n"
        f"name = {json.dumps(name, ensure_ascii=False)}\n"
    )


class Home:
    def __init__(self, path: Path, *, warn: bool = True) -> None:
        """``warn=False``: leave config warnings to the caller (the daemon logs them instead)."""
        self.path = path
        self.warn = warn

    @property
    def db_path(self) -> Path:
        return self.path / DB_NAME

    def exists(self) -> bool:
        return (self.path / CONFIG_NAME).is_file()

    def require(self) -> Home:
        if not self.exists():
            raise FabnodeError(f"no fabnode home at {self.path}: run 'fabnode init' (or pass --home)")
        return self

    @cached_property
    def config(self) -> dict:
        """config.toml, read once; names fabnode does not know are warned about on stderr, once
        per process (unless ``warn`` is off), and the command goes on."""
        path = self.path / CONFIG_NAME
        try:
            text = path.read_bytes().decode("utf-8")
            config = tomllib.loads(text)
        except UnicodeDecodeError:
            raise FabnodeError(f"{path} is not valid TOML: it is not UTF-8 text") from None
        except tomllib.TOMLDecodeError as exc:
            raise FabnodeError(f"{path} is not valid TOML: {exc}") from None
        self._config_warnings = config_warnings(config, text, path)
        if self.warn:
            for warning in self._config_warnings:
                if warning not in _printed_warnings:
                    _printed_warnings.add(warning)
                    print(f"warning: {warning}", file=sys.stderr)
        return config

    @property
    def config_warnings(self) -> list[str]:
        """What config.toml sets that fabnode does not know (see :func:`config_warnings`)."""
        self.config
        return self._config_warnings

    def setting(self, key: str, default=_TABLE_DEFAULT):
        """One configuration value (``"limits.x"`` is key x of table [limits]), type-checked;
        when config.toml does not set it, ``default`` if given, else the key's default
        (node/config.py). ``default=None`` asks whether it is set at all."""
        assert key in CONFIG_KEYS, f"undocumented configuration key {key!r}"
        value = self.config
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                return DEFAULTS[key] if default is _TABLE_DEFAULT else default
            value = value[part]
        kind = CONFIG_KEYS[key]
        if isinstance(kind, tuple):
            ok = isinstance(value, kind[0]) and all(isinstance(v, kind[1]) for v in value)
            what = f"list of {kind[1].__name__}"
        else:
            ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
            what = kind.__name__
            if ok and kind is int and value < 0:
                raise FabnodeError(f"{self.path / CONFIG_NAME}: {key} must not be negative")
        if not ok:
            raise FabnodeError(f"{self.path / CONFIG_NAME}: {key} must be a {what}")
        return value

    def identity(self) -> Identity:
        return Identity(
            did=did_from_ed25519(_public_key(self.path / AUTHOR_KEY)),
            peer_id=peer_id_from_ed25519(_public_key(self.path / NODE_KEY)),
            name=self.setting("name"),
        )

    def open_store(self):
        """The block store, with the database opened and migrated."""
        from fabnode.storage import BlockStore, open_db

        self.require()
        return BlockStore(open_db(self.db_path))

    def open_stores(self):
        """Every store (:class:`fabnode.storage.Stores`) over one newly opened connection."""
        from fabnode.storage import Stores, open_db

        self.require()
        return Stores.over(open_db(self.db_path))


def set_config_name(path: Path, name: str) -> None:
    """Write the lab's ``name`` into config.toml (``init --name``, ``lab set --name``)."""
    config = path / CONFIG_NAME
    if Home(path).setting("name", None) != name:
        lines = config.read_text(encoding="utf-8").splitlines(keepends=True)
        new_line = f"name = {json.dumps(name, ensure_ascii=False)}\n"
        replaced = [new_line if line.startswith("name =") else line for line in lines]
        if new_line not in replaced:
            replaced.insert(1 if replaced and replaced[0].startswith("#") else 0, new_line)
        config.write_text("".join(replaced), encoding="utf-8")


class Initialized(NamedTuple):
    identity: Identity
    recovery: object | None
    """The recovery key made by this init (protocol.recovery.RecoveryKey), to be shown once; None
    when the home already had its author key."""
    has_recovery: bool
    """Whether this lab has committed to a recovery key (False: a home made before issue 17)."""


def init_home(path: Path, name: str | None, *, keep_recovery: bool = False,
              recovery_file: Path | None = None, restore: str | None = None) -> Initialized:
    """Create the home, keys, config and database; keep whatever already exists.

    Given ``name`` on an existing home, the name is updated; keys are never replaced. A new
    author key comes with a new recovery key (issue 17, node/local/recovery.py): its commitment
    is in the home before the lab's first ``lab`` record is signed, so that record carries it;
    the private key is kept only with ``keep_recovery``, and written to ``recovery_file`` if
    given. The lab's signed ``lab`` record (its name, this node, the recovery commitment,
    node/local/names.py) is made or renewed.
    """
    from fabnode.node.local import recovery
    from fabnode.protocol.labs import check_name

    if name is not None:
        check_name(name, "--name")  # before anything is written
    new_identity = not (path / AUTHOR_KEY).exists()
    if not new_identity and (recovery_file is not None or keep_recovery):
        flag = "--recovery-file" if recovery_file is not None else "--keep-recovery"
        raise FabnodeError(f"{flag}: this home already has its keys, and a recovery key is made only with new ones; "
                           "see 'fabnode key recovery' and 'fabnode key backup'")
    if restore is not None:  # a new machine for a lab whose key was lost (node/local/keys.py)
        from fabnode.node.local.keys import mark_restoring

        from fabnode.protocol.identity import ed25519_from_did

        if not new_identity:
            raise FabnodeError("--restore: this home already has its keys; restore into a new, empty home")
        try:
            ed25519_from_did(restore)
        except Exception:
            raise FabnodeError(f"--restore {restore!r}: not a lab's did:key (the 'lab:' line of the recovery "
                               "backup, or 'fabnode id' on a node of that lab)") from None
        if recovery_file is not None or keep_recovery:
            raise FabnodeError("--restore keeps the lab's recovery key: --keep-recovery and --recovery-file "
                               "go with a new lab")
    if recovery_file is not None:
        recovery.check_backup_path(recovery_file)
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    for key in (AUTHOR_KEY, NODE_KEY):
        if not (path / key).exists():
            _write_key(path / key)
    config = path / CONFIG_NAME
    fresh = not config.exists()
    if fresh:
        # mode 0600 (issue 12): the settings name the peers and hosts this lab trusts
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(_config_text(name or socket.gethostname()))
    else:
        if config.stat().st_mode & 0o077:
            os.chmod(config, 0o600)  # a home made before issue 12
    if not fresh and name is not None:
        set_config_name(path, name)
    if restore is not None:
        mark_restoring(path, restore)
    home = Home(path)
    home.open_store()  # creates and migrates the database
    from fabnode.node.local.commons import now_ms
    from fabnode.node.local.names import ensure_lab_record

    made = (recovery.make_recovery_key(home, keep=keep_recovery, now_ms=now_ms())
            if new_identity and restore is None else None)
    try:
        if made is not None and recovery_file is not None:
            recovery.write_backup(recovery_file, made, home.identity())
        ensure_lab_record(home)
    except BaseException:
        if made is not None:
            recovery.forget_recovery_key(home)  # never a commitment whose words nobody saw
        raise
    return Initialized(home.identity(), made, made is not None or recovery.has_commitment(home))
