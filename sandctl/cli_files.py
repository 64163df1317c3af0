"""The file verbs of sandctl: put, get, cat, head, tail, ls, stat, find, tree, mkdir, cp, mv,
rm, du. Each parses its options, calls the client (or sandctl/remote_files.py and
sandctl/tree_transfer.py over it) and prints with sandctl/output.py. cli.py registers them.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import sys
from pathlib import Path

import click

from node.errors import AlreadyExists, IsADirectory, NotADirectory, NotFound

from sandctl import output
from sandctl import repair  # self-healing data: live and pending replicas
from sandctl.cli_base import READ_NODE_HELP, Settings, global_options, node_option, refuse_json
from sandctl.errors import LocalFileNotFound
from sandctl.remote_files import (
    Overwrite,
    copy_record,
    copy_tree,
    find,
    landed_path,
    overwrite_policy,
    placement,
    put_file_checked,
    read_head,
    read_tail,
    walk,
)
from sandctl.tree_transfer import TransferSummary, get_to_local, get_tree, open_local, put_tree

COMMANDS: list[click.Command] = []


def command(name: str | None = None):
    def register(function):
        verb = click.command(name=name)(function)
        COMMANDS.append(verb)
        return verb

    return register


def overwrite_options(function):
    function = click.option("-n", "--no-clobber", "no_clobber", is_flag=True,
                            help="Never overwrite: skip an existing target silently (exit 0).")(function)
    return click.option("-f", "--force", "force", is_flag=True, help="Overwrite an existing target.")(function)


def _policy(force: bool, no_clobber: bool) -> Overwrite:
    if force and no_clobber:
        raise click.UsageError("-f and -n exclude each other")
    return overwrite_policy(force, no_clobber)


stale_option = click.option(
    "--stale", is_flag=True,
    help="Serve from the contacted node's local state without the leader's confirmation: faster, "
         "works without a quorum, may miss the latest writes. Reads are linearizable otherwise.")


class _TreeProgress:
    """One progress bar for a whole transfer (stderr, only when stdout is a terminal and the
    output is not JSON); a TreeProgress of sandctl/tree_transfer.py."""

    def __init__(self, settings: Settings, label: str) -> None:
        self._enabled = not settings.json_output and sys.stdout.isatty()
        self._label = label
        self._bar = None

    def begin(self, total_bytes: int) -> None:
        if self._enabled and total_bytes > 0:
            self._bar = click.progressbar(length=total_bytes, label=self._label, file=sys.stderr, show_eta=True)
            self._bar.__enter__()

    def __call__(self, count: int) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def end(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


    def callback(self):
        """The per-piece callback, or None when no bar is shown (nothing to call)."""
        return self if self._bar is not None else None


@contextlib.contextmanager
def _progress_bar(settings: Settings, length: int, label: str):
    """A progress callback for one transfer of `length` bytes (None without a terminal)."""
    progress = _TreeProgress(settings, label)
    progress.begin(length)
    try:
        yield progress.callback()
    finally:
        progress.end()


def _summary_line(verb: str, summary: TransferSummary) -> str:
    skipped = f", {len(summary.skipped)} skipped (exist)" if summary.skipped else ""
    return (f"{verb} {output.counted(summary.files, 'file')} ({output.human_bytes(summary.bytes)}) and "
            f"{output.counted(summary.directories, 'new directory', 'new directories')} from {summary.source} "
            f"to {summary.target} in {summary.seconds:.1f} s{skipped}")


# ---------------------------------------------------------------------- put and get


@command()
@click.argument("local")
@click.argument("remote")
@click.option("-r", "recursive", is_flag=True, help="Store a directory and everything below it.")
@overwrite_options
@global_options
def put(settings: Settings, local: str, remote: str, recursive: bool, force: bool, no_clobber: bool) -> None:
    """Store a local file (or stdin with -) at REMOTE, streamed in chunks: memory stays small
    whatever the size. A REMOTE ending in / or naming a directory receives the file under its
    local name; its parent must exist (sandctl mkdir -p). The file appears only once all of it
    is stored. With -r, LOCAL is a directory and the whole tree is stored, file by file, with
    one progress bar (on a terminal) and a summary line.

    An existing target is refused (exit 1, nothing changed) unless -f; -n skips it silently.

    Example: sandctl put -r ./photos /backup/
    """
    policy = _policy(force, no_clobber)
    client = settings.client()
    if recursive:
        if local == "-":
            raise click.UsageError("put -r needs a local directory, not -")
        root = Path(local)
        if not root.is_dir():
            raise (LocalFileNotFound(f"{local}: no such local directory") if not root.exists()
                   else NotADirectory(f"{local} is a file (put it without -r)"))
        progress = _TreeProgress(settings, f"put {local}")
        try:
            summary = put_tree(client, root, remote, policy, progress)
        finally:
            progress.end()
        _print_summary(settings, "put", summary)
        return
    if local == "-":
        if remote.endswith("/"):
            raise IsADirectory(f"{remote} is a directory: put - needs a remote file name")
        name = None
        result = put_file_checked(client, remote, sys.stdin.buffer, policy, size_hint=None, mode=0o644)
    else:
        name = os.path.basename(local)
        with open_local(local) as reader:
            info = os.fstat(reader.fileno())
            with _progress_bar(settings, info.st_size, f"put {local}") as progress:
                result = put_file_checked(client, reader=reader, policy=policy, size_hint=info.st_size,
                                          mode=info.st_mode & 0o777, progress=progress, **placement(remote, name))
    if settings.json_output:
        skipped_path = remote if name is None else landed_path(client, remote, name)
        output.print_json(result if result is not None else {"path": skipped_path, "skipped": True})


def _print_summary(settings: Settings, verb: str, summary: TransferSummary) -> None:
    if settings.json_output:
        output.print_json(summary.as_dict())
    else:
        click.echo(_summary_line(verb, summary))


@command()
@click.argument("remote")
@click.argument("local", default=".")
@click.option("-r", "recursive", is_flag=True, help="Copy a directory and everything below it.")
@overwrite_options
@stale_option
@node_option(READ_NODE_HELP)
@global_options
def get(settings: Settings, remote: str, local: str, recursive: bool, force: bool, no_clobber: bool,
        stale: bool) -> None:
    """Copy REMOTE to a local file (default: into the current directory; - for stdout). The
    content is written to a temporary file next to the target and moved into place, so a
    failed get leaves nothing behind. LOCAL may name an existing directory; a LOCAL whose
    directory does not exist is an error (exit 5, nothing read). With -r, REMOTE is a
    directory and the whole tree is copied, with one progress bar and a summary line.

    An existing local file is refused (exit 1, nothing changed) unless -f; -n skips it silently.

    Example: sandctl get -r /backup/photos ./restored
    """
    policy = _policy(force, no_clobber)
    client = settings.client()
    if local == "-":
        if recursive:
            raise click.UsageError("get -r needs a local directory, not -")
        refuse_json(settings, "get -")
        _get_to_stdout(client, remote, stale)
        return
    if recursive:
        progress = _TreeProgress(settings, f"get {remote}")
        try:
            summary = get_tree(client, remote, Path(local), policy, progress, stale)
        finally:
            progress.end()
        _print_summary(settings, "got", summary)
        return
    target = Path(local)
    if target.is_dir():
        target = target / posixpath.basename(remote.rstrip("/"))
    if not target.parent.is_dir():
        raise LocalFileNotFound(f"local directory {target.parent} does not exist")
    info = client.stat(remote, stale=stale)
    if info.get("type") == "dir":
        raise IsADirectory(f"{remote} is a directory (use get -r)")
    with _progress_bar(settings, info.get("size", 0), f"get {remote}") as progress:
        result = get_to_local(client, remote, target, policy, progress, stale)
    if settings.json_output:
        output.print_json({**result, "local": str(target)} if result is not None
                          else {"path": remote, "local": str(target), "skipped": True})


def _get_to_stdout(client, remote: str, stale: bool) -> None:
    sys.stdout.flush()
    stdout = sys.stdout.buffer
    client.get_file(remote, stdout, stale=stale)
    stdout.flush()


# ---------------------------------------------------------------------- reading


@command()
@click.argument("remote")
@stale_option
@node_option(READ_NODE_HELP)
@global_options
def cat(settings: Settings, remote: str, stale: bool) -> None:
    """Print a file's content. --json is refused (exit 2): the output is the file's bytes;
    `sandctl stat --json` gives its metadata.

    Example: sandctl cat /notes.txt
    """
    refuse_json(settings, "cat")
    _get_to_stdout(settings.client(), remote, stale)


def _count_options(function):
    function = click.option("-c", "byte_count", type=click.IntRange(min=0), default=None, metavar="N",
                            help="Bytes instead of lines.")(function)
    return click.option("-n", "line_count", type=click.IntRange(min=0), default=None, metavar="N",
                        help="Lines (default 10).")(function)


def _count(line_count: int | None, byte_count: int | None) -> tuple[int, bool]:
    if line_count is not None and byte_count is not None:
        raise click.UsageError("-n and -c exclude each other")
    return (byte_count, False) if byte_count is not None else (10 if line_count is None else line_count, True)


@command()
@click.argument("remote")
@_count_options
@stale_option
@node_option(READ_NODE_HELP)
@global_options
def head(settings: Settings, remote: str, line_count: int | None, byte_count: int | None, stale: bool) -> None:
    """Print the first lines (-n, default 10) or bytes (-c) of a file; only as many chunks as
    needed are fetched. --json is refused (exit 2), as for cat.

    Example: sandctl head -n 3 /docs/readme
    """
    refuse_json(settings, "head")
    count, by_lines = _count(line_count, byte_count)
    sys.stdout.flush()
    read_head(settings.client(), remote, sys.stdout.buffer, count, by_lines, stale)
    sys.stdout.buffer.flush()


@command()
@click.argument("remote")
@_count_options
@stale_option
@node_option(READ_NODE_HELP)
@global_options
def tail(settings: Settings, remote: str, line_count: int | None, byte_count: int | None, stale: bool) -> None:
    """Print the last lines (-n, default 10) or bytes (-c) of a file. The file is streamed
    through a bounded buffer. --json is refused (exit 2), as for cat.

    Example: sandctl tail -c 100 /logs/app.log
    """
    refuse_json(settings, "tail")
    count, by_lines = _count(line_count, byte_count)
    data = read_tail(settings.client(), remote, count, by_lines, stale)
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


# ---------------------------------------------------------------------- listing


def _entry_name(entry: dict, full_path: bool) -> str:
    text = entry["path"] if full_path else posixpath.basename(entry["path"]) or entry["path"]
    return text + ("/" if entry.get("type") == "dir" and text != "/" else "")


@command(name="ls")
@click.argument("path", default="/")
@click.option("-l", "long_format", is_flag=True, help="Type, mode, size and modification time.")
@click.option("-h", "human", is_flag=True, help="Sizes as 1.5K, 3.2M, ... (implies -l).")
@click.option("-R", "recursive", is_flag=True, help="Everything below PATH, with full paths.")
@stale_option
@node_option(READ_NODE_HELP)
@global_options
def ls_command(settings: Settings, path: str, long_format: bool, human: bool, recursive: bool, stale: bool) -> None:
    """List a directory, or show one file. Reads are linearizable unless --stale.

    Example: sandctl ls -lh /docs
    """
    client = settings.client()
    try:
        entries = client.ls(path, recursive=recursive, stale=stale)
        full_path = recursive
    except NotADirectory:
        entries = [client.stat(path, stale=stale)]
        full_path = True
    if settings.json_output:
        output.print_json(entries)
        return
    if not (long_format or human):
        for entry in entries:
            click.echo(_entry_name(entry, full_path))
        return
    size = output.human_bytes if human else str
    rows = [[output.mode_text(e), size(e.get("size", 0)), output.time_text(e.get("mtime_ns")), _entry_name(e, full_path)]
            for e in entries]
    output.print_table(rows, ["mode", "size", "modified", "name"])


@command(name="stat")
@click.argument("path")
@click.option("--chunks", "show_chunks", is_flag=True, help="Also list each chunk: id, size and replicas.")
@stale_option
@node_option(READ_NODE_HELP)
@global_options
def stat_command(settings: Settings, path: str, show_chunks: bool, stale: bool) -> None:
    """Show a file's or directory's metadata (with --chunks, the file's chunk list).
    Reads are linearizable unless --stale.

    Example: sandctl stat --chunks /big.bin
    """
    info = settings.client().stat(path, stale=stale)
    chunks = info.get("chunks")
    if settings.json_output:
        if chunks is not None and not show_chunks:
            info = {**info, "chunks": len(chunks)}
        output.print_json(info)
        return
    fields = [("path", info.get("path")), ("type", info.get("type")), ("size", info.get("size")),
              ("mode", output.mode_text(info)), ("modified", output.time_text(info.get("mtime_ns"))),
              ("inline", info.get("inline"))]
    if chunks is not None:
        fields.append(("chunks", len(chunks)))
    output.print_record(fields)
    if show_chunks and chunks:
        click.echo()
        states = repair.chunk_states(settings.client(), path)  # live / not live / pending (self-healing data)
        rows = []
        for position, (chunk_id, size, replicas) in enumerate(chunks):
            state = states.get(bytes(chunk_id).hex(), {})
            rows.append([position, bytes(chunk_id).hex(), size, ",".join(state.get("live", replicas)),
                         ",".join(f"{node} ({why})" for node, why in state.get("not_live", {}).items()),
                         state.get("pending") or ""])
        output.print_table(rows, ["#", "chunk id", "size", "live replicas", "not live", "pending"])


@command(name="find")
@click.argument("path", default="/")
@click.option("-name", "--name", "name_glob", metavar="GLOB", default=None,
              help="Base name matches GLOB (*, ?, [...]; quote it from the shell).")
@click.option("-type", "--type", "kind", type=click.Choice(["f", "d"]), default=None,
              help="f: files only, d: directories only.")
@stale_option
@node_option(READ_NODE_HELP)
@global_options
def find_command(settings: Settings, path: str, name_glob: str | None, kind: str | None, stale: bool) -> None:
    """Print the paths below PATH (PATH itself included) that match, one per line, depth first.

    Example: sandctl find /docs -name '*.pdf' -type f
    """
    matches = find(walk(settings.client(), path, stale=stale), name_glob, kind)
    if settings.json_output:
        output.print_json(matches)
        return
    for entry in matches:
        click.echo(entry["path"])


@command(name="tree")
@click.argument("path", default="/")
@click.option("-L", "depth_max", type=click.IntRange(min=1), default=None, metavar="LEVELS",
              help="Descend at most LEVELS directories.")
@stale_option
@node_option(READ_NODE_HELP)
@global_options
def tree_command(settings: Settings, path: str, depth_max: int | None, stale: bool) -> None:
    """Show the tree below PATH, then how many directories and files it holds.

    Example: sandctl tree -L 2 /
    """
    entries = walk(settings.client(), path, stale=stale)
    base = entries[0]["path"]
    children: dict[str, list[dict]] = {}
    for entry in entries[1:]:
        children.setdefault(posixpath.dirname(entry["path"]), []).append(entry)
    shown = []

    def visit(directory: str, prefix: str, depth: int) -> None:
        below = children.get(directory, [])
        for position, entry in enumerate(below):
            last = position == len(below) - 1
            shown.append(entry)
            name = posixpath.basename(entry["path"]) + ("/" if entry.get("type") == "dir" else "")
            lines.append(prefix + ("└── " if last else "├── ") + name)
            if entry.get("type") == "dir" and (depth_max is None or depth < depth_max):
                visit(entry["path"], prefix + ("    " if last else "│   "), depth + 1)

    lines = [base + ("/" if entries[0].get("type") == "dir" and base != "/" else "")]
    visit(base, "", 1)
    directories = sum(1 for entry in shown if entry.get("type") == "dir")
    if settings.json_output:
        output.print_json({"path": base, "entries": shown, "dirs": directories, "files": len(shown) - directories})
        return
    for line in lines:
        click.echo(line)
    click.echo(f"\n{output.counted(directories, 'directory', 'directories')}, "
               f"{output.counted(len(shown) - directories, 'file')}")


# ---------------------------------------------------------------------- changing the namespace


@command()
@click.argument("path")
@click.option("-p", "parents", is_flag=True, help="Create missing parents; no error if it exists.")
@global_options
def mkdir(settings: Settings, path: str, parents: bool) -> None:
    """Create a directory.

    Example: sandctl mkdir -p /docs/2024
    """
    result = settings.client().mkdir(path, parents=parents)
    if settings.json_output:
        output.print_json(result)


@command()
@click.argument("src")
@click.argument("dst")
@click.option("-r", "recursive", is_flag=True, help="Copy a directory and everything below it.")
@overwrite_options
@global_options
def cp(settings: Settings, src: str, dst: str, recursive: bool, force: bool, no_clobber: bool) -> None:
    """Copy a file (or with -r a tree) inside the store. A copy shares its chunks with the
    source (they are content-addressed): only a new file record is written, however large
    the file. A DST ending in / or naming a directory receives the copy under SRC's name.

    An existing target is refused (exit 1, nothing changed) unless -f; -n skips it silently.

    Example: sandctl cp /docs/report.pdf /archive/
    """
    policy = _policy(force, no_clobber)
    client = settings.client()
    source = client.stat(src)
    name = posixpath.basename(source["path"]) or "root"
    if source.get("type") != "dir":
        result = copy_record(client, source["path"], placement(dst, name), policy)
        if settings.json_output:
            output.print_json(result if result is not None else
                              {"path": landed_path(client, dst, name), "skipped": True})
        return
    if not recursive:
        raise IsADirectory(f"{src} is a directory (use cp -r)")
    copied = copy_tree(client, source["path"], landed_path(client, dst, name), policy)
    if settings.json_output:
        output.print_json(copied)
    else:
        skipped = f", {copied['skipped']} skipped (exist)" if copied["skipped"] else ""
        click.echo(f"copied {output.counted(copied['files'], 'file')} and "
                   f"{output.counted(copied['dirs'], 'new directory', 'new directories')} from "
                   f"{copied['source']} to {copied['target']}{skipped}")


@command()
@click.argument("src")
@click.argument("dst")
@overwrite_options
@global_options
def mv(settings: Settings, src: str, dst: str, force: bool, no_clobber: bool) -> None:
    """Rename a file or directory atomically. A DST naming a directory receives SRC under its
    own name.

    An existing target is refused (exit 1, nothing changed) unless -f; -n skips it silently.
    A directory is never replaced.

    Example: sandctl mv /notes.txt /docs/notes.txt
    """
    policy = _policy(force, no_clobber)
    try:
        result = settings.client().mv(src, dst, overwrite=policy is Overwrite.FORCE)
    except AlreadyExists:
        if policy is not Overwrite.SKIP:
            raise
        result = {"src": src, "dst": dst, "skipped": True}
    if settings.json_output:
        output.print_json(result)


@command()
@click.argument("path")
@click.option("-r", "recursive", is_flag=True, help="Remove a directory and everything in it.")
@click.option("-f", "force", is_flag=True, help="No error if PATH does not exist.")
@global_options
def rm(settings: Settings, path: str, recursive: bool, force: bool) -> None:
    """Remove a file or (with -r) a directory tree.

    Example: sandctl rm -r /docs/old
    """
    try:
        result = settings.client().rm(path, recursive=recursive)
    except NotFound:
        if not force:
            raise
        result = {}
    if settings.json_output:
        output.print_json(result)


@command()
@click.argument("path", default="/")
@click.option("-s", "summary", is_flag=True, help="Only the total for PATH.")
@click.option("-h", "human", is_flag=True, help="Sizes as 1.5K, 3.2M, ...")
@global_options
def du(settings: Settings, path: str, summary: bool, human: bool) -> None:
    """Space used by PATH (a file, or a directory per subdirectory): logical bytes (file
    sizes), chunk bytes (each distinct chunk once) and bytes stored with replication (chunk
    bytes times their replicas; inline files live in the replicated metadata and are not
    counted there).

    Example: sandctl du -s -h /
    """
    client = settings.client()
    usages: list[dict] = []
    if not summary:
        try:
            listing = client.ls(path)
        except NotADirectory:
            listing = []
        for entry in listing:
            if entry.get("type") == "dir":
                usages.append({"path": entry["path"], **client.du(entry["path"])})
    usages.append({"path": path, **client.du(path)})
    if settings.json_output:
        output.print_json(usages[-1] if summary else usages)
        return
    size = output.human_bytes if human else str
    rows = [[size(u.get("logical_bytes", 0)), size(u.get("stored_chunk_bytes", 0)),
             size(u.get("replicated_chunk_bytes", 0)), u.get("files", 0), u.get("dirs", 0), u["path"]]
            for u in usages]
    output.print_table(rows, ["logical", "chunks", "stored with replicas", "files", "dirs", "path"])
