"""What a lab installs: the built wheel, in a fresh virtual environment, away from the checkout.

`make test` builds the wheel and installs it into build/wheel-venv (FABNODE_WHEEL_VENV), then this
runs the installed `fabnode` as an operator would — init, add, publish, run with the web
interface — from a folder outside the checkout, so nothing of the source tree can stand in for
what the wheel forgot (a wheel without node/http/templates once answered 500 on every page).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT

EXAMPLE = ROOT / "examples" / "hand-pump"
VENV = os.environ.get("FABNODE_WHEEL_VENV")

pytestmark = pytest.mark.skipif(not VENV, reason="runs under 'make test', which builds the wheel (FABNODE_WHEEL_VENV)")
BUILT = os.environ.get("FABNODE_WHEEL_BUILT")
"""`make test` builds the wheel while the other tests run; it touches this file when the venv is
ready (or writes FAILED and the log into it)."""


@pytest.fixture(autouse=True, scope="module")
def wheel_ready():
    """Wait (bounded) for the wheel that `make test` builds in the background."""
    if not BUILT:
        return
    marker = Path(BUILT)
    deadline = time.monotonic() + 600
    while not marker.exists():
        assert time.monotonic() < deadline, "the wheel was not built within 10 minutes (see build/wheel.log)"
        time.sleep(0.5)
    text = marker.read_text()
    assert not text.startswith("FAILED"), text


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FABNODE_HOME", "VIRTUAL_ENV")}
    env["FABNODE_HOME"] = str(home)
    return env


def _run(venv: Path, home: Path, cwd: Path, *args: str) -> str:
    result = subprocess.run([str(venv / "bin" / "fabnode"), *args], env=_env(home), cwd=cwd,
                            capture_output=True, timeout=120)
    assert result.returncode == 0, (args, result.stderr.decode())
    return result.stdout.decode()


def test_the_wheel_installs_one_package_named_fabnode(tmp_path):
    venv = Path(VENV).resolve()
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert (site / "fabnode" / "node" / "http" / "templates" / "design.html").is_file()
    assert (site / "fabnode" / "node" / "http" / "static" / "world-land-110m.path").is_file()  # the labs page's map
    for lang in ("es", "fr", "pt", "sw", "hi", "ar"):  # catalogs compiled when the wheel was built (setup.py)
        assert (site / "fabnode" / "node" / "http" / "locale" / lang / "LC_MESSAGES" / "fabnode.mo").is_file(), lang
    assert not (site / "fabnode" / "setup.py").exists()
    for name in ("node", "protocol", "storage", "cli.py", "cli"):
        assert not (site / name).exists(), f"{name} installed at the top of site-packages"
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import fabnode, sys; print(fabnode.__file__)"],
                           cwd=tmp_path, env=_env(tmp_path / "h"), capture_output=True, timeout=60, check=True)
    assert Path(where.stdout.decode().strip()).resolve().is_relative_to(site)
    shown = subprocess.run([str(venv / "bin" / "python"), "-m", "fabnode", "--version"], cwd=tmp_path,
                           env=_env(tmp_path / "h"), capture_output=True, timeout=60)
    assert shown.returncode == 0 and shown.stdout.decode().startswith("fabnode ")


def test_the_installed_node_serves_every_page_and_a_file(tmp_path):
    venv = Path(VENV).resolve()
    home, cwd = tmp_path / "home", tmp_path / "elsewhere"
    cwd.mkdir()
    _run(venv, home, cwd, "init", "--name", "Wheel Lab")
    bundle = _run(venv, home, cwd, "add", str(EXAMPLE)).strip()
    published = json.loads(_run(venv, home, cwd, "publish", str(EXAMPLE), "-m", "from the wheel", "--json"))
    assert published["bundle"] == bundle
    proc = subprocess.Popen([str(venv / "bin" / "fabnode"), "run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns",
                             "--http", "127.0.0.1:0"], env=_env(home), cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, deadline = b"", time.monotonic() + 60
        while b"web interface on http://" not in out:
            assert time.monotonic() < deadline and proc.poll() is None, out.decode()
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if ready:
                out += os.read(proc.stdout.fileno(), 65536)
        base = out.decode().split("web interface on ", 1)[1].split()[0].rstrip("/")
        pages = ["/", "/designs", "/designs?q=pump", f"/design/{published['design']}",
                 f"/version/{published['version']}", f"/ipfs/{bundle}/okh.toml", f"/ipfs/{bundle}/", "/labs"]
        for page in pages:
            with urllib.request.urlopen(base + page, timeout=10) as response:
                body = response.read()
                assert response.status == 200, page
            if page.endswith("okh.toml"):
                assert body == (EXAMPLE / "okh.toml").read_bytes()
            elif page.startswith("/design/"):
                assert b"lineage" in body.lower()
            elif page == "/labs":
                assert b'<path class="land" d="M' in body
        # the pages in the lab's language, from the compiled catalogs (issue 19)
        for lang, heading in (("es", "Últimas versiones"), ("ar", "أحدث الإصدارات")):
            request = urllib.request.Request(base + "/", headers={"Accept-Language": lang})
            with urllib.request.urlopen(request, timeout=10) as response:
                body = response.read().decode()
            assert f'<html lang="{lang}"' in body and heading in body, body[:300]
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and err == b"", err.decode()
    assert b"internal error" not in out + rest
