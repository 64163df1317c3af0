import random

from node.raft.quorum import VoteResult, committed_index, has_quorum, majority_committed_index, vote_result

ABC = frozenset("abc")
CDE = frozenset("cde")


def test_majority_committed_index_is_the_median_of_matches():
    assert majority_committed_index(ABC, {"a": 5, "b": 3, "c": 1}) == 3
    assert majority_committed_index(ABC, {"a": 5}) == 0  # missing voters count as 0
    assert majority_committed_index(frozenset("abcd"), {"a": 4, "b": 3, "c": 2, "d": 1}) == 2
    assert majority_committed_index(frozenset("a"), {"a": 9}) == 9


def test_matches_of_non_voters_do_not_count():
    assert committed_index(ABC, {"a": 5, "x": 5, "y": 5}) == 0


def test_joint_commit_needs_both_majorities():
    match = {"a": 9, "b": 9, "c": 4, "d": 2, "e": 1}
    assert committed_index(ABC, match) == 9
    assert committed_index(CDE, match) == 2
    assert committed_index(ABC, match, voters_outgoing=CDE) == 2
    assert committed_index(CDE, match, voters_outgoing=ABC) == 2


def test_vote_result_majority():
    assert vote_result(ABC, {"a": True}) == VoteResult.PENDING
    assert vote_result(ABC, {"a": True, "b": True}) == VoteResult.WON
    assert vote_result(ABC, {"a": True, "b": False}) == VoteResult.PENDING
    assert vote_result(ABC, {"a": True, "b": False, "c": False}) == VoteResult.LOST
    assert vote_result(frozenset("a"), {"a": True}) == VoteResult.WON
    assert vote_result(frozenset("ab"), {"a": True, "b": False}) == VoteResult.LOST


def test_votes_of_non_voters_are_ignored():
    assert vote_result(ABC, {"a": True, "x": True, "y": True}) == VoteResult.PENDING


def test_joint_vote_needs_both_majorities():
    assert vote_result(ABC, {"a": True, "b": True}, voters_outgoing=CDE) == VoteResult.PENDING
    assert vote_result(ABC, {"a": True, "b": True, "d": True}, voters_outgoing=CDE) == VoteResult.PENDING
    assert vote_result(ABC, {"a": True, "c": True, "d": True}, voters_outgoing=CDE) == VoteResult.WON
    assert vote_result(ABC, {"a": True, "b": True, "d": False, "e": False}, voters_outgoing=CDE) == VoteResult.LOST
    assert vote_result(ABC, {"c": True, "a": True}, voters_outgoing=CDE) == VoteResult.PENDING


def test_has_quorum_is_a_won_poll_of_yes_votes():
    rng = random.Random(20261201)
    nodes = ["a", "b", "c", "d", "e", "f"]
    for _ in range(2000):
        voters = frozenset(rng.sample(nodes, rng.randrange(0, 6)))
        outgoing = frozenset(rng.sample(nodes, rng.randrange(0, 6))) if rng.random() < 0.5 else frozenset()
        if not voters and not outgoing:
            continue
        yes = set(rng.sample(nodes, rng.randrange(0, 7)))
        won = vote_result(voters, dict.fromkeys(yes, True), outgoing) == VoteResult.WON
        assert has_quorum(voters, yes, outgoing) == won, (voters, outgoing, yes)
