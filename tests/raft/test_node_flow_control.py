"""Flow control that cannot stall a leader: one probe per heartbeat interval, in-flight windows
bounded in messages and bytes, and a bounded amount of log read per step for one follower."""

from node.raft.progress import ProgressState
from node.raft.types import Message, MessageKind
from raft_harness import Cluster, only

K = MessageKind


class CountingStorage:
    """Delegates to a storage and records what the core reads from it."""

    def __init__(self, storage) -> None:
        self._storage = storage
        self.entry_bytes_read = 0
        self.snapshot_reads = 0

    def entries(self, low, high, bytes_max=None):
        entries = self._storage.entries(low, high, bytes_max)
        self.entry_bytes_read += sum(entry.size_bytes() for entry in entries)
        return entries

    def snapshot(self):
        self.snapshot_reads += 1
        return self._storage.snapshot()

    def __getattr__(self, name):
        return getattr(self._storage, name)


def counting(cluster: Cluster, node_id: str) -> CountingStorage:
    log = cluster.nodes[node_id].log
    log.storage = CountingStorage(log.storage)
    return log.storage


def cut_off(node_id: str):
    return lambda message: node_id in (message.source, message.target)


def heartbeat_response(leader: Cluster, source: str, target: str = "a") -> Message:
    return Message(kind=K.HEARTBEAT_RESPONSE, source=source, target=target, term=leader.nodes[target].term)


def lagging_follower(entry_count: int, **config) -> Cluster:
    """a leads; c acknowledged the no-op, then every APPEND carrying `entry_count` entries to
    it was lost."""
    cluster = Cluster("abc", **config)
    cluster.elect("a")
    for number in range(entry_count):
        cluster.nodes["a"].propose(b"entry %04d" % number)
    cluster.stabilize(drop=cut_off("c"))
    return cluster


def test_a_backlog_of_stale_heartbeat_responses_causes_at_most_one_append():
    cluster = lagging_follower(300)
    a = cluster.nodes["a"]
    progress = a.tracker.progress["c"]
    progress.become_probe()
    progress.probe_sent = True  # a probe is out (and lost)
    heartbeats = cluster.tick("a", cluster.settings["heartbeat_ticks"])
    assert len(only(heartbeats, K.HEARTBEAT)) == 2
    for _ in range(300):  # the healed link delivers every heartbeat answer queued meanwhile
        a.step(heartbeat_response(cluster, "c"))
    appends = [m for m in cluster.process("a") if m.kind == K.APPEND and m.target == "c"]
    assert len(appends) == 1


def test_one_probe_per_heartbeat_interval_while_the_follower_does_not_answer_appends():
    cluster = lagging_follower(50)
    a, c = cluster.nodes["a"], cluster.nodes["c"]
    a.tracker.progress["c"].become_probe()
    appends_per_interval = []
    for _ in range(10):
        heartbeats = [m for m in cluster.tick("a", cluster.settings["heartbeat_ticks"]) if m.target == "c"]
        assert [m.kind for m in heartbeats] == [K.HEARTBEAT]
        c.step(heartbeats[0])
        (reply,) = cluster.process("c")
        for _ in range(5):  # every answer arrives five times (a link that duplicates)
            a.step(reply)
        appends = [m for m in cluster.process("a") if m.kind == K.APPEND and m.target == "c"]
        appends_per_interval.append(len(appends))  # and every APPEND is lost
    assert appends_per_interval == [1] * 10
    assert a.tracker.progress["c"].state == ProgressState.PROBE


def test_stale_heartbeat_responses_free_at_most_one_slot_of_a_full_window():
    cluster = Cluster("ab", inflight_messages_max=2, message_bytes_max=1)
    cluster.elect("a")
    a = cluster.nodes["a"]
    for number in range(20):
        a.propose(b"%d" % number)
    assert len(only(cluster.process("a"), K.APPEND)) == 2  # the window is full; those are lost
    cluster.tick("a", cluster.settings["heartbeat_ticks"])
    for _ in range(300):
        a.step(heartbeat_response(cluster, "b"))
    assert len(only(cluster.process("a"), K.APPEND)) == 1


