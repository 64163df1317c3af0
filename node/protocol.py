"""The client wire protocol: one msgpack map per ZeroMQ frame, in both directions.

Request:  {"v": 1, "id": <int>, "op": <str>, "args": {...}}
Reply:    {"v": 1, "id": <same int>, "ok": true,  "result": <any>[, "batches": <int>]}
      or  {"v": 1, "id": <same int>, "ok": false, "error": {"code": str, "message": str, "leader": str}}

A client DEALER may keep many requests in flight; replies carry the request id and may
arrive in any order. Every request is validated against OPS before use: an unknown op, an
unknown or missing argument, or a wrong type gets a BAD_REQUEST reply.

Batches: a frame may instead hold a msgpack array of 1 to REQUESTS_PER_FRAME_MAX request maps,
each handled as if it had come in a frame of its own (any other array is refused whole). The replies to requests that came in a
batch may come back batched, as an array of reply maps in one frame (a client that never
sends a batch never gets one). Each frame costs wake-ups of ZeroMQ's I/O threads and of the
receiving loop on both sides, and at many requests in flight per connection that was most of
a request's CPU: a client sends the requests it has ready at once in one frame, and a node
answers the requests it can answer at once (the reads that one ReadIndex round confirmed) in
one. A batch frame stays within batch_bytes_max(frame_bytes_max); a request or reply larger
than that travels alone, as a map. A node that takes batches says so in its successful
replies to requests that came alone: "batches": the most requests it takes in one frame. A
client sends batches only to a node that said so (a node of an earlier version refuses them).

Writes carry a session: "client" (a random id the client picks once) and "seq" (a number it
increments per write and reuses when it retries that write). The state machine answers a
retried (client, seq) from its memory instead of applying it twice.
"""

from __future__ import annotations

import msgpack

from node.errors import BadRequest, SandStoreError
from node.packing import packb

PROTOCOL_VERSION = 1
PATH_BYTES_MAX = 4096
CLIENT_ID_BYTES_MAX = 64
REQUESTS_PER_FRAME_MAX = 256  # requests (or replies) in one batch frame
# A batch frame's bytes, at most (and never more than frame_bytes_max): a client's socket drops
# its connection on a frame beyond its own limit, and 16 replies of 64 KiB files add up.
BATCH_BYTES_MAX = 256 << 10
_ARRAY_HEADER_BYTES_MAX = 3  # msgpack's array 16 header (0xdc, 2 bytes of count)
assert REQUESTS_PER_FRAME_MAX <= 0xFFFF, "an array 16 header counts the batch"

# Argument types: "str", "int", "bool", "bytes", "list", "map", "any"; a trailing "?" means
# optional (absent or nil). Session arguments ("client", "seq") are added to every write op.
_SESSION = {"client": "str", "seq": "int"}

READ_OPS: dict[str, dict[str, str]] = {
    "ping": {},
    "status": {},
    "stat": {"path": "str", "stale": "bool?"},
    "ls": {"path": "str", "stale": "bool?", "recursive": "bool?"},
    "read": {"path": "str", "stale": "bool?"},  # stat + inline data (or the chunk list)
    "du": {"path": "str", "stale": "bool?"},
    "inspect_log": {"from_index": "int?", "limit": "int?"},
    "inspect_term": {},
    "chunk_refs": {},  # every chunk id the namespace references (for GC)
    "digest": {},  # this node's namespace digest and applied index (compare nodes in tests)
    # One read transaction after the read barrier: applied index, image, digest, chunks (node/backup.py).
    "namespace_image": {"bytes_max": "int?"},
    # Self-healing data (node/repair/): answered by the leader, which knows which nodes are up.
    # fsck -> {"files": [{"path", "state", "chunks", ...}], "totals": {...}} for files under path.
    "fsck": {"path": "str?", "files_max": "int?"},
}

