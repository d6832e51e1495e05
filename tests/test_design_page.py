"""The design page a lab can use (issue 15): a ZIP download byte-identical to `fabnode get`,
README pictures and links that resolve to the design's own files, attestation notes, tests and
evidence, results kept apart, sizes for people. One daemon, served over real HTTP on 127.0.0.1,
read by urllib, Info-ZIP's unzip and a real Chromium (Playwright)."""

from __future__ import annotations

import http.client
import io
import json
import shutil
import sqlite3
import subprocess
import urllib.parse
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, Cli, damage_block, write_random_file
from daemons import Daemon

EXAMPLE = ROOT / "examples" / "hand-pump"
UNZIP = shutil.which("unzip")
README_EXTRA = """
## Assembly and files

See [the assembly steps](docs/assembly.md) and [the docs folder](docs/).
![outside the design](../../../etc/passwd) ![tracker](https://tracker.example/pixel.png)
[a site](https://example.org/) [run me](javascript:alert(1)) ![inline](data:image/png;base64,iVBORw0KGgo=)
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Pune publishes the hand pump, then a version with docs (nested folders, an empty file, a
    file of three blocks) whose README links into them; attests both versions four ways, with
    notes, tests and evidence; and adds a folder whose middle block is then damaged on disk."""
    tmp = tmp_path_factory.mktemp("page")
    lab = Cli(tmp / "lab")
    lab.run("init", "--name", "Fab Lab Pune")
    first = lab.json("publish", str(EXAMPLE), "-m", "first pump")
    folder = tmp / "pump"
    shutil.copytree(EXAMPLE, folder)
    with open(folder / "README.md", "a") as f:
        f.write(README_EXTRA)
    (folder / "docs" / "deep" / "nested").mkdir(parents=True)
    (folder / "docs" / "assembly.md").write_text("# Assembly\n\n1. Cut the outer pipe to 11.6 m.\n")
    (folder / "docs" / "empty.txt").write_bytes(b"")
    (folder / "docs" / "deep" / "nested" / "part.txt").write_text("two folders down\n")
    write_random_file(folder / "cad" / "mould.stl", 2_500_000, seed=15)  # three blocks
    second = lab.json("publish", str(folder), "-m", "assembly notes and the mould", "--design", first["design"],
                      "--label", "1.1.0")
    log = tmp / "flow-log.txt"
    log.write_text("stroke,litres\n1,0.48\n")
    lab.run("attest", second["version"], "--predicate", "tested", "--result", "warned", "-m",
            "Flow 11 L/min at 40 strokes:\nbelow the 12 L/min target.", "--test", "T1 foot valve holds",
            "--test", "T3 flow ≥ 12 L/min", "--evidence", str(EXAMPLE / "images" / "hand-pump.png"),
            "--evidence", str(log))
    lab.run("attest", second["version"], "--result", "passed", "-m", "built in two days")
    lab.run("attest", first["version"], "--result", "failed", "-m", "cup seal tore")
    photo = lab.json("add", str(EXAMPLE / "images" / "hand-pump.png"))["cid"]
    _stranger_attests(lab.home, second["version"], photo)
    broken_dir = tmp / "broken"
    write_random_file(broken_dir / "big.bin", 2_500_000, seed=16)
    broken = lab.json("add", str(broken_dir))["cid"]
    _damage_middle_block(lab.home, broken_dir / "big.bin")
    daemon = Daemon(lab)
    base = "http://" + json.loads((lab.home / "daemon.json").read_text())["http"]
    yield {"cli": lab, "first": first, "second": second, "folder": folder, "broken": broken, "base": base,
           "daemon": daemon, "tmp": tmp}
    daemon.stop()
    assert not daemon.said("internal error")


