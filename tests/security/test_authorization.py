"""Which role each op needs."""

from __future__ import annotations

import pytest

from node import protocol
from node.security import (
    KIND_CLIENT,
    KIND_NODE,
    REQUIRED_ROLE,
    Principal,
    Unauthorized,
    authorize,
    is_allowed,
    required_role,
)

READ_WRITE = Principal(KIND_CLIENT, "alice", "read-write")
ADMIN = Principal(KIND_CLIENT, "root", "admin")
NODE = Principal(KIND_NODE, "n2", "node")
ADMIN_ONLY = ("add_learner", "promote", "remove_node", "transfer_leader", "snapshot", "gc", "chunk_gc",
              "rebalance", "namespace_image")
NODE_ONLY = ("chunk_inventory", "chunk_fetch_from", "chunk_delete")


def test_every_op_of_the_protocol_has_a_deliberate_role():
    # A new op on either port must be placed in REQUIRED_ROLE (it is admin-only until then).
    assert set(protocol.OPS) | set(protocol.CHUNK_OPS) <= set(REQUIRED_ROLE)


@pytest.mark.parametrize("op", ADMIN_ONLY)
def test_a_read_write_key_is_refused_admin_ops(op):
    assert not is_allowed(READ_WRITE, op)
    with pytest.raises(Unauthorized, match=f"client alice \\(read-write\\) may not run {op}: it needs an admin key"):
        authorize(READ_WRITE, op)
    authorize(ADMIN, op)
    authorize(NODE, op)


@pytest.mark.parametrize("op", ["status", "stat", "ls", "read", "mkdir", "write_file", "rm", "mv",
                                "chunk_put", "chunk_get", "chunk_has"])
def test_a_read_write_key_may_use_files_and_status(op):
    authorize(READ_WRITE, op)


@pytest.mark.parametrize("op", NODE_ONLY)
def test_repair_ops_are_for_nodes_only(op):
    with pytest.raises(Unauthorized, match=f"client root \\(admin\\) may not run {op}: only nodes"):
        authorize(ADMIN, op)
    authorize(NODE, op)


def test_an_unknown_op_needs_admin_and_refusal_is_exit_1():
    assert required_role("drop_everything") == "admin"
    assert not is_allowed(READ_WRITE, "drop_everything")
    assert Unauthorized.code == "REFUSED"  # sandctl maps REFUSED to exit 1


def test_principals_cannot_mix_kinds_and_roles():
    with pytest.raises(AssertionError):
        Principal(KIND_CLIENT, "x", "node")
    with pytest.raises(AssertionError):
        Principal(KIND_NODE, "n1", "admin")
