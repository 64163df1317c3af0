"""validate_args remembers the argument names and exact types it found valid: a call like one
seen before passes its type checks by one lookup. The memory never weakens a check: other
types, a missing or unknown argument, values client and seq refuse, another schema for the
same op, a bool for an int: each still gets its own named error."""

from __future__ import annotations

import pytest

from node import protocol
from node.errors import BadRequest

SCHEMA = {"path": "str", "size": "int?", "client": "str", "seq": "int"}


class Label(str):
    pass


@pytest.fixture(autouse=True)
def empty_memory(monkeypatch):
    monkeypatch.setattr(protocol, "_VALID_SIGNATURES", {})


def test_a_call_like_a_valid_one_passes_and_one_unlike_it_gets_its_error():
    valid = {"path": "/a", "size": 3, "client": "c1", "seq": 1}
    assert protocol.validate_args("op", valid, SCHEMA) == valid
    assert len(protocol._VALID_SIGNATURES) == 1
    again = {"path": "/b", "size": 4, "client": "c1", "seq": 2}
    checked = protocol.validate_args("op", again, SCHEMA)
    assert checked == again and checked is not again
    for args, message in [
        ({"path": 5, "size": 3, "client": "c1", "seq": 1}, "argument 'path' must be str, got int"),
        ({"path": "/a", "size": True, "client": "c1", "seq": 1}, "argument 'size' must be int, got bool"),
        ({"path": "/a", "size": 3, "client": "c1"}, "missing argument 'seq' for op"),
        ({"path": "/a", "size": 3, "client": "c1", "seq": 1, "x": 1}, "unknown argument 'x' for op"),
        ({"path": "/a", "size": 3, "client": "c1", "seq": 0}, "seq must be positive"),
        ({"path": "/a", "size": 3, "client": "c" * 65, "seq": 1}, "client id must be 1 to 64 bytes"),
    ]:
        with pytest.raises(BadRequest, match=message):
            protocol.validate_args("op", args, SCHEMA)


def test_none_values_are_dropped_and_never_remembered():
    args = {"path": "/a", "size": None, "client": "c1", "seq": 1}
    assert protocol.validate_args("op", args, SCHEMA) == {"path": "/a", "client": "c1", "seq": 1}
    assert protocol.validate_args("op", args, SCHEMA) == {"path": "/a", "client": "c1", "seq": 1}
    assert protocol._VALID_SIGNATURES == {}


def test_another_schema_for_the_same_op_checks_in_full():
    protocol.validate_args("op", {"path": "/a", "client": "c1", "seq": 1}, SCHEMA)
    stricter = {"path": "int", "client": "str", "seq": "int"}
    with pytest.raises(BadRequest, match="argument 'path' must be int, got str"):
        protocol.validate_args("op", {"path": "/a", "client": "c1", "seq": 1}, stricter)


def test_a_subclass_is_checked_in_full_then_remembered_as_itself():
    args = {"path": Label("/a"), "client": "c1", "seq": 1}
    assert protocol.validate_args("op", args, SCHEMA) == args
    assert ("op", "path", "client", "seq", Label, str, int) in protocol._VALID_SIGNATURES


def test_the_memory_is_bounded(monkeypatch):
    monkeypatch.setattr(protocol, "VALID_SIGNATURES_MAX", 2)
    schema = {name: "int?" for name in "abcd"}
    for name in "abcd":
        protocol.validate_args("op", {name: 1}, schema)
    assert len(protocol._VALID_SIGNATURES) == 2
    with pytest.raises(BadRequest, match="argument 'd' must be int, got str"):
        protocol.validate_args("op", {"d": "x"}, schema)
