"""The peer codec's entries: a frame's bytes are the documented layout, and every bad entry
among many, wherever it stands, is refused and named (the decode checks all entries of a
field at once, and names the first bad one)."""

from __future__ import annotations

import msgpack
import pytest

from node.raft.types import ConfState, Entry, EntryKind, Message, MessageKind, SnapshotMeta
from node.transport.codec import CodecError, decode_peer_frame, encode_message

FRAME_BYTES_MAX = 1 << 20
ENTRY_COUNT = 64
FIRST_INDEX = 1000


def many_entries() -> tuple[Entry, ...]:
    kinds = (EntryKind.NORMAL, EntryKind.NOOP, EntryKind.CONF_CHANGE)
    return tuple(Entry(term=5 + position // 20, index=FIRST_INDEX + position, kind=kinds[position % 3],
                       data=bytes([position]) * position) for position in range(ENTRY_COUNT))


def append(entries: tuple[Entry, ...]) -> Message:
    return Message(kind=MessageKind.APPEND, source="n1", target="n2", term=9, log_term=5, index=FIRST_INDEX - 1,
                   entries=entries, commit=FIRST_INDEX - 1, promised_term=9)


def documented_frame(message: Message) -> bytes:
    """The wire layout spelled out: [version, frame kind, the 17 Message fields], an entry as
    [term, index, kind, data], snapshot meta as [index, term, [voters, outgoing, learners], size]."""
    meta = message.snapshot_meta
    meta_fields = None if meta is None else [
        meta.index, meta.term,
        [sorted(meta.conf_state.voters), sorted(meta.conf_state.voters_outgoing), sorted(meta.conf_state.learners)],
        meta.size_bytes]
    return msgpack.packb([
        1, 1, int(message.kind), message.source, message.target, message.term, message.log_term, message.index,
        [[entry.term, entry.index, int(entry.kind), entry.data] for entry in message.entries],
        message.commit, message.reject, message.reject_hint_index, message.reject_hint_term, message.context,
        meta_fields, message.snapshot_offset, message.snapshot_data, message.snapshot_done, message.promised_term,
    ], use_bin_type=True)


def test_frames_are_the_documented_layout_byte_for_byte():
    meta = SnapshotMeta(index=7, term=3, conf_state=ConfState(voters=frozenset({"n2", "n1"}),
                                                                learners=frozenset({"n3"})), size_bytes=99)
    messages = [
        append(many_entries()),
        append(()),
        Message(kind=MessageKind.HEARTBEAT, source="n1", target="n3", term=2, commit=5, context=b"r"),
        Message(kind=MessageKind.APPEND_RESPONSE, source="n3", target="n1", term=2, index=5, reject=True,
                reject_hint_index=4, reject_hint_term=1),
        Message(kind=MessageKind.INSTALL_SNAPSHOT, source="n1", target="n3", term=4, snapshot_meta=meta,
                snapshot_offset=10, snapshot_data=b"abc", snapshot_done=True),
    ]
    for message in messages:
        assert encode_message(message) == documented_frame(message), message.kind


def test_many_entries_of_every_kind_round_trip():
    message = append(many_entries())
    kind, decoded = decode_peer_frame(encode_message(message), FRAME_BYTES_MAX)
    assert kind == "raft" and decoded == message
    assert all(type(entry) is Entry and type(entry.kind) is EntryKind for entry in decoded.entries)


def test_entries_at_the_largest_accepted_numbers_round_trip():
    limit = 2**62 - 1
    entries = (Entry(term=limit, index=limit - 1), Entry(term=limit, index=limit))
    message = Message(kind=MessageKind.APPEND, source="a", target="b", term=limit, log_term=limit,
                      index=limit - 2, entries=entries)
    assert decode_peer_frame(encode_message(message), FRAME_BYTES_MAX) == ("raft", message)


BAD_ENTRIES = {
    "not an array": "x",
    "three fields": [9, FIRST_INDEX, 1],
    "five fields": [9, FIRST_INDEX, 1, b"", 0],
    "a map": {"term": 9},
    "negative term": [-1, FIRST_INDEX, 1, b""],
    "term too large": [2**62, FIRST_INDEX, 1, b""],
    "bool term": [True, FIRST_INDEX, 1, b""],
    "float term": [9.0, FIRST_INDEX, 1, b""],
    "string index": [9, str(FIRST_INDEX), 1, b""],
    "bool index": [9, True, 1, b""],
    "index repeated": [9, FIRST_INDEX - 1, 1, b""],
    "index skipped": [9, FIRST_INDEX + 1, 1, b""],
    "unknown kind": [9, FIRST_INDEX, 9, b""],
    "kind zero": [9, FIRST_INDEX, 0, b""],
    "bool kind": [9, FIRST_INDEX, True, b""],
    "string kind": [9, FIRST_INDEX, "1", b""],
    "string data": [9, FIRST_INDEX, 1, "text"],
    "no data": [9, FIRST_INDEX, 1, None],
}


@pytest.mark.parametrize("position", [0, ENTRY_COUNT // 2, ENTRY_COUNT - 1])
@pytest.mark.parametrize("what", sorted(BAD_ENTRIES))
def test_a_bad_entry_anywhere_among_many_is_refused_and_named(what, position):
    fields = msgpack.unpackb(encode_message(append(many_entries())), raw=False)
    bad = BAD_ENTRIES[what]
    if isinstance(bad, list) and len(bad) > 1 and type(bad[1]) is int and not isinstance(bad[1], bool):
        # Placed at `position`: its index is relative to the entry it replaces.
        bad = [bad[0], bad[1] + position, *bad[2:]]
    fields[8][position] = bad
    with pytest.raises(CodecError, match="entr"):
        decode_peer_frame(msgpack.packb(fields, use_bin_type=True), FRAME_BYTES_MAX)


def test_the_first_bad_entry_is_the_one_named():
    fields = msgpack.unpackb(encode_message(append(many_entries())), raw=False)
    fields[8][10][2] = 9  # an unknown kind, then a gap further on
    fields[8][40][1] += 5
    with pytest.raises(CodecError, match="unknown entry kind 9"):
        decode_peer_frame(msgpack.packb(fields, use_bin_type=True), FRAME_BYTES_MAX)
    fields[8][10][2] = 1
    with pytest.raises(CodecError, match="consecutive"):
        decode_peer_frame(msgpack.packb(fields, use_bin_type=True), FRAME_BYTES_MAX)


@pytest.mark.parametrize("first_index", [-3, -1, 2**62 - 2, 2**62])
def test_consecutive_indexes_outside_the_range_are_refused(first_index):
    """A run of consecutive indexes that starts below 0 or ends beyond 2^62 - 1."""
    fields = msgpack.unpackb(encode_message(append(many_entries()[:3])), raw=False)
    for position, entry in enumerate(fields[8]):
        entry[1] = first_index + position
    with pytest.raises(CodecError, match="entry index"):
        decode_peer_frame(msgpack.packb(fields, use_bin_type=True), FRAME_BYTES_MAX)
