"""Network addresses as the config writes them ("host:port") and as ZeroMQ wants them.

A host is one of:
- an IPv4 literal, `10.0.0.5:7001` (`0.0.0.0` binds every IPv4 interface);
- an IPv6 literal in brackets, `[fd00::5]:7001` (`[::]` binds every interface, IPv4 too on
  Linux's default dual-stack sockets);
- a DNS name, `node1.example.com:7001`. ZeroMQ resolves it when it opens each TCP connection,
  not when `connect` is called, and again on every reconnect (libzmq's tcp_connecter re-runs the
  resolver in `open()`), so a host that moves to a new address is found again after its next
  reconnect. Resolution asks for IPv4 (A) records: with ZMQ_IPV6 set, libzmq asks for AF_INET6
  with V4MAPPED and would prefer `::1` for `localhost` even when the node bound 127.0.0.1.
  A cluster on IPv6 names its hosts with bracketed literals.

Sockets that use an IPv6 literal get ZMQ_IPV6: without it libzmq refuses the endpoint.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import zmq

HOST_NAME_BYTES_MAX = 253  # RFC 1035, without the trailing dot
HOST_LABEL_BYTES_MAX = 63


class AddressError(ValueError):
    """An address is not "host:port" with a valid host and a port in 1..65535."""


@dataclass(frozen=True)
class HostPort:
    host: str  # without brackets
    port: int  # 0 only for "host:*" (let the system choose), which config files never use
    family: str  # "ipv4", "ipv6" or "name"

    def __str__(self) -> str:
        host = f"[{self.host}]" if self.family == "ipv6" else self.host
        return f"{host}:{self.port or '*'}"

    @property
    def is_wildcard(self) -> bool:
        return self.family != "name" and ipaddress.ip_address(self.host).is_unspecified

    @property
    def is_loopback(self) -> bool:
        if self.family == "name":
            return self.host == "localhost"
        return ipaddress.ip_address(self.host).is_loopback


def _is_host_name(host: str) -> bool:
    if not host or len(host) > HOST_NAME_BYTES_MAX or not host.isascii():
        return False
    labels = host.split(".")
    for label in labels:
        if not 0 < len(label) <= HOST_LABEL_BYTES_MAX:
            return False
        if label.startswith("-") or label.endswith("-"):
            return False
        if not label.replace("-", "").replace("_", "").isalnum():
            return False
    # An all-numeric dotted name would be read as a (bad) IPv4 literal by the resolver.
    return not labels[-1].isdigit()


def parse_host_port(text: object, *, allow_any_port: bool = False) -> HostPort:
    """"host:port" -> HostPort, or AddressError with a sentence saying what is wrong.
    `allow_any_port` accepts "host:*" (tests that let the system pick a port)."""
    if not isinstance(text, str) or ":" not in text:
        raise AddressError(f"must be \"host:port\", got {text!r}")
    host, _, port_text = text.rpartition(":")
    if port_text == "*" and allow_any_port:
        port = 0
    elif port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536:
        port = int(port_text)
    else:
        raise AddressError(f"has an invalid port in {text!r} (1-65535)")
    if host.startswith("[") and host.endswith("]"):
        try:
            literal = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise AddressError(f"has an invalid IPv6 address in {text!r}") from None
        return HostPort(str(literal), port, "ipv6")
    if ":" in host:
        raise AddressError(f"has an IPv6 address without brackets in {text!r} (write [addr]:port)")
    try:
        return HostPort(str(ipaddress.IPv4Address(host)), port, "ipv4")
    except ValueError:
        pass
    if not _is_host_name(host):
        raise AddressError(f"must name an IPv4 address, [IPv6 address] or DNS name, got {host!r}")
    return HostPort(host.lower(), port, "name")


def tcp_endpoint(address: str) -> str:
    """"127.0.0.1:7001" -> "tcp://127.0.0.1:7001"; an endpoint already prefixed passes as is."""
    assert isinstance(address, str) and address, address
    if address.startswith("tcp://"):
        return address
    return "tcp://" + str(parse_host_port(address, allow_any_port=True))


def uses_ipv6(address: str) -> bool:
    return parse_host_port(address.removeprefix("tcp://"), allow_any_port=True).family == "ipv6"


def bind_socket(socket: zmq.Socket, address: str) -> None:
    """Bind `socket` to "host:port" (or a tcp:// endpoint), enabling IPv6 when it needs it."""
    if uses_ipv6(address):
        socket.setsockopt(zmq.IPV6, 1)
    socket.bind(tcp_endpoint(address))


def connect_socket(socket: zmq.Socket, address: str) -> None:
    """Connect `socket` to "host:port" (or a tcp:// endpoint), enabling IPv6 when it needs it."""
    if uses_ipv6(address):
        socket.setsockopt(zmq.IPV6, 1)
    socket.connect(tcp_endpoint(address))


def bound_address(socket: zmq.Socket) -> str:
    """The "host:port" a socket actually bound (after "host:*" asked the system for a port)."""
    return socket.getsockopt_string(zmq.LAST_ENDPOINT).removeprefix("tcp://")
