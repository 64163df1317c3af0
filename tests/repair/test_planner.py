"""The repair planner as a pure function: ordering (fewest live copies first), placement
(spread, fewest used bytes), never below target or the last record, surplus, strays, moves."""

from __future__ import annotations

import pytest

from node.repair.health import ClusterView, Health, NodeView, Replica, chunk_health, replica_states
from node.repair.planner import ChunkRecord, Copy, Drop, plan

TIMEOUT_SECONDS = 600.0


def chunk(number: int) -> bytes:
    return bytes([number]) * 32


def view(up=("n1", "n2", "n3"), down=(), dead=(), removed=(), inventories=None, corrupt=None, replication=3,
         missing=None):
    nodes = {node: NodeView(node, True, True) for node in up}
    nodes.update({node: NodeView(node, True, False, 5.0) for node in down})
    nodes.update({node: NodeView(node, True, False, TIMEOUT_SECONDS + 1) for node in dead})
    nodes.update({node: NodeView(node, False, False, 1.0) for node in removed})
    return ClusterView(nodes, replication, TIMEOUT_SECONDS, missing or {}, corrupt or {}, inventories or {})


def test_replica_states_and_chunk_health():
    cluster = view(up=("n1", "n2", "n4"), down=("n3",), dead=("n5",), removed=("n6",),
                   missing={chunk(1): {"n2"}}, corrupt={chunk(1): {"n2"}})
    states = replica_states(chunk(1), ("n1", "n2", "n3", "n4", "n5", "n6"), cluster)
    assert states == {"n1": Replica.LIVE, "n2": Replica.MISSING, "n3": Replica.DOWN, "n4": Replica.LIVE,
                      "n5": Replica.DEAD, "n6": Replica.REMOVED}
    assert chunk_health(chunk(1), states, cluster) is Health.CORRUPT
    assert chunk_health(chunk(2), states, cluster) is Health.UNDER_REPLICATED
    assert chunk_health(chunk(1), {"n2": Replica.MISSING}, cluster) is Health.MISSING
    assert chunk_health(chunk(1), {n: Replica.LIVE for n in ("n1", "n2", "n4")}, cluster) is Health.HEALTHY


def test_target_is_capped_by_members():
    assert view(up=("n1", "n2")).target == 2
    assert view(up=("n1",), removed=("n2", "n3")).target == 1


def test_a_view_brought_to_a_later_membership_counts_added_nodes_and_drops_removed_ones():
    # The round saw n1, n3 after n2 was removed: two copies are all two members can hold.
    before_join = view(up=("n1", "n3"), removed=("n2",))
    states = replica_states(chunk(1), ("n1", "n3"), before_join)
    assert chunk_health(chunk(1), states, before_join) is Health.HEALTHY
    # The replacement r1 joined since that round: the same copies are one too few now.
    after_join = before_join.for_members({"n1", "n3", "r1"})
    assert after_join.target == 3
    assert chunk_health(chunk(1), replica_states(chunk(1), ("n1", "n3"), after_join), after_join) \
        is Health.UNDER_REPLICATED
    # And a copy on a node removed since the round is not live any more.
    stale = view(up=("n1", "n2", "n3")).for_members({"n1", "n3"})
    assert replica_states(chunk(1), ("n1", "n2", "n3"), stale)["n2"] is Replica.REMOVED
    assert stale.target == 2


def test_fewest_live_copies_are_repaired_first_within_the_copy_budget():
    records = [ChunkRecord(chunk(1), 10, ("n1", "n2", "n3")),  # one live: n2, n3 dead
               ChunkRecord(chunk(2), 10, ("n1", "n2", "n3")),  # two live
               ChunkRecord(chunk(3), 10, ("n1", "n2", "n3"))]
    cluster = view(up=("n1", "n4", "n5", "n6"), dead=("n2", "n3"))
    cluster_two_live = view(up=("n1", "n2", "n4"), dead=("n3",))
    assert plan(records[:1], cluster, copies_max=1).copies == [Copy(chunk(1), 10, "n1", "n4")]
    mixed = [ChunkRecord(chunk(2), 10, ("n1", "n2", "n3")), ChunkRecord(chunk(1), 10, ("n1", "n5", "n3"))]
    result = plan(mixed, view(up=("n1", "n2", "n4"), dead=("n3", "n5")), copies_max=1)
    assert [copy.chunk_id for copy in result.copies] == [chunk(1)]  # one live copy beats two
    result = plan(records[1:], cluster_two_live, copies_max=10)
    assert [(copy.chunk_id, copy.target) for copy in result.copies] == [(chunk(2), "n4"), (chunk(3), "n4")]


def test_placement_prefers_the_least_used_node_and_spreads_sources():
    records = [ChunkRecord(chunk(9), 1000, ("n1", "n2", "n4")),  # healthy; n4 holds 1000 bytes
               ChunkRecord(chunk(1), 10, ("n1", "n2", "n3")),
               ChunkRecord(chunk(2), 10, ("n1", "n2", "n3"))]
    cluster = view(up=("n1", "n2", "n4", "n5"), dead=("n3",), replication=3)
    result = plan(records, cluster, copies_max=10)
    assert [(copy.chunk_id, copy.target) for copy in result.copies] == [(chunk(1), "n5"), (chunk(2), "n5")]
    assert sorted(copy.source for copy in result.copies) == ["n1", "n2"]  # reads spread over live replicas
    assert result.used_bytes == {"n1": 1020, "n2": 1020, "n4": 1000, "n5": 0}


