"""The lab's web pages, served by a real daemon on 127.0.0.1: over plain HTTP, and in a real
headless Chromium driven by Playwright (Debian's chromium; never a downloaded browser)."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request

import pytest

from conftest import ROOT, Cli
from daemons import Daemon

EXAMPLE = ROOT / "examples" / "hand-pump"
SCREENSHOTS = ROOT / "docs" / "screenshots"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Nairobi publishes the pump and improves it; an adaptation (a new design, "Cusco pump")
    comes from the improvement; a lab attests the first version; a hostile title waits too."""
    tmp = tmp_path_factory.mktemp("web")
    lab = Cli(tmp / "lab")
    lab.run("init", "--name", "Fab Lab Nairobi")
    first = lab.json("publish", str(EXAMPLE), "-m", "first pump")
    improved = tmp / "improved"
    shutil.copytree(EXAMPLE, improved)
    with open(improved / "bom.csv", "a") as f:
        f.write("spare,O-ring 20 mm,2\n")
    (improved / "images" / "hand-pump.png").unlink()
    second = lab.json("publish", str(improved), "-m", "spare O-rings in the BOM", "--design", first["design"],
                      "--label", "1.1.0")
    adapted = lab.json("publish", str(improved), "-m", "adapted for Cusco's wells", "--parent", second["version"],
                       "--title", "Cusco pump", "--label", "1.0.0")
    lab.run("attest", first["version"], "--result", "passed", "-m", "pumps 20 l/min")
    hostile = tmp / "hostile"
    hostile.mkdir()
    (hostile / "README.md").write_text("# Hi\n\n<script>alert('readme')</script>\n\n[x](javascript:alert(1))\n")
    evil = lab.json("publish", str(hostile), "-m", "<img src=x onerror=alert(1)>", "--title",
                    "<script>alert('title')</script>", "--license", "CC0-1.0")
    proposal = _propose(lab, first, second)
    daemon = Daemon(lab)
    base = "http://" + json.loads((lab.home / "daemon.json").read_text())["http"]
    yield {"cli": lab, "first": first, "second": second, "adapted": adapted, "evil": evil, "base": base,
           "proposal": proposal}
    daemon.stop()


def _propose(lab: Cli, first: dict, second: dict) -> str:
    """A version of Nairobi's design signed by another lab (not a maintainer): a proposal."""
    from fabnode.node.home import Home
    from fabnode.protocol.cid import cid_str, parse_cid
    from fabnode.protocol.dagcbor import Link
    from fabnode.protocol.records import make_record
    from fabnode.storage import open_db
    from fabnode.storage.records import RecordStore

    from daemons import signing_key

    key, author = signing_key(33)
    record = make_record("version", {"bundle": Link(parse_cid(second["bundle"])), "parents": [Link(parse_cid(second["version"]))],
                                     "design": Link(parse_cid(first["design"])), "title": "Direct-action PVC hand pump",
                                     "label": "1.2.0-rc", "message": "longer handle, proposed by Pune",
                                     "license": "CERN-OHL-S-2.0"},
                         author=author, ts=int(time.time() * 1000), sign=key.sign)
    db = open_db(Home(lab.home).db_path)
    db.conn.execute("BEGIN IMMEDIATE")
    RecordStore(db.conn).ingest(record, received_ms=0)
    db.conn.execute("COMMIT")
    db.close()
    return cid_str(record.cid)


