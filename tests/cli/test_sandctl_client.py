"""The client library against fake nodes: failover, exactly-once sessions, and what the caller
learns when the deadline passes."""

from __future__ import annotations


import pytest

from fake_node import DROP, Namespace, free_port, make_config, status_of
from node.errors import (
    AlreadyExists,
    ConfigError,
    NoLeader,
    NotFound,
    NotLeader,
    TimedOut,
    TooLarge,
    Unavailable,
)
from sandctl.client import Client


def not_leader(hint: str):
    def handler(op, args):
        raise NotLeader("not the leader", hint)

    return handler


def test_not_leader_hint_redirects_and_the_leader_is_remembered(fake_nodes):
    follower = fake_nodes("n1", not_leader("n2"))
    leader = fake_nodes("n2", Namespace("n2"))
    config = make_config({"n1": follower.address, "n2": leader.address})
    with Client(config, timeout_seconds=5) as client:
        assert client.stat("/")["type"] == "dir"
        assert client.leader == "n2"
        client.mkdir("/a")
    assert follower.ops() == ["stat"]  # the second call went straight to the leader
    assert leader.ops() == ["stat", "mkdir"]


def test_no_leader_then_next_node(fake_nodes):
    def no_leader(op, args):
        raise NoLeader("election under way")

    first = fake_nodes("n1", no_leader)
    second = fake_nodes("n2", Namespace("n2"))
    config = make_config({"n1": first.address, "n2": second.address})
    with Client(config, timeout_seconds=5) as client:
        assert client.mkdir("/a")["path"] == "/a"
    assert first.ops() == ["mkdir"]
    # n2 answered without being known to lead: the client may also ask its status.
    assert [op for op in second.ops() if op != "status"] == ["mkdir"]
    # One write, one seq, even though two nodes saw it.
    assert first.requests_of("mkdir")[0]["seq"] == second.requests_of("mkdir")[0]["seq"] == 1


def test_retry_of_a_silent_write_reuses_its_seq(fake_nodes):
    namespace = Namespace()
    calls = {"mkdir": 0}

    def drops_first_mkdir(op, args):
        if op == "mkdir":
            calls["mkdir"] += 1
            if calls["mkdir"] == 1:
                return DROP
        return namespace(op, args)

    node = fake_nodes("n1", drops_first_mkdir)
    config = make_config({"n1": node.address})
    with Client(config, timeout_seconds=5, attempt_timeout_seconds=0.2, client_id="tester") as client:
        client.mkdir("/a")
        client.mkdir("/b")
    sessions = [(args["path"], args["client"], args["seq"]) for args in node.requests_of("mkdir")]
    assert sessions == [("/a", "tester", 1), ("/a", "tester", 1), ("/b", "tester", 2)]


def test_reads_carry_no_session(fake_nodes):
    node = fake_nodes("n1", Namespace())
    with Client(make_config({"n1": node.address}), timeout_seconds=5) as client:
        client.ls("/")
    assert node.requests_of("ls") == [{"path": "/", "recursive": False, "stale": False}]


def test_refusal_is_raised_as_the_named_error_without_retry(fake_nodes):
    namespace = Namespace()
    node = fake_nodes("n1", namespace)
    with Client(make_config({"n1": node.address}), timeout_seconds=5) as client:
        client.mkdir("/a")
        with pytest.raises(AlreadyExists):
            client.mkdir("/a")
        with pytest.raises(NotFound):
            client.stat("/missing")
    assert node.ops() == ["mkdir", "mkdir", "stat"]


def test_every_node_down_is_unavailable_for_writes_and_reads():
    config = make_config({"n1": f"127.0.0.1:{free_port()}", "n2": f"127.0.0.1:{free_port()}"})
    with Client(config, timeout_seconds=0.5) as client:
        # Nothing could be sent, so nothing changed: Unavailable, never TimedOut, at the deadline.
        with pytest.raises(Unavailable, match=r"mkdir was not applied: no leader answered within 0.5 s"):
            client.mkdir("/a")
        with pytest.raises(Unavailable, match=r"no node answered stat within 0.5 s"):
            client.stat("/")


