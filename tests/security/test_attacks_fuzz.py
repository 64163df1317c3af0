"""A bounded, seeded fuzz of all three ports of a real 3-node cluster, sent with the cluster's
own keys (so every message reaches validation, as from a buggy peer or client): structured
messages with wrong types, huge lengths, negative and huge numbers, unknown ids and gaps.
Every node stays up, the membership and every file stay as they were.

The seed is printed; rerun one with SANDSTORE_FUZZ_SEED=<seed>.
"""

from __future__ import annotations

import os
import random

import msgpack
import pytest
import zmq

from node import protocol
from node.transport.codec import FRAME_FORWARD, FRAME_RAFT, RAFT_FRAME_FIELDS, WIRE_VERSION
from tests.security.attack_cluster import running_cluster
from tests.security.keyed_sockets import keyed_dealer
from tests.waiting import wait_until

MESSAGES_PER_PORT = 120  # per attacked node and port
SEED_DEFAULT = 20261201
NODES = ("n1", "n2", "n3")


@pytest.fixture
def running(tmp_path, isolated_home):
    with running_cluster(tmp_path, "curve", files_seed=13) as cluster:
        yield cluster


def test_fuzzed_messages_on_every_port_leave_every_node_up_and_the_data_intact(running):
    seed = int(os.environ.get("SANDSTORE_FUZZ_SEED", SEED_DEFAULT))
    print(f"fuzz seed {seed} (rerun with SANDSTORE_FUZZ_SEED={seed})")
    rng = random.Random(seed)
    cluster = running
    leader = cluster.client.wait_for_leader(20)
    status = cluster.client.status(leader)
    term = status["term"]
    follower = next(node for node in NODES if node != leader)  # its key sends the raft fuzz
    fuzz = Fuzz(rng, term, status["last_index"])
    context = zmq.Context()
    try:
        for node in NODES:
            sockets = [keyed_dealer(context, cluster.config, node, "client", data_dir=cluster.data_dir),
                       keyed_dealer(context, cluster.config, node, "chunk", data_dir=cluster.data_dir)]
            for _ in range(MESSAGES_PER_PORT):
                sockets[0].send_multipart(fuzz.client_request())
                sockets[1].send_multipart(fuzz.chunk_request())
            if node != follower:
                raft = keyed_dealer(context, cluster.config, node, "raft", as_node=follower,
                                    data_dir=cluster.data_dir)
                for _ in range(MESSAGES_PER_PORT):
                    raft.send(fuzz.raft_frame(follower, node))
                sockets.append(raft)
            # Every request on the client and chunk ports is answered (an error, mostly).
            for dealer in sockets[:2]:
                answers = [0]

                def all_answered(dealer=dealer, answers=answers) -> bool:
                    while dealer.poll(0):
                        dealer.recv_multipart()
                        answers[0] += 1
                    return answers[0] >= MESSAGES_PER_PORT
                wait_until(all_answered, f"node {node} answers every fuzzed request", 60)
            for dealer in sockets:
                dealer.close(linger=0)
    finally:
        context.term()
    for node, node_status in cluster.statuses().items():
        # Every bad request was refused by validation, none hit an unexpected exception.
        assert node_status["counters"]["client_internal_errors"] == 0, node
    after = cluster.client.status(cluster.client.wait_for_leader(20))
    assert (after["voters"], after["learners"], after["voters_outgoing"]) == (list(NODES), [], [])
    cluster.assert_intact()


