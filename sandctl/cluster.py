"""A local supervisor: start, stop and kill the node processes of a cluster on this machine.

Each node runs detached (its own session) as
    python -m node.cli node --config CFG --id ID --data-dir DIR --log-file DIR/ID/node.log
and its pid is recorded in DIR/ID/node.pid. Only recorded pids are ever signalled, and only
while /proc says they are still a sandstore node with that id (pids get reused).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from node.config import ClusterConfig, NodeAddress, load_config, node_data_dir, render_config
from node.errors import NoLeader, Refused, SandStoreError, Unavailable

from sandctl import state
from sandctl.client import Client
from sandctl.errors import AlreadyRunning, NodeExited, NotRunning
from sandctl.keys import ensure_local_cluster_keys
from sandctl.output import seconds_text

PID_FILE_NAME = "node.pid"
LOG_FILE_NAME = "node.log"
CLUSTER_CONFIG_NAME = "cluster.toml"  # the cluster-local config written when the cluster grows
STOP_GRACE_SECONDS = 10.0  # SIGTERM first; SIGKILL whatever still runs after this
EXIT_WAIT_SECONDS = 5.0  # how long a SIGKILLed process may take to disappear
PROCESS_POLL_SECONDS = 0.02
EXEC_WAIT_SECONDS = 1.0  # a just-spawned process shows its command line within this
LEADER_ROUND_SECONDS = 0.5  # start checks its children for early death this often
LOG_TAIL_LINES = 5
EXITED_PEERS_WAIT_SECONDS = 3.0  # after one node exited during start, for the others' errors


@dataclass(frozen=True)
class NodeProcess:
    node_id: str
    pid: int | None  # recorded pid, None if no pid file
    alive: bool  # the recorded pid is a live sandstore node with this id
    log_file: Path


def free_ports(count: int) -> list[int]:
    """count distinct free TCP ports on 127.0.0.1 (all held open at once so none repeats)."""
    assert count >= 1
    held_sockets = []
    try:
        for _ in range(count):
            held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.bind(("127.0.0.1", 0))
            held_sockets.append(held)
        ports = [held.getsockname()[1] for held in held_sockets]
    finally:
        for held in held_sockets:
            held.close()
    assert len(set(ports)) == count
    return ports


def loopback_config(node_count: int, template: ClusterConfig | None = None, **settings) -> ClusterConfig:
    """A config of node_count nodes (n1, n2, ...) on free 127.0.0.1 ports, with the template's
    settings (else the defaults, replication capped by the node count) and `settings` on top."""
    assert node_count >= 1
    ports = free_ports(3 * node_count)
    nodes = tuple(
        NodeAddress(id=f"n{i + 1}", raft=f"127.0.0.1:{ports[3 * i]}", client=f"127.0.0.1:{ports[3 * i + 1]}",
                    chunk=f"127.0.0.1:{ports[3 * i + 2]}")
        for i in range(node_count)
    )
    if template is None:
        template = ClusterConfig(nodes=nodes, replication=min(3, node_count))
    return dataclasses.replace(template, nodes=nodes, path="", **settings)


def pid_file(data_dir: str | os.PathLike, node_id: str) -> Path:
    return node_data_dir(data_dir, node_id) / PID_FILE_NAME


def log_file(data_dir: str | os.PathLike, node_id: str) -> Path:
    return node_data_dir(data_dir, node_id) / LOG_FILE_NAME


def read_pid(data_dir: str | os.PathLike, node_id: str) -> int | None:
    try:
        text = pid_file(data_dir, node_id).read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def is_node_process(pid: int, node_id: str) -> bool:
    """True if pid is alive and is a sandstore node process for node_id."""
    try:
        # Reap it if it is our own exited child, so a zombie does not count as alive.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child (or already reaped): /proc decides
    try:
        command_line = _command_line(pid)
    except FileNotFoundError:
        return False
    except OSError:  # no /proc on this system: fall back to "some process has this pid"
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    if command_line is None:
        return False
    arguments = command_line.split(b"\0")
    is_sandstore = any(argument == b"node.cli" or argument.endswith(b"sandstore") for argument in arguments)
    node_id_bytes = node_id.encode()
    has_id = any(
        arguments[position] == b"--id" and arguments[position + 1] == node_id_bytes
        for position in range(len(arguments) - 1)
    )
    return is_sandstore and has_id


def _command_line(pid: int) -> bytes | None:
    """/proc/<pid>/cmdline, or None for a zombie. The command line reads empty for a moment
    while a process is inside exec() (even after Popen returned), and for good once it is a
    zombie: wait out the first, report the second."""
    deadline = time.monotonic() + EXEC_WAIT_SECONDS
    while True:
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
        if command_line:
            return command_line
        stat_text = Path(f"/proc/{pid}/stat").read_text()
        state_letter = stat_text.rsplit(")", 1)[1].split()[0]
        if state_letter in ("Z", "X") or time.monotonic() >= deadline:
            return None
        time.sleep(PROCESS_POLL_SECONDS / 4)


def node_process(data_dir: str | os.PathLike, node_id: str) -> NodeProcess:
    pid = read_pid(data_dir, node_id)
    alive = pid is not None and is_node_process(pid, node_id)
    return NodeProcess(node_id=node_id, pid=pid, alive=alive, log_file=log_file(data_dir, node_id))


def node_processes(config: ClusterConfig, data_dir: str | os.PathLike) -> list[NodeProcess]:
    return [node_process(data_dir, node_id) for node_id in config.node_ids()]


def spawn_node(config: ClusterConfig, data_dir: str | os.PathLike, node_id: str, *, join: bool = False) -> int:
    """Start one node detached and record its pid. Refuses if it is already running.

    join=True starts a node that an existing cluster is about to add (it must not bootstrap
    a membership of its own)."""
    config.node(node_id)  # ConfigError for an unknown id
    assert config.path, "a spawned node reads its config from a file"
    current = node_process(data_dir, node_id)
    if current.alive:
        raise AlreadyRunning(f"node {node_id} is already running (pid {current.pid})")
    directory = node_data_dir(data_dir, node_id)
    directory.mkdir(parents=True, exist_ok=True)
    ensure_local_cluster_keys(data_dir, [node_id])  # the cluster's keys on first start; kept after
    log_path = log_file(data_dir, node_id)
    command = [
        sys.executable, "-m", "node.cli", "node",
        "--config", str(Path(config.path).resolve()),
        "--id", node_id,
        "--data-dir", str(Path(data_dir).resolve()),
        "--log-file", str(log_path.resolve()),
    ] + (["--join"] if join else [])
    with open(log_path, "ab") as log:
        # Own session: a Ctrl-C in the terminal that ran `cluster start` must not reach it.
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True
        )
    temporary = directory / (PID_FILE_NAME + ".tmp")
    temporary.write_text(f"{process.pid}\n")
    os.replace(temporary, pid_file(data_dir, node_id))
    return process.pid


def _wait_gone(pids_by_node: dict[str, int], deadline: float) -> set[str]:
    """Wait until every process is gone or the deadline; returns the nodes still alive."""
    remaining = dict(pids_by_node)
    while True:
        remaining = {node_id: pid for node_id, pid in remaining.items() if is_node_process(pid, node_id)}
        if not remaining or time.monotonic() >= deadline:
            return set(remaining)
        time.sleep(PROCESS_POLL_SECONDS)


def _signal(pid: int, signal_number: int) -> None:
    try:
        os.kill(pid, signal_number)
    except ProcessLookupError:
        pass  # it exited between the check and the signal: that is what we wanted


def stop_nodes(
    data_dir: str | os.PathLike, node_ids: list[str], grace_seconds: float = STOP_GRACE_SECONDS
) -> dict[str, str]:
    """SIGTERM the recorded pids, SIGKILL those still alive after grace_seconds, remove the
    pid files. Returns {node: "stopped" | "killed" | "not running"}."""
    outcomes: dict[str, str] = {}
    running: dict[str, int] = {}
    for node_id in node_ids:
        process = node_process(data_dir, node_id)
        if process.alive:
            assert process.pid is not None
            running[node_id] = process.pid
            _signal(process.pid, signal.SIGTERM)
        else:
            outcomes[node_id] = "not running"
    stubborn = _wait_gone(running, time.monotonic() + grace_seconds)
    for node_id in stubborn:
        _signal(running[node_id], signal.SIGKILL)
    still_alive = _wait_gone({node_id: running[node_id] for node_id in stubborn}, time.monotonic() + EXIT_WAIT_SECONDS)
    if still_alive:
        raise SandStoreError(f"nodes {', '.join(sorted(still_alive))} survived SIGKILL")
    for node_id in running:
        outcomes[node_id] = "killed" if node_id in stubborn else "stopped"
    for node_id in node_ids:
        pid_file(data_dir, node_id).unlink(missing_ok=True)  # stale ones too: nothing runs now
    return {node_id: outcomes[node_id] for node_id in node_ids}


def stop_node(data_dir: str | os.PathLike, node_id: str, grace_seconds: float = STOP_GRACE_SECONDS) -> str:
    if not node_process(data_dir, node_id).alive:
        raise NotRunning(f"node {node_id} is not running")
    return stop_nodes(data_dir, [node_id], grace_seconds)[node_id]


def kill_node(data_dir: str | os.PathLike, node_id: str) -> int:
    """SIGKILL one node (a crash, for testing), wait until it is gone; returns its pid."""
    process = node_process(data_dir, node_id)
    if not process.alive:
        raise NotRunning(f"node {node_id} is not running")
    assert process.pid is not None
    _signal(process.pid, signal.SIGKILL)
    if _wait_gone({node_id: process.pid}, time.monotonic() + EXIT_WAIT_SECONDS):
        raise SandStoreError(f"node {node_id} (pid {process.pid}) survived SIGKILL")
    pid_file(data_dir, node_id).unlink(missing_ok=True)
    return process.pid


def _log_tail(data_dir: str | os.PathLike, node_id: str) -> str:
    try:
        lines = log_file(data_dir, node_id).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return " | ".join(line.strip() for line in lines[-LOG_TAIL_LINES:]) or "(empty log)"


def wait_for_leader_while_alive(
    client: Client, data_dir: str | os.PathLike, pids_by_node: dict[str, int], deadline_seconds: float,
    exclude: tuple[str, ...] = (),
) -> str:
    """wait_for_leader, but fail fast with the log tail if a node we just started exits."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        _raise_if_exited(data_dir, pids_by_node)
        remaining = deadline - time.monotonic()
        try:
            return client.wait_for_leader(min(LEADER_ROUND_SECONDS, max(remaining, 0.001)), exclude=exclude)
        except (NoLeader, Unavailable) as error:
            if time.monotonic() >= deadline:
                # The round's own message would name the last round's slice of the deadline.
                waited = seconds_text(deadline_seconds)
                if isinstance(error, NoLeader):
                    raise NoLeader(f"no leader was elected within {waited}") from None
                raise Unavailable(f"no node answered within {waited}") from None