def _stranger_attests(home: Path, version: str, evidence: str) -> None:
    """An attestation by a key this lab does not trust, claiming its name, with hostile notes and
    tests and the same photo as evidence (received as if by gossip)."""
    import time

    from fabnode.protocol.cid import parse_cid
    from fabnode.protocol.dagcbor import Link
    from fabnode.protocol.records import make_record
    from fabnode.storage import open_db
    from fabnode.storage.records import RecordStore

    from daemons import signing_key

    key, author = signing_key(44)
    record = make_record("attestation", {"subject": Link(parse_cid(version)), "predicate": "tested", "result": "passed",
                                         "lab": "Fab Lab Pune", "notes": "<script>alert('notes')</script>",
                                         "tests": ["<img src=x onerror=alert(1)>"], "evidence": [Link(parse_cid(evidence))]},
                         author=author, ts=int(time.time() * 1000), sign=key.sign)
    db = open_db(home / "fabnode.db")
    db.conn.execute("BEGIN IMMEDIATE")
    RecordStore(db.conn).ingest(record, received_ms=0)
    db.conn.execute("COMMIT")
    db.close()


def _damage_middle_block(home: Path, source: Path) -> None:
    """Flip a byte of the second 1 MiB block of ``source`` as stored (what a failing disk does)."""
    from fabnode.protocol.cid import RAW, make_cid

    middle = source.read_bytes()[1 << 20:2 << 20]
    conn = sqlite3.connect(home / "fabnode.db")
    changed = damage_block(conn, make_cid(RAW, middle), bytes([middle[0] ^ 1]) + middle[1:])
    conn.close()
    assert changed == 1


def request(site, path: str) -> tuple[int, dict, bytes]:
    parts = urllib.parse.urlsplit(site["base"])
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def tree(folder: Path) -> dict[str, bytes | None]:
    """relative path -> bytes (None for a folder) of everything under ``folder``."""
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes()) for p in sorted(folder.rglob("*"))}


def test_the_zip_is_byte_identical_to_get_in_python_and_in_unzip(site, tmp_path):
    bundle = site["second"]["bundle"]
    status, headers, body = request(site, f"/ipfs/{bundle}?format=zip&filename=Direct-action%20PVC%20hand%20pump"
                                          "%201.1.0.zip")
    assert status == 200 and headers["content-type"] == "application/zip"
    assert headers["content-disposition"] == ('attachment; filename="Direct-action PVC hand pump 1.1.0.zip"; '
                                              "filename*=UTF-8''Direct-action%20PVC%20hand%20pump%201.1.0.zip")
    assert headers["content-security-policy"] == "sandbox" and "content-length" not in headers  # streamed
    site["cli"].run("get", bundle, "-o", str(tmp_path / "got"))
    expected = tree(tmp_path / "got")
    assert expected["docs/empty.txt"] == b"" and expected["docs/deep/nested/part.txt"] == b"two folders down\n"
    assert len(expected["cad/mould.stl"]) == 2_500_000 and expected["docs/deep"] is None

    archive = zipfile.ZipFile(io.BytesIO(body))
    assert archive.testzip() is None
    assert {n.split("/", 1)[0] for n in archive.namelist()} == {"Direct-action PVC hand pump 1.1.0"}
    archive.extractall(tmp_path / "python")
    assert tree(tmp_path / "python" / "Direct-action PVC hand pump 1.1.0") == expected
    if UNZIP is None:
        pytest.fail("unzip is missing: .ci/run installs it (apt-get install unzip)")
    (tmp_path / "design.zip").write_bytes(body)
    subprocess.run([UNZIP, "-q", str(tmp_path / "design.zip"), "-d", str(tmp_path / "unzip")], check=True, timeout=60)
    assert tree(tmp_path / "unzip" / "Direct-action PVC hand pump 1.1.0") == expected
    assert request(site, f"/ipfs/{bundle}?format=zip&filename=Direct-action%20PVC%20hand%20pump%201.1.0.zip")[2] == body


