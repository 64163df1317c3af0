"""The node-to-node wire format: one msgpack array per ZeroMQ frame.

Every frame starts with [WIRE_VERSION, frame kind, ...]. A Raft frame then carries the
Message fields positionally (no keys: this is the hot path, and a list is smaller and faster
than a map); a forward frame carries one map (a client request a follower hands to the leader,
or any other non-Raft payload).

Decoding is strict: a frame is either turned into a fully valid value or rejected with
CodecError. A peer may be buggy, old or hostile; garbage must never crash the driver loop or
reach the Raft core half-valid.
"""

from __future__ import annotations

from itertools import repeat

import msgpack

from node.errors import BadRequest
from node.names import is_valid_node_id  # the one node-id rule (config, wire, membership, keys)
from node.packing import packb
from node.raft.types import ConfState, Entry, EntryKind, Message, MessageKind, SnapshotMeta

WIRE_VERSION = 1
FRAME_RAFT = 1
FRAME_FORWARD = 2

# Terms, indexes, offsets and sizes from a peer stay far below 2^63: the core adds to them
# (index + 1, term + 1, offset + length) and LMDB keys them as unsigned 64-bit integers, so a
# hostile 2^64 - 1 must not get in and overflow there.
WIRE_INTEGER_MAX = (1 << 62) - 1
FORWARD_DEPTH_MAX = 32  # nesting of maps/lists inside a forwarded payload

RAFT_FRAME_FIELDS = 19  # version, frame kind, then the 17 Message fields
# A frame from a node of the previous version lacks promised_term (then 0): accepted, so that a
# cluster can be upgraded one node at a time.
RAFT_FRAME_FIELDS_WITHOUT_PROMISED_TERM = 18
ENTRY_FIELDS = 4
SNAPSHOT_META_FIELDS = 4
CONF_STATE_FIELDS = 3

_MESSAGE_KINDS = {int(kind): kind for kind in MessageKind}
_ENTRY_KINDS = {int(kind): kind for kind in EntryKind}
_ENTRY_KIND_VALUES = frozenset(_ENTRY_KINDS)
# What _entries compares the set of types (or lengths) of a field across all entries with.
_LIST_TYPE = frozenset({list})
_INT_TYPE = frozenset({int})
_BYTES_TYPE = frozenset({bytes})
_ENTRY_FIELD_COUNTS = frozenset({ENTRY_FIELDS})


class CodecError(BadRequest):
    """A peer frame is oversized, undecodable, of an unknown version or kind, or has a field of
    the wrong type, count or range. The frame is dropped; the sender is not trusted."""


# Builds a NamedTuple from a tuple of its fields in C (the NamedTuple's own __new__ is a Python
# function that only calls this).
_new_tuple = tuple.__new__
# encode_message packs a Message and its Entries as they are, and the fast path of _message
# builds them positionally: the frame's field order is theirs.
assert Message._fields == ("kind", "source", "target", "term", "log_term", "index", "entries", "commit", "reject",
                           "reject_hint_index", "reject_hint_term", "context", "snapshot_meta", "snapshot_offset",
                           "snapshot_data", "snapshot_done", "promised_term")
assert Entry._fields == ("term", "index", "kind", "data")
_SNAPSHOT_META_POSITION = Message._fields.index("snapshot_meta")


# --- encoding ---------------------------------------------------------------------------


def _pack_snapshot_meta(meta: SnapshotMeta) -> list:
    conf = meta.conf_state
    conf_fields = [sorted(conf.voters), sorted(conf.voters_outgoing), sorted(conf.learners)]
    return [meta.index, meta.term, conf_fields, meta.size_bytes]


