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
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from node.errors import ERRORS_BY_CODE, NotLeader, TimedOut, Unavailable

from sandctl.connection import Connections, Reply

# How long one attempt waits for its reply before the next node is tried (capped by the
# call's deadline). Writes commit in milliseconds on a healthy cluster, so a second of
# silence means the node is stuck or partitioned.
ATTEMPT_TIMEOUT_SECONDS = 1.0
# How long to wait for a connection to a node before counting it as down for this attempt.
# The socket keeps connecting in the background, so a slow handshake succeeds next round.
CONNECT_WAIT_SECONDS = 0.25
BACKOFF_SECONDS_MIN = 0.01
BACKOFF_SECONDS_MAX = 0.2
# A node known to lead is asked again after this long (in the background, after a success):
# a deposed leader keeps answering by forwarding, and the client should follow the new one.
LEADER_CONFIRMATION_SECONDS = 2.0

assert BACKOFF_SECONDS_MIN < BACKOFF_SECONDS_MAX
assert CONNECT_WAIT_SECONDS <= ATTEMPT_TIMEOUT_SECONDS

# Error codes that say "this attempt changed nothing, ask again (elsewhere)".
RETRY_NOTHING_CHANGED = frozenset(code for code, error in ERRORS_BY_CODE.items() if error.retryable)
# A node that gave up waiting for its own commit: the write may still be applied; retrying
# with the same seq is safe and finds out.
RETRY_OUTCOME_UNKNOWN = frozenset({"TIMEOUT"})


def _is_final(reply: Reply) -> bool:
    """A success, or an answer that retrying elsewhere would not change."""
    return reply.ok or (reply.code not in RETRY_NOTHING_CHANGED and reply.code not in RETRY_OUTCOME_UNKNOWN)


@dataclass
class _CallState:
    """One call's attempts: every request sent for it stays pending until the call ends, so a
    late answer to an earlier attempt still counts."""

    op: str
    write: bool
    deadline: float
    timeout_seconds: float
    attempts: set[tuple[str, int]] = field(default_factory=set)  # (node, request id) sent
    unresolved: set[tuple[str, int]] = field(default_factory=set)  # writes with no "nothing changed"
    last_problem: str = "no node answered"
    backoff_seconds: float = BACKOFF_SECONDS_MIN
    redirect: str | None = None
    redirects_in_a_row: int = 0  # hints can chase each other during an election: bound that
    connected_any: bool = False

    def back_off(self) -> None:
        time.sleep(max(0.0, min(self.backoff_seconds, self.deadline - time.monotonic())))
        self.backoff_seconds = min(self.backoff_seconds * 2, BACKOFF_SECONDS_MAX)

    def failure(self) -> Exception:
        if self.unresolved:
            return TimedOut(f"{self.op} got no answer within {self.timeout_seconds:g} s; it may or may not "
                            f"have been applied ({self.last_problem})")
        if self.write:
            return Unavailable(f"{self.op} was not applied: no leader answered within {self.timeout_seconds:g} s "
                               f"({self.last_problem})")
        return Unavailable(f"no node answered {self.op} within {self.timeout_seconds:g} s ({self.last_problem})")


