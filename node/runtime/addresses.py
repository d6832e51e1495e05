"""The addresses `fabnode run` listens on, checked before the node starts.

An operator's mistake here (a typo, a port another program holds) must be one line at once, not
a traceback from the multiaddr parser, a node that silently listens nowhere, or a web page that
never appears. So ``run`` parses every address first (:func:`listen_address`,
:func:`http_address`), then tries to bind each one (:func:`check_listen`, :func:`bind_http`)
before libp2p is even imported. The libp2p listeners themselves no longer share ports
(node/runtime/host.py), so an address taken between the check and the start is refused there too.

Every message says where the address came from (``--listen`` or ``listen`` in config.toml) and
how to change it. Only sockets of the standard library here: this module stays cheap.
"""

from __future__ import annotations

import errno
import ipaddress
import socket

from fabnode.protocol.errors import FabnodeError

LISTEN_EXAMPLE = "/ip4/0.0.0.0/tcp/4001"
HTTP_EXAMPLE = "127.0.0.1:8080"


def _port(text: str) -> int | None:
    return int(text) if text.isdigit() and int(text) <= 65535 else None


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def listen_address(text: str, where: str) -> str:
    """``text`` if it is ``/ip4/IP/tcp/PORT`` or ``/ip6/IP/tcp/PORT``; else a FabnodeError
    that shows the expected form (``127.0.0.1:4001`` → ``/ip4/127.0.0.1/tcp/4001``).
    ``where`` names the source: ``--listen``, or ``CONFIG: listen``."""
    parts = text.split("/")
    if len(parts) == 5 and parts[0] == "" and parts[3] == "tcp" and _port(parts[4]) is not None:
        ip = _ip(parts[2])
        if ip is not None and parts[1] == f"ip{ip.version}":
            return text
    host, _, port = text.rpartition(":")
    ip = _ip(host.strip("[]"))
    if ip is not None and _port(port) is not None:
        example = f"/ip{ip.version}/{ip}/tcp/{port}"
    else:
        example = f"/ip4/ADDRESS/tcp/PORT, e.g. {LISTEN_EXAMPLE}"
    raise FabnodeError(f"{where} {text!r} is not an address to listen on; write it as {example}")


def http_address(text: str, where: str) -> str:
    """``off``, or ``HOST:PORT`` with HOST an IP address (IPv6 in brackets) or localhost; a port
    alone means 127.0.0.1:PORT, so the web interface is never opened to the LAN by accident."""
    if text == "off":
        return text
    if _port(text) is not None:
        return f"127.0.0.1:{text}"
    host, colon, port = text.rpartition(":")
    if host == "localhost":
        host = "127.0.0.1"
    bracketed = host.startswith("[") and host.endswith("]")
    ip = _ip(host[1:-1] if bracketed else host)
    if colon and ip is not None and bracketed == (ip.version == 6) and _port(port) is not None:
        return f"{host}:{port}"
    raise FabnodeError(f"{where} {text!r} is not an address for the web interface; write HOST:PORT "
                       f"such as {HTTP_EXAMPLE} (a port alone means 127.0.0.1), or off")


def listen_host_port(addr: str) -> tuple[str, int]:
    """(host, port) of a checked listen address."""
    parts = addr.split("/")
    return parts[2], int(parts[4])


def _bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound as the node binds its listeners: SO_REUSEADDR (a port left in
    TIME_WAIT by the last run is reusable), never SO_REUSEPORT (a port in use is refused)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def why_not(exc: OSError | None, change: str) -> str:
    """What an operator should read for a failed bind, and how to get out of it."""
    code = exc.errno if exc is not None else None
    if code == errno.EADDRINUSE:
        return f"address already in use (another program listens there; choose another port {change})"
    if code == errno.EADDRNOTAVAIL:
        return f"this machine has no such address (0.0.0.0 means every interface; choose another {change})"
    if code == errno.EACCES:
        return f"permission denied (ports below 1024 need root; choose another port {change})"
    return f"{exc.strerror or exc} ({change})" if exc is not None else f"the listener did not start ({change})"


def check_listen(addrs: list[str], change: str) -> None:
    """Refuse, in one line, the first listen address this machine will not let us bind.

    ``change`` says how to pick another one, e.g. ``with --listen``."""
    for addr in addrs:
        host, port = listen_host_port(addr)
        try:
            _bind(host, port).close()
        except OSError as exc:
            raise FabnodeError(f"cannot listen on {addr}: {why_not(exc, change)}") from None


def bind_http(address: str, change: str) -> socket.socket:
    """The web interface's listening socket, bound now so that the address is ours (or refused
    in one line) before the node starts; Hypercorn is handed the socket later."""
    host, _, port = address.rpartition(":")
    try:
        sock = _bind(host.strip("[]"), int(port))
    except OSError as exc:
        raise FabnodeError(f"cannot serve the web interface on {address}: {why_not(exc, change)}") from None
    sock.listen(128)
    return sock
