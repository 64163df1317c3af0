"""The client request engine against a scripted ROUTER on 127.0.0.1: pipelining, matching by
(node, id), dropped late and malformed replies, broadcast, and the shared context."""

from __future__ import annotations

import threading
import time

import msgpack
import pytest
import zmq

from node import protocol
from node.errors import NotFound, NotLeader
from sandctl.connection import Connections, SocketOptions, shared_context
from tests.cli.fake_node import free_port

FRAME_BYTES_MAX = 1 << 20
DEADLINE_SECONDS = 10.0


class ScriptedNode:
    """Holds requests until `batch` have arrived, then answers them in reverse order with
    whatever answer(request) returns: a list of frames, or None for no answer."""

    def __init__(self, answer, batch: int = 1) -> None:
        self.answer = answer
        self.batch = batch
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.address = f"127.0.0.1:{self.socket.bind_to_random_port('tcp://127.0.0.1')}"
        self.requests: list[dict] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        held = []
        while not self.stopping.is_set():
            if not self.socket.poll(20):
                continue
            identity, frame = self.socket.recv_multipart()
            request = msgpack.unpackb(frame, raw=False)
            self.requests.append(request)
            held.append((identity, request))
            if len(held) < self.batch:
                continue
            for identity, request in reversed(held):
                frames = self.answer(request)
                if frames is not None:
                    self.socket.send_multipart([identity, *frames])
            held.clear()

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()
        self.socket.close(linger=0)
        self.context.term()


@pytest.fixture
def scripted():
    nodes = []

    def start(answer, batch: int = 1) -> ScriptedNode:
        node = ScriptedNode(answer, batch)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.close()


@pytest.fixture
def connections():
    made = []

    def make(addresses: dict[str, str], **options) -> Connections:
        made.append(Connections(addresses, SocketOptions(frame_bytes_max=FRAME_BYTES_MAX, **options)))
        return made[-1]

    yield make
    for connection in made:
        connection.close()


def echo(request):
    return [protocol.reply_ok(request["id"], {"op": request["op"], "args": request["args"]})]


def collect(connections: Connections, count: int) -> list:
    replies = []
    deadline = time.monotonic() + DEADLINE_SECONDS
    while len(replies) < count:
        assert time.monotonic() < deadline, f"only {len(replies)} of {count} replies"
        replies.extend(connections.poll(0.1))
    return replies


def test_many_requests_in_flight_on_one_socket_are_matched_by_id(scripted, connections):
    node = scripted(echo, batch=16)  # answers only once 16 are outstanding, in reverse order
    engine = connections({"n1": node.address})
    sent = {engine.request("n1", "stat", {"path": f"/{number}"}): f"/{number}" for number in range(16)}
    assert None not in sent and engine.pending_count == 16
    replies = collect(engine, 16)
    assert [reply.request_id for reply in replies] == sorted(sent, reverse=True)
    assert all(reply.ok and reply.node == "n1" and reply.result["args"]["path"] == sent[reply.request_id]
               for reply in replies)
    assert engine.pending_count == 0


def test_error_replies_carry_the_named_error_and_the_leader_hint(scripted, connections):
    def refuse(request):
        if request["args"]["path"] == "/missing":
            return [protocol.reply_error(request["id"], NotFound("/missing does not exist"))]
        return [protocol.reply_error(request["id"], NotLeader("not the leader", "n2"))]

    engine = connections({"n1": scripted(refuse).address})
    engine.request("n1", "stat", {"path": "/missing"})
    [missing] = collect(engine, 1)
    engine.request("n1", "stat", {"path": "/x"})
    [redirect] = collect(engine, 1)
    assert not missing.ok and missing.code == "NOT_FOUND" and isinstance(missing.error, NotFound)
    assert redirect.code == "NOT_LEADER" and redirect.error.leader == "n2"


