"""The partition workload: a cluster on separate (namespaced) hosts, its leader cut off under
writes, then healed.

Each node runs in its own network namespace with its own address, started with the documented
command (`sandstore node --config FILE --id ID`), binding the wildcard and advertising its host
address. The clients run in another namespace. A cut drops packets in the middle of the network
(sandctl/netlab.py), so the isolated leader sees silence, as it would on a real network.

Reported per repetition: milliseconds from the cut to the first acknowledged write sent after
it; from the heal to full recovery (every node answers and has applied the leader's commit
index as of the heal); the longest gap between acknowledged writes; the longest time any node
did not answer `status` after the heal; writes acknowledged and lost (must be 0).

And what a gap is made of: when the new leader took over (from its own record of leader
changes) and how many terms the election took (more than 1: a split vote or a candidate whose
log was behind), so the cluster's failover shows apart from the client's; and the attempts of
the writer whose acknowledgement ended the longest gap (each request's target and outcome).
Each node's `status` is probed by its own thread, so one silent node does not hold up the
others' probes, and a probe answered is timed when its answer arrives.

Needs root. The same NetCluster and ClientAgent serve the tests in tests/netns.

The client side runs as `python -m sandctl.bench_partition agent --config FILE` inside the
client namespace (the bench process itself stays in the root namespace): one JSON request per
line on stdin, one JSON answer per line on stdout. Times are time.monotonic(), which is one
clock for every process on the machine, so the caller compares them with its own.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from node.errors import NotFound, SandStoreError, TimedOut

from sandctl.netlab import NetLab, is_root

CLIENT_HOST = "client"
NODE_PORTS = {"raft": 7001, "client": 8001, "chunk": 9001}
WRITER_THREADS = 4
PAYLOAD_BYTES = 100
WRITER_ATTEMPT_TIMEOUT_SECONDS = 0.3  # as in the failover workload: a silent node is left quickly
WRITER_CALL_TIMEOUT_SECONDS = 10.0
STATUS_PROBE_INTERVAL_SECONDS = 0.05
STATUS_PROBE_TIMEOUT_SECONDS = 0.5  # the agent's "status" op (all nodes at once)
# One node's status probe: a node silent this long gets a new connection for its next probe.
NODE_PROBE_TIMEOUT_SECONDS = 0.2
WRITER_TRACE_EVENTS_MAX = 20_000  # per writer: the last attempts, for explaining a gap
AGENT_START_SECONDS = 60.0
AGENT_ANSWER_SECONDS = 120.0
NODE_START_SECONDS = 60.0
RECOVERY_DEADLINE_SECONDS = 60.0
POLL_SECONDS = 0.05  # pacing of polls of other processes, not test synchronisation
REPETITIONS_DEFAULT = 5
ISOLATION_SECONDS_DEFAULT = 8.0
STEADY_SECONDS = 2.0  # writes before the cut
NODE_COUNT = 5

# Everything else at its default: the isolated leader then lacks thousands of entries that the
# new leader sends from its log, the case that used to stall it (a test that wants a snapshot
# sets a small snapshot_threshold_entries).
NETNS_CLUSTER_SETTINGS = {"request_timeout_seconds": WRITER_CALL_TIMEOUT_SECONDS}


def _toml_value(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


class NetCluster:
    """Nodes n1..nN, node i on lab host "hi", each binding the wildcard and advertising its
    host's address. Processes are the lab's (killed by pid when the lab closes)."""

    def __init__(self, lab: NetLab, directory: Path, node_count: int, settings: dict | None = None, *,
                 bind_wildcard: bool = True) -> None:
        assert all(f"h{i}" in lab.host_names for i in range(1, node_count + 1))
        assert CLIENT_HOST in lab.host_names
        self.lab = lab
        self.directory = Path(directory)
        self.node_ids = [f"n{i}" for i in range(1, node_count + 1)]
        self.config_path = self.directory / "cluster.toml"
        self.data_dir = self.directory / "data"
        self.logs_dir = self.directory / "logs"
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        # Nodes and clients share one machine's disk here, so one keys directory serves them all
        # (on real hosts each node gets its own key: README, "Security").
        self.env = {**os.environ, "HOME": str(self.directory / "home"), "SANDSTORE_CONFIG": str(self.config_path),
                    "SANDSTORE_DATA_DIR": str(self.data_dir), "SANDSTORE_KEYS_DIR": str(self.data_dir / "keys")}
        self.processes: dict[str, subprocess.Popen] = {}
        # False: no *_bind settings, each node binds its advertised address (for comparing with
        # releases that had no separate bind address).
        self._bind_wildcard = bind_wildcard
        self._settings = {**NETNS_CLUSTER_SETTINGS, **(settings or {})}
        self._hosts = {node_id: f"h{i}" for i, node_id in enumerate(self.node_ids, start=1)}
        self.write_config(self.node_ids)

    def host(self, node_id: str) -> str:
        return self._hosts[node_id]

    def place(self, node_id: str, host: str) -> None:
        """Put a node that is not in the initial config on a lab host (for joins)."""
        assert host in self.lab.host_names and node_id not in self._hosts
        self._hosts[node_id] = host

    def address(self, node_id: str, role: str) -> str:
        return self.lab.host_port(self.host(node_id), NODE_PORTS[role])

    def node_lines(self, node_id: str) -> list[str]:
        wildcard = "[::]" if self.lab.ipv6 else "0.0.0.0"
        lines = ["[[nodes]]", f'id = "{node_id}"']
        for role, port in NODE_PORTS.items():
            lines.append(f'{role} = "{self.address(node_id, role)}"')
            if self._bind_wildcard:
                lines.append(f'{role}_bind = "{wildcard}:{port}"')
        return lines

    def write_config(self, node_ids: list[str]) -> None:
        lines = ["[cluster]", *(f"{key} = {_toml_value(value)}" for key, value in self._settings.items())]
        for node_id in node_ids:
            lines += ["", *self.node_lines(node_id)]
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, node_id: str, *, join: bool = False) -> subprocess.Popen:
        """`sandstore node --config FILE --id ID` inside the node's namespace."""
        try:
            from sandctl.keys import ensure_local_cluster_keys
        except ImportError:  # a release without keys (measuring the old behaviour)
            pass
        else:
            ensure_local_cluster_keys(self.data_dir, [node_id])
        argv = [str(Path(sys.executable).with_name("sandstore")), "node", "--config", str(self.config_path),
                "--id", node_id, "--data-dir", str(self.data_dir),
                "--log-file", str(self.logs_dir / f"{node_id}.log")]
        if join:
            argv.append("--join")
        process = self.lab.spawn(self.host(node_id), argv, env=self.env, stdout=subprocess.DEVNULL,
                                 stderr=open(self.logs_dir / f"{node_id}.err", "ab"))
        self.processes[node_id] = process
        return process

    def start_all(self) -> None:
        for node_id in self.node_ids:
            self.start(node_id)

    def kill(self, node_id: str) -> None:
        self.lab.stop(self.processes.pop(node_id), signal.SIGKILL)

    def sandctl(self, *args: str, timeout_seconds: float = 60.0) -> subprocess.CompletedProcess:
        """A `sandctl` command in the client namespace, against this cluster's config."""
        argv = [str(Path(sys.executable).with_name("sandctl")), *args]
        return self.lab.run(CLIENT_HOST, argv, timeout_seconds=timeout_seconds, env=self.env,
                            capture_output=True, text=True)

    def agent(self) -> "ClientAgent":
        return ClientAgent(self)