def test_a_zip_of_a_folder_and_hostile_or_missing_names(site):
    bundle = site["second"]["bundle"]
    status, headers, body = request(site, f"/ipfs/{bundle}/docs?format=zip")
    assert status == 200 and 'filename="docs.zip"' in headers["content-disposition"]
    assert sorted(zipfile.ZipFile(io.BytesIO(body)).namelist()) == [
        "docs/", "docs/assembly.md", "docs/deep/", "docs/deep/nested/", "docs/deep/nested/part.txt", "docs/empty.txt"]
    status, headers, body = request(site, f"/ipfs/{bundle}/docs?format=zip&filename=..%2F..%2Fx%22%0D%0A.zip")
    assert status == 200 and headers["content-disposition"].startswith('attachment; filename="_.._x___.zip"')
    assert zipfile.ZipFile(io.BytesIO(body)).namelist()[0] == "_.._x___/"
    absent = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyka"
    status, _, body = request(site, f"/ipfs/{absent}?format=zip")
    assert status == 404 and body.decode().count("\n") == 1 and body.startswith(b"not held on this node")
    status, _, body = request(site, f"/ipfs/{bundle}?format=tar")
    assert status == 400 and body == b"unsupported format 'tar' (this gateway serves raw, car, dag-cbor and zip)\n"


def test_a_block_damaged_midway_breaks_the_download_instead_of_ending_it(site):
    """The damaged block passes the checks made before the first byte (they read folders and
    file roots, not every leaf), so the ZIP is half sent when it is found: the connection must
    close without the end of the chunked body, and what arrived must not open as an archive."""
    parts = urllib.parse.urlsplit(site["base"])
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)
    conn.request("GET", f"/ipfs/{site['broken']}?format=zip")
    r = conn.getresponse()
    assert r.status == 200
    with pytest.raises(http.client.IncompleteRead) as broken:
        r.read()
    conn.close()
    partial = broken.value.partial
    assert len(partial) >= 1 << 20  # the first block went out before the damaged one was read
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(partial))
    line = site["daemon"].wait_for("http download broken off", timeout=10)
    assert "is damaged" in line


def _page(site, browser):
    """A page that records every request it makes, and fails on script errors."""
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.requested = []
    page.on("request", lambda r: page.requested.append(r.url))
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    return page


def test_in_a_browser_the_readme_shows_its_picture_and_links_into_the_design(site, browser, tmp_path):
    bundle = site["second"]["bundle"]
    page = _page(site, browser)
    page.goto(f"{site['base']}/design/{site['first']['design']}", timeout=15_000)
    readme = page.locator("#readme")
    picture = readme.locator("img").first
    assert picture.get_attribute("src") == f"/ipfs/{bundle}/images/hand-pump.png"
    picture.scroll_into_view_if_needed()
    page.wait_for_function("img => img.complete", arg=picture.element_handle(), timeout=10_000)
    assert picture.evaluate("img => img.naturalWidth") > 0  # the hand pump's drawing, from the bundle
    assert readme.locator("img").count() == 1  # no tracker, no data: picture, no passwd
    assert "tracker (a picture on another site, not loaded)" in readme.inner_text()
    assert readme.locator("a", has_text="a site").get_attribute("rel") == "noopener noreferrer nofollow"
    assert readme.locator('span.not-followed[title="not followed: it leads out of the design"]').count() == 1
    # the README's own anchors lead to its headings
    readme.get_by_role("link", name="Limits and variants").click()
    page.wait_for_url("**#readme-limits-and-variants", timeout=10_000)
    assert page.locator("#readme-limits-and-variants").evaluate(
        "h => { const r = h.getBoundingClientRect(); return r.top >= 0 && r.top < innerHeight; }")
    # sizes for people, and the ZIP next to the CAR, downloaded by the browser itself
    sizes = page.locator("#files td.size").all_inner_texts()
    assert "2.4 MiB" in sizes and "0 B" in sizes and not any("bytes" in s for s in sizes)
    assert page.locator("#download-car").get_attribute("href") == f"/ipfs/{bundle}?format=car"
    with page.expect_download(timeout=15_000) as download:
        page.locator("#download-zip").click()
    assert download.value.suggested_filename == "Direct-action PVC hand pump 1.1.0.zip"
    download.value.save_as(tmp_path / "from-browser.zip")
    names = zipfile.ZipFile(tmp_path / "from-browser.zip").namelist()
    assert "Direct-action PVC hand pump 1.1.0/docs/deep/nested/part.txt" in names
    # a relative link goes to the design's own file, and a folder link to its listing
    readme.get_by_role("link", name="the assembly steps").click()
    page.wait_for_url(f"**/ipfs/{bundle}/docs/assembly.md", timeout=10_000)
    assert "Cut the outer pipe to 11.6 m." in page.locator("body").inner_text()
    page.go_back()
    page.locator("#readme").get_by_role("link", name="the docs folder").click()
    page.wait_for_url(f"**/ipfs/{bundle}/docs/", timeout=10_000)
    assert page.get_by_role("link", name="empty.txt").count() == 1
    assert all(urllib.parse.urlsplit(u).hostname == "127.0.0.1" for u in page.requested), page.requested
    assert page.errors == []
    page.close()


