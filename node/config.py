"""Configuration: every key of config.toml with its type, default and meaning, in one table.

:data:`KEYS` is the only place a default is written. :class:`node.home.Home` reads config.toml and
checks each value against its key's type (``Home.setting``); :func:`daemon_options` turns the
settings, under the options of ``fabnode run``, into :class:`DaemonOptions`. config.example.toml
documents every key at length and shows its default; tests/test_docs.py checks it against this
table (same keys, same defaults, a comment above each).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fabnode.node.home import Home

CONFIG_NAME = "config.toml"
DEFAULT_LISTEN = "/ip4/0.0.0.0/tcp/4001"
DEFAULT_HTTP = "127.0.0.1:8080"


@dataclass(frozen=True, slots=True)
class Key:
    """One configuration key."""

    name: str
    """Dotted: ``"limits.x"`` is key x of table [limits]."""
    kind: type | tuple[type, type]
    """The value's type; a list type is (list, item type)."""
    default: object
    """What fabnode uses when config.toml does not set the key (after --options of ``run``)."""
    comment: str
    """What it is for, in one line (config.example.toml says more)."""


KEYS: tuple[Key, ...] = (
    Key("name", str, "", "the lab's name, shown next to its did:key"),
    Key("listen", (list, str), [DEFAULT_LISTEN], "libp2p listen addresses of the daemon"),
    Key("bootstrap", (list, str), [], "nodes to dial at start and keep redialling"),
    Key("mdns", bool, True, "find fabnode nodes on this LAN by multicast DNS"),
    Key("http", str, DEFAULT_HTTP, "the web interface and gateway's address, or \"off\""),
    Key("http_hosts", (list, str), [], "more host names the web interface answers to"),
    Key("limits.fetch_streams_per_peer", int, 4, "fetch streams one peer may have open here"),
    Key("limits.fetch_streams_total", int, 16, "fetch streams all peers together may have open here"),
    Key("limits.upload_bytes_per_second", int, 0, "upload cap for sync, gossip and serving together (0: none)"),
    Key("limits.gossip_messages_per_second", int, 100, "records announced per second"),
    Key("limits.max_connections", int, 50, "connections above this many are not dialled"),
    Key("limits.stranger_records_per_author_per_hour", int, 1000, "records kept per untrusted key per hour"),
    Key("limits.stranger_records_per_peer_per_hour", int, 10_000, "untrusted records kept per peer per hour"),
    Key("limits.stranger_storage_mib", int, 64, "storage all untrusted records may take, in MiB"),
    Key("relay", bool, True, "relay for peers behind NAT once this node is found reachable"),
    Key("hole_punching", bool, True, "try a direct connection (DCUtR) to a peer reached through a relay"),
    Key("dialback_confirmations", int, 1, "peers that must dial this node back to call it reachable"),
    Key("limits.relay_reservations", int, 32, "peers behind NAT holding a relay slot here at once"),
    Key("limits.relay_reservations_per_minute", int, 6, "relay reservation requests one peer may make a minute"),
    Key("limits.relay_circuits", int, 16, "relayed connections through this node at once"),
    Key("limits.relay_circuits_per_peer", int, 4, "relayed connections one peer may take part in at once"),
    Key("limits.relay_circuit_mib", int, 64, "bytes one relayed connection may carry, in MiB"),
    Key("limits.relay_circuit_seconds", int, 600, "how long one relayed connection may last"),
    Key("limits.relay_bytes_per_second", int, 4 << 20, "all relayed traffic together, bytes a second (0: no cap)"),
    Key("limits.relay_peer_mib_per_hour", int, 256, "bytes relayed for one peer an hour, in MiB"),
    Key("sync.interval_seconds", int, 60, "how often records are reconciled with each peer"),
    Key("seeding.follow_trusted_authors", bool, True, "fetch the bundles of trusted authors on its own"),
    Key("seeding.budget_mib", int, 2048, "disk the bundles fetched on its own may take, in MiB"),
    Key("add.profile", str, "unixfs-v1-2025", "how add and publish cut files (unixfs-v1-2025 or rabin-32k)"),
)

CONFIG_KEYS: dict[str, type | tuple[type, type]] = {key.name: key.kind for key in KEYS}
"""Every key fabnode reads from config.toml, with its type (a list type is (list, item type));
dotted names are keys inside a table. A test checks config.example.toml documents each."""
DEFAULTS: dict[str, object] = {key.name: key.default for key in KEYS}
"""Every key's default (lists are shared: copy before changing one)."""
CONFIG_TABLES = sorted({key.split(".")[0] for key in CONFIG_KEYS if "." in key})


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


def names_and_lines(text: str) -> list[tuple[tuple[str, ...], int]]:
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


def line_of(name: tuple[str, ...], found: list[tuple[tuple[str, ...], int]]) -> int | None:
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

    found = names_and_lines(text)
    warnings = []
    for name, is_table in _unknown_names(config):
        dotted = ".".join(name)
        line = line_of(name, found)
        where = f"{path} line {line}" if line else str(path)
        if dotted in CONFIG_TABLES:
            warnings.append((line or 0, f"{where}: '{dotted}' is not a table: write [{dotted}] and its keys under it"))
            continue
        known = [*CONFIG_KEYS, *CONFIG_TABLES] if len(name) == 1 else list(CONFIG_KEYS)  # tables are top-level
        near = difflib.get_close_matches(dotted, known, n=1)
        hint = f"did you mean '{near[0]}'?" if near else "every key is explained in config.example.toml"
        warnings.append((line or 0, f"{where}: unknown {'table' if is_table else 'key'} '{dotted}' ({hint})"))
    return [text for _, text in sorted(warnings, key=lambda w: w[0])]


