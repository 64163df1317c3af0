"""The failover decisions without any I/O: a call's plan fed replies by hand, step by step."""

from __future__ import annotations

import time

import pytest

from node.errors import AlreadyExists, NoLeader, NotLeader, TimedOut, Unavailable
from sandctl import failover
from sandctl.connection import Reply
from sandctl.failover import BACKOFF_SECONDS_MIN, SILENCE_REMEMBERED_SECONDS, CallPlan, LeaderTracker

ADDRESSES = {"n1": "127.0.0.1:1", "n2": "127.0.0.1:2", "n3": "127.0.0.1:3"}


def plan_for(tracker: LeaderTracker, *, write: bool = True, pinned: str | None = None,
             unreachable_seconds: float | None = None) -> CallPlan:
    return CallPlan(tracker, "mkdir", write=write, timeout_seconds=60, pinned=pinned, attempt_timeout_seconds=1,
                    unreachable_seconds=unreachable_seconds)


def error(node: str, request_id: int, exception) -> Reply:
    return Reply(node, request_id, False, None, exception)


def test_a_hint_is_followed_at_once_and_remembered_as_the_leader():
    tracker = LeaderTracker(dict(ADDRESSES))
    plan = plan_for(tracker)
    assert plan.next_target() == "n1"  # no leader known: config order
    plan.sent("n1", 1)
    reply = error("n1", 1, NotLeader("not the leader", "n3"))
    assert plan.on_reply(reply)
    assert plan.answered(reply) == 0.0  # no backoff before following a hint
    assert plan.next_target() == "n3"
    assert tracker.leader == "n3" and tracker.leader_confirmed
    plan.sent("n3", 2)
    done = Reply("n3", 2, True, {"path": "/a"})
    assert plan.on_reply(done) and plan.answered(done) == 0.0
    assert not plan.succeeded(done)  # a confirmed leader served it: no status question needed


def test_no_leader_backs_off_and_rotates_and_the_backoff_grows(monkeypatch):
    monkeypatch.setattr(failover, "FAST_RETRY_SECONDS", 0.0)  # a call past its first fast retries
    plan = plan_for(LeaderTracker(dict(ADDRESSES)))
    waits = []
    for request_id, node in enumerate(["n1", "n2", "n3", "n1"], start=1):
        assert plan.next_target() == node
        plan.sent(node, request_id)
        reply = error(node, request_id, NoLeader("election"))
        assert plan.on_reply(reply)
        waits.append(plan.answered(reply))
    assert waits[0] == BACKOFF_SECONDS_MIN and waits == sorted(waits) and waits[-1] > waits[0]
    # Every attempt answered "nothing changed": at the deadline, Unavailable, never TimedOut.
    assert isinstance(plan.failure(), Unavailable) and "was not applied" in str(plan.failure())


def test_early_in_a_call_no_leader_is_retried_at_the_shortest_backoff(monkeypatch):
    """A crashed leader is replaced within tens of ms: a call's first retries do not back off
    past the new leader."""
    monkeypatch.setattr(failover, "FAST_RETRY_SECONDS", 3600.0)  # the whole test is "early"
    plan = plan_for(LeaderTracker(dict(ADDRESSES)))
    waits = []
    for request_id in range(1, 6):
        node = plan.next_target()
        plan.sent(node, request_id)
        reply = error(node, request_id, NoLeader("election"))
        assert plan.on_reply(reply)
        waits.append(plan.answered(reply))
    assert waits == [BACKOFF_SECONDS_MIN] * 5


def test_a_silent_write_attempt_makes_the_outcome_unknown():
    plan = plan_for(LeaderTracker(dict(ADDRESSES)))
    plan.sent(plan.next_target(), 1)
    plan.timed_out("n1")
    assert isinstance(plan.failure(), TimedOut)
    read = plan_for(LeaderTracker(dict(ADDRESSES)), write=False)
    read.sent(read.next_target(), 1)
    read.timed_out("n1")
    assert isinstance(read.failure(), Unavailable)


def test_a_final_answer_to_an_earlier_attempt_counts_and_its_retry_answers_do_not():
    plan = plan_for(LeaderTracker(dict(ADDRESSES)))
    plan.sent(plan.next_target(), 1)
    plan.timed_out("n1")
    plan.sent(plan.next_target(), 2)
    # The first attempt's late "try elsewhere" is not the current one: keep waiting.
    assert not plan.on_reply(error("n1", 1, NoLeader("election")))
    # A final answer to an earlier attempt is acted on: the refusal is the call's answer.
    plan.sent("n2", 3)
    exists = error("n2", 2, AlreadyExists("/a already exists"))
    assert plan.on_reply(exists)
    with pytest.raises(AlreadyExists):
        plan.answered(exists)


def test_pinned_calls_raise_not_leader_with_the_hint():
    plan = plan_for(LeaderTracker(dict(ADDRESSES)), pinned="n2")
    assert [plan.next_target() for _ in range(3)] == ["n2"] * 3
    plan.sent("n2", 1)
    reply = error("n2", 1, NotLeader("not the leader", "n1"))
    assert plan.on_reply(reply)
    with pytest.raises(NotLeader, match="the leader is n1") as raised:
        plan.answered(reply)
    assert raised.value.leader == "n1"


