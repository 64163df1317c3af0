"""The asyncio client's request path against fake nodes: which arguments it sends as they are,
which it refuses (with validate_args' own errors, before sending anything), and deadlines."""

from __future__ import annotations

import asyncio
import sys

import pytest

from node.errors import BadRequest, Unavailable
from sandctl.async_client import AsyncClient, run as run_on_loop
from tests.cli.fake_node import DROP, FakeNode, Namespace, make_config


@pytest.fixture
def fake_node():
    started: list[FakeNode] = []

    def start(handler) -> FakeNode:
        started.append(FakeNode("n1", handler))
        return started[-1]

    yield start
    for node in started:
        node.close()


def run(config, body, **settings):
    async def main():
        async with AsyncClient(config, **{"timeout_seconds": 5, **settings}) as client:
            return await body(client)

    return asyncio.run(main())


class PathString(str):
    """A str subclass: validate_args accepts it (isinstance), so the client must too."""


def test_wrong_types_missing_and_unknown_arguments_are_refused_before_sending(fake_node):
    node = fake_node(Namespace())

    async def body(client):
        refused = []
        for op, args in [
            ("stat", {"path": 5}),  # not a str
            ("mkdir", {"path": "/a", "parents": 1}),  # an int is not a bool
            ("write_file", {"path": "/f", "data": b"x", "size": True}),  # a bool is not an int
            ("stat", {}),  # path is required
            ("stat", {"path": "/", "verbose": True}),  # not an argument of stat
            ("ls", ["/"]),  # args must be a map
        ]:
            with pytest.raises(BadRequest) as raised:
                await client.call(op, args)
            refused.append(str(raised.value))
        return refused

    assert run(make_config({"n1": node.address}), body) == [
        "argument 'path' must be str, got int",
        "argument 'parents' must be bool, got int",
        "argument 'size' must be int, got bool",
        "missing argument 'path' for stat",
        "unknown argument 'verbose' for stat",
        "args must be a map",
    ]
    assert node.ops() == []


def test_what_validate_args_accepts_is_sent_as_it_would_send_it(fake_node):
    node = fake_node(Namespace())

    async def body(client):
        await client.call("mkdir", {"path": "/a", "mode": None})  # an absent optional: not sent
        await client.stat(PathString("/a"))
        return await client.call("ls", {"path": "/", "recursive": False, "stale": None})

    listing = run(make_config({"n1": node.address}), body, client_id="tester")
    assert [entry["path"] for entry in listing] == ["/a"]
    (mkdir,) = node.requests_of("mkdir")
    assert mkdir == {"path": "/a", "client": "tester-1", "seq": 1}
    assert node.requests_of("stat") == [{"path": "/a", "stale": False}]
    assert node.requests_of("ls") == [{"path": "/", "recursive": False}]


def test_a_write_carries_its_own_session_and_the_callers_args_are_left_alone(fake_node):
    node = fake_node(Namespace())
    plain = {"path": "/a"}
    claiming = {"path": "/b", "client": "someone-else", "seq": 99}  # replaced, as before

    async def body(client):
        await client.call("mkdir", plain)
        await client.call("mkdir", claiming)

    run(make_config({"n1": node.address}), body, client_id="tester")
    assert plain == {"path": "/a"}
    assert claiming == {"path": "/b", "client": "someone-else", "seq": 99}
    assert node.requests_of("mkdir") == [{"path": "/a", "client": "tester-1", "seq": 1},
                                         {"path": "/b", "client": "tester-1", "seq": 2}]


def test_a_client_id_too_long_for_its_sessions_is_refused_by_the_schema(fake_node):
    node = fake_node(Namespace())

    async def body(client):
        await client.stat("/")  # reads carry no session: fine
        with pytest.raises(BadRequest, match="client id must be 1 to 64 bytes"):
            await client.mkdir("/a")

    run(make_config({"n1": node.address}), body, client_id="x" * 64)
    assert node.ops() == ["stat"]


def test_a_short_deadline_queued_after_a_long_one_ends_first(fake_node):
    """The deadline sweep is armed for the earliest deadline in flight, not the first one."""
    node = fake_node(lambda op, args: {} if op == "ping" else DROP)

    async def body(client):
        await client.call("ping", {}, node="n1")  # connected: the stats' first attempts are sent at once
        long_call = asyncio.ensure_future(client.call("stat", {"path": "/"}, node="n1", deadline_seconds=60))
        await asyncio.sleep(0)  # its attempt is queued first
        with pytest.raises(Unavailable, match="no node answered stat"):
            await asyncio.wait_for(client.call("stat", {"path": "/"}, node="n1", deadline_seconds=0.2), 10)
        still_waiting = not long_call.done()
        long_call.cancel()
        return still_waiting

    assert run(make_config({"n1": node.address}), body, timeout_seconds=60, attempt_timeout_seconds=30) is True


def test_run_gives_the_coroutines_result_and_ends_what_it_left_running():
    ended = []

    async def left_running():
        try:
            await asyncio.sleep(60)
        finally:
            ended.append(True)

    async def main():
        asyncio.ensure_future(left_running())
        await asyncio.sleep(0)
        return 42

    assert run_on_loop(main()) == 42
    assert ended == [True]


def test_the_loop_is_uvloops_and_asyncios_own_where_uvloop_cannot_be_imported(monkeypatch):
    import uvloop  # a dependency (setup.cfg)

    from sandctl.async_client import new_event_loop

    loop = new_event_loop()
    assert isinstance(loop, uvloop.Loop)
    loop.close()
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    loop = new_event_loop()
    assert not isinstance(loop, uvloop.Loop) and isinstance(loop, asyncio.BaseEventLoop)
    loop.close()

    async def main():
        return type(asyncio.get_running_loop())

    assert run_on_loop(main()) is type(loop)
