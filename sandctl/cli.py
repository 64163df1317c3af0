"""sandctl: the command line of SandStore. Each verb parses its options, calls one client or
supervisor function, and formats the result (a table, or JSON with --json).

Errors become one line `Error: ...` on stderr and a documented exit status, in one place:
`_exit_for` (called by the shared `global_options` decorator).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import os
import posixpath
import stat as stat_module
import sys
import tempfile
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click
from tabulate import tabulate

from node.config import ClusterConfig, NodeAddress, load_config
from node.errors import IsADirectory, NotFound, Refused, SandStoreError, Unavailable

from sandctl import backup
from sandctl import cluster as supervisor
from sandctl import state
from sandctl.bench import bench_command
from sandctl.client import Client
from sandctl.errors import (
    EXIT_NOT_FOUND,
    EXIT_REFUSED,
    LocalFileError,
    LocalFileNotFound,
    exit_status,
)

MAIN_HELP = """SandStore's command line: files, cluster status, local cluster supervision.

\b
The cluster comes from --config, else $SANDSTORE_CONFIG, else the config remembered by
`sandctl cluster start` (~/.sandstore/cluster.json), else configs/local-3.toml.

\b
Exit status:
  0  success
  1  refused, nothing changed (exists, not a directory, not empty, invalid path,
     too large, invalid config, local file error, ...)
  2  usage error
  3  cluster unavailable or no leader, nothing changed
  4  timed out, outcome unknown (the write may or may not have been applied)
  5  not found (remote path or local file)

Example: sandctl cluster start && sandctl put notes.txt /notes.txt && sandctl ls -l /
"""


# A verb that cannot connect to any node of the cluster for this long reports it at once (the
# cluster is most likely not running) instead of retrying until --timeout. A node that is up
# but has no leader still gets the whole deadline.
UNREACHABLE_SECONDS = 3.0


@dataclass
class Settings:
    """The global options of one invocation, and what they resolve to (lazily)."""

    config_option: str | None
    data_dir_option: str | None
    node: str | None
    timeout_seconds: float | None
    json_output: bool
    show_traceback: bool
    _config: ClusterConfig | None = field(default=None, repr=False)
    _client: Client | None = field(default=None, repr=False)

    def config(self) -> ClusterConfig:
        if self._config is None:
            self._config = load_config(state.resolve_config_path(self.config_option))
        return self._config

    def data_dir(self) -> Path:
        return state.resolve_data_dir(self.data_dir_option, Path(self.config().path))

    def deadline_seconds(self) -> float:
        return self.timeout_seconds if self.timeout_seconds is not None else self.config().request_timeout_seconds

    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.config(), node=self.node, timeout_seconds=self.timeout_seconds,
                                  unreachable_seconds=UNREACHABLE_SECONDS)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


_GLOBAL_OPTIONS = (
    click.option("--config", "config_option", metavar="FILE", default=None,
                 help="Cluster config (default: $SANDSTORE_CONFIG, the remembered one, configs/local-3.toml)."),
    click.option("--data-dir", "data_dir_option", metavar="DIR", default=None,
                 help="Local cluster data directory (default: remembered, else ~/.sandstore/data/<config name>)."),
    click.option("--node", "node", metavar="ID", default=None,
                 help="Talk to this node only, no failover (debugging)."),
    click.option("--timeout", "timeout_seconds", metavar="SECONDS", type=click.FloatRange(min=0, min_open=True),
                 default=None, help="Deadline of each request (default: the config's request_timeout_seconds)."),
    click.option("--json", "json_output", is_flag=True, help="Print JSON instead of tables."),
    click.option("--traceback", "show_traceback", is_flag=True, help="Show the stack trace of an error."),
)


def global_options(function):
    """The options every verb takes; passes a Settings as the first argument and turns every
    operating error into `Error: ...` plus its exit status."""

    @functools.wraps(function)
    def wrapper(**kwargs):
        settings = Settings(**{name: kwargs.pop(name) for name in (
            "config_option", "data_dir_option", "node", "timeout_seconds", "json_output", "show_traceback")})
        try:
            return function(settings, **kwargs)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as error:  # noqa: BLE001 - the one place that maps errors to exit codes
            _exit_for(error, settings.show_traceback)
        finally:
            settings.close()

    for option in reversed(_GLOBAL_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


def _exit_for(error: Exception, show_traceback: bool) -> None:
    if show_traceback:
        traceback.print_exception(error, file=sys.stderr)
    if isinstance(error, SandStoreError):
        status, message = exit_status(error), str(error) or error.code
    elif isinstance(error, FileNotFoundError):
        status, message = EXIT_NOT_FOUND, _os_error_message(error)
    elif isinstance(error, OSError):
        status, message = EXIT_REFUSED, _os_error_message(error)
    else:
        # A bug, not an operating error: still one line unless --traceback asks for more.
        status = EXIT_REFUSED
        message = f"unexpected {type(error).__name__}: {error} (run again with --traceback for details)"
    click.echo(f"Error: {message}", err=True)
    raise click.exceptions.Exit(status)


def _os_error_message(error: OSError) -> str:
    return f"{error.filename}: {error.strerror}" if error.filename else str(error)


# ---------------------------------------------------------------------- output helpers


def _json_default(value: object) -> object:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _print_json(value: object) -> None:
    click.echo(json.dumps(value, default=_json_default, indent=2, sort_keys=True))


def _print_table(rows: list[list], headers: list[str]) -> None:
    click.echo(tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True))


def _human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _mode_text(entry: dict) -> str:
    kind = stat_module.S_IFDIR if entry.get("type") == "dir" else stat_module.S_IFREG
    return stat_module.filemode(kind | (entry.get("mode", 0) & 0o7777))


def _time_text(mtime_ns: int | None) -> str:
    if mtime_ns is None:
        return ""
    moment = datetime.datetime.fromtimestamp(mtime_ns / 1e9)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _blank(value: object) -> object:
    return "" if value is None else value


# ---------------------------------------------------------------------- the group


class _OneLineErrorsGroup(click.Group):
    """A click group whose usage errors are one line, like every other sandctl error:
    `Error: <what is wrong> (usage: sandctl put [OPTIONS] LOCAL REMOTE)`, exit status 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            status = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as error:
            if type(error).__name__ == "NoArgsIsHelpError":  # bare `sandctl`: the help is the answer
                click.echo(error.format_message(), err=True)
                sys.exit(error.exit_code)
            usage = error.ctx.get_usage().replace("Usage: ", "", 1) if error.ctx is not None else ""
            click.echo(f"Error: {error.format_message()}" + (f" (usage: {usage})" if usage else ""), err=True)
            sys.exit(error.exit_code)
        except click.ClickException as error:
            error.show()
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(EXIT_REFUSED)
        sys.exit(status if isinstance(status, int) else 0)


