"""Write commands: validated when proposed and again when decoded from the log."""

from __future__ import annotations

import msgpack
import pytest

from node.errors import BadRequest, InvalidPath
from node.metadata.commands import Command, decode_command, encode_command, new_command
from node.protocol import OPS, validate_args

CHUNK = [b"c" * 32, 10, ["n1", "n2"]]


def test_round_trip_normalises_paths_and_fills_defaults():
    data = encode_command("mkdir", {"path": "//a/b/", "client": "c1", "seq": 7}, now_ns=123)
    assert decode_command(data) == Command(
        op="mkdir", args={"path": "/a/b", "parents": False, "mode": 0o755}, client="c1", seq=7, now_ns=123
    )
    data = encode_command("write_file", {"path": "/f", "chunks": [CHUNK, CHUNK], "size": 20, "client": "c1", "seq": 8}, 5)
    # Every argument of the op, in schema order; None for an absent one without a default.
    assert list(decode_command(data).args.items()) == [
        ("path", "/f"), ("data", None), ("chunks", [CHUNK, CHUNK]), ("size", 20), ("mode", 0o644),
        ("parents", False), ("into_directory", None), ("overwrite", True)]
    data = encode_command("mv", {"src": "/a", "dst": "/b/", "client": "c1", "seq": 9}, 5)
    assert decode_command(data).args == {"src": "/a", "dst": "/b", "overwrite": True}


@pytest.mark.parametrize(
    "op, args",
    [
        ("mkdir", {"path": "//a/b/", "parents": True, "client": "c1", "seq": 1}),
        ("write_file", {"path": "/d/", "data": b"xyz", "size": 3, "into_directory": "f", "overwrite": False,
                        "client": "c1", "seq": 2}),
        ("write_file", {"path": "/f", "chunks": [tuple(CHUNK), CHUNK], "size": 20, "mode": 0o600, "client": "c1", "seq": 3}),
        ("rm", {"path": "/a/", "recursive": True, "client": "c1", "seq": 4}),
        ("mv", {"src": "/a", "dst": "/b/", "overwrite": False, "client": "c1", "seq": 5}),
    ],
)
def test_the_proposers_command_is_the_one_every_node_decodes(op, args):
    # The proposer applies the Command it built (decoded once); every other node decodes the
    # log entry's bytes: both must apply the same thing, or the replicas would diverge.
    for built in (new_command(op, dict(args), 77), new_command(op, validate_args(op, dict(args), OPS[op]), 77,
                                                               args_validated=True)):
        assert decode_command(built.encode()) == built
        assert decode_command(built.encode()).encode() == built.encode()


@pytest.mark.parametrize(
    "op, args, message",
    [
        ("ls", {"path": "/"}, "unknown write op"),
        ("mkdir", {"path": "/a", "client": "c"}, "missing argument 'seq'"),
        ("mkdir", {"path": "/a", "client": "c", "seq": 1, "extra": 1}, "unknown argument"),
        ("mkdir", {"path": "/a", "client": "c", "seq": 1, "mode": 0o10000}, "permission mode"),
        ("write_file", {"path": "/f", "size": 1, "client": "c", "seq": 1}, "exactly one"),
        ("write_file", {"path": "/f", "size": 1, "data": b"x", "chunks": [], "client": "c", "seq": 1}, "exactly one"),
        ("write_file", {"path": "/f", "size": 2, "data": b"x", "client": "c", "seq": 1}, "size says 2"),
        ("write_file", {"path": "/f", "size": 11, "chunks": [CHUNK], "client": "c", "seq": 1}, "size says 11"),
        ("write_file", {"path": "/f", "size": 10, "chunks": [[b"short", 10, ["n1"]]], "client": "c", "seq": 1}, "32 bytes"),
        ("write_file", {"path": "/f", "size": 10, "chunks": [[b"c" * 32, 10, []]], "client": "c", "seq": 1}, "replica"),
        ("write_file", {"path": "/f", "size": -1, "data": b"", "client": "c", "seq": 1}, "negative"),
        ("write_file", {"path": "/f", "size": 0, "data": b"", "overwrite": 1, "client": "c", "seq": 1}, "must be bool"),
        ("mv", {"src": "/a", "dst": "/b", "overwrite": "no", "client": "c", "seq": 1}, "must be bool"),
    ],
)
def test_invalid_commands_are_refused_when_encoded(op, args, message):
    with pytest.raises(BadRequest, match=message):
        encode_command(op, args, now_ns=1)


@pytest.mark.parametrize("name", ["", "a/b", "/a", ".", "..", "x" * 256, "nul\0"])
def test_into_directory_must_be_one_file_name(name):
    with pytest.raises(InvalidPath):
        encode_command("write_file", {"path": "/d", "data": b"", "size": 0, "into_directory": name,
                                      "client": "c", "seq": 1}, now_ns=1)


