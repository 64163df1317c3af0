"""Self-healing data, client side: fsck and rebalance, asked of the leader.

fsck's exit status (documented in `sandctl fsck --help` and the README):
  0  every file healthy: each chunk has `replication` live copies
  1  some file under-replicated or with a corrupt copy, but every chunk readable
  5  some file has a missing chunk: no live copy (unreadable until a node holding it returns)
"""

from __future__ import annotations

from node.errors import SandStoreError

from sandctl.client import Client

EXIT_HEALTHY = 0
EXIT_DEGRADED = 1
EXIT_MISSING = 5

STATES = ("healthy", "under-replicated", "corrupt", "missing")


def fsck(client: Client, path: str = "/", files_max: int | None = None) -> dict:
    """The leader's report for every file under path (see node/repair/fsck.py)."""
    args = {"path": path} if files_max is None else {"path": path, "files_max": files_max}
    return client.call("fsck", args)


def exit_status(report: dict) -> int:
    totals = report["totals"]
    if totals.get("missing"):
        return EXIT_MISSING
    if totals.get("under-replicated") or totals.get("corrupt"):
        return EXIT_DEGRADED
    return EXIT_HEALTHY


def rebalance(client: Client) -> dict:
    """Ask the leader to move replicas until used bytes per node are within the configured
    spread (copy, record, then drop); returns at once with the used bytes it started from."""
    return client.call("rebalance", {})


def repair_lines(repair: dict) -> list[str]:
    """Repair progress for humans (the leader's status "repair" record)."""
    if not repair or not repair.get("leader"):
        return []
    rate = repair.get("rate_bytes_per_second", 0)
    return [f"chunks: {repair.get('chunks', 0)}; under-replicated: {repair.get('under_replicated_chunks', 0)}, "
            f"missing: {repair.get('missing_chunks', 0)}, corrupt: {repair.get('corrupt_chunks', 0)}",
            f"repair: {_mib(repair.get('bytes_left', 0))} left at {_mib(rate)}/s, "
            f"{repair.get('copies_in_flight', 0)} copies in flight"
            + ("; rebalancing" if repair.get("rebalancing") else "")]


def _mib(count: int) -> str:
    return f"{count / (1 << 20):.1f} MiB"


def chunk_states(client: Client, path: str) -> dict[str, dict]:
    """For `stat --chunks`: by chunk id (hex), the chunks of path that are not healthy, with
    their live replicas, the others and why ("down", "dead", "missing", "removed"), and the
    node a repair copy is being made to. Empty when the leader cannot be asked (the recorded
    replicas are shown as they are)."""
    try:
        report = fsck(client, path, files_max=1)
    except SandStoreError:
        return {}
    return {chunk["id"]: chunk for entry in report["files"] for chunk in entry["bad_chunks"]}
