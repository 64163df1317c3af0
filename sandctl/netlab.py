"""A small network of Linux network namespaces, for partitions that look like real ones.

Layout: every host (a node, or the client) is a namespace with one veth to a `hub` namespace
that routes between them, each host on its own /24 (IPv4) or /64 (IPv6) subnet. A cut is a
policy rule in the hub (`ip rule add from A to B blackhole`): packets vanish in the middle of
the network, so the ends see silence -- no refused connection, no error, exactly what a
partition between machines looks like. Cuts are per direction; `heal` removes them all.

Nothing touches the root namespace: names start with a per-run prefix, addresses are private to
the lab's namespaces, and `close` kills the processes it started (by pid) and deletes the
namespaces, which deletes their links, routes and rules. A run killed before its teardown
(SIGKILL, a CI timeout) leaves empty namespaces behind; the next lab deletes those whose
process is gone (`sweep_stale_labs`). Needs root (CAP_NET_ADMIN) and iproute2; no iptables.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
from collections.abc import Sequence

HUB = "hub"
NAME_PREFIX = "ss"  # every namespace is ss<pid>-<lab number>-<host>
NETNS_DIRECTORY = "/run/netns"
CUT_RULE_PRIORITY_MIN = 1000  # below the main table's 32766
IP_COMMAND_TIMEOUT_SECONDS = 20.0
PROCESS_STOP_SECONDS = 10.0

_lab_numbers = itertools.count(1)


class LabError(RuntimeError):
    """An `ip` command failed (not root, no iproute2, or the kernel refused)."""


def is_root() -> bool:
    return os.geteuid() == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_labs() -> list[str]:
    """Delete the namespaces of labs whose process is gone (killed before its teardown could
    run) and that hold no process. Returns the names deleted."""
    try:
        names = os.listdir(NETNS_DIRECTORY)
    except FileNotFoundError:
        return []
    deleted = []
    for name in names:
        owner = name.split("-", 1)[0].removeprefix(NAME_PREFIX)
        if not name.startswith(NAME_PREFIX) or not owner.isdigit() or _pid_alive(int(owner)):
            continue
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
        if not pids:
            _ip("netns", "del", name)
            deleted.append(name)
    return deleted


def _ip(*args: str) -> None:
    try:
        result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_COMMAND_TIMEOUT_SECONDS)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise LabError(f"ip {' '.join(args)}: {error}") from None
    if result.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {result.stderr.strip()}")


class NetLab:
    """Hosts in namespaces around a routing hub. Use as a context manager (close in finally)."""

    def __init__(self, host_names: Sequence[str], *, ipv6: bool = False) -> None:
        assert host_names and len(set(host_names)) == len(host_names)
        assert len(host_names) < 250
        self.ipv6 = ipv6
        sweep_stale_labs()
        self.prefix = f"{NAME_PREFIX}{os.getpid()}-{next(_lab_numbers)}"
        self.host_names = list(host_names)
        self._namespaces: list[str] = []
        self._processes: list[subprocess.Popen] = []
        self._cut_priorities: list[int] = []
        self._next_priority = CUT_RULE_PRIORITY_MIN
        try:
            self._create()
        except BaseException:
            self.close()
            raise

    # ----- layout

    def namespace(self, host: str) -> str:
        assert host == HUB or host in self.host_names, host
        return f"{self.prefix}-{host}"

    def address(self, host: str) -> str:
        """The host's IP address as a literal (no brackets)."""
        number = self.host_names.index(host) + 1
        return f"fd77:0:0:{number:x}::2" if self.ipv6 else f"10.77.{number}.2"

    def host_port(self, host: str, port: int) -> str:
        """"address:port" as a config writes it (IPv6 in brackets)."""
        address = self.address(host)
        return f"[{address}]:{port}" if self.ipv6 else f"{address}:{port}"

    def _gateway(self, number: int) -> tuple[str, str]:
        if self.ipv6:
            return f"fd77:0:0:{number:x}::1", "64"
        return f"10.77.{number}.1", "24"

    def _create(self) -> None:
        hub = self.namespace(HUB)
        self._add_namespace(hub)
        family = "-6" if self.ipv6 else "-4"
        _ip("netns", "exec", hub, "sysctl", "-q", "-w",
            "net.ipv6.conf.all.forwarding=1" if self.ipv6 else "net.ipv4.ip_forward=1")
        for number, host in enumerate(self.host_names, start=1):
            namespace = self.namespace(host)
            self._add_namespace(namespace)
            hub_side = f"v{number}"
            # Created inside the hub with its peer moved straight into the host: nothing ever
            # appears in the root namespace, so parallel runs cannot collide on link names.
            _ip("-n", hub, "link", "add", hub_side, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            gateway, length = self._gateway(number)
            nodad = ["nodad"] if self.ipv6 else []
            _ip("-n", hub, family, "addr", "add", f"{gateway}/{length}", "dev", hub_side, *nodad)
            _ip("-n", hub, "link", "set", hub_side, "up")
            _ip("-n", namespace, family, "addr", "add", f"{self.address(host)}/{length}", "dev", "eth0", *nodad)
            _ip("-n", namespace, "link", "set", "eth0", "up")
            _ip("-n", namespace, family, "route", "add", "default", "via", gateway)

    def _add_namespace(self, namespace: str) -> None:
        _ip("netns", "add", namespace)
        self._namespaces.append(namespace)
        _ip("-n", namespace, "link", "set", "lo", "up")

    # ----- cuts

    def cut(self, source: str, target: str) -> None:
        """Drop every packet from `source` to `target` (one direction) in the hub."""
        self._blackhole("from", self.address(source), "to", self.address(target))

    def cut_both(self, first: str, second: str) -> None:
        self.cut(first, second)
        self.cut(second, first)

    def isolate(self, host: str) -> None:
        """Cut `host` off from every other host, clients included, in both directions."""
        self._blackhole("from", self.address(host))
        self._blackhole("to", self.address(host))

    def _blackhole(self, *selector: str) -> None:
        priority = self._next_priority
        self._next_priority += 1
        _ip("-n", self.namespace(HUB), "-6" if self.ipv6 else "-4", "rule", "add", *selector,
            "blackhole", "priority", str(priority))
        self._cut_priorities.append(priority)

    def heal(self) -> None:
        """Remove every cut."""
        while self._cut_priorities:
            priority = self._cut_priorities.pop()
            _ip("-n", self.namespace(HUB), "-6" if self.ipv6 else "-4", "rule", "del", "priority", str(priority))

    # ----- processes

    def command(self, host: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(host), *argv]

    def spawn(self, host: str, argv: Sequence[str], **popen_options) -> subprocess.Popen:
        """Start argv inside `host`; `ip netns exec` execs it, so the pid is the program's."""
        process = subprocess.Popen(self.command(host, argv), **popen_options)
        self._processes.append(process)
        return process

    def run(self, host: str, argv: Sequence[str], *, timeout_seconds: float, **run_options) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(host, argv), timeout=timeout_seconds, **run_options)

    def stop(self, process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
        """Stop one process this lab started (by pid), escalating to SIGKILL."""
        assert process in self._processes
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(PROCESS_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.remove(process)

    # ----- teardown

    def close(self) -> None:
        """Kill what was started, delete every namespace. Safe to call twice, and after a
        half-finished setup."""
        for process in list(self._processes):
            self.stop(process, signal.SIGKILL)
        self._cut_priorities.clear()
        errors = []
        while self._namespaces:
            namespace = self._namespaces.pop()
            try:
                _ip("netns", "del", namespace)
            except LabError as error:
                errors.append(str(error))
        if errors:
            raise LabError("; ".join(errors))

    def __enter__(self) -> "NetLab":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