def _raise_if_exited(data_dir: str | os.PathLike, pids_by_node: dict[str, int]) -> None:
    """NodeExited naming every node that exited, each with its own error (the last error line
    of its log, else the end of it). Once one exited, the others get EXITED_PEERS_WAIT_SECONDS
    to exit too (they often fail the same way a moment later), so each one's error is shown."""
    if all(is_node_process(pid, node_id) for node_id, pid in pids_by_node.items()):
        return
    deadline = time.monotonic() + EXITED_PEERS_WAIT_SECONDS
    while True:
        alive = {node_id for node_id, pid in pids_by_node.items() if is_node_process(pid, node_id)}
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(PROCESS_POLL_SECONDS)
    raise NodeExited("\n  ".join(
        f"node {node_id} (pid {pid}) was still starting; stopped" if node_id in alive
        else f"node {node_id} (pid {pid}) exited: {_node_error(data_dir, node_id)}"
        for node_id, pid in pids_by_node.items()))


def _node_error(data_dir: str | os.PathLike, node_id: str) -> str:
    """The node's own error line (what it printed before exiting), else its log's end."""
    try:
        lines = log_file(data_dir, node_id).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    errors = [line.strip() for line in lines if line.startswith("Error: ")]
    return errors[-1] if errors else _log_tail(data_dir, node_id)


