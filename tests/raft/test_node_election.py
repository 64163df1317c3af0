"""Elections as transcripts: each test delivers messages by hand and checks what came out."""

from node.raft.types import ConfChange, ConfChangeKind, ConfChangeStep, Message, MessageKind, Role
from raft_harness import Cluster, kinds

PRE_VOTE, PRE_VOTE_RESPONSE = MessageKind.PRE_VOTE, MessageKind.PRE_VOTE_RESPONSE
VOTE, VOTE_RESPONSE = MessageKind.VOTE, MessageKind.VOTE_RESPONSE


def fire_election_timer(cluster: Cluster, node_id: str) -> list[Message]:
    node = cluster.nodes[node_id]
    return cluster.tick(node_id, node.randomized_election_ticks - node.election_elapsed_ticks)


def test_election_in_a_three_node_group():
    cluster = Cluster("abc")
    a = cluster.nodes["a"]
    assert (a.term, a.log.last_index(), a.log.committed) == (1, 1, 1)  # the bootstrap snapshot

    pre_votes = fire_election_timer(cluster, "a")
    assert kinds(pre_votes) == [("PRE_VOTE", "a", "b"), ("PRE_VOTE", "a", "c")]
    assert {(m.term, m.index, m.log_term) for m in pre_votes} == {(2, 1, 1)}
    assert (a.role, a.term) == (Role.PRE_CANDIDATE, 1)  # a pre-vote never bumps the term

    answers = cluster.deliver(pre_votes)
    assert kinds(answers) == [("PRE_VOTE_RESPONSE", "b", "a"), ("PRE_VOTE_RESPONSE", "c", "a")]
    assert [(m.term, m.reject) for m in answers] == [(2, False), (2, False)]
    assert cluster.nodes["b"].term == 1

    votes = cluster.deliver(answers[:1])  # one grant plus our own is a majority
    assert kinds(votes) == [("VOTE", "a", "b"), ("VOTE", "a", "c")]
    assert (a.role, a.term, a.vote) == (Role.CANDIDATE, 2, "a")
    assert cluster.storages["a"].initial_state()[0].vote == "a"  # persisted before the requests left

    answers = cluster.deliver(votes)
    assert kinds(answers) == [("VOTE_RESPONSE", "b", "a"), ("VOTE_RESPONSE", "c", "a")]
    assert {(cluster.nodes[n].term, cluster.nodes[n].vote) for n in "bc"} == {(2, "a")}

    appends = cluster.deliver(answers[:1])
    assert a.role == Role.LEADER
    assert kinds(appends) == [("APPEND", "a", "b"), ("APPEND", "a", "c")]
    assert [(e.index, e.term, e.kind.name) for e in appends[0].entries] == [(2, 2, "NOOP")]
    assert (appends[0].index, appends[0].log_term) == (1, 1)

    cluster.stabilize(appends + cluster.deliver(answers[1:]))
    assert {cluster.nodes[n].log.committed for n in "abc"} == {2}
    assert {cluster.nodes[n].lead for n in "abc"} == {"a"}


def test_single_voter_elects_itself_and_commits_alone():
    cluster = Cluster("a")
    assert fire_election_timer(cluster, "a") == []
    a = cluster.nodes["a"]
    assert (a.role, a.term, a.log.committed) == (Role.LEADER, 2, 2)
    assert cluster.propose("a", b"x") == (2, 3)
    assert [entry.data for entry in cluster.applied["a"]] == [b"", b"x"]


def test_vote_refused_to_an_out_of_date_candidate():
    cluster = Cluster("abc", pre_vote=False, check_quorum=False)
    cluster.elect("a")
    cluster.nodes["a"].propose(b"x")
    cluster.stabilize(drop=lambda m: "c" in (m.source, m.target))  # c misses the entry

    votes = fire_election_timer(cluster, "c")
    assert kinds(votes) == [("VOTE", "c", "a"), ("VOTE", "c", "b")]
    answers = cluster.deliver(votes)
    assert kinds(answers) == [("VOTE_RESPONSE", "a", "c"), ("VOTE_RESPONSE", "b", "c")]
    assert all(m.reject for m in answers)
    cluster.deliver(answers)
    assert cluster.nodes["c"].role == Role.FOLLOWER
    assert cluster.nodes["c"].term == 3  # a real vote did bump every term


