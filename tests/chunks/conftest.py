"""Fixtures: ZeroMQ contexts and in-process chunk services on free loopback ports."""

from __future__ import annotations


import pytest
import zmq

from node import protocol
from node.chunks.service import ChunkService
from node.chunks.store import ChunkStore

FRAME_BYTES_MAX = 8 << 20
MAP_SIZE_BYTES = 256 << 20
DEADLINE_SECONDS = 5.0


@pytest.fixture
def start_service(context, tmp_path):
    """start_service(name, **options) -> (service, store); everything is stopped afterwards."""
    started: list[tuple[ChunkService, ChunkStore]] = []

    def start(name: str = "n1", map_size_bytes: int = MAP_SIZE_BYTES, **options) -> tuple[ChunkService, ChunkStore]:
        store = ChunkStore(tmp_path / name, map_size_bytes)
        options.setdefault("referenced_chunk_ids", set)
        options.setdefault("gc_grace_seconds", 600.0)
        options.setdefault("frame_bytes_max", FRAME_BYTES_MAX)
        service = ChunkService(context, "127.0.0.1:*", store, **options)
        service.start()
        started.append((service, store))
        return service, store

    yield start
    for service, store in started:
        service.stop()
        store.close()


class Client:
    """A bare DEALER speaking the chunk framing (node/protocol.py CHUNK_OPS), for tests.

    A chunk_put's content is passed as args["data"] and sent as the frame after the request
    map; a reply's content frame comes back as reply["content"]."""

    def __init__(self, context: zmq.Context, address: str) -> None:
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect("tcp://" + address)
        self.next_id = 1

    def send(self, op: str, args: dict) -> int:
        request_id = self.next_id
        self.next_id += 1
        args = dict(args)
        frames = [protocol.request(request_id, op, {k: v for k, v in args.items() if k != "data"})]
        if "data" in args:
            frames.append(args["data"])
        self.socket.send_multipart(frames)
        return request_id

    def send_frames(self, frames: list[bytes]) -> None:
        self.socket.send_multipart(frames)

    def receive(self) -> dict:
        assert self.socket.poll(DEADLINE_SECONDS * 1000), "no reply in time"
        frames = self.socket.recv_multipart()
        assert 1 <= len(frames) <= 2, frames
        reply = protocol.decode(frames[0], FRAME_BYTES_MAX * 2)
        if len(frames) == 2:
            reply["content"] = frames[1]
        return reply

    def call(self, op: str, args: dict) -> dict:
        request_id = self.send(op, args)
        reply = self.receive()
        assert reply["id"] == request_id
        return reply

    def close(self) -> None:
        self.socket.close(linger=0)


@pytest.fixture
def make_client(context):
    clients: list[Client] = []

    def make(address: str) -> Client:
        client = Client(context, address)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def frame_bytes_max():
    return FRAME_BYTES_MAX