def _verify_started(client: Client, data_dir: str | os.PathLike, pids: dict[str, int], cluster_id: str,
                    deadline_seconds: float) -> None:
    """Every node started here answers from the process we started (its pid: it holds its
    port, not some other process) as a member of this cluster (its cluster id). Otherwise
    NodeExited naming each node's problem: a leader alone proves nothing, it may be another
    cluster's on the same ports."""
    deadline = time.monotonic() + deadline_seconds
    problems: dict[str, str] = {}
    while True:
        _raise_if_exited(data_dir, pids)
        answers = client.broadcast("status", {}, list(pids), timeout_seconds=LEADER_ROUND_SECONDS)
        problems = {}
        for node_id, pid in pids.items():
            answer = answers.get(node_id)
            if not isinstance(answer, dict):
                problems[node_id] = f"node {node_id} (pid {pid}) does not answer on {config_address(client, node_id)}"
            elif answer.get("pid") != pid:
                problems[node_id] = (f"{config_address(client, node_id)} is answered by pid {answer.get('pid')}, not by "
                                     f"node {node_id} started here (pid {pid}): another process holds the port")
            elif (answer.get("security") or {}).get("cluster_id") != cluster_id:
                problems[node_id] = (f"node {node_id} answers as cluster {(answer.get('security') or {}).get('cluster_id')}"
                                     f", not {cluster_id}")
        if not problems:
            return
        if time.monotonic() >= deadline:
            raise NodeExited("\n  ".join(problems[node_id] for node_id in sorted(problems)))


