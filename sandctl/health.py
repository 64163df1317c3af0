"""The cluster's health as `sandctl status` and `sandctl member list` report it, computed from
one round of every node's status (pure functions of those answers, so tests feed them).

Healthy means: a leader, and a majority of the voters answering. Anything else is unhealthy
and `sandctl status` exits 3, so scripts can use it as a health check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Health:
    healthy: bool
    leader: str | None
    term: int | None
    voters: tuple[str, ...]
    learners: tuple[str, ...]
    voters_outgoing: tuple[str, ...]
    voters_up: int
    nodes_up: int
    nodes_known: int

    def summary(self) -> str:
        """One line: `healthy: leader n1 (term 3), 3/3 voters up` or why it is not."""
        voters = f"{self.voters_up}/{len(self.voters)} voters up"
        learners = f", {len(self.learners)} learner{'s' if len(self.learners) != 1 else ''}" if self.learners else ""
        if self.nodes_up == 0:
            return (f"unhealthy: no node answered (0/{self.nodes_known} up): is the cluster running? "
                    "(start it with `sandctl cluster start`)")
        if self.leader is None:
            return f"unhealthy: no leader ({voters}{learners})"
        if not self.healthy:
            return f"unhealthy: leader {self.leader} (term {self.term}) but only {voters}: no quorum{learners}"
        return f"healthy: leader {self.leader} (term {self.term}), {voters}{learners}"

    def as_dict(self) -> dict:
        return {"healthy": self.healthy, "leader": self.leader, "term": self.term, "voters": list(self.voters),
                "learners": list(self.learners), "voters_up": self.voters_up, "nodes_up": self.nodes_up,
                "summary": self.summary()}


def leader_of(statuses: dict[str, dict | None]) -> str | None:
    """The node that says it leads, in the highest term (a deposed leader may not know yet)."""
    leaders = [(status.get("term", 0), node_id) for node_id, status in statuses.items()
               if status and status.get("role") == "leader"]
    return max(leaders)[1] if leaders else None


def membership_source(statuses: dict[str, dict | None]) -> dict | None:
    """The status whose view of the membership to trust: the leader's, else the most recent."""
    leader = leader_of(statuses)
    if leader is not None:
        return statuses[leader]
    answered = [status for status in statuses.values() if status]
    return max(answered, key=lambda status: (status.get("term", 0), status.get("commit", 0))) if answered else None


def health_of(statuses: dict[str, dict | None]) -> Health:
    source = membership_source(statuses)
    voters = tuple(source.get("voters") or ()) if source else tuple(statuses)
    outgoing = tuple(source.get("voters_outgoing") or ()) if source else ()
    learners = tuple(source.get("learners") or ()) if source else ()
    leader = leader_of(statuses)

    def up(node_id: str) -> bool:
        return bool(statuses.get(node_id))

    voters_up = sum(1 for node_id in voters if up(node_id))
    # During a joint change both the old and the new voter sets need their majority.
    quorum = voters_up >= len(voters) // 2 + 1 and (
        not outgoing or sum(1 for node_id in outgoing if up(node_id)) >= len(outgoing) // 2 + 1)
    return Health(
        healthy=leader is not None and quorum, leader=leader,
        term=statuses[leader].get("term") if leader else None, voters=voters, learners=learners,
        voters_outgoing=outgoing, voters_up=voters_up, nodes_up=sum(1 for status in statuses.values() if status),
        nodes_known=len(statuses),
    )


def role_of(node_id: str, status: dict | None, health: Health) -> str:
    """The node's role as a user thinks of it: a learner says "follower" in Raft terms."""
    if status is None:
        return ""
    role = str(status.get("role", ""))
    if role == "follower" and node_id in health.learners:
        return "learner"
    return role


def membership_of(node_id: str, health: Health) -> str:
    if node_id in health.voters and node_id in health.voters_outgoing:
        return "voter"
    if node_id in health.voters:
        return "voter (joining)" if health.voters_outgoing else "voter"
    if node_id in health.voters_outgoing:
        return "voter (leaving)"
    if node_id in health.learners:
        return "learner"
    return "not a member"


# ---------------------------------------------------------------------- node memory


# Why a node's RSS looks large: LMDB maps its data file, and every page a read touched counts
# in RSS while it stays mapped, although the kernel can drop it at any time (it is the file's
# page cache). The node's own (anonymous) memory is what to watch.
MEMORY_NOTE = ("RSS includes LMDB's mapped file pages (page cache the kernel can reclaim); a node's own "
               "memory is its anonymous memory (`grep -E 'Rss|Pss|Anonymous|Private' /proc/PID/smaps_rollup`)")


def process_memory(pid: int) -> dict | None:
    """{"rss_bytes", "anonymous_bytes", "file_bytes"} of a local process, or None if unreadable."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            fields[name.strip()] = int(parts[0]) * 1024
    if "Rss" not in fields:
        return None
    anonymous = fields.get("Anonymous", 0)
    return {"rss_bytes": fields["Rss"], "anonymous_bytes": anonymous, "file_bytes": fields["Rss"] - anonymous}
