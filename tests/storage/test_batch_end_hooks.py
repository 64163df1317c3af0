"""NodeStore.on_batch_end: what a state machine writes once per batch lands in the batch's own
transaction, before it commits or is deferred, and goes with the batch when it aborts."""

from __future__ import annotations

import lmdb
import pytest

from node.errors import StoreFull
from node.raft.types import Entry, HardState
from node.storage.lmdb_store import NodeStore

MAP_SIZE_BYTES = 64 << 20


class Counter:
    """A batch-end hook that stores how many batches ended, in the batch's transaction."""

    def __init__(self) -> None:
        self.ended = 0
        self.transactions: list[lmdb.Transaction] = []

    def __call__(self, txn: lmdb.Transaction) -> None:
        self.ended += 1
        self.transactions.append(txn)
        txn.put(b"batches_ended", str(self.ended).encode())


def stored(store: NodeStore, key: bytes) -> bytes | None:
    with store.read_transaction() as txn:
        return txn.get(key)


@pytest.mark.parametrize("durable", [True, False])
def test_a_hook_writes_in_the_batch_transaction_before_it_commits(tmp_path, durable):
    store = NodeStore(tmp_path, MAP_SIZE_BYTES)
    hook = Counter()
    store.on_batch_end(hook)
    with store.write_batch(durable=durable) as batch:
        batch.txn.put(b"entry", b"1")
        assert hook.ended == 0  # not before the block ends
    assert hook.transactions == [batch.txn]
    assert store.has_deferred == (not durable)
    assert stored(store, b"batches_ended") == b"1"  # (a read commits the deferred batch first)
    store.close()
    reopened = NodeStore(tmp_path, MAP_SIZE_BYTES)
    assert stored(reopened, b"batches_ended") == b"1"
    assert stored(reopened, b"entry") == b"1"


def test_deferred_batches_each_end_in_their_own_nested_transaction(tmp_path):
    store = NodeStore(tmp_path, MAP_SIZE_BYTES)
    hook = Counter()
    store.on_batch_end(hook)
    for _ in range(3):
        with store.write_batch(durable=False):
            pass
    assert hook.ended == 3
    assert len({id(txn) for txn in hook.transactions}) == 3
    with store.write_batch(durable=True) as batch:
        batch.set_hard_state(HardState(term=1))
    assert not store.has_deferred
    assert stored(store, b"batches_ended") == b"4"


def test_no_hook_runs_for_a_batch_whose_block_raised(tmp_path):
    store = NodeStore(tmp_path, MAP_SIZE_BYTES)
    hook = Counter()
    store.on_batch_end(hook)
    with pytest.raises(RuntimeError):
        with store.write_batch() as batch:
            batch.append_entries([Entry(term=1, index=1, data=b"x")])
            raise RuntimeError("the driver failed half way")
    assert hook.ended == 0
    assert stored(store, b"batches_ended") is None
    assert store.last_index() == 0


def test_a_hook_that_raises_aborts_the_whole_batch(tmp_path):
    store = NodeStore(tmp_path, MAP_SIZE_BYTES)

    def failing(txn: lmdb.Transaction) -> None:
        txn.put(b"half", b"written")
        raise AssertionError("an invariant of the state machine")

    store.on_batch_end(failing)
    with pytest.raises(AssertionError, match="invariant"):
        with store.write_batch() as batch:
            batch.append_entries([Entry(term=1, index=1, data=b"x")])
            batch.txn.put(b"entry", b"1")
    assert store.last_index() == 0
    assert stored(store, b"entry") is None
    assert stored(store, b"half") is None


def test_a_hook_that_fills_the_map_is_store_full_and_leaves_the_store_as_it_was(tmp_path):
    store = NodeStore(tmp_path, map_size_bytes=1 << 20)
    filling = [False]

    def fill(txn: lmdb.Transaction) -> None:
        if filling[0]:
            for number in range(64):  # far beyond 1 MiB
                txn.put(b"fill%d" % number, b"x" * (64 << 10))

    store.on_batch_end(fill)
    with store.write_batch() as batch:
        batch.txn.put(b"before", b"1")
    filling[0] = True
    with pytest.raises(StoreFull, match="full"):
        with store.write_batch() as batch:
            batch.txn.put(b"entry", b"1")
    filling[0] = False
    assert stored(store, b"before") == b"1"
    assert stored(store, b"entry") is None
    with store.write_batch() as batch:  # still usable
        batch.txn.put(b"after", b"1")
    assert stored(store, b"after") == b"1"
