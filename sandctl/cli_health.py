"""The verbs that show the cluster's state: status, member list, promote, inspect log/term.
cli.py registers them."""

from __future__ import annotations

import click

from node.errors import SandStoreError, Unavailable

from sandctl import cluster as supervisor
from sandctl import output
from sandctl import repair  # self-healing data: the leader's repair progress
from sandctl.cli_base import Settings, global_options, node_option
from sandctl.errors import EXIT_UNAVAILABLE
from sandctl.health import MEMORY_NOTE, Health, health_of, leader_of, membership_of, process_memory, role_of

COMMANDS: list[click.Command] = []

STATUS_HELP = f"""Every node's state (up/down), role, term, commit/applied, log range, last contact
with the leader and stored chunks, after a one-line health summary. Exits 3 when there is no
leader or no quorum (a health check for scripts). --wide adds the leader each node knows,
snapshot, client address, chunk bytes, pid and, for nodes on this machine, memory: RSS and
the anonymous part. {MEMORY_NOTE}.

Example: sandctl status --wide
"""

_STATUS_COLUMNS = ["node", "state", "role", "term", "commit", "applied", "log", "last contact", "chunks"]
_WIDE_COLUMNS = ["leader", "snapshot", "client", "chunk bytes", "pid", "rss", "anon"]


def _contact_text(node_id: str, status: dict, leader_status: dict | None) -> str:
    # Last contact as the leader sees it: how long ago this node last answered the leader.
    if leader_status is None or leader_status is status:
        return ""
    contact_ms = (leader_status.get("last_contact_ms") or {}).get(node_id)
    return "never" if contact_ms is None else f"{contact_ms} ms ago"


def _local_memory(node_id: str, status: dict) -> dict | None:
    pid = status.get("pid")
    if not isinstance(pid, int) or not supervisor.is_node_process(pid, node_id):
        return None  # not a node on this machine (or its pid was reused)
    return process_memory(pid)


def status_row(node_id: str, status: dict | None, health: Health, leader_status: dict | None, wide: bool) -> list:
    columns = len(_STATUS_COLUMNS) + (len(_WIDE_COLUMNS) if wide else 0)
    if status is None:
        return [node_id, "down"] + [""] * (columns - 2)
    row = [node_id, "up", role_of(node_id, status, health), status.get("term"), status.get("commit"),
           status.get("applied"), f"{status.get('first_index')}..{status.get('last_index')}",
           _contact_text(node_id, status, leader_status), status.get("chunks_stored")]
    if wide:
        memory = _local_memory(node_id, status) or {}
        chunk_bytes = status.get("chunk_bytes")
        address = (status.get("addresses") or {}).get(node_id, {})
        row += [status.get("leader") or "", status.get("snapshot_index"), address.get("client", ""),
                "" if chunk_bytes is None else output.human_bytes(chunk_bytes), status.get("pid"),
                output.human_bytes(memory["rss_bytes"]) if memory else "",
                output.human_bytes(memory["anonymous_bytes"]) if memory else ""]
    return row


def _latency(summary: dict | None) -> str:
    summary = summary or {}
    if summary.get("p50") is None:
        return "-"
    return f"p50 {summary['p50']:.2f} ms, p99 {summary['p99']:.2f} ms"


@click.command(help=STATUS_HELP)
@click.option("-w", "--wide", "wide", is_flag=True, help="All columns (wider than 100 characters).")
@node_option("Show only node ID (exit 3 if it does not answer).")
@global_options
def status(settings: Settings, wide: bool) -> None:
    client = settings.client()
    if settings.node is not None:
        statuses: dict[str, dict | None] = {settings.node: client.status(settings.node)}
    else:
        statuses = client.status_all()
    health = health_of(statuses)
    if settings.json_output:
        output.print_json(statuses[settings.node] if settings.node is not None else statuses)
    else:
        if settings.node is None:
            click.echo(health.summary())
        leader = leader_of(statuses)
        leader_status = statuses.get(leader) if leader else None
        columns = _STATUS_COLUMNS + (_WIDE_COLUMNS if wide else [])
        output.print_table([status_row(node_id, answer, health, leader_status, wide)
                            for node_id, answer in statuses.items()], columns)
        if leader_status:
            elections = max((s.get("elections_seen", 0) for s in statuses.values() if s), default=0)
            click.echo(f"commit latency {_latency(leader_status.get('commit_latency_ms'))}; fsync latency "
                       f"{_latency(leader_status.get('fsync_latency_ms'))}; elections seen: {elections}")
            for line in repair.repair_lines(leader_status.get("repair") or {}):
                click.echo(line)
        click.echo(security_line(statuses))
    if settings.node is None and not health.healthy:
        raise click.exceptions.Exit(EXIT_UNAVAILABLE)