def test_pre_vote_keeps_a_partitioned_node_from_inflating_terms():
    cluster = Cluster("abc")
    cluster.elect("a")
    for _ in range(5):  # c is cut off: its pre-votes are lost
        pre_votes = fire_election_timer(cluster, "c")
        assert kinds(pre_votes) == [("PRE_VOTE", "c", "a"), ("PRE_VOTE", "c", "b")]
    c = cluster.nodes["c"]
    assert (c.role, c.term) == (Role.PRE_CANDIDATE, 2)
    # Healed: the others still hear from a, so c's next pre-vote is ignored and a's
    # heartbeat brings c back as a follower in the same term.
    assert cluster.deliver(fire_election_timer(cluster, "c")) == []
    cluster.stabilize(cluster.tick("a"))
    assert (c.role, c.lead, cluster.nodes["a"].term) == (Role.FOLLOWER, "a", 2)


def test_sticky_follower_ignores_a_disruptive_candidate():
    cluster = Cluster("abc", pre_vote=False)
    cluster.elect("a")
    votes = fire_election_timer(cluster, "c")  # c lost a few heartbeats and campaigns
    assert kinds(votes) == [("VOTE", "c", "a"), ("VOTE", "c", "b")]
    assert cluster.deliver(votes) == []  # both heard from the leader within the minimum timeout
    assert (cluster.nodes["a"].role, cluster.nodes["a"].term, cluster.nodes["b"].term) == (Role.LEADER, 2, 2)
    # The stale leader's next heartbeat tells c its term is out of date... and c's higher term
    # answer is ignored by nobody: with CheckQuorum the leader steps down once it sees it.
    responses = cluster.deliver(cluster.tick("a"))
    assert ("APPEND_RESPONSE", "c", "a") in kinds(responses)
    cluster.deliver(responses)
    assert cluster.nodes["a"].term == 3


def test_transfer_context_bypasses_stickiness():
    cluster = Cluster("abc")
    cluster.elect("a")
    vote = Message(kind=VOTE, source="c", target="b", term=3, index=2, log_term=2, context=b"transfer")
    assert kinds(cluster.deliver([vote])) == [("VOTE_RESPONSE", "b", "c")]
    assert cluster.nodes["b"].vote == "c"


def test_leader_steps_down_without_a_quorum_under_check_quorum():
    cluster = Cluster("abc")
    cluster.elect("a")
    a = cluster.nodes["a"]
    # The first check counts the answers to the election's appends; in the next window the
    # heartbeats go unanswered.
    cluster.tick("a", cluster.settings["election_ticks_min"])
    assert a.role == Role.LEADER
    cluster.tick("a", cluster.settings["election_ticks_min"])
    assert (a.role, a.lead, a.term) == (Role.FOLLOWER, "", 2)


def test_leader_with_an_answering_quorum_stays():
    cluster = Cluster("abc")
    cluster.elect("a")
    for _ in range(3 * cluster.settings["election_ticks_min"]):
        cluster.stabilize(cluster.tick("a"), drop=lambda m: "c" in (m.source, m.target))
    assert cluster.nodes["a"].role == Role.LEADER


def test_stale_leader_learns_the_new_term_from_an_append_response():
    cluster = Cluster("abc")
    cluster.elect("a")
    cut_off_a = lambda m: "a" in (m.source, m.target)
    assert cluster.tick("c", cluster.settings["election_ticks_min"]) == []  # c's lease on a runs out
    b = cluster.nodes["b"]
    cluster.stabilize(cluster.tick("b", b.randomized_election_ticks), drop=cut_off_a)
    assert cluster.nodes["b"].term == 3
    heartbeats = cluster.tick("a", cluster.settings["heartbeat_ticks"])
    assert cluster.nodes["a"].role == Role.LEADER  # a has not noticed yet
    replies = cluster.deliver(heartbeats)
    assert [(m.kind.name, m.term) for m in replies] == [("APPEND_RESPONSE", 3), ("APPEND_RESPONSE", 3)]
    cluster.deliver(replies)
    assert (cluster.nodes["a"].role, cluster.nodes["a"].term) == (Role.FOLLOWER, 3)


