"""OKH-LOSH manifests (``okh.toml``): parse, lint against the bundle, summarise for the index.

Linting only warns: real manifests carry extra keys and small mistakes, and a bundle is still
worth sharing (docs/protocol.md §3.6). Everything here works on values, so
the caller decides where the text and the bundle's file list come from.
"""

from __future__ import annotations

import datetime
import tomllib

from .errors import FabnodeError
from .licenses import check_spdx

REQUIRED_FIELDS = (
    "okhv", "name", "repo", "version", "license", "licensor", "documentation-language", "function",
)
PATH_FIELDS = (
    "readme", "contribution-guide", "image", "bom", "manufacturing-instructions", "user-manual",
    "source", "export", "auxiliary",
)
PART_PATH_FIELDS = ("source", "export", "image")
_URL_PREFIXES = ("http://", "https://")
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


def _toml_type(value: object) -> str:
    return _TOML_TYPE_NAMES.get(type(value), type(value).__name__)


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


def _paths_in(value: object) -> list[str] | None:
    """A path field's paths: a string or a list of strings; None when it is neither."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None


def _lint_paths(where: str, table: dict, fields: tuple[str, ...], files: set[str], folders: set[str]) -> list[str]:
    warnings = []
    for field in fields:
        if field not in table:
            continue
        paths = _paths_in(table[field])
        if paths is None:
            warnings.append(f"{where} field {field!r} should be a path or a list of paths, "
                            f"not {_toml_type(table[field])}")
            continue
        for path in paths:
            problem = _path_problem(path, files, folders)
            if problem is not None:
                warnings.append(f"{where} field {field!r}: {path!r} {problem}")
    return warnings


def _lint_parts(parts: object, files: set[str], folders: set[str]) -> list[str]:
    if isinstance(parts, dict):
        return ["okh.toml 'part' should be an array of tables ([[part]]), not a single table ([part])"]
    if not isinstance(parts, list):
        return [f"okh.toml 'part' should be an array of tables ([[part]]), not {_toml_type(parts)}"]
    warnings = []
    for number, part in enumerate(parts, start=1):
        if not isinstance(part, dict):
            warnings.append(f"okh.toml part {number} should be a table, not {_toml_type(part)}")
            continue
        name = part.get("name")
        where = f"okh.toml part {number} ({name!r})" if isinstance(name, str) else f"okh.toml part {number}"
        if "name" not in part:
            warnings.append(f"{where} has no 'name'")
        elif not isinstance(name, str):
            warnings.append(f"{where} field 'name' should be a string, not {_toml_type(name)}")
        if "source" not in part:
            warnings.append(f"{where} has no 'source'")
        warnings.extend(_lint_paths(where, part, PART_PATH_FIELDS, files, folders))
    return warnings


def lint_manifest(manifest: dict, bundle_paths: set[str]) -> list[str]:
    """One-line warnings about what an OKH-LOSH reader would miss or fail to find.

    ``bundle_paths`` are the bundle's files, relative to its root (where okh.toml sits), with '/'
    separators. Unknown keys never warn; URLs are not checked.
    """
    warnings = []
    for field in REQUIRED_FIELDS:
        if field not in manifest:
            warnings.append(f"okh.toml is missing the required field {field!r}")
        elif not isinstance(manifest[field], str):
            warnings.append(f"okh.toml field {field!r} should be a string, not {_toml_type(manifest[field])}")
        elif not manifest[field].strip():
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
    if licence is not None:
        try:
            licence = check_spdx(licence)
        except FabnodeError:
            pass
    return {
        "name": text("name"),
        "function": text("function"),
        "version": text("version"),
        "license": licence,
        "keywords": _keywords(manifest),
    }
