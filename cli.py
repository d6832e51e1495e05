"""The ``fabnode`` command line: parse, call one function in node/ or storage/, print.

Importing this module must stay cheap: a reading command such as ``fabnode designs`` should answer
in about 0.2 s, most of which is starting Python. So the parser is the standard library's
argparse (click alone costs ~60 ms to import here), described by small decorators next to each
command, and every command imports what it needs inside its body; nothing here imports libp2p.

Exit status: 0 on success, 1 with one line ``error: …`` on stderr, 2 on misuse (argparse), 130
on Ctrl-C and 143 on SIGTERM (one line ``error: interrupted`` / ``error: terminated``; see
interrupts.py). No failure prints a traceback, unless FABNODE_DEBUG is set for an unexpected one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

EXIT_FAILURE = 1


# ------------------------------------------------------------------ a small declarative layer


class _Spec:
    def __init__(self, fn) -> None:
        self.fn = fn
        self.name = fn.__name__
        self.params: list[tuple[str, tuple, dict]] = []


_COMMANDS: dict[str, _Spec] = {}


def _spec(fn) -> _Spec:
    if not hasattr(fn, "_spec"):
        fn._spec = _Spec(fn)
    return fn._spec


def command(name: str | None = None):
    """Register a function as a subcommand; its docstring is its help."""
    def decorate(fn):
        spec = _spec(fn)
        spec.name = name or fn.__name__
        _COMMANDS[spec.name] = spec
        return fn
    return decorate


def option(*decls: str, **kw):
    """An option: flags, and optionally the Python name to bind it to (a decl without dashes)."""
    def decorate(fn):
        _spec(fn).params.insert(0, ("option", decls, kw))
        return fn
    return decorate


def argument(name: str, **kw):
    def decorate(fn):
        _spec(fn).params.insert(0, ("argument", (name,), kw))
        return fn
    return decorate


COMMANDS = _COMMANDS
"""Every subcommand by name (the documentation tests walk it)."""


class Misuse(Exception):
    """A command called with options that do not go together (a check argparse cannot express):
    reported as argparse reports misuse, with the usage line and exit status 2."""


class Context:
    """What each command receives besides its own options: the global --home."""

    def __init__(self, home: Path | None) -> None:
        self.obj = {"home": home}

    @staticmethod
    def exit(code: int) -> None:
        raise SystemExit(code)


def echo(text: str = "", err: bool = False) -> None:
    print(text, file=sys.stderr if err else sys.stdout)


def _add_params(parser: argparse.ArgumentParser, spec: _Spec) -> list[str]:
    dests = []
    for kind, decls, kw in spec.params:
        kw = dict(kw)
        if kind == "argument":
            dest = decls[0]
            if not kw.pop("required", True):
                kw["nargs"] = "?"
            parser.add_argument(dest, **kw)
            dests.append(dest)
            continue
        flags = [d for d in decls if d.startswith("-")]
        named = [d for d in decls if not d.startswith("-")]
        dest = named[0] if named else max(flags, key=len).lstrip("-").replace("-", "_")
        if kw.pop("is_flag", False):
            kw["action"] = "store_true"
        if kw.pop("multiple", False):
            kw["action"] = "append"
            kw.setdefault("default", [])
        if kw.get("default") not in (None, "") and kw.get("action") != "append" and "help" in kw:
            kw["help"] += " (default: %(default)s)"
        parser.add_argument(*flags, dest=dest, **kw)
        dests.append(dest)
    return dests


def _global_options(parser, default) -> None:
    """The options every command takes, before or after its name (``fabnode --home X id`` and
    ``fabnode id --home X``). On the commands their default is SUPPRESS: argparse copies every
    attribute a subcommand's parser sets over the main parser's, so a default there would undo
    a ``--home`` given before the command."""
    parser.add_argument("--home", type=Path, default=default,
                        help="The node's home directory (env FABNODE_HOME; default ~/.local/share/fabnode).")
    parser.add_argument("--version", action=_VersionAction, nargs=0, default=argparse.SUPPRESS,
                        help="Show the version and exit.")


def build_parser() -> argparse.ArgumentParser:
    """The command line's argparse parser, built from the command table (tests/test_docs.py reads it)."""
    parser = argparse.ArgumentParser(
        prog="fabnode", description=_cleandoc(main.__doc__),
        epilog="--home, --version and --json may also come after the command: fabnode id --home DIR --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _global_options(parser, os.environ.get("FABNODE_HOME") or None)
    # --json before the command: a separate name, applied in main() to commands that have --json
    parser.add_argument("--json", dest="_json_first", action="store_true",
                        help="Print JSON (for the commands that can; also accepted after the command).")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")  # none: main() prints the help
    for spec in _COMMANDS.values():
        doc = _cleandoc(spec.fn.__doc__)
        sub = commands.add_parser(spec.name, help=summary(doc) or None, description=doc,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.set_defaults(_spec=spec, _dests=_add_params(sub, spec), _sub=sub)
        _global_options(sub.add_argument_group("global options (also accepted before the command)"),
                        argparse.SUPPRESS)
    return parser


def summary(doc: str) -> str:
    """A command's line in the top-level help: its docstring's first sentence, whole, however the
    docstring wraps it (the first line alone cut some mid-sentence). A sentence ends at a full
    stop followed by a capital letter or the end of the paragraph, so "Should we build this? A
    personal score …" stays one summary."""
    import re

    paragraph = " ".join(doc.split("\n\n")[0].split())
    end = re.search(r"\.(?=\s+[A-Z]|$)", paragraph)
    return paragraph[:end.end()] if end else paragraph


def _cleandoc(doc: str | None) -> str:
    """A docstring without its indentation (inspect.cleandoc, without importing inspect)."""
    import textwrap

    lines = (doc or "").expandtabs().splitlines() or [""]
    return (lines[0].strip() + "\n" + textwrap.dedent("\n".join(lines[1:]))).strip()


class _VersionAction(argparse.Action):
    """--version, looked up only when asked (importlib.metadata costs ~60 ms to import)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import PackageNotFoundError, version

        try:
            echo(f"fabnode {version('fabnode')}")
        except PackageNotFoundError:
            echo("fabnode (version unknown: not installed)")
        parser.exit()


def main(argv: list[str] | None = None) -> int:
    """fabnode: share open-hardware designs between workshops, by content hash.

    Start with 'fabnode init', then 'fabnode add ./my-design'.
    """
    from fabnode import interrupts

    interrupts.install()  # SIGINT and SIGTERM raise where the command is, so cleanup runs
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:  # a bare `fabnode` (or only global options): the full help, exit 0
            parser.print_help()
            return 0
        code = _run_command(args)
    except KeyboardInterrupt as exc:  # while parsing
        echo(f"error: {interrupts.message(exc)}", err=True)
        return interrupts.exit_code(exc)
    finally:
        late = interrupts.uninstall()
    if late is not None and code == 0:
        echo("note: the interrupt came after the changes were committed: they are complete", err=True)
    return code


def _run_command(args) -> int:
    """Run one command; every failure becomes one line on stderr and an exit status."""
    spec: _Spec = args._spec
    if args._json_first:  # `fabnode --json COMMAND`
        if "as_json" not in args._dests:
            args._sub.error(f"'{spec.name}' does not print JSON")  # exits 2, as any misuse
        args.as_json = True
    try:
        try:
            spec.fn(Context(args.home), **{dest: getattr(args, dest) for dest in args._dests})
        finally:
            db = sys.modules.get("fabnode.storage.db")  # not imported by every command
            if db is not None:
                db.close_all()  # SQLite's checkpoint on close runs here, while interrupts are handled
    except Misuse as exc:  # options that only go together: argparse's usage line, exit 2
        args._sub.error(str(exc))
    except SystemExit:  # a command that printed its own verdict (fsck)
        raise
    except BaseException as exc:
        return _report(exc, args.home)
    return 0


def _report(exc: BaseException, home: Path | None) -> int:
    """Print ``exc`` as one ``error: …`` line; return the exit status (1, or 130/143 when
    interrupted)."""
    import sqlite3

    from fabnode import interrupts
    from fabnode.protocol.errors import FabnodeError, first_in_group
    from fabnode.storage.db import is_disk_full

    if isinstance(exc, BaseExceptionGroup):  # trio and libp2p wrap what their tasks raised
        exc = interrupts.find_interrupt(exc) or first_in_group(exc, FabnodeError) or exc
    if isinstance(exc, KeyboardInterrupt):
        echo(f"error: {interrupts.message(exc)}", err=True)
        return interrupts.exit_code(exc)
    if isinstance(exc, FabnodeError):
        line = str(exc)
    elif isinstance(exc, OSError) and is_disk_full(exc):
        line = f"disk full: cannot write {exc.filename or 'a file'}: no space left on its filesystem"
    elif isinstance(exc, OSError):
        line = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    elif isinstance(exc, sqlite3.Error):
        line = _database_failure(exc, home)
    else:
        if os.environ.get("FABNODE_DEBUG"):
            import traceback

            traceback.print_exception(exc)
        line = (f"unexpected {type(exc).__name__}: {exc} (a bug in fabnode: please report it; "
                "FABNODE_DEBUG=1 shows where it happened)")
    echo("error: " + " ".join(line.split()), err=True)
    return EXIT_FAILURE


def _database_failure(exc: Exception, home: Path | None) -> str:
    """An SQLite error met in the middle of a command (opening the file has its own checks)."""
    from fabnode.protocol.errors import DamagedDatabase
    from fabnode.storage.db import is_damage, is_disk_full

    db = _home(Context(home)).db_path
    if is_damage(exc):
        return str(DamagedDatabase(db, str(exc)))
    if is_disk_full(exc):
        return f"disk full: the home's filesystem ({db.parent}) has no room left for the database"
    return f"database {db}: {exc}"


# ------------------------------------------------------------------ output helpers


def _home(ctx: Context, warn: bool = True):
    """The home; ``warn=False`` leaves config.toml warnings to the caller (the daemon's log)."""
    from fabnode.node.home import Home, default_home

    return Home(ctx.obj["home"] or default_home(), warn=warn)


def _print_json(value) -> None:
    import json  # ~20 ms: only for --json output

    echo(json.dumps(value, indent=2, ensure_ascii=False))


class ProgressBar:
    """A one-line bar on stderr, redrawn at most ten times a second."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.done = max(total, 1), label, 0
        self.started = self.drawn = time.monotonic()

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.drawn >= 0.1:
            self.drawn = now
            self._draw(now)

    def _draw(self, now: float, end: str = "") -> None:
        fraction = min(self.done / self.total, 1.0)
        filled = int(fraction * 30)
        elapsed = now - self.started
        eta = f"  {int(elapsed / fraction - elapsed)}s left" if 0 < fraction < 1 and elapsed > 0.5 else ""
        sys.stderr.write(f"\r{self.label}  [{'#' * filled}{'-' * (30 - filled)}]  {int(fraction * 100):3d}%{eta}   {end}")
        sys.stderr.flush()

    def finish(self) -> None:
        self.done = max(self.done, self.total)
        self._draw(time.monotonic(), end="\n")


def _run_with_progress(total: int, label: str, work):
    """Run ``work(progress)`` with a bar when stdout and stderr are terminals; quiet otherwise."""
    if not (sys.stdout.isatty() and sys.stderr.isatty()):
        return work(lambda n: None)
    bar = ProgressBar(total, label)
    try:
        result = work(bar.update)
    except BaseException:
        sys.stderr.write("\n")  # the error goes on a line of its own, not after the bar
        raise
    bar.finish()
    return result


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _asked_language(option_value: str | None, *, env: bool = True) -> str | None:
    """The language asked for (issue 19): --language, else (for titles and READMEs) the LANG
    environment variable (sw_TZ.UTF-8 -> sw-TZ; C and POSIX ask for none). Messages stay English."""
    from fabnode.protocol.translations import normalize_tag, tag_from_env

    if option_value is not None:
        return normalize_tag(option_value)
    return tag_from_env(os.environ.get("LANG")) if env else None


LANGUAGE_HELP = "Show titles in this language (BCP 47, e.g. sw) when a translation exists (default: from LANG)."


def _duration(text: str) -> float:
    """``--timeout``: seconds, or 90s / 10m / 1h."""
    from fabnode.node.service.fetchplan import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class FetchLine:
    """The fetch's progress line on stderr (a terminal only), redrawn at most ten times a second:
    bytes fetched (of the total once known), or, while no peer is linked, when the next try is.
    A note from the daemon (a peer reached only through a relay, and why that is slow; the link
    made direct by hole punching) is printed once, on its own line above the progress line."""

    def __init__(self) -> None:
        self.drawn = 0.0
        self.width = 0
        self.shown = False
        self.notes_printed = 0

    def __call__(self, status: dict) -> None:
        notes = status.get("notes") or []
        for note in notes[self.notes_printed:]:
            sys.stderr.write("\r" + f"note: {note}".ljust(self.width) + "\n")
            self.notes_printed = len(notes)
        now = time.monotonic()
        if now - self.drawn < 0.1:
            return
        self.drawn = now
        got = _human(status.get("bytes", 0))
        total = status.get("total", 0)
        if status.get("state") == "waiting":
            last = " ".join(str(status.get("last") or "no peer answered yet").split())[:100]
            retry = status.get("retry_in_s")
            when = "" if retry is None else f" — retry in {retry} s"  # else the daemon redials its peers
            text = f"fetching  {got}  waiting for a link{when} (last: {last})"
        else:
            of = f" of ~{_human(total)}" if total else ""
            peers = status.get("peers", 0)
            text = f"fetching  {got}{of} from {peers} peer{'s' if peers != 1 else ''}"
        pad = max(self.width - len(text), 0)
        self.width = len(text)
        sys.stderr.write("\r" + text + " " * pad)
        sys.stderr.flush()
        self.shown = True

    def finish(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _print_identity(identity, as_json: bool) -> None:
    if as_json:
        _print_json(identity.as_json())
    else:
        echo(f"name     {identity.name}")
        echo(f"did      {identity.did}")
        echo(f"peer id  {identity.peer_id}")


def _recovery_json(key, kept: bool, written: Path | None) -> dict:
    return {"words": key.words, "did": key.did, "commitment": key.commitment.hex(), "kept": kept,
            "file": str(written) if written else None}


def _show_recovery(key, kept: bool, written: Path | None) -> None:
    """The recovery words, shown once, with what a workshop operator must do with them."""
    from fabnode.node.local.recovery import INSTRUCTIONS, KEPT_HERE, SHOWN_ONCE, numbered_lines

    echo()
    echo("RECOVERY KEY of this lab: 24 words")
    for line in numbered_lines(key.words):
        echo("  " + line)
    echo()
    for line in INSTRUCTIONS:
        echo(line)
    echo(KEPT_HERE if kept else SHOWN_ONCE)
    if written:
        echo(f"backup written to {written}: print it or keep it on a USB stick, away from this computer")


@command()
@option("--name", help="The lab's name, e.g. \"Fab Lab Nairobi\".")
@option("--keep-recovery", "keep_recovery", is_flag=True,
        help="Also keep the recovery key on this node (recovery.key), so 'fabnode key backup' can show it again.")
@option("--recovery-file", "recovery_file", metavar="PATH", type=Path,
        help="Also write the recovery key's printable backup there: a QR code and the words if PATH ends in "
             ".png, else the words as text (e.g. on a USB stick).")
@option("--restore", metavar="DID",
        help="A new machine for this lab, whose author key was lost or stolen: make a home that signs nothing "
             "until 'fabnode key revoke --recovery WORDS' (no new recovery key, no lab record).")
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def init(ctx: Context, name: str | None, keep_recovery: bool, recovery_file: Path | None, restore: str | None,
         as_json: bool) -> None:
    """Create the home directory, the author and node keys, the recovery key, and the database.

    Never overwrites keys: on an existing home it only updates --name. The recovery key is shown
    once as 24 words (write them down): by default this node does not keep it.

    Usage:  fabnode init --name "Fab Lab Nairobi" --recovery-file /media/usb/fablab-recovery.png
            fabnode init --name "Fab Lab Nairobi" --restore did:key:z6Mk…   (after a theft)
    """
    from fabnode.node.home import init_home

    done = init_home(_home(ctx).path, name, keep_recovery=keep_recovery, recovery_file=recovery_file,
                     restore=restore)
    if restore is not None:
        _print_json({**done.identity.as_json(), "restoring": restore}) if as_json else (
            _print_identity(done.identity, False),
            echo(f"restoring {restore}: this home signs nothing until 'fabnode key revoke --recovery WORDS' "
                 "(sync or import the lab's records first)"))
        return
    if as_json:
        recovery = {"recovery": _recovery_json(done.recovery, keep_recovery, recovery_file)} if done.recovery else {}
        _print_json({**done.identity.as_json(), **recovery})  # the recovery key: only when this init made it
        return
    _print_identity(done.identity, False)
    if done.recovery is not None:
        _show_recovery(done.recovery, keep_recovery, recovery_file)
    elif not done.has_recovery:
        echo("note: no recovery key is known for this lab here: create one with 'fabnode key recovery --create' "
             "(if another node of this lab made one, sync or import from it first)", err=True)


@command()
@argument("action", metavar="backup|recovery|rotate|revoke|status",
          choices=["backup", "recovery", "rotate", "revoke", "status"])
@argument("did", metavar="DID", required=False, help="status: the lab whose chain to show (default: this lab).")
@option("--recovery", "recovery_words", metavar="FILE",
        help="revoke: the recovery words: the backup file init wrote (.txt or .png), or '-' to type them.")
@option("--cutoff", metavar="TIME",
        help="revoke: when the key was lost, e.g. \"2026-11-20 14:00\" (this computer's time zone unless one is "
             "given); its records dated after are refused (default: now).")
@option("--new-recovery", "new_recovery", is_flag=True,
        help="revoke: also commit a new recovery key (shown once; --recovery-file writes its backup): for words "
             "someone else may have seen, or a recovery.key kept on the stolen machine.")
@option("--revoked", metavar="KEY", help="revoke: the key to revoke (default: the one signing for the lab at the "
                                         "cut-off, or the forked key of a forked chain).")
@option("--create", is_flag=True, help="recovery: make a recovery key for a lab that has none (a home made "
                                       "before recovery keys), show it once and commit to it.")
@option("--keep-recovery", "keep_recovery", is_flag=True,
        help="recovery --create: also keep the new recovery key on this node.")
@option("--recovery-file", "recovery_file", metavar="PATH", type=Path,
        help="Write the printable backup there (.png: QR code and words; else the words as text).")
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def key(ctx, action, did, recovery_words, cutoff, new_recovery, revoked, create, keep_recovery, recovery_file, as_json):
    """The lab's keys: 'key backup' shows the recovery key again while this node keeps it;
    'key recovery' tells whether the lab committed to one, and 'key recovery --create' makes one
    for a lab that has none. 'key rotate' replaces the author key (someone left with a copy);
    'key revoke --recovery WORDS' takes the identity back with the recovery key when the author
    key is lost or stolen; 'key status [DID]' shows a lab's chain of keys, members and conflicts.

    The recovery key takes the lab's identity back when the author key is lost or stolen. The
    first commitment is final: 'key recovery --create' refuses when one exists.

    Usage:  fabnode key backup --recovery-file /media/usb/fablab-recovery.txt
            fabnode key rotate
            fabnode key revoke --recovery /media/usb/fablab-recovery.txt --cutoff "2026-11-20 14:00"
            fabnode key status
    """
    from fabnode.node.local import recovery
    from fabnode.protocol.errors import FabnodeError

    home = _home(ctx).require()
    chain_flags = {"--recovery": recovery_words, "--cutoff": cutoff, "--revoked": revoked,
                   "--new-recovery": new_recovery or None}
    if action != "revoke" and any(v is not None for v in chain_flags.values()):
        flag = next(f for f, v in chain_flags.items() if v is not None)
        raise FabnodeError(f"{flag} goes with 'key revoke'")
    if did is not None and action != "status":
        raise FabnodeError(f"'key {action}' takes no DID (only 'key status DID' does)")
    if action in ("rotate", "revoke", "status"):
        if create or keep_recovery or (recovery_file and not new_recovery):
            raise FabnodeError(f"'key {action}' takes no --create or --keep-recovery, and --recovery-file only "
                               "with 'key revoke --new-recovery'")
        _key_chain_action(home, action, did, recovery_words, cutoff, revoked, as_json, new_recovery, recovery_file)
        return
    if action == "backup":
        if create or keep_recovery:
            raise FabnodeError("key backup takes only --recovery-file")
        made = recovery.kept_recovery_key(home)
        if recovery_file is not None:
            recovery.write_backup(recovery_file, made, home.identity())
        kept = True
    elif create:
        made = recovery.create_recovery_key(home, keep=keep_recovery, backup_file=recovery_file)
        kept = keep_recovery
    else:
        if keep_recovery or recovery_file:
            raise FabnodeError("--keep-recovery and --recovery-file go with 'key recovery --create' or 'key backup'")
        status = recovery.recovery_status(home)
        if as_json:
            _print_json(status)
        elif status["commitment"] is None:
            echo("no recovery key: create one with 'fabnode key recovery --create'")
        else:
            where = "kept on this node" if status["kept"] else "not on this node (on paper)"
            echo(f"recovery key committed: sha256 {status['commitment']}, {where}")
        return
    if as_json:
        _print_json(_recovery_json(made, kept, recovery_file))
    else:
        _show_recovery(made, kept, recovery_file)


def _cutoff_ms(text: str) -> int:
    """``--cutoff "2026-11-20 14:00"``: ISO 8601, in this computer's time zone unless one is given."""
    from datetime import datetime

    from fabnode.protocol.errors import FabnodeError

    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise FabnodeError(f"--cutoff {text!r}: not a time; write it as \"2026-11-20 14:00\"") from None
    if when.tzinfo is None:
        when = when.astimezone()
    return int(when.timestamp() * 1000)


def _read_words(given: str):
    """``--recovery FILE``, or ``-``: the words typed (hidden on a terminal) or piped on stdin."""
    if given != "-":
        return Path(given) if Path(given).exists() else given
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("recovery words (24, separated by spaces): ")
    return sys.stdin.read(64 * 1024)


def _tell_daemon_key_changed(home) -> str:
    """A running daemon reads the new author key at once: "took the new key", "not running", or
    (a daemon that could not) "restart it (fabnode run)", also said in one line on stderr."""
    from fabnode.node.runtime.control import ask_daemon
    from fabnode.protocol.errors import FabnodeError

    try:
        answered = ask_daemon(home.path, "key_changed", timeout=10)
    except FabnodeError as exc:
        echo(f"note: the running daemon did not take the new key ({exc}): restart it (fabnode run)", err=True)
        return "restart it (fabnode run)"
    return "took the new key" if answered is not None else "not running"


def _key_chain_action(home, action, did, recovery_words, cutoff, revoked, as_json, new_recovery=False,
                      recovery_file=None) -> None:
    from fabnode.node.local import keys
    from fabnode.protocol.errors import FabnodeError

    if action == "rotate":
        done = keys.rotate_key(home)
        done["daemon"] = _tell_daemon_key_changed(home)
        if as_json:
            _print_json(done)
            return
        echo(f"rotated: {done['old']} -> {done['new']}")
        echo(f"the old key is kept in {home.path / done['retired_key_file']}; records it signs from now on "
             "are refused by every node that learns of this rotation")
        if done["daemon"] == "took the new key":
            echo("the running daemon now signs with the new key")
        return
    if action == "revoke":
        if recovery_words is None:
            raise FabnodeError("key revoke needs --recovery FILE (the recovery backup) or --recovery - (type the words)")
        done = keys.revoke_key(home, _read_words(recovery_words),
                               cutoff_ms=_cutoff_ms(cutoff) if cutoff is not None else None, revoked=revoked,
                               new_recovery=new_recovery, backup_file=recovery_file)
        done["daemon"] = _tell_daemon_key_changed(home)
        fresh = done.pop("recovery_key")
        if as_json:
            _print_json({**done, **({"recovery": _recovery_json(fresh, False, recovery_file)} if fresh else {})})
            return
        echo(f"revoked {done['revoked']} from {_when_utc(done['cutoff'])}")
        echo(f"this home's key {done['new']} now speaks for {done['identity']}")
        if done["daemon"] == "took the new key":
            echo("the running daemon now signs with the new key")
        if fresh is not None:
            echo("the old recovery words no longer work: these new ones do")
            _show_recovery(fresh, False, recovery_file)
        return
    status = keys.key_status(home, did)
    if as_json:
        _print_json(status)
        return
    _print_key_status(status)


def _when_utc(ts: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(ts / 1000, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _print_key_status(status: dict) -> None:
    echo(f"identity  {status['identity']}" + ("  (this lab)" if status["this_lab"] else ""))
    if status["restoring"]:
        echo("restoring: this home signs nothing until 'fabnode key revoke --recovery WORDS'")
    for link in status["chain"]:
        how = {"root": "first key", "rotated": "rotated to", "recovered": "recovered to"}[link["how"]]
        since = _when_utc(link["since"]) if link["since"] else "the start"
        line = f"  {link['key']}  {how}, since {since}"
        if link["until"] is not None:
            line += f", until {_when_utc(link['until'])}"
        if link["revoked_cutoff"] is not None:
            line += f", REVOKED: its records dated after {_when_utc(link['revoked_cutoff'])} are refused"
        if link["key"] == status["this_key"]:
            line += "  (this home's key)"
        echo(line)
    if status["conflict"]:
        echo(f"CONFLICT: {status['conflict']}")
    elif status["current_key"]:
        echo(f"signs now  {status['current_key']}")
    recovery = status["recovery"]
    if recovery["committed"] is None:
        echo("recovery  none committed (as far as this node knows)")
    else:
        where = "kept on this node" if recovery["kept_here"] else "not on this node"
        echo(f"recovery  committed (sha256 {recovery['committed'][:16]}…), {where}")
    _print_members(status["members"])


def _print_members(members: list[dict]) -> None:
    if not members:
        echo("members   none")
        return
    echo("members")
    for m in members:
        until = f", until {_when_utc(m['until'])}" if m["until"] is not None else ""
        echo(f"  {m['did']}  {m['role']}, since {_when_utc(m['since'])}{until}")


@command()
@argument("action", metavar="add|remove", choices=["add", "remove"])
@argument("did", metavar="DID", help="The person's key: 'fabnode id' on their own node.")
@option("--role", choices=["maintainer", "member"], help="add: maintainer (may add and remove members) or member.")
@option("--lab", metavar="DID", help="Act for this lab, as one of its maintainers (default: this home's own lab).")
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def member(ctx, action, did, role, lab, as_json):
    """Delegate to a person's own key, or end it: their records count as the lab's (trust,
    maintainership) while the delegation stands; removing stops their future records, keeps
    their past ones. Signed by the lab's key, or by a maintainer's key with --lab.

    Usage:  fabnode member add did:key:z6Mk… --role maintainer
            fabnode member remove did:key:z6Mk…
    """
    from fabnode.node.local.keys import add_member
    from fabnode.protocol.errors import FabnodeError

    home = _home(ctx).require()
    if action == "add" and role is None:
        raise FabnodeError("member add needs --role maintainer or --role member")
    if action == "remove" and role is not None:
        raise FabnodeError("member remove takes no --role")
    done = add_member(home, did, role if action == "add" else "removed", lab=lab)
    if as_json:
        _print_json(done)
    elif action == "add":
        echo(f"{did} is now a {role} of {done['lab']}")
    else:
        echo(f"{did} is no longer a member of {done['lab']}: their records from now on count only for themselves")


@command()
@argument("lab", metavar="DID", required=False, help="The lab (default: this home's own).")
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def members(ctx, lab, as_json):
    """The people who sign for a lab with their own keys: role, since when, until when.

    Usage:  fabnode members
    """
    from fabnode.node.local.keys import key_status

    status = key_status(_home(ctx).require(), lab)
    if as_json:
        _print_json({"lab": status["identity"], "members": status["members"]})
    else:
        _print_members(status["members"])


@command("id")
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def id_(ctx: Context, as_json: bool) -> None:
    """Show this node's identity: the lab's did:key and the node's peer ID."""
    _print_identity(_home(ctx).require().identity(), as_json)


@command()
@argument("path", type=Path)
@option("--hidden", "-H", is_flag=True, help="Also store names starting with '.' (skipped by default).")
@option("--profile", metavar="NAME",
        help="How files are cut: unixfs-v1-2025 (fixed 1 MiB, ipfs-car's CIDs) or rabin-32k (content-defined: "
             "revisions share blocks). Default: config add.profile.")
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def add(ctx: Context, path: Path, hidden: bool, profile: str | None, as_json: bool) -> None:
    """Store a file or a folder; print its CID.

    A folder's contents become the root (the same CID as 'ipfs-car pack DIR'); a single file
    gets its own CID (as 'ipfs-car pack --no-wrap FILE'). Dotfiles and empty folders are left
    out; symlinks inside the folder are refused.

    Usage:  fabnode add ./hand-pump
    """
    from fabnode.node.local.commons import chosen_profile
    from fabnode.node.local.files import add_path, peers_would_refuse, plan_add
    from fabnode.storage.db import room_for

    home = _home(ctx).require()
    plan = plan_add(path, hidden)
    with room_for(home.db_path, f"adding {path.name or path}", plan[0].bytes):
        store = home.open_store()
        profile = chosen_profile(home, store, profile, None)
        result = _run_with_progress(
            plan[0].bytes, "adding", lambda progress: add_path(store, path, now_ms=_now_ms(), include_hidden=hidden,
                                                              progress=progress, plan=plan, profile=profile)
        )
    refused = peers_would_refuse(store, result.cid)
    if refused:
        echo(f"note: other nodes will refuse to fetch or import this: {refused} (compress such files, "
             "e.g. zip them, before adding)", err=True)
    if as_json:
        _print_json(result.as_json())
        return
    echo(result.cid)
    notes = []
    if result.skipped_hidden:
        notes.append(f"skipped {result.skipped_hidden} hidden name(s) (use --hidden to keep them)")
    if result.dropped_empty_dirs:
        notes.append(f"left out {result.dropped_empty_dirs} empty folder(s)")
    if notes:
        echo("note: " + "; ".join(notes), err=True)


def _human(size: int) -> str:
    from fabnode.protocol.errors import human_size

    return human_size(size)


@command()
@argument("cid_path", metavar="CID[/PATH]", required=False)
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def ls(ctx: Context, cid_path: str | None, as_json: bool) -> None:
    """List a directory of a stored DAG; without an argument, list what this node keeps.

    CID may be a files CID, a version CID (that version's files) or a design id (its newest
    canonical version's files).

    Usage:  fabnode ls bafy…/cad
    """
    from fabnode.node.local.files import list_path, list_pins

    store = _home(ctx).open_store()
    if cid_path is None:
        entries = list_pins(store)
    else:
        files = _files(store, cid_path, held=True)
        entries = list_path(store, files.root, files.segments)
    if as_json:
        _print_json([e.as_json() for e in entries])
        return
    for e in entries:
        name = e.name + ("/" if e.kind == "directory" else "")
        size = "-" if e.size is None else _human(e.size)
        echo(f"{e.cid}  {size:>10}  {name}")


@command()
@argument("cid_path", metavar="CID[/PATH]")
@option("--language", metavar="TAG",
        help="For a design id: the file of its newest translation into TAG (BCP 47), else say which "
             "languages exist (default: from LANG, falling back to the design's own files).")
def cat(ctx: Context, cid_path: str, language: str | None) -> None:
    """Write a stored file to standard output, verifying every block.

    CID may be a files CID, a version CID or a design id (its newest canonical version, or its
    newest translation into the language asked for: a README in your language).

    Usage:  fabnode cat DESIGN/README.md --language sw
    """
    from fabnode.node.local.files import cat_path

    store = _home(ctx).open_store()
    from fabnode.node.local.resolve import require_held

    asked = _asked_language(language)
    files = _files(store, cid_path, language=asked, strict_language=language is not None)
    if files.named == "design" and asked is not None:
        files = _untranslated_fallback(store, cid_path, files, strict=language is not None)
    require_held(files, cid_path, store.has)
    out = sys.stdout.buffer
    for piece in cat_path(store, files.root, files.segments):
        out.write(piece)
    out.flush()


@command()
@argument("cid_path", metavar="CID[/PATH]")
@option("-o", "--output", type=Path, help="File or folder to create (must not exist).")
@option("--peer", "peers", metavar="ADDR", multiple=True,
        help="Fetch what is missing from this peer (/ip4/…/tcp/…/p2p/…; repeat: tried in order, each resuming the last).")
@option("--timeout", "timeout_s", metavar="DURATION", type=_duration, default="10m",
        help="Keep trying to fetch for this long (e.g. 90s, 10m, 1h); what arrived is kept.")
@option("--bitswap", is_flag=True,
        help="Ask the --peer nodes over Bitswap (any IPFS node: Kubo, Helia); done anyway when none of them is a fabnode node.")
@option("--language", metavar="TAG",
        help="For a design id: its newest translation into TAG (BCP 47, e.g. sw), else say which languages exist.")
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def get(ctx: Context, cid_path: str, output: Path | None, peers: list[str], timeout_s: float, bitswap: bool,
        language: str | None, as_json: bool) -> None:
    """Write a stored file or folder out, byte for byte, as a new file or folder.

    CID may be a files CID, a version CID (that version's files) or a design id (its newest
    canonical version's files), with a path inside them: DESIGN/cad/frame.stl. The output must
    not exist yet; it defaults to the last path segment or the CID. Everything
    is checked first and written through a temporary folder renamed into place.

    What is not held here is fetched first: from the --peer nodes given, else through the
    running daemon (connected peers first, then providers found in the DHT). Several peers
    send disjoint parts at once; a broken link is retried (1 s, 2 s … 30 s apart) until
    --timeout, and a new attempt (or a new `get`, after Ctrl-C) resumes where the last stopped.
    A --peer that is an IPFS node (Kubo, Helia) rather than a fabnode node is asked over Bitswap.

    With --language, a design id means the design's newest translation into that language
    (its own files if it is written in it); with none, one line lists the languages that exist.

    Usage:  fabnode get bafy… -o hand-pump
    """
    from fabnode.node.local.files import get_path, plan_get
    from fabnode.protocol.cid import cid_str
    from fabnode.protocol.errors import FabnodeError
    from fabnode.storage.gc import end_lease, take_lease

    if bitswap and not peers:
        raise FabnodeError("--bitswap needs --peer ADDR: the IPFS node to ask (/ip4/…/tcp/…/p2p/…)")

    store = _home(ctx).open_store()
    files = _files(store, cid_path, language=_asked_language(language, env=False))
    root, segments = files.root, files.segments
    lease = take_lease(store, root, "get", _now_ms())  # gc keeps the DAG while it is written out
    if output is None and not segments and files.named != "files":
        output = Path(cid_str(files.given))  # named as the user named it, not by the bundle's CID
    cid_path = files.path_text
    if peers or not _held_completely(store, root, segments):
        from fabnode.node.runtime.fetch import fetch

        line = FetchLine() if sys.stdout.isatty() and sys.stderr.isatty() else None
        try:
            fetched = fetch(_home(ctx).require(), cid_path, list(peers), timeout_s, progress=line,
                            bitswap=True if bitswap else None)
        finally:
            if line is not None:
                line.finish()
        if fetched["from"]:
            echo(f"fetched {fetched['fetched_blocks']} block(s) from {_short(fetched['from'])} "
                 f"({fetched['already_held']} already here)", err=True)
        else:
            echo(f"nothing to fetch: all {fetched['already_held']} block(s) already here", err=True)
        if len(fetched["attempts"]) > 1:
            for attempt in fetched["attempts"]:
                echo(f"  {attempt}", err=True)
    out, tree, total = plan_get(store, root, segments, output)
    written = _run_with_progress(total, "writing", lambda progress: get_path(store, out, tree, progress))
    end_lease(store, lease)
    if as_json:
        _print_json({"path": str(written)})
    else:
        echo(str(written))


@command()
@option("--repair", is_flag=True, help="Rebuild damaged indexes when the tables themselves are sound.")
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def fsck(ctx: Context, repair: bool, as_json: bool) -> None:
    """Re-hash every stored block, check every kept DAG is complete, and re-verify every record.

    Exits 1 and names each damaged or missing block and invalid record if the store is not sound,
    or says which part of the database file SQLite cannot read.
    """
    from fabnode.node.local.files import fsck as run_fsck
    from fabnode.protocol.errors import DamagedDatabase, FabnodeError
    from fabnode.storage.db import reading

    advice = "restore it from a backup, or move it aside and run 'fabnode init' for an empty store (the keys stay)"
    try:
        store = _home(ctx).open_store()
    except DamagedDatabase as exc:
        raise FabnodeError(f"{exc.path} is not a readable SQLite database: {exc.reason}; {advice}") from None
    try:
        with reading(store.db, "blocks table"):
            _, total = store.count()
        report = _run_with_progress(total, "checking", lambda progress: run_fsck(store, progress, repair=repair))
    except DamagedDatabase as exc:
        raise FabnodeError(f"{exc.path} is damaged: {exc.reason}; {advice}") from None
    if as_json:
        _print_json(report.as_json())
    else:
        for label, items in (("damaged block ", report.damaged), ("missing block ", report.missing),
                             ("invalid record ", report.invalid_records), ("rebuilt index: ", report.repaired),
                             ("index damage (the data is intact; 'fabnode fsck --repair' rebuilds it): ",
                              report.index_damage),
                             ("block not found through the damaged index, but present: ", report.unindexed),
                             ("database damage: ", report.database_damage),
                             ("pack damage: ", report.pack_damage), ("note: ", report.reclaimable)):
            for item in items:
                echo(label + item)
        echo(f"checked {report.blocks} blocks ({_human(report.bytes)}), {report.pins} pinned root(s) and "
                   f"{report.records} record(s): " + ("the store is sound" if report.ok else "PROBLEMS FOUND"))
    if not report.ok:
        sqlite = (f", {len(report.index_damage)} index problem(s) (run 'fabnode fsck --repair')" if report.index_damage
                  else "") + (f", {len(report.database_damage)} database problem(s)" if report.database_damage else "") \
            + (f", {len(report.pack_damage)} pack problem(s)" if report.pack_damage else "")
        echo(f"error: {len(report.damaged)} damaged and {len(report.missing)} missing block(s), "
                   f"{len(report.invalid_records)} invalid record(s){sqlite}", err=True)
        ctx.exit(EXIT_FAILURE)


@command()
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def du(ctx: Context, as_json: bool) -> None:
    """Show what uses the disk: the store's bytes split into pinned, partial fetches and
    unreferenced (what 'fabnode gc' frees), then per pin kind and per design.

    A block shared by two designs counts in both designs' size, and in neither's "own" bytes
    (what unpinning that design alone would free); the totals count every block once.

    Usage:  fabnode du
    """
    from fabnode.node.local.disk import disk_use

    report = disk_use(_home(ctx).require())
    if as_json:
        _print_json(report.as_json())
        return
    echo(f"store: {_human(report.total_bytes)} in {report.blocks} block(s); database file "
         f"{_human(report.file_bytes)} ({_human(report.free_pages_bytes)} of it free for reuse)")
    echo(f"  pinned           {_human(report.pinned_bytes):>12}")
    echo(f"  partial fetches  {_human(report.partial_bytes):>12}  (kept a week after their last activity)")
    echo(f"  unreferenced     {_human(report.unreferenced_bytes):>12}  ('fabnode gc' frees it)")
    echo("by pin kind:")
    for kind, row in report.kinds.items():
        echo(f"  {kind:<16} {_human(row['bytes']):>12}  {row['pins']} pin(s)")
    if report.designs:
        echo("by design (own: what unpinning it alone would free):")
        for row in report.designs:
            echo(f"  {row['design']}  {_human(row['bytes']):>10}  own {_human(row['own_bytes']):>10}  "
                 f"{row['pinned_bundles']}/{row['bundles']} bundle(s) pinned  {row['title']}")


@command()
@argument("target", metavar="CID|DESIGN")
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def unpin(ctx: Context, target: str, as_json: bool) -> None:
    """Stop keeping a pinned root: a CID that is pinned, a version (its files) or a design
    (every pinned bundle of its versions). No block is deleted: 'fabnode gc' does that, and this
    says how much it would free.

    Usage:  fabnode unpin bafyrei…
    """
    from fabnode.node.local.disk import unpin as unpin_target

    result = unpin_target(_home(ctx).require(), target)
    if as_json:
        _print_json(result.as_json())
        return
    for pin in result.pins:
        echo(f"unpinned {pin['cid']} ({pin['source']})")
    for warning in result.warnings:
        echo(f"warning: {warning}", err=True)
    echo(f"'fabnode gc' would now free {_human(result.would_free_bytes)} ({result.would_free_blocks} block(s))")


@command()
@option("--compact", is_flag=True,
        help="Compact every pack file with a byte no block uses (not only mostly unused ones), then rewrite "
             "the database (VACUUM) so its file shrinks too; needs the daemon stopped.")
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def gc(ctx: Context, compact: bool, as_json: bool) -> None:
    """Delete the blocks no pin reaches, and leftovers of fetches interrupted over a week ago.

    Safe while add, get, import and the daemon run, and if killed: it deletes in batches,
    each one transaction. Pack files mostly unused afterwards are compacted (their live blocks
    copied to a new pack), which gives their space back; blocks a home from before pack files
    still holds in the database are moved into packs. The database file itself shrinks only
    with --compact.

    Usage:  fabnode gc
    """
    from fabnode.node.local.disk import collect

    home = _home(ctx).require()
    store = home.open_store()
    _, total = store.count()
    report = _run_with_progress(total, "collecting", lambda progress: collect(home, compact=compact, progress=progress))
    if as_json:
        _print_json(report.as_json())
        return
    echo(f"freed {_human(report.freed_bytes)} ({report.freed_blocks} block(s)) in the store; kept "
         f"{_human(report.kept_bytes)} ({report.kept_blocks} block(s))"
         + (f", {report.partial_kept} partial fetch(es) among them" if report.partial_kept else ""))
    if report.file_after < report.file_before:
        echo(f"database file: {_human(report.file_before)} -> {_human(report.file_after)}")
    else:
        echo(f"database file: {_human(report.file_after)}, of which {_human(report.free_pages_bytes)} free "
             "for new blocks ('fabnode gc --compact' gives it back to the filesystem)")


# ------------------------------------------------------------------ signed records


def _short(did_or_cid: str) -> str:
    from fabnode.protocol.labs import short_key

    return short_key(did_or_cid)


def _names(home):
    """How this command shows labs (node/local/names.py): local name, declared name marked, key."""
    from fabnode.node.local.names import names_for

    return names_for(home, home.open_stores().records)


def _when(ts: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts / 1000))


@command()
@argument("source", metavar="FOLDER|CID")
@option("-m", "--message", required=True, help="What changed and why.")
@option("--design", "design", metavar="D", help="Add a version to design D (default parents: D's heads).")
@option("--parent", "parents", metavar="V", multiple=True, help="Parent version (repeat); alone: adapt V as a new design.")
@option("--title", help="Title (default: okh.toml name, the previous title, or the folder name).")
@option("--label", help="Version label such as 1.3.0 (default: okh.toml version).")
@option("--license", "license_", metavar="SPDX", help="Licence (default: okh.toml license).")
@option("--hidden", "-H", is_flag=True, help="Also store names starting with '.'.")
@option("--same-files", metavar="REASON",
        help="Publish even though the files equal the design's current head, and say why (kept in the message).")
@option("--translation-of", "translation_of", metavar="VERSION",
        help="Publish a translation of VERSION's documentation (needs --language); it never becomes a head.")
@option("--language", metavar="TAG",
        help="The language the documentation is written in, a BCP 47 tag such as sw or pt-BR "
             "(default: okh.toml documentation-language).")
@option("--force", is_flag=True,
        help="Publish even though okh.toml breaks the OKH-LOSH schema (each problem is then a warning).")
@option("--profile", metavar="NAME",
        help="How files are cut: unixfs-v1-2025 (fixed 1 MiB, ipfs-car's CIDs) or rabin-32k (content-defined: "
             "revisions share blocks). Default: the design's recorded profile, else config add.profile.")
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def publish(ctx, source, message, design, parents, title, label, license_, hidden, same_files, translation_of,
            language, force, profile, as_json):
    """Store a design folder (or take a folder already stored, by CID) and sign a version of it.

    With neither --design nor --parent this starts a new design; --design D adds a version to
    D; --parent V alone starts an adaptation of V. The licence comes from okh.toml or --license
    and must be a valid SPDX expression. okh.toml must follow the official OKH-LOSH schema
    (else the publish is refused, unless --force); fabnode's own advice on it is only warned.
    A CID instead of a folder publishes a bundle already held here (added, imported or fetched);
    it must be a folder with an okh.toml at its top.
    Files identical to the design's current head are refused unless --same-files says why.
    --translation-of V --language TAG publishes a translation of version V into TAG: a version
    of V's design that stands beside V and never becomes a head.

    Usage:  fabnode publish ./hand-pump -m "first design"
            fabnode publish bafybei… -m "as imported from the stick"
    """
    from fabnode.node.local.commons import publish as run_publish

    home = _home(ctx).require()
    path = Path(source)
    folder = path.exists() or os.sep in source or source.startswith(".")
    result = run_publish(home, path if folder else None, bundle=None if folder else source, message=message,
                         design=design, parents=list(parents), title=title, label=label, license_=license_,
                         include_hidden=hidden, same_files=same_files, language=language,
                         translation_of=translation_of, force=force, profile=profile)
    for warning in result.warnings:
        echo(f"warning: {warning}", err=True)
    if as_json:
        _print_json(result.as_json())
    else:
        echo(result.version)


@command()
@argument("target", metavar="DESIGN|VERSION", required=False)
@option("--language", metavar="TAG", help=LANGUAGE_HELP)
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def log(ctx, target, language, as_json):
    """Show a design's history: versions, heads, attestations, lineage.

    Without an argument, the latest versions of all designs. Translations are listed beside
    the versions they translate, marked when the design has moved on since.

    Usage:  fabnode log bafyrei…
    """
    from fabnode.node.local.commons import log as run_log

    home = _home(ctx).require()
    result = run_log(home, target, language=_asked_language(language))
    names = _names(home)
    for v in result["versions"]:
        v.update(names.json_fields(v["author"], "author_"))
    if as_json:
        if result.get("maintainers") is not None:
            result["maintainer_names"] = [names.fields(m)["name"] for m in result["maintainers"]]
        _print_json(result)
        return
    if "design" in result:
        title = result.get("title_translated") or result["title"]
        echo(f"design {result['design']}  {title}")
        if result["languages"]:
            echo("languages " + ", ".join(result["languages"]))
        maint = result["maintainers"]
        echo("maintainers " + (", ".join(names.label(m) for m in maint) if maint is not None else "unknown (first version not here yet)"))
        for up in result["upstream"]:
            echo(f"adapted from {up}")
    stale_lines = {t["version"]: t["stale"] for t in result.get("translations", [])}
    for v in result["versions"]:
        status = ""
        if "translation_of" in v:
            status = f"translation ({v['language']}) of {v['translation_of']}"
        elif v["retracted"]:
            status = "RETRACTED"
        elif "canonical" in v:
            status = "head     " if v["head"] else ("canonical" if v["canonical"] else "proposal ")
        att = _claims_text(v["attestations_by_trust"]) or "no attestations"
        if v["withdrawn_attestations"]:
            att += f"; {v['withdrawn_attestations']} withdrawn by their authors, not counted"
        label = v["label"] or "-"
        echo(f"{v['version']}  {_when(v['ts'])}  {status}  {label:<8} {v['title']}: {v['message']}  [{att}]  "
             f"by {_by(v.get('signed_for', v['author']), v['author_trusted'], names)}{_signer_text(v, names)}")
        for line in _takeback_lines(v, names, "    "):
            echo(line)
        echo(f"    files {v['bundle']}")
        stale = stale_lines.get(v["version"])
        if stale:
            echo(f"    {stale}")
    for a in result.get("adaptations", []):
        echo(f"adapted as {a['design']}  {a['title']}  by {_by(a['author'], a['author_trusted'], names)}")


def _takeback_lines(fields: dict, names, indent: str) -> list[str]:
    """Issue 17: a retraction that counts, and retractions nobody with authority signed."""
    out = []
    if fields.get("retracted"):
        r = fields["retracted"]
        out.append(f"{indent}retracted by {names.label(r['by'])} on {_when(r['ts'])}: {r['reason']}  "
                   f"(do not build; retraction {r['record']})")
    for r in fields.get("retractions_ignored", []):
        out.append(f"{indent}ignored: a retraction by {names.label(r['by'])}, who is not the author or a maintainer: "
                   f"{r['reason']}")
    if fields.get("withdrawn"):
        w = fields["withdrawn"]
        out.append(f"{indent}withdrawn by its author on {_when(w['ts'])}: {w['reason']}  (not counted; "
                   f"withdrawal {w['record']})")
    for w in fields.get("withdrawals_ignored", []):
        out.append(f"{indent}ignored: a withdrawal by {names.label(w['by'])}, who is not the attestation's author: "
                   f"{w['reason']}")
    return out


def _signer_text(fields: dict, names) -> str:
    """Issue 17: who signed for which identity, and a chain's mark, after a "by LAB"."""
    from fabnode.protocol.labs import short_key as short_did

    out = ""
    if fields.get("signed_as") == "member":
        out += f" (signed by member {short_did(fields['author'])} for {names.label(fields['signed_for'])})"
    elif fields.get("signed_as") == "rotated":
        out += f" (signed by key {short_did(fields['author'])}, rotated into {names.label(fields['signed_for'])})"
    mark = fields.get("mark")
    if mark == "revoked-later":
        out += " [signed by a key later revoked]"
    elif mark == "doubtful":
        out += " [doubtful: signed by a revoked key, dated before its cut-off but received after the revocation]"
    elif mark == "conflict":
        out += f" [conflict, trusted nowhere: {fields['mark_reason']}]"
    elif mark == "refused":
        out += f" [refused: {fields['mark_reason']}]"
    return out


def _by(did: str, trusted: bool, names) -> str:
    """A lab in a line of text, marked when this node does not trust its key."""
    return names.label(did) if trusted else f"{names.label(did)} (not trusted)"


def _claims_text(by_trust: dict) -> str:
    """'built/passed x2 by trusted keys, x30 by untrusted keys; …': the two never summed."""
    parts = []
    for key in sorted(by_trust["trusted"].keys() | by_trust["untrusted"].keys()):
        counts = []
        if by_trust["trusted"].get(key):
            counts.append(f"x{by_trust['trusted'][key]} by trusted keys")
        if by_trust["untrusted"].get(key):
            counts.append(f"x{by_trust['untrusted'][key]} by untrusted keys")
        parts.append(f"{key} " + ", ".join(counts))
    return "; ".join(parts)


@command()
@argument("cid")
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(ctx, cid, as_json):
    """Decode a stored record and check it again; says why if it is not valid.

    Usage:  fabnode show bafyrei…
    """
    from fabnode.node.local.commons import show as run_show

    home = _home(ctx).require()
    result = run_show(home, cid)
    names = _names(home)
    result.update(names.json_fields(result["author"], "author_"))
    if as_json:
        _print_json(result)
        return
    short_did = names.label

    echo(f"{result['type']} {result['cid']}")
    trusted = "trusted" if result["trusted"] else "not trusted"
    echo(f"author  {result['author']} ({trusted} by this node)")
    if result["author_name"] is not None:
        echo(f"lab     {names.label(result['author'])}")
    if result.get("signed_for") or result.get("mark"):
        echo(f"signer {_signer_text(result, names)}")
    echo(f"time    {_when(result['ts'])}" if isinstance(result["ts"], int) else f"time    {result['ts']!r}")
    import json

    for key, value in (result["body"] or {}).items():
        line = f"{key:<12} {json.dumps(value, ensure_ascii=False)}"
        if key == "lab" and isinstance(result["author"], str):  # a claimed name, never without its key
            line += f" ({short_did(result['author'])}, {trusted})"
        echo(line)
    for line in _takeback_lines(result, names, ""):
        echo(line)
    if result.get("counts") is not None or "why" in result:
        echo(f"{'counts' if result['counts'] else 'pending' if result['counts'] is None else 'IGNORED'}  {result['why']}")
    echo("valid" if result["valid"] else f"NOT VALID: {result['reason']}")


def _print_designs(rows, as_json: bool) -> None:
    if as_json:
        _print_json(rows)
        return
    for d in rows:
        echo(f"{d['design']}  {d['versions']:>3} version(s)  {d['license']:<16} {d['title']}")


@command()
@option("--limit", default=100, help="How many, newest first.")
@option("--language", metavar="TAG", help=LANGUAGE_HELP)
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def designs(ctx, limit, language, as_json):
    """List the designs this node knows, most recently changed first."""
    from fabnode.node.local.commons import list_designs

    _print_designs(list_designs(_home(ctx).open_stores().records, limit, language=_asked_language(language)), as_json)


@command()
@argument("text")
@option("--limit", default=50, help="How many results.")
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def search(ctx, text, limit, as_json):
    """Find designs by title, manifest (name, function, keywords) and version messages.

    Every version and translation of a design is searched; accents and case do not matter;
    words match first, then parts of words (and text without spaces, as in Chinese).

    Usage:  fabnode search "water pump"
    """
    from fabnode.node.local.commons import search_designs

    rows = search_designs(_home(ctx).open_stores().records, text, limit)
    if not rows and not as_json:
        echo(f"no design known here matches {text!r} (try other words; 'fabnode designs' lists them all)")
    _print_designs(rows, as_json)


@command()
@argument("version", required=False)
@option("--result", choices=["passed", "warned", "failed"], help="How it went (required unless --withdraw).")
@option("--predicate", choices=["built", "tested", "reviewed", "defect"], default="built",
 help="What the lab did.")
@option("-m", "--message", "notes", default="", help="Notes: what was built, how, what happened.")
@option("--lab", help="Where (default: this lab's name).")
@option("--test", "tests", multiple=True, help="Name of a test performed (repeat).")
@option("--evidence", type=Path, multiple=True, help="Photo, log or measurement to store and link (repeat).")
@option("--withdraw", metavar="ATTESTATION", help="Withdraw this lab's attestation instead (with --reason).")
@option("--reason", help="Why it is withdrawn (with --withdraw; at most 500 characters).")
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def attest(ctx, version, result, predicate, notes, lab, tests, evidence, withdraw, reason, as_json):
    """Sign a statement that this lab built, tested or reviewed a version, and how it went;
    or withdraw one this lab signed (it stays listed, marked withdrawn, and no longer counts).

    Usage:  fabnode attest bafyrei… --result passed -m "built with 32 mm PVC" --evidence photo.jpg
            fabnode attest --withdraw bafyrei… --reason "we built it from the wrong files"
    """
    if withdraw is not None:
        from fabnode.node.local.commons import withdraw as run_withdraw

        if version is not None or result is not None or evidence or tests or notes:
            raise Misuse("--withdraw ATTESTATION takes only --reason: no VERSION, --result, -m, --test or --evidence")
        cid = run_withdraw(_home(ctx).require(), withdraw, reason=reason)
        _print_json({"withdrawal": cid, "attestation": withdraw}) if as_json else echo(cid)
        return
    if reason is not None:
        raise Misuse("--reason goes with --withdraw ATTESTATION (or with fabnode retract)")
    if version is None or result is None:
        raise Misuse(f"the following arguments are required: {'version' if version is None else '--result'}")
    from fabnode.node.local.commons import attest as run_attest

    cid = run_attest(_home(ctx).require(), version, result=result, predicate=predicate, notes=notes, lab=lab,
                     tests=list(tests), evidence=list(evidence))
    _print_json({"attestation": cid}) if as_json else echo(cid)


@command()
@argument("version")
@option("--reason", help="Why (required; at most 500 characters): what is wrong, what to build instead.")
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def retract(ctx, version, reason, as_json):
    """Retract a version: by its author or a maintainer of its design. It stays in the lineage,
    shown struck through with the reason, and is never a head again (copies others hold stay).

    Usage:  fabnode retract bafyrei… --reason "the pump housing cracks at 2 bar"
    """
    from fabnode.node.local.commons import retract as run_retract

    cid = run_retract(_home(ctx).require(), version, reason=reason)
    _print_json({"retraction": cid, "version": version}) if as_json else echo(cid)


@command()
@argument("design", metavar="DESIGN", required=False)
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def follow(ctx: Context, design: str | None, as_json: bool) -> None:
    """Follow a design: the running node then fetches its versions' files on its own (within
    the seeding budget of config.toml). Without DESIGN, list the designs followed.

    Usage:  fabnode follow bafyrei…
    """
    from fabnode.node.local.commons import follow as follow_design

    rows = follow_design(_home(ctx).require(), design)
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        echo(f"{row['design']}  {row['title']}  ({row['versions']} version(s) known)")


@command()
@argument("design", metavar="DESIGN")
def unfollow(ctx: Context, design: str) -> None:
    """Stop following a design (what was fetched stays; nothing more is fetched on its own).

    Usage:  fabnode unfollow bafyrei…
    """
    from fabnode.node.local.commons import unfollow as unfollow_design
    from fabnode.protocol.errors import FabnodeError

    if not unfollow_design(_home(ctx).require(), design):
        raise FabnodeError(f"{design} was not followed")
    echo(f"no longer following {design}")


@command()
@argument("did")
@option("--distrust", is_flag=True, help="Say this key is not to be trusted.")
@option("-m", "--message", "note", default="", help="Why.")
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def vouch(ctx, did, distrust, note, as_json):
    """Sign that this lab trusts (or distrusts) another lab's key.

    Usage:  fabnode vouch did:key:z6Mk… -m "we built their pump together"
    """
    from fabnode.node.local.commons import vouch as run_vouch

    home = _home(ctx).require()
    cid = run_vouch(home, did, distrust=distrust, note=note)
    if as_json:
        _print_json({"vouch": cid, "subject": did, **_names(home).json_fields(did, "subject_")})
    else:
        echo(cid)
        echo(f"{'distrusted' if distrust else 'vouched for'} {_names(home).label(did)}", err=True)


@command()
@argument("key", metavar="DID|PEER_ID", required=False)
@argument("name", metavar="NAME", required=False)
@option("--clear", is_flag=True, help="Remove this node's local name for the key.")
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def name(ctx, key, name, clear, as_json):
    """Call a lab (its did:key) or a node (its peer ID) by a name of your own; local only, never sent.

    Without arguments, list every name known here: local ones and those labs declare about
    themselves (shown "(unverified)" until you set your own).

    Usage:  fabnode name did:key:z6Mk… "Fab Lab Nairobi"
    """
    from fabnode.node.local.names import names as list_names, set_name
    from fabnode.protocol.errors import FabnodeError

    home = _home(ctx).require()
    if key is None:
        rows = list_names(home)
        if as_json:
            _print_json(rows)
            return
        if not rows:
            echo("no names yet")
        for row in rows:
            declared = f"  declares “{row['declared']}”" if row["declared"] and row["local"] else ""
            echo(f"{row['key']}  {row['shown']}{declared}")
        return
    if clear == (name is not None):
        raise FabnodeError("give either a NAME or --clear")
    row = set_name(home, key, None if clear else name)
    if as_json:
        _print_json(row)
    else:
        echo(f"{row['key']} is now shown as {row['shown']}")


def _yes_no(text: str) -> bool:
    word = text.strip().casefold()
    if word in ("yes", "y", "true", "1", "on"):
        return True
    if word in ("no", "n", "false", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r}: write yes or no")


def _lat_lon(text: str) -> tuple[float, float]:
    try:
        lat, lon = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write LAT,LON in degrees, e.g. -0.30,36.07") from None
    return lat, lon


def _print_profile(p: dict) -> None:
    """A lab profile as lines of ``field  value`` (``fabnode lab``, ``fabnode lab set``)."""
    echo(f"lab        {p['shown']}  ({p['author']})")
    if p.get("place"):
        echo(f"place      {p['place']}")
    if p.get("lat") is not None:
        echo(f"location   {p['lat']:.4f}, {p['lon']:.4f}  (rounded to {p['precision_km']:g} km before signing)")
    else:
        echo("location   not shared")
    if p.get("bioregion"):
        echo(f"bioregion  {p['bioregion']}")
    procs = [f"{pid}" for pid in p["processes"]] + [f"{t} (unknown process)" for t in p["unknown_processes"]]
    echo("processes  " + (", ".join(procs) if procs else "none listed"))
    for m in p["machines"]:
        echo("machine    " + "; ".join(x for x in (m["kind"], m.get("size"), m.get("notes")) if x))
    if p["materials"]:
        echo("materials  " + ", ".join(p["materials"]))
    if p["languages"]:
        echo("languages  " + ", ".join(p["languages"]))
    if p.get("contact"):
        echo(f"contact    {p['contact']}")
    echo("requests   " + ("taking requests" if p["taking_requests"] else "not taking requests"))
    echo(f"nodes      {', '.join(p['nodes']) or 'none'}")


@command()
@argument("action", metavar="set", required=False, choices=["set"])
@option("--name", help="The lab's name (also written to config.toml).")
@option("--place", help="Where the lab is, as free text; a town's name alone is looked up offline "
                        "(\"Nakuru\", or \"Nakuru, KE\" when several places share it).")
@option("--lat", type=float, help="Latitude in degrees (with --lon; rounded to --precision-km before signing).")
@option("--lon", type=float, help="Longitude in degrees.")
@option("--precision-km", "precision_km", type=float,
        help="How precisely to share the coordinates, 0.1 to 500 km (default 10).")
@option("--bioregion", help="The bioregion the lab works in, e.g. \"Lake Nakuru basin\".")
@option("--process", "processes", metavar="PROCESS", multiple=True,
        help="A process the lab can do (repeat): laser-cutting, 3d-printing-fdm, welding… ('fabnode labs --processes' lists them).")
@option("--machine", "machines", metavar="\"KIND[; SIZE[; NOTES]]\"", multiple=True,
        help="A machine (repeat), e.g. \"laser cutter; 600x400 mm; CO2 60 W\".")
@option("--material", "materials", metavar="MATERIAL", multiple=True, help="A material usually in stock (repeat).")
@option("--language", "languages", metavar="TAG", multiple=True, help="A language the lab works in (BCP 47; repeat).")
@option("--contact", help="How to reach the lab (one line, shared with every peer).")
@option("--taking-requests", "taking_requests", metavar="yes|no", type=_yes_no,
        help="Whether the lab currently takes requests from others.")
@option("--clear", "clear", metavar="FIELD", multiple=True,
        help="Remove a field: place, coordinates, bioregion, processes, machines, materials, languages, contact (repeat).")
@option("--from-json", "from_json", metavar="FILE",
        help="Read the options from a JSON object (keys as the options: place, lat, processes…; '-' for stdin).")
@option("--yes", "-y", "yes", is_flag=True, help="Accept the place found for --place without asking.")
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def lab(ctx, action, name, place, lat, lon, precision_km, bioregion, processes, machines, materials, languages,
        contact, taking_requests, clear, from_json, yes, as_json):
    """Show this lab's profile, or publish a new one with 'lab set'.

    Each option of 'lab set' replaces that field of the current profile; the others are kept.
    List options repeat. Coordinates are rounded to --precision-km (default 10 km) before the
    profile is signed: the precise spot never leaves this machine.

    Usage:  fabnode lab set --place "Nakuru" --process laser-cutting --process welding --taking-requests yes
    """
    from fabnode.node.local.labs import my_profile, set_profile
    from fabnode.protocol.errors import FabnodeError

    home = _home(ctx).require()
    given = dict(name=name, place=place, lat=lat, lon=lon, precision_km=precision_km, bioregion=bioregion,
                 processes=processes, machines=machines, materials=materials, languages=languages,
                 contact=contact, taking_requests=taking_requests, clear=clear)
    if action is None:
        if from_json or any(v not in (None, [], ()) for v in given.values()):
            raise FabnodeError("profile options need 'set': fabnode lab set --place …")
        profile = my_profile(home)
        _print_json(profile) if as_json else _print_profile(profile)
        return
    if from_json:
        given = _merge_json_options(given, from_json)
    elif all(v in (None, [], ()) for v in given.values()):
        raise FabnodeError("lab set: nothing to change (give --place, --process, … or --clear FIELD; "
                           "'fabnode lab set --help' lists them)")

    def confirm(found) -> bool:
        if not yes and not sys.stdin.isatty():
            raise FabnodeError(f"found the place {found.describe()}: confirm it with --yes, or give --lat and --lon")
        echo(f"place: {found.describe()}", err=True)
        return yes or input("share this place, rounded? [y/N] ").strip().casefold() in ("y", "yes")

    profile = set_profile(home, **given, confirm_place=confirm, warn=lambda line: echo(line, err=True))
    if as_json:
        _print_json(profile)
    else:
        _print_profile(profile)


def _merge_json_options(given: dict, source: str) -> dict:
    """``lab set --from-json``: a JSON object whose keys are the options (lists for repeatable ones)."""
    import json

    from fabnode.protocol.errors import FabnodeError

    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        data = json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FabnodeError(f"--from-json {source}: not a readable JSON object ({exc})") from None
    if not isinstance(data, dict):
        raise FabnodeError(f"--from-json {source}: the JSON must be an object of options")
    keys = {k.replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(keys) - set(given))
    if unknown:
        raise FabnodeError(f"--from-json {source}: unknown option(s) {', '.join(unknown)} (known: {', '.join(given)})")
    merged = dict(given)
    for key, value in keys.items():
        if key in ("processes", "machines", "materials", "languages", "clear"):
            if not isinstance(value, list) or not all(isinstance(v, (str, dict)) for v in value):
                raise FabnodeError(f"--from-json {source}: {key} must be a list")
            merged[key] = list(given[key]) + value
        elif key == "taking_requests" and isinstance(value, str):
            merged[key] = _yes_no(value)
        else:
            merged[key] = value
    return merged


@command()
@option("--near", type=_lat_lon, metavar="LAT,LON",
        help="Nearest first from this point (south or west: --near=-1.28,36.82).")
@option("--near-me", "near_me", is_flag=True, help="Nearest first from this lab's own (rounded) coordinates.")
@option("--radius", "radius_km", type=float, metavar="KM", help="Only labs this close (with --near or --near-me).")
@option("--process", metavar="PROCESS", help="Only labs that list this process (any spelling of it).")
@option("--processes", "list_processes", is_flag=True, help="List the process vocabulary instead.")
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def labs(ctx, near, near_me, radius_km, process, list_processes, as_json):
    """List the labs this node knows, with distance, processes and trust.

    Names are shown as everywhere: your own name for a key, else the name the lab declares
    "(unverified)"; a name that several keys declare is flagged, and labs whose keys your trust
    does not reach are marked "(not trusted)".

    Usage:  fabnode labs --near-me --radius 100 --process welding
    """
    if list_processes:
        from fabnode.protocol.processes import PROCESSES

        rows = [{"id": p.id, "label": p.label, "okh": p.okh, "tsdc": p.tsdc, "synonyms": list(p.synonyms)}
                for p in PROCESSES.values()]
        if as_json:
            _print_json(rows)
        else:
            for r in rows:
                echo(f"{r['id']:<22} {r['label']}" + (f"  [TsDC {r['tsdc']}]" if r["tsdc"] else ""))
        return
    from fabnode.node.local.labs import labs as list_labs

    result = list_labs(_home(ctx).require(), near=near, near_me=near_me, radius_km=radius_km, process=process)
    if as_json:
        _print_json(result)
        return
    if not result["labs"]:
        echo("no labs" + (" within reach" if result["near"] else "") + (f" that do {result['process']}" if process else ""))
    for lab_ in result["labs"]:
        shown = lab_["shown"]
        if lab_["name_clash"]:
            shown += f" (name also declared by {lab_['name_clash']} other lab{'s' if lab_['name_clash'] > 1 else ''})"
        if not lab_["trusted"]:
            shown += " (not trusted)"
        where = lab_.get("place") or "place not shared"
        if lab_["distance_km"] is not None:
            where += f", {lab_['distance_km']:.0f} km"
        elif result["near"] is None and lab_["lat"] is None:
            where += ", no coordinates"
        procs = ", ".join([*lab_["processes"], *(f"{t} (unknown process)" for t in lab_["unknown_processes"])])
        requests = "taking requests" if lab_["taking_requests"] else "not taking requests"
        echo(f"{shown}  {where}  {procs or 'no processes listed'}  {requests}  {lab_['author']}")


@command("trust")
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def trust_(ctx, as_json):
    """List whom this lab vouched for, and every key its trust reaches, with the path."""
    from fabnode.node.local.commons import trust as run_trust

    home = _home(ctx).require()
    result = run_trust(home)
    names = _names(home)
    for v in result["vouches"]:
        v.update(names.json_fields(v["subject"], "subject_"))
    for t in result["trusted"]:
        t.update(names.json_fields(t["did"]))
    if as_json:
        _print_json(result)
        return
    echo(f"me  {result['me']}  {names.label(result['me'])}")
    for v in result["vouches"]:
        into = f" (rotated into {names.label(v['subject_identity'])})" if "subject_identity" in v else ""
        echo(f"you vouched: {v['trust']:<10} {v['subject']}  {names.label(v['subject'])}{into}")
    for t in result["trusted"][1:]:
        path = " → ".join(names.label(d) for d in t["path"][1:])
        now = f"  now signing with key {t['current_key']} ({len(t['keys'])} keys)" if "current_key" in t else ""
        echo(f"{t['weight']:.3f}  {t['did']}  via you → {path}{now}")
    for c in result["conflicts"]:
        echo(f"trusted nowhere  {c['identity']}  {names.label(c['identity'])}: {c['reason']}")


@command()
@argument("target", metavar="VERSION|DESIGN")
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def reputation(ctx, target, as_json):
    """Should we build this? A personal score from the attestations of labs we trust, with reasons.

    For a design, its newest canonical head is judged.

    Usage:  fabnode reputation bafyrei…
    """
    from fabnode.node.local.commons import reputation as run_reputation

    home = _home(ctx).require()
    result = run_reputation(home, target)
    if as_json:
        _print_json(result)
        return
    echo(f"{result['version']}: {result['verdict']} (score {result['value']:+.2f})")
    for line in _takeback_lines({"retracted": result["retracted"]}, _names(home), "  "):
        echo(line)
    for line in result["explanation"]:
        echo(f"  {line}")


def _files(store, cid_path: str, *, held: bool = False, language: str | None = None, strict_language: bool = True):
    """The files ``CID[/PATH]`` names: a design's newest head (or translation into ``language``),
    a version's bundle, or itself; ``held``: they must be here (``ls``, ``cat``), else one line
    says how to get them."""
    from fabnode.node.local.resolve import require_held, resolve_files
    from fabnode.storage import Stores

    files = resolve_files(Stores.of(store).records, cid_path, held=store.has, language=language,
                          strict_language=strict_language)
    if held:
        require_held(files, cid_path, store.has)
    return files


def _untranslated_fallback(store, cid_path: str, files, *, strict: bool):
    """A translation without the path asked for (it translates the documentation, not every
    file): the design's own file, said on standard error. A translation not held here: said
    so when --language demanded it, else (a LANG preference) the design's own files quietly."""
    from fabnode.protocol.errors import FabnodeError
    from fabnode.protocol.unixfs import resolve

    if not store.has(files.root):
        return files if strict else _files(store, cid_path)
    try:
        resolve(store.get, files.root, files.segments)
        return files
    except FabnodeError:
        own = _files(store, cid_path)
        if own.root == files.root:
            return files
        echo(f"note: the translation has no {'/'.join(files.segments)}: showing the design's own", err=True)
        return own


def _held_completely(store, root: bytes, segments: list[str]) -> bool:
    from fabnode.node.runtime.fetch import missing_here

    return missing_here(store, root, segments) is None


# ------------------------------------------------------------------ the daemon


@command()
@option("--listen", "listen", metavar="ADDR", multiple=True,
        help="Multiaddr to listen on (repeat; default: config 'listen', else /ip4/0.0.0.0/tcp/4001).")
@option("--bootstrap", "bootstrap", metavar="ADDR", multiple=True,
        help="Peer to dial and keep in touch with (repeat; added to config 'bootstrap').")
@option("--http", metavar="HOST:PORT",
        help="Web interface address; a port alone means 127.0.0.1:PORT; 'off' for none "
             "(default: config 'http', else 127.0.0.1:8080).")
@option("--no-mdns", is_flag=True, help="Do not look for peers on the LAN by multicast DNS.")
@option("--announce", "announce", metavar="ADDR", multiple=True,
        help="Tell peers to reach this node at ADDR instead of its listen addresses (a port forward, a "
             "tunnel; repeat).")
def run(ctx: Context, listen: list[str], bootstrap: list[str], http: str | None, no_mdns: bool,
        announce: list[str]) -> None:
    """Run the node until stopped (Ctrl-C or SIGTERM): find peers, announce and receive records,
    serve this node's designs. Prints one line per event.

    Usage:  fabnode run --listen /ip4/0.0.0.0/tcp/4001
    """
    from fabnode.node.config import daemon_options
    from fabnode.node.runtime.daemon import run_daemon

    home = _home(ctx, warn=False).require()
    run_daemon(home, daemon_options(home, listen=list(listen), bootstrap=list(bootstrap), http=http,
                                    mdns=False if no_mdns else None, announce=list(announce)))


@command()
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def peers(ctx: Context, as_json: bool) -> None:
    """Peers this node knows: connected now (over which address) or remembered for redialling.

    Usage:  fabnode peers
    """
    from fabnode.node.runtime.status import peers as list_peers

    home = _home(ctx).require()
    rows = list_peers(home)
    names = _names(home)
    for row in rows:
        row.update({**names.json_fields(row["peer_id"]), "lab": names.fields(row["peer_id"]).get("lab")})
    if as_json:
        _print_json(rows)
        return
    if not rows:
        echo("no peers yet")
    for row in rows:
        state = f"cut off for {row['cut_off']['for_s']} s more: {row['cut_off']['reason']}" if row.get("cut_off") else \
            f"connected via {row['address']}" if row["connected"] else (
            f"not connected ({row['failures']} failed dials, next in {row['next_dial_in_s']} s)"
            if row["failures"] else "not connected")
        echo(f"{names.label(row['peer_id'])}  {row['peer_id']}  {row['source']:<9}  {state}")


@command()
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(ctx: Context, as_json: bool) -> None:
    """Whether the daemon runs, its addresses, peers, transfers and what waits in the outbox.

    Usage:  fabnode status
    """
    from fabnode.node.runtime.status import status as node_status

    home = _home(ctx).require()
    info = node_status(home)
    names = _names(home)
    for sync in info.get("last_syncs", []):
        sync.update(names.json_fields(sync["peer"], "peer_"))
    if as_json:
        _print_json(info)
        return
    echo(f"node      {info['name']}  {info['peer_id']}")
    if not info["running"]:
        echo("daemon    not running (start it with 'fabnode run')")
    else:
        echo(f"daemon    running (pid {info['pid']}, up {info['uptime_s']} s)")
        for addr in info["addrs"]:
            echo(f"address   {addr}")
        echo(f"peers     {info['connected']} connected, {info['known_peers']} known")
        _print_nat(info.get("nat"), names)
        for t in info["fetching"]:
            echo(f"fetching  {t['root']} from {names.label(t['from'])}: {t['blocks']} blocks, {t['bytes']} bytes")
        for t in info["serving"]:
            echo(f"serving   {t['root']} to {names.label(t['peer'])}: {t['sent_bytes']} bytes")
        swap = info.get("bitswap") or {}
        if swap.get("served_blocks") or swap.get("dropped_blocks") or swap.get("dropped_wants"):
            echo(f"bitswap   {swap['served_blocks']} block(s), {_human(swap['served_bytes'])} served to IPFS peers; "
                 f"{swap['peers_asking']} asking now; refused {swap['dropped_blocks']} unasked-for block(s), "
                 f"{swap['dropped_wants']} want(s) over the limit")
        seeding = info["seeding"]
        echo(f"seeding   {seeding['wanted']} bundle(s) wanted, {seeding['used_bytes'] >> 20} of "
             f"{seeding['budget_bytes'] >> 20} MiB used")
        _print_link_status(info)
        for sync in info["last_syncs"]:
            if sync.get("error"):
                echo(f"sync      {names.label(sync['peer'])}: failed: {sync['error']}")
            else:
                echo(f"sync      {names.label(sync['peer'])}: sent {sync['sent']}, received {sync['new']} new record(s), "
                     f"{sync['round_trips']} round trip(s), {sync['bytes_out'] + sync['bytes_in']} bytes")
    echo(f"records   {info['records']} ({info['outbox']} waiting to be announced), digest {info['records_digest']}")


def _print_nat(nat: dict | None, names) -> None:
    """How the node stands behind its NAT, and how each peer is reached (issue 21)."""
    if not nat:
        return
    if nat["reachability"] == "reachable":
        echo(f"reach     reachable at {', '.join(nat['addrs'])}")
    elif nat["reachability"] == "behind NAT":
        through = ", ".join(nat["relays"]) if nat["relays"] else "no relay yet"
        echo(f"reach     behind NAT: reachable through relay {through}")
    else:
        echo("reach     not known yet (no peer has tried to dial this node back)")
    relay = nat.get("relay")
    if relay is None:
        echo("relay     off (relay = false)")
    elif relay["offering"]:
        echo(f"relay     offering: {relay['reservations']} reservation(s), {relay['circuits']} circuit(s), "
             f"{relay['relayed_bytes']} bytes relayed, {relay['refused']} request(s) refused")
    for peer, how in sorted(nat.get("links", {}).items()):
        echo(f"link      {names.label(peer)} {peer}: {how}")


def _print_link_status(info: dict) -> None:
    """What waits to go out or come in, and what went out since the start (issue 14)."""
    waiting, sent = info.get("waiting") or {}, info.get("sent") or {}
    if waiting:
        queued = ", ".join(f"{n} bytes of {what}" for what, n in waiting.get("upload_bytes", {}).items())
        echo(f"waiting   {waiting['outbox']} record(s) in the outbox, {waiting['syncs_running']} sync(s) running, "
             f"{waiting['syncs_waiting']} waiting" + (f"; upload queue: {queued}" if queued else ""))
        for b in waiting.get("bundles", []):
            why = "followed or own" if b["first"] else "trusted author"
            echo(f"wanted    {b['bundle']} ({why}), {b['held_bytes']} bytes here so far")
    if sent:
        cap = sent.get("upload_bytes_per_second") or 0
        by = ", ".join(f"{proto} {n}" for proto, n in sorted(sent.get("sent_bytes", {}).items())) or "nothing"
        records = sent.get("records", {})
        echo(f"sent      bytes: {by} (upload cap {f'{cap} B/s' if cap else 'none'}); records: "
             f"{records.get('sync', 0)} by sync, {records.get('gossip', 0)} by gossip")


# ------------------------------------------------------------------ sneakernet


@command()
@argument("out", type=Path)
@option("--design", "designs", metavar="D", multiple=True, help="Only this design (repeat): its versions, attestations and bundles.")
@option("--for", "for_have", type=Path, metavar="HAVE",
              help="Only what the lab that wrote this have file lacks.")
@option("--records-only", is_flag=True, help="Records only: a few kilobytes of news, no files.")
@option("--bundle", metavar="CID", help="One bundle as a plain CAR that any IPFS tool can unpack.")
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def export(ctx, out, designs, for_have, records_only, bundle, as_json):
    """Write designs, versions and attestations to a CAR file for a USB stick.

    Usage:  fabnode export /media/stick/lab-a.car --for /media/stick/lab-b.have
    """
    from fabnode.node.local.sneakernet import export as run_export, export_size_estimate
    from fabnode.protocol.errors import FabnodeError

    home = _home(ctx).require()
    if os.path.lexists(out):
        raise FabnodeError(f"{out} already exists: choose another name")
    summary = _run_with_progress(export_size_estimate(home), "exporting", lambda progress: run_export(
        home, out, designs=list(designs), records_only=records_only, bundle=bundle, for_have=for_have,
        progress=progress))
    if as_json:
        _print_json(summary.as_json())
    else:
        echo(f"wrote {out}: {summary.records} record(s), {summary.bundles} bundle(s), {summary.blocks} block(s), "
                   f"{_human(summary.bytes)}")


@command()
@argument("out", type=Path)
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def have(ctx, out, as_json):
    """Write what this node holds, for another lab's 'fabnode export --for'.

    Usage:  fabnode have /media/stick/lab-b.have
    """
    from fabnode.node.local.sneakernet import write_have

    result = write_have(_home(ctx).require(), out)
    _print_json(result) if as_json else echo(result["path"])


@command("import")
@argument("path", type=Path)
@option("--root", metavar="CID", help="The root of the DAG to keep, for a CAR whose header names none "
        "(ipfs-car pack writing to stdout); it must be in the file.")
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def import_(ctx, path, root, as_json):
    """Verify a CAR file and store what it holds: all of it, or nothing if anything is wrong.

    Reads fabnode exports and plain CARs such as 'ipfs-car pack' or Kubo write (CARv1 or CARv2,
    CIDv1 or CIDv0; CIDv0 are stored and shown as CIDv1).

    Usage:  fabnode import /media/stick/lab-a.car
            fabnode import pump.car --root bafybei…
    """
    from fabnode.node.local.sneakernet import import_car

    home = _home(ctx).require()
    size = path.stat().st_size if path.is_file() else 0
    summary = _run_with_progress(size, "importing",
                                 lambda progress: import_car(home, path, progress=progress, root=root))
    if as_json:
        _print_json(summary.as_json())
        return
    echo(f"records: {len(summary.records_new)} new, {summary.records_known} already here")
    echo(f"blocks: {summary.blocks_new} new, {summary.blocks_known} already here"
               + (f", {summary.duplicates} duplicate(s) in the file ignored" if summary.duplicates else ""))
    for root in summary.bundles:
        echo(f"bundle {root}")
    for record, why in summary.refused_by_chain[:5]:  # issue 17: signed by a key its chain no longer allows
        echo(f"refused {record}: {why.removeprefix('record refused: ')}")
    if len(summary.refused_by_chain) > 5:
        echo(f"refused: {len(summary.refused_by_chain) - 5} more record(s) by keys their chain no longer allows")

# ------------------------------------------------------------------ making things nearby: can-make, requests, offers


def _coordinates(text: str | None, near_me: bool = False) -> tuple[float, float] | None:
    """``--near LAT,LON`` as two numbers in range; one line when they are not (or when
    ``--near-me`` was given too)."""
    from fabnode.protocol.errors import FabnodeError

    if text is None:
        return None
    if near_me:
        raise FabnodeError("give --near LAT,LON or --near-me, not both")
    try:
        lat, lon = (float(part) for part in text.split(","))
    except ValueError:
        raise FabnodeError(f"--near {text!r}: give LAT,LON in decimal degrees, such as -1.29,36.82") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise FabnodeError(f"--near {text!r}: latitude must be within ±90 and longitude within ±180")
    return lat, lon


def _missing_text(missing: list[dict]) -> str:
    from fabnode.protocol.canmake import describe_missing

    return describe_missing((m["kind"], m["term"]) for m in missing)


def _lab_line(lab: dict) -> str:
    where = ", ".join(x for x in (lab.get("place"), lab.get("bioregion")) if x)
    distance = f"{lab['distance_km']:>7.1f} km" if lab.get("distance_km") is not None else "      ? km"
    mark = "" if lab["trusted"] else " (not trusted)"
    taking = "" if lab.get("taking_requests", True) else "  [not taking requests]"
    return f"  {distance}  {lab['label']}{mark}  {where}{taking}"


@command("can-make")
@argument("design", metavar="DESIGN", required=False)
@option("--near", metavar="LAT,LON", help="Measure distances from this point.")
@option("--near-me", "near_me", is_flag=True, help="Measure distances from this lab's own coordinates.")
@option("--radius", "radius_km", type=float, metavar="KM", help="Only labs within KM kilometres (with --near or --near-me).")
@option("--limit", type=int, default=50, help="How many labs or designs to list.")
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def can_make(ctx, design, near, near_me, radius_km, limit, as_json):
    """Which labs can make a design, or (without DESIGN) which designs this lab can make.

    With DESIGN: labs whose profiles have every process and material its okh.toml names, then
    those missing exactly one (named), nearest and most trusted first. Without: the designs this
    lab's own profile covers, then those it is one process or material short of.

    Usage:  fabnode can-make bafyrei… --near-me --radius 100
    """
    from fabnode.node.local.making import can_make_design, can_make_here
    from fabnode.protocol.errors import FabnodeError

    home = _home(ctx).require()
    if design is None:
        if near or near_me or radius_km is not None:
            raise FabnodeError("--near, --near-me and --radius choose labs for a DESIGN: give one, or leave them out")
        result = can_make_here(home, limit=limit)
        if as_json:
            _print_json(result)
            return
        full = [d for d in result["designs"] if not d["missing"]]
        short = [d for d in result["designs"] if d["missing"]]
        echo(f"this lab can make {len(full)} design(s)" + (":" if full else ""))
        for d in full:
            echo(f"  {d['design']}  {d['title']}")
        if short:
            echo(f"one process or material short of {len(short)}:")
            for d in short:
                echo(f"  {d['design']}  {d['title']}  ({_missing_text(d['missing'])})")
        if result["more"]:
            echo(f"… and {result['more']} more (--limit)")
        if result["requirements_unknown"]:
            echo(f"{result['requirements_unknown']} design(s) known here have no requirements yet "
                 "(their files are not here, or their okh.toml names none)")
        return
    result = can_make_design(home, design, near=_coordinates(near, near_me), near_me=near_me, radius_km=radius_km, limit=limit)
    if as_json:
        _print_json(result)
        return
    echo(f"design {result['design']}  {result['title'] or ''}".rstrip())
    if result["needs"] is None or result.get("unknown"):
        echo(result["unknown"])
        return
    needs = result["needs"]
    processes = needs["processes"] + [f"{p} (not in the vocabulary)" for p in needs["unknown_processes"]]
    echo(f"needs  processes: {', '.join(processes) or 'none named'}; materials: {', '.join(needs['materials']) or 'none named'}")
    full = [lab for lab in result["labs"] if not lab["missing"]]
    short = [lab for lab in result["labs"] if lab["missing"]]
    scope = f" within {radius_km:g} km" if radius_km is not None else ""
    echo(f"labs that can make it{scope}: {len(full) or 'none'}")
    for lab in full:
        echo(_lab_line(lab))
    if short:
        echo(f"labs one process or material short{scope}:")
        for lab in short:
            echo(_lab_line(lab) + f"  ({_missing_text(lab['missing'])})")
    if result["more"]:
        echo(f"… and {result['more']} more (--limit)")


@command()
@argument("design", metavar="DESIGN", required=False)
@option("--quantity", type=int, metavar="N", help="How many are needed (1 to 1,000,000).")
@option("--needed-by", "needed_by", metavar="DATE", help="The date they are needed by, YYYY-MM-DD (today or later).")
@option("--note", default="", help="What for, who to ask, sizes (at most 500 characters).")
@option("--close", "close", metavar="REQUEST", help="Close this lab's own request (met, or no longer needed).")
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def request(ctx, design, quantity, needed_by, note, close, as_json):
    """Ask nearby labs to make things from a design (signed, shared like every record).

    Usage:  fabnode request bafyrei… --quantity 4 --needed-by 2026-12-20 --note "for the school well"
            fabnode request --close bafyrei…
    """
    from fabnode.node.local.making import close_request, make_request
    from fabnode.protocol.errors import FabnodeError

    home = _home(ctx).require()
    if close is not None:
        if design is not None or quantity is not None or needed_by is not None or note:
            raise FabnodeError("--close REQUEST stands alone: leave out DESIGN, --quantity, --needed-by and --note")
        cid = close_request(home, close)
        _print_json({"request": close, "closed_by": cid}) if as_json else echo(cid)
        return
    if design is None or quantity is None or needed_by is None:
        raise FabnodeError("a request needs DESIGN, --quantity N and --needed-by YYYY-MM-DD (or --close REQUEST)")
    cid = make_request(home, design, quantity=quantity, needed_by=needed_by, note=note)
    _print_json({"request": cid}) if as_json else echo(cid)


@command()
@argument("request_cid", metavar="REQUEST")
@option("--quantity", type=int, required=True, metavar="N", help="How many this lab offers to make.")
@option("--note", default="", help="When, how, what to bring (at most 500 characters).")
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def offer(ctx, request_cid, quantity, note, as_json):
    """Offer to make some or all of what a request asks for (signed, shared like every record).

    Usage:  fabnode offer bafyrei… --quantity 2 --note "ready in a week"
    """
    from fabnode.node.local.making import make_offer

    cid = make_offer(_home(ctx).require(), request_cid, quantity=quantity, note=note)
    _print_json({"offer": cid}) if as_json else echo(cid)


@command()
@option("--near", metavar="LAT,LON", help="Measure distances from this point.")
@option("--near-me", "near_me", is_flag=True, help="Measure distances from this lab's own coordinates.")
@option("--radius", "radius_km", type=float, metavar="KM", help="Only requests by labs within KM kilometres.")
@option("--design", metavar="D", help="Only requests for design D.")
@option("--open", "only_open", is_flag=True, help="Only open requests.")
@option("--json", "as_json", is_flag=True, help="Print JSON.")
def requests(ctx, near, near_me, radius_km, design, only_open, as_json):
    """Requests known here, with their state computed from the records: open first, nearest first.

    A request is fulfilled when offers by keys this lab trusts cover the quantity, closed when
    its author closed it, expired when its date has passed. Offers by other keys are shown apart.

    Usage:  fabnode requests --near-me --radius 100
    """
    from fabnode.node.local.making import list_requests

    rows = list_requests(_home(ctx).require(), near=_coordinates(near, near_me), near_me=near_me, radius_km=radius_km,
                         design_text=design, include_done=not only_open)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        echo("no requests known here" + (" within that radius" if radius_km is not None else ""))
    for r in rows:
        mark = "" if r["trusted"] else " (not trusted)"
        distance = f", {r['distance_km']:.1f} km" if r["distance_km"] is not None else ""
        offered = f"{r['offered']} of {r['quantity']} offered"
        if r["offered_untrusted"]:
            offered += f" (+{r['offered_untrusted']} by untrusted keys, not counted)"
        echo(f"{r['request']}  {r['state']:<9} {r['quantity']} x {r['title'] or r['design']}  by {r['needed_by']}  "
             f"from {r['label']}{mark}{distance}  [{offered}]")
        if r["note"]:
            echo(f"    note: {r['note']}")
        for o in r["offers"]:
            omark = "" if o["trusted"] else " (not trusted)"
            echo(f"    offer {o['offer']}  {o['quantity']} by {o['label']}{omark}" + (f": {o['note']}" if o["note"] else ""))



if __name__ == "__main__":
    sys.exit(main())
