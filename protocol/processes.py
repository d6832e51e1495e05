"""The controlled vocabulary of manufacturing processes (issue 18), and how free text is folded.

A lab says what it can do (``lab set --process``) and a design says what it needs (``okh.toml``,
issue 18's other half); both are matched by one canonical id per process. Each id is a short
lowercase word (``laser-cutting``), listed in :data:`PROCESSES` with:

* ``okh``: the OKH-LOSH term. OKH-LOSH's ``okh:manufacturingProcess`` is a free-text property of
  a part's production metadata (OKH-LOSH.ttl); its production-metadata notes group processes into
  technology-specific documentation criteria (TsDC, DIN SPEC 3105: ``3DP``, ``CNC``, ``WEL``,
  ``PCB``, ``MEC``, ``PRT``, ``ASM``, ``PRC-COT`` …). The label here is the wording those notes use.
* ``tsdc``: the TsDC id where one exists, else None (TsDC has no id for sewing or casting).
* ``synonyms``: other ways people write it; folded (:func:`fold_term`) before comparison, so
  ``"3D Printing"``, ``"3d_print"`` and ``"FDM"`` reach one id.

A term that is not in the vocabulary is kept as the lab typed it (folded) and shown as an unknown
process; :func:`nearest_processes` suggests what the operator may have meant.

Pure: no storage, clock or network.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    id: str
    """The canonical id, as signed in profiles and stored in indexes."""
    label: str
    """How the process is named to people (English; pages translate the page, not the term)."""
    okh: str
    """The OKH-LOSH production-metadata wording for it."""
    tsdc: str | None
    """The TsDC id (OKH-LOSH's production-metadata notes, DIN SPEC 3105), None where there is none."""
    synonyms: tuple[str, ...]
    """Other spellings, folded before lookup."""


def _p(pid: str, label: str, okh: str, tsdc: str | None, *synonyms: str) -> tuple[str, ProcessInfo]:
    return pid, ProcessInfo(pid, label, okh, tsdc, synonyms)


PROCESSES: dict[str, ProcessInfo] = dict([
    _p("3d-printing-fdm", "3D printing (FDM/FFF)", "3D printing", "3DP",
       "fdm", "fff", "3d printing", "3d print", "3d printer", "3dp", "fused deposition modeling",
       "fused filament fabrication", "additive manufacturing", "filament printing"),
    _p("3d-printing-sla", "3D printing (resin: SLA/DLP/MSLA)", "3D printing", "3DP",
       "sla", "dlp", "msla", "resin printing", "resin 3d printing", "stereolithography"),
    _p("3d-printing-sls", "3D printing (powder: SLS/MJF)", "3D printing", "3DP",
       "sls", "mjf", "selective laser sintering", "powder bed fusion"),
    _p("laser-cutting", "Laser cutting and engraving", "laser cutting", None,
       "laser cut", "laser cutter", "laser", "laser engraving", "co2 laser", "lasercutting"),
    _p("cnc-milling", "CNC milling and routing", "CNC machining", "CNC",
       "cnc", "cnc mill", "milling", "cnc routing", "cnc router", "router", "machining", "cnc machining"),
    _p("cnc-turning", "Turning (lathe)", "CNC machining", "CNC",
       "lathe", "turning", "cnc lathe", "metal lathe"),
    _p("waterjet-cutting", "Waterjet cutting", "waterjet cutting", None, "waterjet", "water jet", "water jet cutting"),
    _p("plasma-cutting", "Plasma cutting", "plasma cutting", None, "plasma", "cnc plasma"),
    _p("vinyl-cutting", "Vinyl and plotter cutting", "vinyl cutting", None,
       "vinyl cutter", "vinyl", "plotter cutting", "cutting plotter", "sign cutting"),
    _p("welding", "Welding", "welded assemblies", "WEL",
       "weld", "mig welding", "tig welding", "arc welding", "stick welding", "mig", "tig", "soldadura"),
    _p("brazing", "Brazing and metal soldering", "welded assemblies", "WEL", "braze", "silver soldering"),
    _p("sheet-metal", "Sheet-metal bending and forming", "sheet metal working", None,
       "sheet metal", "bending", "press brake", "metal bending", "sheet metal bending"),
    _p("metalworking", "Manual metalworking (drilling, sawing, filing)", "mechanical parts", "PRT",
       "metal work", "metal working", "drilling", "sawing", "grinding", "fitting"),
    _p("woodworking", "Woodworking", "mechanical parts", "PRT",
       "wood working", "carpentry", "joinery", "wood"),
    _p("casting", "Casting (metal, resin)", "casting", None, "metal casting", "resin casting", "foundry", "moulding", "molding"),
    _p("injection-moulding", "Injection moulding", "injection moulding", None,
       "injection molding", "plastic injection", "injection"),
    _p("vacuum-forming", "Vacuum forming", "thermoforming", None, "vacuum form", "thermoforming", "vacuum forming machine"),
    _p("composites", "Composites (fibreglass, carbon fibre)", "composite layup", None,
       "fibreglass", "fiberglass", "carbon fibre", "carbon fiber", "grp", "layup"),
    _p("pcb-milling", "PCB milling and etching", "PCB", "PCB",
       "pcb fabrication", "pcb etching", "etching", "pcb making", "pcb manufacturing"),
    _p("pcb-assembly", "PCB assembly and soldering", "PCB", "PCB",
       "soldering", "smd soldering", "electronics assembly", "through hole soldering", "smt", "reflow", "pcba",
       "electronics"),
    _p("mechanical-assembly", "Mechanical assembly", "mechanical assemblies", "MEC",
       "assembly", "assembling", "asm", "mechanical assemblies"),
    _p("coating", "Coating and painting", "coating and filling", "PRC-COT",
       "painting", "powder coating", "spray painting", "finishing"),
    _p("sewing", "Sewing and textiles", "textile processing", None,
       "textiles", "textile", "embroidery", "sewing machine", "stitching", "tailoring"),
    _p("ceramics", "Ceramics and pottery", "ceramics", None, "pottery", "kiln", "clay"),
    _p("electronics-testing", "Electronics testing and repair", "electronics testing", None,
       "electronics repair", "testing", "repair", "electronics test"),
])
"""The vocabulary, by canonical id. Adding a term later only teaches nodes a spelling: older
profiles keep meaning what they said (unknown terms are kept, and match once they are known)."""

MAX_TERM = 64
"""Characters in one process, material or machine-kind term."""

_SEPARATORS = re.compile(r"[\s\-_/]+")


def fold_term(text: str) -> str:
    """Text as a term is compared: NFKC, casefolded, trimmed, and every run of spaces, hyphens,
    underscores or slashes made one space (``"3D_Printing"`` and ``"3d  printing"`` agree)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _SEPARATORS.sub(" ", folded).strip()


def fold_material(text: str) -> str:
    """A material as it is compared and stored: the same folding as a process term
    (``"Plywood 6 mm"`` and ``"plywood-6mm"`` differ only in the space before mm)."""
    return fold_term(text)


def _build_index() -> dict[str, str]:
    index: dict[str, str] = {}
    for pid, info in PROCESSES.items():
        for spelling in (pid, info.label, *info.synonyms):
            index.setdefault(fold_term(spelling), pid)
        if info.tsdc and info.tsdc not in ("3DP", "CNC", "WEL", "PCB"):  # shared ids name a family, not one process
            index.setdefault(fold_term(info.tsdc), pid)
    return index


_INDEX = _build_index()


def canonical_process(text: str) -> str | None:
    """The canonical id for a process as anyone writes it, None when it is not in the vocabulary."""
    if not isinstance(text, str):
        return None
    return _INDEX.get(fold_term(text))


def nearest_processes(text: str, n: int = 3) -> list[str]:
    """Canonical ids the operator may have meant by an unknown term (closest spellings first)."""
    import difflib  # only when a term is unknown: importing it costs a reading command time

    found: list[str] = []
    for spelling in difflib.get_close_matches(fold_term(text), list(_INDEX), n=n * 3, cutoff=0.6):
        pid = _INDEX[spelling]
        if pid not in found:
            found.append(pid)
    return found[:n]


__all__ = ["PROCESSES", "ProcessInfo", "canonical_process", "fold_material", "fold_term", "nearest_processes"]
