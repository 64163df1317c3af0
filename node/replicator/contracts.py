"""The seams of the Raft driver (driver.py), each a small Protocol with its contract.

The driver carries out the core's Readys against these four things and nothing else, so that
production (LMDB, the namespace, ZeroMQ: raft.py) and the seeded simulator (an in-memory disk
that can lose what was not durable, an in-memory state machine, a simulated network:
tests/sim/) run the very same driver code. Modelled on hashicorp/raft's LogStore / StableStore /
FSM / Transport.

Threads: the driver and every call below run on ONE thread (the node's loop). The only other
thread is production's snapshot builder, which reads a consistent LMDB read transaction and
never calls into these objects (raft.py).
"""

from __future__ import annotations

from typing import ContextManager, Protocol

from node.raft.types import ConfChange, ConfState, Entry, HardState, Message, Snapshot


class WriteBatch(Protocol):
    """Everything one Ready persists, atomically when the `with` block ends (and discarded, all
    of it, if the block raises). After a crash of the process or a power loss, a batch is
    either wholly there or wholly absent: one opened with durable=True is there once the block
    returned; one opened with durable=False, and those after it up to the next durable one,
    may be lost (production defers their commit to the next durable batch, and LMDB's
    metasync=False: README, "Two kinds of LMDB batch"). Nothing written here is visible to the
    core's Storage reads before the block ends."""

    def append_entries(self, entries: tuple[Entry, ...]) -> None:
        """Store entries, replacing every stored entry at entries[0].index or above; entries a
        snapshot already covers are skipped."""

    def set_hard_state(self, hard_state: HardState) -> None: ...

    def install_snapshot(self, snapshot: Snapshot) -> None:
        """A leader's snapshot: record it, cut the log to what follows it, set the applied index
        and the membership to the snapshot's. The state machine's restore is a separate call
        (StateMachine.restore) in the same batch."""

    def set_applied_index(self, index: int) -> None:
        """Never lower than the stored applied index."""

    def set_conf_state(self, conf_state: ConfState) -> None:
        """The membership after the entries applied in this batch."""


class Store(Protocol):
    """The node's durable state. The core reads it through node.raft.storage.Storage (the same
    object); the driver writes it only through write_batch."""

    def write_batch(self, durable: bool = True) -> ContextManager[WriteBatch]:
        """durable=True: the batch is on stable storage when the block returns, with every batch
        before it (entries, a new term or vote, a snapshot: promises to other nodes).
        durable=False: it only applies committed entries (and moves the commit index), which can
        be redone from the durable log after a crash or power loss, so it may skip the flush, or
        be committed later, with the next batch."""

    def hard_state(self) -> HardState: ...


class StateMachine(Protocol):
    """The replicated state. Every call happens on the driver's thread, inside a write batch."""

    def decode(self, command: bytes) -> object:
        """Validate and decode a command; raise node.errors.SandStoreError if it may not enter
        the log (bytes from a peer, forwarded for the leader to propose). Pure: no state is read
        or changed, and the same bytes always give an equal value. The driver decodes each
        command once and passes the value along (to apply, then Callbacks.applied)."""

    def apply(self, batch: WriteBatch, entry: Entry, decoded: object) -> dict:
        """Apply a committed NORMAL entry (entry.index is the applied index + 1) and return the
        result for the client. `decoded` is decode(entry.data), or the SandStoreError it raised:
        a malformed command gives an error result, never an exception (every node must agree
        on it). Deterministic: the same entries in the same order give the same state and
        results on every node."""

    def apply_membership(self, batch: WriteBatch, entry: Entry, change: ConfChange) -> None:
        """A committed membership change (e.g. remember a new member's addresses)."""

    def restore(self, batch: WriteBatch, data: bytes) -> None:
        """Replace the whole state by a snapshot image: everything applied before is discarded.
        Not called for the empty bootstrap snapshot of a new cluster."""


class Transport(Protocol):
    """Best-effort, unordered delivery to peers; sends never block and may be dropped."""

    def send(self, message: Message) -> None: ...

    def send_forward(self, leader: str, command: bytes) -> None:
        """Hand a client's command to the leader (it arrives as Driver.receive_forward)."""

    def set_peers(self, conf_state: ConfState) -> None:
        """A snapshot or a membership change was applied: connect to the members it names
        (and whatever else the transport knows an address for), drop the removed ones."""


class Callbacks(Protocol):
    """What a replicator tells the service above it (node/server.py), after the batch that
    caused it committed; results_fixed alone may come before."""

    def results_fixed(self, results: list[tuple[int, object, dict]]) -> None:
        """(index, decoded, result) of NORMAL commands whose results are final: the client may
        be answered. Called before `applied`, possibly inside the batch that applies them and
        before it commits (the Raft replicator: the entries are committed, a majority holds
        them durably, so a crash before this batch commits applies them again, to the same
        results). Their effects are not visible to reads before `applied`: serve nothing
        from the state machine here."""

    def applied(self, index: int, decoded: object, result: dict) -> None:
        """A NORMAL command was applied (on this node) with this state-machine result; `decoded`
        is what StateMachine.apply was given (a SandStoreError for a malformed entry)."""

    def conf_applied(self, index: int, term: int) -> None:
        """A membership-change entry was applied at (index, term)."""

    def reads_ready(self, tokens: list[int]) -> None:
        """Reads registered with these tokens are now linearizable when served locally."""

    def reads_failed(self, tokens: list[int], error: Exception) -> None:
        """Reads that cannot be confirmed (lost leadership, no leader, not applied in time)."""


class DriverCallbacks(Callbacks, Protocol):
    def leader_changed(self, leader: str, term: int, is_self: bool) -> None:
        """This node learned of a new leader (possibly itself) for `term`."""
