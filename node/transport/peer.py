"""Raft and forward traffic between nodes: one ROUTER in, one DEALER out per peer.

Used only by the driver loop's thread (ZeroMQ sockets are not thread-safe). Nothing here ever
blocks: a send to a peer whose queue is full, or that is not connected, is dropped and
counted -- Raft retransmits, and a stalled peer must never stall the leader's heartbeats.
Inbound frames that fail validation are dropped and counted, never raised: a peer is not
trusted to be well-formed.

On a real network a partition is silence, not a refused connection. Without help a TCP
connection to a silent peer stays "up" for many minutes while the kernel and ZeroMQ buffer
everything sent to it, and after the heal the whole backlog is delivered: hundreds of stale
heartbeats, each answered, each making the leader resend the lag. So every link here:
- exchanges ZMTP heartbeats, and is closed when the peer has been silent for
  PEER_HEARTBEAT_TIMEOUT_MS (our side) or PEER_HEARTBEAT_TTL_MS (the peer's side, which we ask
  for in every ping), dropping whatever was queued for it;
- gives up on unacknowledged TCP data after PEER_TCP_RETRANSMIT_MS_MAX (TCP_USER_TIMEOUT) and
  probes idle connections (TCP keepalive), so not even the kernel replays old data after a heal;
- queues nothing while disconnected (ZMQ_IMMEDIATE) and at most `queue_messages_max` while
  connected;
- abandons a connection attempt after PEER_CONNECT_TIMEOUT_MS (a SYN into a partition would
  otherwise wait out the kernel's backoff, seconds past the heal) and retries every
  PEER_RECONNECT_INTERVAL_MS, backing off to at most PEER_RECONNECT_INTERVAL_MS_MAX.
"""

from __future__ import annotations

import logging
import time

import zmq
import zmq.backend
from zmq.utils.monitor import recv_monitor_message

from node.raft.types import Message
from node.security.errors import KeysError
from node.transport.address import bind_socket, bound_address, connect_socket, tcp_endpoint
from node.transport.codec import (
    CodecError,
    decode_peer_frame,
    encode_forward,
    encode_message,
    is_valid_node_id,
)

log = logging.getLogger(__name__)

PEER_HEARTBEAT_INTERVAL_MS = 200
PEER_HEARTBEAT_TIMEOUT_MS = 1000  # silence after a ping before we close the link
PEER_HEARTBEAT_TTL_MS = 1000  # silence after which the peer closes its side (deciseconds on the wire)
PEER_TCP_RETRANSMIT_MS_MAX = 2000
PEER_TCP_KEEPALIVE_IDLE_SECONDS = 1
PEER_TCP_KEEPALIVE_INTERVAL_SECONDS = 1
PEER_TCP_KEEPALIVE_PROBES = 2
# A connection attempt into a partition is abandoned after PEER_CONNECT_TIMEOUT_MS and retried
# PEER_RECONNECT_INTERVAL_MS_MAX later at most, so a healed link is back within their sum.
PEER_CONNECT_TIMEOUT_MS = 300
PEER_RECONNECT_INTERVAL_MS = 100
PEER_RECONNECT_INTERVAL_MS_MAX = 200
QUEUE_MESSAGES_MAX = 64  # per peer and direction; Raft resends what is dropped
LINK_EVENTS_INTERVAL_SECONDS = 0.1  # how often link up/down events are read
# libzmq gives up for good on a connection whose handshake failed (the peer refused our key,
# e.g. it had not read our new key file yet, or could not prove its own): we retry it after
# this long, with the keys as they are then.
PEER_HANDSHAKE_RETRY_SECONDS = 0.5

assert PEER_HEARTBEAT_INTERVAL_MS * 3 <= PEER_HEARTBEAT_TIMEOUT_MS, "a few lost pings must not close a link"
assert PEER_HEARTBEAT_TTL_MS % 100 == 0 and PEER_HEARTBEAT_TTL_MS >= PEER_HEARTBEAT_INTERVAL_MS * 3
assert PEER_RECONNECT_INTERVAL_MS <= PEER_RECONNECT_INTERVAL_MS_MAX
assert PEER_CONNECT_TIMEOUT_MS <= PEER_HEARTBEAT_TIMEOUT_MS

