"""The loop polls the raft port and one watched link's monitor (poll_sockets_watching): the
link whose closing must wake it at once. The other links' events are read periodically, and
reading an empty monitor raises nothing."""

from __future__ import annotations

import zmq

from tests.transport.test_transport_peer import context, deliver, heartbeat, make_transports, wait_for  # noqa: F401


def test_the_watched_link_alone_is_polled_and_the_list_is_stable(make_transports):
    transports = make_transports(["n1", "n2", "n3"])
    n1 = transports["n1"]
    watching_n2 = n1.poll_sockets_watching("n2")
    assert watching_n2[0] is n1.socket and len(watching_n2) == 2
    assert watching_n2[1] in n1.poll_sockets() and watching_n2[1] is not n1.poll_sockets_watching("n3")[1]
    assert n1.poll_sockets_watching("n2") is watching_n2, "the same list until the links change"
    assert n1.poll_sockets_watching(None) == [n1.socket]
    assert n1.poll_sockets_watching("") == [n1.socket]  # no leader known
    assert n1.poll_sockets_watching("n1") == [n1.socket]  # not a peer (this node)
    n1.set_peers({"n3": transports["n3"].bound_address})
    assert n1.poll_sockets_watching("n2") == [n1.socket], "n2 is no peer any more"


def test_the_watched_links_closing_wakes_the_poll_and_is_reported(make_transports):
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