def encode_message(message: Message) -> bytes:
    """One Raft message as a frame. Our own messages are trusted here; receivers validate.

    The frame's fields after [version, kind] are the Message's, in its field order, and an
    entry's are the Entry's ([term, index, kind, data]): msgpack packs a NamedTuple as the
    array of its fields, and an IntEnum as its integer, so the message goes to packb as it is,
    with no list built per entry (for each follower) and no Python call per field. Only a
    snapshot chunk's meta (a dataclass) is converted."""
    assert isinstance(message, Message), type(message)
    if message.snapshot_meta is None:
        return packb((WIRE_VERSION, FRAME_RAFT, *message))
    return packb((WIRE_VERSION, FRAME_RAFT, *message[:_SNAPSHOT_META_POSITION],
                  _pack_snapshot_meta(message.snapshot_meta), *message[_SNAPSHOT_META_POSITION + 1:]))


def encode_forward(payload: dict) -> bytes:
    """A non-Raft payload for another node (e.g. a forwarded client request)."""
    assert isinstance(payload, dict), type(payload)
    return packb([WIRE_VERSION, FRAME_FORWARD, payload])


# --- decoding ---------------------------------------------------------------------------


def _unpack(frame: bytes, frame_bytes_max: int) -> list:
    assert frame_bytes_max > 0
    if len(frame) > frame_bytes_max:
        raise CodecError(f"frame of {len(frame)} bytes exceeds the {frame_bytes_max}-byte limit")
    try:
        # unpackb caps every length field at len(frame): a header cannot claim more than is there.
        value = msgpack.unpackb(
            frame, raw=False, use_list=True, strict_map_key=True, ext_hook=_reject_ext, timestamp=0,
        )
    except CodecError:
        raise
    except Exception as error:  # msgpack raises many unrelated types for garbage
        raise CodecError(f"undecodable frame: {type(error).__name__}") from None
    if type(value) is not list or len(value) < 2:
        raise CodecError("a frame must be an array [version, kind, ...]")
    if value[0] != WIRE_VERSION or type(value[0]) is not int:
        raise CodecError(f"unsupported wire version {value[0]!r} (this node speaks {WIRE_VERSION})")
    return value


def _reject_ext(code: int, data: bytes) -> object:
    raise CodecError(f"msgpack extension type {code} is not allowed")


def _uint(value: object, name: str) -> int:
    if type(value) is not int:
        raise CodecError(f"{name} must be an unsigned integer, got {type(value).__name__}")
    if not 0 <= value <= WIRE_INTEGER_MAX:
        raise CodecError(f"{name} {value} is out of range (0..2^62-1)")
    return value


def _bool(value: object, name: str) -> bool:
    if type(value) is not bool:
        raise CodecError(f"{name} must be a boolean, got {type(value).__name__}")
    return value


def _bytes(value: object, name: str) -> bytes:
    if type(value) is not bytes:
        raise CodecError(f"{name} must be bytes, got {type(value).__name__}")
    return value


def _node_id(value: object, name: str) -> str:
    if not is_valid_node_id(value):
        raise CodecError(f"{name} is not a valid node id")
    return value


def _node_set(value: object, name: str) -> frozenset[str]:
    if type(value) is not list:
        raise CodecError(f"{name} must be an array")
    nodes = frozenset(_node_id(node, name) for node in value)
    if len(nodes) != len(value):
        raise CodecError(f"{name} lists a node twice")
    return nodes


def _entries(value: object) -> tuple[Entry, ...]:
    """The entries of an APPEND, checked field by field across all of them at once: a pass per
    check over every entry (map, zip, set, min, max: loops in C) instead of a Python loop that
    makes every check on every entry, most of the decode of a busy follower. The checks are
    those of _checked_entries, which names the first bad entry when any of them fails."""
    if type(value) is not list:
        raise CodecError("entries must be an array")
    if not value:
        return ()
    if set(map(type, value)) == _LIST_TYPE and set(map(len, value)) == _ENTRY_FIELD_COUNTS:
        terms, indexes, kinds, datas = zip(*value)
        first_index = indexes[0]
        count = len(indexes)
        if (
            set(map(type, terms)) == _INT_TYPE and set(map(type, indexes)) == _INT_TYPE
            and set(map(type, kinds)) == _INT_TYPE and set(map(type, datas)) == _BYTES_TYPE
            and min(terms) >= 0 and max(terms) <= WIRE_INTEGER_MAX
            and 0 <= first_index and first_index + count - 1 <= WIRE_INTEGER_MAX
            and indexes == tuple(range(first_index, first_index + count))  # consecutive
            and _ENTRY_KIND_VALUES.issuperset(kinds)
        ):
            # tuple.__new__ per entry, called from C (see _new_tuple): no Python frame per entry.
            return tuple(map(_new_tuple, repeat(Entry), zip(terms, indexes, map(_ENTRY_KINDS.__getitem__, kinds), datas)))
    return _checked_entries(value)