COMMANDS.append(status)


def security_line(statuses: dict) -> str:
    """How the answering nodes secure their ports: one line, loud when any runs in plain text."""
    securities = [answer.get("security") or {} for answer in statuses.values() if isinstance(answer, dict)]
    plaintext = [s for s in securities if s.get("mode") == "plaintext"]
    if plaintext:
        return f"WARNING: {plaintext[0].get('warning') or 'SECURITY IS OFF (plaintext)'}"
    cluster_ids = sorted({s.get("cluster_id") for s in securities if s.get("cluster_id")})
    return f"security: CurveZMQ on every port, cluster {', '.join(cluster_ids) or '?'}"


# ---------------------------------------------------------------------- membership


@click.group(name="member")
def member_group() -> None:
    """The cluster's members: voters, learners, their addresses and health.

    Example: sandctl member list
    """


@member_group.command(name="list")
@global_options
def member_list(settings: Settings) -> None:
    """Every member (voters and learners, as the leader sees them, plus nodes of the config
    that are not members), its addresses, whether it answers, and how far it has applied.
    Exits 3 if no node answers.

    Example: sandctl member list
    """
    client = settings.client()
    statuses = client.status_all()
    health = health_of(statuses)
    if health.nodes_up == 0:
        raise Unavailable(health.summary())
    source = statuses[health.leader] if health.leader else next(s for s in statuses.values() if s)
    addresses = source.get("addresses") or {}
    node_ids = list(dict.fromkeys([*health.voters, *health.voters_outgoing, *health.learners, *statuses]))
    leader_applied = source.get("applied", 0)
    members = []
    for node_id in node_ids:
        status = statuses.get(node_id)
        address = addresses.get(node_id) or {}
        members.append({
            "node": node_id, "membership": membership_of(node_id, health), "state": "up" if status else "down",
            "role": role_of(node_id, status, health) or None, "raft": address.get("raft"),
            "client": address.get("client") or client.addresses.get(node_id), "chunk": address.get("chunk"),
            "applied": status.get("applied") if status else None,
            "behind": max(0, leader_applied - status.get("applied", 0)) if status else None,
        })
    if settings.json_output:
        output.print_json({"health": health.as_dict(), "members": members})
        return
    click.echo(health.summary())
    output.print_table([[m["node"], m["membership"], m["state"], m["role"], m["applied"], m["behind"], m["raft"],
                         m["client"], m["chunk"]] for m in members],
                       ["node", "membership", "state", "role", "applied", "behind", "raft", "client", "chunk"])


COMMANDS.append(member_group)


@click.command()
@click.argument("node_id", metavar="ID")
@global_options
def promote(settings: Settings, node_id: str) -> None:
    """Make learner ID a voter (the leader refuses while it is behind: exit 1, retry later).
    `sandctl add-voter` adds a learner and promotes it in one go.

    Example: sandctl promote n4
    """
    result = settings.require_reachable().promote(node_id) or {}
    record = {"node": node_id, "membership": "voter", **result}
    if settings.json_output:
        output.print_json(record)
    else:
        output.print_record(list(record.items()))


COMMANDS.append(promote)


# ---------------------------------------------------------------------- inspect


@click.group()
def inspect() -> None:
    """Look inside a node: its Raft log and term history.

    Example: sandctl inspect log --all-nodes
    """


COMMANDS.append(inspect)

INSPECT_LIMIT_DEFAULT = 20
DETAILS_WIDTH_MAX = 60
_NOT_DETAILS = frozenset({"op", "path", "client", "seq", "now_ns", "src", "dst"})


def entry_cells(entry: dict) -> tuple[str, str, str]:
    """(op, path, details) of a described log entry: what changed and where, first."""
    command = entry.get("command") or {}
    kind = entry.get("kind")
    if kind == "conf_change":
        return "membership", "", " ".join(f"{step} {node}" for step, node in command.get("steps", []))
    if kind != "normal" or "op" not in command:
        return str(kind), "", ""
    if "src" in command:
        path = f"{command.get('src')} -> {command.get('dst')}"
    else:
        path = str(command.get("path", ""))
    details = {name: value for name, value in command.items() if name not in _NOT_DETAILS}
    if isinstance(details.get("chunks"), list):
        details["chunks"] = len(details["chunks"])
    text = output.compact_json_text(details) if details else ""
    return str(command["op"]), path, text if len(text) <= DETAILS_WIDTH_MAX else text[:DETAILS_WIDTH_MAX - 3] + "..."


def _inspected_node(settings: Settings) -> str:
    client = settings.require_reachable()
    return settings.node if settings.node is not None else client.wait_for_leader(settings.deadline_seconds())


