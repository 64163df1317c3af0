"""Batch frames (node/protocol.py, Batches) from the asyncio client's side: the frame helpers
pack what msgpack packs, the client sends one request per frame until a node says it takes
batches, then the requests it has ready in frames of at most what that node takes, and it
reads replies that come batched, errors included."""

from __future__ import annotations

import asyncio
import random

import msgpack
import pytest

from node import protocol
from node.errors import NotFound
from sandctl.async_client import AsyncClient
from tests.cli.fake_node import FakeNode, make_config

POLL_MS = 20
READS_AT_ONCE = 10


def test_a_batch_frame_is_what_msgpack_packs_for_the_list_of_maps():
    for count in (1, 2, 15, 16, 17, protocol.REQUESTS_PER_FRAME_MAX):
        maps = [{"v": 1, "id": number, "ok": True, "result": {"n": "x" * number}} for number in range(count)]
        packed = [msgpack.packb(item, use_bin_type=True) for item in maps]
        assert protocol.batch_frame(packed) == msgpack.packb(maps, use_bin_type=True)
        assert msgpack.unpackb(protocol.batch_frame(packed)) == maps
    with pytest.raises(AssertionError):
        protocol.batch_frame([])


def test_batch_runs_keep_the_order_and_both_bounds():
    rng = random.Random(7)
    print("seed 7")
    for _ in range(300):
        packed = [bytes(rng.randrange(1, 60)) for _ in range(rng.randrange(0, 80))]
        bytes_max = rng.randrange(30, 200)
        count_max = rng.randrange(1, 12)
        runs = protocol.batch_runs(packed, bytes_max, count_max)
        assert [payload for run in runs for payload in run] == packed
        for run in runs:
            assert 1 <= len(run) <= count_max
            assert sum(map(len, run)) <= bytes_max or len(run) == 1  # a larger map travels alone
        # Greedy: no run could have taken the next run's first map.
        for run, following in zip(runs, runs[1:]):
            assert len(run) == count_max or sum(map(len, run)) + len(following[0]) > bytes_max
    frame_bytes_max = 1 << 16
    assert protocol.batch_bytes_max(frame_bytes_max) + 3 <= frame_bytes_max  # with the array header


class BatchNode(FakeNode):
    """A client port that takes batches of up to `offer` requests (None: says nothing, as a
    node of an earlier version) and answers a batch with one batch frame. Reads of /missing
    get NOT_FOUND. (FakeNode's socket and thread; its own way of answering.)"""

    def __init__(self, offer: int | None) -> None:
        self.offer = offer
        self.frames: list[int | None] = []  # per request frame: its batch's size, None for a map
        super().__init__("n1", handler=None)

    def frame_sizes(self) -> list[int | None]:
        with self._lock:
            return list(self.frames)

    def _answer(self, request: dict, alone: bool) -> bytes:
        if request["args"].get("path") == "/missing":
            return protocol.reply_error(request["id"], NotFound("/missing does not exist"))
        result = {"path": request["args"].get("path"), "data": b"x"}
        if alone and self.offer is not None:
            return msgpack.packb({"v": 1, "id": request["id"], "ok": True, "result": result, "batches": self.offer},
                                 use_bin_type=True)
        return protocol.reply_ok(request["id"], result)

    def _serve(self) -> None:
        while not self._stopping.is_set():
            if not self._socket.poll(POLL_MS):
                continue
            identity, frame = self._socket.recv_multipart()
            decoded = msgpack.unpackb(frame)
            with self._lock:
                self.frames.append(len(decoded) if isinstance(decoded, list) else None)
            if isinstance(decoded, list):
                assert self.offer is not None and len(decoded) <= self.offer, "a batch the node did not offer to take"
                replies = [self._answer(request, False) for request in decoded]
                self._socket.send_multipart([identity, protocol.batch_frame(replies)])
            else:
                self._socket.send_multipart([identity, self._answer(decoded, True)])


@pytest.fixture
def batch_node():
    started: list[BatchNode] = []

    def start(offer: int | None) -> BatchNode:
        started.append(BatchNode(offer))
        return started[-1]

    yield start
    for node in started:
        node.close()


async def _reads(client: AsyncClient, paths: list[str]) -> list[object]:
    return await asyncio.gather(*(client.read(path, node="n1") for path in paths), return_exceptions=True)


def _run_rounds(node: BatchNode, rounds: list[list[str]]) -> list[list[object]]:
    config = make_config({"n1": f"127.0.0.1:{node.port}"})

    async def main():
        async with AsyncClient(config, timeout_seconds=5) as client:
            return [await _reads(client, paths) for paths in rounds]

    return asyncio.run(main())


def test_requests_go_in_batches_once_the_node_says_it_takes_them(batch_node):
    node = batch_node(offer=4)
    paths = [f"/f{number}" for number in range(READS_AT_ONCE)]
    first, batched = _run_rounds(node, [["/first"], paths + ["/missing"]])
    assert first == [({"path": "/first"}, b"x")]
    sizes = node.frame_sizes()
    assert sizes[0] is None  # before the node said so: a map
    # Then every request in a batch of at most 4: all that were ready at once.
    assert all(size is not None and size <= 4 for size in sizes[1:]), sizes
    assert sum(sizes[1:]) == READS_AT_ONCE + 1
    assert len(sizes) - 1 < READS_AT_ONCE + 1
    # Each call got its own reply out of the batch frames, the error one its named error.
    assert batched[:-1] == [({"path": path}, b"x") for path in paths]
    assert isinstance(batched[-1], NotFound)


def test_a_node_that_never_says_it_takes_batches_gets_one_request_per_frame(batch_node):
    node = batch_node(offer=None)
    paths = [f"/f{number}" for number in range(READS_AT_ONCE)]
    first, many = _run_rounds(node, [["/first"], paths])
    assert many == [({"path": path}, b"x") for path in paths]
    assert node.frame_sizes() == [None] * (READS_AT_ONCE + 1)


def test_a_lone_request_goes_as_its_map_also_to_a_node_that_takes_batches(batch_node):
    # One request outstanding: a batch of one would only cost the array, on both sides.
    node = batch_node(offer=4)
    paths = [f"/f{number}" for number in range(READS_AT_ONCE)]
    rounds = _run_rounds(node, [["/first"], ["/second"], ["/third"], paths])
    assert rounds[:3] == [[({"path": path}, b"x")] for path in ("/first", "/second", "/third")]
    assert rounds[3] == [({"path": path}, b"x") for path in paths]
    sizes = node.frame_sizes()
    assert sizes[:3] == [None, None, None]
    assert all(size is not None and size <= 4 for size in sizes[3:]), sizes  # ready together: batched
    assert sum(sizes[3:]) == READS_AT_ONCE
