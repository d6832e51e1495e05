"""Errors that carry a one-line, human-readable reason.

The command line prints ``error: <reason>`` for any :class:`FabnodeError` and exits 1, so each
message must name what was wrong (which CID, which path, which limit) without a traceback.
"""


class FabnodeError(Exception):
    """A failure the user should read about: the message is the whole explanation."""


def first_in_group(exc: BaseException, kind: type) -> BaseException | None:
    """The first exception of ``kind`` in ``exc`` or the exception groups nested in it (trio and
    libp2p nurseries wrap what their tasks raised), or None."""
    if isinstance(exc, kind):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        found = first_in_group(inner, kind)
        if found is not None:
            return found
    return None


class LocalError(FabnodeError):
    """A mistake on this side: a bad argument, a missing file, a full disk. Said to the operator;
    no peer is blamed."""


class RemoteProtocolError(FabnodeError):
    """A peer broke a protocol rule (a frame over its limit, an invalid record, a lie about a
    block). It always means the same thing: drop the stream, trust nothing it sent, and cut the
    peer off for a while (protocol.penalties)."""


class InvalidCID(FabnodeError):
    """A CID (or CID/path) given by a user or a peer that fabnode cannot accept."""


class InvalidBlock(FabnodeError):
    """A block whose bytes are not a valid node of its codec, or break a bound."""


class DamagedBlock(FabnodeError):
    """A stored block whose bytes no longer hash to its CID."""


class MissingBlock(FabnodeError):
    """A block the DAG needs that this store does not hold."""


class PathNotFound(FabnodeError):
    """A CID/path whose path does not lead anywhere in the DAG."""


class DiskFull(LocalError):
    """A write ran out of space. The message says what was being written, how much it needed
    and on which filesystem, and that nothing of it was kept."""


class DamagedDatabase(LocalError):
    """The node's SQLite file cannot be read: its header is gone, it was cut short, or a page
    inside it is malformed. ``reason`` says which, as far as it can be told from outside."""

    def __init__(self, path, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"the database {path} is damaged ({reason}); run 'fabnode fsck'")


def human_size(size: float) -> str:
    """1536 -> '1.5 KiB': sizes in messages an operator reads."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)
