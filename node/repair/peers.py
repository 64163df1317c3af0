"""The repair worker's calls to chunk ports: one request, one reply, with a timeout.

Blocking by design: the worker and copy threads are not the driver thread, and each call is
bounded by its timeout. Repairs make a few calls per chunk copied: `call` opens a socket per
call. The worker's poll of every member's chunk port each round goes through a PortClient,
which keeps one DEALER per port: a new socket each time cost a CurveZMQ handshake per member
twice a second on the leader, whatever the load.
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
         frame_bytes_max: int, node_id: str = "", security=None) -> object:
    """The result of `op` at the chunk port `address` (of node `node_id`); raises the node's
    error, or Unavailable when no well-formed reply arrives within timeout_seconds. security:
    the calling node's ClientSecurity (None only in unit tests against unsecured services)."""
    dealer = _connected_dealer(context, address, node_id, security)
    try:
        return _exchange(dealer, address, op, args, timeout_seconds, frame_bytes_max)
    finally:
        dealer.close(linger=0)


class PortClient:
    """Calls like `call`, over one kept DEALER per chunk port. For one thread only (ZeroMQ
    sockets are not thread-safe); close() from that thread. A call that fails in any way
    closes its socket, so a late reply can never be taken for a later request's."""

    def __init__(self, context: zmq.Context, security=None) -> None:
        self._context = context
        self._security = security
        self._dealers: dict[tuple[str, str], zmq.Socket] = {}

    def call(self, address: str, op: str, args: dict, *, timeout_seconds: float, frame_bytes_max: int,
             node_id: str = "") -> object:
        key = (node_id, address)
        dealer = self._dealers.get(key)
        if dealer is None:
            dealer = self._dealers[key] = _connected_dealer(self._context, address, node_id, self._security)
        try:
            return _exchange(dealer, address, op, args, timeout_seconds, frame_bytes_max)
        except BaseException:
            del self._dealers[key]
            dealer.close(linger=0)
            raise

    def forget_except(self, keep: set[tuple[str, str]]) -> None:
        """Close the sockets of ports not in `keep` ((node id, address) pairs): removed or moved nodes."""
        for key in [key for key in self._dealers if key not in keep]:
            self._dealers.pop(key).close(linger=0)

    def close(self) -> None:
        self.forget_except(set())


def _connected_dealer(context: zmq.Context, address: str, node_id: str, security) -> zmq.Socket:
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    try:
        if security is not None:
            security.configure_dealer(dealer, node_id)
        dealer.connect(tcp_endpoint(address))
    except BaseException:
        dealer.close(linger=0)
        raise
    return dealer


def _exchange(dealer: zmq.Socket, address: str, op: str, args: dict, timeout_seconds: float,
              frame_bytes_max: int) -> object:
    assert op in protocol.CHUNK_OPS and op not in protocol.CHUNK_DATA_OPS, op
    request_id = next(_request_ids)
    dealer.send(protocol.request(request_id, op, args))
    if not dealer.poll(max(1, int(timeout_seconds * 1000))):
        raise Unavailable(f"{op} at {address}: no reply within {timeout_seconds:g} s")
    frames = dealer.recv_multipart()
    try:
        reply = protocol.decode(frames[0], frame_bytes_max)
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