def test_in_a_browser_results_stay_apart_and_attestations_show_notes_tests_and_evidence(site, browser):
    page = _page(site, browser)
    page.goto(f"{site['base']}/design/{site['first']['design']}", timeout=15_000)
    second = page.locator(f'svg#lineage g[data-version="{site["second"]["version"]}"]')
    claims = second.locator("text.claim").all_text_contents()
    assert claims == ["✓ built · passed ×1 by trusted labs", "⚠ tested · warned ×1 by trusted labs"]
    first = page.locator(f'svg#lineage g[data-version="{site["first"]["version"]}"]')
    assert first.locator("text.claim").all_text_contents() == ["✗ built · failed ×1 by trusted labs"]
    assert second.locator('text.claim[data-claim="tested/warned"]').get_attribute("fill") != \
        second.locator('text.claim[data-claim="built/passed"]').get_attribute("fill")
    versions = page.locator("#versions").inner_text()
    assert "✓ built · passed ×1 by trusted labs" in versions and "⚠ tested · warned ×1 by trusted labs" in versions

    page.goto(f"{site['base']}/version/{site['second']['version']}", timeout=15_000)
    warned = page.locator("tr.attestation", has_text="tested · warned")
    assert warned.locator(".notes").inner_text() == "Flow 11 L/min at 40 strokes:\nbelow the 12 L/min target."
    assert warned.locator(".tests").inner_text() == "Tests: T1 foot valve holds, T3 flow ≥ 12 L/min"
    photo = warned.locator(".evidence img")
    assert photo.count() == 1
    page.wait_for_function("img => img.complete", arg=photo.element_handle(), timeout=10_000)
    assert photo.evaluate("img => img.naturalWidth") > 0  # the evidence photo, through the gateway
    log = warned.locator("a.evidence-file")
    assert log.inner_text() == "evidence 2 (21 B)"
    assert page.locator("tr.attestation", has_text="built · passed").locator(".notes").inner_text() == \
        "built in two days"
    assert page.locator("#downloads").get_by_role("link", name="ZIP").count() == 1
    # a key this node does not trust: its words shown as text, its evidence a link, never read as a picture
    stranger = page.locator("tr.attestation", has_text="tested · passed")
    assert stranger.locator(".notes").inner_text() == "<script>alert('notes')</script>"
    assert stranger.locator(".tests").inner_text() == "Tests: <img src=x onerror=alert(1)>"
    assert stranger.locator(".evidence img").count() == 0
    assert stranger.locator("a.evidence-file").inner_text().startswith("evidence 1 (")
    with page.expect_download(timeout=15_000) as download:  # a file of no known type is saved, not shown
        log.click()
    assert Path(download.value.path()).read_bytes() == b"stroke,litres\n1,0.48\n"
    assert page.errors == []
    page.close()
