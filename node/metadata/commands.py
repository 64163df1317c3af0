"""Write commands as they travel through the Raft log.

The proposer builds a validated Command from a write request with the time it stamps (now_ns)
and encodes it for the log; every other node decodes and validates the entry's bytes once,
before applying them: a log entry is bytes from a peer, and a malformed one must become an
error result, never a crash. Each node decodes a command at most once and passes the Command
along (the driver keeps the proposer's own, apply and the server's callback share it), so no
cache of decoded commands is needed. A Command has one shape, whoever built it: every
argument of its op (client and seq aside) in schema order, paths normalised, optional
arguments filled with their defaults or None when they have none; so decode_command(
command.encode()) equals command, and the proposer applies the very Command that the others
decode.

Encoding (pinned), written as version 2: msgpack [2, op, client, seq, now_ns, arguments], the
arguments being Command.args' values, in schema order (nil when absent). Positional, as the
peer codec's frames are: every follower unpacks every command, and the key strings of a map
were most of the cost of unpacking one. Version 1, a map (msgpack [1, op, args including
client and seq, now_ns]), is still read: logs and snapshots written before hold it.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import msgpack

from node.chunk_ids import CHUNK_ID_BYTES
from node.errors import BadRequest
from node.metadata.paths import file_name, normalize_path
from node.metadata.replicas import check_node_id
from node.metadata.sessions import SEQ_MAX
from node.packing import packb
from node.protocol import CLIENT_ID_BYTES_MAX, COMMAND_OPS, validate_args

COMMAND_VERSION = 2
COMMAND_VERSION_KEYED = 1  # arguments in a map: read, no longer written
_FIELDS = 6  # version, op, client, seq, now_ns, arguments
_FIELDS_KEYED = 4  # version, op, args, now_ns
MODE_MAX = 0o7777
DEFAULT_DIRECTORY_MODE = 0o755
DEFAULT_FILE_MODE = 0o644

_DEFAULTS: dict[str, dict[str, object]] = {
    "mkdir": {"parents": False, "mode": DEFAULT_DIRECTORY_MODE},
    "write_file": {"parents": False, "mode": DEFAULT_FILE_MODE, "overwrite": True},
    "rm": {"recursive": False},
    "mv": {"overwrite": True},
    "add_replica": {},  # replica bookkeeping (node/metadata/replicas.py)
    "drop_replica": {},
}
_SESSION_ARGUMENTS = ("client", "seq")
_PATH_ARGUMENTS = ("path", "src", "dst")

assert set(_DEFAULTS) == set(COMMAND_OPS), "every command op needs its defaults listed"
# Command.args' names, in schema order: the positions of a version 2 command's arguments.
_ARGUMENT_NAMES: dict[str, tuple[str, ...]] = {
    op: tuple(name for name in schema if name not in _SESSION_ARGUMENTS) for op, schema in COMMAND_OPS.items()
}
# Every argument None, then the defaults: what a command's args start from (dicts keep the
# order of their first keys, so args built on it are in schema order).
_UNFILLED: dict[str, dict[str, object]] = {
    op: {**dict.fromkeys(names), **_DEFAULTS[op]} for op, names in _ARGUMENT_NAMES.items()
}
# The path arguments each op takes (normalised once, when the command is built or decoded).
_PATHS_OF: dict[str, tuple[str, ...]] = {
    op: tuple(name for name in _PATH_ARGUMENTS if name in schema) for op, schema in COMMAND_OPS.items()
}
assert all(set(defaults) <= set(_ARGUMENT_NAMES[op]) for op, defaults in _DEFAULTS.items())
# Every signature (the exact types of the arguments, by position) of a version 2 command whose
# arguments pass validate_args' type checks: each argument of the type its schema names, or
# NoneType where it is optional (at most 96 signatures an op). msgpack decodes to exactly
# these types (no subclass), so a decoded command of another signature is not valid as it is:
# it then goes through validate_args, which refuses it with its message.
# Each signature maps to the (name, default) of the arguments it leaves nil that have a
# default, to fill in: known with the signature, so a decode does not look at each position
# that has one (a proposer fills them all: usually none is left).
_EXACT_TYPES = {"str": (str,), "int": (int,), "bool": (bool,), "bytes": (bytes,), "list": (list, tuple)}


def _defaults_left_nil(op: str, signature: tuple[type, ...]) -> tuple[tuple[str, object], ...]:
    return tuple((name, _DEFAULTS[op][name]) for name, kind in zip(_ARGUMENT_NAMES[op], signature)
                 if kind is type(None) and name in _DEFAULTS[op])


_VALID_SIGNATURES: dict[str, dict[tuple[type, ...], tuple[tuple[str, object], ...]]] = {
    op: {signature: _defaults_left_nil(op, signature) for signature in itertools.product(*(
        _EXACT_TYPES[COMMAND_OPS[op][name].rstrip("?")] + ((type(None),) if COMMAND_OPS[op][name].endswith("?") else ())
        for name in names))}
    for op, names in _ARGUMENT_NAMES.items()
}
# _decoded_positional checks client and seq itself, as validate_args does: a str and an int.
assert all((COMMAND_OPS[op]["client"], COMMAND_OPS[op]["seq"]) == ("str", "int") for op in COMMAND_OPS)
assert all(list(_UNFILLED[op]) == list(names) for op, names in _ARGUMENT_NAMES.items())


class Command(NamedTuple):
    """A validated write. A NamedTuple (immutable like a frozen dataclass, several times cheaper
    to build): one is built per proposed write and per entry a follower applies."""

    op: str
    args: dict  # every argument of op (see the module docstring), without client and seq. Read-only: shared
    client: str
    seq: int
    now_ns: int

    def encode(self) -> bytes:
        """The log entry's bytes (pinned: msgpack [2, op, client, seq, now_ns, arguments])."""
        op, args, client, seq, now_ns = self  # one unpacking: each field read by name is a descriptor call
        return packb([COMMAND_VERSION, op, client, seq, now_ns, [*args.values()]])

    def describe(self) -> dict:
        """A readable summary for `sandctl inspect log` (inline data shown by its size only)."""
        args = {name: value for name, value in self.args.items() if name != "data" and value is not None}
        if self.args.get("data") is not None:
            args["data_bytes"] = len(self.args["data"])
        if "chunks" in args:
            args["chunks"] = [[chunk_id.hex(), size, replicas] for chunk_id, size, replicas in args["chunks"]]
        return {"op": self.op, **args, "client": self.client, "seq": self.seq, "now_ns": self.now_ns}