class ClientAgent:
    """The caller's handle on an agent process in the client namespace."""

    def __init__(self, cluster: NetCluster) -> None:
        self.cluster = cluster
        argv = [sys.executable, "-m", "sandctl.bench_partition", "agent", "--config", str(cluster.config_path)]
        self.process = cluster.lab.spawn(
            CLIENT_HOST, argv, env=cluster.env, cwd=str(Path(__file__).resolve().parent.parent),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(cluster.logs_dir / "agent.err", "ab"),
            text=True, bufsize=1,
        )
        self.ask({"op": "ping"}, AGENT_START_SECONDS)

    def ask(self, request: dict, timeout_seconds: float = AGENT_ANSWER_SECONDS) -> dict:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer: list[str] = []
        reader = threading.Thread(target=lambda: answer.append(self.process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout_seconds)
        if not answer or not answer[0]:
            raise SandStoreError(f"the client agent did not answer {request['op']} within {timeout_seconds:g} s")
        reply = json.loads(answer[0])
        if "error" in reply:
            raise SandStoreError(f"client agent: {reply['error']}")
        return reply

    # Conveniences for the callers (tests and the workload).

    def status(self) -> dict[str, dict | None]:
        return self.ask({"op": "status"})["nodes"]

    def wait(self, what: str, condition, deadline_seconds: float = RECOVERY_DEADLINE_SECONDS):
        """Poll `condition(self)` until it returns a truthy value; raise with `what` at the deadline."""
        deadline = time.monotonic() + deadline_seconds
        while True:
            value = condition(self)
            if value:
                return value
            if time.monotonic() > deadline:
                raise SandStoreError(f"not within {deadline_seconds:g} s: {what}")
            time.sleep(POLL_SECONDS)

    def leader(self) -> str | None:
        """Of the answering nodes that say they lead, the one with the highest term."""
        nodes = self.status()
        leaders = [(s["term"], node) for node, s in nodes.items() if s and s.get("role") == "leader"]
        return max(leaders)[1] if leaders else None

    def wait_for_leader(self, exclude: tuple[str, ...] = ()) -> str:
        def leader_not_excluded(agent: "ClientAgent") -> str | None:
            leader = agent.leader()
            return None if leader in exclude else leader

        return self.wait("a leader" + (f" other than {', '.join(exclude)}" if exclude else ""), leader_not_excluded)

    def caught_up(self, node_ids: list[str], commit_index: int) -> bool:
        nodes = self.status()
        return all(nodes.get(node) and nodes[node]["applied"] >= commit_index for node in node_ids)

    def first_ack_sent_after(self, moment: float) -> float | None:
        return self.ask({"op": "first_ack_sent_after", "moment": moment})["acknowledged_at"]

    def acks_sent_after(self, moment: float) -> int:
        return self.ask({"op": "acks_sent_after", "moment": moment})["count"]

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.ask({"op": "exit"}, 10.0)
            except (SandStoreError, OSError, ValueError):
                pass
        self.cluster.lab.stop(self.process, signal.SIGKILL)


# ----- the agent process (runs in the client namespace)


class _Agent:
    def __init__(self, config) -> None:
        from sandctl.client import Client

        self._config = config
        self._client = Client(config, timeout_seconds=WRITER_CALL_TIMEOUT_SECONDS,
                              attempt_timeout_seconds=WRITER_ATTEMPT_TIMEOUT_SECONDS)
        self._lock = threading.Lock()
        self._acks: list[tuple[float, float, str, int]] = []  # (sent_at, acknowledged_at, path, writer)
        self._traces: dict[int, collections.deque] = {}  # writer -> (time, node, outcome) of its attempts
        self._data_by_path: dict[str, bytes] = {}
        self._outcome_unknown = 0
        self._refused = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._answers: dict[str, list[float]] = {}  # node -> times it answered status

    def _writer(self, directory: str, number: int) -> None:
        from sandctl.client import Client

        filler = os.urandom(PAYLOAD_BYTES)
        with Client(self._config, timeout_seconds=WRITER_CALL_TIMEOUT_SECONDS,
                    attempt_timeout_seconds=WRITER_ATTEMPT_TIMEOUT_SECONDS) as client:
            self._traces[number] = _trace_attempts(client)
            sequence = 0
            while not self._stop.is_set():
                sequence += 1
                path = f"{directory}/w{number}-{sequence}"
                data = (path.encode() + filler)[:PAYLOAD_BYTES]
                sent_at = time.monotonic()
                try:
                    client.write_file(path, data, parents=True)
                except TimedOut:
                    with self._lock:
                        self._outcome_unknown += 1
                    continue
                except SandStoreError:
                    with self._lock:
                        self._refused += 1
                    self._stop.wait(POLL_SECONDS)
                    continue
                with self._lock:
                    self._acks.append((sent_at, time.monotonic(), path, number))
                    self._data_by_path[path] = data

    def _prober(self, node: str) -> None:
        """One node's status, often, to find how long it did not answer: each answer is timed
        when it arrives. A node silent for a probe gets a new client (new connection) for the
        next: this measures the node, not how soon an old connection notices the heal (that is
        the client library's business)."""
        from sandctl.client import Client

        client = None
        try:
            while not self._stop.is_set():
                if client is None:
                    client = Client(self._config, timeout_seconds=WRITER_CALL_TIMEOUT_SECONDS)
                answer = client.broadcast("status", {}, [node], timeout_seconds=NODE_PROBE_TIMEOUT_SECONDS)[node]
                now = time.monotonic()
                if isinstance(answer, dict):
                    with self._lock:
                        self._answers.setdefault(node, []).append(now)
                else:
                    client.close()
                    client = None
                self._stop.wait(STATUS_PROBE_INTERVAL_SECONDS)
        finally:
            if client is not None:
                client.close()

    def handle(self, request: dict) -> dict:
        op = request["op"]
        if op == "ping":
            return {}
        if op == "status":
            answers = self._client.status_all(STATUS_PROBE_TIMEOUT_SECONDS)
            return {"nodes": {node: _status_fields(answer) for node, answer in answers.items()}}
        if op == "start_writers":
            self._stop.clear()
            self._threads = [threading.Thread(target=self._writer, args=(request["directory"], number), daemon=True)
                             for number in range(request.get("threads", WRITER_THREADS))]
            self._threads += [threading.Thread(target=self._prober, args=(node.id,), daemon=True)
                              for node in self._config.nodes]
            for thread in self._threads:
                thread.start()
            return {}
        if op == "stop_writers":
            self._stop.set()
            for thread in self._threads:
                thread.join()
            with self._lock:
                return {"acknowledged": len(self._acks), "outcome_unknown": self._outcome_unknown,
                        "refused": self._refused}
        if op == "first_ack_sent_after":
            with self._lock:
                times = [acked for sent, acked, _, _ in self._acks if sent >= request["moment"]]
            return {"acknowledged_at": min(times) if times else None}
        if op == "acks_sent_after":
            with self._lock:
                return {"count": sum(1 for sent, _, _, _ in self._acks if sent >= request["moment"])}
        if op == "longest_ack_gap":
            with self._lock:
                acks = sorted((acked, writer) for _, acked, _, writer in self._acks
                              if request["start"] <= acked <= request["end"])
            edges = [(request["start"], None), *acks, (request["end"], None)]
            seconds, began_at, ended_by = max(((b[0] - a[0], a[0], b[1]) for a, b in zip(edges, edges[1:])),
                                              key=lambda gap: gap[:2])
            return {"seconds": seconds, "began_at": began_at, "ended_by_writer": ended_by}
        if op == "writer_trace":
            with self._lock:
                events = list(self._traces.get(request["writer"], ()))
            return {"events": [event for event in events if request["start"] <= event[0] <= request["end"]]}
        if op == "leader_changes":
            return self._leader_changes()
        if op == "longest_mute":
            with self._lock:
                gaps = {}
                for node, times in self._answers.items():
                    window = [t for t in times if request["start"] <= t <= request["end"]]
                    edges = [request["start"], *window, request["end"]]
                    gaps[node] = max(b - a for a, b in zip(edges, edges[1:]))
            return {"seconds_by_node": gaps}
        if op == "verify":
            return self._verify()
        if op == "exit":
            return {}
        return {"error": f"unknown op {op!r}"}

    def _leader_changes(self) -> dict:
        """Every node's record of leader changes ({term, leader, at}), `at` on this machine's
        monotonic clock (the nodes stamp them with the wall clock)."""
        wall_minus_monotonic = time.time() - time.monotonic()
        answers = self._client.broadcast("inspect_term", {}, timeout_seconds=STATUS_PROBE_TIMEOUT_SECONDS)
        changes = []
        for answer in answers.values():
            if isinstance(answer, dict):
                for change in answer.get("leader_changes") or ():
                    changes.append({"term": change["term"], "leader": change["leader"],
                                    "at": change["at_ms"] / 1000.0 - wall_minus_monotonic})
        return {"changes": changes}

    def _verify(self) -> dict:
        """Read every acknowledged write back (linearizable); missing or different is lost."""
        with self._lock:
            expected = dict(self._data_by_path)
        lost, unverified = [], 0
        for path, data in sorted(expected.items()):
            for _ in range(3):
                try:
                    _, stored = self._client.read(path)
                except NotFound:
                    lost.append(path)
                    break
                except SandStoreError:
                    continue
                if stored != data:
                    lost.append(path)
                break
            else:
                unverified += 1
        return {"acknowledged": len(expected), "lost": lost, "unverified": unverified}


def _trace_attempts(client) -> collections.deque:
    """Record (time, node, outcome) for each request `client` sends -- outcome "sent" or
    "unsent" -- and each reply it receives -- "ok" or the error code. For explaining a gap:
    the bench's own instrument, wrapped around the client's request engine."""
    events: collections.deque = collections.deque(maxlen=WRITER_TRACE_EVENTS_MAX)
    connections = client._connections
    request, poll = connections.request, connections.poll

    def traced_request(node, op, args, connect_wait_seconds=0.0):
        request_id = request(node, op, args, connect_wait_seconds)
        events.append((time.monotonic(), node, "unsent" if request_id is None else "sent"))
        return request_id

    def traced_poll(timeout_seconds):
        replies = poll(timeout_seconds)
        now = time.monotonic()
        for reply in replies:
            events.append((now, reply.node, "ok" if reply.ok else reply.code))
        return replies

    connections.request, connections.poll = traced_request, traced_poll
    return events


def _status_fields(answer: object) -> dict | None:
    """The few status fields callers use, from a node's status answer (None: no answer)."""
    if not isinstance(answer, dict):
        return None
    fields = ("role", "term", "leader", "commit", "applied", "snapshots_installed", "snapshots_sent",
              "snapshot_index", "voters", "voters_outgoing", "learners")
    result = {name: answer.get(name) for name in fields}
    transport = answer.get("transport") or {}
    result["reconnects"] = transport.get("reconnects")
    return result


def agent_main(config_path: str) -> None:
    from node.config import load_config

    agent = _Agent(load_config(config_path))
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer = agent.handle(request)
        except Exception as error:  # reported to the caller, which raises it
            answer = {"error": f"{type(error).__name__}: {error}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
        if request.get("op") == "exit":
            break
    os._exit(0)  # writer threads may still hold sockets; the caller already has its answers


# ----- the benchmark workload


def _one_repetition(agent: ClientAgent, lab: NetLab, cluster: NetCluster, isolation_seconds: float,
                    number: int) -> dict:
    leader = agent.wait_for_leader()
    start = time.monotonic()
    agent.ask({"op": "start_writers", "directory": f"/partition/r{number}"})
    agent.wait("writes before the cut", lambda a: a.acks_sent_after(start) > 0)
    steady_from = time.monotonic()
    time.sleep(STEADY_SECONDS)  # a steady stretch of writes before the cut: the workload, not a wait
    term_before = agent.status()[leader]["term"]
    before_cut = time.monotonic()
    lab.isolate(cluster.host(leader))
    cut_at = time.monotonic()  # the cut is complete: writes sent from now on cannot reach the old leader
    first_after_cut = agent.wait("a write acknowledged after the cut", lambda a: a.first_ack_sent_after(cut_at))
    time.sleep(max(0.0, cut_at + isolation_seconds - time.monotonic()))  # the isolation lasts this long
    new_leader = agent.wait_for_leader(exclude=(leader,))
    commit_at_heal = agent.status()[new_leader]["commit"]
    lab.heal()
    healed_at = time.monotonic()
    agent.wait("every node caught up after the heal", lambda a: a.caught_up(cluster.node_ids, commit_at_heal))
    recovered_at = time.monotonic()
    time.sleep(STEADY_SECONDS)  # writes after the heal, to see whether the heal disturbs them
    end = time.monotonic()
    stopped = agent.ask({"op": "stop_writers"})
    gap = agent.ask({"op": "longest_ack_gap", "start": before_cut, "end": end})
    steady_gap = agent.ask({"op": "longest_ack_gap", "start": steady_from, "end": before_cut})["seconds"]
    mute = agent.ask({"op": "longest_mute", "start": healed_at, "end": end})["seconds_by_node"]
    mute_during_cut = agent.ask({"op": "longest_mute", "start": cut_at, "end": healed_at})["seconds_by_node"]
    mute_during_cut.pop(leader, None)  # cut off: silent by design
    election = _election_after(agent.ask({"op": "leader_changes"})["changes"], term_before, cut_at)
    gap_end = gap["began_at"] + gap["seconds"]
    trace = []
    if gap["ended_by_writer"] is not None:
        trace = agent.ask({"op": "writer_trace", "writer": gap["ended_by_writer"], "start": gap["began_at"] - 0.5,
                           "end": gap_end})["events"]
    return {
        "isolated": leader,
        "new_leader": new_leader,
        "cut_to_ack_ms": round((first_after_cut - cut_at) * 1000.0, 1),
        # The cluster's part of the failover: the first leader of a later term took over then,
        # after this many terms (1: one clean election).
        "cut_to_leader_ms": election["cut_to_leader_ms"],
        "election_terms": election["terms"],
        "leader_to_ack_ms": (None if election["leader_at"] is None
                             else round((first_after_cut - election["leader_at"]) * 1000.0, 1)),
        "heal_to_recovered_ms": round((recovered_at - healed_at) * 1000.0, 1),
        "longest_ack_gap_ms": round(gap["seconds"] * 1000.0, 1),
        "longest_ack_gap_before_cut_ms": round(steady_gap * 1000.0, 1),  # the same measure with nothing cut
        # where it began: seconds after the cut (negative: before it); the heal came at isolation_seconds
        "longest_ack_gap_began_after_cut_s": round(gap["began_at"] - cut_at, 2),
        # what the writer that ended the gap did meanwhile: "ms after the gap began node outcome"
        "longest_ack_gap_attempts": [f"{(at - gap['began_at']) * 1000.0:+.0f} {node} {outcome}"
                                     for at, node, outcome in trace],
        "longest_status_silence_after_heal_ms": round(max(mute.values(), default=0.0) * 1000.0, 1),
        "status_silence_after_heal_ms_by_node": {node: round(seconds * 1000.0, 1) for node, seconds in sorted(mute.items())},
        # the nodes that were not cut off, while the cut lasted (a stall of the new leader shows here)
        "status_silence_during_cut_ms_by_node": {node: round(seconds * 1000.0, 1)
                                                 for node, seconds in sorted(mute_during_cut.items())},
        "writes_outcome_unknown": stopped["outcome_unknown"],
    }


def _election_after(changes: list[dict], term_before: int, cut_at: float) -> dict:
    """When the first leader of a term after term_before took over (as recorded by any node),
    and how many terms it took."""
    later = [change for change in changes if change["term"] > term_before]
    if not later:
        return {"leader_at": None, "cut_to_leader_ms": None, "terms": None}
    first = min(later, key=lambda change: (change["term"], change["at"]))
    taken_over_at = min(change["at"] for change in later if change["term"] == first["term"])
    return {"leader_at": taken_over_at, "cut_to_leader_ms": round((taken_over_at - cut_at) * 1000.0, 1),
            "terms": first["term"] - term_before}


def run_partition_bench(directory: Path, *, repetitions: int = REPETITIONS_DEFAULT,
                        isolation_seconds: float = ISOLATION_SECONDS_DEFAULT, node_count: int = NODE_COUNT,
                        bind_wildcard: bool = True, progress=lambda message: None) -> dict:
    """Start a node_count-node cluster in namespaces, isolate its leader `repetitions` times,
    verify every acknowledged write, tear everything down. Returns one result row."""
    assert repetitions > 0 and isolation_seconds > 0
    hosts = [f"h{i}" for i in range(1, node_count + 1)] + [CLIENT_HOST]
    with NetLab(hosts) as lab:
        cluster = NetCluster(lab, directory, node_count, bind_wildcard=bind_wildcard)
        cluster.start_all()
        agent = cluster.agent()
        try:
            agent.wait_for_leader()
            runs = []
            for number in range(1, repetitions + 1):
                progress(f"bench: partition {number}/{repetitions}: isolating the leader for {isolation_seconds:g} s")
                runs.append(_one_repetition(agent, lab, cluster, isolation_seconds, number))
            verified = agent.ask({"op": "verify"})
        finally:
            agent.close()
    return {
        "workload": "partition",
        "mode": f"leader isolated {isolation_seconds:g} s x{repetitions}",
        "outstanding": WRITER_THREADS,
        "runs": runs,
        "cut_to_ack_ms": [run["cut_to_ack_ms"] for run in runs],
        "cut_to_leader_ms": [run["cut_to_leader_ms"] for run in runs],
        "election_terms": [run["election_terms"] for run in runs],
        "heal_to_recovered_ms": [run["heal_to_recovered_ms"] for run in runs],
        "longest_ack_gap_ms": [run["longest_ack_gap_ms"] for run in runs],
        "longest_status_silence_after_heal_ms": [run["longest_status_silence_after_heal_ms"] for run in runs],
        "writes_acknowledged": verified["acknowledged"],
        "writes_lost": len(verified["lost"]),
        "writes_unverified": verified["unverified"],
    }


def partition_workload(context, progress=lambda message: None) -> list[dict]:
    """The `sandctl bench partition` step. It runs its own cluster in network namespaces (the
    configured cluster cannot be partitioned from here), so it needs root."""
    if not is_root():
        return [{"workload": "partition", "mode": "", "outstanding": WRITER_THREADS,
                 "unavailable": "needs root (it builds network namespaces)"}]
    directory = Path(tempfile.mkdtemp(prefix="partition-"))
    try:
        return [run_partition_bench(directory, isolation_seconds=max(context.duration_seconds, 1.0),
                                    progress=progress)]
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[0] == "agent" and argv[1] == "--config":
        agent_main(argv[2])
        return
    print("usage: python -m sandctl.bench_partition agent --config FILE", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
