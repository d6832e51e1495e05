"""A design's README as HTML whose pictures and links point into the design itself (issue 15).

A README written for a folder says ``![](images/dryer.png)`` and ``[assembly](build/assembly.md)``:
relative to where the README lies. On the design page those would resolve against
``/design/<id>`` and break, so every URL is rewritten here, on markdown-it's tokens (never on
HTML text), by one rule, :func:`classify_url`:

* a **relative path** (or one starting with ``/``, meaning the bundle's root, as on a code
  forge) is resolved against the README's folder, ``.`` and ``..`` included, and becomes
  ``/ipfs/<bundle>/<path>``, served by this node's gateway with its sandbox policy. A path
  that climbs out of the bundle, or holds a segment the gateway refuses (``\\``, NUL, an
  encoded ``/``), is **not followed**: the link keeps its text without a target. So is a link
  to a file the bundle does not have (when its listing is known). A query string is dropped
  (``?format=car`` must not turn a picture into a download); a fragment is kept on links.
* ``#anchor`` names a heading of the README: headings get ids as a code forge makes them
  ("Limits and variants" → ``limits-and-variants``, repeats numbered), prefixed with
  ``readme-`` so that a README cannot take the page's own ids, and anchors are prefixed alike.
* **Links to other sites** (``http``, ``https``, ``mailto``) stay as plain links with
  ``rel="noopener noreferrer nofollow"``: following one is the reader's choice.
  Any other scheme (``javascript:``, ``data:``, ``file:``, ``ipfs:`` …) is neutralised.
* **Pictures are only ever loaded from the bundle.** A picture on another site would tell
  that site who reads the page (and the page's ``img-src 'self'`` would block it anyway); it
  becomes a link to it, marked as not loaded. A ``data:`` or other picture becomes its
  alternative text.

Raw HTML stays off (it is shown as text), as before: markdown-it in CommonMark mode, tables on.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from fabnode.protocol.paths import segment_problem

EXTERNAL_LINK_SCHEMES = ("http", "https", "mailto")
"""Schemes a link to somewhere else may keep."""
EXTERNAL_REL = "noopener noreferrer nofollow"
ANCHOR_PREFIX = "readme-"
"""Heading ids and in-page anchors of a README start with this: the page's own ids stay its own."""


def heading_slug(text: str) -> str:
    """A heading's anchor as code forges make it: lower case, punctuation dropped, spaces to ``-``."""
    import re

    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


@dataclass(frozen=True, slots=True)
class Inside:
    """A URL naming a path in the bundle."""

    path: str
    """Resolved from the bundle's root, segments joined by ``/`` ("" is the root itself)."""
    folder: bool
    """The URL ended with ``/``."""
    fragment: str


@dataclass(frozen=True, slots=True)
class Anchor:
    """``#fragment``: a place in the same page."""

    fragment: str


@dataclass(frozen=True, slots=True)
class Elsewhere:
    """A URL on another site with a scheme links may keep."""

    url: str


@dataclass(frozen=True, slots=True)
class Refused:
    """A URL that is not followed, and why (shown as the text's tooltip)."""

    reason: str


def classify_url(url: str, readme_folder: list[str]) -> Inside | Anchor | Elsewhere | Refused:
    """What a README's link or picture URL (as markdown-it normalised it: percent-encoded)
    means, for a README lying in ``readme_folder`` (segments from the bundle's root)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return Refused("a malformed address")
    if parts.scheme or parts.netloc:
        if parts.scheme.lower() in EXTERNAL_LINK_SCHEMES and (parts.netloc or parts.scheme.lower() == "mailto"):
            return Elsewhere(url)
        return Refused(f"{parts.scheme or 'that kind of'} addresses are not followed")
    if not parts.path:
        return Anchor(parts.fragment) if parts.fragment else Refused("an empty address")
    segments = [] if parts.path.startswith("/") else list(readme_folder)
    for raw in parts.path.split("/"):
        try:
            segment = urllib.parse.unquote(raw, errors="strict")
        except UnicodeDecodeError:
            return Refused("its name is not valid UTF-8")
        if segment in ("", "."):
            continue
        if segment == "..":
            if not segments:
                return Refused("it leads out of the design")
            segments.pop()
            continue
        problem = segment_problem(segment)
        if problem is not None:
            return Refused(f"it names {problem}")
        segments.append(segment)
    return Inside("/".join(segments), parts.path.endswith("/"), parts.fragment)


def bundle_url(bundle: str, path: str, folder: bool = False, fragment: str = "") -> str:
    """``/ipfs/<bundle>/<path>``, each segment percent-encoded."""
    quoted = "/".join(urllib.parse.quote(s, safe="") for s in path.split("/")) if path else ""
    url = f"/ipfs/{bundle}/{quoted}"
    if folder and path:
        url += "/"
    return url + (f"#{fragment}" if fragment else "")  # as markdown-it normalised (percent-encoded) it


def known_paths(files) -> set[str]:
    """Every file path and every folder holding one, from a bundle's file paths."""
    known = {""}
    for path in files:
        parts = path.split("/")
        known.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return known