def _checked_entries(value: list) -> tuple[Entry, ...]:
    """The entries checked one by one, in order: the first bad one is named."""
    entries = []
    for fields in value:
        if type(fields) is not list or len(fields) != ENTRY_FIELDS:
            raise CodecError(f"an entry must be an array of {ENTRY_FIELDS} fields")
        term, index, kind, data = fields
        kind_value = _ENTRY_KINDS.get(kind) if type(kind) is int else None
        if kind_value is None:
            raise CodecError(f"unknown entry kind {kind!r}")
        entry = Entry(_uint(term, "entry term"), _uint(index, "entry index"), kind_value, _bytes(data, "entry data"))
        if entries and entry.index != entries[-1].index + 1:
            raise CodecError("entries must have consecutive indexes")
        entries.append(entry)
    return tuple(entries)


def _snapshot_meta(value: object) -> SnapshotMeta | None:
    if value is None:
        return None
    if type(value) is not list or len(value) != SNAPSHOT_META_FIELDS:
        raise CodecError(f"snapshot meta must be nil or an array of {SNAPSHOT_META_FIELDS} fields")
    index, term, conf, size_bytes = value
    if type(conf) is not list or len(conf) != CONF_STATE_FIELDS:
        raise CodecError(f"conf state must be an array of {CONF_STATE_FIELDS} fields")
    voters, voters_outgoing, learners = conf
    conf_state = ConfState(
        voters=_node_set(voters, "voters"),
        voters_outgoing=_node_set(voters_outgoing, "voters_outgoing"),
        learners=_node_set(learners, "learners"),
    )
    if not conf_state.voters:
        raise CodecError("a snapshot's membership has no voters")
    if conf_state.voters & conf_state.learners:
        raise CodecError("a snapshot's membership lists a node as voter and learner")
    return SnapshotMeta(
        index=_uint(index, "snapshot index"),
        term=_uint(term, "snapshot term"),
        conf_state=conf_state,
        size_bytes=_uint(size_bytes, "snapshot size_bytes"),
    )


def _message(value: list) -> Message:
    if len(value) == RAFT_FRAME_FIELDS_WITHOUT_PROMISED_TERM:
        value = [*value, 0]
    if len(value) != RAFT_FRAME_FIELDS:
        raise CodecError(f"a raft frame must have {RAFT_FRAME_FIELDS} fields, got {len(value)}")
    (_, _, kind, source, target, term, log_term, index, entries, commit, reject,
     reject_hint_index, reject_hint_term, context, snapshot_meta,
     snapshot_offset, snapshot_data, snapshot_done, promised_term) = value
    # Every message but a snapshot chunk: the checks of _checked_message, made at once (a
    # call per field was most of the decode; the number fields are checked together, in C).
    # Only the entries are left to _entries; any other field that fails takes
    # _checked_message, which names it.
    numbers = (term, log_term, index, commit, reject_hint_index, reject_hint_term, snapshot_offset, promised_term)
    if (
        set(map(type, numbers)) == _INT_TYPE and min(numbers) >= 0 and max(numbers) <= WIRE_INTEGER_MAX
        and type(kind) is int and kind in _MESSAGE_KINDS
        and is_valid_node_id(source) and is_valid_node_id(target)
        and type(reject) is bool and type(snapshot_done) is bool
        and type(context) is bytes and type(snapshot_data) is bytes
        and snapshot_meta is None
    ):
        # tuple.__new__: the NamedTuple's own __new__ is a Python function that only calls it.
        return _new_tuple(Message, (
            _MESSAGE_KINDS[kind], source, target, term, log_term, index,
            () if type(entries) is list and not entries else _entries(entries),
            commit, reject, reject_hint_index, reject_hint_term, context, None, snapshot_offset, snapshot_data,
            snapshot_done, promised_term,
        ))
    return _checked_message(value)


