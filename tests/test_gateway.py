"""The daemon's trustless-gateway subset over HTTP on 127.0.0.1 (docs/protocol.md §11, issue 7)."""

from __future__ import annotations

import filecmp
import hashlib
import html
import http.client
import json
import re
import sqlite3
import subprocess
import urllib.error
import urllib.parse
import urllib.request

import pytest

from fabnode.protocol.cid import DAG_CBOR, DAG_PB, RAW, cid_codec, cid_str, make_cid, parse_cid
from fabnode.protocol.unixfs import CHUNK_SIZE, decode, resolve

from conftest import ROOT, TOOLS, Cli, stored_block, write_random_file
from daemons import STOP_DEADLINE_S, Daemon

EXAMPLE = ROOT / "examples" / "hand-pump"
BIG_SIZE = 3 * CHUNK_SIZE + CHUNK_SIZE // 2
"""A file of four leaves (three whole chunks and a half one), for ranges and entity-bytes."""


def _file_blocks(db_path, bundle: str, name: str) -> tuple[str, list[str]]:
    """(CID of the file ``name`` in ``bundle``, CIDs of its leaves in order), read from SQLite."""
    with sqlite3.connect(db_path) as conn:
        def get(cid):
            return stored_block(conn, cid)
        file_cid = resolve(get, parse_cid(bundle), [name])
        return cid_str(file_cid), [cid_str(link.cid) for link in decode(file_cid, get(file_cid)).links]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """One lab holding the example design (also published: a signed record); a bundle with hostile
    file names, an HTML page and a four-leaf file whose last leaf is gone from the store (to prove
    a range reads only the leaves it needs); and a four-leaf file beside two identical files."""
    tmp = tmp_path_factory.mktemp("gateway")
    lab = Cli(tmp / "lab")
    lab.run("init", "--name", "Gateway Lab")
    bundle = lab.out("add", str(EXAMPLE))
    version = lab.out("publish", str(EXAMPLE), "-m", "first")
    odd = tmp / "odd"
    odd.mkdir()
    (odd / "page.html").write_text("<script>document.title='pwned'</script><p>hello</p>")
    (odd / "<img src=x onerror=alert(1)>.txt").write_text("name with markup")
    (odd / "50% off #2 ?.txt").write_text("name with URL syntax")
    write_random_file(odd / "sparse.bin", BIG_SIZE, seed=17)
    odd_bundle = lab.out("add", str(odd))
    write_random_file(tmp / "big" / "big.bin", BIG_SIZE, seed=16)
    (tmp / "big" / "a.txt").write_text("same bytes\n")
    (tmp / "big" / "b.txt").write_text("same bytes\n")
    big = lab.out("add", str(tmp / "big"))
    db = lab.home / "fabnode.db"
    big_file, big_leaves = _file_blocks(db, big, "big.bin")
    sparse_file, sparse_leaves = _file_blocks(db, odd_bundle, "sparse.bin")
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM blocks WHERE cid = ?", (parse_cid(sparse_leaves[3]),))
    daemon = Daemon(lab)
    http_addr = json.loads((lab.home / "daemon.json").read_text())["http"]
    yield {"lab": lab, "bundle": bundle, "odd": odd_bundle, "base": f"http://{http_addr}", "tmp": tmp,
           "daemon": daemon, "http": http_addr, "version": version, "big": big, "big_file": big_file,
           "big_leaves": big_leaves, "sparse": odd_bundle, "sparse_file": sparse_file, "sparse_leaves": sparse_leaves}
    assert daemon.stop() < STOP_DEADLINE_S and daemon.proc.returncode == 0  # the web server does not hold it up
    assert daemon.proc.stderr.read() == b""