@click.group(cls=_OneLineErrorsGroup, help=MAIN_HELP)
@click.version_option(package_name="sandstore")
def main() -> None:
    pass


# ---------------------------------------------------------------------- files


@main.command()
@click.argument("local")
@click.argument("remote")
@global_options
def put(settings: Settings, local: str, remote: str) -> None:
    """Store a local file (or stdin with -) at REMOTE, streamed in chunks: memory stays small
    whatever the size. A REMOTE ending in / or naming a directory receives the file under its
    local name. The file appears only once all of it is stored (replaced atomically).

    Example: sandctl put report.pdf /docs/
    """
    client = settings.client()
    if local == "-":
        if remote.endswith("/") or _is_remote_directory(client, remote):
            raise IsADirectory(f"{remote} is a directory: put - needs a remote file name")
        result = client.put_file(remote, sys.stdin.buffer, size_hint=None, mode=0o644)
    else:
        with _open_local(local) as reader:
            info = os.fstat(reader.fileno())
            if remote.endswith("/") or _is_remote_directory(client, remote):
                remote = posixpath.join(remote, os.path.basename(local))
            with _progress_bar(settings, info.st_size, f"put {remote}") as progress:
                result = client.put_file(remote, reader, size_hint=info.st_size, mode=info.st_mode & 0o777,
                                         progress=progress)
    if settings.json_output:
        _print_json(result)


def _is_remote_directory(client: Client, remote: str) -> bool:
    try:
        return client.stat(remote).get("type") == "dir"
    except NotFound:
        return False


def _open_local(local: str):
    """The local file opened for reading; LocalFileNotFound (exit 5) or LocalFileError (exit 1)."""
    try:
        if os.path.isdir(local):
            raise LocalFileError(f"{local} is a directory")
        return open(local, "rb")
    except FileNotFoundError:
        raise LocalFileNotFound(f"{local}: no such local file") from None
    except PermissionError:
        raise LocalFileError(f"{local}: permission denied") from None
    except OSError as error:
        raise LocalFileError(f"{local}: {error.strerror}") from None


