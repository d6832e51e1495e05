"""Long work shows a progress bar on a terminal and stays quiet when piped."""

from __future__ import annotations

from conftest import Cli, run_on_terminal, write_random_file


def test_add_and_fsck_show_a_bar_on_a_terminal(cli: Cli, tmp_path):
    big = write_random_file(tmp_path / "big.bin", 48 << 20, seed=1)
    code, shown = run_on_terminal(cli, "add", str(big))
    assert code == 0
    assert b"adding" in shown and b"100%" in shown
    cid = shown.decode().strip().splitlines()[-1].strip()
    assert cid.startswith("bafybei")
    code, shown = run_on_terminal(cli, "get", cid, "-o", str(tmp_path / "out.bin"))
    assert code == 0 and b"writing" in shown
    code, shown = run_on_terminal(cli, "fsck")
    assert code == 0 and b"checking" in shown


def test_quiet_when_not_a_terminal(cli: Cli, tmp_path):
    big = write_random_file(tmp_path / "big.bin", 8 << 20, seed=1)
    result = cli.run("add", str(big))
    assert result.stderr == b""
    assert result.stdout.decode().count("\n") == 1


def test_export_and_import_show_a_bar_on_a_terminal(cli: Cli, tmp_path):
    big = write_random_file(tmp_path / "design" / "scan.bin", 48 << 20, seed=2)
    cli.out("publish", str(big.parent), "-m", "scan", "--license", "MIT")
    car = tmp_path / "out.car"
    code, shown = run_on_terminal(cli, "export", str(car))
    assert code == 0 and b"exporting" in shown and b"100%" in shown
    other = Cli(tmp_path / "other")
    other.run("init")
    code, shown = run_on_terminal(other, "import", str(car))
    assert code == 0 and b"importing" in shown and b"records: 2 new" in shown  # the version and the exporting lab's lab record
    quiet = Cli(tmp_path / "quiet")
    quiet.run("init")
    assert quiet.run("import", str(car)).stderr == b""
