"""PeerTransport over real loopback sockets: delivery, non-blocking drops, hostile input."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from node.raft.types import Entry, Message, MessageKind
from node.transport import peer as peer_module
from node.transport.codec import encode_forward, encode_message
from node.transport.peer import PeerTransport

FRAME_BYTES_MAX = 1 << 20
DEADLINE_SECONDS = 5.0


@pytest.fixture
def context():
    context = zmq.Context()
    yield context
    context.term()  # hangs if a test leaks a socket


@pytest.fixture
def make_transports(context):
    transports: list[PeerTransport] = []

    def make(node_ids: list[str], **options) -> dict[str, PeerTransport]:
        made = {node_id: PeerTransport(context, node_id, "127.0.0.1:*", {}, frame_bytes_max=FRAME_BYTES_MAX, **options)
                for node_id in node_ids}
        addresses = {node_id: transport.bound_address for node_id, transport in made.items()}
        for transport in made.values():
            transport.set_peers(addresses)
        transports.extend(made.values())
        return made

    yield make
    for transport in transports:
        transport.close()


def heartbeat(source: str, target: str, term: int = 1) -> Message:
    return Message(kind=MessageKind.HEARTBEAT, source=source, target=target, term=term)


def deliver(sender: PeerTransport, receiver: PeerTransport, message: Message) -> list:
    """Send until the receiver has the message: the first sends drop while TCP connects."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        sender.send(message)
        if receiver.socket.poll(10):
            items = receiver.receive()
            if ("raft", message) in items:
                return items
    raise AssertionError(f"{message} was not delivered within {DEADLINE_SECONDS}s")


def receive_until(receiver: PeerTransport, count: int) -> list:
    items: list = []
    deadline = time.monotonic() + DEADLINE_SECONDS
    while len(items) < count and time.monotonic() < deadline:
        if receiver.socket.poll(10):
            items += receiver.receive()
    return items


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_three_transports_deliver_to_each_other(make_transports):
    transports = make_transports(["n1", "n2", "n3"])
    for source, sender in transports.items():
        for target, receiver in transports.items():
            if source != target:
                deliver(sender, receiver, heartbeat(source, target))
    append = Message(kind=MessageKind.APPEND, source="n1", target="n3", term=2, index=4, log_term=1,
                     entries=(Entry(2, 5, data=b"x" * 100_000), Entry(2, 6)), commit=4)
    assert transports["n1"].send(append)
    assert receive_until(transports["n3"], 1) == [("raft", append)]
    counters = transports["n3"].counters()
    assert counters["received"] >= 3 and counters["invalid_frames"] == 0 and counters["peers"] == 2


def test_forward_carries_the_sender_identity(make_transports):
    transports = make_transports(["n1", "n2"])
    deliver(transports["n1"], transports["n2"], heartbeat("n1", "n2"))
    payload = {"op": "mkdir", "args": {"path": "/a", "client": "c", "seq": 1}}
    assert transports["n1"].send_forward("n2", payload)
    assert receive_until(transports["n2"], 1) == [("forward", "n1", payload)]
    assert not transports["n1"].send_forward("n7", payload)
    assert transports["n1"].counters()["dropped_unknown_peer"] == 1


def test_dead_peer_never_blocks_and_queues_nothing(context):
    transport = PeerTransport(context, "n1", "127.0.0.1:*", {"n2": f"127.0.0.1:{unused_port()}"},
                              frame_bytes_max=FRAME_BYTES_MAX, queue_messages_max=10)
    try:
        started = time.monotonic()
        results = [transport.send(heartbeat("n1", "n2")) for _ in range(2000)]
        assert time.monotonic() - started < 1.0
        assert not any(results)
        assert transport.counters()["dropped_full"] == 2000
    finally:
        transport.close()


def test_stalled_peer_bounds_the_queue_and_sends_start_failing(context):
    # A peer that accepts the connection but never reads: only the high-water marks and the
    # kernel's socket buffers may hold messages; after that every send drops at once.
    stalled = context.socket(zmq.ROUTER)
    stalled.setsockopt(zmq.RCVHWM, 10)
    port = stalled.bind_to_random_port("tcp://127.0.0.1")
    transport = PeerTransport(context, "n1", "127.0.0.1:*", {"n2": f"127.0.0.1:{port}"},
                              frame_bytes_max=FRAME_BYTES_MAX, queue_messages_max=10)
    big = Message(kind=MessageKind.APPEND, source="n1", target="n2", term=1,
                  entries=(Entry(1, 1, data=b"x" * (256 << 10)),))
    try:
        accepted = 0
        failures_in_a_row = 0
        deadline = time.monotonic() + DEADLINE_SECONDS
        while failures_in_a_row < 1000 and time.monotonic() < deadline:
            started = time.monotonic()
            if transport.send(big):
                accepted += 1
                failures_in_a_row = 0
            elif accepted:  # before the first success the connection is still being made
                failures_in_a_row += 1
            assert time.monotonic() - started < 0.1, "send blocked"
        assert accepted > 0
        print("accepted before the queue stayed full:", accepted)
        assert accepted < 400, f"{accepted} messages of 256 KiB queued for a stalled peer"
        assert failures_in_a_row == 1000
        assert transport.counters()["dropped_full"] > 0
    finally:
        transport.close()
        stalled.close(linger=0)