def test_read_index_rounds_do_not_resume_a_paused_flow():
    cluster = lagging_follower(20)
    a = cluster.nodes["a"]
    a.tracker.progress["c"].probe_sent = True
    # Settling ticked the leader once (its last commit went out on that tick): an interval
    # heartbeat, which lets c's next answer resume the flow. Only read rounds from here on.
    a.tracker.progress["c"].heartbeat_resume_allowed = False
    appends_to_c = 0
    for number in range(30):
        a.read_index(b"read %d" % number)
        round_messages = cluster.process("a")
        replies = cluster.deliver([m for m in round_messages if m.kind == K.HEARTBEAT])
        appends_to_c += len([m for m in cluster.deliver(replies) if m.kind == K.APPEND and m.target == "c"])
    assert len(cluster.read_states["a"]) == 30
    assert appends_to_c == 0


def test_bytes_in_flight_never_exceed_the_limit():
    cluster = Cluster("ab", inflight_bytes_max=1000, message_bytes_max=300, inflight_messages_max=64)
    cluster.elect("a")
    a = cluster.nodes["a"]
    undelivered: list[Message] = []
    peak_bytes = 0
    for number in range(40):
        a.propose(b"x" * 76)  # 100 bytes with the per-entry overhead
        undelivered += only(cluster.process("a"), K.APPEND)
        in_flight = sum(entry.size_bytes() for m in undelivered for entry in m.entries)
        assert in_flight <= 1000 and a.tracker.progress["b"].inflights.bytes == in_flight
        peak_bytes = max(peak_bytes, in_flight)
        if number % 7 == 6:  # now and then b gets and answers two messages; a sends more
            answers = cluster.deliver(undelivered[:2])
            undelivered = undelivered[2:] + only(cluster.deliver(answers), K.APPEND)
            in_flight = sum(entry.size_bytes() for m in undelivered for entry in m.entries)
            assert in_flight <= 1000 and a.tracker.progress["b"].inflights.bytes == in_flight
    assert peak_bytes == 1000
    assert all(sum(e.size_bytes() for e in m.entries) <= 300 for m in undelivered)
    cluster.stabilize(undelivered)
    assert cluster.nodes["b"].log.committed == 42


def test_an_entry_larger_than_the_window_still_goes_out_alone():
    cluster = Cluster("ab", inflight_bytes_max=1000, message_bytes_max=300)
    cluster.elect("a")
    cluster.nodes["a"].propose(b"big" * 1000)
    appends = only(cluster.process("a"), K.APPEND)
    assert [len(m.entries) for m in appends] == [1]
    cluster.stabilize(appends)
    assert cluster.applied["b"][-1].data == b"big" * 1000


def test_the_leader_reads_a_bounded_amount_of_log_per_step_for_one_follower():
    # 2,000 entries of 100 bytes behind; a window of 2,000 bytes in messages of at most 1,000.
    cluster = lagging_follower(2000, inflight_bytes_max=2000, message_bytes_max=1000)
    storage = counting(cluster, "a")
    a = cluster.nodes["a"]
    pending = cluster.tick("a", cluster.settings["heartbeat_ticks"])
    reads_per_step = []
    for _ in range(2000):
        if not pending:
            break
        next_pending = []
        for message in pending:
            before = storage.entry_bytes_read
            cluster.nodes[message.target].step(message)
            if message.target == "a":
                reads_per_step.append(storage.entry_bytes_read - before)
            next_pending += cluster.process_all()
        pending = next_pending
    assert cluster.nodes["c"].log.committed == a.log.committed == 2002
    assert max(reads_per_step) <= 2000 + 100  # the window, plus one entry that did not fit
    assert sum(reads_per_step) < 2 * 2000 * 100  # catching up reads the lag about once, not once per answer


