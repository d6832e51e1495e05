"""SPDX expressions and share-alike checks (protocol/licenses.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabnode.protocol.errors import FabnodeError
from fabnode.protocol.licenses import check_spdx, is_share_alike, share_alike_problem


@pytest.mark.parametrize("written, canonical", [
    ("CERN-OHL-S-2.0", "CERN-OHL-S-2.0"),
    ("cern-ohl-s-2.0", "CERN-OHL-S-2.0"),
    ("cc-by-sa-4.0", "CC-BY-SA-4.0"),
    ("GPL-3.0-or-later", "GPL-3.0-or-later"),
    ("mit", "MIT"),
    ("MIT OR Apache-2.0", "MIT OR Apache-2.0"),
    ("mit or apache-2.0", "MIT OR Apache-2.0"),
    ("  MIT   OR\tApache-2.0 ", "MIT OR Apache-2.0"),
    ("gpl-2.0-only with classpath-exception-2.0", "GPL-2.0-only WITH Classpath-exception-2.0"),
    ("mit and (apache-2.0 or bsd-2-clause)", "MIT AND (Apache-2.0 OR BSD-2-Clause)"),
    ("((MIT))", "MIT"),
    ("(MIT OR Apache-2.0) OR BSD-3-Clause", "MIT OR Apache-2.0 OR BSD-3-Clause"),
    ("MIT OR Apache-2.0 AND BSD-3-Clause", "MIT OR (Apache-2.0 AND BSD-3-Clause)"),
    ("Apache-2.0+", "Apache-2.0+"),
    ("Apache-2.0 WITH SHL-2.1", "Apache-2.0 WITH SHL-2.1"),
    ("MIT WITH AdditionRef-my-addition", "MIT WITH AdditionRef-my-addition"),
    # Custom refs keep their own spelling; only the prefix is canonical.
    ("LicenseRef-Fablab-Nairobi-1", "LicenseRef-Fablab-Nairobi-1"),
    ("licenseref-Mine", "LicenseRef-Mine"),
    ("DocumentRef-spdx-tool-1.2:LicenseRef-MIT-Style-2", "DocumentRef-spdx-tool-1.2:LicenseRef-MIT-Style-2"),
])
def test_valid_expressions_come_back_canonical(written, canonical):
    assert check_spdx(written) == canonical


@pytest.mark.parametrize("deprecated, current", [
    ("GPL-3.0", "GPL-3.0-only"),
    ("GPL-2.0+", "GPL-2.0-or-later"),
    ("gpl-3.0+", "GPL-3.0-or-later"),
    ("LGPL-2.1+", "LGPL-2.1-or-later"),
    ("AGPL-3.0", "AGPL-3.0-only"),
    ("GPL-2.0-with-classpath-exception", "GPL-2.0-only WITH Classpath-exception-2.0"),
    ("eCos-2.0", "GPL-2.0-or-later WITH eCos-exception-2.0"),
    ("GPL-3.0 WITH GCC-exception-3.1", "GPL-3.0-only WITH GCC-exception-3.1"),
])
def test_deprecated_ids_are_accepted_and_replaced(deprecated, current):
    assert check_spdx(deprecated) == current


@pytest.mark.parametrize("expression, reason", [
    ("CERN OHL", "(unknown licence id 'CERN'"),
    ("CERN-OHL-S", "(unknown licence id 'CERN-OHL-S'; did you mean CERN-OHL-S-2.0?)"),
    ("CC-BY-SA", "did you mean CC-BY-SA-4.0 (or another version)?"),
    ("GPL", "unknown licence id 'GPL'"),  # ScanCode knows a bare "GPL"; SPDX does not
    ("", "(it is empty)"),
    ("   ", "(it is empty)"),
    ("MIT AND", "(nothing after 'AND')"),
    ("MIT OR", "(nothing after 'OR')"),
    ("OR MIT", "('OR' where a licence id was expected)"),
    ("(MIT", "('(' is never closed)"),
    ("MIT)", "(')' without a matching '(')"),
    ("MIT Apache-2.0", "(AND or OR missing before 'Apache-2.0')"),
    ("MIT/GPL-3.0", "(unexpected character '/')"),
    ("MIT, Apache-2.0", "(unexpected character ',')"),
    ("GPL-2.0 +", "(unexpected character '+')"),
    ("Classpath-exception-2.0", "is a licence exception: it goes after WITH"),
    ("SHL-2.1", "'SHL-2.1' is a licence exception"),
    ("MIT WITH GPL-3.0", "after WITH is a licence, not a licence exception"),
    ("MIT WITH Not-An-Exception", "(unknown licence exception id 'Not-An-Exception')"),
    ("MIT WITH", "(nothing after 'WITH')"),
    ("(MIT OR BSD-3-Clause) WITH LLVM-exception", "WITH must follow a single licence id"),
    ("LicenseRef-mine+", "'+' cannot follow a LicenseRef id"),
    ("AdditionRef-mine", "'AdditionRef-mine' is not a licence id"),
    ("GPL-2.0-with-classpath-exception WITH LLVM-exception", "already includes an exception"),
])
def test_invalid_expressions_say_what_is_wrong(expression, reason):
    with pytest.raises(FabnodeError) as caught:
        check_spdx(expression)
    message = str(caught.value)
    assert message.startswith(f"not a valid SPDX licence expression: {expression!r} (")
    assert reason in message
    assert "\n" not in message


def test_the_documented_example_message():
    with pytest.raises(FabnodeError, match=r"^not a valid SPDX licence expression: 'CERN OHL' "
                                           r"\(unknown licence id 'CERN'"):
        check_spdx("CERN OHL")


def test_a_huge_expression_still_gives_a_short_message():
    with pytest.raises(FabnodeError) as caught:
        check_spdx("X" * 10_000)
    assert len(str(caught.value)) < 300


def test_a_non_string_is_refused_not_crashed_on():
    with pytest.raises(FabnodeError, match="got int, not a string"):
        check_spdx(42)  # type: ignore[arg-type]


def test_importing_the_module_does_not_load_the_licence_list():
    """The CLI imports protocol on every start; the licence list is only needed when checking."""
    code = "import sys, protocol.licenses; print('license_expression' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@given(st.text(max_size=60))
@settings(max_examples=300)
def test_any_text_gives_an_expression_or_a_one_line_error(text):
    """The library's own parser raises AttributeError on 'MIT AND'; ours must only ever refuse."""
    try:
        result = check_spdx(text)
    except FabnodeError as error:
        assert "\n" not in str(error)
    else:
        assert check_spdx(result) == result


