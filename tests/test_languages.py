"""The web interface in the lab's language (issue 19), in a real Chromium against a real daemon:
browsers asking for Spanish, Swahili and Arabic get every page in that language with nothing of
the English interface left, the switch in the header works without JavaScript and is remembered,
and the Arabic page is laid out right to left (and pictured for the README)."""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.error
import urllib.request

import pytest
from babel.messages.pofile import read_po

from fabnode.node.http.i18n import Formats, translations

from conftest import ROOT, Cli
from daemons import Daemon

EXAMPLE = ROOT / "examples" / "hand-pump"
SCREENSHOTS = ROOT / "docs" / "screenshots"
POT = ROOT / "node" / "http" / "locale" / "fabnode.pot"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Lima publishes the hand pump and a second version with a longer handle, attests it twice
    (built and passed, tested with a warning), and publishes its documentation in Spanish."""
    tmp = tmp_path_factory.mktemp("languages")
    lab = Cli(tmp / "lab")
    lab.run("init", "--name", "Fab Lab Lima")
    first = lab.json("publish", str(EXAMPLE), "-m", "first pump")
    longer = tmp / "longer"
    shutil.copytree(EXAMPLE, longer)
    with open(longer / "bom.csv", "a") as f:
        f.write("handle,steel tube 60 cm,1\n")
    second = lab.json("publish", str(longer), "-m", "longer handle", "--design", first["design"], "--label", "1.1.0")
    lab.run("attest", second["version"], "--result", "passed", "-m", "ok in Lima")
    lab.run("attest", second["version"], "--predicate", "tested", "--result", "warned", "-m", "slow at 40 m")
    spanish = tmp / "bomba"  # the documentation of 1.1.0 in Spanish: a translation (issue 19, must-have 1)
    shutil.copytree(longer, spanish)
    (spanish / "README.md").write_text("# Bomba manual de acción directa\n\nUna bomba de agua manual para pozos "
                                       "excavados a mano, hecha con tubo de PVC.\n", encoding="utf-8")
    okh = (spanish / "okh.toml").read_text(encoding="utf-8")
    (spanish / "okh.toml").write_text(okh.replace('documentation-language = "en"', 'documentation-language = "es"')
                                      .replace('name = "Direct-action PVC hand pump"',
                                               'name = "Bomba manual de acción directa"'), encoding="utf-8")
    lab.run("publish", str(spanish), "-m", "documentación en español", "--translation-of", second["version"],
            "--language", "es")
    daemon = Daemon(lab)
    base = "http://" + json.loads((lab.home / "daemon.json").read_text())["http"]
    yield {"base": base, "first": first, "second": second, "design": f"{base}/design/{first['design']}",
           "version": f"{base}/version/{second['version']}"}
    daemon.stop()


def _english_phrases() -> list[tuple[str, str]]:
    """Every piece of the interface's English a reader could see, with its message: whole
    messages, and the literal runs between a message's placeholders, tags and punctuation."""
    with open(POT, "rb") as f:
        ids = [m.id for m in read_po(f) if m.id]
    phrases = set()
    for msgid in ids:
        for piece in re.split(r"%\(\w+\)s|<[^>]+>|[()“”:.,·×]", msgid):
            piece = piece.strip()
            if re.fullmatch(r"[A-Za-z’' ]+", piece) and (" " in piece or len(piece) >= 4):
                phrases.add((piece, msgid))
    return sorted(phrases, key=lambda p: -len(p[0]))


ENGLISH = _english_phrases()


def _context(browser, lang: str | None, **kw):
    headers = {"Accept-Language": lang} if lang else {}
    return browser.new_context(viewport={"width": 1100, "height": 900}, extra_http_headers=headers, **kw)


