"""Which role each op needs: the one table the client and chunk ports consult per request.

Roles are ranked: `node` (another node of this cluster) > `admin` > `read-write`. A role may do
everything the roles below it may. An op missing from the table needs `admin`: a new op is
refused to read-write keys until someone decides otherwise here (tests/security checks that
the table names every op in node/protocol.py, so that decision is made on purpose). A few
chunk-port ops are for nodes only (the leader's repair scheduler).
"""

from __future__ import annotations

from dataclasses import dataclass

from node.security.errors import Unauthorized

ROLE_READ_WRITE = "read-write"
ROLE_ADMIN = "admin"
ROLE_NODE = "node"
CLIENT_ROLES = (ROLE_READ_WRITE, ROLE_ADMIN)  # what `sandctl keys create-client --role` accepts
_RANK = {ROLE_READ_WRITE: 1, ROLE_ADMIN: 2, ROLE_NODE: 3}

KIND_NODE = "node"
KIND_CLIENT = "client"


@dataclass(frozen=True)
class Principal:
    """Who a connection is, as its authenticated key says: a node of this cluster (name = node
    id, role = node) or a client (name = the key's name, role = read-write or admin)."""

    kind: str
    name: str
    role: str

    def __post_init__(self) -> None:
        assert self.kind in (KIND_NODE, KIND_CLIENT), self.kind
        assert self.role in _RANK, self.role
        assert (self.kind == KIND_NODE) == (self.role == ROLE_NODE), (self.kind, self.role)

    def __str__(self) -> str:
        return f"node {self.name}" if self.kind == KIND_NODE else f"client {self.name} ({self.role})"


_READ_WRITE_OPS = (
    # client port: file verbs and everything that only reads
    "ping", "status", "stat", "ls", "read", "du", "inspect_log", "inspect_term", "chunk_refs", "digest",
    "fsck", "mkdir", "write_file", "rm", "mv",
    # chunk port: what put and get of a file need
    "chunk_put", "chunk_get", "chunk_verify", "chunk_has", "chunk_stats",
)
_ADMIN_OPS = (
    "add_learner", "promote", "remove_node", "transfer_leader", "snapshot", "gc", "rebalance",  # client port
    "namespace_image",  # a whole-namespace backup: heavy, and an operator's tool
    "chunk_gc",  # chunk port: deletes chunk contents
)
_NODE_OPS = (
    # chunk port, asked by the leader's repair scheduler only: a client has no business listing
    # every chunk, making a node connect to another node, or deleting a replica.
    "chunk_inventory", "chunk_fetch_from", "chunk_delete",
)
REQUIRED_ROLE: dict[str, str] = {
    **{op: ROLE_READ_WRITE for op in _READ_WRITE_OPS},
    **{op: ROLE_ADMIN for op in _ADMIN_OPS},
    **{op: ROLE_NODE for op in _NODE_OPS},
}
assert len(REQUIRED_ROLE) == len(_READ_WRITE_OPS) + len(_ADMIN_OPS) + len(_NODE_OPS), "an op is listed twice"


# The rank each op needs, looked up once per request: a call less per lookup than the role table.
_REQUIRED_RANK: dict[str, int] = {op: _RANK[role] for op, role in REQUIRED_ROLE.items()}
_UNLISTED_RANK = _RANK[ROLE_ADMIN]


def required_role(op: str) -> str:
    """The least role allowed to run `op` (admin for an op this table does not name)."""
    return REQUIRED_ROLE.get(op, ROLE_ADMIN)


def is_allowed(principal: Principal, op: str) -> bool:
    """Whether `principal` may run `op`. Cheap: two dict lookups, for every request."""
    return _RANK[principal.role] >= _REQUIRED_RANK.get(op, _UNLISTED_RANK)


def authorize(principal: Principal, op: str) -> None:
    """Raise Unauthorized (wire code REFUSED, exit 1) unless `principal` may run `op`. Inline
    rather than through is_allowed: it runs for every request of every client."""
    if _RANK[principal.role] < _REQUIRED_RANK.get(op, _UNLISTED_RANK):
        needed = required_role(op)
        if needed == ROLE_NODE:
            raise Unauthorized(f"{principal} may not run {op}: only nodes of the cluster may")
        raise Unauthorized(f"{principal} may not run {op}: it needs an {needed} key "
                           f"(sandctl keys create-client NAME --role {needed})")
