"""Security settings for the sockets that cross a process boundary.

ServerSecurity: one per node process, for every ROUTER that binds (raft, client, chunk).
ClientSecurity: one per process that connects (a node's peer DEALERs, sandctl), for DEALERs.

CurveZMQ ("curve", the default): every connection is encrypted, the client proves it holds an
authorized key, and the server proves it holds the key the client expects for that node.
Plain-text ("plaintext", only when cluster.security says so): no encryption, no proof; the
handshake still carries the cluster id (as the PLAIN password), so a node or client of another
cluster is still refused, and the claimed name still arrives as each message's User-Id.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import zmq
from zmq.utils.monitor import parse_monitor_message

from node.errors import ConfigError
from node.security.authorization import (
    KIND_CLIENT,
    KIND_NODE,
    ROLE_ADMIN,
    ROLE_NODE,
    Principal,
    authorize,
)
from node.security.errors import Unauthorized
from node.security.keyring import KeyPair, KeyRing, keys_dir_for
from node.security.zap import (
    MODE_CURVE,
    MODE_PLAINTEXT,
    PORTS,
    SECURITY_MODES,
    ZapHandler,
    parse_plaintext_user_id,
    plaintext_user_id,
    zap_domain,
)

log = logging.getLogger(__name__)

CLIENT_NAME_ENVIRONMENT_VARIABLE = "SANDSTORE_CLIENT"
DEFAULT_CLIENT_NAME = "admin"  # the key `sandctl cluster start` makes for the user who started it
PLAINTEXT_PRINCIPALS_MAX = 4096  # cache of parsed plain-text user ids
PLAINTEXT_WARNING = ("SECURITY IS OFF (cluster.security = \"plaintext\"): traffic is not encrypted and "
                     "peers are not authenticated; any process that can reach these ports can read and "
                     "change every file and the membership")


def check_security_mode(key: str, value: object) -> str:
    """Validate a `security` setting (for node/config.py). Raises ConfigError naming `key`."""
    if value not in SECURITY_MODES:
        raise ConfigError(f"{key} must be one of {', '.join(repr(mode) for mode in SECURITY_MODES)}, got {value!r}")
    return value


class ServerSecurity:
    """The server side of the trust boundary for one process (one zmq.Context).

    Construct once per node (it starts the process's one ZAP thread); call configure_router on
    each ROUTER before it binds; per received message, principal_of(frame) says who sent it.

    Contract for a receive loop: receive with copy=False (zmq.Frame keeps the connection's
    properties), call principal_of on any frame of the message, and drop the message when it
    returns None (the key was revoked since the connection was made). Never take the sender's
    name from the routing identity or from a field of the message."""

    def __init__(self, context: zmq.Context, keys_directory: str | os.PathLike, node_id: str, *,
                 mode: str = MODE_CURVE) -> None:
        assert mode in SECURITY_MODES, mode
        self.mode = mode
        self.node_id = node_id
        self._keyring = KeyRing.load(Path(keys_directory))  # KeysError: the node does not start
        self._by_user_id = _by_user_id(self._keyring)
        self._keypair = KeyPair(b"")
        if mode == MODE_CURVE:
            self._keypair = self._keyring.keypair(KIND_NODE, node_id)
        self._plaintext_principals: dict[str, Principal] = {}
        self._reload_lock = threading.Lock()
        # A node added a moment ago connects before our next periodic reload, and libzmq never
        # retries a connection it was refused: the ZAP handler reloads before refusing a key.
        self._zap = ZapHandler(context, mode, lambda: self._keyring, reload_keys=self.reload_if_changed)
        if mode == MODE_PLAINTEXT:
            log.warning("%s", PLAINTEXT_WARNING)
        else:
            log.info("CurveZMQ on every port: node %s of cluster %s, %d keys authorized", node_id,
                     self._keyring.cluster_id, len(self._keyring.principals))

    @classmethod
    def for_node(cls, context: zmq.Context, config, node_id: str, data_dir: str | os.PathLike) -> "ServerSecurity":
        """What NodeServer makes at start: keys from `data_dir`'s keys directory, the mode from
        config.security. KeysError (one line) when the keys are missing or unusable."""
        return cls(context, keys_dir_for(data_dir), node_id, mode=config.security)

    @property
    def cluster_id(self) -> str:
        return self._keyring.cluster_id

    def configure_router(self, socket: zmq.Socket, port: str) -> None:
        """Make `socket` (a ROUTER, not yet bound) authenticate every connection for `port`
        ("raft": nodes only; "client", "chunk": nodes and clients)."""
        assert port in PORTS, port
        assert socket.type == zmq.ROUTER, socket.type
        # Fail closed if no ZAP handler answers (libzmq would otherwise accept everyone).
        socket.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
        socket.setsockopt(zmq.ZAP_DOMAIN, zap_domain(self._keyring.cluster_id, port))
        if self.mode == MODE_CURVE:
            socket.setsockopt(zmq.CURVE_SERVER, 1)
            socket.setsockopt(zmq.CURVE_SECRETKEY, self._keypair.secret_key)
        else:
            socket.setsockopt(zmq.PLAIN_SERVER, 1)

    def principal_of(self, frame: zmq.Frame) -> Principal | None:
        """Who sent the message `frame` belongs to, from its connection's authenticated key (in
        plain-text mode: the name it claimed). None: drop the message (revoked key)."""
        try:
            user_id = frame.get("User-Id")
        except zmq.ZMQError:  # a connection no ZAP handler vouched for (a socket we did not configure)
            return None
        if self.mode == MODE_CURVE:
            return self._by_user_id.get(user_id)
        principal = self._plaintext_principals.get(user_id)
        if principal is None:
            principal = self._parse_plaintext(user_id)
        return principal

    def _parse_plaintext(self, user_id: str) -> Principal | None:
        claimed = parse_plaintext_user_id(user_id)
        if claimed is None:
            return None
        kind, name = claimed
        # Plain-text mode authorizes nothing: every client may do everything (documented).
        principal = Principal(kind, name, ROLE_NODE if kind == KIND_NODE else ROLE_ADMIN)
        if len(self._plaintext_principals) >= PLAINTEXT_PRINCIPALS_MAX:
            self._plaintext_principals.clear()
        self._plaintext_principals[user_id] = principal
        return principal

    def authorize_request(self, frame: zmq.Frame, op: str) -> Principal:
        """For the client and chunk ports, once per request after its op is known: the sender,
        if its role allows `op`. Unauthorized (wire code REFUSED) otherwise, also for a key
        revoked since the connection was made: answer the request with that error."""
        return self.authorize_principal(self.principal_of(frame), op)

    @staticmethod
    def authorize_principal(principal: Principal | None, op: str) -> Principal:
        """authorize_request for a sender already looked up with principal_of: a frame that
        holds a batch of requests is looked up once and each request's op checked here."""
        if principal is None:
            raise Unauthorized("this connection has no authorized key (revoked since it connected?): refused")
        authorize(principal, op)
        return principal

    def peer_node_id(self, frame: zmq.Frame) -> str | None:
        """For the raft port: the node id of the message's sender, or None (not a node: drop)."""
        principal = self.principal_of(frame)
        if principal is None or principal.kind != KIND_NODE:
            return None
        return principal.name

    def reload_if_changed(self) -> bool:
        """Re-read the keys directory if a key was added or revoked since the last load (one
        listing of two small directories when nothing changed: call it from housekeeping, e.g.
        once a second). A revoked key's messages are dropped from then on, on connections
        already open too. A keys directory that became invalid keeps the previous keys and logs
        why. Called from the node's loop and from the ZAP thread (a handshake with a key not
        known yet), hence the lock."""
        with self._reload_lock:
            keyring = self._keyring.reloaded()
            if keyring is None:
                return False
            self._by_user_id = _by_user_id(keyring)  # before the keyring: never a principal the ZAP thread refuses
            self._keyring = keyring
        log.info("keys reloaded: %d authorized", len(keyring.principals))
        return True

    def status(self) -> dict:
        """For `status`: the mode (with the warning when plain-text), cluster id, key counts."""
        result = {
            "mode": self.mode,
            "cluster_id": self._keyring.cluster_id,
            "authorized_keys": len(self._keyring.principals) if self.mode == MODE_CURVE else 0,
            "handshakes_accepted": self._zap.handshakes_accepted,
            "handshakes_refused": self._zap.handshakes_refused,
        }
        if self.mode == MODE_PLAINTEXT:
            result["warning"] = PLAINTEXT_WARNING
        return result

    def close(self) -> None:
        """Stop the ZAP thread. Close (or stop using) the ROUTERs first."""
        self._zap.close()


