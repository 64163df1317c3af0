"""The peer codec: every message kind round-trips; garbage only ever raises CodecError."""

from __future__ import annotations

import random

import msgpack
import pytest

from node.raft.types import ConfState, Entry, EntryKind, Message, MessageKind, SnapshotMeta
from node.transport.codec import (
    CodecError,
    decode_message,
    decode_peer_frame,
    encode_forward,
    encode_message,
)

FRAME_BYTES_MAX = 1 << 20
FUZZ_SEED = 20261122
FUZZ_ROUNDS = 3000


def full_message(kind: MessageKind) -> Message:
    entries = (
        Entry(term=3, index=10, kind=EntryKind.NORMAL, data=b"put /a"),
        Entry(term=3, index=11, kind=EntryKind.NOOP),
        Entry(term=4, index=12, kind=EntryKind.CONF_CHANGE, data=b'{"steps":[]}'),
    )
    meta = SnapshotMeta(
        index=9, term=2,
        conf_state=ConfState(voters=frozenset({"n1", "n2"}), voters_outgoing=frozenset({"n3"}),
                             learners=frozenset({"n-4_x"})),
        size_bytes=12345,
    )
    return Message(
        kind=kind, source="n1", target="n2", term=4, log_term=2, index=9, entries=entries,
        commit=8, reject=True, reject_hint_index=7, reject_hint_term=1, context=b"ctx\x00",
        snapshot_meta=meta, snapshot_offset=4096, snapshot_data=b"\xff" * 100, snapshot_done=True, promised_term=3,
    )


@pytest.mark.parametrize("kind", list(MessageKind))
def test_every_kind_round_trips_with_all_fields(kind):
    message = full_message(kind)
    assert decode_message(encode_message(message), FRAME_BYTES_MAX) == message
    assert decode_peer_frame(encode_message(message), FRAME_BYTES_MAX) == ("raft", message)


@pytest.mark.parametrize("kind", list(MessageKind))
def test_every_kind_round_trips_with_defaults(kind):
    message = Message(kind=kind, source="a", target="b", term=1)
    assert decode_message(encode_message(message), FRAME_BYTES_MAX) == message


def test_forward_round_trips_and_is_not_a_raft_message():
    payload = {"op": "mkdir", "args": {"path": "/x", "seq": 3}, "data": b"\x00\x01", "f": 1.5,
               "nested": [[None, True], {"k": []}]}
    frame = encode_forward(payload)
    assert decode_peer_frame(frame, FRAME_BYTES_MAX) == ("forward", payload)
    with pytest.raises(CodecError):
        decode_message(frame, FRAME_BYTES_MAX)


def test_oversized_frame_is_refused_before_unpacking(monkeypatch):
    frame = encode_message(Message(kind=MessageKind.APPEND, source="a", target="b", term=1,
                                   entries=(Entry(1, 1, data=b"x" * 2000),)))

    def unpack_must_not_run(*args, **kwargs):
        raise AssertionError("unpacked an oversized frame")

    monkeypatch.setattr(msgpack, "unpackb", unpack_must_not_run)
    with pytest.raises(CodecError, match="exceeds"):
        decode_peer_frame(frame, frame_bytes_max=len(frame) - 1)


def raft_fields(message: Message) -> list:
    return msgpack.unpackb(encode_message(message), raw=False)


BAD_FIELD_VALUES = {
    2: [0, 99, -1, "1", True, None],  # kind
    3: ["", "a b", "x" * 65, b"n1", 1, None, "\x00n"],  # source
    4: ["", 7],  # target
    5: [-1, -(2**63), 1.0, True, "1", None, 2**62, 2**63, 2**64 - 1],  # term
    7: [2**62, 2**64 - 1],  # index
    9: [2**63],  # commit
    8: ["x", [[1, 1, 1]], [[1, 1, 9, b""]], [[1, 1, 1, "s"]], [[1, 5, 1, b""], [1, 7, 1, b""]], None],
    10: [1, 0, None, "true"],  # reject
    13: ["ctx", None, 1],  # context
    14: [1, [], [1, 1, [[], [], []]], [1, 1, [[""], [], []], 0], [1, 1, [["a", "a"], [], []], 0],
         [1, 1, [[], []], 0], [1, 1, None, 0],
         [1, 1, [["a"], [], ["a"]], 1 << 20],  # a voter that is also a learner
         [1, 1, [[], [], ["a"]], 1 << 20],  # no voters
         [2**62, 1, [["a"], [], []], 1 << 20]],  # snapshot meta
    17: [1, None],  # snapshot_done
}


