"""The documentation tells the truth: every command is in the README and has help, every
configuration key is documented, and the README's first command works."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from fabnode import cli
from fabnode.node.home import CONFIG_KEYS

from conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_command_is_in_readme_and_has_help(command):
    assert f"fabnode {command}" in README
    doc = cli.COMMANDS[command].fn.__doc__
    assert doc and len(doc.strip()) > 20
    shown = subprocess.run([sys.executable, "-c", "from fabnode import cli; import sys; sys.exit(cli.main(sys.argv[1:]))", command, "--help"],
                           capture_output=True, cwd=ROOT)
    assert shown.returncode == 0 and doc.strip().splitlines()[0] in shown.stdout.decode()


def _flatten(table: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def test_every_configuration_key_is_documented(tmp_path):
    """config.example.toml lists exactly the keys the code reads (CONFIG_KEYS, which
    Home.setting insists on), each with a comment, and each example value has the right type."""
    import re
    import shutil

    from fabnode.node.home import Home

    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    example = _flatten(tomllib.loads(text))
    assert set(example) == set(CONFIG_KEYS)
    lines = text.splitlines()
    for key in CONFIG_KEYS:
        name = key.rsplit(".", 1)[-1]
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{name} ="))
        assert lines[at - 1].startswith("#"), f"{key} has no comment above it"
    shutil.copy(ROOT / "config.example.toml", tmp_path / "config.toml")
    home = Home(tmp_path)
    for key in CONFIG_KEYS:
        assert home.setting(key, None) == example[key]  # the type check accepts the example
    read = set()
    for source in [ROOT / "cli.py", *(ROOT / "node").glob("*.py")]:
        read |= set(re.findall(r'setting\("([a-z_.]+)"', source.read_text(encoding="utf-8")))
    assert read == set(CONFIG_KEYS), "a key is read but not registered, or registered but never read"


def test_a_mistyped_configuration_value_is_one_clear_error(tmp_path):
    from fabnode.node.home import Home
    from fabnode.protocol.errors import FabnodeError

    (tmp_path / "config.toml").write_text('bootstrap = "/ip4/1.2.3.4/tcp/1"\n[limits]\nmax_connections = -1\n')
    home = Home(tmp_path)
    with pytest.raises(FabnodeError, match="bootstrap must be a list of str"):
        home.setting("bootstrap", [])
    with pytest.raises(FabnodeError, match="max_connections must not be negative"):
        home.setting("limits.max_connections", 50)


def test_readme_shows_the_two_make_targets():
    assert "make run" in README and "make test" in README


def _make_run(demo, timeout: float = 600) -> str:
    """`make run` until the node says it listens; then stop it as Ctrl-C would. Its output."""
    import os
    import select
    import signal
    import time

    proc = subprocess.Popen(["make", "-s", "run", f"DEMO_HOME={demo}", "LISTEN=/ip4/127.0.0.1/tcp/0", "RUN_FLAGS=--no-mdns --http 127.0.0.1:0"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while b"listening on" not in out:
            left = deadline - time.monotonic()
            assert left > 0, out.decode()
            ready, _, _ = select.select([proc.stdout], [], [], left)
            chunk = os.read(proc.stdout.fileno(), 65536) if ready else b""
            assert chunk or not ready, f"make run ended early: {out.decode()}"
            out += chunk
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
    return out.decode()


def test_make_run_stores_the_example_and_starts_the_node(tmp_path, ipfs_car):
    from conftest import ipfs_car_cid

    demo = tmp_path / "demo-home"
    out = _make_run(demo)
    cid = ipfs_car_cid(ipfs_car, ROOT / "examples" / "hand-pump", tmp_path)
    assert f"{cid}" in out and "okh.toml" in out and "the store is sound" in out
    assert "Direct-action PVC hand pump" in out  # published: `fabnode designs` lists it
    assert (demo / "author.key").exists()
    assert _make_run(demo).count("1 version(s)") == 1  # a second make run publishes nothing new