def _by_user_id(keyring: KeyRing) -> dict[str, Principal]:
    """The keyring's principals by the User-Id string libzmq hands back (the Z85 key), so the
    per-message lookup is one dict access with no encoding."""
    return {public_key.decode("ascii"): principal for public_key, principal in keyring.principals.items()}


class ClientSecurity:
    """The client side for one process: which keypair it presents, which key it expects of
    each node. A node uses this for its peer DEALERs (kind node), sandctl for its own."""

    def __init__(self, keys_directory: str | os.PathLike, kind: str, name: str, *, mode: str = MODE_CURVE) -> None:
        assert mode in SECURITY_MODES, mode
        assert kind in (KIND_NODE, KIND_CLIENT), kind
        self.mode = mode
        self.kind = kind
        self.name = name
        self._keyring = KeyRing.load(Path(keys_directory))
        self._keypair = KeyPair(b"")
        if mode == MODE_CURVE:
            self._keypair = self._keyring.keypair(kind, name)

    @classmethod
    def for_node(cls, config, node_id: str, data_dir: str | os.PathLike) -> "ClientSecurity":
        """A node's own identity for the DEALERs it opens (peer raft links, chunk repairs)."""
        return cls(keys_dir_for(data_dir), KIND_NODE, node_id, mode=config.security)

    @classmethod
    def for_client(cls, keys_directory: str | os.PathLike, name: str | None = None, *,
                   mode: str = MODE_CURVE) -> "ClientSecurity":
        """sandctl's identity: client `name`, else $SANDSTORE_CLIENT, else "admin"."""
        name = name or os.environ.get(CLIENT_NAME_ENVIRONMENT_VARIABLE) or DEFAULT_CLIENT_NAME
        return cls(keys_directory, KIND_CLIENT, name, mode=mode)

    @property
    def cluster_id(self) -> str:
        return self._keyring.cluster_id

    def reload_if_changed(self) -> bool:
        """Re-read the keys directory if it changed (e.g. a node's key was replaced)."""
        keyring = self._keyring.reloaded()
        if keyring is None:
            return False
        self._keyring = keyring
        return True

    def configure_dealer(self, socket: zmq.Socket, server_node_id: str) -> None:
        """Make `socket` (a DEALER, not yet connected) present our key and accept only the
        process that proves it holds node `server_node_id`'s key. KeysError if that node has
        no key here (after one reload: it may have been added since we loaded)."""
        assert socket.type == zmq.DEALER, socket.type
        if self.mode == MODE_PLAINTEXT:
            socket.setsockopt(zmq.PLAIN_USERNAME, plaintext_user_id(self.kind, self.name))
            socket.setsockopt(zmq.PLAIN_PASSWORD, self._keyring.cluster_id.encode("ascii"))
            return
        if server_node_id not in self._keyring.node_public_keys:
            self._keyring = KeyRing.load(self._keyring.directory)
        socket.setsockopt(zmq.CURVE_SERVERKEY, self._keyring.node_public_key(server_node_id))
        socket.setsockopt(zmq.CURVE_PUBLICKEY, self._keypair.public_key)
        socket.setsockopt(zmq.CURVE_SECRETKEY, self._keypair.secret_key)

    def watch(self, socket: zmq.Socket, server_node_id: str, address: str) -> "HandshakeWatch":
        """A HandshakeWatch on `socket` (call before connect, so no event is missed)."""
        return HandshakeWatch(socket, server_node_id, address, self.mode, self._keyring.cluster_id)


