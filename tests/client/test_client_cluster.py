"""The client library against a real 3-node cluster on 127.0.0.1: what a small put costs."""

from __future__ import annotations

import io

import pytest

from sandctl.client import Client
from tests.e2e.conftest import cluster, e2e_home, ledger  # noqa: F401  (fixtures, used by name)

pytestmark = pytest.mark.e2e


def test_a_small_put_into_a_directory_is_one_request_and_one_log_entry(cluster):  # noqa: F811
    leader = cluster.client.wait_for_leader(30)
    with Client(cluster.config, node=leader, timeout_seconds=10) as client:
        client.mkdir("/docs")
        before = client.status(leader)
        stored = client.put_file("/docs", io.BytesIO(b"hello"), size_hint=5, into_directory="a.txt")
        after = client.status(leader)
        entries = client.inspect_log(leader, from_index=before["commit"] + 1)["entries"]
    assert stored["path"] == "/docs/a.txt"
    # The leader saw the put and the second status, nothing else: no stat (ReadIndex round) first.
    assert after["counters"]["client_requests"] - before["counters"]["client_requests"] == 2
    writes = [entry for entry in entries if (entry.get("command") or {}).get("op") == "write_file"]
    assert len(writes) == 1 and writes[0]["command"]["into_directory"] == "a.txt"
