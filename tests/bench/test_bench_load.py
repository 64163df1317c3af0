"""The benchmark's concurrent load (asyncio client lanes) against a scripted fake node on 127.0.0.1.

The fake node holds requests until `batch` of them are in flight and then answers them in
reverse order: the run can only finish if the load really keeps that many requests
outstanding on one socket and matches replies by id.
"""

from __future__ import annotations

import threading
from collections import defaultdict

import msgpack
import pytest
import zmq

from node import protocol
from sandctl.bench_load import run_load
from tests.cli.fake_node import make_config

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
        self.config = make_config({"n1": f"127.0.0.1:{port}"})
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
                             "error": {"code": "EXISTS", "message": "no", "leader": ""}}
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
    path = f"/x/{lane.index}-{lane.requests_completed}"
    return lambda client: client.write_file(path, b"d")


def test_keeps_requests_outstanding_with_a_session_per_write_in_flight(fake_node_factory):
    node = fake_node_factory(batch=8)
    result = run_load(node.config, _writes, outstanding=8, duration_seconds=30, requests_max=64,
                      request_timeout_seconds=30)
    assert result.operations == 64
    assert result.errors == 0
    assert len(node.requests) == 64
    seqs_by_client = defaultdict(list)
    for request in node.requests:
        seqs_by_client[request["args"]["client"]].append(request["args"]["seq"])
    assert len(seqs_by_client) == 8  # one session per write in flight
    for seqs in seqs_by_client.values():
        assert seqs == list(range(1, len(seqs) + 1))  # in order, no gaps, per session
    assert len(result.latencies_seconds) == 64


def test_reads_carry_no_session(fake_node_factory):
    node = fake_node_factory(batch=1)
    result = run_load(node.config, lambda lane: (lambda client: client.stat("/", stale=True)), outstanding=1,
                      duration_seconds=30, requests_max=5)
    assert result.operations == 5
    assert all("client" not in request["args"] for request in node.requests)


def test_error_replies_are_counted_by_code(fake_node_factory):
    node = fake_node_factory(batch=4, error_every=2)
    results = []
    result = run_load(node.config, _writes, outstanding=4, duration_seconds=30, requests_max=16,
                      on_result=lambda lane, stat: results.append(stat))
    assert result.errors_by_code == {"EXISTS": 8}
    assert result.operations == 8
    assert len(results) == 8 and all(stat == {"n": stat["n"]} for stat in results)


def test_lanes_that_finish_end_the_run(fake_node_factory):
    node = fake_node_factory(batch=1)
    paths = iter(["/a", "/b", "/c"])

    def make_operation(lane):
        path = next(paths, None)
        return None if path is None else (lambda client: client.stat(path))

    result = run_load(node.config, make_operation, outstanding=2, duration_seconds=30)
    assert result.operations == 3
    # Each path once; two lanes in flight may reach the node in either order.
    assert sorted(request["args"]["path"] for request in node.requests) == ["/a", "/b", "/c"]


def test_unanswered_writes_end_with_outcome_unknown_and_free_their_lane(fake_node_factory):
    node = fake_node_factory(batch=1, silent=True)
    result = run_load(node.config, _writes, outstanding=2, duration_seconds=0.3, request_timeout_seconds=0.1)
    assert result.operations == 0
    assert set(result.errors_by_code) == {"TIMEOUT"}
    # Each lane started again after its timeout, so more than one round went out.
    assert result.errors > 2