class Fuzz:
    """Structured messages with one or more fields replaced by hostile values."""

    def __init__(self, rng: random.Random, term: int, last_index: int) -> None:
        self.rng = rng
        self.term = term
        self.last_index = last_index

    def hostile_number(self) -> object:
        return self.rng.choice([-1, -(1 << 63), 0, 1, 1 << 62, (1 << 63) - 1, 1 << 63, (1 << 64) - 1,
                                10**12, float("nan"), float("inf"), -0.5, 1.5, True, "7", None, b"\x00", [1]])

    def hostile_value(self) -> object:
        return self.rng.choice([self.hostile_number(), "", "a b", "n9", "../etc", "x" * 70_000,
                                b"\xff" * self.rng.choice([0, 31, 32, 33, 1 << 16]), {"a": [1, {"b": None}]},
                                [[[[]]]], {1: 2}, "/fuzz/" + "d/" * 300, "/" + "\x00"])

    def term_value(self) -> object:
        # Never a valid higher term: the fuzz attacks validation, not an election.
        return self.rng.choice([self.term, self.term - 1, 0, -1, 1 << 62, (1 << 64) - 1, "t", None, 1.5])

    def index_value(self) -> object:
        return self.rng.choice([0, self.last_index, self.last_index + 1, self.last_index + 10, 10**12, -5,
                                (1 << 64) - 1, "i", None])

    def raft_frame(self, source: str, target: str) -> bytes:
        rng = self.rng
        if rng.random() < 0.1:
            return msgpack.packb([WIRE_VERSION, FRAME_FORWARD, {"propose": rng.choice([b"\x93x", 12, None, {"a": 1}])}])
        entries = [[self.term_value(), self.index_value(), rng.choice([1, 2, 3, 99, -1, "k"]),
                    rng.choice([b"", b"\x93garbage", b"x" * 1000, 5])]
                   for _ in range(rng.choice([0, 1, 3]))]
        meta = rng.choice([None, [self.index_value(), self.term_value(), [["n1"], [], ["n1"]], 0],
                           [1, 1, [[], [], []], -1], [1, 1, "conf", 1], "meta"])
        fields = [WIRE_VERSION, FRAME_RAFT, rng.randrange(0, 16), rng.choice([source, source, "n9", "a b", "", 5]),
                  rng.choice([target, target, "n9", None]), self.term_value(), self.term_value(), self.index_value(),
                  entries, self.index_value(), rng.choice([False, True, 2]), self.index_value(), self.term_value(),
                  rng.choice([b"", b"transfer", "ctx", b"c" * 5000]), meta, self.index_value(),
                  rng.choice([b"", b"\x00" * 100, None]), rng.choice([False, True, "yes"]),
                  self.term_value()]  # promised_term: never a valid higher one either (that stops a node)
        assert len(fields) == RAFT_FRAME_FIELDS
        for _ in range(rng.randrange(0, 3)):
            fields[rng.randrange(2, len(fields))] = self.hostile_value()
        if rng.random() < 0.05:
            fields = fields[: rng.randrange(0, len(fields))]
        return msgpack.packb(fields)

    def _args(self, schema: dict) -> dict:
        rng = self.rng
        args = {}
        for name, kind in schema.items():
            if kind.endswith("?") and rng.random() < 0.4:
                continue
            if rng.random() < 0.3:
                args[name] = self.hostile_value() if rng.random() < 0.5 else self.hostile_number()
            elif name in ("path", "src", "dst", "into_directory"):
                args[name] = "/fuzz/" + rng.choice(["a", "b/c", "", "..", "x" * 300])
            elif name == "node":
                args[name] = rng.choice(["n9", "a b", "", "x" * 100])
            else:
                args[name] = self.hostile_number()
        if rng.random() < 0.1:
            args["unexpected"] = self.hostile_value()
        return args

    def _request(self, schemas: dict) -> list[bytes]:
        rng = self.rng
        op = rng.choice(sorted(schemas))
        request = {"v": protocol.PROTOCOL_VERSION, "id": rng.randrange(1, 1 << 30), "op": op,
                   "args": self._args(schemas[op])}
        if rng.random() < 0.1:
            request[rng.choice(["v", "op", "args"])] = self.hostile_value()
        frames = [msgpack.packb(request, use_bin_type=True)]
        if op in protocol.CHUNK_DATA_OPS or rng.random() < 0.05:
            frames.append(rng.randbytes(rng.choice([0, 10, 1 << 12])))
        return frames

    def client_request(self) -> list[bytes]:
        # No membership change or admin verb with well-formed arguments: the fuzz must not
        # legitimately remove a node or collect garbage on the admin key it sends with.
        schemas = {**protocol.READ_OPS, **protocol.WRITE_OPS}
        return self._request(schemas)

    def chunk_request(self) -> list[bytes]:
        schemas = {op: schema for op, schema in protocol.CHUNK_OPS.items() if op not in ("chunk_gc", "chunk_delete")}
        return self._request(schemas)