_RECEIVE_NOBLOCK = _SEND_NOBLOCK = int(zmq.NOBLOCK)
_COPY_THRESHOLD_BYTES = zmq.COPY_THRESHOLD
_backend_send = zmq.backend.Socket.send
assert issubclass(zmq.Socket, zmq.backend.Socket)
_POLLIN = int(zmq.POLLIN)
_HANDSHAKE_FAILURES = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                       | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
_LINK_EVENTS = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | _HANDSHAKE_FAILURES

COUNTER_NAMES = (
    "sent",
    "sent_bytes",
    "dropped_full",  # peer queue at its high-water mark, or peer not connected
    "dropped_unknown_peer",
    "dropped_oversized",
    "received",
    "received_bytes",
    "invalid_frames",
    "spoofed",  # a Message whose source is not the node the sending connection's key belongs to
    "unauthenticated",  # a frame from a connection without a node key (revoked since it connected)
    "unknown_sender",  # a frame from a node that is not a member with a known address
    "misdirected",  # a Message addressed to another node
    "link_ups",  # a connection to a peer completed its handshake
    "link_downs",  # a connection to a peer closed (peer gone, silent, or refused)
    "reconnects",  # link_ups after a peer's first
    "handshake_failures",  # a connection refused during its handshake (key not authorized, or wrong)
    "handshake_retries",  # new connections started after such a failure
)


def _set_tcp_options(socket: zmq.Socket) -> None:
    """Kernel-level limits, on both ends of every link (they apply to accepted connections too)."""
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.TCP_MAXRT, PEER_TCP_RETRANSMIT_MS_MAX)
    # An idle connection (a follower's answers stop when it hears nothing) is probed too.
    socket.setsockopt(zmq.TCP_KEEPALIVE, 1)
    socket.setsockopt(zmq.TCP_KEEPALIVE_IDLE, PEER_TCP_KEEPALIVE_IDLE_SECONDS)
    socket.setsockopt(zmq.TCP_KEEPALIVE_INTVL, PEER_TCP_KEEPALIVE_INTERVAL_SECONDS)
    socket.setsockopt(zmq.TCP_KEEPALIVE_CNT, PEER_TCP_KEEPALIVE_PROBES)


class _Link:
    """One peer's outbound DEALER, its monitor (connection events), and its counts."""

    def __init__(self, context: zmq.Context, node_id: str, peer: str, address: str, queue_messages_max: int,
                 client_security=None) -> None:
        self.peer = peer
        self.address = address
        self.up = False
        self.ups = 0
        self.dropped = 0
        self.handshake_retry_at: float | None = None  # set while a failed handshake awaits its retry
        self._client_security = client_security
        self.dealer = context.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.IDENTITY, node_id.encode())
        _set_tcp_options(self.dealer)
        # ZMTP heartbeats from this side only. The peer answers each ping and closes its end
        # when pings stop for PEER_HEARTBEAT_TTL_MS.
        self.dealer.setsockopt(zmq.HEARTBEAT_IVL, PEER_HEARTBEAT_INTERVAL_MS)
        self.dealer.setsockopt(zmq.HEARTBEAT_TIMEOUT, PEER_HEARTBEAT_TIMEOUT_MS)
        self.dealer.setsockopt(zmq.HEARTBEAT_TTL, PEER_HEARTBEAT_TTL_MS)
        self.dealer.setsockopt(zmq.SNDHWM, queue_messages_max)
        # Queue nothing for a peer that is not connected, and drop the queue when its
        # connection closes: a backlog is stale by the time the peer is back.
        self.dealer.setsockopt(zmq.IMMEDIATE, 1)
        self.dealer.setsockopt(zmq.CONNECT_TIMEOUT, PEER_CONNECT_TIMEOUT_MS)
        self.dealer.setsockopt(zmq.RECONNECT_IVL, PEER_RECONNECT_INTERVAL_MS)
        self.dealer.setsockopt(zmq.RECONNECT_IVL_MAX, PEER_RECONNECT_INTERVAL_MS_MAX)
        if client_security is not None:
            # Present our node key; talk only to a process that proves it holds `peer`'s.
            client_security.configure_dealer(self.dealer, peer)
        self.monitor = self.dealer.get_monitor_socket(_LINK_EVENTS)
        self._monitor_poll_items = [(self.monitor, _POLLIN)]
        connect_socket(self.dealer, address)

    def read_events(self, counters: dict, now: float) -> bool:
        """Apply the monitor's queued events; True if the link went down meanwhile."""
        went_down = False
        # Asked first: a receive from an empty monitor (the common case, several times a
        # second per link) raises zmq.Again, which costs several times the question.
        while zmq.zmq_poll(self._monitor_poll_items, 0):
            event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.up = True
                self.ups += 1
                self.handshake_retry_at = None
                counters["link_ups"] += 1
                if self.ups > 1:
                    counters["reconnects"] += 1
                    log.info("link to %s (%s) is up again", self.peer, self.address)
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                if self.up:
                    log.info("link to %s (%s) is down", self.peer, self.address)
                    went_down = True
                self.up = False
                counters["link_downs"] += 1
            elif event["event"] & _HANDSHAKE_FAILURES:
                counters["handshake_failures"] += 1
                if self.handshake_retry_at is None:
                    log.warning("the handshake with %s (%s) failed (event %#x): retrying in %.1f s", self.peer,
                                self.address, event["event"], PEER_HANDSHAKE_RETRY_SECONDS)
                    self.handshake_retry_at = now + PEER_HANDSHAKE_RETRY_SECONDS
        return went_down

    def retry_handshake(self, counters: dict) -> None:
        """Start a new connection in place of the one whose handshake failed (libzmq will not)."""
        self.handshake_retry_at = None
        counters["handshake_retries"] += 1
        endpoint = tcp_endpoint(self.address)
        try:
            self.dealer.disconnect(endpoint)
        except zmq.ZMQError:
            pass  # libzmq already forgot the endpoint
        if self._client_security is not None:
            # The peer's key may have been replaced (a host rebuilt under the same id).
            self._client_security.reload_if_changed()
            try:
                self._client_security.configure_dealer(self.dealer, self.peer)
            except KeysError as error:  # its key file was removed: keep the one we had
                log.error("link to %s: %s", self.peer, error)
        self.dealer.connect(endpoint)

    def close(self) -> None:
        self.dealer.disable_monitor()
        self.monitor.close(linger=0)
        self.dealer.close(linger=0)