def _interface_text(page) -> str:
    """The page's visible text without what labs wrote (README, manifest, file names)."""
    return page.evaluate("""() => {
        const body = document.body.cloneNode(true);
        body.querySelectorAll('#readme, #manifest, #files').forEach(e => e.remove());
        return body.innerText + ' ' + [...body.querySelectorAll('[title],[aria-label],[placeholder],[alt]')]
            .map(e => [e.title, e.getAttribute('aria-label'), e.placeholder, e.alt].join(' ')).join(' ')
            + ' ' + [...document.querySelectorAll('svg text')].map(t => t.textContent).join(' ');
    }""")


KEPT = {"fabnode get", "fabnode import", "toml"}
"""Pieces of messages that every language keeps: commands and a file name."""


def _leftovers(text: str) -> list[str]:
    """English phrases of the interface found in ``text``."""
    return sorted({p for p, _ in ENGLISH if p not in KEPT and re.search(rf"(?<![\w-]){re.escape(p)}(?![\w-])", text)})


@pytest.mark.parametrize("lang", ["es", "sw", "ar"])
def test_every_page_is_in_the_language_the_browser_asks_for(lab, browser, lang):
    _ = translations(lang).gettext
    context = _context(browser, lang)
    page = context.new_page()
    try:
        for url in (lab["base"] + "/", lab["base"] + "/designs", lab["base"] + "/designs?q=pump", lab["design"],
                    lab["version"]):
            page.goto(url)
            assert page.locator("html").get_attribute("lang") == lang
            assert page.locator("html").get_attribute("dir") == ("rtl" if lang == "ar" else "ltr")
            assert page.locator("#nav-designs").inner_text() == _("Designs")
            assert page.locator("input[name=q]").get_attribute("placeholder") == _("Search designs")
            left = _leftovers(_interface_text(page))
            assert not left, f"{url} in {lang} still shows English: {left}"
        page.goto(lab["design"])
        headings = page.locator("h2").all_inner_texts()
        assert _("Lineage") in headings and _("Versions") in headings and _("Files of the latest version") in headings
        assert page.locator("#versions .badge", has_text=_("head")).count() == 1
        assert page.locator("#languages").inner_text() == f"{_('Languages:')} en, es"
        assert page.locator("#translations td").nth(2).inner_text() == _("up to date")
        claim = _("%(mark)s %(predicate)s · %(result)s ×%(count)s by trusted labs") % {
            "mark": "✓", "predicate": _("built"), "result": _("passed"), "count": "1"}
        assert page.locator("#versions .badge.passed").first.inner_text() == claim
        assert page.locator("svg.lineage text.claim", has_text=claim).count() == 1
        when = page.locator("#versions td.muted").first.inner_text()
        assert re.fullmatch(r"\d{1,2} \S+ \d{4}.*\d{1,2}:\d\d", when), when  # day, month in words, year, time (es writes 0:22)
        if lang == "es":
            sizes = page.locator("#files td.size").all_inner_texts()
            assert any(re.fullmatch(r"\d+,\d KiB", s) for s in sizes), sizes  # a decimal comma
            assert re.search(r"\d,\d (KiB|MiB)", page.locator("#downloads").inner_text())
        page.goto(lab["version"])
        assert page.locator("#version-facts th").all_inner_texts()[:2] == [_("What changed"), _("Author")]
        assert page.locator("#attestations .badge.warned").inner_text() == f"⚠ {_('tested')} · {_('warned')}"
        assert _("Reputation") in page.locator("h2").all_inner_texts()
        assert page.locator("#verdict strong").inner_text() == _("mixed")  # a pass and a warning
        because = page.locator("#verdict + ul li").all_inner_texts()
        assert len(because) == 2 and all(_("(your own key)") in line for line in because), because
    finally:
        context.close()


