"""The client port's receive loop on a real node: a burst of requests is drained and answered in
one go, and a message of the wrong shape gets BAD_REQUEST without disturbing the next ones."""

from __future__ import annotations

import pytest
import zmq

from node import protocol
from sandctl.client import client_security
from sandctl.connection import SocketOptions, connect_dealer

pytestmark = pytest.mark.e2e

REPLY_WAIT_MS = 10_000
BURST_REQUESTS = 200


def _replies(dealer: zmq.Socket, count: int) -> list[dict]:
    replies = []
    while len(replies) < count:
        assert dealer.poll(REPLY_WAIT_MS), f"only {len(replies)} of {count} replies arrived"
        frames = dealer.recv_multipart()
        assert len(frames) == 1, frames
        replies.append(protocol.decode(frames[0], 1 << 26))
    return replies


@pytest.mark.parametrize("cluster", ["none-1"], indirect=True)
def test_a_burst_is_answered_and_misshapen_messages_get_bad_request(cluster, context):
    cluster.client.write_file("/f", b"x" * 100)
    dealer = context.socket(zmq.DEALER)
    node = cluster.config.nodes[0]
    connect_dealer(dealer, node.client, SocketOptions(cluster.config.frame_bytes_max,
                                                      security=client_security(cluster.config)), node.id)
    try:
        before = cluster.client.status(node.id)["counters"]
        read = {"path": "/f", "stale": True}
        # Two frames, then three, each between well-formed requests: the extra frames must not
        # be taken for the next message, and the requests around them are served.
        dealer.send(protocol.request(1, "read", read))
        dealer.send_multipart([protocol.request(2, "read", read), b"extra"])
        dealer.send(protocol.request(3, "read", read))
        dealer.send_multipart([protocol.request(4, "read", read), b"extra", b"more"])
        dealer.send(protocol.request(5, "read", read))
        replies = _replies(dealer, 5)
        by_id = {reply["id"]: reply for reply in replies}
        assert sorted(by_id) == [0, 1, 3, 5] and len(replies) == 5  # a misshapen message has no id
        assert all(by_id[request_id]["ok"] and by_id[request_id]["result"]["data"] == b"x" * 100
                   for request_id in (1, 3, 5))
        refused = [reply for reply in replies if reply["id"] == 0]
        assert len(refused) == 2
        assert all(not reply["ok"] and reply["error"]["code"] == "BAD_REQUEST"
                   and "exactly one frame" in reply["error"]["message"] for reply in refused)
        after = cluster.client.status(node.id)["counters"]
        # Five messages (and the status call itself): no leftover frame was taken for a message.
        assert after["client_requests"] - before["client_requests"] == 5 + 1
        assert after["client_bad_requests"] - before["client_bad_requests"] == 2

        # Many requests waiting at once are all answered, each exactly once.
        for request_id in range(100, 100 + BURST_REQUESTS):
            dealer.send(protocol.request(request_id, "read", read))
        burst = _replies(dealer, BURST_REQUESTS)
        assert sorted(reply["id"] for reply in burst) == list(range(100, 100 + BURST_REQUESTS))
        assert all(reply["ok"] for reply in burst)
    finally:
        dealer.close(linger=0)
