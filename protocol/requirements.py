"""What a design needs to be made: processes, materials, tools and BOM items from its okh.toml.

Read from the OKH-LOSH fields a manifest already has (issue 18), so a manifest stays valid
against the official schema:

* each ``[[part]]``'s ``manufacturing-process`` (text or list of texts) and ``tsdc`` (a
  Technology-specific Documentation Criteria id such as ``3DP``, ``LAS``, ``WEL``; text or list),
  and the module's own ``tsdc``: folded to fabnode's process vocabulary
  (:mod:`protocol.processes`); a term the vocabulary does not know is kept, folded, and flagged;
* each part's ``material`` (text or list): folded with :func:`protocol.processes.fold_material`;
* ``tools`` (a list of texts; not an OKH-LOSH field, kept for people who write one) and the item
  names of the BOM CSV that ``bom`` points at, when its text is given: shown, never matched.

Only processes and materials are matched against labs (protocol/canmake.py): they are what a
lab's profile declares. What is missing or unknown becomes a lint warning that says what to add.

Pure: values in, values out. Every list is bounded, so a hostile manifest costs little.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from .processes import PROCESSES, canonical_process, fold_material, fold_term

MAX_PARTS = 500
"""Parts read from one manifest; more are ignored (with a warning)."""
MAX_TERMS = 64
"""Distinct processes, and distinct materials, kept per design."""
MAX_TERM = 100
"""Characters in one process or material name: a name, not a paragraph."""
MAX_BOM_ITEMS = 200
MAX_TOOLS = 100
BOM_NAME_COLUMNS = ("item", "name", "part", "description")


@dataclass(frozen=True, slots=True)
class Requirements:
    """What one version of a design says it needs."""

    processes: tuple[str, ...]
    """Canonical process ids (protocol/processes.py), sorted."""
    unknown_processes: tuple[str, ...]
    """Process terms the vocabulary does not know, folded, sorted: matched only word for word."""
    materials: tuple[str, ...]
    """Folded material names, sorted."""
    tools: tuple[str, ...] = ()
    bom_items: tuple[str, ...] = ()
    parts: int = 0
    """How many parts the manifest lists."""

    @property
    def empty(self) -> bool:
        """Nothing to match a lab against: the manifest names no process and no material."""
        return not (self.processes or self.unknown_processes or self.materials)

    def needs(self) -> tuple[tuple[str, str], ...]:
        """(kind, term) pairs a lab must have: kind is "process" or "material" (an unknown
        process is a "process" term outside the vocabulary)."""
        return tuple([("process", p) for p in self.processes] + [("process", p) for p in self.unknown_processes]
                     + [("material", m) for m in self.materials])


def _family_heads() -> dict[str, str]:
    """TsDC id (folded) -> the first process of the vocabulary in that family: ``WEL`` ->
    welding, ``CNC`` -> cnc-milling, ``PCB`` -> pcb-milling. A TsDC id names a family of
    processes; a design that gives only the id is matched by the family's most common process
    (the vocabulary lists it first), and ``manufacturing-process`` says more when it matters."""
    heads: dict[str, str] = {}
    for pid, info in PROCESSES.items():
        if info.tsdc:
            heads.setdefault(fold_term(info.tsdc), pid)
    return heads


_TSDC_HEADS = _family_heads()


def process_of(term: str) -> str | None:
    """The canonical process a manifest's term means: a vocabulary term or synonym, else a TsDC id."""
    return canonical_process(term) or _TSDC_HEADS.get(fold_term(term))


