"""Recovery keys (issue 17, "must have" 1): the 24 words round-trip and name the word at fault;
``init`` shows the key once and keeps no private recovery material unless asked; the backup file
reads back to the same key; every lab record this lab signs carries the key's commitment; a home
made before recovery keys can get one, once."""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

import pytest

from fabnode.node.local.recovery import read_recovery_key
from fabnode.protocol.errors import FabnodeError
from fabnode.protocol.recovery import (BadRecoveryWords, RecoveryKey, public_key_of_seed, recovery_commitment,
                                       seed_of_words, words_of_seed)
from fabnode.protocol.records import FORMAT_VERSION, RecordRejected, signing_bytes, verify_record

from conftest import Cli
from daemons import signing_key

NOW = 1_764_081_600_000


def raw_public(private) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# ------------------------------------------------------------------ the words (pure)


def test_bip39_vectors_and_rfc8032_key():
    """Golden vectors: the Trezor BIP39 test vectors for 32-byte entropy, and RFC 8032's test 1
    for the seed -> public key step (so the words mean the same key to any BIP39 tool)."""
    assert words_of_seed(bytes(32)) == ["abandon"] * 23 + ["art"]
    assert " ".join(words_of_seed(bytes([0x7F] * 32))) == (
        "legal winner thank year wave sausage worth useful legal winner thank year wave sausage worth useful "
        "legal winner thank year wave sausage worth title")
    rfc_seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    public = public_key_of_seed(rfc_seed)
    assert public.hex() == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    assert RecoveryKey(rfc_seed).commitment == hashlib.sha256(public).digest() == recovery_commitment(public)


def test_words_round_trip_in_every_form_an_operator_keeps_them():
    rng = random.Random(17)
    for _ in range(20):
        seed = rng.randbytes(32)
        words = words_of_seed(seed)
        assert len(words) == 24 and seed_of_words(" ".join(words)) == seed
        numbered = "\n".join(f"{n}. {w.upper()}" for n, w in reversed(list(enumerate(words, 1))))
        assert seed_of_words("My lab's words:\n" + numbered) == seed  # numbered lines, any order, a heading
        assert seed_of_words(", ".join(w[:4] for w in words)) == seed  # the first four letters identify a word


def test_an_unknown_word_is_refused_naming_it():
    words = words_of_seed(random.Random(5).randbytes(32))
    words[4] = "abandn"
    with pytest.raises(BadRecoveryWords) as refused:
        seed_of_words(" ".join(words))
    assert str(refused.value).startswith("word 5, 'abandn', is not a BIP39 English word (did you mean 'abandon'")
    with pytest.raises(BadRecoveryWords, match=r"^a recovery key is 24 words, not 23$"):
        seed_of_words(" ".join(words[:23]))


def test_a_word_miscopied_as_another_word_fails_the_checksum_and_is_named():
    """Every word known, one of them the wrong one: the checksum catches it and the message names
    the likeliest slip (a similarly spelled word that makes the checksum pass)."""
    import difflib

    from mnemonic import Mnemonic

    wordlist = Mnemonic("english").wordlist
    rng = random.Random(11)
    for _ in range(200):
        words = words_of_seed(rng.randbytes(32))
        at = rng.randrange(24)
        near = [w for w in difflib.get_close_matches(words[at], wordlist, n=6, cutoff=0.7) if w != words[at]]
        if not near:
            continue
        typo = list(words)
        typo[at] = near[0]
        try:
            seed_of_words(" ".join(typo))
        except BadRecoveryWords as exc:
            message = str(exc)
            break
    else:
        pytest.fail("no miscopied word found in 200 tries")
    assert message.startswith("the recovery words' checksum does not match; likeliest: ")
    assert f"word {at + 1}, {near[0]!r} ({words[at]!r} would fit)" in message and "\n" not in message


