"""The bench's read workload checks every reply against the bytes written to the path that
lane asked for (sandctl/bench_workloads.py; a lane's path rides on the lane, not in a wrapper)."""

from __future__ import annotations

from sandctl.bench_load import Lane
from sandctl.bench_workloads import _file_reader


class RecordingClient:
    def __init__(self) -> None:
        self.reads: list[tuple[str, bool, str | None]] = []

    def read(self, path: str, stale: bool = False, node: str | None = None):
        self.reads.append((path, stale, node))
        return "the call"


def test_each_lane_is_checked_against_its_own_path_while_others_are_under_way():
    expected = {"/a": b"aaa", "/b": b"bbb"}
    make_operation, on_result, mismatches = _file_reader(["/a", "/b"], expected, stale=True, once=True,
                                                         nodes=["n1", "n2"])
    first, second = Lane(0), Lane(1)
    client = RecordingClient()
    assert make_operation(first)(client) == "the call"
    assert make_operation(second)(client) == "the call"
    assert client.reads == [("/a", True, "n1"), ("/b", True, "n2")]  # lanes pinned round-robin
    on_result(first, ({"path": "/a"}, b"aaa"))  # answered after the second lane asked for /b
    on_result(second, ({"path": "/b"}, b"bbb"))
    assert mismatches == [0]
    on_result(first, ({"path": "/a"}, b"bbb"))  # another file's bytes
    assert mismatches == [1]
    assert make_operation(first) is None  # each path once
