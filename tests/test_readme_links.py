"""README pictures and links rewritten into the design's own files (node/http/readme.py), with a
hostile README. The same README in a real browser is tests/test_design_page.py."""

from __future__ import annotations

import re

import pytest

from fabnode.node.http.readme import Anchor, Elsewhere, Inside, Refused, classify_url, known_paths, render_readme

BUNDLE = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
FILES = ["README.md", "images/dryer.png", "docs/assembly.md", "docs/README.md", "okh.toml", "a b/c.png"]


@pytest.mark.parametrize("url, folder, expected", [
    ("images/dryer.png", [], Inside("images/dryer.png", False, "")),
    ("./images/dryer.png", [], Inside("images/dryer.png", False, "")),
    ("docs/assembly.md#step-3", [], Inside("docs/assembly.md", False, "step-3")),
    ("docs/", [], Inside("docs", True, "")),
    ("/okh.toml", ["docs"], Inside("okh.toml", False, "")),  # from the bundle's root
    ("../okh.toml", ["docs"], Inside("okh.toml", False, "")),  # up, still inside
    ("docs/../okh.toml?format=car", [], Inside("okh.toml", False, "")),  # no query: it would change the answer
    ("a%20b/c.png", [], Inside("a b/c.png", False, "")),
    ("#limits", [], Anchor("limits")),
    ("https://example.org/x", [], Elsewhere("https://example.org/x")),
    ("mailto:lab@example.org", [], Elsewhere("mailto:lab@example.org")),
    ("../okh.toml", [], Refused("it leads out of the design")),
    ("docs/../../../etc/passwd", [], Refused("it leads out of the design")),
    ("%2e%2e/x", [], Refused("it leads out of the design")),
    ("a%2Fb", [], Refused("it names the name 'a/b', which contains '/'")),
    ("a%5Cb", [], Refused("it names the name 'a\\\\b', which contains '\\\\'")),
    ("x%00y", [], Refused("it names the name 'x\\x00y', which contains '\\x00'")),
    ("%ff.png", [], Refused("its name is not valid UTF-8")),
    ("javascript:alert(1)", [], Refused("javascript addresses are not followed")),
    ("data:image/png;base64,AAAA", [], Refused("data addresses are not followed")),
    ("//evil.example/x.png", [], Refused("that kind of addresses are not followed")),
    ("file:///etc/passwd", [], Refused("file addresses are not followed")),
    ("http:/no-host", [], Refused("http addresses are not followed")),
])
def test_each_kind_of_address(url, folder, expected):
    assert classify_url(url, folder) == expected


HOSTILE = """# Dryer

![the dryer](images/dryer.png "front view")
[assembly](docs/assembly.md#step-3) · [the docs](docs/) · [manifest](/okh.toml?format=car) · [a b](a%20b/c.png)
![passwd](../../etc/passwd) [climb](docs/../../x)
![tracker](https://tracker.example/pixel.png?who=you) ![inline](data:image/png;base64,iVBORw0KGgo=)
[js](javascript:alert(1)) [JS](JAVASCRIPT:alert(1)) [site](https://example.org/) <https://example.org/auto>
[missing](docs/nothing.md) [anchor](#limits) ![](//evil.example/x.png) [back](a%5Cb)
<img src="https://tracker.example/raw.png"> <a href="javascript:alert(2)">raw</a>
"""


def test_a_hostile_readme_loads_nothing_from_outside_and_links_only_inside_or_plainly_out():
    page = render_readme(HOSTILE, BUNDLE, "README.md", known_paths(FILES))
    base = f"/ipfs/{BUNDLE}/"
    # pictures: only from the bundle
    assert re.findall(r'<img src="([^"]*)"', page) == [base + "images/dryer.png"]
    assert 'alt="the dryer" title="front view"' in page
    # links into the bundle, resolved; a query dropped, a fragment kept, names percent-encoded
    hrefs = re.findall(r'<a href="([^"]*)"', page)
    assert base + "docs/assembly.md#step-3" in hrefs and base + "docs/" in hrefs and base + "okh.toml" in hrefs
    assert base + "a%20b/c.png" in hrefs
    # links elsewhere stay plain links that pass nothing on; a picture elsewhere becomes one, unloaded
    assert '<a href="https://example.org/" rel="noopener noreferrer nofollow">site</a>' in page
    assert '<a href="https://example.org/auto" rel="noopener noreferrer nofollow">' in page
    assert ('<a href="https://tracker.example/pixel.png?who=you" rel="noopener noreferrer nofollow" '
            'class="external-picture">tracker (a picture on another site, not loaded)</a>') in page
    # every address left in the page is the bundle, an anchor or https elsewhere: no javascript:, no data:
    addresses = re.findall(r'(?:href|src)="([^"]*)"', page)
    assert addresses and all(a.startswith((base, "#", "https://")) for a in addresses), addresses
    # what is not followed keeps its text and says why
    assert '<span class="not-followed" title="not followed: it leads out of the design">passwd</span>' in page
    assert '<span class="not-followed" title="not followed: it leads out of the design">climb</span>' in page
    assert '<span class="not-followed" title="not followed: this design has no such file">missing</span>' in page
    assert '<span class="not-followed" title="not followed: data addresses are not followed">inline</span>' in page
    assert '<a href="#readme-limits">anchor</a>' in page  # headings' ids carry the prefix too
    # raw HTML stays text
    assert "&lt;img src=&quot;https://tracker.example/raw.png&quot;&gt;" in page


def test_a_readme_in_a_subfolder_resolves_from_its_own_folder():
    page = render_readme("![d](../images/dryer.png) [a](assembly.md) [up](../../x)", BUNDLE, "docs/README.md",
                         known_paths(FILES))
    assert f'src="/ipfs/{BUNDLE}/images/dryer.png"' in page and f'href="/ipfs/{BUNDLE}/docs/assembly.md"' in page
    assert 'title="not followed: it leads out of the design">up</span>' in page


def test_without_a_listing_links_are_not_checked_against_it():
    page = render_readme("[missing](docs/nothing.md)", BUNDLE, "README.md", None)
    assert f'<a href="/ipfs/{BUNDLE}/docs/nothing.md">missing</a>' in page


def test_headings_get_anchors_that_cannot_take_the_pages_own_ids():
    page = render_readme("# Files\n\n[see](#limits-and-variants) [accent](#tolérance)\n\n## Limits and variants\n\n"
                         "## Limits and variants\n\n## Tolérance\n", BUNDLE)
    assert '<h1 id="readme-files">Files</h1>' in page  # not id="files": the page's file table keeps it
    assert '<h2 id="readme-limits-and-variants">' in page and '<h2 id="readme-limits-and-variants-1">' in page
    assert '<a href="#readme-limits-and-variants">see</a>' in page
    assert '<a href="#readme-tol%C3%A9rance">accent</a>' in page and '<h2 id="readme-tolérance">' in page
