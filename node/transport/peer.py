"""Raft and forward traffic between nodes: one ROUTER in, one DEALER out per peer.

Used only by the driver loop's thread (ZeroMQ sockets are not thread-safe). Nothing here ever
blocks: a send to a peer whose queue is full, or that is not connected, is dropped and
counted -- Raft retransmits, and a stalled peer must never stall the leader's heartbeats.
Inbound frames that fail validation are dropped and counted, never raised: a peer is not
trusted to be well-formed.
"""

from __future__ import annotations

import logging

import zmq

from node.raft.types import Message
from node.transport.address import tcp_endpoint
from node.transport.codec import (
    CodecError,
    decode_peer_frame,
    encode_forward,
    encode_message,
    is_valid_node_id,
)

log = logging.getLogger(__name__)

COUNTER_NAMES = (
    "sent",
    "sent_bytes",
    "dropped_full",  # peer queue at its high-water mark, or peer not connected
    "dropped_unknown_peer",
    "dropped_oversized",
    "received",
    "received_bytes",
    "invalid_frames",
    "spoofed",  # a Message whose source is not the sending connection's identity
    "misdirected",  # a Message addressed to another node
)


class PeerTransport:
    """Inbound: `socket` (a ROUTER) for the driver's poller, drained by receive().
    Outbound: send()/send_forward(), never blocking, returning False when dropped."""

    def __init__(
        self,
        context: zmq.Context,
        node_id: str,
        bind_address: str,
        peers: dict[str, str],
        *,
        max_frame_bytes: int,
        send_high_water_messages: int = 1000,
    ) -> None:
        assert is_valid_node_id(node_id), node_id
        assert max_frame_bytes > 0
        assert send_high_water_messages > 0
        self.node_id = node_id
        self._context = context
        self._max_frame_bytes = max_frame_bytes
        self._send_high_water_messages = send_high_water_messages
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)
        self._dealers: dict[str, zmq.Socket] = {}
        self._peer_addresses: dict[str, str] = {}
        self.socket = context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        # A restarted peer reconnects with the same identity while the old TCP connection may
        # still look alive: let the new connection take the identity over instead of being refused.
        self.socket.setsockopt(zmq.ROUTER_HANDOVER, 1)
        # ZeroMQ drops the connection of a peer sending a larger frame before buffering it.
        self.socket.setsockopt(zmq.MAXMSGSIZE, max_frame_bytes)
        self.socket.setsockopt(zmq.RCVHWM, send_high_water_messages)
        try:
            self.socket.bind(tcp_endpoint(bind_address))
        except zmq.ZMQError:
            self.socket.close(linger=0)
            raise
        self.set_peers(peers)

    @property
    def bound_address(self) -> str:
        """The "host:port" actually bound (useful when bind_address asked for port "*")."""
        endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        return endpoint.removeprefix("tcp://")

    def set_peers(self, peers: dict[str, str]) -> None:
        """Connect to new peers, close removed ones, reconnect moved ones. Our own id is skipped."""
        wanted = {peer: address for peer, address in peers.items() if peer != self.node_id}
        for peer in list(self._dealers):
            if self._peer_addresses[peer] != wanted.get(peer):
                self._dealers.pop(peer).close(linger=0)
                del self._peer_addresses[peer]
        for peer, address in wanted.items():
            if peer not in self._dealers:
                assert is_valid_node_id(peer), peer
                self._dealers[peer] = self._connect(address)
                self._peer_addresses[peer] = address
        assert self._dealers.keys() == self._peer_addresses.keys()

    def _connect(self, address: str) -> zmq.Socket:
        dealer = self._context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.IDENTITY, self.node_id.encode())
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.SNDHWM, self._send_high_water_messages)
        # Queue nothing for a peer that is not connected: memory stays bounded while it is down.
        dealer.setsockopt(zmq.IMMEDIATE, 1)
        dealer.connect(tcp_endpoint(address))
        return dealer

    def send(self, message: Message) -> bool:
        """Queue one Raft message for message.target. False when dropped (counted)."""
        assert message.source == self.node_id, "only our own messages leave this node"
        dealer = self._dealers.get(message.target)
        if dealer is None:
            self._counters["dropped_unknown_peer"] += 1
            return False
        return self._send_frame(dealer, encode_message(message))

    def send_forward(self, target: str, payload: dict) -> bool:
        """Queue one non-Raft payload for `target`. False when dropped (counted)."""
        dealer = self._dealers.get(target)
        if dealer is None:
            self._counters["dropped_unknown_peer"] += 1
            return False
        return self._send_frame(dealer, encode_forward(payload))

    def _send_frame(self, dealer: zmq.Socket, frame: bytes) -> bool:
        if len(frame) > self._max_frame_bytes:
            # The receiver would cut the connection; the core's max_message_bytes is too large.
            self._counters["dropped_oversized"] += 1
            log.error("dropped a %d-byte peer frame: above max_frame_bytes %d", len(frame), self._max_frame_bytes)
            return False
        try:
            dealer.send(frame, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self._counters["dropped_full"] += 1
            return False
        self._counters["sent"] += 1
        self._counters["sent_bytes"] += len(frame)
        return True

    def receive(self, max_frames: int = 1000) -> list[tuple]:
        """Drain up to max_frames inbound frames without blocking. Items are ("raft", Message)
        or ("forward", source node id, dict); invalid frames are dropped and counted."""
        assert max_frames > 0
        items: list[tuple] = []
        for _ in range(max_frames):
            try:
                parts = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            item = self._accept(parts)
            if item is not None:
                items.append(item)
        return items

    def _accept(self, parts: list[bytes]) -> tuple | None:
        if len(parts) != 2:
            self._counters["invalid_frames"] += 1
            return None
        identity, frame = parts
        self._counters["received_bytes"] += len(frame)
        sender = identity.decode("utf-8", errors="replace")
        if not is_valid_node_id(sender):
            # An anonymous connection (ZeroMQ's generated identity) is not a node.
            self._counters["invalid_frames"] += 1
            return None
        try:
            kind, value = decode_peer_frame(frame, self._max_frame_bytes)
        except CodecError as error:
            self._counters["invalid_frames"] += 1
            log.debug("dropped an invalid frame from %s: %s", sender, error)
            return None
        if kind == "forward":
            self._counters["received"] += 1
            return "forward", sender, value
        assert kind == "raft", kind
        if value.source != sender:
            self._counters["spoofed"] += 1
            log.warning("dropped a message from connection %s claiming source %s", sender, value.source)
            return None
        if value.target != self.node_id:
            self._counters["misdirected"] += 1
            return None
        self._counters["received"] += 1
        return "raft", value

    def counters(self) -> dict:
        """A copy of the counters, plus the current peer count."""
        return {**self._counters, "peers": len(self._dealers)}

    def close(self) -> None:
        for dealer in self._dealers.values():
            dealer.close(linger=0)
        self._dealers.clear()
        self._peer_addresses.clear()
        self.socket.close(linger=0)