def test_reading_back_refuses_another_key_and_hostile_files(tmp_path):
    key = RecoveryKey(random.Random(3).randbytes(32))
    other = RecoveryKey(random.Random(4).randbytes(32))
    assert raw_public(read_recovery_key(" ".join(key.words), commitment=key.commitment)) == key.public_key
    with pytest.raises(FabnodeError, match="not the one this lab committed to"):
        read_recovery_key(" ".join(other.words), commitment=key.commitment)
    huge = tmp_path / "words.txt"
    huge.write_bytes(b"abandon " * 10_000)
    with pytest.raises(FabnodeError, match=r"is 80,000 bytes: not a recovery backup"):
        read_recovery_key(huge)
    fake = tmp_path / "photo.png"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x00IEND\xaeB`\x82")
    with pytest.raises(FabnodeError, match="carries no recovery words"):
        read_recovery_key(fake)
    with pytest.raises(FabnodeError, match="no such file"):
        read_recovery_key(str(tmp_path / "missing.txt"))
    broken = tmp_path / "chunks.png"  # a chunk length pointing far past the end: no words, no crash
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\xff\xff\xff\xfftEXt" + b"fabnode-recovery-words\x00abandon")
    with pytest.raises(FabnodeError, match="carries no recovery words"):
        read_recovery_key(broken)
    with pytest.raises(BadRecoveryWords, match=r"^word number 2 appears twice$"):
        seed_of_words("1 abandon 2 ability\n2 able 3 about")
    from fabnode.node.home import Home
    from fabnode.node.local.recovery import committed

    (tmp_path / "recovery.json").write_text('{"commitment": "not hex"}')
    with pytest.raises(FabnodeError, match=r"recovery.json is damaged: it should hold the lab's recovery commitment"):
        committed(Home(tmp_path))
    spaced = tmp_path / "My USB" / "lab words.txt"  # a path with spaces is a path, not words
    spaced.parent.mkdir()
    spaced.write_text("heading\n" + "\n".join(f"{n}. {w}" for n, w in enumerate(key.words, 1)))
    assert raw_public(read_recovery_key(str(spaced))) == key.public_key


def _lab_bytes(recovery) -> bytes:
    from fabnode.protocol.dagcbor import encode

    key, did = signing_key(21)
    body = {"name": "Lab R", "nodes": [], "recovery": recovery}
    sig = key.sign(signing_bytes("lab", did, NOW, body))
    return encode({"fabnode": FORMAT_VERSION, "type": "lab", "author": did, "ts": NOW, "body": body, "sig": sig})


def test_a_peers_lab_record_carries_a_32_byte_commitment_or_is_refused_in_one_line():
    assert verify_record(_lab_bytes(bytes(32)), now_ms=NOW).body["recovery"] == bytes(32)
    for bad, says in ((bytes(31), "31 bytes"), ("00" * 32, "str")):
        with pytest.raises(RecordRejected) as refused:
            verify_record(_lab_bytes(bad), now_ms=NOW)
        assert str(refused.value) == ("record rejected: body.recovery must be 32 bytes (SHA-256 of the recovery "
                                      f"public key), not {says}")


# ------------------------------------------------------------------ the command line


def _lab_bodies(home: Path) -> list[dict]:
    """Every lab record this home's lab signed, oldest first (as stored in its database)."""
    from fabnode.node.home import Home
    from fabnode.protocol.dagcbor import decode

    h = Home(home)
    conn = h.open_stores().db.conn
    rows = conn.execute("SELECT data FROM records WHERE type = 'lab' AND author = ? ORDER BY ts",
                        (h.identity().did,)).fetchall()
    return [decode(bytes(r[0]))["body"] for r in rows]


def _shown_key(stdout: bytes):
    """The recovery key as the operator would copy it from the terminal."""
    text = stdout.decode()
    assert len(re.findall(r"^\s+1 [a-z]+\s", text, re.M)) == 1, "the words are shown once"
    return read_recovery_key(text.split("RECOVERY KEY", 1)[1])


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """A lab made the default way, with a words file written 'to a USB stick'."""
    base = tmp_path_factory.mktemp("recovery")
    cli = Cli(base / "home")
    shown = cli.run("init", "--name", "Lab A", "--recovery-file", str(base / "usb-words.txt"))
    return cli, base, shown


def test_init_shows_the_words_once_and_keeps_no_private_recovery_material(fresh):
    cli, base, shown = fresh
    out = shown.stdout.decode()
    assert "keep them away from this computer" in out and "They are shown once" in out
    key = _shown_key(shown.stdout)
    seed = key.private_bytes_raw()
    assert raw_public(read_recovery_key(base / "usb-words.txt")) == raw_public(key)
    # no file of the home (keys, config, database with its WAL, packs) holds the seed in any form
    words = " ".join(words_of_seed(seed)).encode()
    forms = [seed, seed.hex().encode(), words, words_of_seed(seed)[0].encode() + b" " + words_of_seed(seed)[1].encode()]
    files = [p for p in cli.home.rglob("*") if p.is_file()]
    assert len(files) >= 5 and not (cli.home / "recovery.key").exists()
    for path in files:
        data = path.read_bytes()
        assert not any(form in data for form in forms), f"{path} holds recovery material"
    # the first lab record the identity signed commits to this key
    bodies = _lab_bodies(cli.home)
    assert bodies and bodies[0]["recovery"] == recovery_commitment(raw_public(key))


def test_re_signing_keeps_the_commitment_and_it_cannot_be_replaced(fresh):
    cli, base, shown = fresh
    commitment = recovery_commitment(raw_public(_shown_key(shown.stdout)))
    cli.run("init", "--name", "Lab A renamed")  # ensure_lab_record re-signs (as the daemon does at start)
    cli.run("lab", "set", "--contact", "ask at the market")  # set_profile re-signs with an explicit profile
    bodies = _lab_bodies(cli.home)
    assert [b["name"] for b in bodies] == ["Lab A", "Lab A renamed", "Lab A renamed"]
    assert bodies[-1]["contact"] == "ask at the market"
    assert all(b["recovery"] == commitment for b in bodies)
    assert cli.fails("key", "recovery", "--create").startswith(
        "error: this lab already committed to a recovery key (")
    assert "the recovery key is not on this node" in cli.fails("key", "backup")
    assert "a recovery key is made only with new ones" in cli.fails("init", "--keep-recovery")
    assert cli.json("key", "recovery") == {"commitment": commitment.hex(), "published": True, "kept": False,
                                           "did": RecoveryKey(_shown_key(shown.stdout).private_bytes_raw()).did}


def test_a_second_node_of_the_lab_keeps_the_commitment_it_learns(fresh, tmp_path):
    """The lab copies author.key to a second node (as the README's home layout advises): that
    node's first lab record knows no commitment; once it imports the lab's records (a USB stick),
    it refuses to make another and its next lab record carries the first node's commitment again."""
    import shutil

    cli, base, shown = fresh
    commitment = recovery_commitment(raw_public(_shown_key(shown.stdout)))
    second = Cli(tmp_path / "second")
    second.home.mkdir(mode=0o700)
    shutil.copy(cli.home / "author.key", second.home / "author.key")
    assert "sync or import from it first" in second.run("init", "--name", "Lab A").stderr.decode()
    assert "recovery" not in _lab_bodies(second.home)[-1]
    cli.run("export", str(tmp_path / "stick.car"))
    second.run("import", str(tmp_path / "stick.car"))
    assert second.fails("key", "recovery", "--create").startswith("error: this lab already committed")
    second.run("lab", "set", "--contact", "second node")
    assert _lab_bodies(second.home)[-1]["recovery"] == commitment


def test_keep_recovery_keeps_it_and_backup_reprints_the_same_words_and_a_png(tmp_path):
    import io

    import segno
    from PIL import Image

    cli = Cli(tmp_path / "home")
    made = cli.json("init", "--name", "Lab B", "--keep-recovery")
    words = made["recovery"]["words"]
    assert len(words) == 24 and made["recovery"]["kept"] is True
    kept = cli.home / "recovery.key"
    assert kept.stat().st_mode & 0o777 == 0o600 and kept.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    again = cli.run("key", "backup", "--recovery-file", str(tmp_path / "paper.png"))
    assert raw_public(_shown_key(again.stdout)) == raw_public(read_recovery_key(" ".join(words)))
    from_png = read_recovery_key(tmp_path / "paper.png", commitment=bytes.fromhex(made["recovery"]["commitment"]))
    assert words_of_seed(from_png.private_bytes_raw()) == words
    # the QR code on the page is the words (module by module, as segno draws them at scale 8, border 4)
    page = Image.open(io.BytesIO((tmp_path / "paper.png").read_bytes())).convert("L")
    matrix = segno.make(" ".join(words), error="m").matrix
    side = (len(matrix) + 8) * 8
    left = (page.width - side) // 2
    for r, row in enumerate(matrix):
        for c, dark in enumerate(row):
            assert (page.getpixel((left + (c + 4) * 8 + 4, (r + 4) * 8 + 4)) < 128) == bool(dark)
    assert _lab_bodies(cli.home)[0]["recovery"] == bytes.fromhex(made["recovery"]["commitment"])
    # a backup never replaces a file
    assert cli.fails("key", "backup", "--recovery-file", str(tmp_path / "paper.png")).endswith(
        "paper.png already exists: a recovery backup never replaces a file")


def test_a_home_made_before_recovery_keys_gets_one_once(tmp_path):
    """An old home: its keys existed before this init, so no recovery key was made (as before
    issue 17). 'key recovery --create' makes one, shows it once and commits it at once."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    home = tmp_path / "old"
    home.mkdir(mode=0o700)
    for name, seed in (("author.key", 31), ("node.key", 32)):
        pem = Ed25519PrivateKey.from_private_bytes(random.Random(seed).randbytes(32)).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        (home / name).write_bytes(pem)
        (home / name).chmod(0o600)
    cli = Cli(home)
    first = cli.run("init", "--name", "Old Lab")
    assert "RECOVERY KEY" not in first.stdout.decode()
    assert "create one with 'fabnode key recovery --create'" in first.stderr.decode()
    assert "recovery" not in _lab_bodies(home)[0]
    assert cli.fails("key", "backup") == ("error: this lab has no recovery key yet: create one with "
                                          "'fabnode key recovery --create'")
    created = cli.run("key", "recovery", "--create")
    key = _shown_key(created.stdout)
    bodies = _lab_bodies(home)
    assert bodies[-1]["recovery"] == recovery_commitment(raw_public(key)) and len(bodies) == 2
    assert not (home / "recovery.key").exists()
    assert cli.fails("key", "recovery", "--create").startswith("error: this lab already committed to a recovery key")


def test_init_refuses_a_backup_path_that_exists_before_making_anything(tmp_path):
    taken = tmp_path / "words.txt"
    taken.write_text("my shopping list\n")
    cli = Cli(tmp_path / "home")
    assert cli.fails("init", "--recovery-file", str(taken)).endswith(
        "words.txt already exists: a recovery backup never replaces a file")
    assert not cli.home.exists() and taken.read_text() == "my shopping list\n"