def fetch(lab, path: str) -> tuple[int, dict, str]:
    try:
        with urllib.request.urlopen(lab["base"] + path, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def test_every_page_kind_renders_with_a_strict_policy(lab):
    for path in ["/", "/designs", "/designs?q=pump", f"/design/{lab['first']['design']}",
                 f"/version/{lab['second']['version']}"]:
        status, headers, body = fetch(lab, path)
        assert status == 200, (path, body[:200])
        assert "default-src 'none'" in headers["content-security-policy"] and "<script" not in body.lower()
    status, _, body = fetch(lab, "/")
    assert "Fab Lab Nairobi" in body and "spare O-rings in the BOM" in body and "built · passed" in body
    status, _, body = fetch(lab, "/designs?q=cusco")
    assert "Cusco pump" in body and "Direct-action PVC hand pump" not in body


def test_design_page_shows_manifest_readme_pictures_files_and_lineage(lab):
    status, _, body = fetch(lab, f"/design/{lab['first']['design']}")
    assert 'id="manifest"' in body and "CERN-OHL-S-2.0" in body
    assert 'id="readme"' in body and '<h1 id="readme-direct-action-pvc-hand-pump">' in body  # the README, rendered
    bundle = lab["second"]["bundle"]  # the head's files
    assert f'href="/ipfs/{bundle}/bom.csv"' in body and f'href="/ipfs/{bundle}?format=car"' in body
    assert f'src="/ipfs/{bundle}/images/hand-pump.svg"' in body
    # lineage: both versions in this design's column, the adaptation in its own, joined by an arrow
    assert body.count('class="version canonical"') == 3 and 'class="edge adaptation"' in body
    # Pune's version is a proposal: drawn hollow, and said so in the table
    assert f'class="version proposal" data-version="{lab["proposal"]}"' in body
    assert '<span class="proposal">proposal</span>' in body
    assert f'data-version="{lab["adapted"]["version"]}"' in body and "✓ built · passed ×1 by trusted labs" in body


def test_version_page_shows_changes_attestations_and_reputation(lab):
    status, _, body = fetch(lab, f"/version/{lab['second']['version']}")
    assert "<li>changed <code>bom.csv</code></li>" in body
    assert "<li>removed <code>images/hand-pump.png</code></li>" in body
    status, _, body = fetch(lab, f"/version/{lab['first']['version']}")
    assert 'built · passed' in body and 'id="verdict"' in body


def test_text_from_other_labs_is_escaped_everywhere(lab):
    for path in ["/", "/designs", f"/design/{lab['evil']['design']}", f"/version/{lab['evil']['version']}"]:
        status, _, body = fetch(lab, path)
        assert status == 200
        assert "<script>alert" not in body and "<img src=x" not in body and 'href="javascript:' not in body
        assert "&lt;script&gt;alert(&#39;title&#39;)&lt;/script&gt;" in body or "&lt;img src=x" in body
    status, _, body = fetch(lab, f"/design/{lab['evil']['design']}")
    assert "&lt;script&gt;alert('readme')&lt;/script&gt;" in body  # raw HTML in a README stays text


def test_unknown_pages_are_a_plain_404(lab):
    for path in ["/design/not-a-cid", "/version/bafyreihkgj22ozm4mzzlfmvjovi2dy3737ctyxyd6gdwv7fmpbffbx4qaa",
                 "/design/bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyka"]:
        status, _, body = fetch(lab, path)
        assert status == 404 and "<script" not in body


def test_in_a_browser_from_design_to_version_to_file(lab, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(lab["base"] + "/", timeout=15_000)
    assert page.locator("h1").first.inner_text() == "Fab Lab Nairobi"
    page.get_by_role("link", name="Designs").click()
    page.wait_for_url("**/designs")
    page.get_by_role("link", name="Direct-action PVC hand pump").click()
    page.wait_for_url("**/design/**")
    assert page.locator("#design-title").inner_text() == "Direct-action PVC hand pump"
    lineage = page.locator("svg#lineage")
    assert lineage.is_visible()
    assert lineage.locator("line.edge.adaptation").count() == 1
    assert lineage.locator(f'g[data-version="{lab["adapted"]["version"]}"]').count() == 1
    assert page.locator(".pictures img").first.evaluate("img => img.naturalWidth") > 0  # the picture loads
    # the README's picture: refreshed with UPDATE_SCREENSHOTS=1, otherwise taken into a temporary folder
    folder = SCREENSHOTS if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / "design-page.png"))
    assert (folder / "design-page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page.locator("#versions a", has_text="1.1.0").click()
    page.wait_for_url("**/version/**")
    assert page.locator("#message").inner_text() == "spare O-rings in the BOM"
    assert "bom.csv" in page.locator("#diff").inner_text()
    page.locator("#version-facts a", has_text=lab["second"]["bundle"]).click()
    page.wait_for_url("**/ipfs/**")
    page.get_by_role("link", name="okh.toml").click()
    page.wait_for_load_state()
    assert "Open Know-How" in page.locator("body").inner_text()
    assert errors == []
    page.close()


def test_search_from_the_header_in_a_browser(lab, browser):
    page = browser.new_page()
    page.goto(lab["base"] + "/designs", timeout=15_000)
    page.get_by_label("Search designs").fill("Cusco")
    page.get_by_label("Search designs").press("Enter")
    page.wait_for_url("**/designs?q=Cusco")
    assert "Cusco pump" in page.locator("#designs").inner_text()
    assert "Direct-action PVC hand pump" not in page.locator("#designs").inner_text()
    page.close()


def test_pages_render_from_one_connection(lab, monkeypatch):
    """Pages opens no SQLite connection per render: every page reads the store it was given
    (the daemon's), on the thread that owns it."""
    import sqlite3

    from fabnode.node.home import Home
    from fabnode.node.http.pages import Pages

    home = Home(lab["cli"].home)
    pages = Pages(home, home.open_store())

    def refuse(*args, **kwargs):
        raise AssertionError("a page opened a new SQLite connection")

    monkeypatch.setattr(sqlite3, "connect", refuse)
    for _ in range(2):
        assert "<html" in pages.home_page().lower()
        assert "pump" in pages.designs_page(None).lower() and "pump" in pages.designs_page("pump").lower()
        assert lab["first"]["design"] in pages.design_page(lab["first"]["design"])
        assert lab["second"]["version"] in pages.version_page(lab["second"]["version"])
