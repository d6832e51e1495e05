"""Who can make a design, and what a lab can make: matching needs against lab profiles (issue 18).

A design needs processes and materials (protocol/requirements.py); a lab profile declares the
processes it has and the materials it usually stocks (protocol/labs.py's ``LabProfile``). A lab
*can make* a design when it has every need; it is *one short* when exactly one is missing, and
that one is named, because "they have all but the welder" is what a lab wants to hear before it
calls. Processes outside the vocabulary match only a lab that declared the same folded words.

Ranking, for labs: those with everything first, then those one short; within each, nearest
first (labs without coordinates last), then most trusted (trust weight from
protocol/reputation.py, untrusted at 0), then by name. For designs: those it can make first,
then those one short, each by title.

Pure: distances come from protocol/geo.py, trust and "here" are arguments.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .geo import distance_km


@dataclass(frozen=True, slots=True)
class Needs:
    """What one design needs, as matched (canonical processes, unknown ones folded, materials folded)."""

    processes: tuple[str, ...] = ()
    unknown_processes: tuple[str, ...] = ()
    materials: tuple[str, ...] = ()

    def pairs(self) -> list[tuple[str, str]]:
        return ([("process", p) for p in self.processes] + [("process", p) for p in self.unknown_processes]
                + [("material", m) for m in self.materials])


def capabilities(profile) -> set[tuple[str, str]]:
    """(kind, term) pairs a lab profile declares: its canonical processes, its unknown ones as
    it wrote them (folded), its materials (folded)."""
    return ({("process", p) for p in profile.processes} | {("process", p) for p in profile.unknown_processes}
            | {("material", m) for m in profile.materials})


def missing(needs: Needs, have: set[tuple[str, str]]) -> list[tuple[str, str]]:
    """The needs ``have`` lacks, in the order :meth:`Needs.pairs` gives."""
    return [pair for pair in needs.pairs() if pair not in have]


@dataclass(frozen=True, slots=True)
class LabMatch:
    profile: object
    """The lab's LabProfile."""
    missing: tuple[tuple[str, str], ...]
    """What it lacks: () when it has everything, one (kind, term) when one short."""
    distance_km: float | None
    """From "here" to the lab, None when either has no coordinates."""
    trust: float
    """This node's trust in the lab's key (0 when untrusted)."""

    @property
    def complete(self) -> bool:
        return not self.missing


def match_labs(needs: Needs, profiles: Iterable, *, here: tuple[float, float] | None,
               trust: Mapping[str, float], radius_km: float | None = None, max_missing: int = 1) -> list[LabMatch]:
    """Labs that can make something needing ``needs``, then those one short, ranked (module doc).

    ``radius_km`` (with ``here``) drops labs farther away, and labs whose distance is unknown."""
    out = []
    for profile in profiles:
        lacks = missing(needs, capabilities(profile))
        if len(lacks) > max_missing:
            continue
        distance = None
        if here is not None and profile.lat is not None and profile.lon is not None:
            distance = distance_km(here[0], here[1], profile.lat, profile.lon)
        if radius_km is not None and here is not None and (distance is None or distance > radius_km):
            continue
        out.append(LabMatch(profile, tuple(lacks), distance, float(trust.get(profile.author, 0.0))))
    out.sort(key=lambda m: (len(m.missing), m.distance_km is None, m.distance_km or 0.0, -m.trust,
                            m.profile.name.casefold(), m.profile.author))
    return out


@dataclass(frozen=True, slots=True)
class DesignMatch:
    design: bytes
    title: str
    missing: tuple[tuple[str, str], ...]
    needs: Needs

    @property
    def complete(self) -> bool:
        return not self.missing


def match_designs(candidates: Iterable[tuple[bytes, str, Needs]], have: set[tuple[str, str]],
                  max_missing: int = 1) -> list[DesignMatch]:
    """Designs a lab with ``have`` can make, then those one short (naming what), by title.

    ``candidates``: (design, title, needs); designs needing nothing known are left out (nothing
    to match: their requirements are unknown, not met)."""
    out = []
    for design, title, needs in candidates:
        if not needs.pairs():
            continue
        lacks = missing(needs, have)
        if len(lacks) <= max_missing:
            out.append(DesignMatch(design, title, tuple(lacks), needs))
    out.sort(key=lambda m: (len(m.missing), m.title.casefold(), m.design))
    return out


def describe_missing(lacks: Iterable[tuple[str, str]]) -> str:
    """'no laser-cutting' / 'no plywood 6 mm in stock': what a lab lacks, in words."""
    words = [f"no {term}" if kind == "process" else f"no {term} in stock" for kind, term in lacks]
    return ", ".join(words)