WRITE_OPS: dict[str, dict[str, str]] = {
    "mkdir": {"path": "str", "parents": "bool?", "mode": "int?", **_SESSION},
    # Exactly one of data (inline content) or chunks ([[id bytes, size int, [node ids]], ...]).
    # into_directory (a file name): if path is an existing directory, the file is written inside
    # it under that name instead; resolved when the write is applied, so `put FILE DIR` needs no
    # stat first. overwrite (default true): false refuses with EXISTS if the target exists.
    "write_file": {"path": "str", "data": "bytes?", "chunks": "list?", "size": "int",
                   "mode": "int?", "parents": "bool?", "into_directory": "str?", "overwrite": "bool?", **_SESSION},
    "rm": {"path": "str", "recursive": "bool?", **_SESSION},
    # overwrite (default true): false refuses with EXISTS if the target exists.
    "mv": {"src": "str", "dst": "str", "overwrite": "bool?", **_SESSION},
}

ADMIN_OPS: dict[str, dict[str, str]] = {
    "add_learner": {"node": "str", "raft": "str", "client": "str", "chunk": "str"},
    "promote": {"node": "str"},
    "remove_node": {"node": "str"},
    "transfer_leader": {"node": "str?"},
    "snapshot": {},
    "gc": {"dry_run": "bool?", "grace_seconds": "float?"},
    # Even out used bytes per node now (the leader moves replicas: copy, record, drop).
    "rebalance": {},
}

# Replica bookkeeping (node/metadata/replicas.py): commands in the Raft log like WRITE_OPS, but
# proposed only by the leader's repair scheduler, never accepted on the client port.
# add_replica records a copy that is durable (verified) on `node`; drop_replica forgets one
# and is refused for a chunk's last recorded replica.
REPLICA_OPS: dict[str, dict[str, str]] = {
    "add_replica": {"chunk": "bytes", "node": "str", **_SESSION},
    "drop_replica": {"chunk": "bytes", "node": "str", **_SESSION},
}
COMMAND_OPS: dict[str, dict[str, str]] = {**WRITE_OPS, **REPLICA_OPS}  # every op a log entry may carry

OPS: dict[str, dict[str, str]] = {**READ_OPS, **WRITE_OPS, **ADMIN_OPS}

# Served on the separate chunk port (node/chunks/service.py), validated with ops=CHUNK_OPS.
# Chunk ids are 32-byte digests of the content (node/chunk_ids.py: BLAKE3, or BLAKE2b before).
#
# Framing: chunk content never goes through msgpack (packing or unpacking 4 MiB into a map
# copies it). A request is the request map above as one frame, and for the ops in
# CHUNK_DATA_OPS exactly one more frame holding the chunk's raw content; any other frame count
# gets a BAD_REQUEST reply. A reply is the reply map as one frame; a successful chunk_get
# reply is followed by exactly one more frame holding the raw content (its "result" says the
# size). Every frame is at most the node's frame_bytes_max.
CHUNK_OPS: dict[str, dict[str, str]] = {
    # + content frame -> {"stored": bool} (False: already had it). The content is checked
    # against the id before it is written and is durable (fsynced) before the reply is sent.
    "chunk_put": {"id": "bytes"},
    # -> {"size": int} + content frame. verify (default true): the node checks the content
    # against the id before sending it. A reader that checks it itself (sandctl/transfer.py
    # always does) passes false, so the content is hashed once per read, and reports a
    # mismatch with chunk_verify.
    "chunk_get": {"id": "bytes", "verify": "bool?"},
    # -> {"size": int} if the stored copy is intact; CHECKSUM_MISMATCH if not (the node counts
    # and logs it and removes the corrupt copy); NOT_FOUND if absent.
    "chunk_verify": {"id": "bytes"},
    "chunk_has": {"ids": "list"},  # -> [bool, ...] in the same order
    "chunk_stats": {},  # -> {"chunks": int, "bytes": int, "counters": {...}}
    "chunk_gc": {"dry_run": "bool?", "grace_seconds": "float?"},  # -> {"unreferenced", "deleted", "deleted_bytes"}
    # Self-healing data (node/repair/), asked by the leader:
    # -> {"ids": [chunk id, ...] ascending, "more": bool}: what this node holds, after `after`.
    "chunk_inventory": {"after": "bytes?", "limit": "int?"},
    # -> {"stored": bool, "size": int}: fetch the chunk from node `source`'s chunk port, verify
    # its hash and store it durably here (a repair copy; the reply means it is durable).
    "chunk_fetch_from": {"id": "bytes", "source": "str"},
    # -> {"deleted": bool}: remove a surplus copy. Refused while this node's own metadata still
    # records it as a replica here (drop_replica must be committed and applied first).
    "chunk_delete": {"id": "bytes"},
}
CHUNK_DATA_OPS = frozenset({"chunk_put"})  # requests followed by one raw content frame

