"""OKH-LOSH manifests: parsing, linting against a bundle, summaries (protocol/okh.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabnode.protocol.errors import FabnodeError
from fabnode.protocol.okh import lint_manifest, manifest_summary, parse_manifest, schema_violations

HAND_PUMP = Path(__file__).resolve().parent.parent / "examples" / "hand-pump"

# A real manifest: PlanktoScope's okh.toml (github.com/PlanktoScope/PlanktoScope).
PLANKTOSCOPE = '''\
okhv = "OKH-LOSHv1.0"
name = "PlanktoScope"
function = "An open and affordable imaging platform for citizen oceanography"
version = "2.5"
repo = "https://github.com/PlanktoScope/PlanktoScope"
license = "CERN-OHL-S-2.0"
licensor = "Thibaut Pollina, Romain Bazile, Adam Larson, Will Major, Sebastian Wendel"
documentation-language = "en"
technology-readiness-level = "OTRL-5"
bom = "/hardware/bom.csv"
manufacturing-instructions = "/docs/hardware/manufacturing.md"
[[part]]
name = "PlanktoScope-Case"
source = "/hardware/case/PlanktoScope-Case.f3z"
export = ["/hardware/case/PlanktoScope-Case.dxf"]
'''
PLANKTOSCOPE_FILES = {
    "okh.toml", "hardware/bom.csv", "docs/hardware/manufacturing.md",
    "hardware/case/PlanktoScope-Case.f3z", "hardware/case/PlanktoScope-Case.dxf",
}

MINIMAL = {
    "okhv": "OKH-LOSHv1.0", "name": "Pump", "repo": "https://example.org/pump", "version": "1.0",
    "license": "CERN-OHL-S-2.0", "licensor": "Someone", "documentation-language": "en",
    "function": "Moves water",
}


def _with(**fields) -> dict:
    return {**MINIMAL, **{key.replace("_", "-"): value for key, value in fields.items()}}


def test_planktoscope_parses_and_lints_clean_against_its_own_files():
    manifest = parse_manifest(PLANKTOSCOPE)
    assert manifest["part"][0]["export"] == ["/hardware/case/PlanktoScope-Case.dxf"]
    assert lint_manifest(manifest, PLANKTOSCOPE_FILES) == []


def test_planktoscope_without_its_files_names_every_missing_path():
    assert lint_manifest(parse_manifest(PLANKTOSCOPE), {"okh.toml"}) == [
        "okh.toml field 'bom': '/hardware/bom.csv' is not in the bundle",
        "okh.toml field 'manufacturing-instructions': '/docs/hardware/manufacturing.md' is not in the bundle",
        "okh.toml part 1 ('PlanktoScope-Case') field 'source': '/hardware/case/PlanktoScope-Case.f3z' is not in the bundle",
        "okh.toml part 1 ('PlanktoScope-Case') field 'export': '/hardware/case/PlanktoScope-Case.dxf' is not in the bundle",
    ]


def test_planktoscope_summary():
    assert manifest_summary(parse_manifest(PLANKTOSCOPE)) == {
        "name": "PlanktoScope",
        "function": "An open and affordable imaging platform for citizen oceanography",
        "version": "2.5",
        "license": "CERN-OHL-S-2.0",
        "keywords": [],
    }


@pytest.mark.skipif(not (HAND_PUMP / "okh.toml").is_file(), reason="examples/hand-pump/okh.toml not written yet")
def test_hand_pump_example_lints_clean_against_its_folder():
    files = {p.relative_to(HAND_PUMP).as_posix() for p in HAND_PUMP.rglob("*") if p.is_file()}
    manifest = parse_manifest((HAND_PUMP / "okh.toml").read_text(encoding="utf-8"))
    assert lint_manifest(manifest, files) == []
    summary = manifest_summary(manifest)
    assert summary["license"] == "CERN-OHL-S-2.0"
    assert summary["name"] == manifest["name"]
    # Its paths are really checked: without the CAD file the lint must notice.
    assert any("cad/hand-pump.scad" in w for w in lint_manifest(manifest, files - {"cad/hand-pump.scad"}))


@pytest.mark.parametrize("text", ["name = ", "name = \"a\"\nname = \"b\"", "[[part]\nname = 1", "= 3"])
def test_invalid_toml_is_one_line_error(text):
    with pytest.raises(FabnodeError) as caught:
        parse_manifest(text)
    message = str(caught.value)
    assert message.startswith("okh.toml is not valid TOML: ")
    assert "\n" not in message


def test_parse_manifest_reports_where():
    with pytest.raises(FabnodeError, match=r"line 2"):
        parse_manifest('name = "x"\nversion = \n')


def test_empty_manifest_misses_every_required_field_by_the_schema_not_the_linter():
    assert [str(v) for v in schema_violations({})] == [
        f"okh.toml: {field!r} is a required property"
        for field in ("okhv", "name", "repo", "version", "license", "licensor", "function")]
    assert lint_manifest({}, set()) == []  # shapes and required fields are the schema's, said once


def test_minimal_manifest_is_clean():
    assert lint_manifest(MINIMAL, {"okh.toml"}) == []
    assert schema_violations(MINIMAL) == []


@pytest.mark.parametrize("field, value, message", [
    ("name", ["Pump"], "['Pump'] is not of type 'string'"),
    ("licensor", {"name": "x"}, "{'name': 'x'} is not of type 'array'"),
    ("okhv", "OKH-LOSHv2", "'OKH-LOSHv1.0' was expected"),
    ("version", True, "True is not of type 'string', 'number'"),
])
def test_wrong_types_are_the_schemas_verdict(field, value, message):
    assert [str(v) for v in schema_violations({**MINIMAL, field: value})] == [f"okh.toml {field}: {message}"]
    assert lint_manifest({**MINIMAL, field: value}, set()) == []


def test_blank_required_field_warns():
    assert lint_manifest({**MINIMAL, "name": "  "}, set()) == ["okh.toml field 'name' is empty"]


def test_invalid_licence_warns_with_the_reason():
    warnings = lint_manifest({**MINIMAL, "license": "CERN OHL"}, set())
    assert len(warnings) == 1
    assert warnings[0].startswith("okh.toml field 'license': not a valid SPDX licence expression: 'CERN OHL'")
    assert "unknown licence id 'CERN'" in warnings[0]


@pytest.mark.parametrize("licence", ["GPL-3.0", "MIT OR Apache-2.0", "LicenseRef-Fablab-1", "cern-ohl-w-2.0"])
def test_valid_or_deprecated_licences_do_not_warn(licence):
    assert lint_manifest({**MINIMAL, "license": licence}, set()) == []


def test_unknown_keys_never_warn():
    manifest = _with(**{"x-fablab-station": "laser", "openSCAD": {"a": 1}, "tags": 3, "release": []})
    assert lint_manifest(manifest, set()) == []


@pytest.mark.parametrize("path", [
    "cad/pump.scad", "/cad/pump.scad", "./cad/pump.scad", "cad//pump.scad", "cad/./pump.scad",
    "cad", "/cad/",  # a folder in the bundle
])
def test_paths_that_name_bundle_files(path):
    assert lint_manifest(_with(source=path), {"okh.toml", "cad/pump.scad"}) == []


@pytest.mark.parametrize("path, problem", [
    ("cad/pump.SCAD", "is not in the bundle"),  # bundle paths are case-sensitive
    ("pump.scad", "is not in the bundle"),
    ("ca", "is not in the bundle"),  # a prefix of a folder name is not a folder
    ("../cad/pump.scad", "has a '..' segment, which OKH-LOSH forbids"),
    ("cad/../cad/pump.scad", "has a '..' segment, which OKH-LOSH forbids"),
    ("", "names no file"),
    ("/", "names no file"),
])
def test_paths_that_do_not(path, problem):
    assert lint_manifest(_with(readme=path), {"okh.toml", "cad/pump.scad"}) == [
        f"okh.toml field 'readme': {path!r} {problem}"]


@pytest.mark.parametrize("url", ["https://example.org/bom.csv", "http://example.org/x", "HTTPS://EXAMPLE.ORG/y"])
def test_urls_are_not_checked(url):
    assert lint_manifest(_with(bom=url), {"okh.toml"}) == []


def test_every_path_field_is_checked_and_lists_are_walked():
    fields = ["readme", "contribution-guide", "image", "bom", "manufacturing-instructions",
              "user-manual", "source", "export", "auxiliary"]
    manifest = {**MINIMAL, **{field: ["ok.txt", f"missing-{field}.txt"] for field in fields}}
    assert lint_manifest(manifest, {"ok.txt"}) == [
        f"okh.toml field {field!r}: 'missing-{field}.txt' is not in the bundle" for field in fields]


@pytest.mark.parametrize("value", [3, ["a.txt", 3], {"a": "b"}])
def test_path_fields_of_the_wrong_type_are_the_schemas_verdict(value):
    assert lint_manifest(_with(export=value), {"a.txt"}) == []
    assert [v.path.split("[")[0] for v in schema_violations(_with(export=value))] == ["export"]


def test_part_paths_are_checked_and_their_shape_is_the_schemas():
    manifest = _with(part=[
        {"name": "piston", "source": "cad/piston.scad", "image": "img/piston.png"},
        {"source": "cad/valve.scad"},
        {"name": "rod"},
        {"name": 7, "source": ["cad/rod.scad"], "export": "cad/rod.stl"},
        "not a table",
    ])
    files = {"cad/piston.scad", "cad/valve.scad", "cad/rod.scad"}
    assert lint_manifest(manifest, files) == [
        "okh.toml part 1 ('piston') field 'image': 'img/piston.png' is not in the bundle",
        "okh.toml part 4 field 'export': 'cad/rod.stl' is not in the bundle",
    ]
    assert [str(v) for v in schema_violations(manifest)] == [
        "okh.toml part[1]: 'name' is a required property",
        "okh.toml part[2]: needs 'source' or 'export'",
        "okh.toml part[3].name: 7 is not of type 'string'",
        "okh.toml part[4]: 'not a table' is not of type 'object'",
    ]


def test_part_written_as_a_single_table_is_refused_by_the_schema():
    manifest = parse_manifest(_minimal_toml() + '[part]\nname = "x"\nsource = "x.scad"\n')
    assert lint_manifest(manifest, {"x.scad"}) == []
    assert [str(v) for v in schema_violations(manifest)] == [
        "okh.toml part: {'name': 'x', 'source': 'x.scad'} is not of type 'array'"]


def _minimal_toml() -> str:
    return "".join(f'{key} = "{value}"\n' for key, value in MINIMAL.items())


def test_summary_tolerates_wrong_types():
    manifest = {"name": ["x"], "function": 3, "version": 2.5, "license": {"a": 1}, "keywords": 4}
    assert manifest_summary(manifest) == {
        "name": None, "function": None, "version": None, "license": None, "keywords": []}


def test_summary_of_an_empty_manifest():
    assert manifest_summary({}) == {
        "name": None, "function": None, "version": None, "license": None, "keywords": []}


def test_summary_normalises_a_valid_licence_and_keeps_an_invalid_one_as_written():
    assert manifest_summary({"license": "gpl-3.0+"})["license"] == "GPL-3.0-or-later"
    assert manifest_summary({"license": "CERN OHL"})["license"] == "CERN OHL"


@pytest.mark.parametrize("fields, keywords", [
    ({"keywords": ["pump", "water"]}, ["pump", "water"]),
    ({"tags": ["pump", "water"]}, ["pump", "water"]),
    ({"keywords": ["pump"], "tags": ["ignored"]}, ["pump"]),
    ({"keywords": 5, "tags": ["water"]}, ["water"]),  # a mistyped keywords falls back to tags
    ({"keywords": ["pump", 3, None, "", "  ", "well"]}, ["pump", "well"]),
    ({"keywords": ["pump", "pump", "well"]}, ["pump", "well"]),
    ({"keywords": "pump, water ,well"}, ["pump", "water", "well"]),
    ({"keywords": []}, []),
])
def test_summary_keywords(fields, keywords):
    assert manifest_summary(fields)["keywords"] == keywords


_toml_scalars = st.one_of(st.text(max_size=20), st.integers(), st.floats(allow_nan=False), st.booleans())
_toml_values = st.recursive(_toml_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=8)
_keys = st.sampled_from(["okhv", "name", "license", "version", "source", "export", "image", "bom",
                         "auxiliary", "part", "keywords", "tags", "other"])


@given(st.dictionaries(_keys, _toml_values, max_size=8), st.sets(st.text(max_size=10), max_size=4))
@settings(max_examples=300)
def test_a_peer_cannot_crash_the_linter(manifest, files):
    """Manifests arrive from other nodes: any shape of TOML value gives warnings, never an exception."""
    warnings = lint_manifest(manifest, files) + [str(v) for v in schema_violations(manifest)]
    assert all(isinstance(w, str) and "\n" not in w and w.startswith("okh.toml") for w in warnings)
    summary = manifest_summary(manifest)
    assert all(isinstance(k, str) for k in summary["keywords"])