assert Command._fields == ("op", "args", "client", "seq", "now_ns")
_new_tuple = tuple.__new__


def new_command(op: str, args: dict, now_ns: int, *, args_validated: bool = False) -> Command:
    """Validate a write; raises BadRequest / InvalidPath before anything is proposed.
    args_validated: args is what protocol.validate_args returned for this op's WRITE_OPS schema
    (the server's request validation), so the per-argument type checks are not repeated; paths,
    defaults, mode and content are checked here all the same."""
    if not isinstance(op, str) or op not in COMMAND_OPS:
        raise BadRequest(f"unknown write op {op!r}")
    if not args_validated:
        args = validate_args(op, args, COMMAND_OPS[op])
    checked = {**_UNFILLED[op], **args}  # a copy: the caller's args stay as they are
    client = checked.pop("client")
    seq = checked.pop("seq")
    return _checked(op, checked, client, seq, now_ns)


def encode_command(op: str, args: dict, now_ns: int, *, args_validated: bool = False) -> bytes:
    """new_command(...).encode(): for proposers that do not keep the Command."""
    return new_command(op, args, now_ns, args_validated=args_validated).encode()


def decode_command(data: bytes) -> Command:
    """Decode and validate a log entry's command; raises BadRequest / InvalidPath."""
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as error:  # msgpack raises several unrelated types for garbage
        raise BadRequest(f"undecodable command: {type(error).__name__}") from None
    if type(value) is not list or not value:
        raise BadRequest("a command must be an array")
    version = value[0]
    if version == COMMAND_VERSION and type(version) is int:
        if len(value) != _FIELDS:
            raise BadRequest(f"a version {COMMAND_VERSION} command must be a {_FIELDS}-element array")
        _, op, client, seq, now_ns, arguments = value
        return _decoded_positional(op, client, seq, now_ns, arguments)
    if version == COMMAND_VERSION_KEYED and type(version) is int:
        if len(value) != _FIELDS_KEYED:
            raise BadRequest(f"a version {COMMAND_VERSION_KEYED} command must be a {_FIELDS_KEYED}-element array")
        _, op, args, now_ns = value
        return new_command(op, args, now_ns)
    raise BadRequest(f"unsupported command version {version!r} (this node applies {COMMAND_VERSION_KEYED} "
                     f"and {COMMAND_VERSION})")


