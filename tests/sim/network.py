"""The simulated network: per-link faults and partitions, decided by the run's one rng.

The network only decides a message's fate (dropped, or delivered after these delays); the
cluster owns the clock and the event queue. A partition is checked again at delivery time, so a
partition that starts while a message is in flight still cuts it off.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from node.raft.types import NodeId


@dataclass(frozen=True)
class LinkFaults:
    drop_probability: float = 0.0
    duplicate_probability: float = 0.0
    delay_ms_min: int = 1
    delay_ms_max: int = 1
    # With this probability a message waits up to reorder_delay_ms_max more, so that later
    # messages on the same link overtake it.
    reorder_probability: float = 0.0
    reorder_delay_ms_max: int = 0

    def __post_init__(self) -> None:
        assert 0.0 <= self.drop_probability <= 1.0
        assert 0.0 <= self.duplicate_probability <= 1.0
        assert 0.0 <= self.reorder_probability <= 1.0
        assert 0 <= self.delay_ms_min <= self.delay_ms_max
        assert self.reorder_delay_ms_max >= 0


RELIABLE = LinkFaults()

# Bound on the copies one send can turn into: a duplicate of a duplicate stops here.
COPIES_PER_MESSAGE_MAX = 2


class Network:
    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self.default_faults = RELIABLE
        self._link_faults: dict[tuple[NodeId, NodeId], LinkFaults] = {}
        self._blocked: set[tuple[NodeId, NodeId]] = set()  # directed: (source, target)
        self._isolated: set[NodeId] = set()

    # -- faults -----------------------------------------------------------------------------

    def set_default_faults(self, faults: LinkFaults) -> None:
        self.default_faults = faults

    def set_link_faults(self, source: NodeId, target: NodeId, faults: LinkFaults) -> None:
        self._link_faults[(source, target)] = faults

    def clear_link_faults(self) -> None:
        self._link_faults.clear()

    def faults(self, source: NodeId, target: NodeId) -> LinkFaults:
        return self._link_faults.get((source, target), self.default_faults)

    def delivery_delays_ms(self, source: NodeId, target: NodeId) -> list[int]:
        """Delays of the copies of one message that will arrive; empty when it is dropped."""
        faults = self.faults(source, target)
        if faults is RELIABLE:
            return [1]
        rng = self._rng
        if faults.drop_probability and rng.random() < faults.drop_probability:
            return []
        copies = 1
        if faults.duplicate_probability and rng.random() < faults.duplicate_probability:
            copies = COPIES_PER_MESSAGE_MAX
        delays_ms = []
        for _ in range(copies):
            delay_ms = rng.randint(faults.delay_ms_min, faults.delay_ms_max)
            if faults.reorder_probability and rng.random() < faults.reorder_probability:
                delay_ms += rng.randint(0, faults.reorder_delay_ms_max)
            delays_ms.append(delay_ms)
        assert 1 <= len(delays_ms) <= COPIES_PER_MESSAGE_MAX
        return delays_ms

    # -- partitions -------------------------------------------------------------------------

    def connected(self, source: NodeId, target: NodeId) -> bool:
        if source in self._isolated or target in self._isolated:
            return False
        return (source, target) not in self._blocked

    def block(self, source: NodeId, target: NodeId) -> None:
        """One direction only: `target` stops hearing `source` (asymmetric partition)."""
        assert source != target
        self._blocked.add((source, target))

    def unblock(self, source: NodeId, target: NodeId) -> None:
        self._blocked.discard((source, target))

    def partition(self, groups: list[set[NodeId]]) -> None:
        """Symmetric partition: nodes hear only the nodes of their own group."""
        for group in groups:
            for other in groups:
                if other is group:
                    continue
                for source in group:
                    for target in other:
                        self._blocked.add((source, target))

    def isolate(self, node: NodeId) -> None:
        self._isolated.add(node)

    def reconnect(self, node: NodeId) -> None:
        """Undo isolate() and every blocked link to or from `node`."""
        self._isolated.discard(node)
        self._blocked = {link for link in self._blocked if node not in link}

    def heal(self) -> None:
        self._blocked.clear()
        self._isolated.clear()

    def is_healed(self) -> bool:
        return not self._blocked and not self._isolated

    def describe(self) -> str:
        blocked = ",".join(f"{a}->{b}" for a, b in sorted(self._blocked))
        isolated = ",".join(sorted(self._isolated))
        return f"blocked=[{blocked}] isolated=[{isolated}]"