def test_garbage_is_counted_and_delivery_continues(context, make_transports):
    transports = make_transports(["n1", "n2"])
    receiver = transports["n2"]
    deliver(transports["n1"], receiver, heartbeat("n1", "n2"))
    endpoint = "tcp://" + receiver.bound_address
    anonymous = context.socket(zmq.DEALER)
    impostor = context.socket(zmq.DEALER)
    impostor.setsockopt(zmq.IDENTITY, b"n3")
    try:
        for raw in (anonymous, impostor):
            raw.setsockopt(zmq.LINGER, 0)
            raw.connect(endpoint)
        anonymous.send(encode_message(heartbeat("n3", "n2")))  # not a node identity
        impostor.send(b"\x00garbage\xff")
        impostor.send(b"")
        impostor.send_multipart([b"a", b"b"])
        impostor.send(encode_forward({"x": 1})[:-1])
        impostor.send(encode_message(heartbeat("n1", "n2")))  # spoofs n1
        impostor.send(encode_message(heartbeat("n3", "n1")))  # addressed to someone else
        impostor.send(b"x" * (FRAME_BYTES_MAX + 1))  # cut by ZeroMQ, reconnects afterwards
        items = []
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            counters = receiver.counters()
            if counters["invalid_frames"] >= 5 and counters["spoofed"] == 1 and counters["misdirected"] == 1:
                break
            if receiver.socket.poll(10):
                items += receiver.receive()
        assert items == []
        counters = receiver.counters()
        assert (counters["invalid_frames"], counters["spoofed"], counters["misdirected"]) == (5, 1, 1)
        deliver(transports["n1"], receiver, heartbeat("n1", "n2", term=2))
    finally:
        anonymous.close(linger=0)
        impostor.close(linger=0)


def test_set_peers_closes_removed_and_connects_added(make_transports):
    transports = make_transports(["n1", "n2", "n3"])
    n1 = transports["n1"]
    n1.set_peers({"n3": transports["n3"].bound_address})
    assert not n1.send(heartbeat("n1", "n2"))
    assert n1.counters()["peers"] == 1
    deliver(n1, transports["n3"], heartbeat("n1", "n3"))
    n1.set_peers({"n1": n1.bound_address, "n2": transports["n2"].bound_address})
    assert n1.counters()["peers"] == 1
    deliver(n1, transports["n2"], heartbeat("n1", "n2"))


def test_oversized_outgoing_message_is_dropped_not_sent(make_transports):
    transports = make_transports(["n1", "n2"])
    huge = Message(kind=MessageKind.APPEND, source="n1", target="n2", term=1,
                   entries=(Entry(1, 1, data=b"x" * FRAME_BYTES_MAX),))
    assert not transports["n1"].send(huge)
    assert transports["n1"].counters()["dropped_oversized"] == 1


def wait_for(condition, what: str, deadline_seconds: float = DEADLINE_SECONDS) -> None:
    deadline = time.monotonic() + deadline_seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {deadline_seconds}s: {what}")
        time.sleep(0.01)


def test_links_report_up_down_and_drops_per_peer(make_transports, context):
    transports = make_transports(["n1", "n2"])
    n1 = transports["n1"]
    n1.set_peers({"n2": transports["n2"].bound_address, "n3": f"127.0.0.1:{unused_port()}"})
    deliver(n1, transports["n2"], heartbeat("n1", "n2"))
    wait_for(lambda: n1.link_up("n2"), "the link to n2 is up")
    for _ in range(5):
        assert not n1.send(heartbeat("n1", "n3"))
    links = n1.counters()["links"]
    assert links["n3"] == {"up": False, "dropped": 5, "link_ups": 0}
    assert links["n2"]["up"] and links["n2"]["link_ups"] == 1
    # n2 restarts on the same port: the link goes down, comes back, and counts a reconnect.
    address = transports["n2"].bound_address
    assert n1.take_lost_links() == []
    transports["n2"].close()
    wait_for(lambda: not n1.link_up("n2"), "the link to the stopped n2 is down")
    assert n1.take_lost_links() == ["n2"]
    assert n1.take_lost_links() == []
    restarted = PeerTransport(context, "n2", address, {}, frame_bytes_max=FRAME_BYTES_MAX)
    try:
        deliver(n1, restarted, heartbeat("n1", "n2", term=2))
        wait_for(lambda: n1.link_up("n2"), "the link to the restarted n2 is up")
        counters = n1.counters()
        assert counters["reconnects"] == 1 and counters["links"]["n2"]["link_ups"] == 2
        assert counters["link_downs"] >= 1
    finally:
        restarted.close()


