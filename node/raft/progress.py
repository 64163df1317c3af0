"""What the leader knows about one follower's log, and how fast it may send to it.

States (as in etcd): PROBE sends one APPEND at a time until the follower's position is known;
REPLICATE pipelines APPENDs optimistically within a window bounded in messages and in bytes;
SNAPSHOT sends a snapshot, one chunk at a time, and no APPENDs.
"""

from __future__ import annotations

import collections
import enum

from node.raft.snapshot_sender import SnapshotSender
from node.raft.types import NO_INDEX, FastMembers


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


PROGRESS_STATE = FastMembers(ProgressState)  # fast member lookups (see types.FastMembers)


class Inflights:
    """The APPENDs sent and not yet acknowledged (their last index and size), oldest first,
    bounded in messages and in bytes."""

    def __init__(self, capacity_messages: int, capacity_bytes: int) -> None:
        assert capacity_messages >= 1
        assert capacity_bytes >= 1
        self.capacity_messages = capacity_messages
        self.capacity_bytes = capacity_bytes
        self._sent: collections.deque[tuple[int, int]] = collections.deque()  # (last index, bytes)
        self.bytes = 0
        # The next message did not fit in the bytes left: full until an acknowledgement (or a
        # heartbeat response presuming a loss) frees room, so nothing re-reads it meanwhile.
        self._no_room_for_next = False

    def add(self, last_index: int, size_bytes: int) -> None:
        assert not self.full(), "caller must check full() first"
        assert not self._sent or last_index > self._sent[-1][0], "indexes must increase"
        assert size_bytes <= self.bytes_available() or not self._sent, "caller must check bytes_available()"
        self._sent.append((last_index, size_bytes))
        self.bytes += size_bytes

    def free_le(self, index: int) -> None:
        """Forget every message acknowledged by an ack of `index`."""
        while self._sent and self._sent[0][0] <= index:
            self.free_first_one()

    def free_first_one(self) -> None:
        if self._sent:
            _, size_bytes = self._sent.popleft()
            self.bytes -= size_bytes
            assert self.bytes >= 0
            self._no_room_for_next = False

    def mark_no_room(self) -> None:
        """The next message is larger than bytes_available(): the window counts as full."""
        assert self._sent, "an empty window always takes one message"
        self._no_room_for_next = True

    def full(self) -> bool:
        return self._no_room_for_next or len(self._sent) >= self.capacity_messages or self.bytes >= self.capacity_bytes

    def bytes_available(self) -> int:
        """How many more bytes may go out. One message may exceed it when nothing is in
        flight (a single entry larger than the window must still be sent, or Raft stalls)."""
        return max(0, self.capacity_bytes - self.bytes)

    def count(self) -> int:
        return len(self._sent)

    def reset(self) -> None:
        self._sent.clear()
        self.bytes = 0
        self._no_room_for_next = False