def test_unreachable_everywhere_is_reported_once_the_limit_passed():
    plan = plan_for(LeaderTracker(dict(ADDRESSES)), unreachable_seconds=1e-9)
    with pytest.raises(Unavailable, match="is the cluster running"):
        plan.not_sent(plan.next_target())


def test_a_node_that_served_without_being_known_to_lead_is_asked_and_its_hint_followed():
    tracker = LeaderTracker(dict(ADDRESSES))
    plan = plan_for(tracker)
    plan.sent(plan.next_target(), 1)
    served = Reply("n1", 1, True, {})
    assert plan.on_reply(served) and plan.succeeded(served)  # ask n1 who leads
    assert tracker.leader == "n1" and not tracker.leader_confirmed
    tracker.on_status("n1", {"role": "follower", "leader": "n2"})
    assert tracker.leader == "n2" and tracker.leader_confirmed
    assert plan_for(tracker).next_target() == "n2"
    tracker.on_status("n2", {"role": "follower", "leader": "n9"})  # not asked of n2 and unknown: ignored
    assert tracker.leader == "n2"


def test_a_leader_that_timed_out_is_left_out_while_the_others_answer_until_it_answers():
    tracker = LeaderTracker(dict(ADDRESSES))
    tracker.set_leader("n1", confirmed=True)
    plan = plan_for(tracker)
    assert plan.next_target() == "n1"
    plan.sent("n1", 1)
    plan.timed_out("n1")  # partitioned: silence
    assert tracker.leader is None and tracker.silent == {"n1"}
    # Not n1 again (config order would start with it) while the others answer.
    assert [plan.next_target() for _ in range(4)] == ["n2", "n3", "n2", "n3"]
    # The next call starts elsewhere too.
    assert plan_for(tracker).next_target() == "n2"
    plan.sent("n1", 2)
    assert plan.on_reply(error("n1", 2, NoLeader("election")))  # it answered: no longer silent
    assert tracker.silent == set()
    assert plan_for(tracker).next_target() == "n1"


def test_a_first_attempt_sent_before_the_plan_is_not_repeated_next():
    tracker = LeaderTracker(dict(ADDRESSES))
    plan = CallPlan(tracker, "mkdir", write=True, timeout_seconds=60, pinned=None, attempt_timeout_seconds=1,
                    unreachable_seconds=None, first_target="n1")
    plan.sent("n1", 1)
    reply = error("n1", 1, NoLeader("election"))
    assert plan.on_reply(reply) and plan.answered(reply) > 0
    assert [plan.next_target() for _ in range(3)] == ["n2", "n3", "n1"]


def test_when_every_node_is_silent_each_is_tried_and_a_mark_is_forgotten_after_a_while(monkeypatch):
    tracker = LeaderTracker(dict(ADDRESSES))
    for node in ADDRESSES:
        tracker.timed_out(node)
    plan = plan_for(tracker)
    assert [plan.next_target() for _ in range(4)] == ["n1", "n2", "n3", "n1"]
    later = time.monotonic() + SILENCE_REMEMBERED_SECONDS + 1
    monkeypatch.setattr(time, "monotonic", lambda: later)
    assert tracker.silent == set()


def test_a_lone_node_that_answers_while_the_others_are_silent_is_asked_again(monkeypatch):
    # After a leader's kill: its connection closed (silent), one follower let an attempt time
    # out (silent), the other says NO_LEADER. Before, the rotation skipped that follower as
    # "the same node twice in a row" and had nothing else to offer: it spun without end.
    looks = {"count": 0}
    silent_of = LeaderTracker.silent.fget

    def counted_silent(tracker):
        looks["count"] += 1
        assert looks["count"] < 1000, "the rotation spins without offering a target"
        return silent_of(tracker)

    monkeypatch.setattr(LeaderTracker, "silent", property(counted_silent))
    tracker = LeaderTracker(dict(ADDRESSES))
    tracker.timed_out("n1")
    tracker.timed_out("n2")
    plan = plan_for(tracker)
    assert plan.next_target() == "n3"
    plan.sent("n3", 1)
    reply = error("n3", 1, NoLeader("election"))
    assert plan.on_reply(reply) and plan.answered(reply) > 0
    assert [plan.next_target() for _ in range(3)] == ["n3", "n3", "n3"]
    # Once another node answers again, the rotation alternates as before.
    tracker.answered("n2")
    assert [plan.next_target() for _ in range(3)] == ["n2", "n3", "n2"]


def test_a_silent_node_gets_a_short_wait_for_its_connection():
    # A killed leader has no connection to come up: waiting the full connect time for it, while
    # the survivors have elected, made a failover a quarter second slower.
    tracker = LeaderTracker(dict(ADDRESSES))
    plan = plan_for(tracker)
    assert plan.connect_wait_seconds("n1") == failover.CONNECT_WAIT_SECONDS
    tracker.timed_out("n1")  # its connection closed (or an attempt timed out)
    assert plan.connect_wait_seconds("n1") == failover.SILENT_CONNECT_WAIT_SECONDS
    assert plan.connect_wait_seconds("n2") == failover.CONNECT_WAIT_SECONDS
    tracker.answered("n1")
    assert plan.connect_wait_seconds("n1") == failover.CONNECT_WAIT_SECONDS
