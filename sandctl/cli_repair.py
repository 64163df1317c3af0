"""The verbs of self-healing data: fsck and rebalance. cli.py registers them."""

from __future__ import annotations

import click

from sandctl import output
from sandctl import repair
from sandctl.cli_base import Settings, global_options

COMMANDS: list[click.Command] = []

FSCK_HELP = """Check every file under PATH (default /): healthy (every chunk has `replication`
live copies), under-replicated (fewer, but readable: the leader is repairing it), corrupt (a
copy was found corrupt and is being repaired from a good one) or missing (some chunk has no
live copy). Lists the files that are not healthy (all with -v), then totals and repair
progress.

\b
Exit status:
  0  every file healthy
  1  some file under-replicated or corrupt, every chunk readable
  5  some chunk missing (no live copy)
  3  cluster unavailable or no leader

Example: sandctl fsck / && echo all healthy
"""


@click.command(name="fsck", help=FSCK_HELP)
@click.argument("path", default="/")
@click.option("-v", "verbose", is_flag=True, help="List healthy files too.")
@global_options
def fsck_command(settings: Settings, path: str, verbose: bool) -> None:
    report = repair.fsck(settings.client(), path)
    if settings.json_output:
        output.print_json(report)
    else:
        rows = [[entry["state"], entry["path"], entry["size"], entry["chunks"],
                 "" if entry["live_copies_min"] is None else entry["live_copies_min"]]
                for entry in report["files"] if verbose or entry["state"] != "healthy"]
        if rows:
            output.print_table(rows, ["state", "path", "size", "chunks", "fewest live copies"])
            click.echo()
        totals = report["totals"]
        click.echo(f"files: {totals['files']}; " + ", ".join(f"{state}: {totals.get(state, 0)}" for state in repair.STATES)
                   + (" (truncated)" if report.get("truncated") else ""))
        chunk_totals = report["chunk_totals"]
        click.echo(f"chunks: {chunk_totals['chunks']}; "
                   + ", ".join(f"{state}: {chunk_totals.get(state, 0)}" for state in repair.STATES)
                   + f"; target {report.get('target')} live copies each" + _capped(report))
        for line in repair.repair_lines(report.get("repair") or {})[1:]:
            click.echo(line)
    raise click.exceptions.Exit(repair.exit_status(report))


COMMANDS.append(fsck_command)


@click.command(name="rebalance")
@global_options
def rebalance_command(settings: Settings) -> None:
    """Move replicas so that used bytes per node are within rebalance_spread_fraction of their
    mean (each move: copy, verify and record the new copy, then drop the old one). Returns at
    once; `sandctl status` shows the progress. New nodes also receive a slow trickle of moves
    without asking.

    Example: sandctl rebalance && sandctl status
    """
    result = repair.rebalance(settings.client())
    if settings.json_output:
        output.print_json(result)
        return
    used = result.get("used_bytes") or {}
    if used:
        output.print_table([[node, output.human_bytes(count)] for node, count in sorted(used.items())],
                           ["node", "used (live copies)"])
    click.echo("rebalance started")


COMMANDS.append(rebalance_command)


def _capped(report: dict) -> str:
    """Say why the target is below the replication factor: fewer members than copies."""
    target, replication = report.get("target"), report.get("replication")
    if isinstance(target, int) and isinstance(replication, int) and target < replication:
        return f" (replication {replication}, but the cluster has {target} member{'s' if target != 1 else ''})"
    return ""
