"""Labs by name, as an operator sees them (issue 15): two labs' daemons connect, each learns the
other's signed lab record, and every command, the daemon's log and the web pages (in Chromium)
show the other lab by its declared name marked unverified; after `fabnode name` by the local
name. One pair of daemons serves every assertion."""

from __future__ import annotations

import json
import sqlite3

from conftest import ROOT
from daemons import has_record, make_labs, start, wait_until

EXAMPLE = ROOT / "examples" / "hand-pump"


def lab_record_id(home, did: str) -> str:
    from fabnode.protocol.cid import cid_str

    conn = sqlite3.connect(f"file:{home / 'fabnode.db'}?mode=ro", uri=True)
    try:
        return cid_str(conn.execute("SELECT cid FROM labs WHERE author = ?", (did,)).fetchone()[0])
    finally:
        conn.close()


def page_text(browser, url: str, selector: str) -> str:
    page = browser.new_page()
    try:
        page.goto(url, timeout=15_000)
        return page.locator(selector).first.inner_text(timeout=10_000)
    finally:
        page.close()


def test_two_labs_show_each_other_by_name_everywhere(tmp_path, daemons, browser):
    a, b = make_labs(tmp_path, 2)  # "Lab 0" and "Lab 1"
    a_id, b_id = a.json("id"), b.json("id")
    # A's home is as old as issue 15: no lab record yet. Its daemon signs one when it starts.
    conn = sqlite3.connect(a.home / "fabnode.db")
    with conn:
        conn.execute("DELETE FROM records WHERE type = 'lab'")
        conn.execute("DELETE FROM labs")
        conn.execute("DELETE FROM lab_nodes")
    conn.close()
    da = start(daemons, a)
    made = da.said("lab record ")  # said before it listens
    assert len(made) == 1 and made[0].endswith("this lab is “Lab 0”"), made
    db = start(daemons, b, "--bootstrap", da.addr)
    web = "http://" + json.loads((b.home / "daemon.json").read_text())["http"]

    # B learns A's lab record (the sync on connecting): A's node shows as the lab, unverified
    def a_in_peers():
        rows = [r for r in b.json("peers") if r["peer_id"] == a_id["peer_id"]]
        return rows[0] if rows and rows[0]["name"] else None
    row = wait_until(a_in_peers, timeout=20, what="B to show A's node as its lab")
    assert (row["name"], row["name_source"], row["lab"]) == ("Lab 0", "declared", a_id["did"])
    assert f"Lab 0 (unverified)  {a_id['peer_id']}" in b.out("peers")
    assert "Connected labs (1)" in page_text(browser, web + "/", "main")
    assert page_text(browser, web + "/", "#peers") == f"Lab 0 (unverified) via {row['address']}"

    # A publishes and attests; B's log line, log, show and reputation name A
    published = a.json("publish", str(EXAMPLE), "-m", "first design")
    line = db.wait_for(f"record received: version {published['version']}", timeout=15)
    assert line.endswith("by Lab 0 (unverified) (from Lab 0 (unverified))"), line
    attestation = a.out("attest", published["version"], "--result", "passed", "-m", "pumps 20 l/min")
    wait_until(lambda: has_record(b.home, attestation), timeout=15, what="A's attestation to reach B")
    b.out("vouch", a_id["did"], "-m", "we built their pump together")
    assert "by Lab 0 (unverified)" in b.out("log", published["design"])
    assert "lab     Lab 0 (unverified)" in b.out("show", published["version"])
    lab_record = b.json("show", lab_record_id(b.home, a_id["did"]))  # the record itself, decoded
    assert lab_record["valid"] and lab_record["type"] == "lab" and lab_record["body"]["name"] == "Lab 0"
    assert [n["peer"] for n in lab_record["body"]["nodes"]] == [a_id["peer_id"]]
    assert b.out("reputation", published["version"]).endswith(
        "Lab 0 (unverified) built it: passed — trust 0.50 via you → Lab 0 (unverified)")
    assert f"{a_id['did']}  via you → Lab 0 (unverified)" in b.out("trust")
    assert "sync      Lab 0 (unverified): sent" in b.out("status")

    # a local name for A's node alone, then for the lab: the lab's local name wins everywhere
    b.out("name", a_id["peer_id"], "Pune's laptop")
    assert f"Pune's laptop  {a_id['peer_id']}" in b.out("peers")
    assert b.out("name", a_id["did"], "Pune") == f"{a_id['did']} is now shown as Pune"
    assert f"Pune  {a_id['peer_id']}" in b.out("peers")
    assert b.out("reputation", published["version"]).endswith("  Pune built it: passed — trust 0.50 via you → Pune")
    assert f"{a_id['did']}  via you → Pune" in b.out("trust")
    assert "by Pune" in b.out("log", published["design"]) and "(unverified)" not in b.out("log", published["design"])
    listed = {r["key"]: r for r in b.json("name")}
    assert listed[a_id["did"]] == {"key": a_id["did"], "local": "Pune", "declared": "Lab 0", "shown": "Pune"}
    assert listed[b_id["did"]]["shown"] == "Lab 1"  # this lab itself: its own configured name
    assert page_text(browser, web + "/", "#peers").startswith("Pune via ")
    version_page = page_text(browser, web + f"/version/{published['version']}", "main")
    assert "Pune" in version_page and "Lab 0 (unverified)" not in version_page and a_id["did"] in version_page
    design_page = page_text(browser, web + f"/design/{published['design']}", "main")
    assert "by Pune" in design_page and "(unverified)" not in design_page

    # clearing the local name brings back the declared one; hostile or wrong input: one line each
    b.out("name", a_id["did"], "--clear")
    assert "via you → Lab 0 (unverified)" in b.out("trust")
    assert b.fails("name", a_id["did"], "--clear") == "error: did:key:z6Mk…" + a_id["did"][-4:] + " has no local name here"
    assert "U+000A" in b.fails("name", a_id["did"], "Pune\nerror: disk full")
    assert "U+202E (RIGHT-TO-LEFT OVERRIDE)" in b.fails("name", a_id["did"], "Pune \u202e")
    assert b.fails("name", "QmNotAKey", "x").startswith("error: not a did:key or a peer ID")
    assert "U+202E" in b.fails("init", "--name", "Lab\u202e1")
    assert b.json("id")["name"] == "Lab 1"  # nothing was changed by the refused name

    # the daemon's log names a known node when it leaves and when it comes back (the node's own
    # local name is still set: it wins over what its lab declares)
    da.stop()
    db.wait_for(f"peer disconnected: {a_id['peer_id']} (Pune's laptop)", timeout=15)
    b.out("name", a_id["peer_id"], "--clear")
    start(daemons, a, "--bootstrap", db.addr)
    db.wait_for(f"peer connected: {a_id['peer_id']} via ", timeout=15)
    assert db.said(f"peer connected: {a_id['peer_id']}")[-1].endswith("(Lab 0 (unverified))")

    # A renames itself: a new lab record, announced, and the newest wins at B
    a.out("init", "--name", "Fab Lab Zero")
    wait_until(lambda: a_in_peers() and a_in_peers()["name"] == "Fab Lab Zero", timeout=15, what="A's new name at B")
    assert "via you → Fab Lab Zero (unverified)" in b.out("trust")