@contextlib.contextmanager
def _progress_bar(settings: Settings, length: int, label: str):
    """A progress callback: a click.progressbar on stderr when stdout is a terminal (and the
    output is not JSON), else nothing."""
    if settings.json_output or not sys.stdout.isatty() or length <= 0:
        yield None
        return
    with click.progressbar(length=length, label=label, file=sys.stderr, show_eta=True) as bar:
        yield bar.update


stale_option = click.option(
    "--stale", is_flag=True,
    help="Serve from the contacted node's local state without the leader's confirmation: faster, "
         "works without a quorum, may miss the latest writes. Reads are linearizable otherwise.")


@main.command()
@click.argument("remote")
@click.argument("local")
@stale_option
@global_options
def get(settings: Settings, remote: str, local: str, stale: bool) -> None:
    """Copy REMOTE to a local file (or stdout with -). The content is written to a temporary
    file next to the target and renamed into place, so a failed get leaves nothing behind.
    LOCAL may name an existing directory; a LOCAL whose directory does not exist is an error
    (exit 5, nothing read).

    Example: sandctl get /docs/report.pdf ./report.pdf
    """
    client = settings.client()
    if local == "-":
        _get_to_stdout(client, remote, stale)
        return
    target = Path(local)
    if target.is_dir():
        target = target / posixpath.basename(remote.rstrip("/"))
    directory = target.parent
    if not directory.is_dir():
        raise LocalFileNotFound(f"local directory {directory} does not exist")
    info = client.stat(remote, stale=stale)
    if info.get("type") == "dir":
        raise IsADirectory(f"{remote} is a directory")
    with _progress_bar(settings, info.get("size", 0), f"get {remote}") as progress:
        info = _get_local_atomically(client, remote, target, progress, stale)
    if settings.json_output:
        _print_json({**info, "local": str(target)})


def _get_local_atomically(client: Client, remote: str, target: Path, progress, stale: bool) -> dict:
    # A temp file in the same directory, then rename: a reader never sees half a file, and a
    # failed get leaves no file at all.
    try:
        file = tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".part",
                                           delete=False)
    except PermissionError:
        raise LocalFileError(f"{target.parent}: permission denied") from None
    temporary = Path(file.name)
    try:
        with file:
            info = client.get_file(remote, file, progress=progress, stale=stale)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, info.get("mode", 0o644) & 0o777)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return info


@main.command()
@click.argument("remote")
@stale_option
@global_options
def cat(settings: Settings, remote: str, stale: bool) -> None:
    """Print a file's content.

    Example: sandctl cat /notes.txt
    """
    _get_to_stdout(settings.client(), remote, stale)


def _get_to_stdout(client: Client, remote: str, stale: bool) -> None:
    sys.stdout.flush()
    stdout = sys.stdout.buffer
    client.get_file(remote, stdout, stale=stale)
    stdout.flush()


@main.command(name="ls")
@click.argument("path", default="/")
@click.option("-l", "long_format", is_flag=True, help="Type, mode, size and modification time.")
@click.option("-R", "recursive", is_flag=True, help="Everything below PATH.")
@stale_option
@global_options
def ls_command(settings: Settings, path: str, long_format: bool, recursive: bool, stale: bool) -> None:
    """List a directory. Reads are linearizable unless --stale.

    Example: sandctl ls -l /docs
    """
    entries = settings.client().ls(path, recursive=recursive, stale=stale)
    if settings.json_output:
        _print_json(entries)
        return

    def name(entry: dict) -> str:
        text = entry["path"] if recursive else posixpath.basename(entry["path"]) or entry["path"]
        return text + ("/" if entry.get("type") == "dir" else "")

    if not long_format:
        for entry in entries:
            click.echo(name(entry))
        return
    rows = [[_mode_text(e), e.get("size", 0), _time_text(e.get("mtime_ns")), name(e)] for e in entries]
    _print_table(rows, ["mode", "size", "modified", "name"])


