"""The leader's snapshot transfer: the image read from storage once per send, chunks in order."""

from node.raft.snapshot_sender import RESEND_AFTER_HEARTBEATS, SnapshotSender
from node.raft.types import MessageKind, Snapshot, SnapshotMeta
from raft_harness import Cluster
from test_node_flow_control import counting, cut_off

IMAGE = b"0123456789" * 3 + b"abcde"  # 35 bytes: chunks of 10, 10, 10, 5


def sender(chunk_bytes_max: int = 10) -> SnapshotSender:
    return SnapshotSender(Snapshot(SnapshotMeta(index=9, term=2, size_bytes=len(IMAGE)), IMAGE), chunk_bytes_max)


def test_chunks_follow_the_offsets_the_follower_asks_for():
    transfer = sender()
    assert transfer.next_chunk() == (0, IMAGE[:10], False)
    assert not transfer.answered(0, restart=False)  # a duplicate answer sends nothing
    assert transfer.answered(10, restart=False)
    assert transfer.next_chunk() == (10, IMAGE[10:20], False)
    assert transfer.answered(30, restart=False)
    assert transfer.next_chunk() == (30, IMAGE[30:], True)
    assert transfer.answered(0, restart=True)  # the follower lost what it had
    assert transfer.next_chunk() == (0, IMAGE[:10], False)


def test_an_unanswered_chunk_is_due_again_after_some_heartbeats():
    transfer = sender()
    transfer.heartbeat_sent()
    assert not transfer.resend_due()  # nothing is out yet
    transfer.next_chunk()
    for _ in range(RESEND_AFTER_HEARTBEATS - 1):
        transfer.heartbeat_sent()
    assert not transfer.resend_due()
    transfer.heartbeat_sent()
    assert transfer.resend_due()
    transfer.next_chunk()
    assert not transfer.resend_due()


def compacted_cluster(lagging: str, chunk_bytes: int = 10) -> Cluster:
    """a leads abcde; the nodes in `lagging` missed five entries that a then compacted away."""
    cluster = Cluster("abcde", snapshot_chunk_bytes=chunk_bytes)
    cluster.elect("a")
    for number in range(5):
        cluster.nodes["a"].propose(b"entry%d" % number)
    cluster.stabilize(drop=lambda m: m.source in lagging or m.target in lagging)
    assert cluster.nodes["a"].log.applied == 7
    a, storage = cluster.nodes["a"], cluster.storages["a"]
    storage.create_snapshot(a.log.applied, storage.initial_state()[1], IMAGE)
    storage.compact(a.log.applied)
    a.compacted(a.log.applied)
    return cluster


def test_the_image_is_read_from_storage_once_per_send_not_once_per_chunk():
    cluster = compacted_cluster("d", chunk_bytes=3)  # 12 chunks
    storage = counting(cluster, "a")
    chunks = []
    pending = cluster.tick("a", cluster.settings["heartbeat_ticks"])
    for _ in range(60):
        chunks += [m for m in pending if m.kind == MessageKind.INSTALL_SNAPSHOT]
        pending = cluster.deliver(pending)
    assert len(chunks) == 12 and b"".join(m.snapshot_data for m in chunks) == IMAGE
    assert cluster.storages["d"].snapshot().data == IMAGE
    assert storage.snapshot_reads == 1


def test_followers_needing_a_snapshot_at_once_share_one_image():
    cluster = compacted_cluster("cd")
    storage = counting(cluster, "a")
    cluster.stabilize(cluster.tick("a", cluster.settings["heartbeat_ticks"]))
    assert cluster.storages["c"].snapshot().data == cluster.storages["d"].snapshot().data == IMAGE
    assert storage.snapshot_reads == 1
    cluster.propose("a", b"after")
    assert cluster.applied["c"][-1].data == cluster.applied["d"][-1].data == b"after"
