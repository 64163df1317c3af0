"""A node catching up on a long committed tail applies it a bounded batch per driver turn, so
the loop that calls the driver serves its clients in between (README: a healed node answers
`status` while it catches up)."""

from raft_harness import NOW_SECONDS, Cluster

ENTRY_BYTES = 1000


def test_a_long_committed_tail_is_applied_one_bounded_batch_per_process_call():
    cluster = Cluster("abc")
    cluster.elect("a")
    c = cluster.nodes["c"]
    per_ready_bytes = c.config.committed_bytes_per_ready_max
    count = 4 * per_ready_bytes // ENTRY_BYTES
    cut_off_c = lambda m: "c" in (m.source, m.target)
    for number in range(count):
        cluster.nodes["a"].propose(number.to_bytes(4, "big") * (ENTRY_BYTES // 4))
        cluster.stabilize(drop=cut_off_c)
    committed = cluster.nodes["a"].log.committed
    assert c.log.applied < committed - count + 1

    # c hears the leader again: the entries arrive and commit on c...
    driver = cluster.driver("c")
    pending = cluster.tick("a", cluster.settings["heartbeat_ticks"])
    for _ in range(20):  # heartbeat, probe, reject, append, commit
        if c.log.committed == committed:
            break
        for message in pending:
            cluster.driver(message.target).step(message, NOW_SECONDS)
        pending = cluster.process("a") + cluster.process("b") + _process_once(driver)
    assert c.log.committed == committed
    assert c.log.applied < committed - 2 * per_ready_bytes // ENTRY_BYTES

    # ...and are applied a bounded amount per process() call (once a call applied a full
    # batch's worth, it stops: at most two batches), each call saying "come back".
    turns = 0
    while True:
        before = c.log.applied
        done = driver.process(NOW_SECONDS)
        applied_bytes = sum(len(entry.data) for entry in cluster.applied["c"] if entry.index > before)
        assert applied_bytes <= 2 * per_ready_bytes
        turns += 1
        if done:
            break
        assert c.log.applied > before
    assert c.log.applied == committed
    assert turns >= 2


def _process_once(driver) -> list:
    driver.process(NOW_SECONDS)
    outgoing, driver.outbox.messages = driver.outbox.messages, []
    return outgoing