@main.command(name="stat")
@click.argument("path")
@click.option("--chunks", "show_chunks", is_flag=True, help="Also list each chunk: id, size and replicas.")
@stale_option
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
        _print_json(info)
        return
    rows = [
        ["path", info.get("path")], ["type", info.get("type")], ["size", info.get("size")],
        ["mode", _mode_text(info)], ["modified", _time_text(info.get("mtime_ns"))],
        ["inline", info.get("inline")],
    ]
    if chunks is not None:
        rows.append(["chunks", len(chunks)])
    click.echo(tabulate(rows, tablefmt="plain", disable_numparse=True))
    if show_chunks and chunks:
        click.echo()
        _print_table([[position, bytes(chunk_id).hex(), size, ",".join(replicas)]
                      for position, (chunk_id, size, replicas) in enumerate(chunks)],
                     ["#", "chunk id (BLAKE2b-256)", "size", "replicas"])


@main.command()
@click.argument("path")
@click.option("-p", "parents", is_flag=True, help="Create missing parents; no error if it exists.")
@global_options
def mkdir(settings: Settings, path: str, parents: bool) -> None:
    """Create a directory.

    Example: sandctl mkdir -p /docs/2024
    """
    result = settings.client().mkdir(path, parents=parents)
    if settings.json_output:
        _print_json(result)


@main.command()
@click.argument("src")
@click.argument("dst")
@global_options
def mv(settings: Settings, src: str, dst: str) -> None:
    """Rename a file or directory atomically.

    Example: sandctl mv /notes.txt /docs/notes.txt
    """
    result = settings.client().mv(src, dst)
    if settings.json_output:
        _print_json(result)


@main.command()
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
        _print_json(result)


@main.command()
@click.argument("path", default="/")
@click.option("-s", "summary", is_flag=True, help="Only the total for PATH.")
@click.option("-h", "human", is_flag=True, help="Sizes as 1.5K, 3.2M, ...")
@global_options
def du(settings: Settings, path: str, summary: bool, human: bool) -> None:
    """Space used below PATH, per subdirectory: logical bytes (file sizes), chunk bytes
    (each distinct chunk once) and bytes stored with replication (chunk bytes times their
    replicas; inline files live in the replicated metadata and are not counted there).

    Example: sandctl du -s -h /
    """
    client = settings.client()
    usages: list[dict] = []
    if not summary:
        for entry in client.ls(path):
            if entry.get("type") == "dir":
                usages.append({"path": entry["path"], **client.du(entry["path"])})
    usages.append({"path": path, **client.du(path)})
    if settings.json_output:
        _print_json(usages[-1] if summary else usages)
        return
    size = _human_bytes if human else str
    rows = [[size(u.get("logical_bytes", 0)), size(u.get("stored_chunk_bytes", 0)),
             size(u.get("replicated_chunk_bytes", 0)), u.get("files", 0), u.get("dirs", 0), u["path"]]
            for u in usages]
    _print_table(rows, ["logical", "chunks", "stored with replicas", "files", "dirs", "path"])


# ---------------------------------------------------------------------- cluster state


_STATUS_HEADERS = ["node", "state", "role", "term", "leader", "commit", "applied", "log", "snapshot",
                   "last contact", "client", "chunks", "chunk bytes", "pid"]


def _status_row(node_id: str, status: dict | None, leader_status: dict | None) -> list:
    if status is None:
        return [node_id, "down"] + [""] * (len(_STATUS_HEADERS) - 2)
    chunk_bytes = status.get("chunk_bytes")
    # Last contact as the leader sees it: how long ago this node last answered the leader.
    contact = ""
    if leader_status is not None and leader_status is not status:
        contact_ms = (leader_status.get("last_contact_ms") or {}).get(node_id)
        contact = "never" if contact_ms is None else f"{contact_ms} ms ago"
    address = (status.get("addresses") or {}).get(node_id, {})
    return [
        node_id, "up", status.get("role"), status.get("term"), _blank(status.get("leader")), status.get("commit"),
        status.get("applied"), f"{status.get('first_index')}..{status.get('last_index')}",
        _blank(status.get("snapshot_index")), contact, address.get("client", ""),
        _blank(status.get("chunks_stored")), "" if chunk_bytes is None else _human_bytes(chunk_bytes),
        _blank(status.get("pid")),
    ]


def _latency(summary: dict | None) -> str:
    summary = summary or {}
    if summary.get("p50") is None:
        return "-"
    return f"p50 {summary['p50']:.2f} ms, p99 {summary['p99']:.2f} ms"