def _texts(value: object) -> list[str] | None:
    """A field that is text or a list of texts, as a list; None when it is neither."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _where(number: int, part: dict) -> str:
    name = part.get("name")
    return f"part {name!r}" if isinstance(name, str) and name.strip() else f"part {number}"


class _Collector:
    """Gathers terms with their bounds; remembers what it had to leave out."""

    def __init__(self) -> None:
        self.processes: set[str] = set()
        self.unknown: set[str] = set()
        self.materials: set[str] = set()
        self.warnings: list[str] = []

    def process(self, term: str, where: str, field: str) -> bool:
        """Add one process term; True when it named something."""
        term = term.strip()
        if not term:
            return False
        if len(term) > MAX_TERM:
            self.warnings.append(f"okh.toml: {where}: {field} is longer than {MAX_TERM} characters (ignored): "
                                 "name the process, describe it in the manufacturing instructions")
            return False
        canonical = process_of(term)
        if canonical is not None:
            if len(self.processes) < MAX_TERMS:
                self.processes.add(canonical)
            return True
        folded = fold_term(term)
        if folded in self.unknown:
            return True  # warned about once already
        if len(self.unknown) < MAX_TERMS:
            self.unknown.add(folded)
        self.warnings.append(f"okh.toml: {where}: {field} {term!r} is not in fabnode's process vocabulary "
                             "(kept, but only labs that wrote the same words match it): use a term from "
                             "'fabnode lab set --help' or a TsDC id such as 3DP, CNC, WEL or PCB")
        return True

    def material(self, term: str, where: str) -> bool:
        term = term.strip()
        if not term:
            return False
        if len(term) > MAX_TERM:
            self.warnings.append(f"okh.toml: {where}: material is longer than {MAX_TERM} characters (ignored): "
                                 "name the material, give grades and sizes in the BOM")
            return False
        if len(self.materials) < MAX_TERMS:
            self.materials.add(fold_material(term))
        return True


def bom_item_names(text: str) -> tuple[str, ...]:
    """Item names from a BOM CSV: the column called item, name, part or description (else the
    first), in file order, each once, at most :data:`MAX_BOM_ITEMS`."""
    try:
        rows = csv.reader(io.StringIO(text))
        header = next(rows, None)
        if not header:
            return ()
        lowered = [h.strip().casefold() for h in header]
        column = next((lowered.index(c) for c in BOM_NAME_COLUMNS if c in lowered), 0)
        names: dict[str, None] = {}
        for row in rows:
            if column < len(row) and row[column].strip():
                names.setdefault(row[column].strip()[:MAX_TERM], None)
                if len(names) >= MAX_BOM_ITEMS:
                    break
        return tuple(names)
    except csv.Error:
        return ()


def read_requirements(manifest: dict, bom_csv: str | None = None) -> tuple[Requirements, list[str]]:
    """The requirements a manifest states, and one-line warnings saying what to add or fix."""
    found = _Collector()
    module_tsdc = _texts(manifest.get("tsdc", []))
    if module_tsdc is None:
        found.warnings.append("okh.toml: 'tsdc' should be a TsDC id or a list of them (such as \"3DP\" or [\"LAS\", \"WEL\"])")
        module_tsdc = []
    for term in module_tsdc:
        found.process(term, "the module", "tsdc")
    parts = manifest.get("part", [])
    parts = parts if isinstance(parts, list) else []  # okh.py's lint already says what is wrong
    if len(parts) > MAX_PARTS:
        found.warnings.append(f"okh.toml lists {len(parts)} parts: only the first {MAX_PARTS} were read for requirements")
    counted = 0
    for number, part in enumerate(parts[:MAX_PARTS], start=1):
        if not isinstance(part, dict):
            continue
        counted += 1
        where = _where(number, part)
        named = False
        for field in ("manufacturing-process", "tsdc"):
            if field not in part:
                continue
            terms = _texts(part[field])
            if terms is None:
                found.warnings.append(f"okh.toml: {where}: {field} should be text or a list of texts")
                continue
            for term in terms:
                named = found.process(term, where, field) or named
        if not named:
            found.warnings.append(f"okh.toml: {where} names no manufacturing process: add "
                                  "`manufacturing-process = \"…\"` (such as \"laser cutting\") or a TsDC id "
                                  "(`tsdc = \"WEL\"`) so labs can tell whether they can make it")
        materials = _texts(part.get("material", []))
        if materials is None:
            found.warnings.append(f"okh.toml: {where}: material should be text or a list of texts")
            materials = []
        if not any([found.material(m, where) for m in materials]):
            found.warnings.append(f"okh.toml: {where} names no material: add `material = \"…\"` "
                                  "(such as \"plywood 6 mm\" or \"PLA\")")
    if not parts and not module_tsdc:
        found.warnings.append("okh.toml says nothing about how the design is made: add a [[part]] with "
                              "`manufacturing-process = \"…\"` and `material = \"…\"` (or a module `tsdc`) "
                              "so labs can find out whether they can make it")
    tools = _texts(manifest.get("tools", [])) or []
    requirements = Requirements(
        processes=tuple(sorted(found.processes)),
        unknown_processes=tuple(sorted(found.unknown)),
        materials=tuple(sorted(found.materials)),
        tools=tuple(dict.fromkeys(t.strip()[:MAX_TERM] for t in tools if t.strip()))[:MAX_TOOLS],
        bom_items=bom_item_names(bom_csv) if bom_csv else (),
        parts=counted,
    )
    return requirements, list(dict.fromkeys(found.warnings))


def bom_path(manifest: dict) -> str | None:
    """The bundle-relative path of the manifest's BOM when it is a local CSV file, else None."""
    value = manifest.get("bom")
    if not isinstance(value, str) or value.lower().startswith(("http://", "https://")):
        return None
    path = "/".join(s for s in value.split("/") if s not in ("", "."))
    if not path or ".." in path.split("/") or not path.lower().endswith(".csv"):
        return None
    return path
