"""Pure classification of replicas and chunks, shared by the planner and by fsck.

A recorded replica is, as the leader sees it now:
  LIVE     on a member that answers, which holds the chunk (or whose inventory is not known yet)
  MISSING  on a member that answers but was found to lack it (lost disk, corrupt copy removed)
  DOWN     on a member silent for less than replica_timeout_seconds: not live, not replaced yet
  DEAD     on a member silent for longer: its copy is re-made elsewhere
  REMOVED  on a node that is no longer a member: re-made elsewhere, and the record is dropped

A chunk is HEALTHY with at least `target` live copies (replication, capped by the members),
UNDER_REPLICATED with fewer, CORRUPT if a copy was found corrupt and it is not yet healthy
again, and MISSING with no live copy at all (unreadable until a node holding it returns).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Mapping


class Replica(enum.Enum):
    LIVE = "live"
    MISSING = "missing"
    DOWN = "down"
    DEAD = "dead"
    REMOVED = "removed"


class Health(enum.IntEnum):
    """Ordered by severity: a file is as bad as its worst chunk."""

    HEALTHY = 0
    UNDER_REPLICATED = 1
    CORRUPT = 2
    MISSING = 3

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


@dataclass(frozen=True)
class NodeView:
    """One node as the leader sees it."""

    node: str
    member: bool  # a voter or learner of the current configuration
    up: bool  # answers (Raft contact and its chunk port) right now
    down_seconds: float = 0.0  # how long it has not been up (0 when up)

    def __post_init__(self) -> None:
        assert self.down_seconds >= 0
        assert not (self.up and self.down_seconds), self


@dataclass(frozen=True)
class ClusterView:
    """Everything the classification needs besides the records: which nodes are up, which
    recorded copies were found missing (a fresh inventory lacked them), which copies were
    found corrupt (a label for fsck until the chunk is healthy again; the copy itself was
    removed, so it is missing too), and the inventories taken this round (for stray copies;
    only those taken after the records were read, so absent for most nodes most rounds)."""

    nodes: Mapping[str, NodeView]
    replication: int
    replica_timeout_seconds: float
    missing: Mapping[bytes, frozenset | set]  # chunk id -> up nodes found not to hold it
    corrupt: Mapping[bytes, frozenset | set]  # chunk id -> nodes whose copy was found corrupt
    inventories: Mapping[str, frozenset | set] = field(default_factory=dict)

    @property
    def target(self) -> int:
        """Live copies a chunk should have: replication, capped by the member count."""
        members = sum(1 for view in self.nodes.values() if view.member)
        return max(1, min(self.replication, members))

    def for_members(self, members) -> "ClusterView":
        """This view brought to the membership as it is now. A view is built once per repair
        round, so it may predate a membership change: a node added since counts toward the
        target (up, its inventory not known yet) and a node removed since holds no live copy.
        Without this, fsck called right after adding a replacement reported healthy chunks
        that had one copy too few."""
        members = set(members)
        nodes = {}
        for node in members:
            known = self.nodes.get(node)
            if known is None or not known.member:
                known = NodeView(node, True, True)
            nodes[node] = known
        for node, known in self.nodes.items():
            if node not in members:
                nodes[node] = NodeView(node, False, known.up, known.down_seconds)
        return ClusterView(nodes, self.replication, self.replica_timeout_seconds, self.missing, self.corrupt,
                           self.inventories)

    def up_members(self) -> list[str]:
        return sorted(node for node, view in self.nodes.items() if view.member and view.up)



def replica_states(chunk_id: bytes, recorded: tuple[str, ...] | list[str], view: ClusterView) -> dict[str, Replica]:
    states = {}
    for node in recorded:
        node_view = view.nodes.get(node)
        if node_view is None or not node_view.member:
            states[node] = Replica.REMOVED
        elif not node_view.up:
            dead = node_view.down_seconds >= view.replica_timeout_seconds
            states[node] = Replica.DEAD if dead else Replica.DOWN
        elif node in view.missing.get(chunk_id, ()):
            states[node] = Replica.MISSING
        else:
            states[node] = Replica.LIVE
    return states


def chunk_health(chunk_id: bytes, states: Mapping[str, Replica], view: ClusterView) -> Health:
    live = sum(1 for state in states.values() if state is Replica.LIVE)
    if live == 0:
        return Health.MISSING
    if live >= view.target:
        return Health.HEALTHY
    if view.corrupt.get(chunk_id):
        return Health.CORRUPT
    return Health.UNDER_REPLICATED


def live_nodes(states: Mapping[str, Replica]) -> list[str]:
    return sorted(node for node, state in states.items() if state is Replica.LIVE)
