"""The replicator's part of `sandctl status`: one record, built by both replicators.

Every field is present for every replicator (a single node without consensus reports itself as
the leader of term 0 with an empty log), so clients never meet a missing key.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from node.stats import LatencySamples

_NO_SAMPLES = LatencySamples(1).percentiles()


@dataclass
class ReplicatorStatus:
    role: str
    term: int
    leader: str
    vote: str
    commit: int
    applied: int
    first_index: int = 0
    last_index: int = 0
    voters: list[str] = field(default_factory=list)
    voters_outgoing: list[str] = field(default_factory=list)
    learners: list[str] = field(default_factory=list)
    progress: dict = field(default_factory=dict)  # leader only: each member's match/next/state
    last_contact_ms: dict = field(default_factory=dict)  # peer -> ms since heard from (None: never)
    elections_seen: int = 0
    commit_latency_ms: dict = field(default_factory=lambda: copy.deepcopy(_NO_SAMPLES))
    fsync_latency_ms: dict = field(default_factory=lambda: copy.deepcopy(_NO_SAMPLES))
    store_syncs: dict = field(default_factory=dict)  # NodeStore.sync_counters: commits, durable_commits, fsyncs
    snapshot_index: int = 0
    snapshot_bytes: int = 0
    log_entries: int = 0
    log_entries_at_start: int = 0
    applied_at_start: int = 0
    snapshots_installed: int = 0
    snapshots_sent: int = 0
    log_bytes: int = 0
    peer_messages_rejected: int = 0  # peer messages that contradicted this node's state, dropped
    forwards_dropped: int = 0  # malformed commands forwarded by peers, dropped
    reads_pending: int = 0  # linearizable reads registered and not yet answered
    transport: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        # Shallow: a record is built afresh for each status (its lists and dicts are copies the
        # replicator made for it), so dataclasses.asdict's recursive deep copy only cost time:
        # 41% of a node's CPU under a stream of status requests (~650 us each), which the
        # failover benchmark sends to the survivors every few ms while they elect a leader.
        return dict(vars(self))
