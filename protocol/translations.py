"""Translations of a design's documentation (issue 19; docs/protocol.md §4.2, §4.6).

A translation is a version record of the *same* design as the version it translates, with two
more body fields: ``language`` (a BCP 47 tag) and ``translation_of`` (a link to the version
translated). Any version may carry ``language`` alone: the language its documentation is
written in. A translation never counts in the design's lineage: it is neither canonical nor a
head, whoever signed it (:func:`fabnode.protocol.lineage.canonical_and_heads` is given the
design's other versions only).

Rules here are pure: they look at a record's body and at what the caller found under the link.

Language tags are checked for the *well-formed* syntax of RFC 5646 (its section 2.1), not against the IANA
registry: a registry would need updating on every node, and a tag that is well-formed but not
registered harms nobody. One stricter rule: the primary language subtag must be 2 or 3 letters
(ISO 639). RFC 5646 also lets it be 4 to 8 letters, reserved for future registration, but the
registry holds none, and refusing them catches ``english`` or ``kiswahili`` typed for a tag. Tags are kept in RFC 5646's canonical case (``sw``, ``zh-Hant-TW``,
``sr-Latn``), so one language has one spelling in records: :func:`normalize_tag` turns what a
person typed (``SW``, ``pt_BR``) into that form, and a record holding any other spelling is
refused. Grandfathered irregular tags (``i-klingon``…) are refused.
"""

from __future__ import annotations

import re

from .errors import FabnodeError

MAX_TAG = 64
"""Longer than any sensible tag (RFC 5646, section 4.4.1, asks for buffers of 35 characters at least)."""

_ALNUM = r"[A-Za-z0-9]"
_LANGTAG = re.compile(
    r"(?P<language>[A-Za-z]{2,3}(?:-[A-Za-z]{3}){0,3}|[A-Za-z]{4}|[A-Za-z]{5,8})"
    r"(?:-(?P<script>[A-Za-z]{4}))?"
    r"(?:-(?P<region>[A-Za-z]{2}|[0-9]{3}))?"
    rf"(?P<variants>(?:-(?:{_ALNUM}{{5,8}}|[0-9]{_ALNUM}{{3}}))*)"
    rf"(?P<extensions>(?:-[0-9A-WY-Za-wy-z](?:-{_ALNUM}{{2,8}})+)*)"
    rf"(?:-(?P<private>[xX](?:-{_ALNUM}{{1,8}})+))?"
)
_PRIVATE = re.compile(rf"[xX](?:-{_ALNUM}{{1,8}})+")


class BadLanguage(FabnodeError):
    """Not a well-formed BCP 47 tag; the message says why, in one line."""


def normalize_tag(text: str) -> str:
    """A well-formed BCP 47 tag in canonical case; ``_`` (as in ``LANG=pt_BR``) read as ``-``."""
    if not isinstance(text, str):
        raise BadLanguage("a language tag is text")
    tag = text.strip().replace("_", "-")
    if not tag or len(tag) > MAX_TAG:
        raise BadLanguage(f"{text[:80]!r} is not a language tag (BCP 47, e.g. sw, pt-BR, zh-Hant): "
                          f"empty or longer than {MAX_TAG} characters")
    if _PRIVATE.fullmatch(tag):
        return tag.lower()
    m = _LANGTAG.fullmatch(tag)
    if m is None:
        raise BadLanguage(f"{text[:80]!r} is not a well-formed language tag (BCP 47, e.g. sw, pt-BR, zh-Hant)")
    if len(m["language"]) > 3 and "-" not in m["language"]:
        raise BadLanguage(f"{text[:80]!r} is not a language tag: the language subtag is 2 or 3 letters "
                          "(ISO 639, e.g. sw, en, hi); the registry assigns no longer ones")
    variants = [v.lower() for v in m["variants"].split("-") if v]
    if len(set(variants)) != len(variants):
        raise BadLanguage(f"{text!r} repeats a variant subtag")
    singletons = re.findall(r"-([0-9A-WY-Za-wy-z])(?=-)", "-" + m["extensions"])
    if len({s.lower() for s in singletons}) != len(singletons):
        raise BadLanguage(f"{text!r} repeats an extension singleton")
    parts = [m["language"].lower()]
    if m["script"]:
        parts.append(m["script"].title())
    if m["region"]:
        parts.append(m["region"].upper())
    parts.extend(variants)
    if m["extensions"]:
        parts.append(m["extensions"].strip("-").lower())
    if m["private"]:
        parts.append(m["private"].lower())
    return "-".join(parts)


def check_tag(value) -> str:
    """A record's ``language``: well-formed and already in canonical case (one spelling)."""
    canonical = normalize_tag(value)
    if canonical != value:
        raise BadLanguage(f"{value!r} is not in canonical case (write {canonical!r})")
    return value


def primary(tag: str) -> str:
    return tag.split("-", 1)[0].lower()


def tag_from_env(value: str | None) -> str | None:
    """The language a POSIX locale (``LANG``/``LANGUAGE``) asks for: ``sw_TZ.UTF-8`` → ``sw-TZ``;
    ``C``, ``POSIX`` or anything unreadable → None."""
    if not value:
        return None
    first = value.split(":")[0].split(".")[0].split("@")[0]
    if first in ("", "C", "POSIX"):
        return None
    try:
        return normalize_tag(first)
    except BadLanguage:
        return None


def matches(asked: str, tag: str | None) -> int:
    """How well ``tag`` answers a request for ``asked``: 2 the same tag, 1 the same language
    (``sw`` for ``sw-TZ`` or the reverse), 0 not at all."""
    if tag is None:
        return 0
    if tag.lower() == asked.lower():
        return 2
    return 1 if primary(tag) == primary(asked) else 0


def translation_problem(design: bytes, target_type: str | None, target_design: bytes | None,
                        target_is_translation: bool) -> str | None:
    """Why a translation of ``design`` cannot point where its ``translation_of`` points, or None.

    ``target_type`` is the type of the record held under the link (None: nothing held yet; then
    the translation waits, and is shown once its target arrives and fits)."""
    if target_type is None:
        return None
    if target_type != "version":
        return f"body.translation_of names {_article(target_type)} {target_type} record, not a version"
    if target_design != design:
        return "body.translation_of names a version of another design (a translation belongs to the design it translates)"
    if target_is_translation:
        return "body.translation_of names a translation: translate the original version, not a translation"
    return None


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def files_changed(before: dict[str, bytes], after: dict[str, bytes]) -> int:
    """Files added, removed or changed (by CID) from one file tree (path -> CID) to another."""
    return len(before.keys() ^ after.keys()) + sum(1 for p in before.keys() & after.keys() if before[p] != after[p])
