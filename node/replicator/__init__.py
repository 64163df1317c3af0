"""The replicator seam: how the namespace service gets a command durably ordered and applied.

The server depends only on this interface. Two implementations:
  - RaftReplicator (raft.py): commands go through the Raft log of the whole cluster.
  - LocalReplicator (local.py): `replicator = "none"`; a command is applied right after the local
    durable write (a single node is its own quorum).

Everything runs on the server's one driver thread, so "returns once applied" is a callback
(contracts.Callbacks): `applied(index, decoded, result)` after the write transaction that applied
the command committed, `reads_ready(tokens)` when linearizable reads registered with
`read_barrier` may be served from the local state.
"""

from __future__ import annotations

from typing import Protocol

import zmq

from node.replicator.contracts import Callbacks  # noqa: F401 -- the server's half of the seam
from node.replicator.status import ReplicatorStatus


class Replicator(Protocol):
    def poll_sockets(self) -> list[zmq.Socket]:
        """Sockets the driver must poll for input on behalf of the replicator."""

    def on_readable(self, socket: zmq.Socket) -> None:
        """Drain a readable socket returned by poll_sockets (never blocks)."""

    def seconds_until_tick(self, now_seconds: float) -> float:
        """How long the driver may sleep in poll before the replicator needs to run."""

    def run(self, now_seconds: float) -> None:
        """Tick if due, then persist/send/apply everything pending (one transaction)."""

    def replicate(self, command: bytes, decoded=None) -> None:
        """Start replicating a command. Raises node.errors.NotLeader / NoLeader / Refused.
        decoded: the Command that `command` encodes, when the caller built it, so that it is not
        decoded again to be applied; Callbacks.applied hands the decoded command back."""

    def read_barrier(self, token: int) -> None:
        """Register a linearizable read; completion via Callbacks.reads_ready/reads_failed."""

    def release_held_entries(self) -> bool:
        """Whether committed entries are held back from applying (a follower batching its
        apply); if so they are applied in the next run(), which a stale read then waits for."""

    def maybe_snapshot(self, force: bool = False) -> dict | None:
        """Compact the log when due (or now, if forced); what it did, or None."""

    def namespace_is_current(self, now_seconds: float) -> bool:
        """Whether the applied state is known to be recent (chunk GC may trust it)."""

    def add_learner(self, address) -> tuple[int, int]:
        """Propose adding a learner; (term, index) of the change. Raises Refused, NotLeader."""

    def promote(self, node_id: str) -> tuple[int, int]: ...

    def remove_node(self, node_id: str) -> tuple[int, int]: ...

    def transfer_leader(self, target: str | None) -> str:
        """Start a leadership transfer; the target chosen."""

    def addresses(self) -> dict:
        """Every known member's NodeAddress by id (empty when only the config's node exists)."""

    def status(self, latencies: bool = True) -> ReplicatorStatus:
        """Role, term, commit, applied, log range, membership, peers' last contact, latencies.
        latencies=False leaves the latency percentiles empty: they are most of the cost, and
        the leader's repair view asks for the membership every housekeeping round."""

    def inspect_term(self) -> dict:
        """Current term, vote, leader and the leader changes seen."""

    def close(self) -> None: ...