class PeerTransport:
    """Inbound: `socket` (a ROUTER) for the driver's poller, drained by receive().
    Outbound: send()/send_forward(), never blocking, returning False when dropped.

    security: (ServerSecurity, ClientSecurity), as every node passes. Then the sender of each
    inbound frame is the node its connection's key belongs to, never the routing identity
    (which the sender chooses, and ROUTER_HANDOVER hands to whoever claims it last), and the
    raft port accepts node keys only, of members with a known address. None (unit tests only):
    the routing identity is trusted, whoever it names."""

    def __init__(
        self,
        context: zmq.Context,
        node_id: str,
        bind_address: str,
        peers: dict[str, str],
        *,
        frame_bytes_max: int,
        queue_messages_max: int = QUEUE_MESSAGES_MAX,
        security: tuple | None = None,
    ) -> None:
        assert is_valid_node_id(node_id), node_id
        assert frame_bytes_max > 0
        assert queue_messages_max > 0
        self.node_id = node_id
        self._context = context
        self._frame_bytes_max = frame_bytes_max
        self._queue_messages_max = queue_messages_max
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)
        self._links: dict[str, _Link] = {}
        self._lost: list[str] = []  # peers whose link went down, until take_lost_links()
        self._links_by_monitor: dict[zmq.Socket, _Link] = {}
        self._poll_sockets_watching: dict[str | None, list[zmq.Socket]] = {}  # (poll_sockets_watching)
        self._events_read_at = 0.0
        self._security, self._client_security = security or (None, None)
        self.socket = context.socket(zmq.ROUTER)
        self._receive_poll_items = [(self.socket, _POLLIN)]
        if self._security is not None:
            self._security.configure_router(self.socket, "raft")
        _set_tcp_options(self.socket)
        # A restarted peer reconnects with the same identity while the old TCP connection may
        # still look alive: let the new connection take the identity over instead of being refused.
        self.socket.setsockopt(zmq.ROUTER_HANDOVER, 1)
        # ZeroMQ drops the connection of a peer sending a larger frame before buffering it.
        self.socket.setsockopt(zmq.MAXMSGSIZE, frame_bytes_max)
        # No inbound high-water mark, and no heartbeat timer on this side. libzmq 4.3.5 aborts
        # the process (`!_io_error`, stream_engine_base.cpp:310, libzmq#4841) when a connection
        # whose input was stopped by a full inbound queue fails and then a ping must be answered
        # or sent. Without a limit input never stops. What arrives is bounded anyway: by the
        # leader's in-flight window (appends are sent only as fast as this node acknowledges
        # them), the heartbeat rate, and MAXMSGSIZE per frame.
        self.socket.setsockopt(zmq.RCVHWM, 0)
        try:
            bind_socket(self.socket, bind_address)
        except zmq.ZMQError:
            self.socket.close(linger=0)
            raise
        self.set_peers(peers)

    @property
    def bound_address(self) -> str:
        """The "host:port" actually bound (useful when bind_address asked for port "*")."""
        return bound_address(self.socket)

    def set_peers(self, peers: dict[str, str]) -> None:
        """Connect to new peers, close removed ones, reconnect moved ones. Our own id is skipped."""
        wanted = {peer: address for peer, address in peers.items() if peer != self.node_id}
        for peer in list(self._links):
            if self._links[peer].address != wanted.get(peer):
                self._links.pop(peer).close()
        for peer, address in wanted.items():
            if peer not in self._links:
                assert is_valid_node_id(peer), peer
                self._links[peer] = _Link(self._context, self.node_id, peer, address, self._queue_messages_max,
                                          self._client_security)
        assert self._links.keys() == wanted.keys()
        self._links_by_monitor = {link.monitor: link for link in self._links.values()}
        self._poll_sockets_watching = {}

    def poll_sockets_watching(self, peer: str | None) -> list[zmq.Socket]:
        """What the loop polls: the inbound ROUTER and `peer`'s link monitor (none: None, or
        not a peer), for a loop that must wake at once only when that link closes (its peer's
        process died; a follower's link to its leader), not at the next periodic read:
        every ZeroMQ socket polled costs two EVENTS lookups, each a getpid and a poll system
        call, on every turn of the loop. The other links' events are read periodically
        (take_lost_links). The same list object per `peer` until the links change."""
        watching = self._poll_sockets_watching.get(peer)
        if watching is None:
            link = self._links.get(peer) if peer is not None else None
            watching = [self.socket] if link is None else [self.socket, link.monitor]
            self._poll_sockets_watching[peer] = watching
        return watching

    def on_monitor_readable(self, monitor: zmq.Socket) -> None:
        """A link's monitor has events (the loop's poll said so): apply them now, so that a
        lost link reaches take_lost_links() in this turn of the loop."""
        link = self._links_by_monitor.get(monitor)
        if link is None:
            return  # the link was closed since the poll
        if link.read_events(self._counters, time.monotonic()) and link.peer not in self._lost:
            self._lost.append(link.peer)

    def link_up(self, peer: str) -> bool:
        """Whether the connection to `peer` is established (as of the events read so far)."""
        self._read_link_events(force=True)
        link = self._links.get(peer)
        return link is not None and link.up

    def _read_link_events(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._events_read_at < LINK_EVENTS_INTERVAL_SECONDS:
            return
        self._events_read_at = now
        for link in self._links.values():
            if link.read_events(self._counters, now) and link.peer not in self._lost:
                self._lost.append(link.peer)
            if link.handshake_retry_at is not None and now >= link.handshake_retry_at:
                link.retry_handshake(self._counters)

    def take_lost_links(self) -> list[str]:
        """Peers whose established link closed since the last call (peer process gone, or
        silent past the heartbeat timeout). A follower may treat its leader's lost link as a
        hint to start a pre-vote early (RaftNode.leader_unreachable) instead of waiting out
        the election timeout. Reads events at most every LINK_EVENTS_INTERVAL_SECONDS."""
        self._read_link_events()
        lost, self._lost = self._lost, []
        return lost

    def send(self, message: Message) -> bool:
        """Queue one Raft message for message.target. False when dropped (counted)."""
        assert message.source == self.node_id, "only our own messages leave this node"
        link = self._links.get(message.target)
        if link is None:
            self._counters["dropped_unknown_peer"] += 1
            return False
        return self._send_frame(link, encode_message(message))

    def send_forward(self, target: str, payload: dict) -> bool:
        """Queue one non-Raft payload for `target`. False when dropped (counted)."""
        link = self._links.get(target)
        if link is None:
            self._counters["dropped_unknown_peer"] += 1
            return False
        return self._send_frame(link, encode_forward(payload))

    def _send_frame(self, link: _Link, frame: bytes) -> bool:
        if len(frame) > self._frame_bytes_max:
            # The receiver would cut the connection; the core's message_bytes_max is too large.
            self._counters["dropped_oversized"] += 1
            log.error("dropped a %d-byte peer frame: above frame_bytes_max %d", len(frame), self._frame_bytes_max)
            return False
        try:
            # Copied below ZeroMQ's copy threshold (pyzmq copies such a frame anyway when asked
            # not to, through a Frame object made and freed per send); zero-copy above it.
            # The backend's send itself: pyzmq's Python-level Socket.send only adds the routing_id
            # and group options of draft sockets (a DEALER has neither) around it.
            _backend_send(link.dealer, frame, _SEND_NOBLOCK, len(frame) < _COPY_THRESHOLD_BYTES)
        except zmq.Again:
            self._counters["dropped_full"] += 1
            link.dropped += 1
            self._read_link_events()
            return False
        self._counters["sent"] += 1
        self._counters["sent_bytes"] += len(frame)
        return True

    def receive(self, frames_max: int = 1000) -> list[tuple]:
        """Drain up to frames_max inbound frames without blocking. Items are ("raft", Message)
        or ("forward", source node id, dict); invalid frames are dropped and counted.

        Per message: two recvs and Frame.more rather than recv_multipart (whose RCVMORE
        lookups run enum code); after the first message a zmq_poll(0) asks whether another
        is waiting, since a recv on an empty socket raises zmq.Again, which costs about twice
        the check (and a drain of one message, the common case, then raises none).

        Link events are not read here: the loop reads them in the same turn (take_lost_links,
        after it drained this socket), and at once when a monitor wakes it."""
        assert frames_max > 0
        socket = self.socket
        poll_items = self._receive_poll_items
        items: list[tuple] = []
        for count in range(frames_max):
            if count and not zmq.zmq_poll(poll_items, 0):
                break
            try:
                identity = socket.recv(_RECEIVE_NOBLOCK, copy=False)
                frame = socket.recv(_RECEIVE_NOBLOCK, copy=False) if identity.more else None
                well_formed = frame is not None and not frame.more
                while frame is not None and frame.more:  # the rest of a message of 3+ frames
                    frame = socket.recv(_RECEIVE_NOBLOCK, copy=False)
            except zmq.Again:
                break
            if not well_formed:
                self._counters["invalid_frames"] += 1
                continue
            if self._security is None:
                sender = identity.bytes.decode("utf-8", errors="replace")
            else:
                sender = self._security.peer_node_id(frame)  # from the key (a Frame keeps it)
                if sender is None:
                    self._counters["unauthenticated"] += 1
                    continue
            item = self._accept(sender, frame.bytes)
            if item is not None:
                items.append(item)
        return items

    def _accept(self, sender: str, frame: bytes) -> tuple | None:
        self._counters["received_bytes"] += len(frame)
        if not is_valid_node_id(sender):
            # An anonymous connection (ZeroMQ's generated identity) is not a node.
            self._counters["invalid_frames"] += 1
            return None
        try:
            kind, value = decode_peer_frame(frame, self._frame_bytes_max)
        except CodecError as error:
            self._counters["invalid_frames"] += 1
            log.debug("dropped an invalid frame from %s: %s", sender, error)
            return None
        if kind == "forward":
            if not self._is_member(sender):
                return None
            self._counters["received"] += 1
            return "forward", sender, value
        assert kind == "raft", kind
        if value.source != sender:
            self._counters["spoofed"] += 1
            log.warning("dropped a message from node %s claiming source %r", sender, value.source)
            return None
        if value.target != self.node_id:
            self._counters["misdirected"] += 1
            return None
        if not self._is_member(sender):
            return None
        self._counters["received"] += 1
        return "raft", value

    def _is_member(self, sender: str) -> bool:
        """Whether `sender` is a peer we know (a member with an address). With security (every
        node), nothing a non-member says reaches the core, whose messages carry no proof of
        membership: a made-up `evil` with a higher term would otherwise take over (plain-text
        mode lets anyone claim a name). Without (unit tests), every sender is taken."""
        if self._security is None or sender in self._links:
            return True
        self._counters["unknown_sender"] += 1
        return False

    def counters(self) -> dict:
        """A copy of the counters, the current peer count, and per peer: link up or down,
        messages dropped, and how often its link came up."""
        self._read_link_events(force=True)
        links = {peer: {"up": link.up, "dropped": link.dropped, "link_ups": link.ups}
                 for peer, link in self._links.items()}
        return {**self._counters, "peers": len(self._links), "links": links}

    def close(self) -> None:
        for link in self._links.values():
            link.close()
        self._links.clear()
        self._links_by_monitor.clear()
        self._poll_sockets_watching = {}
        self.socket.close(linger=0)
