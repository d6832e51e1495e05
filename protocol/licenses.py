"""SPDX licence expressions and the share-alike question (docs/protocol.md §3.6).

An OKH manifest's ``license`` is an SPDX expression written by hand, and a design derived from a
share-alike design must stay share-alike, so fabnode checks both before it publishes a version.

The licence list comes from the ``license-expression`` package (it vendors the ScanCode licence
index, which carries the SPDX list with deprecated ids as aliases). Its own parser is not used: it
crashes with ``AttributeError`` on ``"MIT AND"``, reads ``"CERN OHL"`` as one id, and refuses
``LicenseRef-`` ids, so the SPDX grammar (spec annex D) is parsed here, strictly.
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

from .errors import FabnodeError

# SPDX idstring is 1*(ALPHA / DIGIT / "-" / "."), optionally followed by "+" ("or later").
_TOKEN = re.compile(r"(?:(?P<paren>[()])|(?P<word>(?:DocumentRef-[A-Za-z0-9.\-]+:)?[A-Za-z0-9.\-]+\+?))")
_ID = re.compile(r"[A-Za-z0-9.\-]+\+?")
_OPERATORS = ("AND", "OR", "WITH")
_LICENSE_REF = re.compile(r"(?:(DocumentRef-)([A-Za-z0-9.\-]+):)?(LicenseRef-)([A-Za-z0-9.\-]+)", re.IGNORECASE)
_ADDITION_REF = re.compile(r"(?:(DocumentRef-)([A-Za-z0-9.\-]+):)?(AdditionRef-)([A-Za-z0-9.\-]+)", re.IGNORECASE)
# ScanCode flags these SPDX *licence* ids as exceptions; SPDX lists them as licences.
_SPDX_LICENCES_SCANCODE_CALLS_EXCEPTIONS = frozenset({"MPL-2.0-no-copyleft-exception"})
# Deprecated SPDX ids that bundled a licence and an exception, and what SPDX says to write now.
_DEPRECATED_WITH = {
    "gpl-2.0-with-autoconf-exception": ("GPL-2.0-only", "Autoconf-exception-2.0"),
    "gpl-2.0-with-bison-exception": ("GPL-2.0-only", "Bison-exception-2.2"),
    "gpl-2.0-with-classpath-exception": ("GPL-2.0-only", "Classpath-exception-2.0"),
    "gpl-2.0-with-font-exception": ("GPL-2.0-only", "Font-exception-2.0"),
    "gpl-2.0-with-gcc-exception": ("GPL-2.0-only", "GCC-exception-2.0"),
    "gpl-3.0-with-autoconf-exception": ("GPL-3.0-only", "Autoconf-exception-3.0"),
    "gpl-3.0-with-gcc-exception": ("GPL-3.0-only", "GCC-exception-3.1"),
    "ecos-2.0": ("GPL-2.0-or-later", "eCos-exception-2.0"),
    "wxwindows": ("LGPL-2.0-or-later", "WxWindows-exception-3.1"),
}
# ScanCode aliases that are not SPDX ids: a bare "GPL" names no version, so it is refused.
_NOT_SPDX_ALIASES = frozenset({"gpl", "bsd-2"})
_MAX_SHOWN = 120


class _Licence(NamedTuple):
    """One licence id, with the exception it carries (``A WITH B``), if any."""

    id: str
    exception: str | None = None


class _Compound(NamedTuple):
    op: str  # "AND" or "OR"
    parts: tuple


class _Entry(NamedTuple):
    canonical: str
    as_licence: bool
    as_exception: bool


@functools.cache
def _spdx_table() -> dict[str, _Entry]:
    """Lower-case SPDX id (current or deprecated) -> its canonical id; built once, on first use."""
    # Imported here, not at the top: ~40 ms to import and ~10 ms to read its JSON index, paid only
    # by commands that check a licence.
    from license_expression import get_license_index

    table: dict[str, _Entry] = {}
    aliases: list[tuple[str, _Entry]] = []
    for item in get_license_index():
        key = item.get("spdx_license_key")
        if not key or key.lower().startswith("licenseref-") or not _ID.fullmatch(key):
            continue  # ScanCode-only licences: written as LicenseRef-scancode-... they are custom refs
        exception = bool(item.get("is_exception"))
        # A deprecated id flagged as an exception is an old combined licence such as
        # GPL-2.0-with-classpath-exception, which SPDX lists as a (deprecated) licence.
        licence = (not exception or bool(item.get("is_deprecated"))
                   or key in _SPDX_LICENCES_SCANCODE_CALLS_EXCEPTIONS)
        entry = _Entry(key, licence, exception)
        table[key.lower()] = entry
        for alias in item.get("other_spdx_license_keys") or ():
            if (_ID.fullmatch(alias) and not alias.lower().startswith("licenseref-")
                    and alias.lower() not in _NOT_SPDX_ALIASES):
                aliases.append((alias.lower(), entry))
    for alias, entry in aliases:
        table.setdefault(alias, entry)  # a current id always wins over someone's old alias
    return table


class _Invalid(Exception):
    """Why an expression is not valid SPDX; becomes the text in brackets of the FabnodeError."""


def _shown(text: str, limit: int = _MAX_SHOWN) -> str:
    """repr() of user text, cut short so the error stays one readable line."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _tokens(expression: str) -> list[str]:
    tokens, pos = [], 0
    while True:
        while pos < len(expression) and expression[pos].isspace():
            pos += 1
        if pos == len(expression):
            return tokens
        match = _TOKEN.match(expression, pos)
        if match is None:
            raise _Invalid(f"unexpected character {expression[pos]!r}")
        word = match.group("paren") or match.group("word")
        tokens.append(word.upper() if word.upper() in _OPERATORS else word)
        pos = match.end()


