"""The shipped example is a real design: a complete OKH-LOSH manifest whose files all exist, and
a bundle whose CID any IPFS tool computes the same."""

from __future__ import annotations

from conftest import ROOT, Cli, ipfs_car_cid

EXAMPLE = ROOT / "examples" / "hand-pump"
REQUIRED = ("okhv", "name", "repo", "version", "license", "licensor", "documentation-language", "function")


def test_manifest_is_complete_and_its_paths_exist():
    from fabnode.protocol.okh import lint_manifest, parse_manifest

    manifest = parse_manifest((EXAMPLE / "okh.toml").read_text(encoding="utf-8"))
    for key in REQUIRED:
        assert isinstance(manifest.get(key), str) and manifest[key], key
    files = {p.relative_to(EXAMPLE).as_posix() for p in EXAMPLE.rglob("*") if p.is_file()}
    assert lint_manifest(manifest, files) == []  # every field present, every named file exists
    named = {manifest[k] for k in ("readme", "image", "bom", "manufacturing-instructions")}
    assert {p.lstrip("/") for p in named} <= files and len(manifest["part"]) >= 2
    for kind in ("*.png", "*.scad", "*.csv", "*.md"):
        assert list(EXAMPLE.rglob(kind)), kind


def test_example_bundle_matches_ipfs_car(cli: Cli, ipfs_car, tmp_path):
    cid = cli.out("add", str(EXAMPLE))
    assert cid == ipfs_car_cid(ipfs_car, EXAMPLE, tmp_path)
    assert cli.run("cat", f"{cid}/okh.toml").stdout == (EXAMPLE / "okh.toml").read_bytes()