@pytest.mark.parametrize("position,bad", [(p, v) for p, values in BAD_FIELD_VALUES.items() for v in values])
def test_each_bad_field_is_refused(position, bad):
    fields = raft_fields(full_message(MessageKind.APPEND))
    fields[position] = bad
    with pytest.raises(CodecError):
        decode_peer_frame(msgpack.packb(fields, use_bin_type=True), FRAME_BYTES_MAX)


def message_without_snapshot(kind: MessageKind, with_entries: bool) -> Message:
    """Every message but a snapshot chunk: what the decode's fast path takes."""
    return full_message(kind)._replace(snapshot_meta=None, snapshot_offset=0, snapshot_data=b"", snapshot_done=False,
                                       entries=full_message(kind).entries if with_entries else ())


@pytest.mark.parametrize("kind", list(MessageKind))
@pytest.mark.parametrize("with_entries", [True, False])
def test_messages_without_a_snapshot_round_trip(kind, with_entries):
    message = message_without_snapshot(kind, with_entries)
    assert decode_peer_frame(encode_message(message), FRAME_BYTES_MAX) == ("raft", message)


FIELD_NAMES = {3: "source", 4: "target", 5: "term", 6: "log_term", 7: "index", 8: "entr", 9: "commit", 10: "reject",
               11: "reject_hint_index", 12: "reject_hint_term", 13: "context", 15: "snapshot_offset",
               16: "snapshot_data", 17: "snapshot_done", 18: "promised_term"}


@pytest.mark.parametrize("position,bad", [(p, v) for p, values in BAD_FIELD_VALUES.items() for v in values
                                          if p != 14] + [(p, v) for p in (6, 11, 12, 15, 18) for v in (-1, "1", 2**62)]
                                         + [(16, "data"), (16, None)])
def test_each_bad_field_of_a_message_without_a_snapshot_is_refused_and_named(position, bad):
    fields = raft_fields(message_without_snapshot(MessageKind.HEARTBEAT, with_entries=True))
    fields[position] = bad
    expected = FIELD_NAMES.get(position, "kind")
    with pytest.raises(CodecError, match=expected):
        decode_peer_frame(msgpack.packb(fields, use_bin_type=True), FRAME_BYTES_MAX)


def test_snapshot_data_beyond_the_announced_size_is_refused():
    message = full_message(MessageKind.INSTALL_SNAPSHOT)
    fields = raft_fields(message)
    fields[14][3] = message.snapshot_offset + len(message.snapshot_data)  # exactly fits
    assert decode_message(msgpack.packb(fields, use_bin_type=True), FRAME_BYTES_MAX).snapshot_meta.size_bytes == fields[14][3]
    fields[14][3] -= 1
    with pytest.raises(CodecError, match="announced size"):
        decode_message(msgpack.packb(fields, use_bin_type=True), FRAME_BYTES_MAX)


def test_largest_accepted_integers_round_trip():
    limit = 2**62 - 1
    message = Message(kind=MessageKind.APPEND, source="n1", target="n2", term=limit, index=limit,
                      log_term=limit, commit=limit)
    assert decode_message(encode_message(message), FRAME_BYTES_MAX) == message


@pytest.mark.parametrize("frame_value", [
    [], [1], [2, 1], [1, 3], [1, 1, 5], [1, 2], [1, 2, [1]], [1, 2, {"k": 1}, 1],
    [True, 1], {"v": 1}, 7, b"raw", [1, 2, {1: 2}],
])
def test_bad_envelopes_are_refused(frame_value):
    with pytest.raises(CodecError):
        decode_peer_frame(msgpack.packb(frame_value, use_bin_type=True), FRAME_BYTES_MAX)