def render_readme(text: str, bundle: str, readme_path: str = "README.md", known: set[str] | None = None) -> str:
    """The README as HTML, its pictures and links rewritten as the module says. ``known``:
    the bundle's paths (:func:`known_paths`), to leave links to missing files without a
    target; None when the listing is not known whole."""
    from markdown_it import MarkdownIt
    from markdown_it.token import Token

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    env: dict = {}
    tokens = md.parse(text, env)
    folder = readme_path.split("/")[:-1]

    def target(url: str):
        where = classify_url(url, folder)
        if isinstance(where, Inside) and known is not None and where.path not in known:
            return Refused("this design has no such file")
        return where

    def neutral(token: Token, reason: str) -> None:
        token.tag, token.attrs = "span", {"class": "not-followed", "title": f"not followed: {reason}"}

    def text(content: str) -> Token:
        token = Token("text", "", 0)
        token.content = content
        return token

    slugs: dict[str, int] = {}
    for i, block in enumerate(tokens):
        if block.type == "heading_open" and i + 1 < len(tokens) and tokens[i + 1].type == "inline":
            slug = heading_slug(md.renderer.renderInlineAsText(tokens[i + 1].children or [], md.options, env))
            seen = slugs.get(slug, 0)
            slugs[slug] = seen + 1
            block.attrs = {**block.attrs, "id": ANCHOR_PREFIX + (f"{slug}-{seen}" if seen else slug)}
        if not block.children:
            continue
        out: list[Token] = []
        closing: Token | None = None  # links do not nest: the next link_close is this link's
        for token in block.children:
            if token.type == "link_open":
                where = target(token.attrGet("href") or "")
                closing = token
                if isinstance(where, Inside):
                    token.attrs = {**token.attrs, "href": bundle_url(bundle, where.path, where.folder, where.fragment)}
                elif isinstance(where, Anchor):
                    token.attrs = {**token.attrs, "href": f"#{ANCHOR_PREFIX}{where.fragment}"}  # encoded by markdown-it
                elif isinstance(where, Elsewhere):
                    token.attrs = {**token.attrs, "rel": EXTERNAL_REL}
                elif isinstance(where, Refused):
                    neutral(token, where.reason)
                out.append(token)
            elif token.type == "link_close":
                if closing is not None:
                    token.tag = closing.tag
                closing = None
                out.append(token)
            elif token.type == "image":
                where = target(token.attrGet("src") or "")
                alt = md.renderer.renderInlineAsText(token.children or [], md.options, env)
                if isinstance(where, Inside):
                    token.attrs = {**token.attrs, "src": bundle_url(bundle, where.path)}
                    out.append(token)
                elif isinstance(where, Elsewhere) and urllib.parse.urlsplit(where.url).scheme.lower() != "mailto":
                    link = Token("link_open", "a", 1)
                    link.attrs = {"href": where.url, "rel": EXTERNAL_REL, "class": "external-picture"}
                    out += [link, text(f"{alt or 'picture'} (a picture on another site, not loaded)"),
                            Token("link_close", "a", -1)]
                else:
                    span = Token("link_open", "span", 1)
                    neutral(span, where.reason if isinstance(where, Refused)
                            else "pictures are shown only from the design's own files")
                    out += [span, text(alt or "picture not shown"), Token("link_close", "span", -1)]
            else:
                out.append(token)
        block.children = out
    return md.renderer.render(tokens, md.options, env)