_IDS = ["MIT", "Apache-2.0", "CERN-OHL-S-2.0", "CC-BY-SA-4.0", "GPL-3.0-or-later", "BSD-3-Clause",
        "GPL-3.0", "LGPL-2.1+", "TAPR-OHL-1.0"]


def _recase(draw, word: str) -> str:
    return "".join(c.upper() if draw(st.booleans()) else c.lower() for c in word)


@st.composite
def _expressions(draw, depth: int = 0):
    """A valid expression in random case, spacing and bracketing."""
    if depth >= 3 or draw(st.booleans()):
        word = _recase(draw, draw(st.sampled_from(_IDS)))
        if draw(st.integers(0, 4)) == 0:
            word += " " + _recase(draw, "WITH") + " " + _recase(draw, "Classpath-exception-2.0")
        return word
    op = draw(st.sampled_from(["and", "AND", "or", "OR"]))
    parts = [draw(_expressions(depth + 1)) for _ in range(draw(st.integers(2, 3)))]
    space = draw(st.sampled_from([" ", "  ", "\t", " \n "]))
    text = f"{space}{op}{space}".join(parts)
    return f"({text})" if draw(st.booleans()) else text


@given(_expressions())
@settings(max_examples=200)
def test_case_spacing_and_redundant_brackets_do_not_change_the_result(expression):
    result = check_spdx(expression)
    assert check_spdx(result) == result
    assert check_spdx(f"({expression})") == result
    assert check_spdx(expression.swapcase()) == result
    assert "  " not in result and "\t" not in result and "\n" not in result


@pytest.mark.parametrize("expression", [
    "CERN-OHL-S-2.0", "CERN-OHL-W-2.0", "CC-BY-SA-4.0", "CC-BY-SA-3.0-DE", "CC-BY-NC-SA-4.0",
    "GPL-2.0-only", "GPL-3.0+", "AGPL-3.0-or-later", "LGPL-2.1-only", "MPL-2.0", "EUPL-1.2",
    "TAPR-OHL-1.0", "OSL-3.0", "ODbL-1.0", "CERN-OHL-1.2",
    "GPL-2.0-only WITH Classpath-exception-2.0",
    "CERN-OHL-S-2.0 OR GPL-3.0-or-later",  # every alternative is share-alike
    "MIT AND CC-BY-SA-4.0",  # one part is
])
def test_share_alike(expression):
    assert is_share_alike(expression) is True


@pytest.mark.parametrize("expression", [
    "MIT", "Apache-2.0", "CERN-OHL-P-2.0", "CC-BY-4.0", "CC0-1.0", "BSD-3-Clause", "CC-BY-NC-4.0",
    "Apache-2.0 WITH SHL-2.1",
    "LicenseRef-my-copyleft",  # unknown terms: fabnode cannot say
    "CERN-OHL-S-2.0 OR MIT",  # a recipient may take the MIT alternative
    "MIT AND Apache-2.0",
])
def test_not_share_alike(expression):
    assert is_share_alike(expression) is False


def test_share_alike_refuses_invalid_expressions():
    with pytest.raises(FabnodeError, match="unknown licence id 'CERN'"):
        is_share_alike("CERN OHL")


