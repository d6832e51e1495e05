"""The shipped example is a real design: a complete OKH-LOSH manifest whose files all exist, and
a bundle whose CID any IPFS tool computes the same."""

from __future__ import annotations

import tomllib

from .conftest import ROOT, Cli, ipfs_car_cid

EXAMPLE = ROOT / "examples" / "hand-pump"
REQUIRED = ("okhv", "name", "repo", "version", "license", "licensor", "documentation-language", "function")


def test_manifest_is_complete_and_its_paths_exist():
    manifest = tomllib.loads((EXAMPLE / "okh.toml").read_text(encoding="utf-8"))
    for key in REQUIRED:
        assert isinstance(manifest.get(key), str) and manifest[key], key
    paths = [manifest[k] for k in ("readme", "image", "bom", "manufacturing-instructions") if k in manifest]
    paths += manifest.get("source", []) if isinstance(manifest.get("source"), list) else [manifest.get("source")]
    paths += [p["source"] for p in manifest.get("part", [])]
    assert len([p for p in paths if p]) >= 5
    for rel in filter(None, paths):
        assert (EXAMPLE / rel.lstrip("/")).is_file(), rel
    for kind in ("*.png", "*.scad", "*.csv", "*.md"):
        assert list(EXAMPLE.rglob(kind)), kind


def test_example_bundle_matches_ipfs_car(cli: Cli, ipfs_car, tmp_path):
    cid = cli.out("add", str(EXAMPLE))
    assert cid == ipfs_car_cid(ipfs_car, EXAMPLE, tmp_path)
    assert cli.run("cat", f"{cid}/okh.toml").stdout == (EXAMPLE / "okh.toml").read_bytes()
