"""Time the phases of one `fabnode add` in-process: until the transaction commits (data in the
WAL, consistent but not yet fsynced) and then the checkpoint, when SQLite fsyncs the WAL, copies
it into the main file and fsyncs that (here run by closing the store). Prints two numbers: commit seconds, close seconds.

Usage: FABNODE_HOME=... python bench/add_phases.py PATH   (the home must exist and be empty)
"""

import sys
import time
from pathlib import Path

from fabnode.node.local.files import add_path
from fabnode.node.home import Home, default_home

start = time.perf_counter()
store = Home(default_home()).open_store()
# Keep the commit from checkpointing, so the two phases are measured apart: the close then does
# the checkpoint that `fabnode add` does at its commit.
store.db.conn.execute("PRAGMA wal_autocheckpoint=0")
result = add_path(store, Path(sys.argv[1]), now_ms=0)
committed = time.perf_counter()
store.close()
closed = time.perf_counter()
print(f"{committed - start:.3f} {closed - committed:.3f} {result.cid}")
