"""Crash safety: an import killed with SIGKILL at random moments leaves no trace."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import time

import pytest

from conftest import FABNODE, Cli, cli_env, write_random_file


@pytest.mark.slow
def test_import_killed_at_twenty_random_moments(tmp_path):
    a, b = Cli(tmp_path / "a"), Cli(tmp_path / "b")
    a.run("init", "--name", "Lab A")
    b.run("init", "--name", "Lab B")
    design = tmp_path / "design"
    for i in range(6):
        write_random_file(design / f"scan-{i}.bin", 20_000_000, seed=i)
    (design / "README.md").write_text("# scans\n")
    published = a.json("publish", str(design), "-m", "scans", "--license", "CC-BY-SA-4.0")
    a.out("attest", published["version"], "--result", "passed")
    car = tmp_path / "big.car"
    a.out("export", str(car))

    probe = Cli(tmp_path / "probe")  # how long a whole import takes here
    probe.run("init")
    start = time.monotonic()
    probe.out("import", str(car))
    whole = time.monotonic() - start

    def checked(cli: Cli) -> dict:
        """fsck's report without its notes on garbage: a killed import may leave a pack tail
        past the committed end (cut by the next write), which is not a difference in content."""
        report = cli.json("fsck")
        assert all("past its committed end" in note or "has no index row" in note for note in report.pop("reclaimable"))
        return report

    rng = random.Random(20261125)
    empty = checked(b)
    complete = checked(probe)
    outcomes = {"nothing": 0, "everything": 0}
    for attempt in range(20):
        proc = subprocess.Popen([str(FABNODE), "import", str(car)], env=cli_env(b.home),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # the random moment of the crash (not a wait for an event), mostly before the commit: the
        # durable checkpoint after it takes much of the whole time
        time.sleep(rng.uniform(0.0, 0.5 * whole))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        report = checked(b)
        # All or nothing: either the store is as before, or the import had committed whole.
        if report == empty:
            assert b.json("ls") == [] and b.json("designs") == []
            outcomes["nothing"] += 1
        else:
            assert report == complete, f"attempt {attempt}: partial import visible: {report}"
            assert len(b.json("designs")) == 1
            outcomes["everything"] += 1
            shutil.rmtree(b.home)
            b.run("init", "--name", "Lab B")
    assert outcomes["nothing"] >= 5, outcomes  # many kills really landed inside the transaction
    result = b.json("import", str(car))
    assert result["records"]["new"] == 3 and result["bundles"] == [published["bundle"]]
    assert b.json("fsck")["ok"] and b.json("fsck")["blocks"] == a.json("fsck")["blocks"]