class FrozenPeer:
    """A peer in a child process that SIGSTOP makes silent: its kernel still accepts TCP data
    until the buffers fill, but nothing answers, which is what a partition looks like."""

    def __init__(self, tmp_path) -> None:
        self.output = open(tmp_path / "peer.out", "w+")
        self.process = subprocess.Popen([sys.executable, "-m", "tests.transport.peer_process", "receive", "n2"],
                                        stdout=self.output, cwd=Path(__file__).resolve().parents[2])
        wait_for(lambda: self.lines(), "the peer process printed its address", 20.0)
        self.address = self.lines()[0]

    def lines(self) -> list[str]:
        self.output.seek(0)
        return [line.strip() for line in self.output.read().splitlines() if line.strip()]

    def terms_received(self) -> list[int]:
        return [int(line.split()[1]) for line in self.lines()[1:]]

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        self.output.close()


def test_a_silent_peer_is_detected_and_gets_no_backlog_after_it_wakes(context, tmp_path):
    peer = FrozenPeer(tmp_path)
    transport = PeerTransport(context, "n1", "127.0.0.1:*", {"n2": peer.address}, frame_bytes_max=FRAME_BYTES_MAX)
    try:
        wait_for(lambda: transport.send(heartbeat("n1", "n2", term=1)) and 1 in peer.terms_received(),
                 "a first heartbeat arrives")
        os.kill(peer.process.pid, signal.SIGSTOP)
        # Keep sending while the peer is silent, as a leader would: the link must be declared
        # down (heartbeat timeout) instead of buffering for minutes.
        # Down means both: the disconnect was seen, and ZeroMQ has let go of the connection's
        # queue (the event can be read a moment before the pipe is gone: a send then still
        # queues into the pipe that is being torn down).
        def keep_sending_until_down() -> bool:
            refused = not transport.send(heartbeat("n1", "n2", term=2))
            return refused and not transport.link_up("n2")

        wait_for(keep_sending_until_down, "the link to the frozen peer is declared down", 10.0)
        stale = [transport.send(heartbeat("n1", "n2", term=3)) for _ in range(500)]
        assert not any(stale), "messages were queued for a peer whose link is down"
        os.kill(peer.process.pid, signal.SIGCONT)
        wait_for(lambda: transport.send(heartbeat("n1", "n2", term=4)) and 4 in peer.terms_received(),
                 "a fresh heartbeat arrives after the peer wakes", 10.0)
        assert 3 not in peer.terms_received(), "stale messages were replayed after the peer woke"
        assert transport.counters()["reconnects"] >= 1
    finally:
        transport.close()
        peer.close()


def test_the_loop_polls_the_router_and_the_watched_links_monitor_alone(make_transports):
    transports = make_transports(["n1", "n2", "n3"])
    n1 = transports["n1"]
    watching_n2 = n1.poll_sockets_watching("n2")
    assert watching_n2[0] is n1.socket and len(watching_n2) == 2  # the ROUTER and n2's link monitor
    assert watching_n2[1] is not n1.poll_sockets_watching("n3")[1]
    assert n1.poll_sockets_watching("n2") is watching_n2, "the same list until the links change"
    assert n1.poll_sockets_watching(None) == [n1.socket]
    assert n1.poll_sockets_watching("") == [n1.socket]  # no leader known
    assert n1.poll_sockets_watching("n1") == [n1.socket]  # not a peer (this node)
    n1.set_peers({"n3": transports["n3"].bound_address})
    assert n1.poll_sockets_watching("n2") == [n1.socket], "n2 is no peer any more"


def test_a_closed_watched_link_wakes_the_poll_and_is_reported_at_once(make_transports, monkeypatch):
    # No periodic read of link events in this test: only the monitor the poll watches reports.
    monkeypatch.setattr(peer_module, "LINK_EVENTS_INTERVAL_SECONDS", 3600.0)
    transports = make_transports(["n1", "n2"])
    n1 = transports["n1"]
    deliver(n1, transports["n2"], heartbeat("n1", "n2"))
    wait_for(lambda: n1.link_up("n2"), "the link to n2 is up")
    assert n1.take_lost_links() == []
    n1.counters()  # reads every monitor, empty ones included, without raising
    poller = zmq.Poller()
    for polled in n1.poll_sockets_watching("n2"):
        poller.register(polled, zmq.POLLIN)
    transports["n2"].close()
    lost: list[str] = []

    def link_reported_lost() -> bool:
        for polled, _ in poller.poll(10):
            if polled is not n1.socket:
                n1.on_monitor_readable(polled)
        lost.extend(n1.take_lost_links())
        return lost == ["n2"]

    wait_for(link_reported_lost, "the monitor woke the poll and n2's link is reported lost")
    assert n1.counters()["links"]["n2"]["up"] is False
