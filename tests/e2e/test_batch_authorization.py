"""Authorization of batch frames on a real node's client port: the sender of a frame is looked
up once (its connection's key), and every request in it is still checked against that key's
role, so a read-write key's batch gets its file ops answered and its admin op refused, each in
its own reply; a key revoked since its connection was made gets every request refused."""

from __future__ import annotations

import msgpack
import pytest
import zmq

from node import protocol
from node.security import ClientSecurity, ROLE_READ_WRITE
from sandctl.client import client_keys_dir
from sandctl.connection import SocketOptions, connect_dealer
from sandctl.keys import create_client_key, revoke_client_key
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

REPLY_WAIT_MS = 10_000
REVOKED_SECONDS_MAX = 20.0  # the node reloads its keys about once a second


def _dealer(context: zmq.Context, cluster, name: str) -> zmq.Socket:
    node = cluster.config.nodes[0]
    security = ClientSecurity.for_client(client_keys_dir(cluster.config, cluster.data_dir), name,
                                         mode=cluster.config.security)
    dealer = context.socket(zmq.DEALER)
    connect_dealer(dealer, node.client, SocketOptions(cluster.config.frame_bytes_max, security=security), node.id)
    return dealer


def _replies(dealer: zmq.Socket, count: int) -> dict[int, dict]:
    by_id: dict[int, dict] = {}
    while len(by_id) < count:
        assert dealer.poll(REPLY_WAIT_MS), f"only {len(by_id)} of {count} replies arrived"
        decoded = msgpack.unpackb(dealer.recv())
        for reply in decoded if isinstance(decoded, list) else [decoded]:
            assert reply["id"] not in by_id, f"request {reply['id']} answered twice"
            by_id[reply["id"]] = reply
    return by_id


def _request(request_id: int, op: str, args: dict) -> dict:
    return {"v": protocol.PROTOCOL_VERSION, "id": request_id, "op": op, "args": args}


def _batch(*requests: dict) -> bytes:
    return msgpack.packb(list(requests), use_bin_type=True)


@pytest.mark.parametrize("cluster", ["none-1"], indirect=True)
def test_each_request_of_a_batch_is_checked_against_the_senders_role(cluster, context):
    create_client_key(cluster.data_dir, "rw", ROLE_READ_WRITE)
    dealer = _dealer(context, cluster, "rw")
    try:
        write = {"path": "/by-rw", "data": b"x", "size": 1, "client": "h1-test", "seq": 1}
        dealer.send(_batch(_request(1, "ping", {}), _request(2, "snapshot", {}), _request(3, "write_file", write),
                           _request(4, "gc", {"dry_run": True}), _request(5, "stat", {"path": "/", "stale": True})))
        replies = _replies(dealer, 5)
        assert [request_id for request_id in sorted(replies) if replies[request_id]["ok"]] == [1, 3, 5]
        for refused in (2, 4):
            error = replies[refused]["error"]
            assert error["code"] == "REFUSED" and "client rw (read-write) may not run" in error["message"], error
            assert "it needs an admin key" in error["message"]
        assert cluster.client.stat("/by-rw")["size"] == 1  # the write in the same frame was applied

        revoke_client_key(cluster.data_dir, "rw")
        next_id = iter(range(100, 10_000))

        def refused_whole() -> bool:
            first = next(next_id)
            dealer.send(_batch(_request(first, "ping", {}), _request(first + 1000, "stat", {"path": "/"})))
            replies = _replies(dealer, 2)
            return all(not reply["ok"] for reply in replies.values())

        wait_until(refused_whole, "the revoked key's requests to be refused", REVOKED_SECONDS_MAX)
        first = next(next_id)
        dealer.send(_batch(_request(first, "ping", {}), _request(first + 1000, "bogus_op", {})))
        replies = _replies(dealer, 2)
        assert replies[first]["error"]["code"] == "REFUSED"
        assert "no authorized key (revoked since it connected?)" in replies[first]["error"]["message"]
        # Validation still comes first: an unknown op is a bad request whoever sends it.
        assert replies[first + 1000]["error"]["code"] == "BAD_REQUEST"
    finally:
        dealer.close(linger=0)