def test_with_unreachable_seconds_a_stopped_cluster_is_reported_before_the_deadline():
    config = make_config({"n1": f"127.0.0.1:{free_port()}", "n2": f"127.0.0.1:{free_port()}"})
    # A 600 s deadline: the test only finishes if the unreachable rule ends the call first.
    with Client(config, timeout_seconds=600, unreachable_seconds=0.2) as client:
        with pytest.raises(Unavailable, match=r"cannot connect to n1 .*, n2 .* for 0.2 s: is the cluster running"):
            client.mkdir("/a")
        with pytest.raises(Unavailable, match=r"is the cluster running"):
            client.stat("/")


def test_unreachable_seconds_does_not_cut_short_a_node_that_is_up(fake_nodes):
    namespace = Namespace()
    answered = []

    def no_leader_for_a_while(op, args):
        # Far longer than unreachable_seconds: the node is reachable, so the client keeps trying.
        if len(answered) < 40:
            answered.append(op)
            raise NoLeader("election under way")
        return namespace(op, args)

    node = fake_nodes("n1", no_leader_for_a_while)
    with Client(make_config({"n1": node.address}), timeout_seconds=30, unreachable_seconds=0.05) as client:
        assert client.mkdir("/a")["path"] == "/a"
    assert len(answered) == 40


def test_a_write_that_reached_a_silent_node_times_out_with_outcome_unknown(fake_nodes):
    node = fake_nodes("n1", lambda op, args: DROP)
    with Client(make_config({"n1": node.address}), timeout_seconds=0.6, attempt_timeout_seconds=0.2) as client:
        with pytest.raises(TimedOut, match="may or may not"):
            client.mkdir("/a")
        # A read that got no answer changed nothing.
        with pytest.raises(Unavailable):
            client.stat("/")


def test_a_write_refused_by_every_node_for_want_of_a_leader_is_unavailable(fake_nodes):
    def no_leader(op, args):
        raise NoLeader("election under way")

    node = fake_nodes("n1", no_leader)
    with Client(make_config({"n1": node.address}), timeout_seconds=0.3) as client:
        with pytest.raises(Unavailable, match="was not applied"):
            client.mkdir("/a")
    seqs = {args["seq"] for args in node.requests_of("mkdir")}
    assert len(node.requests_of("mkdir")) >= 2 and seqs == {1}


def test_pinned_node_does_not_fail_over(fake_nodes):
    follower = fake_nodes("n1", not_leader("n2"))
    leader = fake_nodes("n2", Namespace("n2"))
    config = make_config({"n1": follower.address, "n2": leader.address})
    with Client(config, node="n1", timeout_seconds=5) as client:
        with pytest.raises(NotLeader) as raised:
            client.stat("/")
    assert raised.value.leader == "n2"
    assert leader.ops() == []


def test_pinning_an_unknown_node_is_a_config_error(fake_nodes):
    node = fake_nodes("n1", Namespace())
    with pytest.raises(ConfigError, match="n9"):
        Client(make_config({"n1": node.address}), node="n9")


def test_status_all_reports_down_nodes_as_none(fake_nodes):
    node = fake_nodes("n1", lambda op, args: status_of("n1", "leader", "n1"))
    config = make_config({"n1": node.address, "n2": f"127.0.0.1:{free_port()}"})
    with Client(config, timeout_seconds=5) as client:
        statuses = client.status_all(timeout_seconds=0.5)
    assert statuses["n1"]["role"] == "leader"
    assert statuses["n2"] is None


def test_wait_for_leader_finds_the_node_that_leads(fake_nodes):
    n1 = fake_nodes("n1", lambda op, args: status_of("n1", "follower", "n2"))
    n2 = fake_nodes("n2", lambda op, args: status_of("n2", "leader", "n2"))
    with Client(make_config({"n1": n1.address, "n2": n2.address}), timeout_seconds=5) as client:
        assert client.wait_for_leader(2.0) == "n2"
        assert client.leader == "n2"
        with pytest.raises(NoLeader):
            client.wait_for_leader(0.3, exclude=("n2",))