def get(node, path: str, headers: dict | None = None, method: str = "GET"):
    request = urllib.request.Request(node["base"] + path, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_the_daemon_says_where_the_web_interface_is(node):
    node["daemon"].wait_for(f"web interface on http://{node['http']}/")  # logged just after daemon.json is written


@pytest.mark.parametrize("how", ["query", "accept"])
def test_raw_block_is_the_block_and_hashes_to_its_cid(node, how):
    path, headers = (f"/ipfs/{node['bundle']}/okh.toml?format=raw", {}) if how == "query" else \
        (f"/ipfs/{node['bundle']}/okh.toml", {"Accept": "application/vnd.ipld.raw"})
    status, headers, body = get(node, path, headers)
    assert status == 200 and headers["content-type"] == "application/vnd.ipld.raw"
    assert make_cid(RAW, body) == parse_cid(headers["etag"].strip('"').removesuffix(".raw"))
    assert body == (EXAMPLE / "okh.toml").read_bytes()  # a one-chunk file is one raw block
    status, headers, body = get(node, f"/ipfs/{node['bundle']}?format=raw")
    assert status == 200 and make_cid(DAG_PB, body) == parse_cid(node["bundle"])


def _verify_car(path) -> tuple[list[str], list[str]]:
    out = subprocess.run(["node", str(TOOLS / "car-verify.mjs"), str(path)], capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    lines = out.stdout.decode().splitlines()
    return lines[0].split()[1:], lines[1:]


def test_car_of_a_bundle_verifies_and_unpacks_byte_identical(node, ipfs_car, tmp_path):
    status, headers, body = get(node, f"/ipfs/{node['bundle']}", {"Accept": "application/vnd.ipld.car"})
    assert status == 200 and headers["content-type"].startswith("application/vnd.ipld.car; version=1")
    car = tmp_path / "bundle.car"
    car.write_bytes(body)
    roots, blocks = _verify_car(car)  # @ipld/car re-hashes every block
    assert roots == [node["bundle"]] and len(blocks) == len(set(blocks))
    out = tmp_path / "unpacked"
    subprocess.run([str(ipfs_car), "unpack", str(car), "--output", str(out)], check=True, capture_output=True)
    cmp = filecmp.dircmp(EXAMPLE, out)
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only
    assert (out / "images" / "hand-pump.png").read_bytes() == (EXAMPLE / "images" / "hand-pump.png").read_bytes()


def test_car_of_a_path_carries_the_blocks_that_prove_it(node, tmp_path):
    status, headers, body = get(node, f"/ipfs/{node['bundle']}/cad?format=car")
    assert status == 200
    car = tmp_path / "cad.car"
    car.write_bytes(body)
    roots, blocks = _verify_car(car)
    assert roots == [node["bundle"]]  # verifiable from the CID asked for…
    assert blocks[0] == node["bundle"]  # …through the root's block, then the folder at the path
    assert headers["x-ipfs-roots"].split()[0] == node["bundle"] and headers["x-ipfs-roots"].split()[1] == blocks[1]
    assert len(blocks) == 3  # root, the cad folder, its one small file


def test_files_are_served_so_they_cannot_script_this_origin(node):
    status, headers, body = get(node, f"/ipfs/{node['odd']}/page.html")
    assert status == 200 and body.startswith(b"<script>")
    assert headers["content-security-policy"] == "sandbox"
    assert headers["content-disposition"] == "attachment; filename=\"page.html\"; filename*=UTF-8''page.html"
    assert headers["x-content-type-options"] == "nosniff"
    status, headers, _ = get(node, f"/ipfs/{node['bundle']}/images/hand-pump.svg")
    assert status == 200 and headers["content-disposition"].startswith("attachment")
    status, headers, body = get(node, f"/ipfs/{node['bundle']}/okh.toml")
    assert headers["content-type"] == "text/plain; charset=utf-8" and body == (EXAMPLE / "okh.toml").read_bytes()
    assert headers["cache-control"] == "public, max-age=29030400, immutable"
    # a folder listing escapes names that carry markup
    status, headers, body = get(node, f"/ipfs/{node['odd']}/")
    assert status == 200 and b"&lt;img src=x onerror=alert(1)&gt;.txt" in body and b"<img" not in body
    assert headers["content-security-policy"] == "sandbox"


def test_every_link_of_a_folder_listing_leads_to_its_file(node):
    """Names holding %, #, ? or markup are percent-encoded in the listing's links, so following
    each link (as a browser does, after HTML-unescaping) gets that very file."""
    odd = node["tmp"] / "odd"
    _, _, body = get(node, f"/ipfs/{node['odd']}/")
    hrefs = [html.unescape(h) for h in re.findall(r'href="([^"]*)"', body.decode())]
    reached = {}
    for href in hrefs:
        status, _, content = get(node, href)
        name = urllib.parse.unquote(href.rsplit("/", 1)[1])
        if name == "sparse.bin":  # the fixture removed its last leaf: reached, but not whole
            assert status == 404 and content.startswith(b"not held on this node"), href
            content = (odd / name).read_bytes()
        else:
            assert status == 200, href
        reached[name] = content
    assert set(reached) == {p.name for p in odd.iterdir()}
    assert all(reached[name] == (odd / name).read_bytes() for name in reached)


@pytest.mark.parametrize("raw_path, status", [
    ("/ipfs/{cid}/../../../etc/passwd", 400),
    ("/ipfs/{cid}/%2e%2e/%2e%2e/etc/passwd", 400),
    ("/ipfs/{cid}/cad/../okh.toml", 400),
    ("/ipfs/{cid}/./okh.toml", 400),
    ("/ipfs/{cid}//okh.toml", 400),
    ("/ipfs/{cid}/no-such-file", 404),
    ("/ipfs/{cid}/okh.toml/deeper", 404),
    ("/ipfs/not-a-cid", 400),
    ("/ipfs/bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyka", 404),
    ("/ipfs/{cid}?format=tar", 400),
])
def test_paths_cannot_leave_their_dag_and_errors_are_plain(node, raw_path, status):
    conn = http.client.HTTPConnection(node["http"], timeout=10)
    conn.request("GET", raw_path.format(cid=node["bundle"]))  # sent as is, not normalised
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert response.status == status, body
    assert b"root:" not in body and len(body.splitlines()) == 1  # one plain line saying what was wrong


def test_changes_need_the_token_and_this_origin_and_reads_change_nothing(node):
    """/ipfs/ cannot change: other methods are 405 with Allow, token or not. Elsewhere anything but
    a read needs the token, and a page of another site is refused even with it; CORS never opens
    a change (no Access-Control-Allow-Origin on any of these answers)."""
    from fabnode.node.http.web import TOKEN_FILE

    before = hashlib.sha256((node["lab"].home / "fabnode.db").read_bytes()).hexdigest()
    token = (node["lab"].home / TOKEN_FILE).read_text().strip()
    assert oct((node["lab"].home / TOKEN_FILE).stat().st_mode & 0o777) == "0o600"
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for auth in ({}, {"Authorization": f"Bearer {token}"}):
            status, headers, body = get(node, f"/ipfs/{node['bundle']}", auth, method=method)
            assert status == 405 and headers["allow"] == "GET, HEAD, OPTIONS" and len(body.splitlines()) == 1
    page = f"/design/{node['version']}"
    evil = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
    for method in ("POST", "PUT", "DELETE"):
        status, headers, body = get(node, page, method=method)
        assert status == 401 and b"token" in body and "access-control-allow-origin" not in headers
        status, headers, body = get(node, page, {**evil, "Authorization": f"Bearer {token}"}, method=method)
        assert status == 403 and b"another site" in body and "access-control-allow-origin" not in headers
        status, headers, _ = get(node, page, {"Origin": "http://localhost:1", "Authorization": f"Bearer {token}"},
                                 method=method)  # another origin on this machine is another site too
        assert status == 403 and "access-control-allow-origin" not in headers
        status, headers, _ = get(node, page, {"Origin": node["base"], "Authorization": f"Bearer {token}"},
                                 method=method)
        assert status == 405 and "access-control-allow-origin" not in headers  # this origin, the token: no such change yet
    status, headers, _ = get(node, page, {**evil, "Access-Control-Request-Method": "POST"}, method="OPTIONS")
    assert status in (401, 403) and "access-control-allow-origin" not in headers  # no preflight opens a page
    assert hashlib.sha256((node["lab"].home / "fabnode.db").read_bytes()).hexdigest() == before
    assert cid_codec(parse_cid(node["bundle"])) == DAG_PB


# ---------------------------------------------------------------- conformance (issue 16)
# Each case is a rule of the IPFS path or trustless gateway specification
# (specs.ipfs.tech/http-gateways), asserted on the raw HTTP answer of the real daemon.

IMMUTABLE = "public, max-age=29030400, immutable"


def raw_get(node, path: str) -> tuple[int, dict]:
    """(status, lower-case headers) of a GET whose redirects are not followed."""
    conn = http.client.HTTPConnection(node["http"], timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def car_blocks(node, path: str, headers: dict | None = None, tmp_path=None) -> tuple[dict, list[str], list[str]]:
    """(headers, roots, block CIDs) of a CAR answer, read and re-hashed by @ipld/car."""
    status, answer, body = get(node, path, headers)
    assert status == 200, body
    car = node["tmp"] / f"answer-{hashlib.sha256(path.encode() + repr(headers).encode()).hexdigest()[:12]}.car"
    car.write_bytes(body)
    roots, blocks = _verify_car(car)
    return answer, roots, blocks


def test_every_answer_type_is_304_when_if_none_match_names_its_etag(node):
    """Raw, CAR, file, folder listing and record: the ETag sent back (strong, weak, in a list, or
    *) answers 304 with no body and the same ETag; another tag answers 200."""
    b = node["bundle"]
    for path, headers in [(f"/ipfs/{b}/okh.toml", {}), (f"/ipfs/{b}/", {}), (f"/ipfs/{b}?format=raw", {}),
                          (f"/ipfs/{b}/cad", {"Accept": "application/vnd.ipld.car"}),
                          (f"/ipfs/{node['big']}/big.bin", {}), (f"/ipfs/{node['version']}?format=raw", {})]:
        status, first, _ = get(node, path, headers)
        etag = first["etag"]
        assert status == 200 and etag.startswith('"') and etag.endswith('"')
        for sent in (etag, f"W/{etag}", f'"not-it", {etag}', "*"):
            status, again, body = get(node, path, {**headers, "If-None-Match": sent})
            assert (status, body, again["etag"]) == (304, b"", etag), (path, sent)
            assert again["cache-control"] == IMMUTABLE and again["vary"] == "Accept"
        status, _, body = get(node, path, {**headers, "If-None-Match": '"not-it", W/"nor-this"'})
        assert status == 200 and body


def test_etags_name_the_cid_and_the_format_and_answers_vary_on_accept(node):
    b = node["bundle"]
    _, file_headers, _ = get(node, f"/ipfs/{b}/okh.toml")
    okh = file_headers["x-ipfs-roots"].split()[-1]
    assert file_headers["etag"] == f'"{okh}"' and file_headers["accept-ranges"] == "bytes"
    _, raw_headers, _ = get(node, f"/ipfs/{b}/okh.toml", {"Accept": "application/vnd.ipld.raw"})
    assert raw_headers["etag"] == f'"{okh}.raw"'
    _, dir_headers, _ = get(node, f"/ipfs/{b}/")
    assert dir_headers["etag"].startswith('"DirIndex-') and dir_headers["etag"].endswith(f'_CID-{b}"')
    cars = {get(node, f"/ipfs/{b}/cad?format=car{query}")[1]["etag"]
            for query in ("", "&dag-scope=block", "&dag-scope=entity", "&car-dups=y")}
    cars.add(get(node, f"/ipfs/{b}?format=car")[1]["etag"])
    cars.add(get(node, f"/ipfs/{node['big']}/big.bin?format=car&entity-bytes=0:10")[1]["etag"])
    cars.add(get(node, f"/ipfs/{node['big']}/big.bin?format=car&entity-bytes=0:11")[1]["etag"])
    assert len(cars) == 7 and all(tag.startswith(f'"{b}.car.') or ".car." in tag for tag in cars)
    for headers in (file_headers, raw_headers, dir_headers):
        assert headers["vary"] == "Accept" and headers["cache-control"] == IMMUTABLE


def test_cors_lets_any_page_read_ipfs_and_answers_the_preflight(node):
    path = f"/ipfs/{node['bundle']}/okh.toml"
    status, headers, _ = get(node, path, {"Origin": "http://evil.example"})
    assert status == 200 and headers["access-control-allow-origin"] == "*"
    assert set(headers["access-control-allow-methods"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
    exposed = set(headers["access-control-expose-headers"].split(", "))
    assert {"Content-Range", "Content-Length", "X-Ipfs-Path", "X-Ipfs-Roots", "ETag"} <= exposed
    for preflight in ({}, {"Origin": "http://evil.example", "Access-Control-Request-Method": "GET",
                           "Access-Control-Request-Headers": "range"}):
        status, headers, body = get(node, path, preflight, method="OPTIONS")
        assert status == 204 and body == b"" and headers["access-control-allow-origin"] == "*"
        assert "Range" in headers["access-control-allow-headers"] and "GET" in headers["access-control-allow-methods"]
    for page in ("/", "/designs", f"/design/{node['version']}"):  # the lab's own pages stay this origin's
        status, headers, _ = get(node, page, {"Origin": "http://evil.example"})
        assert status == 200 and "access-control-allow-origin" not in headers


@pytest.mark.parametrize("scope", ["block", "entity", "all"])
def test_dag_scope_on_a_folder(node, scope):
    """block and entity of a folder: the path's blocks and the folder's own block, not its entries;
    all: everything under it."""
    headers, roots, blocks = car_blocks(node, f"/ipfs/{node['bundle']}/cad?format=car&dag-scope={scope}")
    folder = headers["x-ipfs-roots"].split()[-1]
    assert roots == [node["bundle"]] and blocks[:2] == [node["bundle"], folder]
    assert len(blocks) == (3 if scope == "all" else 2)
    assert headers["content-type"] == "application/vnd.ipld.car; version=1; order=dfs; dups=n"


def test_dag_scope_on_a_file(node):
    """block: the file's root only; entity and all: the root and every leaf, in order."""
    path = f"/ipfs/{node['big']}/big.bin?format=car"
    _, _, blocks = car_blocks(node, path + "&dag-scope=block")
    assert blocks == [node["big"], node["big_file"]]
    for scope in ("entity", "all"):
        _, _, blocks = car_blocks(node, path + f"&dag-scope={scope}")
        assert blocks == [node["big"], node["big_file"], *node["big_leaves"]]


@pytest.mark.parametrize("entity_bytes, leaves", [
    ("0:0", [0]), ("0:*", [0, 1, 2, 3]), (f"{CHUNK_SIZE}:*", [1, 2, 3]), (f"{CHUNK_SIZE - 1}:{CHUNK_SIZE}", [0, 1]),
    ("-10:*", [3]), ("-99999999:*", [0, 1, 2, 3]), (f"-99999999:-{CHUNK_SIZE + CHUNK_SIZE // 2 + 1}", [0, 1]),
    (f"{2 * CHUNK_SIZE}:-{CHUNK_SIZE}", [2]),
    ("1000:-99999999", None),  # comes to no bytes: as dag-scope=block
])
def test_entity_bytes_sends_only_the_leaves_covering_the_range(node, entity_bytes, leaves):
    _, _, blocks = car_blocks(node, f"/ipfs/{node['big']}/big.bin?format=car&dag-scope=entity"
                                    f"&entity-bytes={entity_bytes}")
    expected = [] if leaves is None else [node["big_leaves"][i] for i in leaves]
    assert blocks == [node["big"], node["big_file"], *expected]


def test_entity_bytes_refusals_and_a_folder_ignores_them(node):
    path = f"/ipfs/{node['big']}/big.bin?format=car&entity-bytes="
    for bad, why in [(f"{BIG_SIZE}:*", b"past the end"), ("10:5", b"ends before"), ("a:b", b"FROM:TO"),
                     ("1:2:3", b"FROM:TO")]:
        status, _, body = get(node, path + bad)
        assert status == 400 and why in body and len(body.splitlines()) == 1
    _, _, blocks = car_blocks(node, f"/ipfs/{node['bundle']}/cad?format=car&entity-bytes=0:10")
    assert len(blocks) == 2  # the folder's own block: entity-bytes means nothing for a folder


def test_entity_bytes_and_range_never_read_a_leaf_outside_the_range(node):
    """The sparse file lacks its last leaf: the whole file is 404, but the first leaves serve."""
    file_path = f"/ipfs/{node['sparse']}/sparse.bin"
    assert get(node, file_path)[0] == 404
    _, _, blocks = car_blocks(node, f"{file_path}?format=car&entity-bytes=0:{3 * CHUNK_SIZE - 1}")
    assert blocks == [node["sparse"], node["sparse_file"], *node["sparse_leaves"][:3]]
    status, headers, body = get(node, file_path, {"Range": f"bytes={CHUNK_SIZE - 5}-{CHUNK_SIZE + 4}"})
    expected = (node["tmp"] / "odd" / "sparse.bin").read_bytes()[CHUNK_SIZE - 5:CHUNK_SIZE + 5]
    assert status == 206 and body == expected and headers["content-range"] == f"bytes {CHUNK_SIZE - 5}-{CHUNK_SIZE + 4}/{BIG_SIZE}"
    assert get(node, file_path, {"Range": "bytes=-10"})[0] == 404  # that one needs the missing leaf


@pytest.mark.parametrize("header, span", [
    ("bytes=0-99", (0, 99)), (f"bytes={CHUNK_SIZE - 3}-{CHUNK_SIZE + 2}", (CHUNK_SIZE - 3, CHUNK_SIZE + 2)),
    (f"bytes={BIG_SIZE - 7}-", (BIG_SIZE - 7, BIG_SIZE - 1)), ("bytes=-5", (BIG_SIZE - 5, BIG_SIZE - 1)),
    (f"bytes=10-{BIG_SIZE * 2}", (10, BIG_SIZE - 1)),  # clamped to the end
    (f"bytes={CHUNK_SIZE}-{2 * CHUNK_SIZE + 100}", (CHUNK_SIZE, 2 * CHUNK_SIZE + 100)),  # streamed: > 256 KiB
])
def test_range_answers_206_with_exactly_those_bytes(node, header, span):
    status, headers, body = get(node, f"/ipfs/{node['big']}/big.bin", {"Range": header})
    first, last = span
    assert status == 206 and headers["content-range"] == f"bytes {first}-{last}/{BIG_SIZE}"
    with open(node["tmp"] / "big" / "big.bin", "rb") as f:
        f.seek(first)
        assert body == f.read(last - first + 1) and int(headers["content-length"]) == len(body)


def test_range_outside_the_file_is_416_and_several_ranges_answer_the_whole_file(node):
    path = f"/ipfs/{node['big']}/big.bin"
    for header in (f"bytes={BIG_SIZE}-", "bytes=-0", f"bytes={BIG_SIZE + 10}-{BIG_SIZE + 20}"):
        status, headers, body = get(node, path, {"Range": header})
        assert status == 416 and headers["content-range"] == f"bytes */{BIG_SIZE}" and len(body.splitlines()) == 1
    status, headers, body = get(node, f"/ipfs/{node['bundle']}/okh.toml", {"Range": "bytes=0-1,5-6"})
    assert status == 200 and body == (EXAMPLE / "okh.toml").read_bytes() and "content-range" not in headers


def test_car_parameters_what_is_written_and_what_is_refused(node):
    big = node["big"]
    a_txt = get(node, f"/ipfs/{big}/a.txt?format=raw")[1]["x-ipfs-roots"].split()[-1]
    headers, _, blocks = car_blocks(node, f"/ipfs/{big}?format=car")
    assert headers["content-type"].endswith("dups=n") and blocks.count(a_txt) == 1
    headers, _, blocks = car_blocks(node, f"/ipfs/{big}?format=car&car-dups=y")
    assert headers["content-type"] == "application/vnd.ipld.car; version=1; order=dfs; dups=y"
    assert blocks.count(a_txt) == 2  # a.txt and b.txt are the same block: sent each time it is met
    headers, _, blocks = car_blocks(node, f"/ipfs/{big}", {
        "Accept": "application/vnd.ipld.car;order=foo, application/vnd.ipld.car;version=1;order=dfs;dups=y;q=0.5"})
    assert headers["content-type"].endswith("dups=y") and blocks.count(a_txt) == 2
    headers, _, _ = car_blocks(node, f"/ipfs/{big}?car-dups=n", {"Accept": "application/vnd.ipld.car; order=unk; dups=y"})
    assert headers["content-type"] == "application/vnd.ipld.car; version=1; order=dfs; dups=n"  # the query wins
    for path, accept in [(f"/ipfs/{big}?format=car&car-version=2", {}), (f"/ipfs/{big}?format=car&car-order=foo", {}),
                         (f"/ipfs/{big}", {"Accept": "application/vnd.ipld.car; version=2"}),
                         (f"/ipfs/{big}?format=car&dag-scope=most", {})]:
        status, _, body = get(node, path, accept)
        assert status == 400 and len(body.splitlines()) == 1, path


def test_signed_records_are_served_as_the_dag_cbor_blocks_they_are(node):
    version = node["version"]
    for path, headers, media in [(f"/ipfs/{version}?format=raw", {}, "application/vnd.ipld.raw"),
                                 (f"/ipfs/{version}", {"Accept": "application/vnd.ipld.raw"}, "application/vnd.ipld.raw"),
                                 (f"/ipfs/{version}?format=dag-cbor", {}, "application/vnd.ipld.dag-cbor"),
                                 (f"/ipfs/{version}", {"Accept": "application/vnd.ipld.dag-cbor"},
                                  "application/vnd.ipld.dag-cbor")]:
        status, answer, body = get(node, path, headers)
        assert status == 200 and answer["content-type"] == media and make_cid(DAG_CBOR, body) == parse_cid(version)
    _, roots, blocks = car_blocks(node, f"/ipfs/{version}?format=car")
    assert roots == blocks == [version]
    status, headers = raw_get(node, f"/ipfs/{version}")
    assert status == 302 and headers["location"] == f"/ipfs/{node['bundle']}"  # the design's files, as before
    status, _, body = get(node, f"/ipfs/{node['bundle']}?format=dag-cbor")
    assert status == 406 and b"not a DAG-CBOR block" in body  # nothing is converted


def test_identity_cids_answer_from_their_own_bytes(node):
    for path in ("/ipfs/bafkqaaa", "/ipfs/bafkqaaa?format=raw"):  # the trustless gateway probe
        status, _, body = get(node, path)
        assert status == 200 and body == b""
    assert get(node, "/ipfs/bafkqaaa", method="HEAD")[0] == 200
    status, headers, body = get(node, "/ipfs/bafkqaaa?format=car")
    assert status == 200 and headers["content-type"].startswith("application/vnd.ipld.car; version=1")
    car = node["tmp"] / "probe.car"
    car.write_bytes(body)
    assert _verify_car(car) == (["bafkqaaa"], [])  # rooted at bafkqaaa, and no identity block sent
    assert get(node, "/ipfs/bafkqabtimvwgy3yk")[2] == b"hello\n"
    from multiformats import CID, multihash

    too_long = str(CID("base32", 1, "raw", multihash.wrap(b"x" * 129, "identity")))
    status, _, body = get(node, f"/ipfs/{too_long}")
    assert status == 400 and b"at most 128" in body and len(body.splitlines()) == 1


def test_a_folder_without_its_slash_moves_there_keeping_the_query(node):
    b = node["bundle"]
    for path, location in [(f"/ipfs/{b}", f"/ipfs/{b}/"), (f"/ipfs/{b}/cad?lang=fr", f"/ipfs/{b}/cad/?lang=fr")]:
        status, headers = raw_get(node, path)
        assert status == 301 and headers["location"] == location and headers["cache-control"] == IMMUTABLE
    assert get(node, f"/ipfs/{b}/okh.toml")[0] == 200  # a file is not moved
    assert get(node, f"/ipfs/{b}/cad?format=car")[0] == 200  # nor a CAR of a folder


def test_only_if_cached_is_412_for_a_block_not_held_and_normal_for_one_held(node):
    absent = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyka"
    for method in ("GET", "HEAD"):
        status, _, body = get(node, f"/ipfs/{absent}", {"Cache-Control": "only-if-cached"}, method=method)
        assert status == 412 and body == b""
    status, _, body = get(node, f"/ipfs/{node['bundle']}/okh.toml", {"Cache-Control": "only-if-cached"})
    assert status == 200 and body == (EXAMPLE / "okh.toml").read_bytes()
    assert get(node, f"/ipfs/{node['version']}?format=raw", {"Cache-Control": "only-if-cached"})[0] == 200


def test_helia_verified_fetch_reads_through_the_gateway(node, tmp_path):
    """@helia/verified-fetch 8.0.4 with this gateway as its only source (no libp2p, no routing)
    verifies every block and gets the same bytes: a file, a folder, a raw block and a CAR."""
    b = node["bundle"]
    out = subprocess.run([str(TOOLS / "node_modules" / ".bin" / "node"), str(TOOLS / "verified-fetch.mjs"), node["base"],
                          str(tmp_path), f"ipfs://{b}/images/hand-pump.png", f"ipfs://{node['big']}/big.bin",
                          f"ipfs://{b}/cad", f"ipfs://{b}/okh.toml|application/vnd.ipld.raw",
                          f"ipfs://{b}|application/vnd.ipld.car"], capture_output=True, timeout=120)
    assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()
    answers = [json.loads(line) for line in out.stdout.decode().splitlines()]
    assert [a["status"] for a in answers] == [200] * 5
    assert (tmp_path / "0").read_bytes() == (EXAMPLE / "images" / "hand-pump.png").read_bytes()
    assert (tmp_path / "1").read_bytes() == (node["tmp"] / "big" / "big.bin").read_bytes()
    cad = get(node, f"/ipfs/{b}/cad?format=raw")[1]["x-ipfs-roots"].split()[-1]
    assert make_cid(DAG_PB, (tmp_path / "2").read_bytes()) == parse_cid(cad)  # a folder is its dag-pb node
    assert (tmp_path / "3").read_bytes() == (EXAMPLE / "okh.toml").read_bytes()
    roots, blocks = _verify_car(tmp_path / "4")
    assert roots == [b] and len(set(blocks)) == len(_verify_car_of(node, f"/ipfs/{b}?format=car"))


def _verify_car_of(node, path: str) -> list[str]:
    return car_blocks(node, path)[2]


async def test_car_dups_y_is_refused_for_a_dag_that_repeats_its_blocks_a_million_times(tmp_path):
    """Three blocks, a folder linking 1,000 times to a folder linking 1,000 times to one leaf:
    dups=y would be a million sections, so it is 400 before any byte; dups=n sends the three.
    On the real ASGI app over a real SQLite store (the daemon's store cannot hold such a DAG
    without a crafted import)."""
    import httpx

    from fabnode.node.http.web import make_app
    from fabnode.protocol.dagpb import PBLink, encode_node
    from fabnode.protocol.unixfs import DIRECTORY_DATA
    from fabnode.storage import BlockStore, open_db

    store = BlockStore(open_db(tmp_path / "fabnode.db"))
    leaf = b"x"
    inner = encode_node([PBLink(make_cid(RAW, leaf), f"{i:04}", 1) for i in range(1000)], DIRECTORY_DATA)
    top = encode_node([PBLink(make_cid(DAG_PB, inner), f"{i:04}", len(inner)) for i in range(1000)], DIRECTORY_DATA)
    for codec, data in ((RAW, leaf), (DAG_PB, inner), (DAG_PB, top)):
        store.put(make_cid(codec, data), data)
    app = make_app(store, token="t" * 32, log=print)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        path = f"/ipfs/{cid_str(make_cid(DAG_PB, top))}?format=car"
        refused = await client.get(path + "&car-dups=y")
        assert refused.status_code == 400 and b"repeats its 3 blocks 1001001 times" in refused.content
        assert len(refused.content.splitlines()) == 1
        sent = await client.get(path)
        assert sent.status_code == 200 and sent.headers["content-type"].endswith("dups=n")
        assert len(sent.content) < len(top) + len(inner) + 300  # three sections and a header
