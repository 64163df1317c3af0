"""sandctl: the command line of SandStore. Each verb parses its options, calls one client or
supervisor function, and formats the result with sandctl/output.py (a table, a record, or
JSON with --json).

The verbs live in small modules: the file verbs in sandctl/cli_files.py, status, member,
promote and inspect in sandctl/cli_health.py, the cluster supervision and admin verbs here.
Errors become one line `Error: ...` on stderr and a documented exit status, in one place:
`exit_for` in sandctl/cli_base.py (called by the shared `global_options` decorator).
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import asdict

import click

from node.config import NodeAddress
from node.errors import Refused, SandStoreError, Unavailable
from node.large_buffers import keep_freed_buffers

from sandctl import backup
from sandctl import cli_files, cli_health, cli_repair, output
from sandctl import cluster as supervisor
from sandctl import state
from sandctl.bench import bench_command
from sandctl.cli_base import Settings, global_options, node_option
from sandctl.cli_files import _progress_bar
from sandctl.errors import EXIT_REFUSED, NodeExited
from sandctl.keys import keys_group

MAIN_HELP = """SandStore's command line: files, cluster status, local cluster supervision.

\b
The cluster comes from --config, else $SANDSTORE_CONFIG, else the config remembered by
`sandctl cluster start` (~/.sandstore/cluster.json), else configs/local-3.toml.

\b
Overwriting (put, get, cp, mv): an existing target is refused unless -f; -n skips it.

