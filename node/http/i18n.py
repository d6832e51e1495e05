"""The web pages in the lab's language (issue 19): gettext catalogs read with Babel, the language
chosen per request, dates and numbers formatted for it.

Catalogs live in ``node/http/locale/LANG/LC_MESSAGES/fabnode.po`` (the ``.pot`` beside them is
extracted from the templates and from pages.py/web.py with ``pybabel extract -F babel.cfg``).
Building the wheel compiles each ``.po`` into a ``.mo`` beside it (setup.py); a checkout without
``.mo`` files (an editable install, a test run) reads the ``.po`` itself, once per process.

The language of a request: ``?lang=xx`` (the switch in every page's header; it also sets a
cookie), else the ``lang`` cookie, else the best of ``Accept-Language`` that a catalog exists for
(:func:`babel.negotiate_locale`), else English, the language the msgids are written in.
"""

from __future__ import annotations

import datetime
from functools import lru_cache
from pathlib import Path

LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "fabnode"
DEFAULT = "en"
COOKIE = "lang"


def languages() -> list[str]:
    """Every language with a catalog, English first (the msgids are English)."""
    found = sorted({p.parent.parent.name for p in LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.[mp]o")})
    return [DEFAULT] + [lang for lang in found if lang != DEFAULT]


@lru_cache(maxsize=None)
def language_names() -> dict[str, str]:
    """Each language in its own words ("Español", "العربية"), for the switch."""
    from babel import Locale

    names = {lang: Locale.parse(lang).get_display_name(lang) for lang in languages()}
    return {lang: name[:1].upper() + name[1:] for lang, name in names.items()}


@lru_cache(maxsize=None)
def translations(lang: str):
    """The gettext catalog of ``lang``: the compiled ``.mo`` if the build made one, else the
    ``.po`` read into memory (NullTranslations for English)."""
    import gettext

    from babel.support import Translations

    folder = LOCALE_DIR / lang / "LC_MESSAGES"
    mo, po = folder / f"{DOMAIN}.mo", folder / f"{DOMAIN}.po"
    if mo.is_file():
        with open(mo, "rb") as f:
            return Translations(f, domain=DOMAIN)
    if po.is_file():
        import io

        from babel.messages.mofile import write_mo
        from babel.messages.pofile import read_po

        with open(po, "rb") as f:
            catalog = read_po(f, locale=lang, domain=DOMAIN)
        buf = io.BytesIO()
        write_mo(buf, catalog)
        buf.seek(0)
        return Translations(buf, domain=DOMAIN)
    return gettext.NullTranslations()


def choose(query_lang: str | None, cookie_lang: str | None, accept_language: str | None) -> str:
    """The page's language: the switch, then the cookie, then Accept-Language, then English."""
    known = languages()
    for asked in (query_lang, cookie_lang):
        if asked and asked in known:
            return asked
    if accept_language:
        from babel import negotiate_locale

        wanted = []
        for part in accept_language.split(",")[:20]:
            tag, _, params = part.strip().partition(";")
            q = 1.0
            if params.strip().startswith("q="):
                try:
                    q = float(params.strip()[2:])
                except ValueError:
                    q = 0.0
            if tag and q > 0:
                wanted.append((q, tag.strip().replace("_", "-")))
        wanted.sort(key=lambda t: -t[0])  # stable: equal weights keep their order
        # a region the catalogs lack falls back to its language (es-PE → es)
        tags = [t for _, t in wanted]
        tags += [t.split("-")[0] for t in tags]
        # catalogs are named pt_BR, browsers say pt-BR or PT-br: compared in lower case with "-"
        by_tag = {lang.replace("_", "-").lower(): lang for lang in known}
        found = negotiate_locale([t.lower() for t in tags], list(by_tag), sep="-")
        if found and found.lower() in by_tag:
            return by_tag[found.lower()]
    return DEFAULT


@lru_cache(maxsize=None)
def direction(lang: str) -> str:
    """``rtl`` for a language written right to left (CLDR's character order, through Babel)."""
    from babel import Locale

    return "rtl" if Locale.parse(lang.replace("-", "_")).character_order == "right-to-left" else "ltr"


class Formats:
    """Dates, numbers and sizes for one language (Babel's CLDR data)."""

    def __init__(self, lang: str) -> None:
        self.lang = lang

    def when(self, ms: int) -> str:
        """A moment as day, month in words, year and 24-hour time, in UTC ("27 nov 2026, 18:20")."""
        from babel import Locale
        from babel.dates import format_skeleton

        utc = datetime.timezone.utc
        moment = datetime.datetime.fromtimestamp(ms / 1000, utc)
        day = format_skeleton("yMMMd", moment, tzinfo=utc, locale=self.lang)
        hour = format_skeleton("Hm", moment, tzinfo=utc, locale=self.lang)
        return str(Locale.parse(self.lang).datetime_formats["medium"]).replace("{1}", day).replace("{0}", hour)

    def number(self, value) -> str:
        from babel.numbers import format_decimal

        return format_decimal(value, locale=self.lang)

    def size(self, size: float) -> str:
        """protocol.errors.human_size's rule with the locale's digits and decimal sign
        (``1.5 KiB``, ``1,5 KiB``); the binary unit symbols are the same in every language."""
        from babel.numbers import format_decimal

        for unit in ("B", "KiB", "MiB", "GiB"):
            if size < 1024 or unit == "GiB":
                text = format_decimal(size, "#,##0" if unit == "B" else "#,##0.0", locale=self.lang)
                return f"{text} {unit}"
            size /= 1024
        return str(size)

    def trust(self, value: float) -> str:
        """A trust value with two decimals (``0.50``, ``0,50``)."""
        from babel.numbers import format_decimal

        return format_decimal(value, "0.00", locale=self.lang)

    def signed(self, value: float) -> str:
        """A score with its sign and two decimals (``+0.50``, ``-0,25``)."""
        from babel.numbers import format_decimal

        return format_decimal(value, "+0.00;-0.00", locale=self.lang)


def language_links(path_and_query: str) -> list[tuple[str, str, str]]:
    """(code, name in its own words, href) per language: the same page with ``lang=`` set, the
    rest of its query kept (a search stays a search)."""
    import urllib.parse

    path, _, query = path_and_query.partition("?")
    kept = [(k, v) for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True) if k != "lang"]
    names = language_names()
    return [(code, names[code], path + "?" + urllib.parse.urlencode(kept + [("lang", code)])) for code in languages()]
