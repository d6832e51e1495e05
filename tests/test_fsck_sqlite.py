"""fsck checks SQLite itself (issue 12): index damage is told apart from missing data and can be
repaired; damage to the schema's own record is found; a sound store stays "sound"."""

from __future__ import annotations

import json
import sqlite3

from conftest import ROOT

EXAMPLE = ROOT / "examples" / "hand-pump"


def _flip(db, rootpage_of: str, offset: int = 10) -> None:
    """Flip one byte inside the first cell of a b-tree page (an index's or a table's root)."""
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (rootpage_of,)).fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(db, "r+b") as f:
        f.seek((root - 1) * size)
        page = f.read(size)
        header = 100 if root == 1 else 0
        cell = int.from_bytes(page[header + 8:header + 10], "big")  # a leaf's first cell pointer
        f.seek((root - 1) * size + cell + offset)
        byte = f.read(1)[0]
        f.seek((root - 1) * size + cell + offset)
        f.write(bytes([byte ^ 0x01]))


def test_a_sound_store_passes(cli):
    cli.run("add", str(EXAMPLE))
    report = cli.json("fsck")
    assert report["ok"] and report["index_damage"] == [] and report["database_damage"] == []


def test_index_damage_is_told_from_missing_data_and_repaired(cli):
    root = cli.out("add", str(EXAMPLE))
    db = cli.home / "fabnode.db"
    _flip(db, "sqlite_autoindex_blocks_1")
    result = cli.run("fsck", "--json", check=False)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["index_damage"] and "missing from index sqlite_autoindex_blocks_1" in report["index_damage"][0]
    assert report["missing"] == []  # not reported as data that is gone ...
    assert report["unindexed"] and report["unindexed"][0].startswith(f"{root}: ")  # ... but as what it is
    plain = cli.run("fsck", check=False)
    assert "index damage (the data is intact; 'fabnode fsck --repair' rebuilds it)" in plain.stdout.decode()
    assert plain.stderr.decode().strip().endswith("1 index problem(s) (run 'fabnode fsck --repair')")
    repaired = cli.json("fsck", "--repair")
    assert repaired["ok"] and repaired["repaired"]
    assert cli.json("fsck")["ok"]
    assert cli.run("cat", f"{root}/okh.toml").stdout == (EXAMPLE / "okh.toml").read_bytes()


def test_a_flipped_byte_in_the_migration_record_is_found(cli):
    db = cli.home / "fabnode.db"
    conn = sqlite3.connect(db)
    conn.execute("UPDATE _sqlite_migrations SET name = '002_pinz' WHERE name = '002_pins'")  # as a flipped byte would
    conn.commit()
    conn.close()
    result = cli.run("fsck", "--json", check=False)
    report = json.loads(result.stdout)
    assert result.returncode == 1
    assert report["database_damage"] == ["the schema's migration record is damaged: unknown '002_pinz'; "
                                         "missing '002_pins'"]