def _suggestion(word: str) -> str:
    """A hint for an id that is a known id minus its version or variant: 'CERN-OHL-S', 'CC-BY-SA'."""
    stem = word.rstrip("+").lower() + "-"
    close = sorted({e.canonical for k, e in _spdx_table().items() if k.startswith(stem) and e.as_licence})
    if not close:
        return ""
    if len(close) <= 5:
        return f"; did you mean {_one_of(close)}?"
    versions = {c: v[1] for c in close if (v := _version(c)) is not None}
    if not versions:
        return ""
    newest = max(versions.values())
    latest = [c for c, v in versions.items() if v == newest][:3]
    return f"; did you mean {_one_of(latest)} (or another version)?"


def _one_of(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _licence_id(word: str) -> str:
    ref = _LICENSE_REF.fullmatch(word)
    if ref:
        doc = f"DocumentRef-{ref.group(2)}:" if ref.group(1) else ""
        return f"{doc}LicenseRef-{ref.group(4)}"
    if _LICENSE_REF.fullmatch(word[:-1]):
        raise _Invalid(f"'+' cannot follow a LicenseRef id ({_shown(word, 60)})")
    if _ADDITION_REF.fullmatch(word) or ":" in word:
        raise _Invalid(f"{_shown(word, 60)} is not a licence id")
    table = _spdx_table()
    entry = table.get(word.lower())
    suffix = ""
    if entry is None and word.endswith("+"):
        entry, suffix = table.get(word[:-1].lower()), "+"
    if entry is None:
        raise _Invalid(f"unknown licence id {_shown(word, 60)}{_suggestion(word)}")
    if not entry.as_licence:
        raise _Invalid(f"{entry.canonical!r} is a licence exception: it goes after WITH")
    return entry.canonical + suffix


def _exception_id(word: str) -> str:
    ref = _ADDITION_REF.fullmatch(word)
    if ref:
        doc = f"DocumentRef-{ref.group(2)}:" if ref.group(1) else ""
        return f"{doc}AdditionRef-{ref.group(4)}"
    entry = _spdx_table().get(word.lower())
    if entry is None:
        raise _Invalid(f"unknown licence exception id {_shown(word, 60)}")
    if not entry.as_exception:
        raise _Invalid(f"{entry.canonical!r} after WITH is a licence, not a licence exception")
    return entry.canonical


class _Parser:
    """Recursive descent over SPDX precedence: WITH binds tighter than AND, AND than OR."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens, self.pos = tokens, 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def parse(self):
        if not self.tokens:
            raise _Invalid("it is empty")
        tree = self.compound("OR")
        extra = self.peek()
        if extra == ")":
            raise _Invalid("')' without a matching '('")
        if extra is not None:
            raise _Invalid(f"AND or OR missing before {_shown(extra, 60)}")
        return tree

    def compound(self, op: str):
        below = (lambda: self.compound("AND")) if op == "OR" else self.operand
        parts = [below()]
        while self.peek() == op:
            self.take()
            parts.append(below())
        flat: list = []
        for part in parts:
            flat.extend(part.parts if isinstance(part, _Compound) and part.op == op else [part])
        return flat[0] if len(flat) == 1 else _Compound(op, tuple(flat))

    def operand(self):
        before = self.tokens[self.pos - 1] if self.pos else None
        token = self.peek()
        if token is None:
            raise _Invalid(f"nothing after {before!r}")
        if token == "(":
            self.take()
            inner = self.compound("OR")
            if self.peek() != ")":
                raise _Invalid("'(' is never closed")
            self.take()
            if self.peek() == "WITH":
                raise _Invalid("WITH must follow a single licence id, not a bracketed expression")
            return inner
        if token in _OPERATORS or token == ")":
            raise _Invalid(f"{token!r} where a licence id was expected")
        word = self.take()
        if word.lower() in _DEPRECATED_WITH:
            if self.peek() == "WITH":
                raise _Invalid(f"{word!r} already includes an exception, so it cannot take WITH")
            return _Licence(*_DEPRECATED_WITH[word.lower()])
        licence = _licence_id(word)
        if self.peek() != "WITH":
            return _Licence(licence)
        self.take()
        exception = self.peek()
        if exception is None:
            raise _Invalid("nothing after 'WITH'")
        if exception in _OPERATORS or exception in ("(", ")"):
            raise _Invalid(f"WITH needs a licence exception id after it, not {exception!r}")
        return _Licence(licence, _exception_id(self.take()))


def _render(node, parent: str | None = None) -> str:
    if isinstance(node, _Licence):
        return node.id if node.exception is None else f"{node.id} WITH {node.exception}"
    text = f" {node.op} ".join(_render(part, node.op) for part in node.parts)
    return f"({text})" if parent is not None else text


def _parse(expression: str):
    if not isinstance(expression, str):
        raise FabnodeError(f"not a valid SPDX licence expression: got {type(expression).__name__}, not a string")
    try:
        return _Parser(_tokens(expression)).parse()
    except _Invalid as why:
        raise FabnodeError(f"not a valid SPDX licence expression: {_shown(expression)} ({why})") from None


def check_spdx(expression: str) -> str:
    """The expression with canonical ids (deprecated ones replaced), upper-case operators, and
    brackets only around a nested AND/OR; raises FabnodeError saying what is wrong."""
    return _render(_parse(expression))


# Share-alike: derivatives must stay under the same or compatible terms. Weak copyleft counts
# (CERN-OHL-W, LGPL, MPL, EPL, ...): an adaptation of the covered files must keep the licence.
# LicenseRef-... ids are never share-alike: their terms are unknown to fabnode.
_SHARE_ALIKE_PREFIXES = (
    "CERN-OHL-S-", "CERN-OHL-W-", "CC-BY-SA-", "CC-BY-NC-SA-", "GPL-", "AGPL-", "LGPL-", "GFDL-",
    "MPL-", "EUPL-", "OSL-", "EPL-", "CDDL-",
)
_SHARE_ALIKE_IDS = frozenset({
    "CERN-OHL-1.1", "CERN-OHL-1.2", "TAPR-OHL-1.0", "ODbL-1.0", "OFL-1.0", "OFL-1.1",
    "CECILL-1.0", "CECILL-1.1", "CECILL-2.0", "CECILL-2.1", "CECILL-C",
})


def _licence_is_share_alike(licence_id: str) -> bool:
    plain = licence_id.rstrip("+")
    return plain in _SHARE_ALIKE_IDS or plain.startswith(_SHARE_ALIKE_PREFIXES)


def _tree_is_share_alike(node) -> bool:
    if isinstance(node, _Licence):
        return _licence_is_share_alike(node.id)
    if node.op == "OR":  # the recipient may pick any alternative, so every one must bind
        return all(_tree_is_share_alike(part) for part in node.parts)
    return any(_tree_is_share_alike(part) for part in node.parts)


def is_share_alike(expression: str) -> bool:
    """Whether derivatives must keep the same (or compatible) terms; raises FabnodeError if invalid."""
    return _tree_is_share_alike(_parse(expression))


# One-way compatibility beyond "same licence" and "later version", kept small on purpose:
#   CC-BY-SA-4.0   -> GPL-3.0: Creative Commons declared GPLv3 a BY-SA 4.0 compatible licence (2015).
#   CERN-OHL-W-2.0 -> CERN-OHL-S-2.0: the weakly reciprocal licence lets Covered Source be
#                     treated as CERN-OHL-S (its Compatible Licence clause).
#   LGPL-2.1       -> GPL-2.0 or later (LGPL-2.1 section 3 lets any copy switch to the GPL).
#   LGPL-3.0       -> GPL-3.0: LGPL-3.0 is GPL-3.0 plus permissions GPL-3.0 section 7 lets you drop.
_GPL_2_OR_3 = frozenset({"GPL-2.0-only", "GPL-2.0-or-later", "GPL-3.0-only", "GPL-3.0-or-later"})
_ONE_WAY_COMPATIBLE = {
    "CC-BY-SA-4.0": frozenset({"GPL-3.0-only", "GPL-3.0-or-later"}),
    "CERN-OHL-W-2.0": frozenset({"CERN-OHL-S-2.0"}),
    "LGPL-2.1-only": _GPL_2_OR_3,
    "LGPL-2.1-or-later": _GPL_2_OR_3,
    "LGPL-3.0-only": frozenset({"GPL-3.0-only"}),
    "LGPL-3.0-or-later": frozenset({"GPL-3.0-only", "GPL-3.0-or-later"}),
}
# Families whose licence text itself lets an adaptation use any later version (CC BY-SA 3.0 4(b),
# BY-SA 4.0 3(b), MPL-2.0 10.2); jurisdiction ports (CC-BY-SA-3.0-DE) count as the same family.
# Every other family moves to a later version only when the upstream says "-or-later" or "+".
_UPGRADABLE_FAMILIES = frozenset({"CC-BY-SA", "CC-BY-NC-SA", "MPL"})
_VERSIONED = re.compile(
    r"(?P<family>[A-Za-z][A-Za-z0-9.\-]*?)-(?P<version>\d+(?:\.\d+)*)(?:-[A-Z]{2,3})?(?P<later>-only|-or-later|\+)?"
)


def _version(licence_id: str) -> tuple[str, tuple[int, ...], bool] | None:
    match = _VERSIONED.fullmatch(licence_id)
    if match is None:
        return None
    version = tuple(int(n) for n in match["version"].split("."))
    return match["family"].upper(), version, match["later"] in ("-or-later", "+")


def _keeps(upstream: _Licence, adaptation: _Licence) -> bool:
    """Whether material under ``upstream`` may be adapted under ``adaptation``."""
    if adaptation.exception is not None and adaptation.exception != upstream.exception:
        return False  # an exception grants permissions the upstream licensor never gave
    if adaptation.id == upstream.id or adaptation.id in _ONE_WAY_COMPATIBLE.get(upstream.id, ()):
        return True
    up, down = _version(upstream.id), _version(adaptation.id)
    if up is None or down is None or up[0] != down[0] or down[1] < up[1]:
        return False
    return up[0] in _UPGRADABLE_FAMILIES or up[2]


def _kept_by(upstream: _Licence, adaptation) -> bool:
    if isinstance(adaptation, _Licence):
        return _keeps(upstream, adaptation)
    if adaptation.op == "OR":  # a recipient may pick any alternative: all must keep it
        return all(_kept_by(upstream, part) for part in adaptation.parts)
    return any(_kept_by(upstream, part) for part in adaptation.parts)


def _satisfied(upstream, adaptation) -> bool:
    if not _tree_is_share_alike(upstream):
        return True  # a permissive alternative or part asks for nothing
    if isinstance(upstream, _Licence):
        return _kept_by(upstream, adaptation)
    if upstream.op == "OR":  # the adapter picked one alternative; any one kept is enough
        return any(_satisfied(part, adaptation) for part in upstream.parts)
    return all(_satisfied(part, adaptation) for part in upstream.parts)


def share_alike_problem(upstream: str, adaptation: str) -> str | None:
    """A one-line warning when an adaptation drops its upstream's share-alike terms, else None.

    Fine: the same licence; a later version where the upstream allows one (its family's own
    text, or "-or-later"/"+"); a one-way compatible licence from the table above. An
    adaptation may drop an upstream WITH exception but not add one. Raises FabnodeError when
    either expression is invalid.
    """
    up_tree, down_tree = _parse(upstream), _parse(adaptation)
    if _satisfied(up_tree, down_tree):
        return None
    return (f"the upstream design is licensed {_render(up_tree)} (share-alike); "
            f"this adaptation's licence {_render(down_tree)} does not keep it share-alike")
