"""The ``fabnode`` command line: parse, call one function in node/ or storage/, print.

Importing this module must stay cheap (``fabnode --help`` answers in well under 0.3 s), so every
command imports what it needs inside its body; nothing here imports libp2p.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

EXIT_FAILURE = 1


class FabnodeGroup(click.Group):
    """Turns fabnode's one-line errors into ``error: …`` on stderr and exit status 1."""

    def invoke(self, ctx: click.Context):
        from protocol.errors import FabnodeError

        try:
            return super().invoke(ctx)
        except FabnodeError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(EXIT_FAILURE)
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            click.echo(f"error: {exc.strerror or exc}{where}", err=True)
            ctx.exit(EXIT_FAILURE)


def _home(ctx: click.Context):
    from node.home import Home, default_home

    return Home(ctx.obj["home"] or default_home())


def _print_json(value) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _progress(total: int, label: str):
    """A progress bar on stderr when both stdout and stderr are terminals; silent otherwise."""
    if not (sys.stdout.isatty() and sys.stderr.isatty()):
        return None
    return click.progressbar(length=max(total, 1), label=label, file=sys.stderr, show_eta=True, show_pos=False)


def _run_with_progress(total: int, label: str, work):
    bar = _progress(total, label)
    if bar is None:
        return work(lambda n: None)
    with bar:
        return work(bar.update)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@click.group(cls=FabnodeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", type=click.Path(path_type=Path, file_okay=False), envvar="FABNODE_HOME",
              help="The node's home directory (env FABNODE_HOME; default ~/.local/share/fabnode).")
@click.version_option(package_name="fabnode", prog_name="fabnode")
@click.pass_context
def main(ctx: click.Context, home: Path | None) -> None:
    """fabnode: share open-hardware designs between workshops, by content hash.

    Start with 'fabnode init', then 'fabnode add ./my-design'.
    """
    ctx.ensure_object(dict)
    ctx.obj["home"] = home


def _print_identity(identity, as_json: bool) -> None:
    if as_json:
        _print_json(identity.as_json())
    else:
        click.echo(f"name     {identity.name}")
        click.echo(f"did      {identity.did}")
        click.echo(f"peer id  {identity.peer_id}")


@main.command()
@click.option("--name", help="The lab's name, e.g. \"Fab Lab Nairobi\".")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def init(ctx: click.Context, name: str | None, as_json: bool) -> None:
    """Create the home directory, the author and node keys, and the database.

    Never overwrites keys: on an existing home it only updates --name.

    Usage:  fabnode init --name "Fab Lab Nairobi"
    """
    from node.home import init_home

    _print_identity(init_home(_home(ctx).path, name), as_json)


@main.command("id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def id_(ctx: click.Context, as_json: bool) -> None:
    """Show this node's identity: the lab's did:key and the node's peer ID."""
    _print_identity(_home(ctx).require().identity(), as_json)


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--hidden", "-H", is_flag=True, help="Also store names starting with '.' (skipped by default).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def add(ctx: click.Context, path: Path, hidden: bool, as_json: bool) -> None:
    """Store a file or a folder; print its CID.

    A folder's contents become the root (the same CID as 'ipfs-car pack DIR'); a single file
    gets its own CID (as 'ipfs-car pack --no-wrap FILE'). Dotfiles and empty folders are left
    out; symlinks inside the folder are refused.

    Usage:  fabnode add ./hand-pump
    """
    from node.files import add_path, plan_add

    store = _home(ctx).open_store()
    plan = plan_add(path, hidden)
    result = _run_with_progress(
        plan[0].bytes, "adding", lambda progress: add_path(store, path, now_ms=_now_ms(), include_hidden=hidden,
                                                          progress=progress, plan=plan)
    )
    if as_json:
        _print_json(result.as_json())
        return
    click.echo(result.cid)
    notes = []
    if result.skipped_hidden:
        notes.append(f"skipped {result.skipped_hidden} hidden name(s) (use --hidden to keep them)")
    if result.dropped_empty_dirs:
        notes.append(f"left out {result.dropped_empty_dirs} empty folder(s)")
    if notes:
        click.echo("note: " + "; ".join(notes), err=True)


def _human(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


@main.command()
@click.argument("cid_path", metavar="CID[/PATH]", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def ls(ctx: click.Context, cid_path: str | None, as_json: bool) -> None:
    """List a directory of a stored DAG; without an argument, list what this node has added.

    Usage:  fabnode ls bafy…/cad
    """
    from node.files import list_path, list_pins
    from protocol.cid import parse_cid_path

    store = _home(ctx).open_store()
    if cid_path is None:
        entries = list_pins(store)
    else:
        root, segments = parse_cid_path(cid_path)
        entries = list_path(store, root, segments)
    if as_json:
        _print_json([e.as_json() for e in entries])
        return
    for e in entries:
        name = e.name + ("/" if e.kind == "directory" else "")
        size = "-" if e.size is None else _human(e.size)
        click.echo(f"{e.cid}  {size:>10}  {name}")


@main.command()
@click.argument("cid_path", metavar="CID[/PATH]")
@click.pass_context
def cat(ctx: click.Context, cid_path: str) -> None:
    """Write a stored file to standard output, verifying every block.

    Usage:  fabnode cat bafy…/README.md
    """
    from node.files import cat_path
    from protocol.cid import parse_cid_path

    store = _home(ctx).open_store()
    root, segments = parse_cid_path(cid_path)
    out = click.get_binary_stream("stdout")
    for piece in cat_path(store, root, segments):
        out.write(piece)
    out.flush()


@main.command()
@click.argument("cid_path", metavar="CID[/PATH]")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="File or folder to create (must not exist).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def get(ctx: click.Context, cid_path: str, output: Path | None, as_json: bool) -> None:
    """Write a stored file or folder out, byte for byte, as a new file or folder.

    The output must not exist yet; it defaults to the last path segment or the CID. Everything
    is checked first and written through a temporary folder renamed into place.

    Usage:  fabnode get bafy… -o hand-pump
    """
    from node.files import get_path, plan_get
    from protocol.cid import parse_cid_path

    store = _home(ctx).open_store()
    root, segments = parse_cid_path(cid_path)
    out, tree, total = plan_get(store, root, segments, output)
    written = _run_with_progress(total, "writing", lambda progress: get_path(store, out, tree, progress))
    if as_json:
        _print_json({"path": str(written)})
    else:
        click.echo(str(written))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def fsck(ctx: click.Context, as_json: bool) -> None:
    """Re-hash every stored block and check every added DAG is complete.

    Exits 1 and names each damaged or missing block if the store is not sound.
    """
    from node.files import fsck as run_fsck

    store = _home(ctx).open_store()
    _, total = store.count()
    report = _run_with_progress(total, "checking", lambda progress: run_fsck(store, progress))
    if as_json:
        _print_json(report.as_json())
    else:
        for cid in report.damaged:
            click.echo(f"damaged block {cid}")
        for item in report.missing:
            click.echo(f"missing block {item}")
        click.echo(f"checked {report.blocks} blocks ({_human(report.bytes)}) and {report.pins} pinned root(s): "
                   + ("the store is sound" if report.ok else "PROBLEMS FOUND"))
    if not report.ok:
        click.echo(f"error: {len(report.damaged)} damaged and {len(report.missing)} missing block(s)", err=True)
        ctx.exit(EXIT_FAILURE)


if __name__ == "__main__":
    main()
