"""The checker has teeth: each invariant fires on a hand-made violation, and a broken driver
is caught by a short simulation."""

from __future__ import annotations

import pytest

from node.raft.types import Entry, HardState, Message, MessageKind, Ready, Role

from tests.sim import mutants
from tests.sim.cluster import Cluster
from tests.sim.disk import Disk
from tests.sim.invariants import Checker, InvariantViolation
from tests.sim.simulator import EventQueue


def disk_with(term: int, vote: str = "", entries: tuple[Entry, ...] = (), commit: int = 0) -> Disk:
    disk = Disk()
    disk.storage.append(entries)
    disk.storage.set_hard_state(HardState(term=term, vote=vote, commit=commit))
    return disk


def test_two_leaders_in_one_term():
    checker = Checker(EventQueue())
    checker.after_persist("n1", Role.LEADER, 2, Ready(), disk_with(2, "n1"))
    with pytest.raises(InvariantViolation, match="two leaders in term 2"):
        checker.after_persist("n2", Role.LEADER, 2, Ready(), disk_with(2, "n2"))


def test_vote_grant_before_the_vote_is_durable():
    checker = Checker(EventQueue())
    grant = Message(MessageKind.VOTE_RESPONSE, "n2", "n1", term=3)
    with pytest.raises(InvariantViolation, match="granted its term-3 vote"):
        checker.on_send("n2", grant, disk_with(2), leader_term_at_index=lambda *a: None)


def test_log_matching():
    checker = Checker(EventQueue())
    first = (Entry(1, 1), Entry(1, 2, data=b"x"))
    checker.after_persist("n1", Role.FOLLOWER, 1, Ready(entries=first), disk_with(1, entries=first))
    other = (Entry(1, 1), Entry(1, 2, data=b"y"))
    with pytest.raises(InvariantViolation, match="log matching"):
        checker.after_persist("n2", Role.FOLLOWER, 1, Ready(entries=other), disk_with(1, entries=other))


def test_leader_overwriting_its_log():
    checker = Checker(EventQueue())
    disk = disk_with(2, "n1", entries=(Entry(1, 1), Entry(2, 2)))
    with pytest.raises(InvariantViolation, match="overwrote its own log"):
        checker.before_persist("n1", Role.LEADER, 2, Ready(entries=(Entry(2, 2, data=b"z"),)), disk)


def test_state_machine_safety_and_stale_reads():
    checker = Checker(EventQueue())
    entries = (Entry(1, 1, data=b"a"),)
    checker.on_apply("n1", entries[0], disk_with(1, entries=entries, commit=1))
    with pytest.raises(InvariantViolation, match="state machine safety"):
        checker.on_apply("n2", Entry(2, 1, data=b"b"), disk_with(2, entries=(Entry(2, 1, data=b"b"),), commit=1))
    checker.on_ack(b"a", 5)
    checker.on_read_request(b"r")
    behind = disk_with(1)
    behind.applied_index = 4
    with pytest.raises(InvariantViolation, match="stale read"):
        checker.on_read_served("n1", b"r", behind)


def test_a_driver_that_sends_promises_before_its_write_is_caught(monkeypatch):
    """The simulator runs the production driver: a bug planted there is seen at once."""
    mutants.send_promises_before_persisting(monkeypatch)
    cluster = Cluster(3, seed=1)
    with pytest.raises(InvariantViolation, match="before the disk write"):
        cluster.wait_for_leader()
