"""ProgressTracker.committed_index (through quorum.committed_index, which counts a simple
configuration's one half directly) against the definition, by brute force: the highest index
that a majority of each non-empty half holds, for simple and joint configurations alike."""

import random

from node.raft.tracker import ProgressTracker
from node.raft.types import ConfState

SEED = 20261202
ROUNDS = 2000
NODES = "abcdefg"


def reference_committed(voters: frozenset, outgoing: frozenset, match: dict) -> int:
    def held_by_a_majority(half: frozenset, index: int) -> bool:
        return not half or sum(match.get(node, 0) >= index for node in half) > len(half) // 2
    return max(index for index in range(0, 51) if held_by_a_majority(voters, index) and held_by_a_majority(outgoing, index))


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
        assert tracker.committed_index() == reference_committed(voters, outgoing, match), (voters, outgoing, match)