def _decoded_positional(op: object, client: object, seq: object, now_ns: object, arguments: object) -> Command:
    """A version 2 command: its arguments named by position (nil: absent). Arguments of the
    types the op takes, with valid client and seq (what every proposer writes), are checked
    where they stand, by their positions' types; anything else takes new_command's path from
    a keyed dict, whose validate_args refuses it with its message. Then the value checks
    (_checked), alike on both paths."""
    names = _ARGUMENT_NAMES.get(op) if type(op) is str else None
    if names is None:
        raise BadRequest(f"unknown write op {op!r}")
    if type(arguments) is not list or len(arguments) != len(names):
        raise BadRequest(f"{op} takes {len(names)} arguments, by position")
    # A follower decodes every entry that the leader validated: building a keyed dict and
    # passing it through validate_args (and new_command's copies) was most of decoding one
    # (~20% of a follower's loop at 64 writes outstanding). Client and seq as validate_args
    # checks them (tests/metadata/test_positional_decode.py keeps the two paths alike).
    nil_defaults = None
    if type(client) is str and type(seq) is int and seq > 0 and 0 < len(client.encode()) <= CLIENT_ID_BYTES_MAX:
        nil_defaults = _VALID_SIGNATURES[op].get(tuple(map(type, arguments)))  # None: not a valid signature
    if nil_defaults is not None:
        checked = dict(zip(names, arguments))
        for name, default in nil_defaults:  # (a proposer fills them: usually none)
            checked[name] = default
        return _checked(op, checked, client, seq, now_ns)
    args = {name: argument for name, argument in zip(names, arguments) if argument is not None}
    args["client"] = client
    args["seq"] = seq
    return new_command(op, args, now_ns)


def _checked(op: str, checked: dict, client: str, seq: int, now_ns: object) -> Command:
    """The checks beyond the argument types, on `checked` (every argument of op: None when
    absent, defaults filled, in schema order, all of the schema's types; client and seq
    apart). Normalises its paths in place."""
    if isinstance(now_ns, bool) or not isinstance(now_ns, int) or now_ns < 0:
        raise BadRequest("a command's time stamp must be a non-negative integer of nanoseconds")
    if seq >= SEQ_MAX:  # a session stores it in 8 bytes below 2**62 (sessions.py)
        raise BadRequest(f"seq must be below 2**62, got {seq}")
    for name in _PATHS_OF[op]:
        checked[name] = normalize_path(checked[name])
    if checked.get("into_directory") is not None:
        checked["into_directory"] = file_name(checked["into_directory"])
    mode = checked.get("mode")
    if mode is not None and not 0 <= mode <= MODE_MAX:
        raise BadRequest(f"mode {mode:o} is not a permission mode (0 to 7777 octal)")
    if op == "write_file":
        _check_content(checked)
    elif "chunk" in checked:  # add_replica, drop_replica
        _check_replica_change(checked)
    # tuple.__new__, in the field order asserted below the class: the NamedTuple's __new__ is
    # a Python call, and a command is built per proposed write and per entry a follower applies.
    return _new_tuple(Command, (op, checked, client, seq, now_ns))


def _check_content(args: dict) -> None:
    """write_file carries exactly one of inline data or a chunk list, adding up to size."""
    size = args["size"]
    if size < 0:
        raise BadRequest(f"size must not be negative, got {size}")
    if (args["data"] is None) == (args["chunks"] is None):
        raise BadRequest("write_file needs exactly one of data or chunks")
    if args["data"] is not None:
        if len(args["data"]) != size:
            raise BadRequest(f"inline data is {len(args['data'])} bytes but size says {size}")
        return
    args["chunks"] = [_checked_chunk(chunk) for chunk in args["chunks"]]
    chunk_bytes = sum(chunk[1] for chunk in args["chunks"])
    if chunk_bytes != size:
        raise BadRequest(f"chunks add up to {chunk_bytes} bytes but size says {size}")


def _check_replica_change(args: dict) -> None:
    if len(args["chunk"]) != CHUNK_ID_BYTES:
        raise BadRequest(f"a chunk id must be {CHUNK_ID_BYTES} bytes")
    check_node_id(args["node"])


def _checked_chunk(chunk: object) -> list:
    if not isinstance(chunk, (list, tuple)) or len(chunk) != 3:
        raise BadRequest("a chunk must be [id, size, replicas]")
    chunk_id, size, replicas = chunk
    if not isinstance(chunk_id, bytes) or len(chunk_id) != CHUNK_ID_BYTES:
        raise BadRequest(f"a chunk id must be {CHUNK_ID_BYTES} bytes")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise BadRequest("a chunk size must be a positive integer")
    if not isinstance(replicas, (list, tuple)) or not replicas:
        raise BadRequest("a chunk must name at least one replica")
    if not all(isinstance(node, str) and node for node in replicas):
        raise BadRequest("chunk replicas must be node ids")
    return [chunk_id, size, list(replicas)]
