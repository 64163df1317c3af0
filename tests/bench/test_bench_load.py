"""The pipelined load generator against a scripted fake node on 127.0.0.1.

The fake node holds requests until `batch` of them are in flight and then answers them in
reverse order: the run can only finish if the generator really keeps that many requests
outstanding on one socket and matches replies by id.
"""

from __future__ import annotations

import threading
from collections import defaultdict

import msgpack
import pytest
import zmq

from node import protocol
from sandctl.bench_load import CLIENT_TIMEOUT_CODE, PipelinedLoad

POLL_MS = 50


class FakeNode:
    def __init__(self, batch: int, error_every: int = 0, silent: bool = False) -> None:
        self.batch = batch
        self.error_every = error_every
        self.silent = silent
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        port = self.socket.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.requests: list[dict] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        held: list[tuple[bytes, dict]] = []
        while not self.stopping.is_set():
            if not self.socket.poll(POLL_MS):
                continue
            identity, frame = self.socket.recv_multipart()
            request = msgpack.unpackb(frame, raw=False)
            self.requests.append(request)
            held.append((identity, request))
            if self.silent or len(held) < self.batch:
                continue
            for identity, request in reversed(held):
                number = len(self.requests)
                if self.error_every and request["id"] % self.error_every == 0:
                    reply = {"v": 1, "id": request["id"], "ok": False,
                             "error": {"code": "NOT_LEADER", "message": "no", "leader": ""}}
                    self.socket.send_multipart([identity, protocol.encode(reply)])
                else:
                    self.socket.send_multipart([identity, protocol.reply_ok(request["id"], {"n": number})])
            held.clear()

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()
        self.socket.close(linger=0)
        self.context.term()


@pytest.fixture
def fake_node_factory():
    nodes = []

    def make(**kwargs) -> FakeNode:
        node = FakeNode(**kwargs)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.close()


def _writes(lane):
    return "write_file", {"path": f"/x/{lane.index}-{lane.seq + 1}", "data": b"d", "size": 1}


def test_keeps_requests_outstanding_and_one_session_per_lane(fake_node_factory):
    node = fake_node_factory(batch=8)
    with PipelinedLoad([node.endpoint], max_frame_bytes=1 << 20, request_timeout_seconds=30) as load:
        result = load.run(_writes, outstanding=8, duration_seconds=30, max_requests=64)
    assert result.operations == 64
    assert result.errors == 0
    assert len(node.requests) == 64
    seqs_by_client = defaultdict(list)
    for request in node.requests:
        seqs_by_client[request["args"]["client"]].append(request["args"]["seq"])
    assert len(seqs_by_client) == 8  # one client id per outstanding slot
    for seqs in seqs_by_client.values():
        assert seqs == list(range(1, len(seqs) + 1))  # in order, no gaps, per lane
    assert sorted(request["id"] for request in node.requests) == list(range(1, 65))
    assert len(result.latencies_seconds) == 64


def test_reads_carry_no_session(fake_node_factory):
    node = fake_node_factory(batch=1)
    with PipelinedLoad([node.endpoint], max_frame_bytes=1 << 20) as load:
        result = load.run(lambda lane: ("stat", {"path": "/", "stale": True}), outstanding=1,
                          duration_seconds=30, max_requests=5)
    assert result.operations == 5
    assert all("client" not in request["args"] for request in node.requests)


def test_error_replies_are_counted_by_code(fake_node_factory):
    node = fake_node_factory(batch=4, error_every=2)
    replies = []
    with PipelinedLoad([node.endpoint], max_frame_bytes=1 << 20) as load:
        result = load.run(_writes, outstanding=4, duration_seconds=30, max_requests=16,
                          on_reply=lambda lane, op, args, reply: replies.append(reply.ok))
    assert result.errors_by_code == {"NOT_LEADER": 8}
    assert result.operations == 8
    assert sorted(replies) == [False] * 8 + [True] * 8


def test_lanes_that_finish_end_the_run(fake_node_factory):
    node = fake_node_factory(batch=1)
    paths = iter(["/a", "/b", "/c"])

    def make_request(lane):
        path = next(paths, None)
        return None if path is None else ("stat", {"path": path})

    with PipelinedLoad([node.endpoint], max_frame_bytes=1 << 20) as load:
        result = load.run(make_request, outstanding=2, duration_seconds=30)
    assert result.operations == 3
    assert [request["args"]["path"] for request in node.requests] == ["/a", "/b", "/c"]


def test_unanswered_requests_time_out_and_free_their_lane(fake_node_factory):
    node = fake_node_factory(batch=1, silent=True)
    with PipelinedLoad([node.endpoint], max_frame_bytes=1 << 20, request_timeout_seconds=0.05) as load:
        result = load.run(_writes, outstanding=2, duration_seconds=0.2)
    assert result.operations == 0
    assert result.errors_by_code[CLIENT_TIMEOUT_CODE] == result.errors
    # Each lane sent again after its timeout, so more than one round went out.
    assert result.errors > 2
