"""Pure planning: from the recorded replicas and the leader's view, what to do next.

plan() is a function of its arguments only (no clock, no I/O), so its ordering and placement
are unit-tested directly. Rules, in the order they are applied to each chunk:

  1. Records that name a copy which is not there are dropped: MISSING (after the worker has
     confirmed the node lacks it) and REMOVED replicas, never a chunk's last record.
  2. A chunk with fewer than `target` live-or-down copies gets more: first a stray copy an up
     node already holds is adopted, then copies are made from a live replica to the up member
     with the fewest used bytes (spread: never a node that is recorded already). Chunks with
     the fewest live copies come first; at most `copies_max` copies per round.
  3. A chunk with more live copies than `target` loses the surplus on the fullest nodes,
     never below `target`. Stray copies of healthy chunks are deleted.
  4. Only when nothing needs repair: moves for balance (copy fullest -> emptiest, record,
     drop the fullest's copy) while used bytes per up node spread more than
     spread_fraction of their mean; one move per round as a trickle, copies_max on request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from node.repair.health import ClusterView, Health, Replica, chunk_health, replica_states

ADOPTIONS_PER_ROUND_MAX = 256
STRAY_DELETES_PER_ROUND_MAX = 256
RECORD_DROPS_PER_ROUND_MAX = 1024
SURPLUS_DROPS_PER_ROUND_MAX = 256


@dataclass(frozen=True)
class ChunkRecord:
    chunk_id: bytes
    size: int
    nodes: tuple[str, ...]  # recorded replicas


@dataclass(frozen=True)
class Copy:
    """Copy chunk_id from source to target, verify there, record; then drop `drop_after`'s copy
    (a move for balance) if set."""

    chunk_id: bytes
    size: int
    source: str
    target: str
    drop_after: str | None = None


@dataclass(frozen=True)
class Drop:
    """Forget a recorded replica. delete: then delete the copy on that node (surplus).
    confirm_absent: the node must be asked first whether it really lacks the chunk."""

    chunk_id: bytes
    node: str
    delete: bool = False
    confirm_absent: bool = False


@dataclass(frozen=True)
class Totals:
    chunks: int = 0
    healthy: int = 0
    under_replicated: int = 0  # includes corrupt ones
    corrupt: int = 0
    missing: int = 0
    bytes_left: int = 0  # bytes still to copy before every chunk is healthy


@dataclass
class Plan:
    record_drops: list[Drop] = field(default_factory=list)
    adoptions: list[tuple[bytes, str]] = field(default_factory=list)  # (chunk, node holding a stray copy)
    copies: list[Copy] = field(default_factory=list)
    surplus_drops: list[Drop] = field(default_factory=list)
    stray_deletes: list[tuple[bytes, str]] = field(default_factory=list)
    moves: list[Copy] = field(default_factory=list)
    totals: Totals = field(default_factory=Totals)
    used_bytes: dict[str, int] = field(default_factory=dict)  # live recorded bytes per up member


def plan(records: Iterable[ChunkRecord], view: ClusterView, *, in_flight: set[bytes] | frozenset = frozenset(),
         copies_max: int, moves_max: int = 0, spread_fraction: float = 0.1) -> Plan:
    assert copies_max >= 0 and moves_max >= 0 and spread_fraction > 0
    target = view.target
    up = view.up_members()
    records = list(records)
    states_by_chunk = {record.chunk_id: replica_states(record.chunk_id, record.nodes, view) for record in records}
    result = Plan()
    used = {node: 0 for node in up}
    for record in records:
        for node, state in states_by_chunk[record.chunk_id].items():
            if state is Replica.LIVE:
                used[node] += record.size
    result.used_bytes = dict(used)

    needing: list[tuple[int, bytes, ChunkRecord]] = []
    totals = dict(chunks=0, healthy=0, under_replicated=0, corrupt=0, missing=0, bytes_left=0)
    for record in records:
        states = states_by_chunk[record.chunk_id]
        live = [node for node, state in states.items() if state is Replica.LIVE]
        health = chunk_health(record.chunk_id, states, view)
        totals["chunks"] += 1
        totals[{Health.HEALTHY: "healthy", Health.UNDER_REPLICATED: "under_replicated",
                Health.CORRUPT: "corrupt", Health.MISSING: "missing"}[health]] += 1
        if health is Health.CORRUPT:
            totals["under_replicated"] += 1
        totals["bytes_left"] += record.size * max(0, target - len(live)) if live else 0
        if record.chunk_id in in_flight:
            continue
        _plan_record_drops(record, states, result)
        pending = sum(1 for state in states.values() if state is Replica.DOWN)
        strays = _strays(record, view, up)
        if len(live) + pending < target and live:
            needing.append((len(live), record.chunk_id, record))
        elif len(live) > target:
            _plan_surplus(record, live, target, used, result)
        elif strays and len(live) >= target and len(result.stray_deletes) < STRAY_DELETES_PER_ROUND_MAX:
            result.stray_deletes.extend((record.chunk_id, node) for node in strays)
    result.totals = Totals(**totals)

    planned = dict(used)
    for _, _, record in sorted(needing, key=lambda item: (item[0], item[1])):  # fewest live copies first
        _plan_repair(record, states_by_chunk[record.chunk_id], view, up, target, planned, result, copies_max)
    if not needing and moves_max:
        _plan_moves(records, states_by_chunk, up, target, planned, result, moves_max, spread_fraction)
    _check(result, states_by_chunk, target)
    return result


def _strays(record: ChunkRecord, view: ClusterView, up: list[str]) -> list[str]:
    """Up members that hold a copy (by their known inventory) not recorded there."""
    return [node for node in up if node not in record.nodes and record.chunk_id in view.inventories.get(node, ())]


def _plan_record_drops(record: ChunkRecord, states: dict[str, Replica], result: Plan) -> None:
    remaining = len(record.nodes)
    for node in sorted(states):
        state = states[node]
        if state not in (Replica.MISSING, Replica.REMOVED) or remaining <= 1:
            continue
        if len(result.record_drops) >= RECORD_DROPS_PER_ROUND_MAX:
            return
        result.record_drops.append(Drop(record.chunk_id, node, confirm_absent=state is Replica.MISSING))
        remaining -= 1


def _plan_surplus(record: ChunkRecord, live: list[str], target: int, used: dict[str, int], result: Plan) -> None:
    if len(result.surplus_drops) >= SURPLUS_DROPS_PER_ROUND_MAX:
        return
    fullest_first = sorted(live, key=lambda node: (-used.get(node, 0), node))
    for node in fullest_first[: len(live) - target]:
        result.surplus_drops.append(Drop(record.chunk_id, node, delete=True))
        used[node] -= record.size  # the next chunk's surplus comes off the next fullest node


def _plan_repair(record: ChunkRecord, states: dict[str, Replica], view: ClusterView, up: list[str], target: int,
                 planned: dict[str, int], result: Plan, copies_max: int) -> None:
    live = sorted(node for node, state in states.items() if state is Replica.LIVE)
    pending = sum(1 for state in states.values() if state is Replica.DOWN)
    needed = target - len(live) - pending
    for node in _strays(record, view, up):
        if needed <= 0 or len(result.adoptions) >= ADOPTIONS_PER_ROUND_MAX:
            break
        result.adoptions.append((record.chunk_id, node))
        needed -= 1
    if needed <= 0 or len(result.copies) >= copies_max:
        return
    holders = set(record.nodes) | set(_strays(record, view, up))
    candidates = [node for node in up if node not in holders]
    if not candidates:
        return  # every up member holds it already: wait for a node to return or join
    destination = min(candidates, key=lambda node: (planned[node], node))
    # Spread the reads: the live replica least used as a source this round, then by id.
    sources_used = {node: 0 for node in live}
    for copy in result.copies:
        if copy.source in sources_used:
            sources_used[copy.source] += 1
    source = min(live, key=lambda node: (sources_used[node], node))
    result.copies.append(Copy(record.chunk_id, record.size, source, destination))
    planned[destination] += record.size  # one copy per chunk per round; the next round adds more


def _plan_moves(records: list[ChunkRecord], states_by_chunk: dict, up: list[str], target: int,
                planned: dict[str, int], result: Plan, moves_max: int, spread_fraction: float) -> None:
    if len(up) < 2:
        return
    moved: set[bytes] = set()
    while len(result.moves) < moves_max:
        mean = sum(planned[node] for node in up) / len(up)
        fullest = max(up, key=lambda node: (planned[node], node))
        emptiest = min(up, key=lambda node: (planned[node], node))
        spread = planned[fullest] - planned[emptiest]
        if spread <= spread_fraction * mean or spread <= 0:
            return
        best = None
        for record in records:
            states = states_by_chunk[record.chunk_id]
            live = [node for node, state in states.items() if state is Replica.LIVE]
            if (record.chunk_id in moved or states.get(fullest) is not Replica.LIVE or emptiest in record.nodes
                    or len(live) < target or 2 * record.size > spread):
                continue
            if best is None or (record.size, record.chunk_id) > (best.size, best.chunk_id):
                best = record
        if best is None:
            return  # no chunk small enough to narrow the spread: as even as chunks allow
        result.moves.append(Copy(best.chunk_id, best.size, fullest, emptiest, drop_after=fullest))
        moved.add(best.chunk_id)
        planned[fullest] -= best.size
        planned[emptiest] += best.size


def _check(result: Plan, states_by_chunk: dict, target: int) -> None:
    """The plan never takes a chunk below `target` live copies nor drops its last record."""
    for drop in result.surplus_drops:
        states = states_by_chunk[drop.chunk_id]
        live = sum(1 for state in states.values() if state is Replica.LIVE)
        dropped = sum(1 for other in result.surplus_drops if other.chunk_id == drop.chunk_id)
        assert states[drop.node] is Replica.LIVE, drop
        assert live - dropped >= target >= 1, (drop, live, dropped, target)
    for drop in result.record_drops:
        recorded = len(states_by_chunk[drop.chunk_id])
        dropped = sum(1 for other in result.record_drops if other.chunk_id == drop.chunk_id)
        assert recorded - dropped >= 1, drop
    for move in result.moves:
        assert move.drop_after == move.source and move.source != move.target, move