def test_field_count_must_be_exact():
    fields = raft_fields(full_message(MessageKind.VOTE))
    for frame in (fields + [0], fields[:-2]):
        with pytest.raises(CodecError, match="fields"):
            decode_peer_frame(msgpack.packb(frame, use_bin_type=True), FRAME_BYTES_MAX)


def test_a_frame_of_the_previous_version_without_promised_term_is_read_as_promising_nothing():
    message = full_message(MessageKind.VOTE)
    assert message.promised_term != 0
    kind, decoded = decode_peer_frame(msgpack.packb(raft_fields(message)[:-1], use_bin_type=True), FRAME_BYTES_MAX)
    assert kind == "raft" and decoded.promised_term == 0 and decoded.term == message.term


def test_extension_types_and_deep_nesting_are_refused():
    with pytest.raises(CodecError):
        decode_peer_frame(msgpack.packb([1, 2, {"t": msgpack.ExtType(5, b"x")}]), FRAME_BYTES_MAX)
    deep: object = "leaf"
    for _ in range(40):
        deep = [deep]
    with pytest.raises(CodecError, match="nested"):
        decode_peer_frame(encode_forward({"deep": deep}), FRAME_BYTES_MAX)


def random_value(rng: random.Random, depth: int = 0) -> object:
    choice = rng.randrange(10 if depth < 4 else 7)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False])
    if choice == 2:
        return rng.choice([0, 1, 5, 13, -1, 2**63, rng.randrange(-(2**63), 2**64)])
    if choice == 3:
        return rng.random()
    if choice == 4:
        return rng.choice(["", "n1", "n2", "x" * rng.randrange(100)])
    if choice == 5:
        return rng.randbytes(rng.randrange(40))
    if choice == 6:
        return msgpack.ExtType(rng.randrange(128), rng.randbytes(3))
    if choice == 7:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(20))]
    if choice == 8:
        return {rng.choice(["v", "k", "op"]) + str(i): random_value(rng, depth + 1) for i in range(rng.randrange(5))}
    return [1, rng.choice([1, 2]), *[random_value(rng, depth + 1) for _ in range(rng.randrange(20))]]


def mutate_valid_frame(rng: random.Random) -> bytes:
    fields = raft_fields(full_message(rng.choice(list(MessageKind))))
    fields[rng.randrange(len(fields))] = random_value(rng, 2)
    return msgpack.packb(fields, use_bin_type=True)


def assert_decodes_or_codec_error(frame: bytes) -> None:
    try:
        kind, value = decode_peer_frame(frame, FRAME_BYTES_MAX)
    except CodecError:
        return
    # Anything accepted must be whole: it re-encodes to an equal value.
    if kind == "raft":
        assert decode_message(encode_message(value), FRAME_BYTES_MAX) == value
    else:
        assert kind == "forward" and isinstance(value, dict)


def test_fuzz_random_bytes_only_raise_codec_error():
    rng = random.Random(FUZZ_SEED)
    print("seed", FUZZ_SEED)
    valid = encode_message(full_message(MessageKind.APPEND))
    for _ in range(FUZZ_ROUNDS):
        assert_decodes_or_codec_error(rng.randbytes(rng.randrange(200)))
        flipped = bytearray(valid)
        for _ in range(rng.randrange(1, 4)):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        assert_decodes_or_codec_error(bytes(flipped))
        assert_decodes_or_codec_error(valid[: rng.randrange(len(valid))])


def test_fuzz_random_msgpack_structures_only_raise_codec_error():
    rng = random.Random(FUZZ_SEED + 1)
    print("seed", FUZZ_SEED + 1)
    for _ in range(FUZZ_ROUNDS):
        assert_decodes_or_codec_error(msgpack.packb(random_value(rng), use_bin_type=True))
        assert_decodes_or_codec_error(mutate_valid_frame(rng))
