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

The home is mode 0700; the keys, config.toml and fabnode.db (with its -wal and -shm) are 0600.

The author key is the lab's identity and may be copied to a second node; the node key is this
machine's. :func:`init_home` never overwrites an existing key.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import tomllib
from typing import NamedTuple
from functools import cached_property
from pathlib import Path

from fabnode.protocol.errors import FabnodeError
from fabnode.protocol.identity import did_from_ed25519, peer_id_from_ed25519

CONFIG_NAME = "config.toml"
CONFIG_KEYS: dict[str, type | tuple[type, type]] = {
    "name": str,
    "listen": (list, str),
    "bootstrap": (list, str),
    "mdns": bool,
    "http": str,
    "http_hosts": (list, str),
    "limits.fetch_streams_per_peer": int,
    "limits.fetch_streams_total": int,
    "limits.upload_bytes_per_second": int,
    "limits.gossip_messages_per_second": int,
    "limits.max_connections": int,
    "limits.stranger_records_per_author_per_hour": int,
    "limits.stranger_records_per_peer_per_hour": int,
    "limits.stranger_storage_mib": int,
    "sync.interval_seconds": int,
    "seeding.follow_trusted_authors": bool,
    "seeding.budget_mib": int,
}
"""Every key fabnode reads from config.toml, with its type (a list type is (list, item type));
dotted names are keys inside a table. A test checks config.example.toml documents each."""
CONFIG_TABLES = sorted({key.split(".")[0] for key in CONFIG_KEYS if "." in key})
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


def _public_key(path: Path) -> bytes:
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


# ------------------------------------------------------------------ unknown configuration keys
# A misspelt key (`bootstap`, `[limit]`) would otherwise be ignored in silence, and the operator
# left wondering why the setting does nothing. tomllib gives no line numbers, so a small scanner
# finds where each name is set; it reads only key lines and table headers, skipping the inside
# of multi-line arrays and strings, which is all config.toml needs.

_QUOTED = r'"(?:[^"\\]|\\.)*"' + "|" + r"'[^']*'"
_SIMPLE_KEY = r"[A-Za-z0-9_-]+|" + _QUOTED
_DOTTED_KEY = rf"(?:{_SIMPLE_KEY})(?:\s*\.\s*(?:{_SIMPLE_KEY}))*"
_HEADER = re.compile(rf"\s*\[\[?\s*({_DOTTED_KEY})\s*\]\]?\s*(?:#.*)?$")
_KEY_LINE = re.compile(rf"\s*({_DOTTED_KEY})\s*=")
_STRING = re.compile(_QUOTED)


def _key_parts(dotted: str) -> tuple[str, ...]:
    return tuple(part.strip("\"'") for part in re.findall(_SIMPLE_KEY, dotted))


def _names_and_lines(text: str) -> list[tuple[tuple[str, ...], int]]:
    """Every table header and key in a TOML text, as (full name, line number)."""
    found: list[tuple[tuple[str, ...], int]] = []
    table: tuple[str, ...] = ()
    depth, in_string = 0, None
    for number, line in enumerate(text.splitlines(), 1):
        if in_string:
            if in_string in line:
                in_string = None
            continue
        rest = line
        if depth == 0:
            if header := _HEADER.match(line):
                table = _key_parts(header[1])
                found.append((table, number))
                continue
            if not (key := _KEY_LINE.match(line)):
                continue
            found.append((table + _key_parts(key[1]), number))
            rest = line[key.end():]
        for quotes in ('"""', "'''"):
            if rest.count(quotes) % 2:
                in_string = quotes
        plain = _STRING.sub("", rest).split("#", 1)[0]
        depth = max(0, depth + plain.count("[") + plain.count("{") - plain.count("]") - plain.count("}"))
    return found


def _line_of(name: tuple[str, ...], found: list[tuple[tuple[str, ...], int]]) -> int | None:
    """Where ``name`` is set: its first line, else that of the nearest enclosing name (an inline
    table), else None."""
    exact = [number for path, number in found if path[:len(name)] == name]
    if exact:
        return min(exact)
    enclosing = [(len(path), -number) for path, number in found if name[:len(path)] == path]
    return -max(enclosing)[1] if enclosing else None


def _unknown_names(table: dict, prefix: tuple[str, ...] = ()):
    """(name, is a table) for each name set that is not in CONFIG_KEYS, outermost first: an
    unknown table is one name, not one per key inside it."""
    for key, value in table.items():
        name = prefix + (key,)
        dotted = ".".join(name)
        if dotted in CONFIG_KEYS:
            continue
        if isinstance(value, dict) and any(known.startswith(dotted + ".") for known in CONFIG_KEYS):
            yield from _unknown_names(value, name)
        else:
            yield name, isinstance(value, dict)


def config_warnings(config: dict, text: str, path: Path) -> list[str]:
    """One line per name config.toml sets that fabnode does not read, with its line number and
    the nearest known name, in the order of the file."""
    import difflib

    found = _names_and_lines(text)
    warnings = []
    for name, is_table in _unknown_names(config):
        dotted = ".".join(name)
        line = _line_of(name, found)
        where = f"{path} line {line}" if line else str(path)
        if dotted in CONFIG_TABLES:
            warnings.append((line or 0, f"{where}: '{dotted}' is not a table: write [{dotted}] and its keys under it"))
            continue
        known = [*CONFIG_KEYS, *CONFIG_TABLES] if len(name) == 1 else list(CONFIG_KEYS)  # tables are top-level
        near = difflib.get_close_matches(dotted, known, n=1)
        hint = f"did you mean '{near[0]}'?" if near else "every key is explained in config.example.toml"
        warnings.append((line or 0, f"{where}: unknown {'table' if is_table else 'key'} '{dotted}' ({hint})"))
    return [text for _, text in sorted(warnings, key=lambda w: w[0])]


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

    def setting(self, key: str, default):
        """One configuration value (``"limits.x"`` is key x of table [limits]), type-checked."""
        assert key in CONFIG_KEYS, f"undocumented configuration key {key!r}"
        value = self.config
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                return default
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
            name=self.setting("name", ""),
        )

    def open_store(self):
        """The block store, with the database opened and migrated."""
        from fabnode.storage import BlockStore, open_db

        self.require()
        return BlockStore(open_db(self.db_path))


def init_home(path: Path, name: str | None) -> Identity:
    """Create the home, keys, config and database; keep whatever already exists.

    Given ``name`` on an existing home, the name is updated; keys are never replaced.
    """
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
        home = Home(path)
        if home.setting("name", None) != name:
            lines = config.read_text(encoding="utf-8").splitlines(keepends=True)
            new_line = f"name = {json.dumps(name, ensure_ascii=False)}\n"
            replaced = [new_line if line.startswith("name =") else line for line in lines]
            if new_line not in replaced:
                replaced.insert(1 if replaced and replaced[0].startswith("#") else 0, new_line)
            config.write_text("".join(replaced), encoding="utf-8")
    home = Home(path)
    home.open_store()  # creates and migrates the database
    return home.identity()
