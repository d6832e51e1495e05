"""The web pages' catalogs (issue 19), without a daemon: the template of messages is what the
sources say, every catalog translates every message (placeholders and markup kept, nothing fuzzy,
marked for review), no template shows text outside gettext, and the language is chosen as
docs/design.md says. "Adding a language" (README) is followed for a toy language in a copy."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from babel.messages.pofile import read_po
from jinja2 import Environment, nodes

from fabnode.node.http import i18n

from conftest import ROOT

LOCALE = ROOT / "node" / "http" / "locale"
TEMPLATES = ROOT / "node" / "http" / "templates"
POT = LOCALE / "fabnode.pot"
PYBABEL = Path(sys.executable).parent / "pybabel"
SHIPPED = ("es", "fr", "pt", "sw", "hi", "ar")
REVIEWED: set[str] = set()
"""Catalogs a native speaker has reviewed (their header no longer asks for it); the others must ask."""
CATALOGS = sorted(p.parent.parent.name for p in LOCALE.glob("*/LC_MESSAGES/fabnode.po"))
PLACEHOLDER = re.compile(r"%\(\w+\)s")
TAG = re.compile(r"</?[a-z]+")
ALLOWED_WORDS = {"fabnode", "ZIP", "CAR"}
"""Words a template may show untranslated: the program's name and two file format names."""


def _ids(path: Path) -> dict:
    with open(path, "rb") as f:
        return {m.id: m for m in read_po(f) if m.id}


def _extract(folder: Path, out: Path) -> None:
    """README, "Adding a language": the command that makes node/http/locale/fabnode.pot."""
    subprocess.run([str(PYBABEL), "extract", "-F", "babel.cfg", "-k", "N_", "--no-location", "--sort-output",
                    "-o", str(out), "."], cwd=folder, check=True, capture_output=True, timeout=120)


def test_the_message_template_holds_exactly_the_messages_of_the_sources(tmp_path):
    _extract(ROOT, tmp_path / "fresh.pot")
    fresh, committed = set(_ids(tmp_path / "fresh.pot")), set(_ids(POT))
    assert fresh == committed, ("run the extract command in README, 'Adding a language', then translate: "
                                f"new {sorted(fresh - committed)}, gone {sorted(committed - fresh)}")
    assert len(committed) > 80


def test_the_required_languages_are_shipped():
    assert set(SHIPPED) <= set(CATALOGS) and i18n.languages()[0] == "en"


@pytest.mark.parametrize("lang", CATALOGS)
def test_every_catalog_translates_every_message_keeping_placeholders_and_markup(lang):
    po = LOCALE / lang / "LC_MESSAGES" / "fabnode.po"
    header = po.read_text(encoding="utf-8").split("\n\n", 1)[0]
    if lang not in REVIEWED:
        assert "X-Review-Needed: native speaker" in header, f"{lang}: not reviewed, and its header does not say so"
    with open(po, "rb") as f:
        catalog = read_po(f)
    assert not catalog.fuzzy and str(catalog.locale) == lang
    wanted = set(_ids(POT))
    messages = {m.id: m for m in catalog if m.id}
    assert set(messages) == wanted, \
        f"{lang}: missing {sorted(wanted - set(messages))}, stale {sorted(set(messages) - wanted)}"
    for msgid, m in messages.items():
        assert m.string and m.string.strip(), f"{lang}: {msgid!r} is not translated"
        assert not m.fuzzy, f"{lang}: {msgid!r} is fuzzy"
        assert Counter(PLACEHOLDER.findall(m.string)) == Counter(PLACEHOLDER.findall(msgid)), (lang, msgid, m.string)
        assert Counter(TAG.findall(m.string)) == Counter(TAG.findall(msgid)), (lang, msgid, m.string)
        assert "%" not in PLACEHOLDER.sub("", m.string), (lang, m.string)  # a stray % breaks formatting


