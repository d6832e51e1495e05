"""The documentation tells the truth: every command is in the README and has help, every
configuration key is documented, and the README's first command works."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fabnode import cli
from fabnode.node.config import CONFIG_KEYS, DEFAULTS

from conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_command_is_in_readme_and_has_help(command):
    assert f"fabnode {command}" in README
    doc = cli.COMMANDS[command].fn.__doc__
    assert doc and len(doc.strip()) > 20
    shown = subprocess.run([sys.executable, "-c", "from fabnode import cli; import sys; sys.exit(cli.main(sys.argv[1:]))", command, "--help"],
                           capture_output=True, cwd=ROOT)
    assert shown.returncode == 0 and doc.strip().splitlines()[0] in shown.stdout.decode()


def _flatten(table: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def test_every_configuration_key_is_documented(tmp_path):
    """config.example.toml lists exactly the keys the code reads (CONFIG_KEYS, which
    Home.setting insists on), each with a comment, and each example value has the right type."""
    import re
    import shutil

    from fabnode.node.home import Home

    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    example = _flatten(tomllib.loads(text))
    assert set(example) == set(CONFIG_KEYS)
    lines = text.splitlines()
    for key in CONFIG_KEYS:
        name = key.rsplit(".", 1)[-1]
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{name} ="))
        assert lines[at - 1].startswith("#"), f"{key} has no comment above it"
    shutil.copy(ROOT / "config.example.toml", tmp_path / "config.toml")
    home = Home(tmp_path)
    for key in CONFIG_KEYS:
        assert home.setting(key, None) == example[key]  # the type check accepts the example
    read = set()
    for source in [ROOT / "cli.py", *(ROOT / "node").rglob("*.py")]:
        read |= set(re.findall(r'setting\("([a-z_.]+)"', source.read_text(encoding="utf-8")))
    assert read == set(CONFIG_KEYS), "a key is read but not registered, or registered but never read"


def test_the_example_configuration_shows_each_default():
    """config.example.toml says it lists every key "with its default": the values it shows are
    those of node/config.py (the name excepted: it is the lab's own), and a fresh home reads them."""
    from fabnode.node.config import KEYS

    example = _flatten(tomllib.loads((ROOT / "config.example.toml").read_text(encoding="utf-8")))
    assert {key: example[key] for key in CONFIG_KEYS if key != "name"} == {
        key: DEFAULTS[key] for key in CONFIG_KEYS if key != "name"}
    assert [key.name for key in KEYS] == list(CONFIG_KEYS) and all(key.comment for key in KEYS)


def test_an_unset_key_reads_as_its_default(tmp_path):
    from fabnode.node.home import Home

    (tmp_path / "config.toml").write_text('name = "Lab"\n')
    home = Home(tmp_path)
    assert {key: home.setting(key) for key in CONFIG_KEYS} == {**DEFAULTS, "name": "Lab"}
    assert home.setting("listen", None) is None  # whether it is set at all


def test_a_mistyped_configuration_value_is_one_clear_error(tmp_path):
    from fabnode.node.home import Home
    from fabnode.protocol.errors import FabnodeError

    (tmp_path / "config.toml").write_text('bootstrap = "/ip4/1.2.3.4/tcp/1"\n[limits]\nmax_connections = -1\n')
    home = Home(tmp_path)
    with pytest.raises(FabnodeError, match="bootstrap must be a list of str"):
        home.setting("bootstrap", [])
    with pytest.raises(FabnodeError, match="max_connections must not be negative"):
        home.setting("limits.max_connections", 50)


def test_readme_shows_the_two_make_targets():
    assert "make run" in README and "make test" in README


def _readme_invocations() -> list[str]:
    """Every ``fabnode …`` invocation the README shows, in code blocks and inline code."""
    import shlex

    spans = re.findall(r"```[a-z]*\n(.*?)```", README, re.S)
    spans = [line for block in spans for line in block.splitlines()]
    spans += re.findall(r"(?<!`)`([^`]+)`(?!`)", re.sub(r"```.*?```", "", README, flags=re.S))
    out = []
    for span in spans:
        try:
            tokens = shlex.split(re.sub(r"\$\(|\)", " ", span.replace("\n", " ")), comments=True)
        except ValueError:
            continue
        for i, token in enumerate(tokens):  # a command: first, or after VAR=value
            if (token == "fabnode" or token.endswith("/fabnode")) and (i == 0 or "=" in tokens[i - 1]):
                args = []
                for arg in tokens[i + 1:]:
                    if arg in ("|", "&&", ";", ">", "2>"):
                        break
                    args.append(arg)
                out.append(args)
    return out


def test_every_command_the_readme_shows_exists_with_those_options():
    """Each invocation in the README parses: the command exists and takes those options."""
    import contextlib
    import io

    parser = cli.build_parser()
    checked = 0
    for args in _readme_invocations():
        if len(args) <= 1 and not (args and args[0].startswith("-")):
            # `fabnode` or `fabnode publish` named in a sentence: the command exists
            assert not args or args[0] in cli.COMMANDS, f"README names 'fabnode {args[0]}', which does not exist"
            continue
        if args[:3] == ["--home", "PATH", "COMMAND"]:
            continue  # the pattern, not an invocation
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            try:
                parser.parse_args(args)
            except SystemExit as exc:
                assert exc.code == 0, f"README shows 'fabnode {' '.join(args)}': {err.getvalue().strip()}"
        checked += 1
    assert checked > 25  # the README shows a few dozen; fewer means this test stopped finding them


def _make_run(demo, timeout: float = 600) -> str:
    """`make run` until the node says it listens; then stop it as Ctrl-C would. Its output."""
    import os
    import select
    import signal
    import time

    proc = subprocess.Popen(["make", "-s", "run", f"DEMO_HOME={demo}", "LISTEN=/ip4/127.0.0.1/tcp/0", "RUN_FLAGS=--no-mdns --http 127.0.0.1:0"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while b"listening on" not in out:
            left = deadline - time.monotonic()
            assert left > 0, out.decode()
            ready, _, _ = select.select([proc.stdout], [], [], left)
            chunk = os.read(proc.stdout.fileno(), 65536) if ready else b""
            assert chunk or not ready, f"make run ended early: {out.decode()}"
            out += chunk
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
    return out.decode()


def test_make_run_stores_the_example_and_starts_the_node(tmp_path, ipfs_car):
    from conftest import ipfs_car_cid

    demo = tmp_path / "demo-home"
    out = _make_run(demo)
    cid = ipfs_car_cid(ipfs_car, ROOT / "examples" / "hand-pump", tmp_path)
    assert f"{cid}" in out and "okh.toml" in out and "the store is sound" in out
    assert "Direct-action PVC hand pump" in out  # published: `fabnode designs` lists it
    assert (demo / "author.key").exists()
    assert _make_run(demo).count("1 version(s)") == 1  # a second make run publishes nothing new


# ---------------------------------------------------------------- references resolve in the repository
#
# Code and docs cite documents by name: a docs page and its numbered section, an anchor, a
# numbered libp2p pitfall, a file of the repository. Each such reference must lead somewhere a
# reader of the repository can follow; references to documents kept outside it are refused.
# Python files are read for their comments and docstrings only: string literals may hold test
# data (a bundle's file names, or the broken references of the tests below).

SCANNED_SUFFIXES = (".py", ".md", ".toml", ".html")
NOT_SCANNED = {".git", ".venv", "node_modules", "__pycache__", ".pytest_cache", ".hypothesis", ".fabnode",
               "build"}

OUTSIDE = [
    (re.compile(r"DESIGN\s*§\s*\d*(?:\.\d+)*"), "a section of the design brief, not in the repository"),
    (re.compile(r"DESIGN\.md"), "the design brief, which is not in the repository"),
    (re.compile(r"\bnotes[/][\w./-]*"), "the notes, which are not in the repository"),
    (re.compile(r"\bshared[/][\w./-]*"), "a shared folder outside the repository"),
]
REPO_PATH = re.compile(r"(?<![\w/.~$-])((?:docs|protocol|node|storage|tests|bench|examples|test-tools|\.ci)/[\w./-]*"
                       r"\.(?:md|py|toml|html|mjs|json|png|svg|csv|scad))\b")
DOC_NAME = re.compile(r"(?<![\w/.~$-])((?:docs/)?[\w-]+\.md)(?:#([\w-]+))?")
QUALIFIER = re.compile(r"§\s*(\d+(?:\.\d+)*)|\b[Pp]itfalls?\s+(\d+)")
QUALIFIER_GAP = re.compile(r"[\s,;:#*]*(?:(?:and|or)\s+)?")
MARKDOWN_LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")


def _scanned_files():
    for folder, dirs, files in os.walk(ROOT):
        rel = Path(folder).relative_to(ROOT)
        dirs[:] = sorted(d for d in dirs if d not in NOT_SCANNED and not d.endswith(".egg-info")
                         and (rel / d).as_posix() != "bench/work")
        for name in sorted(files):
            if name.endswith(SCANNED_SUFFIXES):
                yield Path(folder) / name


def _prose(text: str) -> str:
    """The comments and docstrings of Python source, everything else blanked (offsets and line
    numbers kept): references live in prose, while string literals may hold test data such as
    the file names of a bundle."""
    import ast
    import io
    import tokenize

    lines = text.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def offset(row: int, byte_col: int) -> int:  # ast columns count UTF-8 bytes
        return starts[row - 1] + len(lines[row - 1].encode("utf-8")[:byte_col].decode("utf-8", "ignore"))

    spans = [(offset(n.lineno, n.col_offset), offset(n.end_lineno, n.end_col_offset))
             for n in ast.walk(ast.parse(text))
             if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)]
    spans += [(starts[t.start[0] - 1] + t.start[1], starts[t.end[0] - 1] + t.end[1])
              for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == tokenize.COMMENT]
    out = list(re.sub(r"[^\n]", " ", text))
    for start, end in spans:
        out[start:end] = text[start:end]
    return "".join(out)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _targets(path: Path) -> tuple[set[str], list[str]]:
    """(anchors, headings) of a markdown file: heading slugs (numbered as GitHub does for
    repeats) and explicit <a id=…> / <a name=…> anchors."""
    text = path.read_text(encoding="utf-8")
    anchors: set[str] = set(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", text))
    headings, seen = [], {}
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        match = None if in_code else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            headings.append(match[1])
            slug = _slug(match[1])
            anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return anchors, headings


def _check_target(doc: Path, shown: str, *, anchor: str | None = None, section: str | None = None,
                  pitfall: str | None = None) -> str | None:
    """Why a reference into ``doc`` does not resolve, or None."""
    if not doc.is_file():
        return f"{shown}: no such file in the repository"
    if anchor is None and section is None and pitfall is None:
        return None
    if doc.suffix != ".md":
        return f"{shown}: only markdown files have sections"
    anchors, headings = _targets(doc)
    if anchor is not None and anchor not in anchors:
        return f"{shown}: no heading or anchor #{anchor} in {doc.relative_to(ROOT)}"
    if section is not None and not any(re.match(rf"{re.escape(section)}\.?\s", h) for h in headings):
        return f"{shown}: no section §{section} in {doc.relative_to(ROOT)}"
    if pitfall is not None and f"pitfall-{pitfall}" not in anchors \
            and not any(re.match(rf"[Pp]itfall {pitfall}\b", h) for h in headings):
        return f"{shown}: no pitfall {pitfall} in {doc.relative_to(ROOT)}"
    return None


def _resolve_doc(name: str, citing: Path) -> Path:
    """A markdown file named in ``citing``: a path under docs/ from the root; a bare name next
    to the citing file, else in docs/, else at the root."""
    if name.startswith("docs/"):
        return ROOT / name
    for folder in (citing.parent, ROOT / "docs", ROOT):
        if (folder / name).is_file():
            return folder / name
    return citing.parent / name


def reference_problems(path: Path, text: str) -> list[str]:
    """Every reference in ``text`` (the contents of ``path``) that does not resolve, as
    ``file:line: reason``."""
    problems: list[str] = []

    def at(pos: int) -> str:
        return f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, pos) + 1}"

    def blank(match: re.Match) -> str:  # keep offsets (and line numbers) while hiding a span
        return re.sub(r"[^\n]", " ", match[0])

    for pattern, why in OUTSIDE:
        for match in pattern.finditer(text):
            problems.append(f"{at(match.start())}: {match[0]!r} cites {why}")
        text = pattern.sub(blank, text)

    if path.suffix == ".md":  # [text](target): the target exists; a section named in the text is in it
        for match in MARKDOWN_LINK.finditer(text):
            target = match[2]
            if re.match(r"[a-z]+:", target):
                continue  # http:, https:, mailto:
            file_part, _, anchor = target.partition("#")
            doc = (path.parent / file_part).resolve() if file_part else path
            shown = f"{at(match.start())}: link to {target}"
            if file_part and doc.is_dir():
                continue
            problem = _check_target(doc, shown, anchor=anchor or None)
            for q in QUALIFIER.finditer(match[1]):
                problem = problem or _check_target(doc, shown, section=q[1], pitfall=q[2])
            if problem:
                problems.append(problem)
        text_outside_links = MARKDOWN_LINK.sub(blank, text)
    else:
        text_outside_links = text

    for match in REPO_PATH.finditer(text_outside_links):
        rel = match[1]
        if not (ROOT / rel).exists():
            problems.append(f"{at(match.start())}: {rel}: no such file in the repository")

    # A markdown file's name (with an optional #anchor), optionally followed by section or
    # pitfall numbers: each resolves against that file. A section or pitfall number with no file
    # before it refers to the markdown file it is in (in a .py file, that is an error).
    cited: list[tuple[int, int, Path, str]] = []
    for match in DOC_NAME.finditer(text_outside_links):
        doc = _resolve_doc(match[1], path)
        problem = _check_target(doc, f"{at(match.start())}: {match[0]}", anchor=match[2])
        if problem:
            problems.append(problem)
        cited.append((match.start(), match.end(), doc, match[0]))
    current: tuple[Path, str] | None = None
    last_end = -1
    for q in QUALIFIER.finditer(text_outside_links):
        preceding = [c for c in cited if c[1] <= q.start()]
        if preceding and preceding[-1][1] > last_end:
            last_end = preceding[-1][1]
            current = (preceding[-1][2], preceding[-1][3])
        if current is None or not QUALIFIER_GAP.fullmatch(text_outside_links[last_end:q.start()]):
            current = (path, str(path.relative_to(ROOT))) if path.suffix == ".md" else None
        last_end = q.end()
        if current is None:
            problems.append(f"{at(q.start())}: {q[0]!r} does not say which document it refers to "
                            "(write e.g. docs/NAME.md before it)")
            continue
        doc, shown = current
        problem = _check_target(doc, f"{at(q.start())}: {shown} {q[0]}", section=q[1], pitfall=q[2])
        if problem:
            problems.append(problem)
    return list(dict.fromkeys(problems))


def test_every_reference_resolves_inside_the_repository():
    """No page or docstring sends a reader to a document the repository does not hold."""
    problems = []
    for path in _scanned_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        problems += reference_problems(path, _prose(text) if path.suffix == ".py" else text)
    assert not problems, "references that do not resolve:\n" + "\n".join(problems)


@pytest.mark.parametrize("text, problem", [
    ("see DESIGN §1", "design brief"),
    ("see DESIGN.md", "design brief"),
    ("see notes/libp2p.md", "notes"),
    ("see docs/nowhere.md", "no such file"),
    ("in node/nowhere.py", "no such file"),
    ("docs/protocol.md §99", "no section §99"),
    ("docs/protocol.md §3, §98", "no section §98"),
    ("docs/design.md#no-such-heading", "no heading or anchor"),
    ("docs/libp2p.md pitfall 99", "no pitfall 99"),
    ("the 60 s cache (pitfall 4)", "does not say which document"),
    ("as §3 says", "does not say which document"),
])
def test_a_broken_reference_is_found(text, problem):
    found = reference_problems(ROOT / "node" / "example.py", text)
    assert len(found) == 1 and problem in found[0], found


@pytest.mark.parametrize("text, problem", [
    ("[x](nowhere.md)", "no such file"),
    ("[x](libp2p.md#pitfall-99)", "no heading or anchor"),
    ("[pitfall 99](libp2p.md)", "no pitfall 99"),
    ("(pitfall 4)", "no pitfall 4 in docs/design.md"),
    ("docs/protocol.md says more; §3", "no section §3 in docs/design.md"),
    ("§99", "no section §99 in docs/design.md"),
])
def test_a_broken_reference_in_markdown_is_found(text, problem):
    found = reference_problems(ROOT / "docs" / "design.md", text)
    assert len(found) == 1 and problem in found[0], found


def test_references_that_resolve_pass():
    assert reference_problems(ROOT / "node" / "example.py", "docs/protocol.md §8.3 and §9; docs/libp2p.md "
                              "pitfall 4; docs/design.md#sneakernet; node/runtime/fetch.py") == []
    assert reference_problems(ROOT / "docs" / "example.md", "[pitfall 6](libp2p.md#pitfall-6), "
                              "[§8](protocol.md#8-sync-fabnodesync100)") == []


def test_python_is_read_for_its_comments_and_docstrings_only():
    source = 'NAME = "docs/nowhere.md"\n\n\ndef f():\n    """See docs/nowhere.md."""  # and docs/nowhere.md\n'
    found = reference_problems(ROOT / "node" / "example.py", _prose(source))
    assert [p.split(": ")[0] for p in found] == ["node/example.py:5"]