def _cluster_summary(statuses: dict[str, dict | None]) -> list[str]:
    """Cluster-wide lines under the table: the leader and its latencies, elections seen."""
    leaders = sorted({s["leader"] for s in statuses.values() if s and s.get("leader")})
    leader_id = next((node_id for node_id, s in statuses.items() if s and s.get("role") == "leader"), None)
    leader_status = statuses.get(leader_id) if leader_id else None
    elections = max((s.get("elections_seen", 0) for s in statuses.values() if s), default=0)
    up = sum(1 for s in statuses.values() if s)
    lines = [f"leader: {leader_id or 'none'}" + (f" (nodes name {', '.join(leaders)})" if len(leaders) > 1 else ""),
             f"nodes up: {up} of {len(statuses)}; elections seen: {elections}"]
    if leader_status:
        lines.append(f"commit latency: {_latency(leader_status.get('commit_latency_ms'))}; "
                     f"fsync latency: {_latency(leader_status.get('fsync_latency_ms'))}")
    return lines


@main.command()
@global_options
def status(settings: Settings) -> None:
    """Every node's state (up/down), role, term, log range, snapshot, last contact with the
    leader and stored chunks, then the cluster's leader, elections seen and commit/fsync
    latencies (p50/p99). One node only with --node.

    Example: sandctl status
    """
    client = settings.client()
    if settings.node is not None:
        statuses: dict[str, dict | None] = {settings.node: client.status(settings.node)}
    else:
        statuses = client.status_all()
    if settings.json_output:
        _print_json(statuses[settings.node] if settings.node is not None else statuses)
        return
    leader_status = next((s for s in statuses.values() if s and s.get("role") == "leader"), None)
    _print_table([_status_row(node_id, answer, leader_status) for node_id, answer in statuses.items()],
                 _STATUS_HEADERS)
    click.echo()
    for line in _cluster_summary(statuses):
        click.echo(line)


@main.group()
def cluster() -> None:
    """Run a whole cluster on this machine: start, stop, status.

    Example: sandctl cluster start --config configs/local-5.toml
    """


@cluster.command(name="start")
@global_options
def cluster_start(settings: Settings) -> None:
    """Start every node of the config as a background process, wait for a leader, and remember
    the config and data dir for later commands.

    Example: sandctl cluster start
    """
    config, data_dir = settings.config(), settings.data_dir()
    # Remembered before waiting: should no leader emerge, `sandctl cluster stop` with no
    # flags must still find the processes that were started.
    state.remember(config.path, data_dir)
    pids, leader = supervisor.start_cluster(config, data_dir, settings.deadline_seconds())
    members = [
        {"node": address.id, "pid": pids[address.id], "leader": address.id == leader, "client": address.client,
         "log": str(supervisor.log_file(data_dir, address.id))}
        for address in config.nodes
    ]
    if settings.json_output:
        _print_json({"config": config.path, "data_dir": str(data_dir), "leader": leader, "members": members})
        return
    click.echo(f"cluster of {len(members)} started from {config.path}, data in {data_dir}, leader {leader}")
    _print_table([[m["node"], m["pid"], "leader" if m["leader"] else "", m["client"], m["log"]] for m in members],
                 ["node", "pid", "role", "client", "log"])


@cluster.command(name="stop")
@click.option("--grace", "grace_seconds", type=float, default=supervisor.STOP_GRACE_SECONDS, show_default=True,
              help="Seconds to wait after SIGTERM before SIGKILL.")
@global_options
def cluster_stop(settings: Settings, grace_seconds: float) -> None:
    """Stop every node this data dir records (SIGTERM, SIGKILL after the grace period).

    Example: sandctl cluster stop
    """
    outcomes = supervisor.stop_cluster(settings.config(), settings.data_dir(), grace_seconds)
    if settings.json_output:
        _print_json(outcomes)
        return
    _print_table([[node_id, outcome] for node_id, outcome in outcomes.items()], ["node", "outcome"])


@cluster.command(name="status")
@global_options
def cluster_status(settings: Settings) -> None:
    """Every node's recorded pid, whether it runs, and its role.

    Example: sandctl cluster status
    """
    config, data_dir = settings.config(), settings.data_dir()
    processes = supervisor.node_processes(config, data_dir)
    statuses = settings.client().status_all() if any(p.alive for p in processes) else {}
    rows = []
    for process in processes:
        answer = statuses.get(process.node_id)
        role = answer.get("role") if answer else ("unreachable" if process.alive else "")
        rows.append({"node": process.node_id, "pid": process.pid, "alive": process.alive, "role": role,
                     "log": str(process.log_file)})
    if settings.json_output:
        _print_json(rows)
        return
    _print_table([[r["node"], _blank(r["pid"]), "yes" if r["alive"] else "no", r["role"], r["log"]] for r in rows],
                 ["node", "pid", "alive", "role", "log"])


