"""Which chunking profile each design's files are stored with here (migration 015, issue 20).

Why: a design cut with content-defined chunks must keep them, or its next version shares no
blocks with the last and costs its whole size again. The row is local (not in the signed version
record, whose body schema older nodes check strictly): it is what this lab's `publish` uses.
"""

from __future__ import annotations

import sqlite3


def design_profile(conn: sqlite3.Connection, design: bytes) -> str | None:
    """The profile recorded for ``design``, or None."""
    row = conn.execute("SELECT profile FROM design_profiles WHERE design = ?", (design,)).fetchone()
    return row[0] if row else None


def set_design_profile(conn: sqlite3.Connection, design: bytes, profile: str) -> None:
    """Record (or change) ``design``'s profile; the caller holds the write transaction."""
    conn.execute("INSERT INTO design_profiles (design, profile) VALUES (?, ?) "
                 "ON CONFLICT (design) DO UPDATE SET profile = excluded.profile", (design, profile))