_TYPES = {
    "str": str,
    "int": int,
    "bool": bool,
    "bytes": bytes,
    "list": (list, tuple),
    "map": dict,
    "float": (int, float),
}


_REQUEST_FIELDS = frozenset({"v", "id", "op", "args"})

# Schemas parsed once into rows of (name, type name, Python types or None for "any", whether a
# bool is refused, optional): every request and every applied log entry is validated, and
# re-parsing the "str?" notation each time was a measurable share of the write path.
_SchemaRow = tuple[str, str, "type | tuple | None", bool, bool]
_PARSED_SCHEMAS: dict[int, tuple[dict, tuple[_SchemaRow, ...]]] = {}


def _parsed_schema(schema: dict[str, str]) -> tuple[_SchemaRow, ...]:
    cached = _PARSED_SCHEMAS.get(id(schema))
    if cached is None or cached[0] is not schema:
        rows = []
        for name, notation in schema.items():
            type_name = notation.rstrip("?")
            expected = None if type_name == "any" else _TYPES[type_name]
            rows.append((name, type_name, expected, type_name in ("int", "float"), notation.endswith("?")))
        cached = (schema, tuple(rows))  # holding the schema keeps its id from being reused
        _PARSED_SCHEMAS[id(schema)] = cached
    return cached[1]


def validate_request(request: object, ops: dict[str, dict[str, str]] = OPS) -> tuple[int, str, dict]:
    """Check a decoded request against the schema `ops` (the client port's OPS unless given).
    Returns (id, op, args) or raises BadRequest."""
    if not isinstance(request, dict):
        raise BadRequest("a request must be a map")
    version = request.get("v")
    if version != PROTOCOL_VERSION:
        raise BadRequest(f"unsupported protocol version {version!r} (this node speaks {PROTOCOL_VERSION})")
    request_id = request.get("id")
    # type() first: a plain int (every well-formed request) then needs no isinstance test.
    if type(request_id) is not int and (isinstance(request_id, bool) or not isinstance(request_id, int)):
        raise BadRequest("request id must be an integer")
    if not _REQUEST_FIELDS.issuperset(request):
        extra = set(request) - _REQUEST_FIELDS
        raise BadRequest(f"unknown request field {sorted(map(str, extra))[0]!r}")
    op = request.get("op")
    schema = ops.get(op) if isinstance(op, str) else None  # (a schema is a dict, never None)
    if schema is None:
        raise BadRequest(f"unknown op {op!r}")
    return request_id, op, validate_args(op, request.get("args", {}), schema)


# (op, argument names..., their exact types...) -> schema, of arguments validate_args found
# valid with no None among them: the type checks depend on the types alone, so the next call
# of that op with the same names and types passes them by one lookup (only the value checks of
# client and seq run again). Every request on both sides of the client port and every applied
# log entry is validated. Bounded: past the bound, the checks run in full.
VALID_SIGNATURES_MAX = 1024
_VALID_SIGNATURES: dict[tuple, dict[str, str]] = {}


def validate_args(op: str, args: object, schema: dict[str, str]) -> dict:
    """Check one op's arguments against its schema; returns the present ones (a new dict)."""
    if type(args) is dict:
        signature = (op, *args, *map(type, args.values()))
        if _VALID_SIGNATURES.get(signature) is schema:
            checked = dict(args)
            _check_session_values(checked)
            return checked
    elif not isinstance(args, dict):
        raise BadRequest("args must be a map")
    else:
        signature = None
    if not schema.keys() >= args.keys():  # one C-level subset test; the loop names the culprit
        for name in args:
            if name not in schema:
                raise BadRequest(f"unknown argument {name!r} for {op}")
    checked: dict = {}
    for name, type_name, expected, refuses_bool, optional in _parsed_schema(schema):
        value = args.get(name)
        if value is None:
            if not optional:
                raise BadRequest(f"missing argument {name!r} for {op}")
            continue
        if expected is not None:
            if refuses_bool and isinstance(value, bool):
                raise BadRequest(f"argument {name!r} must be {type_name}, got bool")
            if not isinstance(value, expected):
                raise BadRequest(f"argument {name!r} must be {type_name}, got {type(value).__name__}")
        checked[name] = value
    _check_session_values(checked)
    if signature is not None and len(checked) == len(args) and len(_VALID_SIGNATURES) < VALID_SIGNATURES_MAX:
        _VALID_SIGNATURES[signature] = schema
    return checked