def test_invalid_path_is_refused_when_encoded():
    with pytest.raises(InvalidPath):
        encode_command("rm", {"path": "/a/../b", "client": "c", "seq": 1}, now_ns=1)


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1garbage",
        msgpack.packb({"not": "a list"}),
        msgpack.packb([2, "mkdir", {"path": "/a", "client": "c", "seq": 1}, 1]),
        msgpack.packb([3, "mkdir", "c", 1, 1, ["/a", False, 0o755]]),
        msgpack.packb([True, "mkdir", "c", 1, 1, ["/a", False, 0o755]]),
        msgpack.packb([]),
        msgpack.packb([2, "mkdir", "c", 1, 1, ["/a", False]]),  # an argument short
        msgpack.packb([2, "mkdir", "c", 1, 1, ["/a", False, 0o755, None]]),  # one too many
        msgpack.packb([2, "mkdir", "c", 1, 1, {"path": "/a"}]),
        msgpack.packb([2, "mkdir", "c", 1, 1, ["/a", False, 0o755], 0]),
        msgpack.packb([2, "ls", "c", 1, 1, ["/a"]]),
        msgpack.packb([2, 7, "c", 1, 1, ["/a", False, 0o755]]),
        msgpack.packb([2, "mkdir", "c", 1, 1, [None, False, 0o755]]),  # a required argument absent
        msgpack.packb([2, "mkdir", "c", 1, 1, ["/a", 1, 0o755]]),  # an int for a bool
        msgpack.packb([2, "mkdir", "c", 1, 1, ["/a", False, True]]),  # a bool for an int
        msgpack.packb([2, "mkdir", 5, 1, 1, ["/a", False, 0o755]]),
        msgpack.packb([2, "mkdir", "c", "1", 1, ["/a", False, 0o755]]),
        msgpack.packb([2, "mkdir", "c", 1, -1, ["/a", False, 0o755]]),
        msgpack.packb([2, "write_file", "c", 1, 1, ["/f", b"x", None, 1, 0o644, False, None, "yes"]]),
        msgpack.packb([2, "write_file", "c", 1, 1, ["/f", None, None, 0, 0o644, False, None, True]]),
        msgpack.packb([1, "mkdir", {"path": "/a", "client": "c", "seq": 1}, -5]),
        msgpack.packb([1, "mkdir", ["not", "a", "map"], 1]),
        msgpack.packb([1, "mkdir", {"path": "relative", "client": "c", "seq": 1}, 1]),
    ],
)
def test_malformed_log_entries_raise_named_errors(data):
    with pytest.raises((BadRequest, InvalidPath)):
        decode_command(data)


VALID_MKDIR = ["/a", False, 0o755]


@pytest.mark.parametrize("client, seq, arguments", [
    ("", 1, VALID_MKDIR), ("x" * 65, 1, VALID_MKDIR), ("c", 0, VALID_MKDIR), ("c", 1 << 62, VALID_MKDIR),
    ("c", 1, ["relative", False, 0o755]), ("c", 1, ["/a/../b", False, 0o755]), ("c", 1, ["/a", False, 0o10000]),
])
def test_a_positional_command_of_known_valid_types_still_gets_its_value_checks(client, seq, arguments):
    # The first decode of these types checks them in full and remembers the signature: the
    # values of a command with the same signature must still be checked.
    assert decode_command(msgpack.packb([2, "mkdir", "c", 1, 1, VALID_MKDIR])).args["path"] == "/a"
    with pytest.raises((BadRequest, InvalidPath)):
        decode_command(msgpack.packb([2, "mkdir", client, seq, 1, arguments]))


def test_a_version_1_entry_decodes_to_the_command_version_2_writes():
    # Logs and snapshots written before version 2 hold keyed commands: they still apply, alike.
    args = {"path": "//d/", "data": b"xyz", "size": 3, "into_directory": "f", "client": "c1", "seq": 2}
    keyed = msgpack.packb([1, "write_file", args, 77], use_bin_type=True)
    decoded = decode_command(keyed)
    assert decoded == new_command("write_file", dict(args), 77)
    assert decoded.args["path"] == "/d" and decoded.args["chunks"] is None and decoded.args["mode"] == 0o644
    assert msgpack.unpackb(decoded.encode())[0] == 2
    assert decode_command(decoded.encode()) == decoded


def test_a_positional_nil_takes_the_default():
    # A proposer always fills the defaults; nil from elsewhere decodes to them on every node.
    decoded = decode_command(msgpack.packb([2, "mkdir", "c", 1, 1, ["/a", None, None]]))
    assert decoded.args == {"path": "/a", "parents": False, "mode": 0o755}

