"""Issue 17's commands end to end, run as an operator runs them: ``key rotate``, ``key revoke``,
``key status``, ``member add/remove``, ``members`` and ``init --restore``.

One story across two daemons (a rotation when a volunteer leaves with a copy of the key, a theft
recovered from a new machine with the recovery words, a member added and removed), checked on
the other lab after gossip and sync, then across a USB stick to a third home; then the careless
and hostile uses of the commands, each refused in one line with nothing changed."""

from __future__ import annotations

import datetime
import json
import shutil
import time

import pytest

from conftest import Cli
from daemons import Daemon, has_record, record_count, wait_until
from keychains import Key


def _utc(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _chain(status: dict) -> list[tuple[str, str, int | None]]:
    return [(link["key"], link["how"], link["revoked_cutoff"]) for link in status["chain"]]


def _thief_home(tmp_path, name: str, key_file) -> Cli:
    """A home whose author key is a copy of ``key_file``: what someone who left with it can run."""
    home = tmp_path / name
    home.mkdir(mode=0o700)
    shutil.copy(key_file, home / "author.key")
    thief = Cli(home)
    thief.run("init", "--name", "Lab A")  # keeps the copied key (init never replaces keys)
    return thief


def test_rotate_revoke_and_members_across_two_daemons_and_a_usb_stick(tmp_path, daemons):
    a, b = Cli(tmp_path / "a"), Cli(tmp_path / "b")
    words = tmp_path / "lab-a-recovery.txt"
    lab = a.json("init", "--name", "Lab A", "--recovery-file", str(words))["did"]
    b.run("init", "--name", "Lab B")
    ana_did, stranger = Key(7).did, Key(8).did  # a person's own key (her node is not needed here), anyone
    da = Daemon(a)
    daemons.append(da)
    db = Daemon(b, "--bootstrap", da.addr)
    daemons.append(db)
    db.wait_for(f"peer connected: {da.peer_id}")

    # a member, then a rotation while the daemon runs: it takes the new key without a restart
    a.run("member", "add", ana_did, "--role", "maintainer")
    rotated = a.json("key", "rotate")
    assert rotated["identity"] == lab and rotated["old"] == lab and a.json("id")["did"] == rotated["new"]
    assert rotated["daemon"] == "took the new key"
    assert (a.home / rotated["retired_key_file"]).stat().st_mode & 0o777 == 0o600
    da.wait_for(f"author key is now {rotated['new']}")

    def held(cli: Cli, **types: int) -> None:  # polled in the SQLite file: cheaper than a command a time
        wait_until(lambda: all(record_count(cli.home, f"type = '{t}'") >= n for t, n in types.items()), timeout=60,
                   what=f"{cli.home.name} to hold {types}")

    held(b, succession=1, member=1)
    status = b.json("key", "status", lab)
    assert _chain(status) == [(lab, "root", None), (rotated["new"], "rotated", None)]
    assert status["current_key"] == rotated["new"] and not status["this_lab"] and status["conflict"] is None
    assert [(m["did"], m["role"], m["until"]) for m in status["members"]] == [(ana_did, "maintainer", None)]
    assert status["recovery"]["committed"] is not None and status["recovery"]["kept_here"] is False
    # the new key's lab record went out too (name, this node, the recovery commitment)
    wait_until(lambda: record_count(b.home, f"type = 'lab' AND author = '{rotated['new']}'"),
               what="the new key's lab record")

    # the volunteer who left with the old key signs something: refused by Lab B
    volunteer = _thief_home(tmp_path, "volunteer", a.home / rotated["retired_key_file"])
    volunteer.run("vouch", stranger)
    volunteer.run("export", "--records-only", str(tmp_path / "volunteer.car"))
    shown = b.out("import", str(tmp_path / "volunteer.car"))
    assert f"after it was rotated to {rotated['new']}" in shown, shown

    # the laptop is stolen: Lab A sets up a new machine knowing only its did and the words
    da.stop()
    a2 = Cli(tmp_path / "a-new")
    assert "signs nothing until" in a2.out("init", "--name", "Lab A", "--restore", lab)
    da2 = Daemon(a2, "--bootstrap", db.addr)
    daemons.append(da2)
    held(a2, succession=1)
    assert record_count(a2.home, f"author = '{a2.json('id')['did']}'") == 0  # the daemon signed nothing meanwhile
    restoring = a2.json("key", "status")
    assert restoring["restoring"] is True and len(restoring["chain"]) == 2
    cutoff = int(time.time() * 1000) - 1  # the theft: just now
    revoked = a2.json("key", "revoke", "--recovery", str(words), "--cutoff", _utc(cutoff))
    assert revoked["identity"] == lab and revoked["revoked"] == rotated["new"] and revoked["cutoff"] == cutoff
    da2.wait_for(f"author key is now {revoked['new']}")
    a2.run("member", "remove", ana_did)
    assert [m["until"] is not None for m in a2.json("members")["members"]] == [True]

    held(b, revocation=1, member=2)
    status = b.json("key", "status", lab)
    assert _chain(status) == [(lab, "root", None), (rotated["new"], "rotated", cutoff),
                              (revoked["new"], "recovered", None)]
    assert status["current_key"] == revoked["new"]
    shown = b.out("key", "status", lab)
    assert f"REVOKED: its records dated after {_utc(cutoff)[:19].replace('T', ' ')}" in shown, shown

    # the thief signs with the stolen key after the cut-off: refused by Lab B
    a.run("vouch", stranger)
    a.run("export", "--records-only", str(tmp_path / "thief.car"))
    imported = b.json("import", str(tmp_path / "thief.car"))
    refusals = [r["reason"] for r in imported["refused_by_chain"]]
    assert refusals and all(f"signed by {rotated['new']} after its revocation cutoff {cutoff}" in r for r in refusals)
    thief_vouch = [r["record"] for r in imported["refused_by_chain"]]
    assert not any(has_record(b.home, cid) for cid in thief_vouch)

    # the same across a USB stick to a third lab, with no daemon
    c = Cli(tmp_path / "c")
    c.run("init", "--name", "Lab C")
    b.run("export", "--records-only", str(tmp_path / "b.car"))
    c.run("import", str(tmp_path / "b.car"))
    on_b, on_c = b.json("key", "status", lab), c.json("key", "status", lab)
    assert (on_c["chain"], on_c["members"], on_c["current_key"]) == (on_b["chain"], on_b["members"], on_b["current_key"])
    shown = c.out("import", str(tmp_path / "thief.car"))
    assert shown.count("after its revocation cutoff") == len(refusals), shown
    db.stop()
    da2.stop()


# ------------------------------------------------------------------ careless and hostile uses


@pytest.fixture(scope="module")
def labs(tmp_path_factory):
    """Two labs with their recovery words and a person, no daemons."""
    tmp = tmp_path_factory.mktemp("keycli")
    from fabnode.node.local.recovery import backup_text
    from fabnode.protocol.recovery import RecoveryKey

    a, ana = Cli(tmp / "a"), Cli(tmp / "ana")
    lab = a.json("init", "--name", "Lab A", "--recovery-file", str(tmp / "a.txt"))["did"]
    ana_did = ana.json("init", "--name", "Ana")["did"]  # a person's own node: her key is her own
    other = RecoveryKey(bytes(range(32)))  # another lab's recovery words, as its backup file holds them
    (tmp / "other.txt").write_text(backup_text(other, type("Lab", (), {"name": "Other Lab", "did": Key(9).did})))
    return {"tmp": tmp, "a": a, "ana": ana, "lab": lab, "ana_did": ana_did, "other_did": Key(9).did,
            "words": tmp / "a.txt", "other_words": tmp / "other.txt"}


def _unchanged(cli: Cli):
    """The home's key files and key status, to compare after a refusal."""
    files = {p.name: p.read_bytes() for p in cli.home.iterdir() if p.name.startswith("author.key")}
    return files, cli.json("key", "status")


def test_revoke_refuses_wrong_or_foreign_words_a_future_cutoff_and_bad_flags(labs):
    a, tmp = labs["a"], labs["tmp"]
    before = _unchanged(a)
    import re

    typo = tmp / "typo.txt"
    typed = re.findall(r"(?m)(?:^|  ) ?\d+ ([a-z]+)", labs["words"].read_text())
    assert len(typed) == 24
    typo.write_text(" ".join(["zzzz", *typed[1:]]))
    assert a.fails("key", "revoke", "--recovery", str(typo)).startswith(
        "error: word 1, 'zzzz', is not a BIP39 English word")
    assert "not the one this lab committed to" in a.fails("key", "revoke", "--recovery", str(labs["other_words"]))
    assert "no such file" in a.fails("key", "revoke", "--recovery", str(tmp / "missing.txt"))
    soon = _utc(int(time.time() * 1000) + 3_600_000)
    assert "the cut-off is in the future" in a.fails("key", "revoke", "--recovery", str(labs["words"]), "--cutoff", soon)
    assert "not a time" in a.fails("key", "revoke", "--recovery", str(labs["words"]), "--cutoff", "last tuesday")
    assert a.fails("key", "revoke") == ("error: key revoke needs --recovery FILE (the recovery backup) or "
                                        "--recovery - (type the words)")
    assert a.fails("key", "rotate", "--recovery", str(labs["words"])) == "error: --recovery goes with 'key revoke'"
    assert "takes no DID" in a.fails("key", "rotate", labs["other_did"])
    assert "not a key of" in a.fails("key", "revoke", "--recovery", str(labs["words"]), "--revoked",
                                     labs["other_did"])
    a.fails("key", "spin", code=2)
    assert _unchanged(a) == before  # nothing signed, no key file touched


def test_a_member_cannot_add_members_until_made_a_maintainer(labs):
    a, ana, tmp = labs["a"], labs["ana"], labs["tmp"]
    lab, ana_did, other_did = labs["lab"], labs["ana_did"], labs["other_did"]
    assert ana.fails("member", "add", other_did, "--role", "member", "--lab", lab) == (
        f"error: this key is neither {lab}'s key nor one of its maintainers (as far as this node knows: sync or "
        "import the lab's records first)")
    assert a.fails("member", "remove", other_did) == f"error: {other_did} is not a member of {lab}"
    a.run("member", "add", ana_did, "--role", "member")
    a.run("export", "--records-only", str(tmp / "a1.car"))
    ana.run("import", str(tmp / "a1.car"))
    assert ana.fails("member", "add", other_did, "--role", "member", "--lab", lab) == (
        f"error: this key is a member, not a maintainer, of {lab}: it cannot add or remove members")
    a.run("member", "add", ana_did, "--role", "maintainer")
    a.run("export", "--records-only", str(tmp / "a2.car"))
    ana.run("import", str(tmp / "a2.car"))
    added = ana.json("member", "add", other_did, "--role", "member", "--lab", lab)
    assert added["lab"] == lab
    assert {(m["did"], m["role"]) for m in ana.json("members", lab)["members"]} >= {
        (ana_did, "maintainer"), (other_did, "member")}
    assert "needs --role" in a.fails("member", "add", other_did)
    a.fails("member", "add", other_did, "--role", "owner", code=2)
    assert "error: " in a.fails("member", "add", "did:key:nope", "--role", "member")


def test_a_forked_chain_is_a_conflict_in_plain_words_until_the_recovery_words_settle_it(labs, tmp_path):
    """Two successions from one key (a copy of it rotated elsewhere): key status says what is
    wrong and what to run; key revoke with the words revokes the forked key by default. With
    --new-recovery (the words may have been seen; recovery.key was kept on the machine) the
    revocation commits a fresh recovery key, shown once, and the old words are refused after."""
    lab_home = Cli(tmp_path / "fork")
    words, new_words = tmp_path / "fork.txt", tmp_path / "new.txt"
    lab = lab_home.json("init", "--name", "Fork Lab", "--recovery-file", str(words), "--keep-recovery")["did"]
    copy = _thief_home(tmp_path, "copy", lab_home.home / "author.key")
    mine = lab_home.json("key", "rotate")
    theirs = copy.json("key", "rotate")
    copy.run("export", "--records-only", str(tmp_path / "copy.car"))
    lab_home.run("import", str(tmp_path / "copy.car"))
    status = lab_home.json("key", "status")
    assert status["current_key"] is None
    assert status["conflict"] == (f"{lab} rotated twice (to {', '.join(sorted([mine['new'], theirs['new']]))}): a "
                                  "forked chain, trusted nowhere until the recovery key settles it: run 'fabnode key "
                                  "revoke --recovery WORDS' on a node of this lab to settle it")
    assert "CONFLICT: " in lab_home.out("key", "status")
    settled = lab_home.json("key", "revoke", "--recovery", str(words), "--new-recovery", "--recovery-file",
                            str(new_words))
    assert settled["revoked"] == lab and len(settled["recovery"]["words"]) == 24 and new_words.exists()
    status = lab_home.json("key", "status")
    assert status["conflict"] is None and status["current_key"] == settled["new"] == lab_home.json("id")["did"]
    assert status["recovery"] == {"committed": settled["recovery"]["commitment"], "kept_here": False}
    assert not (lab_home.home / "recovery.key").exists()  # the old recovery key, no longer valid, set aside
    assert "not the one this lab committed to" in lab_home.fails("key", "revoke", "--recovery", str(words))
    assert lab_home.json("key", "revoke", "--recovery", str(new_words))["revoked"] == settled["new"]


def test_restore_refuses_a_bad_did_an_existing_home_and_revoking_before_it_knows_the_lab(labs, tmp_path):
    lab = labs["lab"]
    assert "not a lab's did:key" in Cli(tmp_path / "x").fails("init", "--restore", "did:web:example.org")
    assert not (tmp_path / "x").exists()
    assert "already has its keys" in labs["ana"].fails("init", "--restore", lab)
    fresh = Cli(tmp_path / "fresh")
    fresh.run("init", "--name", "Lab A", "--restore", lab)
    assert fresh.fails("key", "revoke", "--recovery", str(labs["words"])).startswith(
        f"error: no recovery key is known for {lab} here")
    assert not (fresh.home / "author.key.next").exists() and (fresh.home / "restore.json").exists()
    assert fresh.fails("key", "rotate") == (f"error: key rotate: this home is restoring {lab}; run 'fabnode key "
                                            "revoke --recovery WORDS' first")
    assert "this home is restoring" in fresh.fails("member", "add", labs["ana_did"], "--role", "member")
    assert record_count(fresh.home) == 0  # a restoring home signs nothing, not even its lab record