@pytest.mark.parametrize("upstream, adaptation", [
    ("CERN-OHL-S-2.0", "CERN-OHL-S-2.0"),
    ("cern-ohl-s-2.0", "CERN-OHL-S-2.0"),  # same licence, other spelling
    ("CC-BY-SA-3.0", "CC-BY-SA-4.0"),  # later version of the same family
    ("CC-BY-SA-3.0-DE", "CC-BY-SA-3.0"),  # jurisdiction port -> unported
    ("CC-BY-NC-SA-2.0", "CC-BY-NC-SA-4.0"),
    ("MPL-1.1", "MPL-2.0"),
    ("GPL-2.0-or-later", "GPL-3.0-or-later"),
    ("GPL-2.0-or-later", "GPL-3.0-only"),
    ("GPL-2.0-or-later", "GPL-2.0-only"),
    ("GPL-2.0+", "GPL-3.0-or-later"),
    ("CC-BY-SA-4.0", "GPL-3.0-only"),  # one-way compatible
    ("CC-BY-SA-4.0", "GPL-3.0-or-later"),
    ("CERN-OHL-W-2.0", "CERN-OHL-S-2.0"),
    ("LGPL-2.1-only", "GPL-2.0-or-later"),
    ("LGPL-3.0-only", "GPL-3.0-only"),
    ("GPL-2.0-only WITH Classpath-exception-2.0", "GPL-2.0-only"),  # dropping an exception is fine
    ("MIT", "LicenseRef-proprietary"),  # nothing to keep
    ("CERN-OHL-S-2.0 OR MIT", "LicenseRef-proprietary"),  # the MIT alternative was taken
    ("CERN-OHL-S-2.0 OR CC-BY-SA-4.0", "GPL-3.0-only"),  # the CC-BY-SA-4.0 alternative was taken
    ("CC-BY-SA-4.0", "CC-BY-SA-4.0 AND MIT"),  # the design stays BY-SA; new parts may be MIT
    ("CC-BY-SA-4.0 AND MIT", "CC-BY-SA-4.0"),
])
def test_adaptations_that_keep_share_alike(upstream, adaptation):
    assert share_alike_problem(upstream, adaptation) is None


@pytest.mark.parametrize("upstream, adaptation", [
    ("CERN-OHL-S-2.0", "MIT"),
    ("CERN-OHL-S-2.0", "CERN-OHL-W-2.0"),  # strong -> weak is the wrong way
    ("CERN-OHL-S-2.0", "CERN-OHL-P-2.0"),
    ("CC-BY-SA-4.0", "CC-BY-SA-3.0"),  # earlier version
    ("CC-BY-SA-4.0", "CC-BY-4.0"),
    ("CC-BY-SA-4.0", "CC-BY-NC-SA-4.0"),  # other licence elements
    ("CC-BY-SA-3.0", "GPL-3.0-only"),  # the GPL compatibility covers BY-SA 4.0 only
    ("GPL-3.0-only", "CC-BY-SA-4.0"),  # compatibility is one way
    ("GPL-2.0-only", "GPL-3.0-only"),  # no "or later" upstream
    ("GPL-2.0-only", "GPL-2.0-or-later"),
    ("GPL-3.0-or-later", "GPL-2.0-only"),
    ("CERN-OHL-S-2.0", "CERN-OHL-S-2.0+"),  # the licence does not offer later versions
    ("GPL-2.0-only", "GPL-2.0-only WITH Classpath-exception-2.0"),  # adding an exception
    ("CC-BY-SA-4.0", "CC-BY-SA-4.0 OR MIT"),  # a recipient could take MIT
    ("CERN-OHL-S-2.0", "CERN-OHL-S-2.0 OR GPL-3.0-or-later"),  # ... or a share-alike licence not offered
    ("CC-BY-SA-4.0 AND CERN-OHL-S-2.0", "CC-BY-SA-4.0"),  # every share-alike part must be kept
    ("CERN-OHL-S-2.0", "LicenseRef-my-copyleft"),
])
def test_adaptations_that_drop_share_alike(upstream, adaptation):
    problem = share_alike_problem(upstream, adaptation)
    assert problem is not None
    assert "\n" not in problem
    assert "does not keep it share-alike" in problem


def test_share_alike_problem_message_names_both_licences_canonically():
    assert share_alike_problem("cern-ohl-s-2.0", "mit") == (
        "the upstream design is licensed CERN-OHL-S-2.0 (share-alike); "
        "this adaptation's licence MIT does not keep it share-alike")


def test_share_alike_problem_refuses_invalid_expressions():
    with pytest.raises(FabnodeError, match="'CC BY-SA'"):
        share_alike_problem("CERN-OHL-S-2.0", "CC BY-SA")
    with pytest.raises(FabnodeError, match="'CERN OHL'"):
        share_alike_problem("CERN OHL", "MIT")
