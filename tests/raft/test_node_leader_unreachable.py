"""leader_unreachable(): a follower that saw its connection to the leader drop campaigns after
a short silence instead of a full election timeout, without disturbing a live leader."""

from node.raft.types import MessageKind, Role
from raft_harness import Cluster

SETTINGS = dict(heartbeat_ticks=2, election_ticks_min=20, election_ticks_max=30)
SILENCE_TICKS_MIN = 1 * SETTINGS["heartbeat_ticks"]  # LEADER_SILENCE_HEARTBEATS_MIN


def cluster_led_by_a(**config) -> Cluster:
    cluster = Cluster("abc", **{**SETTINGS, "campaign_on_leader_unreachable": True, **config})
    cluster.elect("a")
    return cluster


def run_ticks(cluster: Cluster, ticks: int, up: set[str], stop=lambda: False) -> int:
    """Tick the nodes in `up` (and deliver what they send each other) until stop(); returns the
    ticks taken. Nodes not in `up` are cut off: what they send or get is lost."""
    drop = lambda message: message.source not in up or message.target not in up
    for tick in range(1, ticks + 1):
        for node_id in sorted(up):
            cluster.stabilize(cluster.tick(node_id), drop=drop)
        if stop():
            return tick
    return ticks + 1


def new_leader(cluster: Cluster, among: set[str]):
    return lambda: any(cluster.nodes[n].role == Role.LEADER for n in among)


def test_the_followers_of_a_crashed_leader_elect_another_within_a_few_heartbeats():
    cluster = cluster_led_by_a()
    for follower in "bc":  # a's process died: both see their connection to it close
        cluster.nodes[follower].leader_unreachable("a")
    ticks = run_ticks(cluster, SETTINGS["election_ticks_min"], {"b", "c"}, new_leader(cluster, {"b", "c"}))
    # b, first in line, campaigns a tick past the silence, and c (silent that long) grants.
    assert ticks == SILENCE_TICKS_MIN + 1  # not the 20..30 of a timeout
    assert cluster.nodes["b"].role == Role.LEADER
    assert {cluster.nodes[n].term for n in "bc"} == {3}  # one election: the vote did not split


def test_the_next_in_line_wins_when_the_first_ones_log_is_behind():
    cluster = cluster_led_by_a()
    a, b, c = (cluster.nodes[n] for n in "abc")
    a.propose(b"only c has it")
    cluster.stabilize(cluster.process("a"), drop=lambda message: "b" in (message.source, message.target))
    assert c.log.last_index() == b.log.last_index() + 1
    for follower in "bc":
        cluster.nodes[follower].leader_unreachable("a")
    ticks = run_ticks(cluster, SETTINGS["election_ticks_min"], {"b", "c"}, new_leader(cluster, {"b", "c"}))
    # c refused b's pre-vote and campaigned at once: it won in the same tick, not a stagger later.
    assert ticks == SILENCE_TICKS_MIN + 1
    assert c.role == Role.LEADER and (b.term, c.term) == (3, 3)


def test_without_the_option_the_election_timeout_applies():
    cluster = cluster_led_by_a(campaign_on_leader_unreachable=False)
    for follower in "bc":
        cluster.nodes[follower].leader_unreachable("a")
    ticks = run_ticks(cluster, SETTINGS["election_ticks_max"], {"b", "c"}, new_leader(cluster, {"b", "c"}))
    assert ticks >= SETTINGS["election_ticks_min"]


def test_one_dropped_connection_does_not_disturb_a_live_leader():
    cluster = cluster_led_by_a()
    a, b, c = (cluster.nodes[n] for n in "abc")
    b.leader_unreachable("a")  # only b's link to a broke; a and c still talk
    cut_a_b = lambda message: {message.source, message.target} == {"a", "b"}
    pre_votes_from_b = 0
    for _ in range(3 * SILENCE_TICKS_MIN):
        for node_id in "abc":
            sent = cluster.tick(node_id)
            pre_votes_from_b += sum(m.kind == MessageKind.PRE_VOTE and m.source == "b" for m in sent)
            cluster.stabilize(sent, drop=cut_a_b)
    assert pre_votes_from_b == 2  # b tried (to a and c) and c, still hearing from a, said no
    assert (a.role, a.term, c.term, c.lead) == (Role.LEADER, 2, 2, "a")
    for _ in range(SETTINGS["heartbeat_ticks"]):  # the link is back
        cluster.stabilize(cluster.tick("a"))
    assert (b.lead, b.term) == ("a", 2)


def test_a_message_from_the_leader_cancels_it():
    cluster = cluster_led_by_a()
    b = cluster.nodes["b"]
    b.leader_unreachable("a")
    assert b.early_campaign_ticks is not None
    cluster.stabilize(cluster.tick("a", SETTINGS["heartbeat_ticks"]))  # the connection came back
    assert b.early_campaign_ticks is None
    ticks = run_ticks(cluster, SETTINGS["election_ticks_min"] - 1, {"b", "c"}, lambda: b.role != Role.FOLLOWER)
    assert ticks == SETTINGS["election_ticks_min"]  # never: only the election timeout may start one


def test_a_report_about_another_node_or_to_a_non_follower_is_ignored():
    cluster = cluster_led_by_a()
    cluster.nodes["b"].leader_unreachable("c")
    cluster.nodes["a"].leader_unreachable("a")
    assert cluster.nodes["b"].early_campaign_ticks is None and cluster.nodes["a"].early_campaign_ticks is None
