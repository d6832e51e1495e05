"""CPU of one `fabnode` command where PYTHONDONTWRITEBYTECODE is set (as in this machine's
environment), with and without the .pyc files tests/conftest.py now compiles once per session.

A copy of the source tree is imported as ``fabnode`` (PYTHONPATH, ahead of the editable install),
so the checkout's own __pycache__ is left alone; the venv's dependencies keep the .pyc files pip
compiled when it installed them. Each command runs --runs times in each state, interleaved;
the figure is the median CPU (user + system) of one process, from os.wait4.

Usage: .venv/bin/python bench/bench_cli_startup.py [--runs 9]
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = [["--version"], ["id"], ["ls"], ["add", str(ROOT / "examples" / "hand-pump")]]


def cpu_of(args: list[str], env: dict) -> float:
    proc = subprocess.Popen([sys.executable, "-m", "fabnode", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, args
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "src" / "fabnode"
        shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "test-tools", "tests", "bench", "docs", "__pycache__", "*.egg-info"))
        env = {**os.environ, "PYTHONPATH": str(tree.parent), "PYTHONDONTWRITEBYTECODE": "1",
               "FABNODE_HOME": str(Path(tmp) / "home")}
        subprocess.run([sys.executable, "-m", "fabnode", "init", "--name", "Bench Lab"], env=env, check=True,
                       capture_output=True)
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(runs):
            for state in ("source", "pyc"):
                for path in tree.rglob("__pycache__"):
                    shutil.rmtree(path)
                if state == "pyc":
                    compileall.compile_dir(tree, quiet=1)
                for args in COMMANDS:
                    times.setdefault((args[0], state), []).append(cpu_of(args, env))
    print("| command | CPU s, compiled from source | CPU s, with .pyc | ratio |")
    print("|---|---:|---:|---:|")
    for args in COMMANDS:
        source = statistics.median(times[(args[0], "source")])
        pyc = statistics.median(times[(args[0], "pyc")])
        print(f"| `fabnode {' '.join(a if not a.startswith('/') else Path(a).name for a in args)}` "
              f"| {source:.3f} | {pyc:.3f} | {source / pyc:.2f}x |")


if __name__ == "__main__":
    main()
