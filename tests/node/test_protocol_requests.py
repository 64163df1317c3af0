"""The client port's request checks (protocol.validate_request) and reply encoding: every
malformed request gets its own BAD_REQUEST sentence, and replies are the documented msgpack
maps, byte for byte."""

from __future__ import annotations

import msgpack
import pytest

from node import protocol
from node.errors import BadRequest, NotLeader

VALID = {"v": 1, "id": 7, "op": "read", "args": {"path": "/a/f", "stale": True}}


@pytest.mark.parametrize(("request_", "message"), [
    ([1, 2], "a request must be a map"),
    ({**VALID, "v": 2}, "unsupported protocol version 2 (this node speaks 1)"),
    ({key: value for key, value in VALID.items() if key != "v"}, "unsupported protocol version None"),
    ({**VALID, "id": True}, "request id must be an integer"),
    ({**VALID, "id": "7"}, "request id must be an integer"),
    ({**VALID, "id": 1.0}, "request id must be an integer"),
    ({**VALID, "extra": 1}, "unknown request field 'extra'"),
    ({**VALID, "op": "format_disk"}, "unknown op 'format_disk'"),
    ({**VALID, "op": ["read"]}, "unknown op ['read']"),
    ({**VALID, "op": None}, "unknown op None"),
    ({**VALID, "args": [1]}, "args must be a map"),
    ({**VALID, "args": {"path": 1}}, "argument 'path' must be str, got int"),
    ({**VALID, "args": {}}, "missing argument 'path' for read"),
])
def test_each_malformed_request_gets_its_error(request_, message) -> None:
    with pytest.raises(BadRequest) as raised:
        protocol.validate_request(request_)
    assert str(raised.value).startswith(message)


def test_a_valid_request_gives_its_id_op_and_a_copy_of_its_args() -> None:
    class Id(int):
        pass

    for request in (VALID, {**VALID, "id": Id(7)}, {key: value for key, value in VALID.items() if key != "args"}
                    | {"op": "ping"}):
        request_id, op, args = protocol.validate_request(request)
        assert (request_id, op) == (7, request["op"])
        assert args == request.get("args", {}) and args is not request.get("args")


def test_replies_are_the_documented_maps_byte_for_byte() -> None:
    result = {"path": "/a/f", "type": "file", "size": 3, "mode": 0o644, "mtime_ns": 5, "inline": True, "data": b"abc"}
    assert protocol.reply_ok(7, result) == msgpack.packb({"v": 1, "id": 7, "ok": True, "result": result},
                                                         use_bin_type=True)
    error = NotLeader("not the leader", "n2")
    assert protocol.reply_error(8, error) == msgpack.packb(
        {"v": 1, "id": 8, "ok": False, "error": {"code": error.code, "message": "not the leader", "leader": "n2"}},
        use_bin_type=True)