def _check_session_values(checked: dict) -> None:
    if "client" in checked and not 0 < len(checked["client"].encode()) <= CLIENT_ID_BYTES_MAX:
        raise BadRequest("client id must be 1 to 64 bytes")
    if "seq" in checked and checked["seq"] < 1:
        raise BadRequest("seq must be positive")


def encode(message: dict) -> bytes:
    return packb(message)


def decode(frame: bytes, frame_bytes_max: int) -> object:
    """Decode one frame; oversized or undecodable frames raise BadRequest."""
    if len(frame) > frame_bytes_max:
        raise BadRequest(f"frame of {len(frame)} bytes exceeds the {frame_bytes_max}-byte limit")
    try:
        # unpackb takes no max_buffer_size (only Unpacker does); it caps lengths at len(frame).
        return msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as error:  # msgpack raises several unrelated types for garbage
        raise BadRequest(f"undecodable frame: {type(error).__name__}") from None


def batch_bytes_max(frame_bytes_max: int) -> int:
    """The bytes of the packed maps that one batch frame may hold, with its array header."""
    return min(BATCH_BYTES_MAX, frame_bytes_max) - _ARRAY_HEADER_BYTES_MAX


def batch_frame(packed: list[bytes]) -> bytes:
    """One batch frame of maps packed already (no map is packed twice): an array header and
    the maps after it, as msgpack would pack the list of them."""
    count = len(packed)
    assert 0 < count <= REQUESTS_PER_FRAME_MAX, count
    header = bytes((0x90 | count,)) if count <= 15 else b"\xdc" + count.to_bytes(2, "big")
    return header + b"".join(packed)


def batch_runs(packed: list[bytes], bytes_max: int, count_max: int = REQUESTS_PER_FRAME_MAX) -> list[list[bytes]]:
    """The packed maps in runs of at most count_max whose sizes add up to at most bytes_max
    (batch_bytes_max), in order; a map larger than bytes_max is a run of its own (to travel
    alone, as a map)."""
    assert 0 < count_max <= REQUESTS_PER_FRAME_MAX, count_max
    runs: list[list[bytes]] = []
    run: list[bytes] = []
    run_bytes = 0
    for payload in packed:
        size = len(payload)
        if run and (run_bytes + size > bytes_max or len(run) == count_max):
            runs.append(run)
            run, run_bytes = [], 0
        run.append(payload)
        run_bytes += size
    if run:
        runs.append(run)
    return runs


def request(request_id: int, op: str, args: dict) -> bytes:
    return encode({"v": PROTOCOL_VERSION, "id": request_id, "op": op, "args": args})


def reply_ok(request_id: int, result: object, offer_batches: bool = False) -> bytes:
    """offer_batches: say that this node takes batch frames (see Batches above)."""
    if offer_batches:
        return packb({"v": PROTOCOL_VERSION, "id": request_id, "ok": True, "result": result,
                      "batches": REQUESTS_PER_FRAME_MAX})
    return packb({"v": PROTOCOL_VERSION, "id": request_id, "ok": True, "result": result})  # = encode(), a call less


def reply_error(request_id: int, error: SandStoreError) -> bytes:
    return reply_error_fields(request_id, error.code, str(error), getattr(error, "leader", "") or "")


def reply_error_fields(request_id: int, code: str, message: str, leader: str = "") -> bytes:
    """An error reply from its parts (e.g. an error result the state machine stored)."""
    body = {"code": code, "message": message, "leader": leader}
    return encode({"v": PROTOCOL_VERSION, "id": request_id, "ok": False, "error": body})