@main.command(name="kill-leader")
@click.option("--restart", is_flag=True, help="Start the killed node again afterwards.")
@global_options
def kill_leader(settings: Settings, restart: bool) -> None:
    """SIGKILL the leader's process, wait for a new leader, report how long there was none.

    Example: sandctl kill-leader --restart
    """
    result = supervisor.kill_leader(settings.config(), settings.data_dir(), restart=restart,
                                    deadline_seconds=settings.deadline_seconds())
    if settings.json_output:
        _print_json(asdict(result))
        return
    click.echo(f"killed leader {result.old_leader} (pid {result.killed_pid}); new leader {result.new_leader} "
               f"after {result.leaderless_ms:.0f} ms without a leader")
    if result.restarted_pid is not None:
        click.echo(f"restarted {result.old_leader} (pid {result.restarted_pid})")


@main.group(name="node")
def node_group() -> None:
    """Start, stop or kill one node of the local cluster.

    Example: sandctl node kill n2
    """


@node_group.command(name="start")
@click.argument("node_id", metavar="ID")
@global_options
def node_start(settings: Settings, node_id: str) -> None:
    """Start one node in the background.

    Example: sandctl node start n2
    """
    pid = supervisor.spawn_node(settings.config(), settings.data_dir(), node_id)
    _report({"node": node_id, "pid": pid, "outcome": "started"}, settings)


@node_group.command(name="stop")
@click.argument("node_id", metavar="ID")
@global_options
def node_stop(settings: Settings, node_id: str) -> None:
    """Stop one node gracefully (SIGTERM, SIGKILL after a grace period).

    Example: sandctl node stop n2
    """
    settings.config().node(node_id)
    outcome = supervisor.stop_node(settings.data_dir(), node_id)
    _report({"node": node_id, "outcome": outcome}, settings)


@node_group.command(name="kill")
@click.argument("node_id", metavar="ID")
@global_options
def node_kill(settings: Settings, node_id: str) -> None:
    """SIGKILL one node, as a crash would.

    Example: sandctl node kill n2
    """
    settings.config().node(node_id)
    pid = supervisor.kill_node(settings.data_dir(), node_id)
    _report({"node": node_id, "pid": pid, "outcome": "killed"}, settings)


def _report(result: dict, settings: Settings) -> None:
    if settings.json_output:
        _print_json(result)
    else:
        click.echo(" ".join(f"{key}={value}" for key, value in result.items()))


# ---------------------------------------------------------------------- membership and admin


@main.command(name="add-voter")
@click.argument("node_id", metavar="ID")
@click.option("--raft", "raft_address", required=True, metavar="HOST:PORT", help="The new node's Raft address.")
@click.option("--client", "client_address", required=True, metavar="HOST:PORT", help="Its client address.")
@click.option("--chunk", "chunk_address", required=True, metavar="HOST:PORT", help="Its chunk address.")
@click.option("--spawn", is_flag=True, help="Also start it here, from a cluster-local copy of the config.")
@global_options
def add_voter(settings: Settings, node_id: str, raft_address: str, client_address: str, chunk_address: str,
              spawn: bool) -> None:
    """Add a node: as a learner first, then a voter once it has caught up.

    Example: sandctl add-voter n4 --raft 127.0.0.1:7004 --client 127.0.0.1:8004 --chunk 127.0.0.1:9004 --spawn
    """
    address = NodeAddress(id=node_id, raft=raft_address, client=client_address, chunk=chunk_address)
    result = supervisor.add_voter(settings.config(), settings.data_dir(), address, spawn=spawn,
                                  deadline_seconds=settings.deadline_seconds())
    _report(result, settings)


@main.command(name="remove-voter")
@click.argument("node_id", metavar="ID")
@global_options
def remove_voter(settings: Settings, node_id: str) -> None:
    """Remove a node from the cluster's membership (the leader too: it hands over once the
    change is applied). A node this machine supervises is then stopped, and the remembered
    cluster config no longer lists it.

    Example: sandctl remove-voter n4
    """
    result = supervisor.remove_voter(settings.config(), settings.data_dir(), node_id,
                                     deadline_seconds=settings.deadline_seconds())
    _report(result, settings)


