"""Core bugs the simulator found, each as a minimal deterministic test (kept as regressions).

1. A node added to a running cluster crashed in ready() with "committed membership change is
   invalid: n1 is not a member" (found by `bin/sim --seed 31 --churn`, also seeds 0, 7, 19, 82
   of the default range). The core bootstrapped the initial voters as a bare ConfState, not as
   log state, so a joiner that replicated the log from index 1 applied later changes to an
   empty membership (and an ADD_VOTER of itself would have made it the sole voter of its own
   cluster). Fixed in the core while the simulator was being written: bootstrap is now a
   snapshot at index 1 that carries the membership.
"""

from __future__ import annotations

from node.raft.types import ConfChange, ConfChangeKind, ConfChangeStep

from tests.sim.cluster import Cluster


def test_a_joiner_applies_later_membership_changes():
    cluster = Cluster(3, seed=31)
    leader = cluster.wait_for_leader()
    assert cluster.commit_value(b"x") is not None
    cluster.add_node("n4")
    joint = ConfChange(
        steps=(ConfChangeStep(ConfChangeKind.ADD_VOTER, "n4"), ConfChangeStep(ConfChangeKind.REMOVE_NODE, "n1"))
    )
    cluster.change_membership(leader, joint)
    assert cluster.run_until(
        lambda: cluster.nodes["n4"].disk.conf_state.voters == frozenset({"n2", "n3", "n4"}), 3000
    )
    rest = ["n2", "n3", "n4"]
    assert cluster.wait_for_leader(among=rest, min_term=0) is not None
    assert cluster.commit_value(b"y", nodes=rest) is not None
