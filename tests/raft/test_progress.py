import pytest

from node.raft.progress import Inflights, Progress, ProgressState
from node.raft.snapshot_sender import SnapshotSender
from node.raft.types import Snapshot, SnapshotMeta


def test_inflights_bounded_window():
    inflights = Inflights(capacity_messages=3, capacity_bytes=1 << 20)
    for index in (5, 7, 9):
        inflights.add(index, 10)
    assert inflights.full()
    with pytest.raises(AssertionError):
        inflights.add(11, 10)
    inflights.free_le(7)
    assert (inflights.count(), inflights.full()) == (1, False)
    inflights.free_first_one()
    assert inflights.count() == 0


def test_probe_sends_one_message_at_a_time():
    progress = Progress(next_index=5, inflight_messages_max=4, inflight_bytes_max=1 << 20)
    assert progress.state == ProgressState.PROBE and not progress.is_paused()
    progress.sent_entries(entry_count=2, last_index=6, size_bytes=60)
    assert progress.is_paused() and progress.next == 5  # probing does not move next
    assert progress.maybe_update(6)
    assert (progress.match, progress.next, progress.is_paused()) == (6, 7, False)


def test_replicate_pipelines_within_the_window():
    progress = Progress(next_index=1, inflight_messages_max=2, inflight_bytes_max=1 << 20)
    progress.maybe_update(3)
    progress.become_replicate()
    progress.sent_entries(entry_count=2, last_index=5, size_bytes=60)
    progress.sent_entries(entry_count=1, last_index=6, size_bytes=30)
    assert (progress.next, progress.is_paused()) == (7, True)
    progress.maybe_update(5)
    progress.inflights.free_le(5)
    assert not progress.is_paused()


def test_stale_acks_and_rejections_are_ignored():
    progress = Progress(next_index=1, inflight_messages_max=2, inflight_bytes_max=1 << 20)
    progress.maybe_update(8)
    progress.become_replicate()
    assert not progress.maybe_update(6)
    assert not progress.maybe_decrease_to(rejected_index=7, match_hint=0)  # below match
    assert progress.maybe_decrease_to(rejected_index=9, match_hint=0)
    assert progress.next == 9  # replicate falls back to match + 1


def test_probe_rejection_uses_the_hint():
    progress = Progress(next_index=51, inflight_messages_max=2, inflight_bytes_max=1 << 20)
    assert not progress.maybe_decrease_to(rejected_index=40, match_hint=3)  # not the probe we sent
    assert progress.maybe_decrease_to(rejected_index=50, match_hint=3)
    assert progress.next == 4


def test_the_window_is_bounded_in_bytes_too():
    inflights = Inflights(capacity_messages=10, capacity_bytes=100)
    inflights.add(5, 60)
    assert (inflights.full(), inflights.bytes_available()) == (False, 40)
    inflights.mark_no_room()  # the next message was larger than 40 bytes
    assert inflights.full()
    inflights.free_le(5)
    assert (inflights.full(), inflights.bytes, inflights.bytes_available()) == (False, 0, 100)
    inflights.add(6, 250)  # alone, an entry larger than the window still goes out
    assert inflights.full()


def test_snapshot_then_probe_after_it():
    progress = Progress(next_index=3, inflight_messages_max=2, inflight_bytes_max=1 << 20)
    progress.become_snapshot(SnapshotSender(Snapshot(SnapshotMeta(index=20, term=2)), chunk_bytes_max=10))
    assert progress.is_paused()
    progress.become_probe()
    assert (progress.state, progress.next) == (ProgressState.PROBE, 21)