@main.command(name="transfer-leader")
@click.argument("node_id", metavar="[ID]", required=False)
@global_options
def transfer_leader(settings: Settings, node_id: str | None) -> None:
    """Hand leadership to ID (or to the most up-to-date follower), then show the new leader.

    Example: sandctl transfer-leader n2
    """
    client = settings.client()
    old_leader = client.wait_for_leader(settings.deadline_seconds())
    if node_id == old_leader:
        _report({"old_leader": old_leader, "new_leader": old_leader}, settings)
        return
    result = client.transfer_leader(node_id)
    new_leader = client.wait_for_leader(settings.deadline_seconds(), exclude=(old_leader,))
    _report({"old_leader": old_leader, "new_leader": new_leader, **(result or {})}, settings)


@main.group()
def inspect() -> None:
    """Look inside a node: its Raft log and term history.

    Example: sandctl inspect log --node n1 --from 1 --limit 20
    """


@inspect.command(name="log")
@click.option("--from", "from_index", type=click.IntRange(min=0), default=None, help="First index to show.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many entries.")
@global_options
def inspect_log(settings: Settings, from_index: int | None, limit: int | None) -> None:
    """Raw log entries of one node (--node ID, else the leader).

    Example: sandctl inspect log --node n2 --from 100 --limit 10
    """
    result = settings.client().inspect_log(settings.node, from_index, limit)
    if settings.json_output:
        _print_json(result)
        return
    click.echo(f"log {result.get('first_index')}..{result.get('last_index')}")
    rows = [[e.get("index"), e.get("term"), e.get("kind"), _command_text(e.get("command"))]
            for e in result.get("entries", [])]
    _print_table(rows, ["index", "term", "kind", "command"])


def _command_text(command: object) -> str:
    text = json.dumps(command, default=_json_default, sort_keys=True)
    return text if len(text) <= 100 else text[:97] + "..."


@inspect.command(name="term")
@global_options
def inspect_term(settings: Settings) -> None:
    """Current term, vote and leader of one node (--node ID, else the leader), and the
    leader changes it has seen.

    Example: sandctl inspect term --node n3
    """
    result = settings.client().inspect_term(settings.node)
    if settings.json_output:
        _print_json(result)
        return
    click.echo(f"term {result.get('term')}, voted for {result.get('vote') or '-'}, leader {result.get('leader') or '-'}")
    rows = [[c.get("term"), c.get("leader") or "-", _wall_clock(c.get("at_ms"))] for c in result.get("leader_changes", [])]
    _print_table(rows, ["term", "leader", "seen at (UTC)"])


@main.group(invoke_without_command=True)
@global_options
def snapshot(settings: Settings) -> None:
    """Back up the cluster to a file (save), start a new cluster from one (restore), or with no
    subcommand take a snapshot and compact the log now (as `snapshot compact`).

    Example: sandctl snapshot save backup.sandbak
    """
    if click.get_current_context().invoked_subcommand is None:
        _report(settings.client().snapshot(settings.node) or {}, settings)


@snapshot.command(name="compact")
@global_options
def snapshot_compact(settings: Settings) -> None:
    """Take a snapshot and compact the log now (on --node ID, else the leader).

    Example: sandctl snapshot compact --node n2
    """
    _report(settings.client().snapshot(settings.node) or {}, settings)


@snapshot.command(name="save")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--with-data/--no-data", default=True, show_default=True,
              help="Include every chunk the namespace references (else the namespace alone).")
@global_options
def snapshot_save(settings: Settings, file: str, with_data: bool) -> None:
    """Write a consistent, checksummed backup of the namespace (one read on the leader, at a
    known applied index) and, by default, of every chunk it references, streamed to FILE.

    Example: sandctl snapshot save backup.sandbak
    """
    with contextlib.ExitStack() as bars:
        result = backup.save(settings.client(), file, with_data=with_data,
                             progress_for=lambda total: bars.enter_context(_progress_bar(settings, total, f"save {file}")))
    if settings.json_output:
        _print_json(result)
        return
    click.echo(f"saved {result['file']}: namespace at applied index {result['applied']} (digest "
               f"{result['digest'][:16]}) from {result['served_by']}, {result['chunks']} chunks "
               f"({_human_bytes(result['chunk_bytes'])}{'' if with_data else ', not included'}), "
               f"{_human_bytes(result['file_bytes'])} in {result['elapsed_seconds']:.1f} s")