# ------------------------------------------------------------------ the daemon's options


@dataclass
class DaemonOptions:
    """What ``fabnode run`` runs with: the command line over config.toml over :data:`KEYS`."""

    listen: list[str]
    bootstrap: list[str]
    mdns: bool
    http: str
    streams_per_peer: int = DEFAULTS["limits.fetch_streams_per_peer"]
    streams_total: int = DEFAULTS["limits.fetch_streams_total"]
    upload_rate: int = DEFAULTS["limits.upload_bytes_per_second"]
    gossip_rate: int = DEFAULTS["limits.gossip_messages_per_second"]
    max_connections: int = DEFAULTS["limits.max_connections"]
    sync_interval: int = DEFAULTS["sync.interval_seconds"]
    follow_trusted: bool = DEFAULTS["seeding.follow_trusted_authors"]
    seeding_budget: int = DEFAULTS["seeding.budget_mib"] << 20
    stranger_per_author: int = DEFAULTS["limits.stranger_records_per_author_per_hour"]
    stranger_per_peer: int = DEFAULTS["limits.stranger_records_per_peer_per_hour"]
    stranger_storage: int = DEFAULTS["limits.stranger_storage_mib"] << 20
    listen_change: str = "with --listen"
    """How the operator picks another listen address (said when one cannot be bound)."""
    http_change: str = "with --http, or --http off"
    http_required: bool = True
    """False for the default address: the node then runs without its page if the port is taken."""
    http_hosts: tuple[str, ...] = ()
    announce: tuple[str, ...] = ()
    """Addresses peers are told (identify) instead of the listen addresses (``--announce``)."""
    relay: bool = DEFAULTS["relay"]
    hole_punching: bool = DEFAULTS["hole_punching"]
    dialback_confirmations: int = DEFAULTS["dialback_confirmations"]
    relay_limits: object = None
    """protocol.nat.RelayLimits from the ``limits.relay_*`` keys (None: their defaults)."""


def daemon_options(home: Home, *, listen: list[str], bootstrap: list[str], http: str | None,
                   mdns: bool | None, announce: list[str] = ()) -> DaemonOptions:
    """Command-line options over config.toml over defaults. The addresses are checked here,
    before anything starts, and a mistake names where it was made (node/runtime/addresses.py)."""
    from fabnode.node.runtime.addresses import http_address, listen_address

    config = home.path / CONFIG_NAME
    listen_change, http_change, http_required = "with --listen", "with --http, or --http off", True
    if listen:
        listen = [listen_address(a, "--listen") for a in listen]
    elif home.setting("listen", None) is not None:
        listen = [listen_address(a, f"{config}: listen") for a in home.setting("listen")]
        listen_change = f"for 'listen' in {config}, or with --listen"
    else:
        listen, listen_change = list(DEFAULTS["listen"]), f"with --listen, or 'listen' in {config}"
    if http:
        http = http_address(http, "--http")
    elif home.setting("http", None) is not None:
        http = http_address(home.setting("http"), f"{config}: http")
        http_change = f"for 'http' in {config}, or run with --http off"
    else:
        http, http_required = DEFAULTS["http"], False
        http_change = f"with --http or 'http' in {config}, or turn it off"
    return DaemonOptions(
        listen=listen,
        bootstrap=list(dict.fromkeys(home.setting("bootstrap") + bootstrap)),
        mdns=home.setting("mdns") if mdns is None else mdns,
        http=http, listen_change=listen_change, http_change=http_change, http_required=http_required,
        streams_per_peer=max(1, home.setting("limits.fetch_streams_per_peer")),
        streams_total=max(1, home.setting("limits.fetch_streams_total")),
        upload_rate=home.setting("limits.upload_bytes_per_second"),
        gossip_rate=max(1, home.setting("limits.gossip_messages_per_second")),
        max_connections=max(1, home.setting("limits.max_connections")),
        sync_interval=max(1, home.setting("sync.interval_seconds")),
        follow_trusted=home.setting("seeding.follow_trusted_authors"),
        seeding_budget=home.setting("seeding.budget_mib") << 20,
        stranger_per_author=home.setting("limits.stranger_records_per_author_per_hour"),
        stranger_per_peer=home.setting("limits.stranger_records_per_peer_per_hour"),
        stranger_storage=home.setting("limits.stranger_storage_mib") << 20,
        http_hosts=tuple(home.setting("http_hosts")),
        announce=tuple(listen_address(a, "--announce") for a in announce),
        relay=home.setting("relay"), hole_punching=home.setting("hole_punching"),
        dialback_confirmations=max(1, home.setting("dialback_confirmations")),
        relay_limits=relay_limits(home),
    )


def relay_limits(home: Home):
    """The relay's limits (protocol/nat.py) from config.toml."""
    from fabnode.protocol.nat import RelayLimits

    return RelayLimits(
        reservations=max(0, home.setting("limits.relay_reservations")),
        reservations_per_minute=max(1, home.setting("limits.relay_reservations_per_minute")),
        circuits=max(0, home.setting("limits.relay_circuits")),
        circuits_per_peer=max(1, home.setting("limits.relay_circuits_per_peer")),
        circuit_bytes=max(1, home.setting("limits.relay_circuit_mib")) << 20,
        circuit_seconds=max(1, home.setting("limits.relay_circuit_seconds")),
        bytes_per_second=max(0, home.setting("limits.relay_bytes_per_second")),
        peer_bytes_per_hour=max(1, home.setting("limits.relay_peer_mib_per_hour")) << 20)
