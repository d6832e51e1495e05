"""The official OKH-LOSH schema at ``publish`` (issue 16): its verdicts on the issue's examples,
the refusal line, ``--force``, and fabnode's advice kept apart (protocol/okh.py, node/local/commons.py)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from fabnode.protocol.okh import lint_manifest, load_schema, parse_manifest, schema_validator, schema_violations

from conftest import ROOT, Cli

EXAMPLE = ROOT / "examples" / "hand-pump"
BASE = (
    'okhv = "OKH-LOSHv1.0"\nname = "Pump"\nrepo = "https://example.org/pump"\nversion = "1.0"\n'
    'license = "CERN-OHL-S-2.0"\nlicensor = "A lab"\nfunction = "Moves water"\n'
)
FILES = {"okh.toml", "cad/pump.scad", "cad/pump.stl"}

ACCEPTED = {  # the manifests the schema accepts: the linter must not warn on them either
    "an integer version": BASE.replace('version = "1.0"', "version = 3"),
    "documentation-language as a list": BASE + 'documentation-language = ["en", "sw"]\n',
    "documentation-language absent": BASE,
    "a part with export but no source": BASE + '[[part]]\nname = "body"\nexport = ["cad/pump.stl"]\n',
}
REJECTED = {  # the manifests the schema rejects, with its verdict
    "OTRL-9": (BASE + 'technology-readiness-level = "OTRL-9"\n',
               "okh.toml technology-readiness-level: 'OTRL-9' is not one of 'OTRL-1', 'OTRL-2', 'OTRL-3', "
               "'OTRL-4', 'OTRL-5', 'OTRL-6'",
               ("properties", "technology-readiness-level")),
    "a mass in lb": (BASE + '[mass]\nvalue = 20\nunit = "lb"\n',
                     "okh.toml mass.unit: 'lb' is not one of ['g', 'kg']",
                     ("$defs", "mass", "properties", "unit")),
    "english language": (BASE + 'documentation-language = "english language"\n',
                         "okh.toml documentation-language: 'english language' does not match the pattern "
                         "'^((?<grandfathered>(en-GB-oed|i-ami|i-bnn|i-default|i-en... "
                         "(Language as a BCP 47 language tag)",
                         ("$defs", "language")),
}


@pytest.mark.parametrize("case", ACCEPTED)
def test_the_schema_accepts_and_the_linter_does_not_warn(case):
    manifest = parse_manifest(ACCEPTED[case])
    assert schema_violations(manifest) == []
    assert lint_manifest(manifest, FILES) == []


@pytest.mark.parametrize("case", REJECTED)
def test_the_schema_rejects(case):
    text, verdict, _ = REJECTED[case]
    assert [str(v) for v in schema_violations(parse_manifest(text))] == [verdict]


@pytest.mark.parametrize("case", REJECTED)
def test_each_verdict_comes_from_the_shipped_schema(case):
    """Without the one constraint in the schema file that forbids it, the same manifest passes:
    the refusal is the schema's, not a rule of fabnode's own."""
    text, _, where = REJECTED[case]
    schema = load_schema()
    loosened = copy.deepcopy(schema)
    node = loosened
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = {}
    assert schema_violations(parse_manifest(text), schema_validator(loosened)) == []
    assert schema_violations(parse_manifest(text), schema_validator(schema)) != []


def test_every_message_names_the_file_once():
    manifest = parse_manifest(BASE.replace('repo = "https://example.org/pump"', 'repo = "example.org"')
                              + 'readme = "README.md"\nlicense-extra = 1\n')
    lines = [str(v) for v in schema_violations(manifest)] + lint_manifest(manifest, {"okh.toml"})
    assert lines == ["okh.toml repo: 'example.org' does not match the pattern '^https?://'",
                     "okh.toml field 'readme': 'README.md' is not in the bundle"]
    assert all(line.count("okh.toml") == 1 for line in lines)


def test_the_example_and_the_documented_planktoscope_manifest_are_valid():
    assert schema_violations(parse_manifest((EXAMPLE / "okh.toml").read_text(encoding="utf-8"))) == []


# ---------------------------------------------------------------- the CLI, as a lab runs it


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Cli:
    lab = Cli(tmp_path_factory.mktemp("okh-schema") / "home")
    lab.run("init", "--name", "Schema Lab")
    return lab


def _design(tmp: Path, name: str, manifest: str) -> Path:
    folder = tmp / name
    (folder / "cad").mkdir(parents=True)
    (folder / "cad" / "pump.scad").write_text(f"// {name}\ncube(10);\n", encoding="utf-8")
    (folder / "okh.toml").write_text(manifest, encoding="utf-8")
    return folder


def test_publish_refuses_a_schema_violation_in_one_line_and_stores_nothing(lab, tmp_path):
    before = (lab.out("designs"), lab.out("ls"))
    folder = _design(tmp_path, "otrl", REJECTED["OTRL-9"][0] + '[mass]\nvalue = 2\nunit = "lb"\n')
    line = lab.fails("publish", str(folder), "-m", "first")
    assert line == ("error: okh.toml does not follow the OKH-LOSH schema at mass.unit: 'lb' is not one of "
                    "['g', 'kg'] (and 1 more); fix it, or publish anyway with --force")
    assert (lab.out("designs"), lab.out("ls")) == before  # no version, no stored files


def test_publish_force_turns_violations_into_warnings_beside_the_advice(lab, tmp_path):
    folder = _design(tmp_path, "forced", REJECTED["english language"][0] + 'bom = "bom.csv"\n')
    result = lab.run("publish", str(folder), "-m", "forced", "--force", "--json")
    warnings = json.loads(result.stdout)["warnings"]
    assert warnings == [REJECTED["english language"][1],  # the schema's, first
                        "okh.toml field 'bom': 'bom.csv' is not in the bundle",  # then fabnode's advice
                        "okh.toml says nothing about how the design is made: add a [[part]] with "
                        "`manufacturing-process = \"…\"` and `material = \"…\"` (or a module `tsdc`) so labs can "
                        "find out whether they can make it",
                        "okh.toml: documentation-language: 'english language' is not a well-formed language tag "
                        "(BCP 47, e.g. sw, pt-BR, zh-Hant); not declared"]
    stderr = result.stderr.decode()
    assert all(f"warning: {w}" in stderr for w in warnings) and "okh.toml: okh.toml" not in stderr


def test_publish_accepts_what_the_schema_accepts_without_warnings(lab, tmp_path):
    folder = _design(tmp_path, "fine", ACCEPTED["an integer version"] + 'documentation-language = ["en", "sw"]\n'
                     '[[part]]\nname = "body"\nexport = ["cad/pump.scad"]\n'
                     'manufacturing-process = "3D printing"\nmaterial = "PLA"\n')
    result = lab.run("publish", str(folder), "-m", "fine", "--json")
    assert json.loads(result.stdout)["warnings"] == []
    version = json.loads(result.stdout)["version"]
    body = lab.json("show", version)["body"]
    assert body["label"] == "3" and body["language"] == "en", body  # the first documentation language
