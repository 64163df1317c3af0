"""The asyncio client against fake nodes: the same failover, sessions and errors as the blocking
Client, with many requests in flight."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from node.errors import AlreadyExists, NoLeader, NotFound, NotLeader, TimedOut, Unavailable
from sandctl.async_client import AsyncClient
from tests.cli.fake_node import DROP, FakeNode, Namespace, free_port, make_config, status_of


@pytest.fixture
def fake_nodes():
    started: list[FakeNode] = []

    def start(node_id: str, handler) -> FakeNode:
        started.append(FakeNode(node_id, handler))
        return started[-1]

    yield start
    for node in started:
        node.close()


def run(client_factory, body):
    """Run body(client) on a fresh event loop with a client made inside it."""

    async def main():
        async with client_factory() as client:
            return await body(client)

    return asyncio.run(main())


def test_many_writes_in_flight_each_have_their_own_session(fake_nodes):
    node = fake_nodes("n1", Namespace())
    config = make_config({"n1": node.address})

    async def body(client):
        await client.mkdir("/d")
        await asyncio.gather(*(client.write_file(f"/d/f{number}", b"x") for number in range(32)))
        await asyncio.gather(*(client.write_file(f"/d/g{number}", b"y") for number in range(32)))
        return await client.ls("/d")

    listing = run(lambda: AsyncClient(config, timeout_seconds=5, client_id="tester"), body)
    assert len(listing) == 64
    sessions = [(args["client"], args["seq"]) for op, args in node.requests if op in ("mkdir", "write_file")]
    assert len(set(sessions)) == 65  # no (client, seq) twice
    by_client: dict[str, list[int]] = {}
    for client_id, seq in sessions:
        by_client.setdefault(client_id, []).append(seq)
    assert len(by_client) <= 32  # sessions are reused once their write is over
    assert all(seqs == list(range(1, len(seqs) + 1)) for seqs in by_client.values())  # in order per session
    assert all(client_id.startswith("tester-") for client_id in by_client)


def test_a_hint_redirects_and_errors_are_the_named_ones(fake_nodes):
    def not_leader(op, args):
        raise NotLeader("not the leader", "n2")

    follower = fake_nodes("n1", not_leader)
    leader = fake_nodes("n2", Namespace("n2"))
    config = make_config({"n1": follower.address, "n2": leader.address})

    async def body(client):
        await client.mkdir("/a")
        with pytest.raises(AlreadyExists):
            await client.mkdir("/a")
        with pytest.raises(NotFound):
            await client.stat("/missing")
        with pytest.raises(NotLeader) as raised:
            await client.stat("/", node="n1")  # pinned: no failover
        return client.leader, raised.value.leader

    assert run(lambda: AsyncClient(config, timeout_seconds=5), body) == ("n2", "n2")
    assert follower.ops() == ["mkdir", "stat"]  # the first call, then only the pinned one
    assert leader.ops() == ["mkdir", "mkdir", "stat"]


def test_a_silent_write_is_retried_with_its_seq_then_times_out_with_outcome_unknown(fake_nodes):
    namespace = Namespace()
    mkdirs = []

    def drops_first_mkdir(op, args):
        if op == "mkdir":
            mkdirs.append(args)
            if len(mkdirs) == 1:
                return DROP
        return namespace(op, args)

    node = fake_nodes("n1", drops_first_mkdir)
    silent = fake_nodes("n2", lambda op, args: DROP)

    async def body(client):
        await client.mkdir("/a")
        return True

    run(lambda: AsyncClient(make_config({"n1": node.address}), timeout_seconds=5, attempt_timeout_seconds=0.2,
                            client_id="tester"), body)
    assert [(args["path"], args["seq"]) for args in mkdirs] == [("/a", 1), ("/a", 1)]

    async def times_out(client):
        with pytest.raises(TimedOut, match="may or may not"):
            await client.mkdir("/b")
        with pytest.raises(Unavailable):  # a read that got no answer changed nothing
            await client.stat("/")
        return True

    run(lambda: AsyncClient(make_config({"n2": silent.address}), timeout_seconds=0.6,
                            attempt_timeout_seconds=0.2), times_out)


def test_nothing_reachable_is_unavailable_and_no_leader_is_retried(fake_nodes):
    config = make_config({"n1": f"127.0.0.1:{free_port()}"})

    async def down(client):
        with pytest.raises(Unavailable, match="mkdir was not applied"):
            await client.mkdir("/a")
        return True

    run(lambda: AsyncClient(config, timeout_seconds=0.4), down)

    namespace = Namespace()
    refusals = []

    def no_leader_at_first(op, args):
        if len(refusals) < 3:
            refusals.append(op)
            raise NoLeader("election under way")
        return namespace(op, args)

    node = fake_nodes("n1", no_leader_at_first)

    async def body(client):
        return await client.mkdir("/a")

    assert run(lambda: AsyncClient(make_config({"n1": node.address}), timeout_seconds=5), body)["path"] == "/a"
    assert node.ops() == ["mkdir"] * 4


def test_a_client_served_by_a_follower_returns_to_the_leader(fake_nodes):
    namespace = Namespace("n2")

    def forwarding_follower(op, args):
        return status_of("n1", "follower", "n2") if op == "status" else namespace(op, args)

    follower = fake_nodes("n1", forwarding_follower)
    leader = fake_nodes("n2", namespace)
    config = make_config({"n1": follower.address, "n2": leader.address})

    async def body(client):
        await client.mkdir("/a")
        deadline = time.monotonic() + 10
        while not leader.ops():
            assert time.monotonic() < deadline, f"never returned to the leader; n1 saw {follower.ops()}"
            await client.stat("/a")
        served_by_follower = len(follower.ops())
        await asyncio.gather(*(client.mkdir(f"/b{number}") for number in range(5)))
        return served_by_follower

    served_by_follower = run(lambda: AsyncClient(config, timeout_seconds=5), body)
    assert follower.requests_of("status")
    assert len(follower.ops()) == served_by_follower
    assert [op for op in leader.ops() if op == "mkdir"] == ["mkdir"] * 5


def test_a_late_answer_to_a_timed_out_first_attempt_still_counts(fake_nodes):
    """The first attempt goes to the known leader n1 (connected already, so it is sent at once)
    and times out; its retry goes to n2, which swallows it and lets n1 answer the first attempt
    at last. That late answer is the call's result: n1 drops every later stat, so nothing else
    could answer."""
    namespace = Namespace()
    retried = threading.Event()
    asked = []

    def slow_then_silent(op, args):
        if op != "stat":
            return namespace(op, args)
        asked.append(op)
        if len(asked) > 1:
            return DROP
        assert retried.wait(5), "the client never tried the next node"
        return namespace(op, args)

    def releases_n1(op, args):
        retried.set()
        return DROP

    n1 = fake_nodes("n1", slow_then_silent)
    n2 = fake_nodes("n2", releases_n1)

    async def body(client):
        await client.status("n1")  # connects to n1
        client.leader = "n1"
        return await client.stat("/")

    stat = run(lambda: AsyncClient(make_config({"n2": n2.address, "n1": n1.address}), timeout_seconds=5,
                                   attempt_timeout_seconds=0.1), body)
    assert stat["type"] == "dir"
    assert n1.ops()[:2] == ["status", "stat"] and n2.ops() == ["stat"]