@snapshot.command(name="restore")
@click.argument("file", type=click.Path(dir_okay=False))
@global_options
def snapshot_restore(settings: Settings, file: str) -> None:
    """Start a NEW cluster from the config's nodes in the new, empty --data-dir, holding exactly
    the backup's namespace and chunks; remember it like `cluster start`. A truncated or
    altered file is refused before anything is created. The config must name every node id
    the backup's chunks are stored on (typically a copy of the old config with new ports).

    Example: sandctl snapshot restore backup.sandbak --config new.toml --data-dir ./restored
    """
    if settings.data_dir_option is None:
        raise click.UsageError("snapshot restore needs --data-dir DIR (a new, empty directory)")
    with contextlib.ExitStack() as bars:
        result = backup.restore(settings.config(), settings.data_dir(), file,
                                deadline_seconds=settings.deadline_seconds(),
                                progress_for=lambda total: bars.enter_context(
                                    _progress_bar(settings, total, f"restore {file}")))
    if settings.json_output:
        _print_json(result)
        return
    click.echo(f"restored {result['file']} into a new cluster of {len(result['pids'])} in {result['data_dir']}, "
               f"leader {result['leader']}: applied index {result['applied']}, digest {result['digest'][:16]}, "
               f"{result['chunks']} chunks ({_human_bytes(result['chunk_bytes'])}) in "
               f"{result['elapsed_seconds']:.1f} s")


@main.command()
@click.option("--dry-run", is_flag=True, help="Only report what would be deleted.")
@global_options
def gc(settings: Settings, dry_run: bool) -> None:
    """Delete the chunks no file references that have been unreferenced longer than the grace
    period (the config's gc_grace_seconds), on every node (or on --node ID), and report per
    node. Exits 3 if a node did not answer, 1 if a node refused (it is not in touch with a
    leader, so it cannot tell which chunks are referenced); the others still collected.

    Example: sandctl gc --dry-run
    """
    client = settings.client()
    node_ids = [settings.node] if settings.node is not None else list(client.addresses)
    answers = client.broadcast("gc", {"dry_run": dry_run}, node_ids)
    results = {node_id: answer if isinstance(answer, dict) else {"error": str(answer or "no answer")}
               for node_id, answer in answers.items()}
    if settings.json_output:
        _print_json(results)
    else:
        deleted = "would delete" if dry_run else "deleted"
        rows = [[node_id, r.get("unreferenced", ""), r.get("deleted", ""),
                 "" if "deleted_bytes" not in r else _human_bytes(r["deleted_bytes"]), r.get("error", "")]
                for node_id, r in results.items()]
        _print_table(rows, ["node", "unreferenced", deleted, f"{deleted} bytes", "error"])
    silent = sorted(node_id for node_id, answer in answers.items() if answer is None)
    refused = sorted(node_id for node_id, answer in answers.items() if isinstance(answer, SandStoreError))
    if silent:
        raise Unavailable(f"gc did not run on {', '.join(silent + refused)}: no answer from {', '.join(silent)}")
    if refused:
        # e.g. a node cut off from the leader: it cannot tell which chunks new files reference.
        raise Refused(f"gc skipped on {', '.join(refused)}: {answers[refused[0]]}")


# `sandctl bench` keeps its own workload options (sandctl/bench.py) and takes the shared ones
# here; --node and --timeout do not apply to it (it talks to every node, with its own deadlines).
_BENCH_OWN_PARAMS = [param for param in bench_command.params
                     if param.name not in ("config_option", "data_dir_option", "as_json")]


def _bench(settings: Settings, **options) -> None:
    assert bench_command.callback is not None
    bench_command.callback(config_option=settings.config_option, data_dir_option=settings.data_dir_option,
                           as_json=settings.json_output, **options)


main.add_command(click.command("bench", params=list(_BENCH_OWN_PARAMS), help=bench_command.help,
                                short_help=bench_command.short_help)(global_options(_bench)))


def _wall_clock(epoch_ms: int | None) -> str:
    if epoch_ms is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(epoch_ms / 1000, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


if __name__ == "__main__":
    main()