def _checked_message(value: list) -> Message:
    """A Raft frame's fields checked one by one, in order: the first that fails is named."""
    (_, _, kind, source, target, term, log_term, index, entries, commit, reject,
     reject_hint_index, reject_hint_term, context, snapshot_meta,
     snapshot_offset, snapshot_data, snapshot_done, promised_term) = value
    kind_value = _MESSAGE_KINDS.get(kind) if type(kind) is int else None
    if kind_value is None:
        raise CodecError(f"unknown message kind {kind!r}")
    message = Message(
        kind=kind_value,
        source=_node_id(source, "source"),
        target=_node_id(target, "target"),
        term=_uint(term, "term"),
        log_term=_uint(log_term, "log_term"),
        index=_uint(index, "index"),
        entries=_entries(entries),
        commit=_uint(commit, "commit"),
        reject=_bool(reject, "reject"),
        reject_hint_index=_uint(reject_hint_index, "reject_hint_index"),
        reject_hint_term=_uint(reject_hint_term, "reject_hint_term"),
        context=_bytes(context, "context"),
        snapshot_meta=_snapshot_meta(snapshot_meta),
        snapshot_offset=_uint(snapshot_offset, "snapshot_offset"),
        snapshot_data=_bytes(snapshot_data, "snapshot_data"),
        snapshot_done=_bool(snapshot_done, "snapshot_done"),
        promised_term=_uint(promised_term, "promised_term"),
    )
    meta = message.snapshot_meta
    if meta is not None and message.snapshot_offset + len(message.snapshot_data) > meta.size_bytes:
        raise CodecError("snapshot data runs past the snapshot's announced size_bytes")
    return message


def _check_plain(value: object, depth: int) -> None:
    """Forwarded payloads hold only plain msgpack values, nested at most FORWARD_DEPTH_MAX."""
    if depth > FORWARD_DEPTH_MAX:
        raise CodecError(f"forwarded payload nested deeper than {FORWARD_DEPTH_MAX}")
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise CodecError("forwarded payload map keys must be strings")
            _check_plain(item, depth + 1)
    elif kind is list:
        for item in value:
            _check_plain(item, depth + 1)
    elif value is not None and kind not in (bool, int, float, str, bytes):
        raise CodecError(f"forwarded payload holds a {kind.__name__}")


def _forward(value: list) -> dict:
    if len(value) != 3 or type(value[2]) is not dict:
        raise CodecError("a forward frame must be [version, kind, map]")
    payload = value[2]
    _check_plain(payload, 0)
    return payload


def decode_message(frame: bytes, frame_bytes_max: int) -> Message:
    """A Raft frame -> Message, or CodecError (a forward frame is an error here too)."""
    value = _unpack(frame, frame_bytes_max)
    if value[1] != FRAME_RAFT or type(value[1]) is not int:
        raise CodecError(f"expected a raft frame, got frame kind {value[1]!r}")
    return _message(value)


def decode_peer_frame(frame: bytes, frame_bytes_max: int) -> tuple[str, Message | dict]:
    """Any peer frame -> ("raft", Message) or ("forward", dict), or CodecError."""
    value = _unpack(frame, frame_bytes_max)
    frame_kind = value[1]
    if type(frame_kind) is int and frame_kind == FRAME_RAFT:
        return "raft", _message(value)
    if type(frame_kind) is int and frame_kind == FRAME_FORWARD:
        return "forward", _forward(value)
    raise CodecError(f"unknown frame kind {frame_kind!r}")