def test_write_file_read_round_trip_and_local_size_check(fake_nodes):
    node = fake_nodes("n1", Namespace())
    config = make_config({"n1": node.address}, inline_bytes_max=1024, chunk_size_bytes=4096)
    with Client(config, timeout_seconds=5) as client:
        written = client.write_file("/f", b"hello", mode=0o600)
        assert written["size"] == 5
        info, data = client.read("/f")
        assert data == b"hello" and info["mode"] == 0o600 and "data" not in info
        with pytest.raises(TooLarge):
            client.write_file("/big", b"x" * 1025)
    assert node.ops() == ["write_file", "read"]


def test_hints_that_chase_each_other_back_off_and_end_unavailable(fake_nodes):
    n1 = fake_nodes("n1", not_leader("n2"))
    n2 = fake_nodes("n2", not_leader("n1"))
    with Client(make_config({"n1": n1.address, "n2": n2.address}), timeout_seconds=0.5) as client:
        with pytest.raises(Unavailable):
            client.stat("/")
    # Backoff between rounds keeps this to a few dozen requests, not a busy loop.
    assert 2 <= len(n1.ops()) + len(n2.ops()) < 100


def test_a_small_put_into_a_directory_is_one_request(fake_nodes):
    import io

    node = fake_nodes("n1", Namespace())
    with Client(make_config({"n1": node.address}), timeout_seconds=5) as client:
        client.mkdir("/docs")
        stored = client.put_file("/docs", io.BytesIO(b"hello"), size_hint=5, into_directory="a.txt")
        assert stored["path"] == "/docs/a.txt"
        # Not a directory: the name is ignored and the file is the target itself.
        assert client.put_file("/b.txt", io.BytesIO(b"x"), into_directory="a.txt")["path"] == "/b.txt"
    # No stat before the write: the write itself resolves the directory.
    assert node.ops() == ["mkdir", "write_file", "write_file"]
    assert node.requests_of("write_file")[0]["into_directory"] == "a.txt"
    assert "overwrite" not in node.requests_of("write_file")[0]  # the node's default (true) is not sent


def test_overwrite_false_is_sent_and_its_refusal_raised(fake_nodes):
    node = fake_nodes("n1", Namespace())
    with Client(make_config({"n1": node.address}), timeout_seconds=5) as client:
        client.write_file("/f", b"old")
        with pytest.raises(AlreadyExists):
            client.write_file("/f", b"new", overwrite=False)
        client.write_file("/g", b"new", overwrite=False)
        client.mv("/g", "/h", overwrite=False)
        with pytest.raises(AlreadyExists):
            client.mv("/h", "/f", overwrite=False)
    assert [args.get("overwrite") for args in node.requests_of("write_file")] == [None, False, False]
    assert [args.get("overwrite") for args in node.requests_of("mv")] == [False, False]


def test_a_client_served_by_a_follower_returns_to_the_leader(fake_nodes):
    import time

    namespace = Namespace("n2")

    def forwarding_follower(op, args):
        # A follower serves by forwarding to the leader; only its status tells who leads.
        return status_of("n1", "follower", "n2") if op == "status" else namespace(op, args)

    follower = fake_nodes("n1", forwarding_follower)
    leader = fake_nodes("n2", namespace)
    with Client(make_config({"n1": follower.address, "n2": leader.address}), timeout_seconds=5) as client:
        client.mkdir("/a")  # the leader is unknown: the first node in the config serves it
        deadline = time.monotonic() + 10
        while not leader.ops():
            assert time.monotonic() < deadline, f"never returned to the leader; n1 saw {follower.ops()}"
            client.stat("/a")
        served_by_follower = len(follower.ops())
        for number in range(5):
            client.mkdir(f"/b{number}")
    assert client.leader == "n2"
    assert follower.requests_of("status")  # a background question, answered with the hint
    assert len(follower.ops()) == served_by_follower  # nothing more went to the follower
    assert [op for op in leader.ops() if op == "mkdir"] == ["mkdir"] * 5