def acknowledged_by_both(cluster: Cluster) -> None:
    """a proposes a write that b and c acknowledge (no tick: no heartbeat interval ends)."""
    cluster.nodes["a"].propose(b"acknowledged")
    cluster.deliver(cluster.deliver(cluster.process("a")))


def in_flight_to_c(cluster: Cluster, committed: bool = True) -> Message:
    """a proposes a write; its APPEND to c is out; b acknowledges it (it commits) or not."""
    cluster.nodes["a"].propose(b"in flight")
    appends = only(cluster.process("a"), K.APPEND)
    if committed:
        cluster.deliver(cluster.deliver([m for m in appends if m.target == "b"]))
    (to_c,) = [m for m in appends if m.target == "c"]
    assert cluster.nodes["a"].tracker.progress["c"].match < cluster.nodes["a"].log.last_index()
    return to_c


def heartbeat_round_to_c(cluster: Cluster) -> list[Message] | None:
    """The leader's heartbeat tick; c answers its heartbeat: what the leader then sends c
    (None: the tick sent c no heartbeat)."""
    a, c = cluster.nodes["a"], cluster.nodes["c"]
    to_c = [m for m in cluster.tick("a", cluster.settings["heartbeat_ticks"]) if m.target == "c"]
    heartbeats = only(to_c, K.HEARTBEAT)  # (a commit no APPEND told may go out with it)
    if not heartbeats:
        return None
    (heartbeat,) = heartbeats
    c.step(heartbeat)
    (reply,) = cluster.process("c")
    a.step(reply)
    return [m for m in cluster.process("a") if m.target == "c"]


def test_a_follower_whose_appends_flow_gets_no_heartbeat():
    cluster = Cluster("abc")
    cluster.elect("a")
    cluster.stabilize()
    assert heartbeat_round_to_c(cluster) == []  # idle: the heartbeat goes out
    acknowledged_by_both(cluster)
    in_flight_to_c(cluster)
    # c acknowledged entries since the last heartbeat tick and was sent an APPEND since: it
    # heard from the leader within the interval, and its APPEND is on its way. Neither a
    # heartbeat nor (for its answer) an empty APPEND, each answered, goes out for nothing.
    assert heartbeat_round_to_c(cluster) is None
    assert heartbeat_round_to_c(cluster) is not None  # nothing went to c since: the heartbeat does


def test_an_append_lost_in_flight_is_resent_after_one_interval_without_acknowledgements():
    cluster = Cluster("abc")
    cluster.elect("a")
    cluster.stabilize()
    heartbeat_round_to_c(cluster)
    acknowledged_by_both(cluster)
    in_flight_to_c(cluster, committed=False)  # and lost (no commit to tell: no other APPEND)
    assert heartbeat_round_to_c(cluster) is None  # c's APPENDs flowed during that interval
    resent = heartbeat_round_to_c(cluster)  # ... but not during this one: presumed lost
    assert [m.kind for m in resent] == [K.APPEND]
    cluster.stabilize(resent)
    a, c = cluster.nodes["a"], cluster.nodes["c"]
    assert a.tracker.progress["c"].match == a.log.last_index() == c.log.last_index()


def test_a_read_round_on_the_heartbeat_tick_goes_to_every_follower():
    cluster = Cluster("abc")
    cluster.elect("a")
    cluster.stabilize()
    heartbeat_round_to_c(cluster)
    acknowledged_by_both(cluster)
    a = cluster.nodes["a"]
    for context in (b"first", b"second"):  # two rounds go out at once, unanswered
        a.read_index(context)
        assert len(only(cluster.process("a"), K.HEARTBEAT)) == 2
    a.read_index(b"third")  # its round is the heartbeat tick's
    assert cluster.process("a") == []
    heartbeats = only(cluster.tick("a", cluster.settings["heartbeat_ticks"]), K.HEARTBEAT)
    # b's and c's APPENDs flow, but the round needs a quorum's answers: it goes to both.
    assert {m.target for m in heartbeats if m.context == b"third"} == {"b", "c"}
