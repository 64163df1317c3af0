"""Which node a metadata call goes to, and what the caller learns when none could serve it.

Try the last known leader, else the nodes in config order; NOT_LEADER with a hint goes straight
to the hinted node; NO_LEADER, an unreachable node or a silent one backs off and tries the next
node, until the call's deadline. Then the caller learns whether anything may have changed:
TimedOut (a write reached a node and its outcome is unknown) or Unavailable (nothing could
have changed).

A follower serves a request by forwarding it to the leader, so a client that landed on one
(the leader was slow to connect, or unknown) would stay there, paying a hop per request. After
a success from a node it does not know to lead, the client asks that node's status in the
background; its "leader" field (a leader hint) sends the next call to the leader.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator

from node.errors import ERRORS_BY_CODE, NotLeader, TimedOut, Unavailable

from sandctl.connection import Connections, Reply

# How long one attempt waits for its reply before the next node is tried (capped by the
# call's deadline). Writes commit in milliseconds on a healthy cluster, so a second of
# silence means the node is stuck or partitioned.
ATTEMPT_TIMEOUT_SECONDS = 1.0
# How long to wait for a connection to a node before counting it as down for this attempt.
# The socket keeps connecting in the background, so a slow handshake succeeds next round.
CONNECT_WAIT_SECONDS = 0.25
# A silent node (its connection closed, or it let an attempt time out) gets only this long: a
# killed node has no connection to come up, and a quarter second spent waiting for one, while
# the survivors had long elected a new leader, fits a kill seen at 309.5 ms with its new leader
# at 23.5 ms.
# Its socket keeps reconnecting in the background, so a node that comes back is found next round.
SILENT_CONNECT_WAIT_SECONDS = 0.01
BACKOFF_SECONDS_MIN = 0.01
BACKOFF_SECONDS_MAX = 0.2
# For this long after a call starts its backoff stays at the minimum before it doubles: a
# crashed leader is replaced in tens of milliseconds (its followers see its connections close),
# and a doubling backoff (10, 20, 40 ms) waited up to twice that past the new leader.
FAST_RETRY_SECONDS = 0.1
# A node known to lead is asked again after this long (in the background, after a success):
# a deposed leader keeps answering by forwarding, and the client should follow the new one.
LEADER_CONFIRMATION_SECONDS = 2.0
# A node that let an attempt time out is left out of the rotation this long, unless it answers
# or is named leader meanwhile (LeaderTracker.silent).
SILENCE_REMEMBERED_SECONDS = 5.0

assert BACKOFF_SECONDS_MIN < BACKOFF_SECONDS_MAX
assert FAST_RETRY_SECONDS <= ATTEMPT_TIMEOUT_SECONDS
assert SILENT_CONNECT_WAIT_SECONDS <= CONNECT_WAIT_SECONDS <= ATTEMPT_TIMEOUT_SECONDS

# Error codes that say "this attempt changed nothing, ask again (elsewhere)".
RETRY_NOTHING_CHANGED = frozenset(code for code, error in ERRORS_BY_CODE.items() if error.retryable)
# A node that gave up waiting for its own commit: the write may still be applied; retrying
# with the same seq is safe and finds out.
RETRY_OUTCOME_UNKNOWN = frozenset({"TIMEOUT"})


def _is_final(reply: Reply) -> bool:
    """A success, or an answer that retrying elsewhere would not change."""
    return reply.ok or (reply.code not in RETRY_NOTHING_CHANGED and reply.code not in RETRY_OUTCOME_UNKNOWN)


class LeaderTracker:
    """Which node a client believes leads, and whether a status or a hint said so recently
    (leader_confirmed) or it merely answered. Shared by every call of one client; no I/O.

    Also which nodes let an attempt time out and have not answered since (`silent`): a
    partitioned leader stays silent, and trying it first on every call, or again while the
    others elect its successor, cost an attempt timeout each time. Silent nodes are left out
    of the rotation while another node is not silent (the others forward to a leader, or say
    there is none); any answer, a hint naming the node, or SILENCE_REMEMBERED_SECONDS clear
    the mark."""

    def __init__(self, addresses: dict[str, str]) -> None:
        self.addresses = addresses
        self.leader: str | None = None
        self._confirmed_at: float | None = None
        # Until when (time.monotonic) leader_confirmed holds: one comparison for a caller that
        # checks it on every call.
        self.confirmed_until = -math.inf
        self._silent_since: dict[str, float] = {}

    @property
    def silent(self) -> set[str]:
        if not self._silent_since:  # the usual case, asked at every call: no clock, no copies
            return set()
        now = time.monotonic()
        for node in [node for node, since in self._silent_since.items() if now - since > SILENCE_REMEMBERED_SECONDS]:
            del self._silent_since[node]
        return set(self._silent_since)

    @property
    def leader_confirmed(self) -> bool:
        return time.monotonic() < self.confirmed_until

    def set_leader(self, node: str | None, confirmed: bool) -> None:
        self.leader = node
        self._confirmed_at = time.monotonic() if confirmed and node is not None else None
        self.confirmed_until = -math.inf if self._confirmed_at is None else self._confirmed_at + LEADER_CONFIRMATION_SECONDS
        if confirmed:
            self._silent_since.pop(node, None)

    def timed_out(self, node: str) -> None:
        self._silent_since.setdefault(node, time.monotonic())
        if self.leader == node:
            self.set_leader(None, confirmed=False)

    def answered(self, node: str) -> None:
        self._silent_since.pop(node, None)

    def served_by(self, node: str, call_started: float) -> bool:
        """Record that `node` served a call started at call_started; True if its status should
        be asked (it is not known to lead, and another node could be the leader)."""
        if node != self.leader:
            if self.leader_confirmed and self._confirmed_at >= call_started:
                return False  # the leader became known while this call was under way: keep it
            self.set_leader(node, confirmed=False)
        return not self.leader_confirmed and len(self.addresses) > 1

    def on_status(self, node: str, status: object) -> None:
        """A status answer from `node`, asked because it served a call: follow its hint."""
        if not isinstance(status, dict) or self.leader != node:
            return  # failed, or the client has moved on since asking
        if status.get("role") == "leader":
            self.set_leader(node, confirmed=True)
            return
        hint = status.get("leader")
        if isinstance(hint, str) and hint in self.addresses and hint != node:
            self.set_leader(hint, confirmed=True)

    def rotation(self, pinned: str | None, leader_first: bool = True, after: str | None = None) -> Iterator[str]:
        """Targets in the order to try: the pinned node forever, or the believed leader first
        (unless leader_first is False: the caller already tried it, `after`) and then every
        known node in config order, round and round, leaving out silent nodes unless all are;
        never the same node twice in a row when the round has another."""
        if pinned is not None:
            return itertools.repeat(pinned)

        def rounds() -> Iterator[list[str]]:
            if leader_first and self.leader is not None:
                yield [self.leader]
            while True:
                # Chosen afresh each round: a node that just timed out is left out of the next.
                silent = self.silent
                yield [node for node in self.addresses if node not in silent] or list(self.addresses)

        def targets() -> Iterator[str]:
            previous = after
            for round_nodes in rounds():
                for node in round_nodes:
                    # A lone node that answers (the others silent: one dead, one that let an
                    # attempt time out) is asked again, after the caller's backoff, rather than
                    # skipped: skipping it left a round with nothing to offer, and the rotation
                    # spun on the CPU until a silent mark expired (seconds without a request,
                    # seen in failover benchmarks once followers answered NO_LEADER quickly).
                    if node != previous or len(round_nodes) == 1:
                        previous = node
                        yield node

        return targets()


class CallPlan:
    """The failover decisions of one call, without I/O, so the blocking and the asyncio
    clients retry alike. The driver loops while time_left(): send to next_target(), report
    sent() or not_sent(), then feed every reply of this call's attempts to on_reply() until it
    returns the reply to act on (or the attempt times out: timed_out()), and act on it with
    answered(). Every request sent stays an attempt of the call until the call ends, so a
    late answer to an earlier attempt still counts.

    A driver that sent the first attempt before making its plan (the asyncio client's fast
    path: most calls are answered by the first node asked, and need no plan) passes the call's
    start time and that attempt's target, then reports it with sent()."""

    def __init__(self, tracker: LeaderTracker, op: str, *, write: bool, timeout_seconds: float,
                 pinned: str | None, attempt_timeout_seconds: float, unreachable_seconds: float | None,
                 started: float | None = None, first_target: str | None = None) -> None:
        self.tracker = tracker
        self.op = op
        self.write = write
        self.timeout_seconds = timeout_seconds
        self.pinned = pinned
        self.attempt_timeout_seconds = attempt_timeout_seconds
        self.unreachable_seconds = unreachable_seconds
        self.started = time.monotonic() if started is None else started
        self.deadline = self.started + timeout_seconds
        self.attempts: set[tuple[str, int]] = set()  # (node, request id) sent
        self.unresolved: set[tuple[str, int]] = set()  # writes with no "nothing changed" answer
        self.current: tuple[str, int] | None = None
        self.last_problem = "no node answered"
        self.backoff_seconds = BACKOFF_SECONDS_MIN
        self._redirect: str | None = None
        self._redirects_in_a_row = 0  # hints can chase each other during an election: bound that
        self._connected_any = False
        # first_target was the believed leader (or the pinned node): the rotation goes on after it.
        self._rotation = tracker.rotation(pinned, leader_first=first_target is None, after=first_target)

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def next_target(self) -> str:
        target, self._redirect = self._redirect or next(self._rotation), None
        return target

    def connect_wait_seconds(self, target: str) -> float:
        """How long a request to `target` may wait for its connection to come up."""
        wait_seconds = SILENT_CONNECT_WAIT_SECONDS if target in self.tracker.silent else CONNECT_WAIT_SECONDS
        return max(0.001, min(wait_seconds, self.time_left()))

    def attempt_deadline(self) -> float:
        return min(self.deadline, time.monotonic() + self.attempt_timeout_seconds)

    def sent(self, node: str, request_id: int) -> None:
        self._connected_any = True
        self.current = (node, request_id)
        self.attempts.add(self.current)
        if self.write:
            self.unresolved.add(self.current)

    def not_sent(self, target: str) -> float:
        """The backoff before the next attempt; Unavailable at once when no node could be
        reached for unreachable_seconds (nothing was sent, so nothing changed)."""
        self.last_problem = f"cannot connect to {target} ({self.tracker.addresses[target]})"
        if (self.unreachable_seconds is not None and not self._connected_any
                and time.monotonic() - self.started >= self.unreachable_seconds):
            raise Unavailable(self._unreachable_message())
        return self._next_backoff()

    def timed_out(self, target: str) -> None:
        self.last_problem = f"{target} did not answer within {self.attempt_timeout_seconds:g} s"
        if self.pinned is None:
            self.tracker.timed_out(target)

    def on_reply(self, reply: Reply) -> bool:
        """True if this reply (to one of this call's attempts) is the one to act on: the
        current attempt's, or a final answer to an earlier one. Earlier attempts' "nothing
        changed" answers only clear their unresolved mark."""
        key = (reply.node, reply.request_id)
        assert key in self.attempts
        self.tracker.answered(reply.node)
        if reply.code in RETRY_NOTHING_CHANGED:
            self.unresolved.discard(key)
        if key == self.current or _is_final(reply):
            return True
        self.attempts.discard(key)  # an old attempt's "try elsewhere": that attempt is over
        return False

    def answered(self, reply: Reply) -> float:
        """Act on a reply on_reply chose. A success is recorded (the caller returns its
        result); a final error is raised; otherwise the seconds to back off before the next
        attempt (0 to follow a leader hint at once)."""
        if reply.ok:
            return 0.0
        error = reply.error
        self.last_problem = f"{reply.node}: {str(error) or error.code}"
        if _is_final(reply):
            raise error
        if isinstance(error, NotLeader):
            hint = error.leader
            if self.pinned is not None:
                raise NotLeader(f"{self.pinned} is not the leader" + (f" (the leader is {hint})" if hint else ""), hint)
            if self.tracker.leader == reply.node:
                self.tracker.set_leader(None, confirmed=False)
            if (hint and hint != reply.node and hint in self.tracker.addresses
                    and self._redirects_in_a_row < len(self.tracker.addresses)):
                self._redirects_in_a_row += 1
                self._redirect = hint
                self.tracker.set_leader(hint, confirmed=True)  # the hint comes from the Raft core's own knowledge
                return 0.0
        self._redirects_in_a_row = 0
        return self._next_backoff()

    def succeeded(self, reply: Reply) -> bool:
        """Record the serving node; True if the caller should ask its status in the background."""
        return self.pinned is None and self.tracker.served_by(reply.node, self.started)

    def failure(self) -> Exception:
        """What the caller learns at the deadline."""
        if self.unresolved:
            return TimedOut(f"{self.op} got no answer within {self.timeout_seconds:g} s; it may or may not "
                            f"have been applied ({self.last_problem})")
        if self.write:
            return Unavailable(f"{self.op} was not applied: no leader answered within {self.timeout_seconds:g} s "
                               f"({self.last_problem})")
        return Unavailable(f"no node answered {self.op} within {self.timeout_seconds:g} s ({self.last_problem})")

    def backoff_until_deadline(self, seconds: float) -> float:
        return max(0.0, min(seconds, self.time_left()))

    def _next_backoff(self) -> float:
        seconds = self.backoff_seconds
        if time.monotonic() - self.started >= FAST_RETRY_SECONDS:
            self.backoff_seconds = min(self.backoff_seconds * 2, BACKOFF_SECONDS_MAX)
        return seconds

    def _unreachable_message(self) -> str:
        addresses = self.tracker.addresses
        names = [self.pinned] if self.pinned is not None else list(addresses)
        where = ", ".join(f"{name} ({addresses[name]})" for name in names)
        return (f"cannot connect to {where} for {self.unreachable_seconds:g} s: is the cluster running? "
                "(start it with `sandctl cluster start`)")


