"""Write commands as they travel through the Raft log.

The proposer builds a validated Command from a write request with the time it stamps (now_ns)
and encodes it for the log; every other node decodes and validates the entry's bytes once,
before applying them: a log entry is bytes from a peer, and a malformed one must become an
error result, never a crash. Each node decodes a command at most once and passes the Command
along (the driver keeps the proposer's own, apply and the server's callback share it), so no
cache of decoded commands is needed. Paths are stored normalised and optional arguments
filled with their defaults, so apply sees one shape, and decode_command(command.encode())
equals command: the proposer applies the very Command that the others decode.

Encoding (pinned): msgpack [COMMAND_VERSION, op, args including client and seq, now_ns].
"""

from __future__ import annotations

from typing import NamedTuple

import msgpack

from node.chunk_ids import CHUNK_ID_BYTES
from node.errors import BadRequest
from node.metadata.paths import file_name, normalize_path
from node.metadata.replicas import check_node_id
from node.metadata.sessions import SEQ_MAX
from node.packing import packb
from node.protocol import COMMAND_OPS, validate_args

COMMAND_VERSION = 1
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
_PATH_ARGUMENTS = ("path", "src", "dst")

assert set(_DEFAULTS) == set(COMMAND_OPS), "every command op needs its defaults listed"
# The path arguments each op takes (normalised once, when the command is built or decoded).
_PATHS_OF: dict[str, tuple[str, ...]] = {
    op: tuple(name for name in _PATH_ARGUMENTS if name in schema) for op, schema in COMMAND_OPS.items()
}


class Command(NamedTuple):
    """A validated write. A NamedTuple (immutable like a frozen dataclass, several times cheaper
    to build): one is built per proposed write and per entry a follower applies."""

    op: str
    args: dict  # validated, paths normalised, defaults filled; without client and seq. Read-only: shared
    client: str
    seq: int
    now_ns: int

    def encode(self) -> bytes:
        """The log entry's bytes (pinned: msgpack [COMMAND_VERSION, op, args with client and seq, now_ns])."""
        return packb([COMMAND_VERSION, self.op, {**self.args, "client": self.client, "seq": self.seq}, self.now_ns])

    def describe(self) -> dict:
        """A readable summary for `sandctl inspect log` (inline data shown by its size only)."""
        args = {name: value for name, value in self.args.items() if name != "data"}
        if "data" in self.args:
            args["data_bytes"] = len(self.args["data"])
        if "chunks" in args:
            args["chunks"] = [[chunk_id.hex(), size, replicas] for chunk_id, size, replicas in args["chunks"]]
        return {"op": self.op, **args, "client": self.client, "seq": self.seq, "now_ns": self.now_ns}


def new_command(op: str, args: dict, now_ns: int, *, args_validated: bool = False) -> Command:
    """Validate a write; raises BadRequest / InvalidPath before anything is proposed.
    args_validated: args is what protocol.validate_args returned for this op's WRITE_OPS schema
    (the server's request validation), so the per-argument type checks are not repeated; paths,
    defaults, mode and content are checked here all the same."""
    return _validated(op, args, now_ns, args_validated)


def encode_command(op: str, args: dict, now_ns: int, *, args_validated: bool = False) -> bytes:
    """new_command(...).encode(): for proposers that do not keep the Command."""
    return new_command(op, args, now_ns, args_validated=args_validated).encode()


def decode_command(data: bytes) -> Command:
    """Decode and validate a log entry's command; raises BadRequest / InvalidPath."""
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as error:  # msgpack raises several unrelated types for garbage
        raise BadRequest(f"undecodable command: {type(error).__name__}") from None
    if not isinstance(value, list) or len(value) != 4:
        raise BadRequest("a command must be a 4-element array")
    version, op, args, now_ns = value
    if version != COMMAND_VERSION:
        raise BadRequest(f"unsupported command version {version!r} (this node applies {COMMAND_VERSION})")
    return _validated(op, args, now_ns)


def _validated(op: object, args: object, now_ns: object, args_validated: bool = False) -> Command:
    if not isinstance(op, str) or op not in COMMAND_OPS:
        raise BadRequest(f"unknown write op {op!r}")
    if isinstance(now_ns, bool) or not isinstance(now_ns, int) or now_ns < 0:
        raise BadRequest("a command's time stamp must be a non-negative integer of nanoseconds")
    checked = {**_DEFAULTS[op], **(args if args_validated else validate_args(op, args, COMMAND_OPS[op]))}
    client = checked.pop("client")
    seq = checked.pop("seq")
    if seq >= SEQ_MAX:  # a session stores it in 8 bytes below 2**62 (sessions.py)
        raise BadRequest(f"seq must be below 2**62, got {seq}")
    for name in _PATHS_OF[op]:
        if name in checked:
            checked[name] = normalize_path(checked[name])
    if "into_directory" in checked:
        checked["into_directory"] = file_name(checked["into_directory"])
    if "mode" in checked and not 0 <= checked["mode"] <= MODE_MAX:
        raise BadRequest(f"mode {checked['mode']:o} is not a permission mode (0 to 7777 octal)")
    if op == "write_file":
        _check_content(checked)
    if "chunk" in checked:  # add_replica, drop_replica
        _check_replica_change(checked)
    return Command(op, checked, client, seq, now_ns)  # positional: cheaper for a NamedTuple


def _check_content(args: dict) -> None:
    """write_file carries exactly one of inline data or a chunk list, adding up to size."""
    size = args["size"]
    if size < 0:
        raise BadRequest(f"size must not be negative, got {size}")
    if ("data" in args) == ("chunks" in args):
        raise BadRequest("write_file needs exactly one of data or chunks")
    if "data" in args:
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
