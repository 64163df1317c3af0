"""Client.put_file / get_file end to end through real chunk services and a fake metadata node:
which requests a put of a large file sends (one write commits it, no stat before it)."""

from __future__ import annotations

import io
import random

import pytest

from node.config import ClusterConfig, NodeAddress
from node.errors import AlreadyExists
from sandctl.client import Client
from tests.cli.fake_node import FakeNode, Namespace, free_port

CHUNK_SIZE_BYTES = 64 << 10
INLINE_MAX_BYTES = 1024


class ChunkedNamespace(Namespace):
    """The fake namespace, also taking chunk lists (a large file's record)."""

    def op_write_file(self, args: dict) -> dict:
        if "chunks" not in args:
            return super().op_write_file(args)
        stat = super().op_write_file({**args, "data": b""})
        self.data[stat["path"]] = args["chunks"]
        stat.update(size=args["size"], inline=False, chunks=args["chunks"])
        return stat

    def op_read(self, args: dict) -> dict:
        record = super().op_read(args)
        if isinstance(record["data"], list):
            del record["data"]  # a chunked file: its stat carries the chunk list
        return record


@pytest.fixture
def metadata_node():
    node = FakeNode("n1", ChunkedNamespace())
    yield node
    node.close()


@pytest.fixture
def client(metadata_node, start_service):
    services = {name: start_service(name)[0] for name in ("n1", "n2", "n3")}
    nodes = tuple(
        NodeAddress(id=name, raft=f"127.0.0.1:{free_port()}",
                    client=metadata_node.address if name == "n1" else f"127.0.0.1:{free_port()}",
                    chunk=service.bound_address)
        for name, service in services.items()
    )
    config = ClusterConfig(nodes=nodes, inline_bytes_max=INLINE_MAX_BYTES, chunk_size_bytes=CHUNK_SIZE_BYTES,
                           replication=2)
    with Client(config, node="n1", timeout_seconds=10) as client:
        yield client


def test_a_large_put_into_a_directory_commits_with_one_write(client, metadata_node):
    data = random.Random(1).randbytes(5 * CHUNK_SIZE_BYTES + 3)
    client.mkdir("/docs")
    stored = client.put_file("/docs", io.BytesIO(data), size_hint=len(data), into_directory="big.bin")
    assert stored["path"] == "/docs/big.bin" and stored["size"] == len(data)
    assert metadata_node.ops() == ["mkdir", "write_file"]
    [write] = metadata_node.requests_of("write_file")
    assert write["into_directory"] == "big.bin" and len(write["chunks"]) == 6
    sink = io.BytesIO()
    client.get_file("/docs/big.bin", sink)
    assert sink.getvalue() == data


def test_a_large_put_that_must_not_overwrite_is_refused_before_streaming(client, metadata_node):
    data = random.Random(2).randbytes(3 * CHUNK_SIZE_BYTES)
    client.put_file("/f", io.BytesIO(data), size_hint=len(data))
    with pytest.raises(AlreadyExists):
        client.put_file("/f", io.BytesIO(data[::-1]), size_hint=len(data), overwrite=False)
    # A stale stat found it: no chunks were streamed and no second record write was sent.
    assert metadata_node.ops() == ["write_file", "stat"]
    assert metadata_node.requests_of("stat") == [{"path": "/f", "stale": True}]
