"""LocalReplicator (`replicator = "none"`): one node, no consensus.

Commands are applied right after the local durable write, batched per loop iteration (one
fsync for all commands that arrived together). Every read is linearizable by construction: this
node is the only copy.
"""

from __future__ import annotations

import time

import zmq

from node.config import ClusterConfig
from node.errors import Refused, SandStoreError
from node.metadata.commands import Command, decode_command
from node.replicator.contracts import Callbacks
from node.replicator.status import ReplicatorStatus
from node.stats import LatencySamples


class LocalReplicator:
    def __init__(self, config: ClusterConfig, node_id: str, store, namespace, callbacks: Callbacks) -> None:
        assert len(config.nodes) == 1, "replicator 'none' serves exactly one node"
        self._node_id = node_id
        self._store = store
        self._namespace = namespace
        self._callbacks = callbacks
        self._pending_commands: list[Command | SandStoreError] = []  # decoded
        self._pending_reads: list[int] = []
        self._applied_index = store.applied_index()
        self._applied_at_start = self._applied_index
        self.fsync_latency = LatencySamples()
        self.commit_latency = LatencySamples()

    def poll_sockets(self) -> list[zmq.Socket]:
        return []

    def on_readable(self, socket: zmq.Socket) -> None:
        raise AssertionError("LocalReplicator polls no sockets")

    def seconds_until_tick(self, now_seconds: float) -> float:
        return 0.0 if (self._pending_commands or self._pending_reads) else 1.0

    def replicate(self, command: bytes, decoded: Command | None = None) -> None:
        if decoded is None:
            try:
                decoded = decode_command(command)
            except SandStoreError as error:
                decoded = error  # applied as an error result, as the raft replicator does
        self._pending_commands.append(decoded)

    def read_barrier(self, token: int) -> None:
        self._pending_reads.append(token)

    def release_held_entries(self) -> bool:
        return False  # it applies every command in the run that commits it

    def namespace_is_current(self, now_seconds: float) -> bool:
        return True  # the only copy is always current

    def run(self, now_seconds: float) -> None:
        if self._pending_commands:
            commands, self._pending_commands = self._pending_commands, []
            results = []
            started = time.monotonic()
            with self._store.write_batch() as batch:
                for command in commands:
                    self._applied_index += 1
                    results.append((self._applied_index, command, self._namespace.apply(batch.txn, self._applied_index, command)))
                batch.set_applied_index(self._applied_index)
            elapsed = time.monotonic() - started
            self.fsync_latency.add_seconds(elapsed)
            # Only now: with no replicas, this node's commit is what makes the results final.
            self._callbacks.results_fixed(results)
            for index, command, result in results:
                self.commit_latency.add_seconds(elapsed)
                self._callbacks.applied(index, command, result)
        if self._pending_reads:
            tokens, self._pending_reads = self._pending_reads, []
            self._callbacks.reads_ready(tokens)

    def add_learner(self, address) -> tuple[int, int]:
        raise Refused('membership changes need replicator = "raft"')

    promote = remove_node = add_learner

    def transfer_leader(self, target: str | None) -> str:
        raise Refused('leadership transfer needs replicator = "raft"')

    def maybe_snapshot(self, force: bool = False) -> dict | None:
        return None  # no log to compact: commands are applied, never logged

    def addresses(self) -> dict:
        return {}

    def status(self, latencies: bool = True) -> ReplicatorStatus:
        return ReplicatorStatus(
            role="leader", term=0, leader=self._node_id, vote="", commit=self._applied_index,
            applied=self._applied_index, voters=[self._node_id],
            commit_latency_ms=self.commit_latency.percentiles() if latencies else {},
            fsync_latency_ms=self.fsync_latency.percentiles() if latencies else {},
            store_syncs=self._store.sync_counters.to_dict(),
            applied_at_start=self._applied_at_start, reads_pending=len(self._pending_reads),
        )

    def inspect_term(self) -> dict:
        return {"term": 0, "vote": "", "leader": self._node_id, "leader_changes": []}

    def close(self) -> None:
        pass