@inspect.command(name="log")
@click.option("--from", "from_index", type=click.IntRange(min=1), default=None,
              help="First index to show (default: the newest --limit entries).")
@click.option("--limit", type=click.IntRange(min=1), default=INSPECT_LIMIT_DEFAULT, show_default=True,
              help="At most this many entries.")
@click.option("--all-nodes", is_flag=True,
              help="The same indexes on every node, side by side: applied, committed, appended, missing.")
@node_option("The node whose log to show (default: the leader).")
@global_options
def inspect_log(settings: Settings, from_index: int | None, limit: int, all_nodes: bool) -> None:
    """A node's log entries, decoded: the newest by default (--from and --limit page back),
    each with its op and path first. --all-nodes shows one row per index and one column per
    node, so replication is visible at a glance.

    Example: sandctl inspect log --from 100 --limit 10
    """
    node_id = _inspected_node(settings)
    client = settings.client()
    result = client.inspect_log(node_id, from_index, limit)
    entries = result.get("entries", [])
    if all_nodes:
        _inspect_all_nodes(settings, node_id, result, limit)
        return
    if settings.json_output:
        output.print_json(result)
        return
    click.echo(_window_line(node_id, result, limit))
    output.print_table([[e.get("index"), e.get("term"), *entry_cells(e)] for e in entries],
                       ["index", "term", "op", "path", "details"])


def _window_line(node_id: str, result: dict, limit: int) -> str:
    entries = result.get("entries", [])
    span = f"{result.get('first_index')}..{result.get('last_index')}"
    if not entries:
        return f"{node_id}'s log holds {span}; no entries in that range"
    first, last = entries[0]["index"], entries[-1]["index"]
    older = f"; older: --from {max(result.get('first_index') or 1, first - limit)}" if first > (result.get("first_index") or 1) else ""
    return f"{node_id}'s log holds {span}; showing {first}..{last}{older}"


def replication_cell(index: int, term: int, entry: dict | None, status: dict | None, log: dict | None) -> str:
    """How one node holds log index `index` (of leader term `term`)."""
    if status is None or log is None:
        return "down"
    if entry is None:
        if index < (log.get("first_index") or 0) and index <= status.get("applied", 0):
            return "compacted"  # applied, then folded into a snapshot
        return "missing"
    if entry.get("term") != term:
        return f"term {entry.get('term')}!"  # a different entry: it will be replaced
    if index <= status.get("applied", 0):
        return "applied"
    if index <= status.get("commit", 0):
        return "committed"
    return "appended"


def _inspect_all_nodes(settings: Settings, reference: str, result: dict, limit: int) -> None:
    client = settings.client()
    entries = result.get("entries", [])
    statuses = client.status_all()
    logs: dict[str, dict | None] = {}
    for node_id, status in statuses.items():
        if status is None:
            logs[node_id] = None
        elif node_id == reference:
            logs[node_id] = result
        elif entries:
            try:
                logs[node_id] = client.inspect_log(node_id, entries[0]["index"], limit)
            except SandStoreError:
                logs[node_id] = None
        else:
            logs[node_id] = {"entries": []}
    by_node = {node_id: {e["index"]: e for e in (log or {}).get("entries", [])} for node_id, log in logs.items()}
    rows = []
    for entry in entries:
        index, term = entry["index"], entry["term"]
        cells = {node_id: replication_cell(index, term, by_node[node_id].get(index), statuses[node_id], logs[node_id])
                 for node_id in statuses}
        rows.append((entry, cells))
    if settings.json_output:
        output.print_json({"reference": reference, "entries": [
            {"index": e["index"], "term": e["term"], "op": entry_cells(e)[0], "path": entry_cells(e)[1], "nodes": c}
            for e, c in rows]})
        return
    click.echo(_window_line(reference, result, limit) + " (rows: that node's entries; columns: every node)")
    output.print_table([[e["index"], e["term"], *entry_cells(e)[:2], *c.values()] for e, c in rows],
                       ["index", "term", "op", "path", *statuses])


@inspect.command(name="term")
@node_option("The node to ask (default: the leader).")
@global_options
def inspect_term(settings: Settings) -> None:
    """Current term, vote and leader of one node, and the leader changes it has seen.

    Example: sandctl inspect term --node n3
    """
    result = settings.client().inspect_term(_inspected_node(settings))
    if settings.json_output:
        output.print_json(result)
        return
    output.print_record([("term", result.get("term")), ("voted for", result.get("vote")),
                         ("leader", result.get("leader"))])
    click.echo()
    rows = [[c.get("term"), c.get("leader"), output.wall_clock_text(c.get("at_ms"))]
            for c in result.get("leader_changes", [])]
    output.print_table(rows, ["term", "leader", "seen at (UTC)"])