def config_address(client: Client, node_id: str) -> str:
    return client.addresses.get(node_id, "?")


def start_cluster(config: ClusterConfig, data_dir: str | os.PathLike, deadline_seconds: float) -> tuple[dict[str, int], str]:
    """Start every node, wait for a leader. Returns ({node: pid}, leader id).

    Refuses (nothing started) if any node is already running. If a node exits during start, or
    a node's port is answered by another process or another cluster, the others are stopped
    again and NodeExited names each node's problem (with the end of its log).
    """
    running = [process for process in node_processes(config, data_dir) if process.alive]
    if running:
        names = ", ".join(f"{process.node_id} (pid {process.pid})" for process in running)
        raise AlreadyRunning(f"already running: {names}; use sandctl cluster stop first")
    pids: dict[str, int] = {}
    try:
        for node_id in config.node_ids():
            pids[node_id] = spawn_node(config, data_dir, node_id)
        with Client(config, timeout_seconds=deadline_seconds, data_dir=data_dir) as client:
            leader = wait_for_leader_while_alive(client, data_dir, pids, deadline_seconds)
            _verify_started(client, data_dir, pids, client.security.cluster_id, deadline_seconds)
    except NodeExited:
        stop_nodes(data_dir, list(pids))
        raise
    return pids, leader


def stop_cluster(config: ClusterConfig, data_dir: str | os.PathLike, grace_seconds: float = STOP_GRACE_SECONDS) -> dict[str, str]:
    return stop_nodes(data_dir, config.node_ids(), grace_seconds)


@dataclass(frozen=True)
class KillLeaderResult:
    old_leader: str
    killed_pid: int
    new_leader: str
    leaderless_ms: float  # from SIGKILL until a new leader was observed (an upper bound)
    restarted_pid: int | None


