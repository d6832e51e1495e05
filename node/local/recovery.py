"""The lab's recovery key on this node (issue 17): making it, showing it once, committing to it,
and reading it back from what the operator kept.

Files in the home (node/home.py lists them)::

    HOME/recovery.json   {"commitment": hex, "did": the recovery key's did:key, "created_ms": int}
                         public facts only (mode 0600 like the rest): what the lab record commits
                         to, so every lab record this node signs carries it
    HOME/recovery.key    the recovery private key (Ed25519, PKCS#8 PEM, mode 0600), ONLY with
                         ``init --keep-recovery`` / ``key recovery --create --keep-recovery``

By default the private key is never written to the home: it is shown once (24 words, and a
backup file if asked) and lives on paper. A thief who takes the laptop then takes the author key
but not the means to take the identity back.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from fabnode.protocol.errors import FabnodeError
from fabnode.protocol.recovery import WORD_COUNT, RecoveryKey, seed_of_words

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from fabnode.node.home import Home

RECOVERY_KEY = "recovery.key"
RECOVERY_COMMITMENT = "recovery.json"
MAX_BACKUP_TEXT = 64 * 1024
"""Bytes of a words file read back: 24 words and a heading fit in 2 KiB; anything larger is not one."""
MAX_BACKUP_PNG = 4 * 1024 * 1024
PNG_WORDS_KEY = "fabnode-recovery-words"
"""The PNG text chunk that carries the words, so :func:`read_recovery_key` can read the image back
without a QR decoder (the QR itself holds the same words, for a phone)."""

INSTRUCTIONS = (
    "Write these 24 words on paper (or print the backup file) now, and keep them away from this computer.",
    "Anyone who has them can take over this lab's identity; without them, a stolen or broken laptop",
    "cannot be recovered from.",
)
SHOWN_ONCE = "They are shown once: this node does not keep them."
KEPT_HERE = "This node keeps them too (recovery.key): 'fabnode key backup' shows them again."


def committed(home: "Home") -> bytes | None:
    """The recovery commitment this home's lab records carry, or None (a home made before issue
    17 that has not run ``key recovery --create``)."""
    path = home.path / RECOVERY_COMMITMENT
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        value = bytes.fromhex(data["commitment"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise FabnodeError(f"{path} is damaged: it should hold the lab's recovery commitment as JSON") from None
    if len(value) != 32:
        raise FabnodeError(f"{path} is damaged: its commitment is {len(value)} bytes, not 32")
    return value


def published_commitment(records, did: str) -> bytes | None:
    """The recovery commitment lab ``did`` published, as far as the records held here tell: the
    ``recovery`` of its earliest lab record that carries one (the rule of issue 17's resolver), or
    None. A second node of the same lab, holding only the author key, learns it by sync."""
    from fabnode.protocol.dagcbor import decode

    for raw in records.lab_records(did):
        value = decode(raw)["body"].get("recovery")
        if value is not None:
            return value
    return None


def _published_commitment(home: "Home") -> bytes | None:
    from fabnode.node.local.commons import _open

    _, records = _open(home)
    return published_commitment(records, home.identity().did)


def has_commitment(home: "Home") -> bool:
    """Whether this lab committed to a recovery key (in this home, or in a lab record known here)."""
    return committed(home) is not None or _published_commitment(home) is not None


def _write_private(path: Path, data: bytes) -> None:
    """Write a new file, mode 0600, never replacing one (O_EXCL)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _pem(key: RecoveryKey) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(key.seed).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def make_recovery_key(home: "Home", *, keep: bool, now_ms: int) -> RecoveryKey:
    """Draw a new recovery key and record its commitment in the home (and the private key too
    when ``keep``). Refused when this lab already committed one: the first commitment is final
    (a thief holding the author key must not be able to swap it), so this is for a new lab or a
    home made before issue 17."""
    existing = committed(home) or _published_commitment(home)
    if existing is not None:
        raise FabnodeError(f"this lab already committed to a recovery key ({existing.hex()[:16]}…); "
                           "it cannot be replaced from this node")
    key = RecoveryKey(secrets.token_bytes(32))
    record = {"commitment": key.commitment.hex(), "did": key.did, "created_ms": now_ms}
    if keep:
        _write_private(home.path / RECOVERY_KEY, _pem(key))
    _write_private(home.path / RECOVERY_COMMITMENT, (json.dumps(record, indent=1) + "\n").encode())
    return key


def forget_recovery_key(home: "Home") -> None:
    """Undo :func:`make_recovery_key` when the words could not be shown (init failed after it):
    a commitment nobody ever saw would lock the lab out of recovery for good."""
    for name in (RECOVERY_COMMITMENT, RECOVERY_KEY):
        (home.path / name).unlink(missing_ok=True)


def create_recovery_key(home: "Home", *, keep: bool = False, backup_file: Path | None = None) -> RecoveryKey:
    """``fabnode key recovery --create``: a recovery key for a home that has none (made before
    issue 17), committed at once in a newly signed lab record."""
    from fabnode.node.local.commons import now_ms
    from fabnode.node.local.names import ensure_lab_record

    home.require()
    if backup_file is not None:
        check_backup_path(backup_file)
    key = make_recovery_key(home, keep=keep, now_ms=now_ms())
    try:
        if backup_file is not None:
            write_backup(backup_file, key, home.identity())
        ensure_lab_record(home)
    except BaseException:
        forget_recovery_key(home)
        raise
    return key


def kept_recovery_key(home: "Home") -> RecoveryKey:
    """``fabnode key backup``: the recovery key while this node still keeps it."""
    home.require()
    path = home.path / RECOVERY_KEY
    if not path.exists():
        if not has_commitment(home):
            raise FabnodeError("this lab has no recovery key yet: create one with 'fabnode key recovery --create'")
        raise FabnodeError("the recovery key is not on this node (it was shown once, at init, to be written down); "
                           "if it never was, it cannot be replaced: the lab's first commitment is final")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except ValueError:
        raise FabnodeError(f"{path} is not a PEM private key") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise FabnodeError(f"{path} is not an Ed25519 key")
    key = RecoveryKey(private.private_bytes_raw())
    expected = committed(home)
    if expected is not None and key.commitment != expected:
        raise FabnodeError(f"{path} is not the recovery key this lab committed to ({expected.hex()[:16]}…)")
    return key


def recovery_status(home: "Home") -> dict:
    """``fabnode key recovery``: whether this lab committed to a recovery key, and whether it is kept here."""
    home.require()
    value = committed(home)
    published = _published_commitment(home)
    data = json.loads((home.path / RECOVERY_COMMITMENT).read_text(encoding="utf-8")) if value else {}
    return {"commitment": (value or published).hex() if (value or published) else None,
            "published": published is not None and (value is None or published == value),
            "kept": (home.path / RECOVERY_KEY).exists(), "did": data.get("did")}


# ------------------------------------------------------------------ the printable backup


def check_backup_path(path: Path) -> None:
    """Refuse, before any key is made, a backup path that would replace a file or cannot be written."""
    if path.exists():
        raise FabnodeError(f"{path} already exists: a recovery backup never replaces a file")
    if not path.parent.is_dir():
        raise FabnodeError(f"{path.parent} is not a folder: cannot write the recovery backup there")


def backup_text(key: RecoveryKey, identity) -> str:
    """The words file: a heading naming the lab, the instructions, and the numbered words
    (:func:`fabnode.protocol.recovery.split_words` reads them back, ignoring the rest)."""
    lines = [f"fabnode recovery key for the lab “{identity.name}”", f"lab: {identity.did}", "",
             *INSTRUCTIONS, "", *numbered_lines(key.words), ""]  # no "shown once": this file is a copy
    return "\n".join(lines)


def numbered_lines(words: list[str], columns: int = 4) -> list[str]:
    """The words as ``init`` prints them: numbered, in rows of ``columns``."""
    rows = []
    for start in range(0, len(words), columns):
        rows.append("  ".join(f"{n:>2} {w:<9}" for n, w in enumerate(words[start:start + columns], start + 1)).rstrip())
    return rows


def _png(key: RecoveryKey, identity) -> bytes:
    """A printable PNG: the QR code of the words (segno) with the lab's name, its did and the
    numbered words under it (Pillow); the words also ride in a PNG text chunk for reading back."""
    import io

    import segno
    from PIL import Image, ImageDraw, ImageFont
    from PIL.PngImagePlugin import PngInfo

    qr = segno.make(" ".join(key.words), error="m")
    buf = io.BytesIO()
    qr.save(buf, kind="png", scale=8, border=4)
    code = Image.open(io.BytesIO(buf.getvalue())).convert("L")
    font = ImageFont.load_default(size=18)
    small = ImageFont.load_default(size=14)
    head = [(f"fabnode recovery key: {identity.name}", font), (identity.did, small)]
    foot = [(line, small) for line in INSTRUCTIONS]
    columns, rows = 4, WORD_COUNT // 4
    width = max(code.width, columns * 170 + 40, *(int(f.getlength(t)) + 40 for t, f in head + foot))
    height = code.height + 24 * (len(head) + rows + len(foot) + 2) + 20
    page = Image.new("L", (width, height), 255)
    page.paste(code, ((width - code.width) // 2, 0))
    draw = ImageDraw.Draw(page)
    y = code.height
    for line, f in head:
        draw.text((20, y), line, fill=0, font=f)
        y += 24
    y += 24
    for n, word in enumerate(key.words):  # numbered, in fixed columns: easy to copy by hand
        x, row = 20 + (n % columns) * 170, y + (n // columns) * 24
        draw.text((x + 28, row), f"{n + 1}", fill=0, font=font, anchor="ra")
        draw.text((x + 38, row), word, fill=0, font=font)
    y += 24 * (rows + 1)
    for line, f in foot:
        draw.text((20, y), line, fill=0, font=f)
        y += 24
    info = PngInfo()
    info.add_text(PNG_WORDS_KEY, " ".join(key.words))
    out = io.BytesIO()
    page.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def write_backup(path: Path, key: RecoveryKey, identity) -> Path:
    """Write the printable backup (mode 0600, never replacing a file): a PNG with the QR code
    when ``path`` ends in .png, else the words as text."""
    check_backup_path(path)
    data = _png(key, identity) if path.suffix.casefold() == ".png" else backup_text(key, identity).encode("utf-8")
    _write_private(path, data)
    return path


# ------------------------------------------------------------------ reading it back


def _png_words(data: bytes, where: str) -> str:
    """The words a backup PNG carries in its text chunk (PNG chunks read with the standard library:
    no image decoding of an untrusted file)."""
    import struct
    import zlib

    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise FabnodeError(f"{where} is not a PNG file")
    at = 8
    while at + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        if at + 12 + length > len(data):
            break  # a chunk running past the end of the file: truncated or forged, not read
        chunk = data[at + 8:at + 8 + length]
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            name, _, rest = chunk.partition(b"\x00")
            if name == PNG_WORDS_KEY.encode():
                if kind == b"zTXt":
                    rest = zlib.decompressobj().decompress(rest[1:], 4096)
                elif kind == b"iTXt":
                    compressed, rest = rest[0], rest[2:].split(b"\x00", 2)[-1]
                    rest = zlib.decompressobj().decompress(rest, 4096) if compressed else rest
                return rest.decode("utf-8", "replace")
        if kind == b"IEND":
            break
        at += 12 + length
    raise FabnodeError(f"{where} is not a fabnode recovery backup: it carries no recovery words "
                       "(type the words printed on it instead)")


def _names_a_file(text: str) -> bool:
    """Whether ``text`` is the path of an existing file (a path may hold spaces: "/media/My USB/…")."""
    if "\n" in text or len(text) > 4096:
        return False
    try:
        return Path(text).is_file()
    except (OSError, ValueError):
        return False


def read_recovery_key(kept: str | Path, *, commitment: bytes | None = None) -> "Ed25519PrivateKey":
    """The recovery private key from what the operator kept: a path to the backup file (the words
    file or the PNG ``--recovery-file`` wrote, or any text file holding the 24 words), or the words
    themselves as typed. With ``commitment`` (the identity's committed recovery), words of another
    key are refused too. Every failure is one line naming what was wrong (the word, the file)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    text = str(kept)
    path = Path(kept) if isinstance(kept, Path) or _names_a_file(text) or len(text.split()) == 1 else None
    if path is not None and path.is_file():
        size = path.stat().st_size
        if path.suffix.casefold() == ".png":
            if size > MAX_BACKUP_PNG:
                raise FabnodeError(f"{path} is {size:,} bytes: not a recovery backup (at most {MAX_BACKUP_PNG:,})")
            text = _png_words(path.read_bytes(), str(path))
        else:
            if size > MAX_BACKUP_TEXT:
                raise FabnodeError(f"{path} is {size:,} bytes: not a recovery backup (at most {MAX_BACKUP_TEXT:,})")
            text = path.read_bytes().decode("utf-8", "replace")
    elif path is not None:
        raise FabnodeError(f"{path}: no such file (give the backup file, or the 24 words themselves)")
    key = RecoveryKey(seed_of_words(text))
    if commitment is not None and key.commitment != commitment:
        raise FabnodeError("these words are a valid recovery key, but not the one this lab committed to "
                           f"({commitment.hex()[:16]}…)")
    return Ed25519PrivateKey.from_private_bytes(key.seed)


__all__ = ["INSTRUCTIONS", "RECOVERY_COMMITMENT", "RECOVERY_KEY", "committed", "create_recovery_key",
           "kept_recovery_key", "make_recovery_key", "numbered_lines", "read_recovery_key", "recovery_status",
           "write_backup"]