class Failover:
    """Blocking calls with failover over one Connections (immediate sockets: "not sent"
    proves "not applied"), driving a CallPlan per call."""

    def __init__(self, connections: Connections, *, attempt_timeout_seconds: float = ATTEMPT_TIMEOUT_SECONDS,
                 unreachable_seconds: float | None = None) -> None:
        assert connections.options.immediate, "failover relies on unsent meaning unapplied"
        assert unreachable_seconds is None or unreachable_seconds > 0
        self.connections = connections
        self.tracker = LeaderTracker(connections.addresses)
        self.attempt_timeout_seconds = attempt_timeout_seconds
        self.unreachable_seconds = unreachable_seconds
        self._leader_probe: tuple[str, int] | None = None  # a status asked of a node that served a call
        self._leader_probe_sent_at = 0.0

    @property
    def leader(self) -> str | None:
        return self.tracker.leader

    @property
    def leader_confirmed(self) -> bool:
        return self.tracker.leader_confirmed

    def set_leader(self, node: str | None, confirmed: bool) -> None:
        self.tracker.set_leader(node, confirmed)

    def call(self, op: str, args: dict, *, write: bool, timeout_seconds: float, pinned: str | None) -> object:
        """Send op until a final answer or the deadline; returns the result or raises the named
        error (NotLeader only when pinned to a follower)."""
        self._harvest_leader_probe()
        self._note_lost_connections()  # a leader that died since the last call is not tried first
        plan = CallPlan(self.tracker, op, write=write, timeout_seconds=timeout_seconds, pinned=pinned,
                        attempt_timeout_seconds=self.attempt_timeout_seconds,
                        unreachable_seconds=self.unreachable_seconds)
        try:
            while plan.time_left() > 0:
                target = plan.next_target()
                request_id = self.connections.request(target, op, args, plan.connect_wait_seconds(target))
                if request_id is None:
                    time.sleep(plan.backoff_until_deadline(plan.not_sent(target)))
                    continue
                plan.sent(target, request_id)
                reply = self._await_attempt(plan)
                if reply is None:
                    plan.timed_out(target)
                    continue
                if reply.ok:
                    if plan.succeeded(reply) and self._leader_probe is None:
                        self._probe_leader(reply.node)
                    return reply.result
                time.sleep(plan.backoff_until_deadline(plan.answered(reply)))
        finally:
            for node, request_id in plan.attempts:
                self.connections.forget(node, request_id)
        raise plan.failure()

    def _await_attempt(self, plan: CallPlan) -> Reply | None:
        """The reply to act on, or None when the current attempt times out."""
        attempt_deadline = plan.attempt_deadline()
        while True:
            remaining = attempt_deadline - time.monotonic()
            if remaining <= 0:
                return None
            for reply in self.connections.poll(remaining):
                key = (reply.node, reply.request_id)
                if key == self._leader_probe:
                    self._on_leader_probe(reply)
                elif key in plan.attempts and plan.on_reply(reply):
                    return reply
            # A closed connection loses what was sent on it: the node is treated as silent at
            # once (a killed leader is not waited for), and the attempt is over unanswered (a
            # write is retried elsewhere under the same session seq, which dedups it).
            if plan.current is not None and plan.current[0] in self._note_lost_connections():
                return None

    def _note_lost_connections(self) -> set[str]:
        """Nodes whose connection closed since the last look, now treated as silent."""
        lost = self.connections.take_lost()
        for node in lost:
            self.tracker.timed_out(node)
        return lost

    # ----- returning to the leader

    def _probe_leader(self, node: str) -> None:
        """Ask `node`, which served a call but is not known to lead, for its status, without waiting."""
        request_id = self.connections.request(node, "status", {})
        self._leader_probe = None if request_id is None else (node, request_id)
        self._leader_probe_sent_at = time.monotonic()

    def _harvest_leader_probe(self) -> None:
        """Take in the probe's answer if it has come; a probe unanswered for a whole
        confirmation period is given up (its node may be gone)."""
        if self._leader_probe is None:
            return
        for reply in self.connections.poll(0):
            if (reply.node, reply.request_id) == self._leader_probe:
                self._on_leader_probe(reply)
        if self._leader_probe is not None and time.monotonic() - self._leader_probe_sent_at > LEADER_CONFIRMATION_SECONDS:
            self.connections.forget(*self._leader_probe)
            self._leader_probe = None

    def _on_leader_probe(self, reply: Reply) -> None:
        self._leader_probe = None
        self.tracker.on_status(reply.node, reply.result if reply.ok else None)