_WATCHED_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                   | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                   | zmq.EVENT_DISCONNECTED)
MONITOR_EVENTS_PER_CALL_MAX = 64


class HandshakeWatch:
    """Turns a DEALER's failed handshakes into the one line a user should read, instead of a
    silent timeout. refusal() never blocks; it is meant for the moment a request times out or
    no node answered. Costs one inproc PAIR socket per watched DEALER."""

    def __init__(self, socket: zmq.Socket, node_id: str, address: str, mode: str, cluster_id: str) -> None:
        self._node_id = node_id
        self._address = address
        self._node = f"node {node_id} at {address}"
        self._mode = mode
        self._cluster_id = cluster_id
        self._socket = socket
        self._monitor = socket.get_monitor_socket(_WATCHED_EVENTS)
        self._last_refusal: str | None = None
        self._disconnects = 0  # connections that closed since take_disconnects() last asked

    @property
    def monitor(self) -> zmq.Socket:
        """Readable when an event is queued: a caller may poll it beside the DEALER."""
        return self._monitor

    def refusal(self) -> str | None:
        """The reason the latest handshake failed, or None (no failure, or a later success)."""
        self._take_events()
        return self._last_refusal

    def take_disconnects(self) -> int:
        """How many connections to the node closed since the last call (its process died, or
        the network cut it): requests sent on one will get no reply."""
        self._take_events()
        disconnects, self._disconnects = self._disconnects, 0
        return disconnects

    def _take_events(self) -> None:
        for _ in range(MONITOR_EVENTS_PER_CALL_MAX):
            try:
                message = self._monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            event = parse_monitor_message(message)
            if event["event"] == zmq.EVENT_DISCONNECTED:
                self._disconnects += 1
                continue
            self._last_refusal = self._explain(event["event"], event["value"])

    def _explain(self, event: int, value: int) -> str | None:
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            return None
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            if value == 400:
                what = "key" if self._mode == MODE_CURVE else "cluster id"
                return (f"{self._node} refused this {what}: it is not authorized in cluster {self._cluster_id} "
                        "(revoked, a key or config of another cluster, or the wrong port)")
            return f"{self._node} could not check this client's key (status {value}; see that node's log)"
        if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            other = MODE_PLAINTEXT if self._mode == MODE_CURVE else MODE_CURVE
            return (f"{self._node} does not use {self._mode} security (it may use {other}): "
                    "its cluster.security differs from this side's config")
        # Anything else (libzmq reports a connection the server closed mid-handshake as "no
        # detail", a mechanism mismatch sometimes among them): say what it most likely means.
        if self._mode == MODE_CURVE:
            return (f"the process at {self._address} is not node {self._node_id} of cluster {self._cluster_id}: "
                    "it could not prove that node's key (another cluster, or a node with security = "
                    "\"plaintext\", may hold the port)")
        return (f"the handshake with {self._node} failed: it may not use plaintext security "
                f"(its cluster.security differs), or it is not a SandStore node (error {value})")

    def close(self) -> None:
        """Stop monitoring (before closing the socket)."""
        try:
            self._socket.disable_monitor()
        except zmq.ZMQError:
            pass  # the socket is already closed
        self._monitor.close(linger=0)
