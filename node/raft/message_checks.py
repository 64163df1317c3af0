"""Checks of a peer's message that need no state: number ranges and the shape each kind has.

A peer may be buggy, old or hostile. Whatever it sends, step() either refuses the message with
RejectedMessage before changing anything, or handles it; it never trips an assert. The checks
that compare a message with this node's own log and role live in RaftNode._check_against_state;
these are the ones every honest sender meets whatever state the receiver is in.
"""

from __future__ import annotations

import operator

from node.raft.errors import RejectedMessage
from node.raft.types import ENTRY_KIND, MESSAGE_KIND, NO_TERM, ConfChange, Entry, Message

# Terms, indexes and byte offsets from a peer must lie below this. A term is persisted and later
# incremented; with 2^62 of headroom, term + 1 (or index + 1) always fits the signed and unsigned
# 64-bit integers of the codec and the store, so a forged huge term cannot brick a node at the
# next election. No real cluster gets anywhere near it (an election per nanosecond for a century
# is below 2^62).
NUMBER_MAX = 1 << 62

_NUMBER_FIELDS = ("term", "log_term", "index", "commit", "reject_hint_index", "reject_hint_term", "snapshot_offset",
                  "promised_term")
# The number fields in one call (a C-level tuple of the fields): every message is checked, and a
# getattr per field was most of the check.
_number_fields_of = operator.attrgetter(*_NUMBER_FIELDS)
# An Entry's fields by position (an Entry is a tuple: cheaper than the attribute's descriptor).
_term_of, _index_of, _kind_of = operator.itemgetter(0), operator.itemgetter(1), operator.itemgetter(2)
assert Entry._fields[:3] == ("term", "index", "kind")
_LEADER_KINDS = frozenset({MESSAGE_KIND.APPEND, MESSAGE_KIND.HEARTBEAT, MESSAGE_KIND.INSTALL_SNAPSHOT})
_LOG_POSITION_KINDS = frozenset({MESSAGE_KIND.VOTE, MESSAGE_KIND.PRE_VOTE, MESSAGE_KIND.APPEND})  # log_term: a sent entry


def check_shape(message: Message) -> None:
    """Raise RejectedMessage unless `message` is well formed for its kind."""
    numbers = _number_fields_of(message)
    if min(numbers) < 0 or max(numbers) >= NUMBER_MAX:  # (in C: cheaper than a Python loop over the fields)
        for name, field_value in zip(_NUMBER_FIELDS, numbers):
            if not 0 <= field_value < NUMBER_MAX:
                raise RejectedMessage(message, f"{name} {field_value} is outside [0, 2^62)")
    if message.kind in _LEADER_KINDS and message.term == NO_TERM:
        raise RejectedMessage(message, "no leader exists in term 0")
    if message.kind in _LOG_POSITION_KINDS and message.log_term > message.term:
        raise RejectedMessage(message, f"log_term {message.log_term} is beyond the message's term")
    if message.kind == MESSAGE_KIND.APPEND:
        _check_entries(message)
    elif message.kind == MESSAGE_KIND.INSTALL_SNAPSHOT:
        _check_snapshot_chunk(message)
    elif message.kind == MESSAGE_KIND.APPEND_RESPONSE and message.reject:
        if message.reject_hint_index > message.index:
            raise RejectedMessage(message, f"hint {message.reject_hint_index} is beyond the rejected index")
    elif message.kind == MESSAGE_KIND.READ_INDEX and not message.context:
        raise RejectedMessage(message, "a read needs a non-empty context")


def _check_entries(message: Message) -> None:
    """Entries follow the previous entry (message.index) without a gap, with terms that never
    decrease, never precede the previous entry's term and never exceed the leader's term.
    Checked across all entries at once (map, sorted, ==: loops in C, not a Python loop per
    entry); the loop of _check_each_entry names the first bad one, and decodes membership
    changes."""
    entries = message.entries
    if not entries:
        return
    first_index = message.index + 1
    terms = list(map(_term_of, entries))
    if (
        list(map(_index_of, entries)) == list(range(first_index, first_index + len(entries)))
        and message.log_term <= terms[0] and terms[-1] <= message.term
        and terms == sorted(terms)  # never decreasing
        and first_index + len(entries) - 1 < NUMBER_MAX
        and ENTRY_KIND.CONF_CHANGE not in map(_kind_of, entries)
    ):
        return
    _check_each_entry(message)


def _check_each_entry(message: Message) -> None:
    previous_index, previous_term = message.index, message.log_term
    for entry in message.entries:
        if entry.index != previous_index + 1:
            raise RejectedMessage(message, f"entry {entry.index} does not follow {previous_index}")
        if not previous_term <= entry.term <= message.term:
            raise RejectedMessage(message, f"entry {entry.index} has term {entry.term} after {previous_term}")
        if entry.kind == ENTRY_KIND.CONF_CHANGE:
            _check_conf_change(message, entry.index, entry.data)
        previous_index, previous_term = entry.index, entry.term
    if previous_index >= NUMBER_MAX:
        raise RejectedMessage(message, f"entry index {previous_index} is outside [0, 2^62)")


def _check_conf_change(message: Message, index: int, data: bytes) -> None:
    """A membership change must at least decode: it is decoded again when applied, where a
    failure would be a broken invariant (whether it applies is checked by the leader when it
    is proposed, against the configuration it will apply to)."""
    try:
        change = ConfChange.decode(data)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
        raise RejectedMessage(message, f"entry {index} is not a membership change: {error}") from None
    if not all(isinstance(step.node, str) for step in change.steps):
        raise RejectedMessage(message, f"entry {index} names a node that is not a string")


def _check_snapshot_chunk(message: Message) -> None:
    meta = message.snapshot_meta
    if meta is None:
        raise RejectedMessage(message, "INSTALL_SNAPSHOT without snapshot_meta")
    if not 0 < meta.index < NUMBER_MAX or not 0 < meta.term <= message.term:
        raise RejectedMessage(message, f"snapshot at index {meta.index} of term {meta.term} is impossible")
    conf_state = meta.conf_state
    if not conf_state.voters:
        raise RejectedMessage(message, "snapshot membership has no voters")
    if conf_state.voters & conf_state.learners:
        raise RejectedMessage(message, f"snapshot voters and learners overlap: {sorted(conf_state.voters & conf_state.learners)}")
    if not 0 <= meta.size_bytes < NUMBER_MAX:
        raise RejectedMessage(message, f"snapshot size {meta.size_bytes} is outside [0, 2^62)")
    chunk_end = message.snapshot_offset + len(message.snapshot_data)
    if chunk_end > meta.size_bytes:
        raise RejectedMessage(message, f"chunk ends at byte {chunk_end}, beyond the announced size {meta.size_bytes}")
    if message.snapshot_done and chunk_end != meta.size_bytes:
        raise RejectedMessage(message, f"last chunk ends at byte {chunk_end}, short of the size {meta.size_bytes}")