class Progress:
    def __init__(self, next_index: int, inflight_messages_max: int, inflight_bytes_max: int) -> None:
        assert next_index >= 1
        self.match = NO_INDEX
        self.next = next_index
        self.inflights = Inflights(inflight_messages_max, inflight_bytes_max)
        # Set by any message from the follower; CheckQuorum looks at it once per election timeout.
        self.recent_active = False
        # A heartbeat response may resume a paused flow (resend the probe, free an in-flight
        # slot, resend a snapshot chunk) once per heartbeat interval: set by the leader's
        # heartbeat tick, used up by the first response. After a partition heals, the follower
        # answers a backlog of stale heartbeats at once; without this each answer would make
        # the leader read and send the whole lag again.
        self.heartbeat_resume_allowed = False
        self._match_at_heartbeat = NO_INDEX  # match at the last heartbeat tick
        self._appended_since_heartbeat = False  # an APPEND went out since the last heartbeat tick
        self._reset_state(PROGRESS_STATE.PROBE)

    def _reset_state(self, state: ProgressState) -> None:
        self.state = state
        # PROBE: an APPEND is out and unanswered; wait for its answer or a heartbeat response.
        self.probe_sent = False
        # SNAPSHOT: the transfer under way (the image, the offset, the chunk out).
        self.snapshot_sender: SnapshotSender | None = None
        self.inflights.reset()

    @property
    def pending_snapshot(self) -> int:
        """The index of the snapshot being sent (NO_INDEX outside SNAPSHOT)."""
        return self.snapshot_sender.index if self.snapshot_sender is not None else NO_INDEX

    def become_probe(self) -> None:
        # Out of SNAPSHOT, the follower has (or will soon have) the snapshot: probe right after it.
        pending_snapshot = self.pending_snapshot
        self._reset_state(PROGRESS_STATE.PROBE)
        self.next = max(self.match + 1, pending_snapshot + 1)
        assert self.next > self.match

    def become_replicate(self) -> None:
        self._reset_state(PROGRESS_STATE.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, sender: SnapshotSender) -> None:
        self._reset_state(PROGRESS_STATE.SNAPSHOT)
        self.snapshot_sender = sender

    def maybe_update(self, acknowledged_index: int) -> bool:
        """The follower has everything up to acknowledged_index. False if the ack is stale."""
        updated = False
        if self.match < acknowledged_index:
            self.match = acknowledged_index
            updated = True
            self.probe_sent = False
        self.next = max(self.next, acknowledged_index + 1)
        assert self.next > self.match
        return updated

    def heartbeat_interval_elapsed(self) -> bool:
        """The leader's heartbeat tick: whether this follower needs its heartbeat. It does not
        when it is replicating, acknowledged entries since the last tick and was sent an
        APPEND since: it heard from the leader (term, commit, its election timer reset) within
        the interval, and its answers show the leader's own liveness. At one write outstanding
        that skips nearly every heartbeat and its answer, a wake of both loops each.

        Its answer to a heartbeat may resume the flow, unless the follower is replicating and
        acknowledged entries since the last tick: its APPENDs then flow, and those out are on
        their way, not lost; resuming would send an empty APPEND (and get an answer) to every
        follower with a write in flight. A loss still resumes, one interval later: the next
        interval sees no acknowledgement (and sends the heartbeat)."""
        flowing = self.state == PROGRESS_STATE.REPLICATE and self.match > self._match_at_heartbeat
        appended, self._appended_since_heartbeat = self._appended_since_heartbeat, False
        self._match_at_heartbeat = self.match
        self.heartbeat_resume_allowed = not flowing
        return not (flowing and appended)

    def take_heartbeat_resume(self) -> bool:
        """Whether this heartbeat response may resume the flow (see heartbeat_resume_allowed)."""
        allowed, self.heartbeat_resume_allowed = self.heartbeat_resume_allowed, False
        return allowed

    def sent_entries(self, entry_count: int, last_index: int, size_bytes: int) -> None:
        """Record an APPEND carrying entry_count entries (size_bytes) ending at last_index."""
        self._appended_since_heartbeat = True
        if self.state == PROGRESS_STATE.REPLICATE:
            if entry_count > 0:
                assert last_index + 1 > self.next - 1
                self.next = last_index + 1
                self.inflights.add(last_index, size_bytes)
        elif self.state == PROGRESS_STATE.PROBE:
            self.probe_sent = True
        else:
            raise AssertionError(f"sending entries in state {self.state}")

    def maybe_decrease_to(self, rejected_index: int, match_hint: int) -> bool:
        """The follower rejected the APPEND whose previous index was rejected_index. Move next
        back using the hint; False if the rejection is stale (answers an older message)."""
        if self.state == PROGRESS_STATE.REPLICATE:
            if rejected_index <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected_index:
            return False
        self.next = max(min(rejected_index, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state == PROGRESS_STATE.PROBE:
            return self.probe_sent
        if self.state == PROGRESS_STATE.REPLICATE:
            return self.inflights.full()
        return True  # SNAPSHOT: chunks follow their own flow control, never APPENDs

    def describe(self) -> dict:
        return {"match": self.match, "next": self.next, "state": self.state.value}