def test_down_replicas_are_waited_for_until_the_timeout():
    records = [ChunkRecord(chunk(1), 10, ("n1", "n2", "n3"))]
    assert plan(records, view(up=("n1", "n2", "n4"), down=("n3",)), copies_max=4).copies == []
    assert plan(records, view(up=("n1", "n2", "n4"), dead=("n3",)), copies_max=4).copies == [
        Copy(chunk(1), 10, "n1", "n4")]


def test_a_degraded_write_waits_for_a_third_node_and_is_healed_when_one_is_up():
    records = [ChunkRecord(chunk(1), 10, ("n1", "n2"))]
    waiting = plan(records, view(up=("n1", "n2"), down=("n3",)), copies_max=4)
    assert waiting.copies == [] and waiting.totals.under_replicated == 1
    assert plan(records, view(), copies_max=4).copies == [Copy(chunk(1), 10, "n1", "n3")]


def test_missing_and_removed_records_are_dropped_but_never_the_last():
    records = [ChunkRecord(chunk(1), 10, ("n1", "n2", "n6")), ChunkRecord(chunk(2), 10, ("n2", "n6"))]
    cluster = view(up=("n1", "n2", "n3"), removed=("n6",), missing={chunk(2): {"n2"}})
    result = plan(records, cluster, copies_max=0)
    assert result.record_drops == [Drop(chunk(1), "n6"), Drop(chunk(2), "n2", confirm_absent=True)]
    # chunk 2: n2 lacks it and n6 is gone: one record stays, and it counts as missing.
    assert result.totals.missing == 1


def test_surplus_copies_are_dropped_from_the_fullest_nodes_down_to_target():
    records = [ChunkRecord(chunk(1), 10, ("n1", "n2", "n3", "n4")), ChunkRecord(chunk(2), 500, ("n3",))]
    result = plan(records, view(up=("n1", "n2", "n3", "n4")), copies_max=0)
    assert result.surplus_drops == [Drop(chunk(1), "n3", delete=True)]
    # Nothing is dropped while the chunk is being worked on.
    assert plan(records, view(up=("n1", "n2", "n3", "n4")), copies_max=0, in_flight={chunk(1)}).surplus_drops == []


def test_stray_copies_are_adopted_when_needed_and_deleted_when_not():
    records = [ChunkRecord(chunk(1), 10, ("n1", "n2")), ChunkRecord(chunk(2), 10, ("n1", "n2", "n3"))]
    cluster = view(up=("n1", "n2", "n3", "n4"), inventories={"n4": {chunk(1), chunk(2)}})
    result = plan(records, cluster, copies_max=4)
    assert result.adoptions == [(chunk(1), "n4")] and result.copies == []
    assert result.stray_deletes == [(chunk(2), "n4")]


def test_moves_even_out_used_bytes_only_when_nothing_needs_repair():
    records = [ChunkRecord(chunk(number), 100, ("n1", "n2", "n3")) for number in range(10)]
    cluster = view(up=("n1", "n2", "n3", "n4"))
    result = plan(records, cluster, copies_max=4, moves_max=100, spread_fraction=0.1)
    assert result.copies == [] and result.moves
    assert all(move.target == "n4" and move.drop_after == move.source for move in result.moves)
    after = dict(result.used_bytes)
    for move in result.moves:
        after[move.source] -= move.size
        after[move.target] += move.size
    assert max(after.values()) - min(after.values()) <= 100  # as even as 100-byte chunks allow
    assert plan(records, cluster, copies_max=4, moves_max=1).moves[:1] == result.moves[:1]  # a trickle
    assert plan(records, cluster, copies_max=4, moves_max=0).moves == []


def test_no_moves_while_a_chunk_needs_repair():
    records = [ChunkRecord(chunk(number), 100, ("n1", "n2", "n3")) for number in range(10)]
    records.append(ChunkRecord(chunk(99), 100, ("n1",)))
    result = plan(records, view(up=("n1", "n2", "n3", "n4")), copies_max=4, moves_max=10)
    assert result.moves == [] and [copy.chunk_id for copy in result.copies] == [chunk(99)]


@pytest.mark.parametrize("seed", range(20))
def test_random_views_never_plan_below_target_or_the_last_record(seed):
    import random
    rng = random.Random(seed)
    names = [f"n{i}" for i in range(1, 7)]
    states = {name: rng.choice(["up", "down", "dead", "removed"]) for name in names}
    cluster = view(up=[n for n, s in states.items() if s == "up"] or ["n1"],
                   down=[n for n, s in states.items() if s == "down"],
                   dead=[n for n, s in states.items() if s == "dead"],
                   removed=[n for n, s in states.items() if s == "removed"],
                   missing={chunk(i): {n for n in names if rng.random() < 0.2} for i in range(30)},
                   inventories={n: {chunk(i) for i in range(30) if rng.random() < 0.2} for n in names})
    records = [ChunkRecord(chunk(i), rng.randint(1, 1000), tuple(sorted(rng.sample(names, rng.randint(1, 5)))))
               for i in range(30)]
    result = plan(records, cluster, copies_max=rng.randint(0, 10), moves_max=rng.randint(0, 3))
    for copy in result.copies + result.moves:  # plan() asserts the rest itself
        record = next(r for r in records if r.chunk_id == copy.chunk_id)
        assert copy.target not in record.nodes and cluster.nodes[copy.target].up
        assert replica_states(copy.chunk_id, record.nodes, cluster)[copy.source] is Replica.LIVE


def test_surplus_of_many_chunks_is_spread_over_the_nodes():
    records = [ChunkRecord(chunk(number), 10, ("n1", "n2", "n3", "n4")) for number in range(8)]
    result = plan(records, view(up=("n1", "n2", "n3", "n4")), copies_max=0)
    dropped = sorted(drop.node for drop in result.surplus_drops)
    assert dropped == ["n1", "n1", "n2", "n2", "n3", "n3", "n4", "n4"]
