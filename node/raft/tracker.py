"""ProgressTracker: the current configuration, the leader's Progress per member, and the
votes of an election under way. Quorum questions are answered by quorum.py."""

from __future__ import annotations

from node.raft import quorum
from node.raft.progress import Progress
from node.raft.types import ConfState, NodeId


class ProgressTracker:
    def __init__(self, inflight_messages_max: int, inflight_bytes_max: int) -> None:
        self.inflight_messages_max = inflight_messages_max
        self.inflight_bytes_max = inflight_bytes_max
        self.conf_state = ConfState()
        self.progress: dict[NodeId, Progress] = {}
        self.votes: dict[NodeId, bool] = {}

    def voters(self) -> frozenset[NodeId]:
        conf_state = self.conf_state
        if not conf_state.voters_outgoing:
            return conf_state.voters  # not joint (nearly always): no new set
        return conf_state.voters | conf_state.voters_outgoing

    def is_voter(self, node: NodeId) -> bool:
        return node in self.voters()

    def is_single_voter(self, node: NodeId) -> bool:
        return self.voters() == {node}

    def set_conf_state(self, conf_state: ConfState, next_index: int) -> None:
        """Switch to conf_state, keeping the Progress of members that stay; new members are
        probed from next_index and count as recently active (CheckQuorum grace)."""
        assert not conf_state.voters & conf_state.learners, conf_state
        self.conf_state = conf_state
        members = conf_state.all_nodes()
        for node in list(self.progress):
            if node not in members:
                del self.progress[node]
        for node in members:
            if node not in self.progress:
                self.progress[node] = Progress(next_index, self.inflight_messages_max, self.inflight_bytes_max)
                self.progress[node].recent_active = True

    def reset_progress(self, next_index: int) -> None:
        """Fresh Progress for every member (a new term started)."""
        for node in self.progress:
            self.progress[node] = Progress(next_index, self.inflight_messages_max, self.inflight_bytes_max)

    def committed_index(self) -> int:
        match = {node: progress.match for node, progress in self.progress.items()}
        return quorum.committed_index(self.conf_state.voters, match, self.conf_state.voters_outgoing)

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, node: NodeId, granted: bool) -> None:
        """Only the first answer of each node counts (duplicates may arrive)."""
        self.votes.setdefault(node, granted)

    def tally_votes(self) -> quorum.VoteResult:
        return quorum.vote_result(self.conf_state.voters, self.votes, self.conf_state.voters_outgoing)

    def quorum_active(self, own_id: NodeId) -> bool:
        active = {node: node == own_id or progress.recent_active for node, progress in self.progress.items()}
        return quorum.vote_result(self.conf_state.voters, active, self.conf_state.voters_outgoing) == quorum.VoteResult.WON