def test_learner_never_campaigns_and_its_vote_does_not_count():
    cluster = Cluster("abc")
    cluster.add_node("d", seed=40)
    cluster.elect("a")
    cluster.nodes["a"].propose_membership_change(ConfChange((ConfChangeStep(ConfChangeKind.ADD_LEARNER, "d"),)))
    cluster.stabilize()
    d = cluster.nodes["d"]
    assert d.tracker.conf_state.learners == {"d"}
    assert cluster.tick("d", 5 * cluster.settings["election_ticks_max"]) == []
    assert d.role == Role.FOLLOWER

    cluster.stabilize(fire_election_timer(cluster, "c"), drop=lambda m: m.target in "ab")  # c isolated with d
    c = cluster.nodes["c"]
    granted = Message(kind=PRE_VOTE_RESPONSE, source="d", target="c", term=c.term + 1)
    cluster.deliver([granted])
    assert c.role == Role.PRE_CANDIDATE  # c plus a learner is not a majority


def test_a_rejected_higher_term_vote_does_not_restart_the_election_timer():
    # Without pre-vote, a node whose log can never win still campaigns with ever higher terms.
    # An up-to-date follower adopts each term but must keep counting towards its own election,
    # or two such candidates taking turns keep it from ever campaigning (simulator seed 2949).
    cluster = Cluster("abc", pre_vote=False, check_quorum=False)
    cluster.elect("a")
    cluster.propose("a", b"x")  # a and b hold the entry; c is made stale below
    b = cluster.nodes["b"]
    cluster.tick("b", 3)
    stale_vote = Message(kind=MessageKind.VOTE, source="c", target="b", term=b.term + 1, index=1, log_term=1)
    replies = cluster.deliver([stale_vote])
    assert kinds(replies) == [("VOTE_RESPONSE", "b", "c")] and replies[0].reject
    assert (b.term, b.vote, b.role) == (stale_vote.term, "", Role.FOLLOWER)
    assert b.election_elapsed_ticks == 3  # kept: the vote was not granted
    # A vote it grants does restart the timer.
    fresh_vote = Message(kind=MessageKind.VOTE, source="c", target="b", term=b.term + 1,
                         index=b.status().last_index, log_term=b.term - 1)
    replies = cluster.deliver([fresh_vote])
    assert not replies[0].reject and b.vote == "c" and b.election_elapsed_ticks == 0


def test_a_split_vote_is_retried_within_half_to_one_follower_timeout():
    # Five voters, e cut off: a and b pass their pre-votes at once and split c and d between
    # them at term 2. Neither can win; each campaigns again sooner than a follower would time
    # out (a follower's long timeout protects a slow leader, and there is none here).
    cluster = Cluster("abcde")
    pre_votes = fire_election_timer(cluster, "a") + fire_election_timer(cluster, "b")
    answers = cluster.deliver(pre_votes, drop=lambda m: m.target == "e")
    votes = [m for m in cluster.deliver(answers) if m.kind == VOTE and m.target != "e"]
    assert kinds(votes) == [("VOTE", "a", "b"), ("VOTE", "a", "c"), ("VOTE", "a", "d"),
                            ("VOTE", "b", "a"), ("VOTE", "b", "c"), ("VOTE", "b", "d")]
    # c hears a first, d hears b first: two votes each out of five.
    first = [m for m in votes if (m.source, m.target) in (("a", "c"), ("b", "d"))]
    second = [m for m in votes if m not in first]
    cluster.deliver(cluster.deliver(first) + cluster.deliver(second))
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    assert (a.role, b.role, a.term, b.term) == (Role.CANDIDATE, Role.CANDIDATE, 2, 2)
    ticks_min = cluster.settings["election_ticks_min"]
    for node in (a, b):
        assert ticks_min // 2 <= node.randomized_election_ticks < ticks_min
    retry = cluster.tick("a", a.randomized_election_ticks)
    assert a.role == Role.PRE_CANDIDATE and kinds(retry)[0] == ("PRE_VOTE", "a", "b")
