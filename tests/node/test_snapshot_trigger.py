"""When a node takes an automatic snapshot: past snapshot_threshold_entries, and once its log
holds snapshot_log_to_state_ratio of the last snapshot's size (a snapshot rewrites the state)."""

from dataclasses import dataclass

from node.config import ClusterConfig
from node.raft.types import ConfState, SnapshotMeta
from node.replicator.raft import RaftReplicator


@dataclass
class _Store:
    log_bytes: int
    snapshot_bytes: int
    stats_asked: int = 0

    def log_size_bytes(self) -> int:
        self.stats_asked += 1
        return self.log_bytes

    def snapshot_meta(self) -> SnapshotMeta:
        return SnapshotMeta(index=100, term=2, conf_state=ConfState(voters=frozenset({"n1"})),
                            size_bytes=self.snapshot_bytes)


def _trigger(store: _Store, ratio: float, threshold: int = 800) -> RaftReplicator:
    replicator = object.__new__(RaftReplicator)  # only the rule's own state, no sockets or disk
    replicator._config = ClusterConfig(nodes=(), snapshot_threshold_entries=threshold,
                                       snapshot_log_to_state_ratio=ratio)
    replicator._store = store
    replicator._snapshot_size_check_at = 0
    return replicator


def test_a_log_smaller_than_its_share_of_the_state_waits_and_is_looked_at_again_later():
    store = _Store(log_bytes=1 << 20, snapshot_bytes=50 << 20)  # 1 MB of log, a 50 MB state
    replicator = _trigger(store, ratio=0.5)
    assert not replicator._log_outweighs_state(applied_index=1000)
    # Not asked again on every turn of the loop: only an eighth of a threshold later.
    assert not replicator._log_outweighs_state(applied_index=1099)
    assert store.stats_asked == 1
    store.log_bytes = 25 << 20  # the log grew to half the state
    assert replicator._log_outweighs_state(applied_index=1100)
    assert store.stats_asked == 2


def test_a_small_state_snapshots_at_the_entry_threshold_and_ratio_0_counts_entries_alone():
    assert _trigger(_Store(log_bytes=64 << 10, snapshot_bytes=100 << 10), ratio=0.5)._log_outweighs_state(1000)
    store = _Store(log_bytes=1, snapshot_bytes=50 << 20)
    assert _trigger(store, ratio=0.0)._log_outweighs_state(1000)
    assert store.stats_asked == 0