def test_the_switch_works_without_javascript_and_is_remembered(lab, browser):
    context = _context(browser, None, java_script_enabled=False)
    page = context.new_page()
    try:
        page.goto(lab["base"] + "/")
        assert page.locator("html").get_attribute("lang") == "en" and page.get_by_text("Latest versions").count() == 1
        switch = page.locator("#language-switch a")
        assert switch.all_inner_texts() == ["English", "العربية", "Español", "Français", "हिन्दी", "Português",
                                            "Kiswahili"]
        page.locator("#language-switch a[hreflang=es]").click()
        page.wait_for_url("**/?lang=es")
        assert page.locator("html").get_attribute("lang") == "es"
        assert page.get_by_text("Últimas versiones").count() == 1
        assert page.locator("#language-switch a[aria-current]").inner_text() == "Español"
        page.locator("#nav-designs").click()  # a plain link: the cookie carries the choice
        page.wait_for_url("**/designs")
        assert page.locator("h1").inner_text() == "Diseños"
        page.fill("input[name=q]", "pump")
        page.press("input[name=q]", "Enter")
        page.wait_for_url("**/designs?q=pump")
        assert page.locator("h1").inner_text() == "Diseños que coinciden con «pump»"
        page.locator("#language-switch a[hreflang=sw]").click()  # the search stays
        page.wait_for_url("**/designs?q=pump&lang=sw")
        assert page.locator("h1").inner_text() == "Miundo inayolingana na “pump”"
        page.locator("#language-switch a[hreflang=en]").click()
        page.goto(lab["base"] + "/")
        assert page.locator("html").get_attribute("lang") == "en"
    finally:
        context.close()


def _box(page, selector: str) -> dict:
    return page.locator(selector).first.bounding_box()


def test_the_arabic_page_is_laid_out_right_to_left(lab, browser, tmp_path):
    boxes = {}
    folder = SCREENSHOTS if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    for lang in ("en", "ar", "es"):
        context = _context(browser, lang)
        page = context.new_page()
        try:
            page.goto(lab["design"])
            assert page.evaluate("getComputedStyle(document.body).direction") == ("rtl" if lang == "ar" else "ltr")
            boxes[lang] = {name: _box(page, sel) for name, sel in (
                ("main", "main"), ("title", "#design-title"), ("lab", "header a"), ("switch", "#language-switch"),
                ("first_cell", "#versions tr td:first-child"), ("last_cell", "#versions tr td:last-child"),
                ("cell_text", "#versions tr td:first-child a"))}
            if lang != "en":
                page.screenshot(path=str(folder / f"design-page-{lang}.png"))
                assert (folder / f"design-page-{lang}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        finally:
            context.close()
    for lang in ("en", "ar"):
        b = boxes[lang]
        left, right = b["main"]["x"], b["main"]["x"] + b["main"]["width"]
        start = (lambda box: box["x"] - left) if lang == "en" else (lambda box: right - box["x"] - box["width"])
        # the heading, the lab's name, a row's first cell and its text begin at the start side...
        for name in ("title", "lab", "first_cell", "cell_text"):
            assert start(b[name]) < 12, (lang, name, b[name], b["main"])
        # ...and the language switch and a row's last cell sit at the end side
        assert start(b["switch"]) > b["main"]["width"] / 2 and start(b["last_cell"]) > b["main"]["width"] / 2
    en, ar = boxes["en"], boxes["ar"]
    assert en["first_cell"]["x"] < en["last_cell"]["x"] and ar["first_cell"]["x"] > ar["last_cell"]["x"]


def test_headers_and_the_not_found_page_follow_the_language(lab):
    request = urllib.request.Request(lab["base"] + "/designs", headers={"Accept-Language": "sw, en;q=0.5"})
    with urllib.request.urlopen(request, timeout=10) as r:
        assert r.headers["Content-Language"] == "sw" and "Accept-Language" in r.headers["Vary"]
        assert "set-cookie" not in {k.lower() for k in r.headers}  # only the switch sets one
    with urllib.request.urlopen(lab["base"] + "/designs?lang=ar", timeout=10) as r:
        assert "lang=ar" in r.headers["Set-Cookie"] and 'dir="rtl"' in r.read().decode()
    missing = "bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    request = urllib.request.Request(f"{lab['base']}/version/{missing}", headers={"Accept-Language": "es"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    body = caught.value.read().decode()
    assert caught.value.code == 404 and "<title>No encontrado</title>" in body and ">Inicio</a>" in body
    assert Formats("es").size(1536) == "1,5 KiB"
