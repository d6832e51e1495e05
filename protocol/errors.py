"""Errors that carry a one-line, human-readable reason.

The command line prints ``error: <reason>`` for any :class:`FabnodeError` and exits 1, so each
message must name what was wrong (which CID, which path, which limit) without a traceback.
"""


class FabnodeError(Exception):
    """A failure the user should read about: the message is the whole explanation."""


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
