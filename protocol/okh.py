"""OKH-LOSH manifests (``okh.toml``): parse, check against the official schema, lint against the
bundle, summarise for the index.

Two lists, kept apart (issue 16):

* :func:`schema_violations` — what the official OKH-LOSH JSON schema (shipped in
  ``protocol/schemas/``, checked with the ``jsonschema`` package) rejects: a missing required
  field, a wrong type, ``OTRL-9``, a mass in ``lb``… ``publish`` refuses these unless ``--force``.
* :func:`lint_manifest` — fabnode's own advice, never a refusal: named files that are not in the
  bundle, a licence that is not a valid SPDX expression, a blank name. It never contradicts the
  schema: whatever the schema accepts (an integer ``version``, ``documentation-language`` as a
  list or absent, a part with ``export`` but no ``source``) draws no warning for its shape.

Every message names the file once (``okh.toml …``). Everything here works on values, so the
caller decides where the text and the bundle's file list come from.
"""

from __future__ import annotations

import datetime
import functools
import json
import re
import tomllib
from dataclasses import dataclass
from importlib import resources

from .errors import FabnodeError
from .licenses import check_spdx

SCHEMA_FILE = "okh-losh.schema.json"
"""The official schema, verbatim, in ``protocol/schemas/`` (its source and licence: README.md there)."""
MAX_MANIFEST_BYTES = 256 << 10
"""Largest okh.toml read: real manifests are a few KiB, and one from a peer's bundle is parsed and
validated before anything else (publish CID)."""
TEXT_FIELDS = ("name", "repo", "licensor", "function")
"""Fields whose blank value the schema accepts but nobody can use."""
PATH_FIELDS = (
    "readme", "contribution-guide", "image", "bom", "manufacturing-instructions", "user-manual",
    "source", "export", "auxiliary",
)
PART_PATH_FIELDS = ("source", "export", "image", "auxiliary")
_URL_PREFIXES = ("http://", "https://")
_MAX_MESSAGE = 240
_TOML_TYPE_NAMES = {
    str: "a string", bool: "a boolean", int: "an integer", float: "a float", list: "an array", dict: "a table",
    datetime.datetime: "a date-time", datetime.date: "a date", datetime.time: "a time",
}


