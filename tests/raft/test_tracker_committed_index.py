"""ProgressTracker.committed_index answers what quorum.committed_index answers for the match
indexes of its members, for simple and joint configurations alike (a simple one is counted
without the vote map)."""

import random

from node.raft import quorum
from node.raft.tracker import ProgressTracker
from node.raft.types import ConfState

SEED = 20261202
ROUNDS = 2000
NODES = "abcdefg"


def test_committed_index_matches_the_quorum_rule():
    rng = random.Random(SEED)
    for _ in range(ROUNDS):
        voters = frozenset(rng.sample(NODES, rng.randrange(1, 6)))
        outgoing = frozenset(rng.sample(NODES, rng.randrange(0, 4))) if rng.random() < 0.3 else frozenset()
        learners = frozenset(rng.sample(sorted(set(NODES) - voters - outgoing), rng.randrange(0, 2)))
        tracker = ProgressTracker(inflight_messages_max=4, inflight_bytes_max=1 << 20)
        tracker.set_conf_state(ConfState(voters=voters, voters_outgoing=outgoing, learners=learners), 1)
        for progress in tracker.progress.values():
            progress.match = rng.randrange(0, 50)
        match = {node: progress.match for node, progress in tracker.progress.items()}
        assert tracker.committed_index() == quorum.committed_index(voters, match, outgoing), (voters, outgoing, match)