def _template_text(template: nodes.Template) -> tuple[str, list[str]]:
    """The template's literal text, each expression or tag replaced by NUL, and the string
    constants of its expressions that are not arguments of gettext."""
    pieces = []
    for node in template.find_all((nodes.TemplateData, nodes.Output)):
        if isinstance(node, nodes.TemplateData):
            pieces.append(node.data)
    text = "\0".join(pieces)
    translated = set()
    for call in template.find_all(nodes.Call):
        if isinstance(call.node, nodes.Name) and call.node.name in ("_", "gettext", "ngettext", "pgettext"):
            translated.update(id(c) for c in call.find_all(nodes.Const))
    for pair in template.find_all(nodes.Pair):  # {% trans name=… %}: the placeholders' names
        translated.add(id(pair.key))
    consts = [c.value for c in template.find_all(nodes.Const)
              if isinstance(c.value, str) and id(c) not in translated and not c.value.endswith(".html")]
    return text, consts


def _words(text: str) -> list[str]:
    """Words (runs of letters) left once CIDs, NUL placeholders and allowed words are taken out."""
    words = re.findall(r"[^\W\d_]+", text.replace("\0", " "))
    return [w for w in words if w not in ALLOWED_WORDS]


def untranslated(source: str) -> list[str]:
    """Every piece of a template's text a reader sees that does not go through gettext: text
    between tags, and the title, alt, placeholder and aria-label attributes."""
    env = Environment(extensions=["jinja2.ext.i18n"])
    text, consts = _template_text(env.parse(source))
    found = []
    text = re.sub(r"<style>.*?</style>", "\0", text, flags=re.S)
    for m in re.finditer(r"\b(?:title|alt|placeholder|aria-label)=\"([^\"]*)\"", text):
        if _words(m.group(1)):
            found.append(m.group(1).replace("\0", "{…}"))
    outside = re.sub(r"<[^>]*>", "\0", text)
    for chunk in outside.split("\0"):
        if _words(chunk):
            found.append(chunk.strip())
    found += [c for c in consts if _words(c)]
    return found


@pytest.mark.parametrize("name", sorted(p.name for p in TEMPLATES.glob("*.html")))
def test_no_template_shows_text_outside_gettext(name):
    left = untranslated((TEMPLATES / name).read_text(encoding="utf-8"))
    assert not left, f"{name} shows text outside gettext ({{{{ _('…') }}}} or {{% trans %}}): {left}"


def test_the_walker_finds_untranslated_text():
    """The check above can fail: text, attributes and string constants outside gettext are found."""
    assert untranslated("<p>Hello <b>{{ name }}</b></p>") == ["Hello"]
    assert untranslated('<input placeholder="Search here">') == ["Search here"]
    assert untranslated("{{ 'yes' if x else 'no' }}") == ["yes", "no"]
    assert untranslated("<p class=\"x\" title=\"{{ _('Hi') }}\">{% trans %}Hello {{ n }}{% endtrans %}"
                        "{{ _('yes') }} · {{ n }} ×</p><style>body { color: red }</style>") == []


@pytest.mark.parametrize("query, cookie, accept, lang", [
    (None, None, None, "en"),
    (None, None, "es-PE,es;q=0.9,en;q=0.5", "es"),
    (None, None, "de-DE,de;q=0.9", "en"),               # no catalog: English
    (None, None, "de;q=0.9,sw;q=0.8", "sw"),
    (None, None, "fr;q=0.2,ar;q=0.9", "ar"),            # weights, not order
    (None, None, "pt-BR", "pt"),
    (None, None, "ES", "es"),                           # tags are not case-sensitive
    (None, None, "es;q=0,hi", "hi"),                    # q=0 means no
    (None, None, "garbage;;;,,q=x", "en"),
    (None, "ar", "es", "ar"),                           # the switch's cookie wins
    ("fr", "ar", "es", "fr"),                           # and ?lang= wins over it
    ("xx", None, "sw", "sw"),                           # unknown ?lang= is ignored
])
def test_the_language_is_the_switch_then_the_cookie_then_accept_language(query, cookie, accept, lang):
    assert i18n.choose(query, cookie, accept) == lang