def parse_manifest(text: str) -> dict:
    """The manifest as a dict; raises FabnodeError when the text is not TOML at all."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        reason = str(error).splitlines()[0] if str(error) else "unreadable"
        raise FabnodeError(f"okh.toml is not valid TOML: {reason}") from None
    except RecursionError:  # arrays nested thousands deep
        raise FabnodeError("okh.toml is not valid TOML: nested too deeply") from None


def _toml_type(value: object) -> str:
    return _TOML_TYPE_NAMES.get(type(value), type(value).__name__)


# ------------------------------------------------------------------ the official schema


@dataclass(frozen=True, slots=True)
class SchemaViolation:
    """One thing the OKH-LOSH schema rejects: where in the manifest, and why."""

    path: str
    """Where, as a JSON path without the ``$``: ``mass.unit``, ``part[1]`` (0-based, as in the
    schema's JSON view of the TOML), or ``""`` for the manifest as a whole."""
    message: str
    """The schema's verdict, one line (the validator's message, made readable for ``oneOf``)."""

    def __str__(self) -> str:
        return f"okh.toml {self.path}: {self.message}" if self.path else f"okh.toml: {self.message}"


def _ecma_to_python(pattern: str) -> str:
    """JSON Schema patterns are ECMA-262; the schema's BCP 47 pattern uses ``(?<name>…)`` groups
    (one name twice), which Python's ``re`` reads as an error. Names do not change what matches
    (the pattern has no back-references), so they become plain non-capturing groups."""
    return re.sub(r"\(\?<([A-Za-z][A-Za-z0-9]*)>", "(?:", pattern)


@functools.cache
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(_ecma_to_python(pattern))


def load_schema() -> dict:
    """The shipped OKH-LOSH schema, parsed (a fresh copy each call)."""
    return json.loads(resources.files(__package__).joinpath("schemas", SCHEMA_FILE).read_text(encoding="utf-8"))


@functools.cache
def _validator():
    return schema_validator(load_schema())


def schema_validator(schema: dict):
    """A draft-07 ``jsonschema`` validator for ``schema``, whose ``pattern`` keyword reads ECMA-262.

    ``format`` is not asserted (draft-07 makes it an annotation); ``webUrl`` still needs
    ``^https?://`` by its pattern. Imported lazily: most commands never validate a manifest."""
    from jsonschema import Draft7Validator, validators
    from jsonschema.exceptions import ValidationError

    def pattern(validator, patrn, instance, subschema):
        if validator.is_type(instance, "string") and not _compiled(patrn).search(instance):
            what = f" ({subschema['description']})" if subschema.get("description") else ""
            yield ValidationError(f"{instance!r} does not match the pattern {_short(patrn)}{what}")

    cls = validators.extend(Draft7Validator, {"pattern": pattern})
    cls.check_schema(schema)
    return cls(schema)


def _path(error) -> str:
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _message(error) -> str:
    """The validator's message; for ``oneOf``/``anyOf`` the reason inside, not "not valid under any
    of the given schemas"."""
    from jsonschema.exceptions import best_match

    context = list(error.context or ())
    if error.validator in ("oneOf", "anyOf") and context:
        if all(e.validator == "const" for e in context):
            allowed = ", ".join(repr(e.validator_value) for e in context)
            return f"{_short(error.instance)} is not one of {allowed}"
        if all(e.validator == "required" for e in context):
            return "needs " + " or ".join(repr(e.validator_value[0]) if len(e.validator_value) == 1
                                          else repr(e.validator_value) for e in context)
        specific = [e for e in context if e.validator != "type"] or context
        if error.validator == "oneOf" or len(specific) == 1:
            return _message(best_match(specific))
        return "; ".join(dict.fromkeys(_message(e) for e in specific))
    if error.validator == "not":
        branches = error.validator_value.get("anyOf", [error.validator_value])
        rules = [b["$comment"] for b in branches
                 if "$comment" in b and _validator().evolve(schema=b).is_valid(error.instance)]
        if rules:
            return f"{_short(error.instance)} breaks the rule: {', '.join(rules)}"
    return error.message


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def schema_violations(manifest: dict, validator=None) -> list[SchemaViolation]:
    """What the official OKH-LOSH schema rejects in ``manifest`` (a parsed okh.toml), sorted by
    path; empty when it is valid. Any TOML value is fine input (a peer's manifest included).
    ``validator`` (from :func:`schema_validator`) replaces the shipped schema's, for tests."""
    found = []
    def where(error) -> list[tuple[int, str]]:  # part[2] before part[10]
        return [(p, "") if isinstance(p, int) else (-1, str(p)) for p in error.absolute_path]

    for error in sorted((validator or _validator()).iter_errors(manifest), key=where):
        message = " ".join(_message(error).split())
        if len(message) > _MAX_MESSAGE:
            message = message[:_MAX_MESSAGE - 3] + "..."
        found.append(SchemaViolation(_path(error), message))
    return found


def schema_refusal(violations: list[SchemaViolation]) -> str:
    """The one line ``publish`` refuses with: the first violation, and how many more."""
    first = violations[0]
    more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
    where = f" at {first.path}" if first.path else ""
    return (f"okh.toml does not follow the OKH-LOSH schema{where}: {first.message}{more}; "
            "fix it, or publish anyway with --force")


# ------------------------------------------------------------------ fabnode's advice


def _bundle_index(bundle_paths: set[str]) -> tuple[set[str], set[str]]:
    """The bundle's files, and the directories they imply (a manifest may point at a folder)."""
    files = {path.strip("/") for path in bundle_paths}
    folders = set()
    for path in files:
        parts = path.split("/")
        folders.update("/".join(parts[:n]) for n in range(1, len(parts)))
    return files, folders


def _path_problem(path: str, files: set[str], folders: set[str]) -> str | None:
    """Why ``path`` (as written in the manifest) does not name something in the bundle."""
    if path.lower().startswith(_URL_PREFIXES):
        return None  # fabnode does not fetch; a URL is the author's promise
    segments = path.split("/")
    if ".." in segments:
        return "has a '..' segment, which OKH-LOSH forbids"
    relative = "/".join(s for s in segments if s not in ("", "."))
    if not relative:
        return "names no file"
    if relative in files or relative in folders:
        return None
    return "is not in the bundle"


def _paths_in(value: object) -> list[str]:
    """A path field's paths: a string or the strings of a list (a wrong shape is the schema's to report)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def _lint_paths(where: str, table: dict, fields: tuple[str, ...], files: set[str], folders: set[str]) -> list[str]:
    warnings = []
    for field in fields:
        for path in _paths_in(table.get(field)):
            problem = _path_problem(path, files, folders)
            if problem is not None:
                warnings.append(f"{where} field {field!r}: {path!r} {problem}")
    return warnings


def _lint_parts(parts: object, files: set[str], folders: set[str]) -> list[str]:
    if not isinstance(parts, list):
        return []  # the schema says it must be an array of tables
    warnings = []
    for number, part in enumerate(parts, start=1):
        if not isinstance(part, dict):
            continue
        name = part.get("name")
        where = f"okh.toml part {number} ({name!r})" if isinstance(name, str) else f"okh.toml part {number}"
        warnings.extend(_lint_paths(where, part, PART_PATH_FIELDS, files, folders))
    return warnings


def lint_manifest(manifest: dict, bundle_paths: set[str]) -> list[str]:
    """fabnode's advice: one-line warnings about what a reader of this bundle would miss.

    ``bundle_paths`` are the bundle's files, relative to its root (where okh.toml sits), with '/'
    separators. Shapes and required fields are the schema's (:func:`schema_violations`), not
    repeated here; unknown keys never warn; URLs are not checked.
    """
    warnings = []
    for field in TEXT_FIELDS:
        if isinstance(manifest.get(field), str) and not manifest[field].strip():
            warnings.append(f"okh.toml field {field!r} is empty")
    licence = manifest.get("license")
    if isinstance(licence, str) and licence.strip():
        try:
            check_spdx(licence)
        except FabnodeError as error:
            warnings.append(f"okh.toml field 'license': {error}")
    files, folders = _bundle_index(bundle_paths)
    warnings.extend(_lint_paths("okh.toml", manifest, PATH_FIELDS, files, folders))
    if "part" in manifest:
        warnings.extend(_lint_parts(manifest["part"], files, folders))
    return warnings


def _keywords(manifest: dict) -> list[str]:
    """OKH has no keywords field; ``keywords`` or else ``tags``, as a list or a comma-separated string."""
    for key in ("keywords", "tags"):
        value = manifest.get(key)
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list):
            words = [item.strip() for item in value if isinstance(item, str) and item.strip()]
            if words:
                return list(dict.fromkeys(words))
    return []


def manifest_summary(manifest: dict) -> dict:
    """The fields a listing shows; a missing or mistyped field is None rather than an error.

    ``license`` is normalised when it is a valid SPDX expression, else kept as written.
    """
    def text(key: str) -> str | None:
        value = manifest.get(key)
        return value if isinstance(value, str) else None

    licence = text("license")
    version = manifest.get("version")
    if type(version) is int:  # the schema allows a number: `version = 61`
        version = str(version)
    if licence is not None:
        try:
            licence = check_spdx(licence)
        except FabnodeError:
            pass
    return {
        "name": text("name"),
        "function": text("function"),
        "version": version if isinstance(version, str) else None,
        "license": licence,
        "keywords": _keywords(manifest),
    }