def test_forgotten_unknown_and_malformed_replies_are_dropped(scripted, connections):
    def answer(request):
        path = request["args"]["path"]
        if path == "/garbage":
            return [b"\xc1 not msgpack"]
        if path == "/wrong-id":
            return [protocol.reply_ok(request["id"] + 1000, {})]
        if path == "/three-frames":
            return [protocol.reply_ok(request["id"], {}), b"a", b"b"]
        if path == "/error-with-content":
            return [protocol.reply_error(request["id"], NotFound("x")), b"content"]
        return echo(request)

    engine = connections({"n1": scripted(answer).address})
    forgotten = engine.request("n1", "stat", {"path": "/forgotten"})
    engine.forget("n1", forgotten)
    for path in ("/garbage", "/wrong-id", "/three-frames", "/error-with-content"):
        engine.request("n1", "stat", {"path": path})
    last = engine.request("n1", "stat", {"path": "/last"})
    # Only the last request's reply comes through; the node answers in order, so the others
    # have been read (and dropped) by the time it arrives.
    [reply] = collect(engine, 1)
    assert reply.request_id == last
    assert engine.poll(0.05) == []
    assert engine.pending_count == 4  # the malformed ones stay pending until their sender gives up


def test_a_content_frame_is_handed_on_without_a_copy(scripted, connections):
    content = b"x" * 100_000
    node = scripted(lambda request: [protocol.reply_ok(request["id"], {"size": len(content)}), content])
    engine = connections({"n1": node.address}, zero_copy=True)
    engine.request("n1", "chunk_get", {"id": b"i" * 32})
    [reply] = collect(engine, 1)
    assert type(reply.content) is memoryview and reply.content == content


def test_one_request_sent_to_several_nodes_is_answered_by_each(scripted, connections):
    nodes = {name: scripted(echo) for name in ("n1", "n2", "n3")}
    engine = connections({name: node.address for name, node in nodes.items()})
    request_id, frame = engine.new_request("chunk_put", {"id": b"i" * 32})
    for name in nodes:
        assert engine.send(name, request_id, [frame])
    replies = collect(engine, 3)
    assert sorted(reply.node for reply in replies) == ["n1", "n2", "n3"]
    assert {reply.request_id for reply in replies} == {request_id}


def test_immediate_sockets_do_not_queue_to_a_down_node(connections):
    engine = connections({"down": f"127.0.0.1:{free_port()}"}, immediate=True)
    assert engine.request("down", "ping", {}, connect_wait_seconds=0.05) is None
    assert engine.pending_count == 0


def test_broadcast_reports_silent_and_down_nodes_as_none(scripted, connections):
    up = scripted(echo)
    silent = scripted(lambda request: None)
    engine = connections({"up": up.address, "silent": silent.address, "down": f"127.0.0.1:{free_port()}"},
                         immediate=True)
    answers = engine.broadcast(["up", "silent", "down"], "status", {}, timeout_seconds=0.5)
    assert answers["up"] == {"op": "status", "args": {}}
    assert answers["silent"] is None and answers["down"] is None
    assert engine.pending_count == 0  # nothing left waiting after the broadcast


def test_broadcast_returns_as_soon_as_until_is_satisfied(scripted, connections):
    up = scripted(echo)
    silent = scripted(lambda request: None)
    engine = connections({"up": up.address, "silent": silent.address}, immediate=True)
    # A 600 s timeout: the test only finishes because until() ends the broadcast.
    answers = engine.broadcast(["up", "silent"], "status", {}, timeout_seconds=600,
                               until=lambda so_far: so_far["up"] is not None)
    assert answers["up"] is not None and answers["silent"] is None


def test_every_blocking_client_shares_the_process_context():
    from sandctl.client import Client
    from tests.cli.fake_node import make_config

    config = make_config({"n1": f"127.0.0.1:{free_port()}"})
    with Client(config) as first, Client(config) as second:
        sockets = [client._connections.socket("n1") for client in (first, second)]
        assert sockets[0] is not sockets[1]  # each Client reads only its own replies
        assert sockets[0].context is sockets[1].context is shared_context()
    assert not shared_context().closed  # closing a Client leaves the shared context alone