def test_dates_numbers_and_direction_follow_the_language():
    ms = 1_764_267_600_000  # 2025-11-27 18:20 UTC
    assert i18n.Formats("en").when(ms) == "Nov 27, 2025, 18:20"
    assert i18n.Formats("es").when(ms) == "27 nov 2025, 18:20"
    assert "نوفمبر" in i18n.Formats("ar").when(ms)
    assert i18n.Formats("en").size(2_500_000) == "2.4 MiB" and i18n.Formats("es").size(2_500_000) == "2,4 MiB"
    assert i18n.Formats("fr").number(12345) == "12\u202f345" and i18n.Formats("en").size(0) == "0 B"
    assert i18n.direction("ar") == "rtl" and i18n.direction("es") == "ltr"
    links = dict((code, href) for code, _, href in i18n.language_links("/designs?q=pump&lang=es"))
    assert links["ar"] == "/designs?q=pump&lang=ar"


def test_adding_a_language_as_the_readme_says(tmp_path, monkeypatch):
    """README, "Adding a language", followed for Esperanto in a copy of the catalogs: init the
    catalog from the template, translate, check it, and the pages offer and speak it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Adding a language", 1)[1].split("\n## ", 1)[0]
    init = next(line.strip() for line in section.splitlines() if line.strip().startswith("pybabel init"))
    assert "-l LANG" in init
    copy = tmp_path / "node" / "http" / "locale"
    shutil.copytree(LOCALE, copy)
    args = init.replace("LANG", "eo").split()[1:]
    subprocess.run([str(PYBABEL), *args], cwd=tmp_path, check=True, capture_output=True, timeout=60)
    po = copy / "eo" / "LC_MESSAGES" / "fabnode.po"
    with open(po, "rb") as f:
        catalog = read_po(f)
    assert len([m for m in catalog if m.id]) == len(_ids(POT))
    for m in catalog:  # the translator's work, done here by a rule: "Designs" → "[Designs]"
        if m.id:
            m.string = f"[{m.id}]"
    from babel.messages.pofile import write_po

    catalog.fuzzy = False
    with open(po, "wb") as f:
        write_po(f, catalog)
    check = next(line.strip() for line in section.splitlines() if line.strip().startswith("pybabel compile"))
    check = check.replace("/tmp/", f"{tmp_path}/").replace("LANG", "eo")
    result = subprocess.run([str(PYBABEL), *check.split()[1:]], cwd=tmp_path, capture_output=True, timeout=60)
    said = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0 and (tmp_path / "eo.mo").is_file(), said
    assert f"{len(_ids(POT))} of {len(_ids(POT))} messages (100%) translated" in said, said
    monkeypatch.setattr(i18n, "LOCALE_DIR", copy)
    i18n.translations.cache_clear()
    i18n.language_names.cache_clear()
    try:
        assert "eo" in i18n.languages() and i18n.choose(None, None, "eo,en;q=0.5") == "eo"
        (copy / "pt_BR" / "LC_MESSAGES").mkdir(parents=True)  # a region's catalog, named as pybabel names it
        shutil.copy(copy / "pt" / "LC_MESSAGES" / "fabnode.po", copy / "pt_BR" / "LC_MESSAGES" / "fabnode.po")
        assert i18n.choose(None, None, "pt-BR") == "pt_BR" and i18n.choose(None, None, "pt-PT") == "pt"
        assert i18n.language_names()["pt_BR"] == "Português (Brasil)"
        assert i18n.translations("eo").gettext("Designs") == "[Designs]"
        assert i18n.language_names()["eo"] == "Esperanto" and i18n.direction("eo") == "ltr"
    finally:
        i18n.translations.cache_clear()
        i18n.language_names.cache_clear()
