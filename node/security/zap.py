"""The ZAP handler: libzmq asks it, once per incoming connection, whether to accept the peer.

One per process: libzmq sends every ZAP request of a context to the one REP socket bound at
inproc://zeromq.zap.01, so the raft, client and chunk ROUTERs of a node share this handler.
It runs on its own thread and is consulted only during handshakes, never per message.

Why not pyzmq's zmq.auth.ThreadAuthenticator: it answers "is this key in the set", while we
need to answer "who is this key, may it use this port, is it of our cluster" and hand that
answer to every message as its User-Id; its plain-text path checks a password table we do not
have (here the cluster id is the password), and it logs refusals at debug level only.
`decide` is a pure function of the request and the current KeyRing, tested without sockets.

Domains: each server socket sets ZAP_DOMAIN "<cluster id>/<port>"; a request for any other
domain is refused, so a socket someone forgot to configure fails closed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import zmq
from zmq.utils import z85

from node.security.authorization import KIND_CLIENT, KIND_NODE
from node.security.keyring import KeyRing
from node.names import is_valid_node_id

log = logging.getLogger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_VERSION = b"1.0"
ZAP_REQUEST_FRAMES_MIN = 6  # version, request id, domain, address, routing id, mechanism
ZAP_CREDENTIAL_FRAMES_MAX = 2
MODE_CURVE = "curve"
MODE_PLAINTEXT = "plaintext"
SECURITY_MODES = (MODE_CURVE, MODE_PLAINTEXT)
PORTS = ("raft", "client", "chunk")
KINDS_BY_PORT = {"raft": (KIND_NODE,), "client": (KIND_NODE, KIND_CLIENT), "chunk": (KIND_NODE, KIND_CLIENT)}
REFUSAL_LOG_INTERVAL_SECONDS = 60.0  # each distinct refusal is logged once per interval
REFUSAL_LOG_ENTRIES_MAX = 1024
CLOSE_WAIT_SECONDS = 10.0
assert set(KINDS_BY_PORT) == set(PORTS)


def zap_domain(cluster_id: str, port: str) -> bytes:
    assert port in PORTS, port
    return f"{cluster_id}/{port}".encode("ascii")


@dataclass(frozen=True)
class ZapDecision:
    status: bytes  # b"200" accepted, b"400" refused, b"500" internal error
    user_id: bytes  # becomes every message's User-Id property on an accepted connection
    reason: str  # for our log and the ZAP status text
    unknown_key: bool = False  # refused only because the keyring has no such key (yet?)

    @property
    def accepted(self) -> bool:
        return self.status == b"200"


def _refuse(reason: str) -> ZapDecision:
    return ZapDecision(b"400", b"", reason)


def plaintext_user_id(kind: str, name: str) -> bytes:
    """The PLAIN user name a DEALER sends in plain-text mode (its claim; nothing proves it)."""
    assert kind in (KIND_NODE, KIND_CLIENT) and is_valid_node_id(name), (kind, name)
    return f"{kind}/{name}".encode("ascii")


def parse_plaintext_user_id(user_id: str) -> tuple[str, str] | None:
    kind, _, name = user_id.partition("/")
    if kind not in (KIND_NODE, KIND_CLIENT) or not is_valid_node_id(name):
        return None
    return kind, name


def decide(mode: str, keyring: KeyRing, domain: bytes, mechanism: bytes, credentials: list[bytes]) -> ZapDecision:
    """Whether to accept one connection. Pure: the same request and keyring, the same answer."""
    assert mode in SECURITY_MODES, mode
    cluster_id = keyring.cluster_id
    cluster_text, _, port = domain.decode("ascii", errors="replace").partition("/")
    if cluster_text != cluster_id or port not in KINDS_BY_PORT:
        return _refuse(f"a socket with ZAP domain {domain!r}, not one of cluster {cluster_id}")
    if mode == MODE_CURVE:
        if mechanism != b"CURVE" or len(credentials) != 1 or len(credentials[0]) != 32:
            return _refuse(f"a {mechanism.decode('ascii', 'replace')} handshake on a CurveZMQ {port} port")
        public_key = z85.encode(credentials[0])
        principal = keyring.principals.get(public_key)
        if principal is None:
            return ZapDecision(b"400", b"", f"a key cluster {cluster_id} does not know on the {port} port "
                               f"({public_key.decode()[:8]}...): revoked, or a node or client of another cluster",
                               unknown_key=True)
        if principal.kind not in KINDS_BY_PORT[port]:
            return _refuse(f"{principal} on the {port} port, which serves only nodes")
        return ZapDecision(b"200", public_key, f"{principal}")
    if mechanism != b"PLAIN" or len(credentials) != 2:
        return _refuse(f"a {mechanism.decode('ascii', 'replace')} handshake on a plain-text {port} port")
    user_text = credentials[0].decode("ascii", errors="replace")
    if credentials[1] != cluster_id.encode("ascii"):
        return _refuse(f"{user_text!r} of another cluster on the {port} port (its cluster id differs from {cluster_id})")
    claimed = parse_plaintext_user_id(user_text)
    if claimed is None:
        return _refuse(f"an invalid plain-text user name {user_text[:80]!r} on the {port} port")
    if claimed[0] not in KINDS_BY_PORT[port]:
        return _refuse(f"{user_text!r} on the {port} port, which serves only nodes")
    return ZapDecision(b"200", credentials[0], user_text)


class ZapHandler:
    """The ZAP thread of one context. `keyring` is read at every handshake, so a reload (the
    owner swapping what it returns) applies to the next connection."""

    def __init__(self, context: zmq.Context, mode: str, keyring: Callable[[], KeyRing],
                 reload_keys: Callable[[], bool] = lambda: False) -> None:
        """reload_keys: re-read the keys directory, True if the keyring changed. Called before
        refusing a key the keyring does not know: a key added since the last periodic reload
        (a node being added connects within milliseconds of its key file) is then accepted at
        its first handshake. libzmq never retries a connection whose handshake was refused."""
        assert mode in SECURITY_MODES, mode
        self._context = context
        self._mode = mode
        self._keyring = keyring
        self._reload_keys = reload_keys
        self._last_logged: dict[str, float] = {}
        self.handshakes_accepted = 0
        self.handshakes_refused = 0
        self._socket = context.socket(zmq.REP)
        self._socket.setsockopt(zmq.LINGER, 0)
        try:
            self._socket.bind(ZAP_ENDPOINT)
        except zmq.ZMQError:
            self._socket.close(linger=0)
            raise AssertionError("a second ZAP handler on one context: create one ServerSecurity per process") from None
        # close() wakes the thread through this pair (each end used by one thread only).
        stop_endpoint = f"inproc://sandstore-zap-stop-{id(self)}"
        self._stop_receiver = context.socket(zmq.PAIR)
        self._stop_receiver.bind(stop_endpoint)
        self._stop_sender = context.socket(zmq.PAIR)
        self._stop_sender.connect(stop_endpoint)
        self._thread = threading.Thread(target=self._run, name="zap", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        socket = self._socket
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        poller.register(self._stop_receiver, zmq.POLLIN)
        try:
            while True:
                ready = dict(poller.poll())
                if self._stop_receiver in ready:
                    break
                try:
                    request = socket.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    continue
                socket.send_multipart(self._answer(request))
        except zmq.ZMQError:  # the context is terminating
            pass
        finally:
            socket.close(linger=0)
            self._stop_receiver.close(linger=0)

    def _answer(self, request: list[bytes]) -> list[bytes]:
        if len(request) < 2:
            # Cannot happen with libzmq as the sender; a REP socket must still reply.
            return [ZAP_VERSION, b"", b"500", b"malformed ZAP request", b"", b""]
        request_id = request[1]
        if (len(request) < ZAP_REQUEST_FRAMES_MIN or request[0] != ZAP_VERSION
                or len(request) > ZAP_REQUEST_FRAMES_MIN + ZAP_CREDENTIAL_FRAMES_MAX):
            return [ZAP_VERSION, request_id, b"500", b"malformed ZAP request", b"", b""]
        _, _, domain, address, _, mechanism, *credentials = request
        try:
            decision = decide(self._mode, self._keyring(), domain, mechanism, credentials)
            if decision.unknown_key and self._reload_keys():
                decision = decide(self._mode, self._keyring(), domain, mechanism, credentials)
        except Exception:  # a bug here must refuse the connection, not end the thread
            log.exception("ZAP handler failed on a request; the connection is refused")
            decision = ZapDecision(b"500", b"", "internal error")
        if decision.accepted:
            self.handshakes_accepted += 1
        else:
            self.handshakes_refused += 1
            self._log_refusal(f"refused {decision.reason} from {address.decode('ascii', 'replace')}")
        return [ZAP_VERSION, request_id, decision.status, decision.reason.encode()[:255], decision.user_id, b""]

    def _log_refusal(self, line: str) -> None:
        now = time.monotonic()
        last = self._last_logged.get(line)
        if last is not None and now - last < REFUSAL_LOG_INTERVAL_SECONDS:
            return
        if len(self._last_logged) >= REFUSAL_LOG_ENTRIES_MAX:
            self._last_logged.clear()
        self._last_logged[line] = now
        log.warning("%s", line)

    def close(self) -> None:
        """Stop the thread; it closes its own sockets. Idempotent."""
        if self._stop_sender.closed:
            return
        self._stop_sender.send(b"stop")
        self._stop_sender.close(linger=0)
        self._thread.join(timeout=CLOSE_WAIT_SECONDS)
        assert not self._thread.is_alive(), "the ZAP thread did not stop"