class Failover:
    """Calls with failover over one Connections (immediate sockets: "not sent" proves "not
    applied"). leader is the node believed to lead; leader_confirmed says whether a status or
    a hint said so, or it merely answered."""

    def __init__(self, connections: Connections, *, attempt_timeout_seconds: float = ATTEMPT_TIMEOUT_SECONDS,
                 unreachable_seconds: float | None = None) -> None:
        assert connections.options.immediate, "failover relies on unsent meaning unapplied"
        assert unreachable_seconds is None or unreachable_seconds > 0
        self.connections = connections
        self.attempt_timeout_seconds = attempt_timeout_seconds
        self.unreachable_seconds = unreachable_seconds
        self.leader: str | None = None
        self._leader_confirmed_at: float | None = None  # when a status or hint said it leads
        self._leader_probe: tuple[str, int] | None = None  # a status asked of an unconfirmed leader
        self._leader_probe_sent_at = 0.0

    @property
    def addresses(self):
        return self.connections.addresses

    @property
    def leader_confirmed(self) -> bool:
        confirmed_at = self._leader_confirmed_at
        return confirmed_at is not None and time.monotonic() - confirmed_at < LEADER_CONFIRMATION_SECONDS

    def set_leader(self, node: str | None, confirmed: bool) -> None:
        self.leader = node
        self._leader_confirmed_at = time.monotonic() if confirmed and node is not None else None

    # ----- one call

    def call(self, op: str, frame_args: dict, *, write: bool, timeout_seconds: float, pinned: str | None) -> object:
        """Send op until a final answer or the deadline; returns the result or raises the named
        error (NotLeader only when pinned to a follower)."""
        self._harvest_leader_probe()
        state = _CallState(op, write, time.monotonic() + timeout_seconds, timeout_seconds)
        rotation = self._rotation(pinned)
        started = time.monotonic()
        try:
            while time.monotonic() < state.deadline:
                target = state.redirect or next(rotation)
                state.redirect = None
                request_id = self._send(state, target, op, frame_args)
                if request_id is None:
                    self._on_not_sent(state, target, pinned, started)
                    continue
                reply = self._await_attempt(state, (target, request_id))
                if reply is None:
                    state.last_problem = f"{target} did not answer within {self.attempt_timeout_seconds:g} s"
                    continue
                if reply.ok:
                    self._on_success(reply.node, pinned)
                    return reply.result
                self._on_retryable_error(state, reply, pinned)
        finally:
            for node, request_id in state.attempts:
                self.connections.forget(node, request_id)
        raise state.failure()

    def _send(self, state: _CallState, target: str, op: str, args: dict) -> int | None:
        wait_seconds = min(CONNECT_WAIT_SECONDS, state.deadline - time.monotonic())
        request_id = self.connections.request(target, op, args, connect_wait_seconds=max(wait_seconds, 0.001))
        if request_id is not None:
            state.connected_any = True
            state.attempts.add((target, request_id))
            if state.write:
                state.unresolved.add((target, request_id))
        return request_id

    def _on_not_sent(self, state: _CallState, target: str, pinned: str | None, started: float) -> None:
        state.last_problem = f"cannot connect to {target} ({self.addresses[target]})"
        if (self.unreachable_seconds is not None and not state.connected_any
                and time.monotonic() - started >= self.unreachable_seconds):
            # Nothing was sent, so nothing changed: say so now rather than at the deadline.
            raise Unavailable(self._unreachable_message(pinned))
        state.back_off()

    def _on_success(self, node: str, pinned: str | None) -> None:
        if pinned is not None:
            return
        if node != self.leader:
            self.set_leader(node, confirmed=False)
        if not self.leader_confirmed and self._leader_probe is None and len(self.addresses) > 1:
            self._probe_leader(node)  # with one node known there is nowhere else to go

    def _on_retryable_error(self, state: _CallState, reply: Reply, pinned: str | None) -> None:
        """Raise a final error; otherwise choose the next attempt (a hinted leader at once,
        or the next node after a backoff)."""
        error = reply.error
        state.last_problem = f"{reply.node}: {str(error) or error.code}"
        if _is_final(reply):
            raise error
        if isinstance(error, NotLeader):
            hint = error.leader
            if pinned is not None:
                raise NotLeader(f"{pinned} is not the leader" + (f" (the leader is {hint})" if hint else ""), hint)
            if self.leader == reply.node:
                self.set_leader(None, confirmed=False)
            if (hint and hint != reply.node and hint in self.addresses
                    and state.redirects_in_a_row < len(self.addresses)):
                state.redirects_in_a_row += 1
                state.redirect = hint
                self.set_leader(hint, confirmed=True)  # the hint comes from the Raft core's own knowledge
                return
        state.redirects_in_a_row = 0
        state.back_off()

    def _await_attempt(self, state: _CallState, current: tuple[str, int]) -> Reply | None:
        """The current attempt's reply, or a final answer to an earlier attempt of this call;
        None when the attempt times out. "Nothing changed" answers to earlier attempts only
        clear their unresolved mark."""
        attempt_deadline = min(state.deadline, time.monotonic() + self.attempt_timeout_seconds)
        while True:
            remaining = attempt_deadline - time.monotonic()
            if remaining <= 0:
                return None
            for reply in self.connections.poll(remaining):
                key = (reply.node, reply.request_id)
                if key == self._leader_probe:
                    self._on_leader_probe(reply)
                    continue
                if key not in state.attempts:
                    continue
                if reply.code in RETRY_NOTHING_CHANGED:
                    state.unresolved.discard(key)
                if key == current or _is_final(reply):
                    return reply
                # An old attempt's "try elsewhere": that attempt is over; keep waiting for ours.
                state.attempts.discard(key)

    def _rotation(self, pinned: str | None) -> Iterator[str]:
        """Targets in the order to try: the pinned node forever, or the believed leader first
        and then every known node in config order, round and round."""
        if pinned is not None:
            return itertools.repeat(pinned)

        def targets() -> Iterator[str]:
            if self.leader is not None:
                yield self.leader
            while True:
                yield from list(self.addresses)

        return targets()

    def _unreachable_message(self, pinned: str | None) -> str:
        names = [pinned] if pinned is not None else list(self.addresses)
        where = ", ".join(f"{name} ({self.addresses[name]})" for name in names)
        return (f"cannot connect to {where} for {self.unreachable_seconds:g} s: is the cluster running? "
                "(start it with `sandctl cluster start`)")

    # ----- returning to the leader

    def _probe_leader(self, node: str) -> None:
        """Ask `node`, which answered but is not known to lead, for its status, without waiting."""
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
        status = reply.result if reply.ok else None
        if not isinstance(status, dict) or self.leader != reply.node:
            return  # failed, or the client has moved on since asking
        if status.get("role") == "leader":
            self.set_leader(reply.node, confirmed=True)
            return
        hint = status.get("leader")
        if isinstance(hint, str) and hint in self.addresses and hint != reply.node:
            self.set_leader(hint, confirmed=True)
