"""RepairScheduler's driver-thread side with doubles: it acts only while leading, proposes the
replica commands its threads queue in session order, resolves them when applied, and fails
them when leadership is lost."""

from __future__ import annotations

import zmq

from node.config import ClusterConfig, NodeAddress
from node.metadata.commands import decode_command
from node.repair.scheduler import Membership, RepairScheduler

CONFIG = ClusterConfig(nodes=(NodeAddress("n1", "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"),))


class Doubles:
    def __init__(self) -> None:
        self.leading = True
        self.proposed: list[bytes] = []

    def membership(self) -> Membership:
        # As the server answers: a follower's names no members (only a leader's view needs them).
        members = frozenset({"n1"}) if self.leading else frozenset()
        return Membership(self.leading, members, {}, {})  # no chunk address: no calls


def make() -> tuple[RepairScheduler, Doubles]:
    doubles = Doubles()
    scheduler = RepairScheduler(CONFIG, "n1", context=zmq.Context.instance(), membership=doubles.membership,
                                propose=doubles.proposed.append, read_records=list, read_record=lambda chunk: None)
    return scheduler, doubles


def test_proposals_go_out_in_session_order_and_resolve_when_applied():
    scheduler, doubles = make()
    try:
        scheduler.run(0.0)
        waiting = [scheduler._propose_async("add_replica", {"chunk": bytes([n]) * 32, "node": "n2"}) for n in range(3)]
        assert doubles.proposed == []  # only the driver thread proposes
        scheduler.run(1.0)
        commands = [decode_command(command) for command in doubles.proposed]
        assert [command.seq for command in commands] == [1, 2, 3]
        assert len({command.client for command in commands}) == 1
        assert [command.args["chunk"][0] for command in commands] == [0, 1, 2]
        scheduler.applied("someone-else", 1, {"ok": True, "result": {}})
        assert not waiting[0].done.is_set()
        scheduler.applied(commands[0].client, 1, {"ok": True, "result": {"replicas": ["n2"]}})
        assert waiting[0].done.is_set() and waiting[0].result["ok"]

        doubles.leading = False
        scheduler.run(2.0)  # leadership lost: what is still pending fails at once
        assert all(w.done.is_set() for w in waiting[1:])
        assert {w.result["error"]["code"] for w in waiting[1:]} == {"NOT_LEADER"}
        assert scheduler.status() == {"leader": False}
        assert scheduler._propose_async("drop_replica", {"chunk": b"x" * 32, "node": "n2"}) is None
    finally:
        scheduler.close()


def test_a_new_term_of_leading_uses_a_new_session():
    scheduler, doubles = make()
    try:
        scheduler.run(0.0)
        scheduler._propose_async("add_replica", {"chunk": b"a" * 32, "node": "n2"})
        scheduler.run(0.5)
        doubles.leading = False
        scheduler.run(1.0)
        doubles.leading = True
        scheduler.run(1.5)
        scheduler._propose_async("add_replica", {"chunk": b"a" * 32, "node": "n2"})
        scheduler.run(2.0)
        first, second = (decode_command(command) for command in doubles.proposed)
        assert first.client != second.client and second.seq == 1
    finally:
        scheduler.close()


def test_a_refused_proposal_fails_its_waiter():
    from node.errors import NoLeader

    scheduler, doubles = make()

    def refuse(command: bytes) -> None:
        raise NoLeader("no leader")

    scheduler._propose = refuse
    try:
        scheduler.run(0.0)
        waiting = scheduler._propose_async("add_replica", {"chunk": b"a" * 32, "node": "n2"})
        scheduler.run(0.5)
        assert waiting.done.is_set() and waiting.result["error"]["code"] == "NO_LEADER"
    finally:
        scheduler.close()


def test_a_follower_stays_idle_on_a_view_without_members():
    scheduler, doubles = make()
    doubles.leading = False
    try:
        scheduler.run(0.0)
        scheduler.run(1.0)
        assert scheduler.status() == {"leader": False}
        assert scheduler.nodes_down() == frozenset()
        assert scheduler._propose_async("add_replica", {"chunk": b"a" * 32, "node": "n2"}) is None
        assert doubles.proposed == []
    finally:
        scheduler.close()
