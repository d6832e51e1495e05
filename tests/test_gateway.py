"""The daemon's trustless-gateway subset over HTTP on 127.0.0.1 (docs/protocol.md §11, issue 7)."""

from __future__ import annotations

import filecmp
import hashlib
import http.client
import json
import subprocess
import urllib.error
import urllib.request

import pytest

from fabnode.protocol.cid import DAG_PB, RAW, cid_codec, make_cid, parse_cid

from conftest import ROOT, TOOLS, Cli
from daemons import STOP_DEADLINE_S, Daemon

EXAMPLE = ROOT / "examples" / "hand-pump"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """One lab holding the example design and a bundle with hostile file names and an HTML page."""
    tmp = tmp_path_factory.mktemp("gateway")
    lab = Cli(tmp / "lab")
    lab.run("init", "--name", "Gateway Lab")
    bundle = lab.out("add", str(EXAMPLE))
    odd = tmp / "odd"
    odd.mkdir()
    (odd / "page.html").write_text("<script>document.title='pwned'</script><p>hello</p>")
    (odd / "<img src=x onerror=alert(1)>.txt").write_text("name with markup")
    odd_bundle = lab.out("add", str(odd))
    daemon = Daemon(lab)
    http_addr = json.loads((lab.home / "daemon.json").read_text())["http"]
    yield {"lab": lab, "bundle": bundle, "odd": odd_bundle, "base": f"http://{http_addr}", "tmp": tmp,
           "daemon": daemon, "http": http_addr}
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


def test_changes_need_the_token_and_reads_change_nothing(node):
    from fabnode.node.http.web import TOKEN_FILE

    before = hashlib.sha256((node["lab"].home / "fabnode.db").read_bytes()).hexdigest()
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, _, body = get(node, f"/ipfs/{node['bundle']}", method=method)
        assert status == 401 and b"token" in body
    token = (node["lab"].home / TOKEN_FILE).read_text().strip()
    assert oct((node["lab"].home / TOKEN_FILE).stat().st_mode & 0o777) == "0o600"
    status, _, _ = get(node, f"/ipfs/{node['bundle']}", {"Authorization": f"Bearer {token}"}, method="POST")
    assert status == 405  # with the token: still nothing there that changes the node
    assert hashlib.sha256((node["lab"].home / "fabnode.db").read_bytes()).hexdigest() == before
    assert cid_codec(parse_cid(node["bundle"])) == DAG_PB
