"""Issue 11, a real install: every mistake an operator can make starting a node is one line.

Each test runs the real ``fabnode`` command (and real daemons, on 127.0.0.1 only) and checks the
exact message, the exit status, and that the home is as it was.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import FABNODE, Cli
from daemons import STOP_DEADLINE_S, daemon_state, make_labs, start

QUIET = ("--no-mdns", "--http", "127.0.0.1:0")
LOOPBACK = "/ip4/127.0.0.1/tcp/0"


def refused(cli: Cli, *args: str, code: int = 1) -> str:
    """Run a command that must stop at once with one ``error: …`` line; return that line."""
    result = cli.run(*args, check=False, timeout=60)
    err = result.stderr.decode()
    assert result.returncode == code, (result.returncode, err, result.stdout.decode())
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def files(home: Path, *, db: bool = True) -> dict[str, str]:
    """Every file of a home with a hash of its bytes (daemon.lock aside: it is the lock itself,
    created once by the first `run` and never removed; ``db=False``: the database aside too, for
    a home whose node runs and may write to it)."""
    return {str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(home.rglob("*"))
            if p.is_file() and p.name != "daemon.lock" and (db or not p.name.startswith("fabnode.db"))}


def listening_socket(reuseport: bool = False) -> socket.socket:
    """A port on 127.0.0.1 held by "another program" (this test)."""
    sock = socket.socket()
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def configure(cli: Cli, text: str) -> Path:
    config = cli.home / "config.toml"
    config.write_text(config.read_text() + text)
    return config


# ------------------------------------------------------------------ one node per home


def test_a_second_node_on_a_home_is_refused_and_the_first_keeps_running(cli, daemons):
    first = start(daemons, cli)
    state = (cli.home / "daemon.json").read_bytes()
    before = files(cli.home, db=False)

    line = refused(cli, "run", "--listen", LOOPBACK, *QUIET)
    assert line == (f"error: a node is already running on {cli.home} (pid {first.proc.pid}, listening on "
                    f"{first.addr}); stop it first, or use another --home")
    # even on the very port the first listens on: the home's lock is what is reported
    same_port = refused(cli, "run", "--listen", f"/ip4/127.0.0.1/tcp/{first.port}", *QUIET)
    assert same_port == line

    assert (cli.home / "daemon.json").read_bytes() == state  # neither overwritten nor deleted
    assert files(cli.home, db=False) == before
    status = cli.json("status")
    assert status["running"] and status["pid"] == first.proc.pid and status["addrs"] == [first.addr]
    assert f"daemon    running (pid {first.proc.pid}" in cli.out("status")
    assert first.proc.poll() is None


def test_a_node_still_starting_is_named_by_its_pid(cli):
    """The lock holder writes its pid at once; before its daemon.json exists it is "starting"
    (here the test process holds the lock, as a node would in its first second)."""
    fd = os.open(cli.home / "daemon.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{os.getpid()}\n".encode())
        before = files(cli.home)
        line = refused(cli, "run", "--listen", LOOPBACK, *QUIET)
        assert line == (f"error: a node is already running on {cli.home} (pid {os.getpid()}, still starting); "
                        f"stop it first, or use another --home")
        assert files(cli.home) == before and not (cli.home / "daemon.json").exists()
    finally:
        os.close(fd)


def test_a_killed_node_never_blocks_the_next_start(cli, daemons):
    first = start(daemons, cli)
    first.kill()  # SIGKILL: no clean-up at all; its daemon.json stays behind
    assert daemon_state(cli.home)["pid"] == first.proc.pid
    assert not cli.json("status")["running"]

    second = start(daemons, cli)
    status = cli.json("status")
    assert status["running"] and status["pid"] == second.proc.pid and status["addrs"] == [second.addr]
    assert second.stop() < STOP_DEADLINE_S and second.proc.returncode == 0
    assert not (cli.home / "daemon.json").exists()


# ------------------------------------------------------------------ listening


def test_a_listen_address_in_use_is_refused_and_the_other_node_keeps_running(tmp_path, daemons):
    a, b = make_labs(tmp_path, 2)
    first = start(daemons, a)
    before = files(b.home)
    line = refused(b, "run", "--listen", f"/ip4/127.0.0.1/tcp/{first.port}", *QUIET)
    assert line == (f"error: cannot listen on /ip4/127.0.0.1/tcp/{first.port}: address already in use "
                    f"(another program listens there; choose another port with --listen)")
    assert files(b.home) == before
    assert a.json("status")["running"] and first.proc.poll() is None


def test_the_node_does_not_share_its_port(cli, daemons):
    """py-libp2p 0.8.1 sets SO_REUSEPORT on its listeners, which would let any program of the
    same user (another node, say) listen on the node's port too; fabnode's listeners refuse."""
    node = start(daemons, cli)
    with socket.socket() as intruder:
        intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        with pytest.raises(OSError) as taken:
            intruder.bind(("127.0.0.1", node.port))
    assert taken.value.errno == errno.EADDRINUSE


def test_a_port_held_with_so_reuseport_is_still_refused(cli):
    with listening_socket(reuseport=True) as other:
        port = other.getsockname()[1]
        line = refused(cli, "run", "--listen", f"/ip4/127.0.0.1/tcp/{port}", *QUIET)
    assert line == (f"error: cannot listen on /ip4/127.0.0.1/tcp/{port}: address already in use "
                    f"(another program listens there; choose another port with --listen)")


async def test_an_address_taken_after_the_check_is_refused_by_the_host_itself():
    """The check before the start can lose a race with another program; the host then finds the
    address missing from its listeners and says so (the library alone would run on without it)."""
    from libp2p.crypto.ed25519 import create_new_key_pair

    from fabnode.protocol.errors import FabnodeError, first_in_group
    from fabnode.node.runtime.host import quiet_library_logs, running_host

    quiet_library_logs()
    with listening_socket(reuseport=True) as other:
        port = other.getsockname()[1]
        with pytest.raises(BaseException) as caught:
            async with running_host(create_new_key_pair(), [f"/ip4/127.0.0.1/tcp/{port}"]):
                pass
    assert str(first_in_group(caught.value, FabnodeError)) == (
        f"cannot listen on /ip4/127.0.0.1/tcp/{port}: address already in use "
        f"(another program listens there; choose another port with --listen)")


@pytest.mark.parametrize("given, expected", [
    ("127.0.0.1:4001", "/ip4/127.0.0.1/tcp/4001"),
    ("[::1]:4001", "/ip6/::1/tcp/4001"),
    ("/ip4/127.0.0.1/tcp/port", "/ip4/ADDRESS/tcp/PORT, e.g. /ip4/0.0.0.0/tcp/4001"),
    ("/ip4/127.0.0.1/udp/4001", "/ip4/ADDRESS/tcp/PORT, e.g. /ip4/0.0.0.0/tcp/4001"),
    ("/ip6/127.0.0.1/tcp/4001", "/ip4/ADDRESS/tcp/PORT, e.g. /ip4/0.0.0.0/tcp/4001"),
])
def test_a_malformed_listen_address_shows_the_expected_form(cli, given, expected):
    before = files(cli.home)
    line = refused(cli, "run", "--listen", given, *QUIET)
    assert line == f"error: --listen {given!r} is not an address to listen on; write it as {expected}"
    assert files(cli.home) == before and not (cli.home / "daemon.lock").exists()


@pytest.mark.parametrize("given", ["localhost", "1.2.3.4:notaport", "127.0.0.1:70000", "::1:8080", ":8080"])
def test_a_malformed_http_address_shows_the_expected_form(cli, given):
    before = files(cli.home)
    line = refused(cli, "run", "--listen", LOOPBACK, "--no-mdns", "--http", given)
    assert line == (f"error: --http {given!r} is not an address for the web interface; write HOST:PORT such as "
                    f"127.0.0.1:8080 (a port alone means 127.0.0.1), or off")
    assert files(cli.home) == before and not (cli.home / "daemon.lock").exists()


def test_malformed_addresses_in_config_name_the_file_and_key(cli):
    config = configure(cli, 'listen = ["127.0.0.1:4001"]\n')
    line = refused(cli, "run", "--no-mdns", "--http", "off")
    assert line == (f"error: {config}: listen '127.0.0.1:4001' is not an address to listen on; "
                    f"write it as /ip4/127.0.0.1/tcp/4001")
    config.write_text(config.read_text().replace("127.0.0.1:4001", LOOPBACK) + 'http = "localhost"\n')
    line = refused(cli, "run", "--no-mdns")
    assert line == (f"error: {config}: http 'localhost' is not an address for the web interface; write "
                    f"HOST:PORT such as 127.0.0.1:8080 (a port alone means 127.0.0.1), or off")
    assert not (cli.home / "daemon.lock").exists()


def test_addresses_in_use_from_config_name_the_file_and_key(cli):
    with listening_socket() as other:
        port = other.getsockname()[1]
        config = configure(cli, f'listen = ["/ip4/127.0.0.1/tcp/{port}"]\n')
        before = files(cli.home)
        line = refused(cli, "run", "--no-mdns", "--http", "off")
        assert line == (f"error: cannot listen on /ip4/127.0.0.1/tcp/{port}: address already in use (another "
                        f"program listens there; choose another port for 'listen' in {config}, or with --listen)")
        assert files(cli.home) == before
        config.write_text(config.read_text().replace(f"tcp/{port}", "tcp/0") + f'http = "127.0.0.1:{port}"\n')
        before = files(cli.home)
        line = refused(cli, "run", "--no-mdns")
        assert line == (f"error: cannot serve the web interface on 127.0.0.1:{port}: address already in use "
                        f"(another program listens there; choose another port for 'http' in {config}, "
                        f"or run with --http off)")
        assert files(cli.home) == before and not (cli.home / "daemon.json").exists()


def test_an_http_address_in_use_is_refused_in_one_line(cli):
    with listening_socket() as other:
        port = other.getsockname()[1]
        before = files(cli.home)
        line = refused(cli, "run", "--listen", LOOPBACK, "--no-mdns", "--http", f"127.0.0.1:{port}")
    assert line == (f"error: cannot serve the web interface on 127.0.0.1:{port}: address already in use "
                    f"(another program listens there; choose another port with --http, or --http off)")
    assert files(cli.home) == before and not (cli.home / "daemon.json").exists()


def test_a_port_alone_serves_the_web_interface_on_loopback_only(cli, daemons):
    port = free_port()
    node = start(daemons, cli, "--http", str(port))
    assert node.wait_for("web interface on ").endswith(f"web interface on http://127.0.0.1:{port}/")
    assert cli.json("status")["http"] == f"127.0.0.1:{port}"
    assert daemon_state(cli.home)["http"] == f"127.0.0.1:{port}"


# ------------------------------------------------------------------ options anywhere


def fabnode(tmp_path: Path, *args: str, env_home: Path | None = None) -> subprocess.CompletedProcess:
    """`fabnode ARGS` with no FABNODE_HOME (or the one given) and an empty default home."""
    env = {k: v for k, v in os.environ.items() if k != "FABNODE_HOME"}
    env["XDG_DATA_HOME"] = str(tmp_path / "empty-xdg")
    if env_home is not None:
        env["FABNODE_HOME"] = str(env_home)
    return subprocess.run([str(FABNODE), *args], env=env, capture_output=True, timeout=60)


def test_home_and_json_are_accepted_before_or_after_the_command(tmp_path, cli):
    home = str(cli.home)
    text, as_json = cli.out("id"), cli.json("id")
    for args in (["--home", home, "id"], ["id", "--home", home]):
        done = fabnode(tmp_path, *args)
        assert done.returncode == 0 and done.stdout.decode().strip() == text, done.stderr
    for args in (["--json", "--home", home, "id"], ["--home", home, "--json", "id"], ["--json", "id", "--home", home],
                 ["id", "--json", "--home", home], ["id", "--home", home, "--json"]):
        done = fabnode(tmp_path, *args)
        assert done.returncode == 0 and json.loads(done.stdout) == as_json, (args, done.stderr)
    # after the command it wins over FABNODE_HOME, as before it does
    other = tmp_path / "other"
    assert fabnode(tmp_path, "id", "--json", "--home", home, env_home=other).stdout == \
        fabnode(tmp_path, "--home", home, "--json", "id", env_home=other).stdout
    # a command with an optional argument, and `init` creating a home named after the command
    assert fabnode(tmp_path, "ls", "--home", home).returncode == 0
    new = tmp_path / "new-home"
    made = fabnode(tmp_path, "init", "--name", "Late Option Lab", "--json", "--home", str(new))
    assert made.returncode == 0 and json.loads(made.stdout)["name"] == "Late Option Lab"
    assert (new / "config.toml").is_file()
    # no --home and no FABNODE_HOME: the default home, as before
    missing = fabnode(tmp_path, "id")
    assert missing.returncode == 1 and missing.stderr.decode() == (
        f"error: no fabnode home at {tmp_path / 'empty-xdg' / 'fabnode'}: run 'fabnode init' (or pass --home)\n")


def test_json_before_a_command_that_cannot_print_it_is_a_usage_error(tmp_path, cli):
    done = fabnode(tmp_path, "--json", "cat", "bafkqaaa", "--home", str(cli.home))
    assert done.returncode == 2 and done.stdout == b""
    assert done.stderr.decode().splitlines()[-1] == "fabnode cat: error: 'cat' does not print JSON"


def test_help_shows_the_global_options_on_every_command(tmp_path):
    main = fabnode(tmp_path, "--help")
    assert main.returncode == 0
    shown = main.stdout.decode()
    assert "--home HOME" in shown and "--json" in shown
    assert "--home, --version and --json may also come after the command" in shown
    for name in ("init", "id", "run", "status", "import"):
        assert f"\n    {name} " in shown
    for name in ("id", "run", "cat"):
        sub = fabnode(tmp_path, name, "--help")
        assert sub.returncode == 0
        text = sub.stdout.decode()
        assert "global options (also accepted before the command):\n  --home HOME" in text
        assert text.startswith(f"usage: fabnode {name} ")


# ------------------------------------------------------------------ config.toml


MISSPELT = """bootstap = ["/ip4/127.0.0.1/tcp/1/p2p/12D3KooWL5XvmYMsPiaQ23hgKUGnmNZmFQMP8zKp7pSwmfDSTMjb"]
[limit]
max_connections = 5
[limits]
fetch_stream_per_peer = 2
"""


def misspelt_warnings(config: Path) -> list[str]:
    # init wrote two lines (a comment and the name): the misspelt keys start on line 3
    return [f"warning: {config} line 3: unknown key 'bootstap' (did you mean 'bootstrap'?)",
            f"warning: {config} line 4: unknown table 'limit' (did you mean 'limits'?)",
            f"warning: {config} line 7: unknown key 'limits.fetch_stream_per_peer' "
            f"(did you mean 'limits.fetch_streams_per_peer'?)"]


def test_unknown_config_keys_are_one_line_warnings_and_the_command_runs(cli):
    identity = cli.out("id")
    config = configure(cli, MISSPELT)
    done = cli.run("id")
    assert done.returncode == 0 and done.stdout.decode().strip() == identity
    assert done.stderr.decode().splitlines() == misspelt_warnings(config)
    # init reads the file through two Home objects: still one warning each, once per process
    renamed = cli.run("init", "--name", "Renamed Lab")
    assert renamed.returncode == 0 and renamed.stderr.decode().splitlines() == misspelt_warnings(config)
    assert cli.json("id")["name"] == "Renamed Lab"


def test_the_daemon_logs_config_warnings_at_start(cli, daemons):
    config = configure(cli, MISSPELT)
    node = start(daemons, cli)
    logged = [line.split(" ", 1)[1] for line in node.said("warning: ")]
    assert logged == misspelt_warnings(config)
    assert node.lines.index(node.said("warning: ")[-1]) < node.lines.index(node.said("listening on ")[0])
    assert node.stop() < STOP_DEADLINE_S
    assert node.proc.stderr.read() == b""  # in the log only, not twice


def test_a_wrong_type_in_config_stays_a_one_line_error(cli):
    config = configure(cli, 'mdns = "yes"\n')
    before = files(cli.home)
    assert refused(cli, "run", "--listen", LOOPBACK, "--http", "off") == f"error: {config}: mdns must be a bool"
    assert files(cli.home) == before and not (cli.home / "daemon.lock").exists()
    config.write_text(config.read_text().replace('mdns = "yes"\n', '').replace('name = "Test Lab"', 'name = 5'))
    assert refused(cli, "id") == f"error: {config}: name must be a str"


def test_the_example_config_has_no_unknown_key_and_every_key_is_found_on_its_line(tmp_path):
    from fabnode.node.config import CONFIG_KEYS, line_of, names_and_lines
    from fabnode.node.home import Home

    from conftest import ROOT

    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    (tmp_path / "config.toml").write_text(text, encoding="utf-8")
    assert Home(tmp_path, warn=False).config_warnings == []
    lines, found = text.splitlines(), names_and_lines(text)
    for key in CONFIG_KEYS:
        assert lines[line_of(tuple(key.split(".")), found) - 1].startswith(key.rsplit(".", 1)[-1] + " =")


def test_lines_inside_multi_line_values_are_not_taken_for_keys(tmp_path):
    from fabnode.node.home import Home

    (tmp_path / "config.toml").write_text(
        'name = """\nlistenn = 1\n"""\nbootstrap = [\n  "/ip4/127.0.0.1/tcp/1", # bootstap = 1\n]\n'
        'mdns = true\nlistenn = ["/ip4/0.0.0.0/tcp/4001"]\n')
    assert Home(tmp_path, warn=False).config_warnings == [
        f"{tmp_path / 'config.toml'} line 8: unknown key 'listenn' (did you mean 'listen'?)"]