\b
Exit status:
  0    success
  1    refused, nothing changed (exists, not a directory, not empty, invalid path,
       too large, invalid config, local file error, ...)
  2    usage error (also --json on cat, head, tail: they print the file's bytes)
  3    cluster unavailable or no leader, nothing changed (status: unhealthy)
  4    timed out, outcome unknown (the write may or may not have been applied)
  5    not found (remote path, local file or --config file)
  141  stdout closed early (`sandctl cat /big | head`), as for any program killed by SIGPIPE

Example: sandctl cluster start && sandctl put notes.txt /notes.txt && sandctl ls -l /
"""


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
    # sandctl's own process moves chunks through multi-MiB buffers (put, get, bench): keep
    # them for reuse (node/large_buffers.py). Here, not in the transfer library, because the
    # setting is process-wide: a program that imports sandctl keeps its own malloc policy.
    keep_freed_buffers()


for _command in cli_files.COMMANDS + cli_health.COMMANDS + cli_repair.COMMANDS:
    main.add_command(_command)


def _report(result: dict, settings: Settings) -> None:
    """A single result: JSON, or aligned `label  value` lines (absent values as "-")."""
    if settings.json_output:
        output.print_json(result)
    else:
        output.print_record([(key.replace("_", " "), value) for key, value in result.items()])


# Names the backup verbs below were written against.
_print_json = output.print_json
_human_bytes = output.human_bytes


# ---------------------------------------------------------------------- local cluster


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
    previous = state.load_state()
    state.remember(config.path, data_dir)
    try:
        pids, leader = supervisor.start_cluster(config, data_dir, settings.deadline_seconds())
    except NodeExited:
        # Nothing of this cluster runs (start stopped what it started): keep the cluster that was
        # remembered, which may be the very one holding these ports.
        if isinstance(previous.get("config"), str) and isinstance(previous.get("data_dir"), str):
            state.remember(previous["config"], previous["data_dir"])
        else:
            state.state_path().unlink(missing_ok=True)
        raise
    members = [
        {"node": address.id, "pid": pids[address.id], "leader": address.id == leader, "client": address.client,
         "log": str(supervisor.log_file(data_dir, address.id))}
        for address in config.nodes
    ]
    if settings.json_output:
        output.print_json({"config": config.path, "data_dir": str(data_dir), "leader": leader, "members": members})
        return
    click.echo(f"cluster of {len(members)} started from {config.path}, data in {data_dir}, leader {leader}")
    output.print_table([[m["node"], m["pid"], "leader" if m["leader"] else "", m["client"], m["log"]]
                        for m in members], ["node", "pid", "role", "client", "log"])


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
        output.print_json(outcomes)
        return
    output.print_table([[node_id, outcome] for node_id, outcome in outcomes.items()], ["node", "outcome"])


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
        output.print_json(rows)
        return
    output.print_table([[r["node"], r["pid"], "yes" if r["alive"] else "no", r["role"], r["log"]] for r in rows],
                       ["node", "pid", "alive", "role", "log"])


@main.command(name="kill-leader")
@click.option("--restart", is_flag=True, help="Start the killed node again afterwards.")
@global_options
def kill_leader(settings: Settings, restart: bool) -> None:
    """SIGKILL the leader's process, wait for a new leader, report how long there was none.

    Example: sandctl kill-leader --restart
    """
    settings.require_reachable()
    result = supervisor.kill_leader(settings.config(), settings.data_dir(), restart=restart,
                                    deadline_seconds=settings.deadline_seconds())
    _report({"killed leader": result.old_leader, "killed pid": result.killed_pid, "new leader": result.new_leader,
             "leaderless ms": round(result.leaderless_ms), "restarted pid": result.restarted_pid}
            if not settings.json_output else asdict(result), settings)


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
    settings.require_reachable()
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
    settings.require_reachable()
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
    client = settings.require_reachable()
    old_leader = client.wait_for_leader(settings.deadline_seconds())
    if node_id == old_leader:
        _report({"old_leader": old_leader, "new_leader": old_leader}, settings)
        return
    result = client.transfer_leader(node_id)
    new_leader = client.wait_for_leader(settings.deadline_seconds(), exclude=(old_leader,))
    _report({"old_leader": old_leader, "new_leader": new_leader, **(result or {})}, settings)


@main.group(invoke_without_command=True)
@node_option("Snapshot node ID (default: the leader).")
@global_options
def snapshot(settings: Settings) -> None:
    """Back up the cluster to a file (save), start a new cluster from one (restore), or with no
    subcommand take a snapshot and compact the log now (as `snapshot compact`).

    Example: sandctl snapshot save backup.sandbak
    """
    if click.get_current_context().invoked_subcommand is None:
        _report(settings.require_reachable().snapshot(settings.node) or {}, settings)


@snapshot.command(name="compact")
@node_option("Snapshot node ID (default: the leader).")
@global_options
def snapshot_compact(settings: Settings) -> None:
    """Take a snapshot and compact the log now (on --node ID, else the leader).

    Example: sandctl snapshot compact --node n2
    """
    _report(settings.require_reachable().snapshot(settings.node) or {}, settings)


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
@node_option("Collect on node ID only (default: every node).")
@global_options
def gc(settings: Settings, dry_run: bool) -> None:
    """Delete the chunks no file references that have been unreferenced longer than the grace
    period (the config's gc_grace_seconds), on every node (or on --node ID), and report per
    node. Exits 3 if a node did not answer, 1 if a node refused (it is not in touch with a
    leader, so it cannot tell which chunks are referenced); the others still collected.

    Example: sandctl gc --dry-run
    """
    client = settings.require_reachable()
    node_ids = [settings.node] if settings.node is not None else list(client.addresses)
    answers = client.broadcast("gc", {"dry_run": dry_run}, node_ids)
    results = {node_id: answer if isinstance(answer, dict) else {"error": str(answer or "no answer")}
               for node_id, answer in answers.items()}
    if settings.json_output:
        output.print_json(results)
    else:
        deleted = "would delete" if dry_run else "deleted"
        rows = [[node_id, r.get("unreferenced", ""), r.get("deleted", ""),
                 "" if "deleted_bytes" not in r else output.human_bytes(r["deleted_bytes"]), r.get("error", "")]
                for node_id, r in results.items()]
        output.print_table(rows, ["node", "unreferenced", deleted, f"{deleted} bytes", "error"])
    silent = sorted(node_id for node_id, answer in answers.items() if answer is None)
    refused = sorted(node_id for node_id, answer in answers.items() if isinstance(answer, SandStoreError))
    if silent:
        raise Unavailable(f"gc did not run on {', '.join(silent + refused)}: no answer from {', '.join(silent)}")
    if refused:
        # e.g. a node cut off from the leader: it cannot tell which chunks new files reference.
        raise Refused(f"gc skipped on {', '.join(refused)}: {answers[refused[0]]}")


# `sandctl bench` keeps its own workload options (sandctl/bench.py) and takes the shared ones
# here; --timeout does not apply to it (it talks to every node, with its own deadlines).
_BENCH_OWN_PARAMS = [param for param in bench_command.params
                     if param.name not in ("config_option", "data_dir_option", "as_json")]


def _bench(settings: Settings, **options) -> None:
    assert bench_command.callback is not None
    bench_command.callback(config_option=settings.config_option, data_dir_option=settings.data_dir_option,
                           as_json=settings.json_output, **options)


main.add_command(click.command("bench", params=list(_BENCH_OWN_PARAMS), help=bench_command.help,
                                short_help=bench_command.short_help)(global_options(_bench)))
main.add_command(keys_group)  # sandctl keys create-client|list|revoke (sandctl/keys.py)


if __name__ == "__main__":
    main()