def kill_leader(
    config: ClusterConfig, data_dir: str | os.PathLike, *, restart: bool = False, deadline_seconds: float = 10.0
) -> KillLeaderResult:
    with Client(config, timeout_seconds=deadline_seconds, data_dir=data_dir) as client:
        old_leader = client.wait_for_leader(deadline_seconds)
        process = node_process(data_dir, old_leader)
        if not process.alive:
            raise NotRunning(f"the leader {old_leader} is not a process started from {data_dir}")
        killed_at = time.monotonic()
        killed_pid = kill_node(data_dir, old_leader)
        new_leader = client.wait_for_leader(deadline_seconds, exclude=(old_leader,))
        leaderless_ms = (time.monotonic() - killed_at) * 1000.0
    restarted_pid = spawn_node(config, data_dir, old_leader) if restart else None
    return KillLeaderResult(old_leader, killed_pid, new_leader, leaderless_ms, restarted_pid)


def write_cluster_config(config: ClusterConfig, data_dir: str | os.PathLike) -> ClusterConfig:
    """Write config as <data dir>/cluster.toml, remember it, and return it as loaded back."""
    path = Path(data_dir) / CLUSTER_CONFIG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".toml.tmp")
    temporary.write_text(render_config(config))
    os.replace(temporary, path)
    state.remember(path, data_dir)
    return load_config(path)


def remove_voter(config: ClusterConfig, data_dir: str | os.PathLike, node_id: str, *, deadline_seconds: float) -> dict:
    """Remove node_id from the membership (through joint consensus, by the leader). Once the
    change is applied: stop its process if this machine supervises it, and drop it from the
    remembered <data dir>/cluster.toml so later commands and restarts no longer expect it."""
    with Client(config, timeout_seconds=deadline_seconds, data_dir=data_dir) as client:
        result = client.remove_node(node_id)
    process = node_process(data_dir, node_id)
    outcome = stop_nodes(data_dir, [node_id])[node_id] if process.alive else "not running here"
    remaining = tuple(address for address in config.nodes if address.id != node_id)
    if remaining and len(remaining) < len(config.nodes):
        config = write_cluster_config(dataclasses.replace(config, nodes=remaining), data_dir)
    return {"node": node_id, "process": outcome, "config": config.path, **(result or {})}


def add_voter(
    config: ClusterConfig, data_dir: str | os.PathLike, address: NodeAddress, *, spawn: bool, deadline_seconds: float
) -> dict:
    """Add a node as a learner, let it catch up, promote it to voter.

    spawn=True first writes the grown config to <data dir>/cluster.toml (remembered for
    later commands) and starts the new node from it on this machine.
    """
    pid = None
    if spawn:
        config = write_cluster_config(config.with_node(address), data_dir)
        pid = spawn_node(config, data_dir, address.id, join=True)
    deadline = time.monotonic() + deadline_seconds
    with Client(config, timeout_seconds=deadline_seconds, data_dir=data_dir) as client:
        client.add_learner(address.id, address.raft, address.client, address.chunk)
        leader = client.leader or client.wait_for_leader(deadline_seconds)
        target_index = client.status(leader).get("commit", 0)
        _wait_caught_up(client, address.id, target_index, deadline)
        while True:
            try:
                client.promote(address.id)
                break
            except Refused:
                # The leader refuses to promote a learner that is still behind: wait for it.
                if time.monotonic() >= deadline:
                    raise
                time.sleep(LEADER_ROUND_SECONDS / 5)
    return {"node": address.id, "pid": pid, "caught_up_to": target_index}


def _wait_caught_up(client: Client, node_id: str, index: int, deadline: float) -> None:
    """Best effort: wait until the new node has applied index. If it cannot be asked (it runs
    elsewhere and is unreachable), leave the decision to the leader's promote check."""
    while time.monotonic() < deadline:
        answers = client.broadcast("status", {}, [node_id], timeout_seconds=LEADER_ROUND_SECONDS)
        answer = answers.get(node_id)
        if isinstance(answer, dict) and answer.get("applied", 0) >= index:
            return
        time.sleep(PROCESS_POLL_SECONDS)
