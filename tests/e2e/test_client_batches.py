"""Batch frames on a real node's client port (node/protocol.py, Batches): a frame holding an
array of requests is answered request by request, the replies to it may come in batch frames,
the reads one ReadIndex round confirms come back in one frame, and a plain request's reply
says that the node takes batches."""

from __future__ import annotations

import msgpack
import pytest
import zmq

from node import protocol
from sandctl.client import client_security
from sandctl.connection import SocketOptions, connect_dealer

pytestmark = pytest.mark.e2e

REPLY_WAIT_MS = 10_000
FILE_COUNT = 24


def _dealer(context: zmq.Context, cluster, node_id: str) -> zmq.Socket:
    dealer = context.socket(zmq.DEALER)
    node = cluster.config.node(node_id)
    connect_dealer(dealer, node.client, SocketOptions(cluster.config.frame_bytes_max,
                                                      security=client_security(cluster.config)), node.id)
    return dealer


def _frames(dealer: zmq.Socket, replies_expected: int) -> list[list[dict]]:
    """The reply frames that carry replies_expected replies, each as the list of its replies."""
    frames: list[list[dict]] = []
    while sum(map(len, frames)) < replies_expected:
        assert dealer.poll(REPLY_WAIT_MS), f"only {sum(map(len, frames))} of {replies_expected} replies arrived"
        parts = dealer.recv_multipart()
        assert len(parts) == 1, parts
        decoded = msgpack.unpackb(parts[0])
        frames.append(decoded if isinstance(decoded, list) else [decoded])
    return frames


def _batch(*requests: object) -> bytes:
    return msgpack.packb(list(requests), use_bin_type=True)


def _read(request_id: int, path: str, stale: bool) -> dict:
    return {"v": protocol.PROTOCOL_VERSION, "id": request_id, "op": "read", "args": {"path": path, "stale": stale}}


@pytest.mark.parametrize("cluster", ["none-1"], indirect=True)
def test_a_batch_is_answered_request_by_request_and_bad_batches_are_refused(cluster, context):
    for number in range(FILE_COUNT):
        cluster.client.write_file(f"/f{number}", f"content {number}".encode())
    dealer = _dealer(context, cluster, cluster.config.nodes[0].id)
    try:
        # Alone in its frame: the reply says the node takes batches, and how many at most.
        dealer.send(protocol.request(1, "ping", {}))
        [[alone]] = _frames(dealer, 1)
        assert (alone["id"], alone["ok"], alone["batches"]) == (1, True, protocol.REQUESTS_PER_FRAME_MAX)

        before = cluster.client.status(cluster.config.nodes[0].id)["counters"]
        # A batch with a request of an unknown op and one for a missing file among the reads.
        requests = [_read(100 + number, f"/f{number}", True) for number in range(FILE_COUNT)]
        requests[5] = {"v": protocol.PROTOCOL_VERSION, "id": 105, "op": "no_such_op", "args": {}}
        requests[9] = _read(109, "/missing", True)
        dealer.send(_batch(*requests))
        frames = _frames(dealer, FILE_COUNT)
        by_id: dict[int, dict] = {}
        for reply in (reply for frame in frames for reply in frame):
            assert reply["id"] not in by_id, f"request {reply['id']} answered twice"
            by_id[reply["id"]] = reply
            assert "batches" not in reply  # the node says so to requests that came alone
        assert sorted(by_id) == [100 + number for number in range(FILE_COUNT)]
        assert by_id[105]["error"]["code"] == "BAD_REQUEST" and "no_such_op" in by_id[105]["error"]["message"]
        assert by_id[109]["error"]["code"] == "NOT_FOUND"
        assert all(by_id[100 + number]["result"]["data"] == f"content {number}".encode()
                   for number in range(FILE_COUNT) if number not in (5, 9))
        # Held while the drain answered them, then sent in one frame.
        assert len(frames) == 1
        after = cluster.client.status(cluster.config.nodes[0].id)["counters"]
        # Requests are counted, not frames (and the status call itself).
        assert after["client_requests"] - before["client_requests"] == FILE_COUNT + 1
        assert after["client_bad_requests"] - before["client_bad_requests"] == 1

        # An empty batch, one of more than REQUESTS_PER_FRAME_MAX and one holding anything but
        # request maps are garbage: refused whole, with one reply each.
        dealer.send(_batch())
        dealer.send(_batch(*(_read(1000 + number, "/f0", True) for number in range(protocol.REQUESTS_PER_FRAME_MAX + 1))))
        dealer.send(_batch(_read(2000, "/f0", True), "not a request"))
        dealer.send(protocol.request(7, "ping", {}))
        # In order, on one connection: the three refusals, then the ping's reply (none of the
        # refused batches' requests was answered).
        replies = [reply for frame in _frames(dealer, 4) for reply in frame]
        assert [reply["id"] for reply in replies] == [0, 0, 0, 7]
        assert all(reply["error"]["code"] == "BAD_REQUEST" and "a batch is an array of 1 to" in reply["error"]["message"]
                   for reply in replies[:3])
    finally:
        dealer.close(linger=0)


def test_reads_one_read_index_round_confirms_come_back_in_one_frame(cluster, context):
    leader = cluster.client.wait_for_leader(10)
    for number in range(FILE_COUNT):
        cluster.client.write_file(f"/f{number}", f"content {number}".encode())
    dealer = _dealer(context, cluster, leader)
    try:
        # One frame of linearizable reads: asked of the core together, confirmed by one round,
        # served together and answered in one frame.
        dealer.send(_batch(*(_read(number, f"/f{number}", False) for number in range(FILE_COUNT))))
        frames = _frames(dealer, FILE_COUNT)
        assert len(frames) == 1, [len(frame) for frame in frames]
        [replies] = frames
        assert sorted(reply["id"] for reply in replies) == list(range(FILE_COUNT))
        assert all(reply["ok"] and reply["result"]["data"] == f"content {reply['id']}".encode() for reply in replies)
    finally:
        dealer.close(linger=0)
