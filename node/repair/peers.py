"""The repair worker's calls to chunk ports: one request, one reply, with a timeout.

Blocking by design: the worker and copy threads are not the driver thread, and each call is
bounded by its timeout. One DEALER per (thread, node) would save a connect per call; repairs
make a few calls per chunk copied, so a socket per call keeps this simple and stateless.
Replies are validated like anything from the network: a malformed one is an Unavailable.
"""

from __future__ import annotations

import itertools

import zmq

from node import protocol
from node.errors import BadRequest, Unavailable, error_from_code
from node.transport.address import tcp_endpoint

_request_ids = itertools.count(1)


def call(context: zmq.Context, address: str, op: str, args: dict, *, timeout_seconds: float,
         max_frame_bytes: int, node_id: str = "", security=None) -> object:
    """The result of `op` at the chunk port `address` (of node `node_id`); raises the node's
    error, or Unavailable when no well-formed reply arrives within timeout_seconds. security:
    the calling node's ClientSecurity (None only in unit tests against unsecured services)."""
    assert op in protocol.CHUNK_OPS and op not in protocol.CHUNK_DATA_OPS, op
    request_id = next(_request_ids)
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    try:
        if security is not None:
            security.configure_dealer(dealer, node_id)
        dealer.connect(tcp_endpoint(address))
        dealer.send(protocol.request(request_id, op, args))
        if not dealer.poll(max(1, int(timeout_seconds * 1000))):
            raise Unavailable(f"{op} at {address}: no reply within {timeout_seconds:g} s")
        frames = dealer.recv_multipart()
    finally:
        dealer.close(linger=0)
    try:
        reply = protocol.decode(frames[0], max_frame_bytes)
    except BadRequest:
        reply = None
    if not isinstance(reply, dict) or reply.get("id") != request_id:
        raise Unavailable(f"{op} at {address}: malformed reply")
    if reply.get("ok") is True:
        return reply.get("result")
    error = reply.get("error")
    if isinstance(error, dict) and isinstance(error.get("code"), str) and isinstance(error.get("message"), str):
        raise error_from_code(error["code"], error["message"])
    raise Unavailable(f"{op} at {address}: malformed error reply")
