"""The driver writes a hard state that moved only its commit index with the next batch that
applies entries, not with the log batch that carries it (node/replicator/driver.py, HARD STATE):
the commit index is volatile in Raft. A new term or vote is written at once, and the stored
commit never falls behind the stored applied index, which a restart reads back."""

from test_driver_apply_hold import HOLD_SECONDS, _applied_indexes, _cluster_with_holding_follower


def test_a_holding_follower_acknowledges_entries_without_writing_the_commit_that_came_with_them():
    cluster, driver = _cluster_with_holding_follower()
    b, disk = cluster.nodes["b"], cluster.disks["b"]
    on_disk_before = disk.hard_state()
    indexes = [cluster.propose("a", value)[1] for value in (b"x", b"y", b"z")]
    assert b.log.committed >= indexes[-1] > on_disk_before.commit
    assert disk.storage.last_index() >= indexes[-1]  # the entries are durable (acknowledged)
    assert disk.hard_state() == on_disk_before  # the commit index alone moved: not written
    assert (disk.hard_state().term, disk.hard_state().vote) == (b.term, b.vote)

    driver.process(HOLD_SECONDS)  # the hold ends: the entries apply, the commit goes with them
    assert set(indexes) <= set(_applied_indexes(cluster, "b"))
    assert disk.hard_state().commit == b.log.committed >= disk.applied_index == indexes[-1]


def test_a_follower_restarted_behind_its_last_commit_keeps_what_it_applied_and_learns_the_commit_again():
    cluster, driver = _cluster_with_holding_follower()
    first = cluster.propose("a", b"x")[1]
    driver.process(HOLD_SECONDS)
    assert first in _applied_indexes(cluster, "b")
    later = cluster.propose("a", b"y")[1]
    disk = cluster.disks["b"]
    assert disk.hard_state().commit < later <= cluster.nodes["b"].log.committed

    b = cluster.restart("b")  # the core asserts applied <= the commit it reads back
    assert b.log.committed == disk.hard_state().commit >= disk.applied_index == first
    assert b.log.last_index() >= later
    cluster.stabilize(cluster.tick("a", cluster.settings["heartbeat_ticks"]))
    assert b.log.committed >= later
    assert later in _applied_indexes(cluster, "b")

