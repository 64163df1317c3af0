"""The trust boundary: CurveZMQ keys, who a connection is, and what it may do.

Wiring, in the process that binds (a node), once at start:
    security = ServerSecurity.for_node(context, config, node_id, data_dir)  # starts the one ZAP thread
    security.configure_router(router, "raft" | "client" | "chunk")          # before bind
    ... per message, received with copy=False:
    security.peer_node_id(frames[-1])             # raft port: the sender's node id, or None: drop
    security.authorize_request(frames[-1], op)    # client, chunk ports: Principal, or Unauthorized
    security.principal_of(frames[-1])             # who it is (None: revoked / unvouched: drop)
    security.authorize_principal(principal, op)   # authorize_request for that principal (a batch frame's)
    security.reload_if_changed()                  # from housekeeping, about once a second
    security.status()                             # into `status` (mode, cluster id, counts)
    security.close()                              # after the ROUTERs are closed

In a process that connects (a node's peer and repair DEALERs; sandctl):
    client_security = ClientSecurity.for_node(config, node_id, data_dir)   # or .for_client(keys_dir)
    client_security.configure_dealer(dealer, target_node_id)               # before connect
    watch = client_security.watch(dealer, target_node_id, address)          # optional: say why
    watch.refusal()                                                         # -> one line or None

A node checks the cluster id its store was made with against the keys directory's at start
(keyring.check_cluster_identity) and stores it on first start.

Keys live in the cluster's keys directory (node/security/keyring.py); sandctl/keys.py creates
them for a local cluster and manages client keys.
"""

from node.security.authorization import (
    CLIENT_ROLES,
    KIND_CLIENT,
    KIND_NODE,
    REQUIRED_ROLE,
    ROLE_ADMIN,
    ROLE_NODE,
    ROLE_READ_WRITE,
    Principal,
    authorize,
    is_allowed,
    required_role,
)
from node.security.errors import KeysError, Unauthorized
from node.security.keyring import KeyPair, KeyRing, check_cluster_identity, keys_dir_for
from node.security.sockets import (
    ClientSecurity,
    HandshakeWatch,
    ServerSecurity,
    check_security_mode,
)
from node.security.zap import MODE_CURVE, MODE_PLAINTEXT, PORTS, SECURITY_MODES

__all__ = [
    "CLIENT_ROLES", "KIND_CLIENT", "KIND_NODE", "REQUIRED_ROLE", "ROLE_ADMIN", "ROLE_NODE",
    "ROLE_READ_WRITE", "Principal", "authorize", "is_allowed", "required_role", "KeysError",
    "Unauthorized", "KeyPair", "KeyRing", "check_cluster_identity", "keys_dir_for", "ClientSecurity", "HandshakeWatch",
    "ServerSecurity", "check_security_mode", "MODE_CURVE", "MODE_PLAINTEXT", "PORTS", "SECURITY_MODES",
]
