"""RaftNode: the consensus state machine (skeleton; bodies being filled in)."""

from __future__ import annotations

import random
from typing import Iterable

from node.raft.storage import Storage
from node.raft.types import ConfChange, Config, Message, NodeId, Ready, Status


class RaftNode:
    def __init__(self, config: Config, storage: Storage, rng: random.Random, peers: Iterable[NodeId] = ()) -> None:
        raise NotImplementedError

    def tick(self) -> None:
        raise NotImplementedError

    def step(self, message: Message) -> None:
        raise NotImplementedError

    def propose(self, data: bytes) -> tuple[int, int]:
        raise NotImplementedError

    def propose_membership_change(self, change: ConfChange) -> tuple[int, int]:
        raise NotImplementedError

    def read_index(self, context: bytes) -> None:
        raise NotImplementedError

    def transfer_leadership(self, target: NodeId) -> None:
        raise NotImplementedError

    def has_ready(self) -> bool:
        raise NotImplementedError

    def ready(self) -> Ready:
        raise NotImplementedError

    def advance(self, ready: Ready) -> None:
        raise NotImplementedError

    def compacted(self, index: int) -> None:
        raise NotImplementedError

    def status(self) -> Status:
        raise NotImplementedError
